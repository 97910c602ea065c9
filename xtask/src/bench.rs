//! `cargo xtask bench`: what traffic costs, next to the floor programs,
//! xdp-filter and tcpdump, measured in one run on this machine.

use std::process::Command;

use anyhow::{Context as _, Result};
use clap::Parser;

use crate::{
    build::{self, build, workspace_root},
    exec::exec,
    run::privileged,
    setup,
};

#[derive(Debug, Parser)]
pub struct Options {
    /// A short run (about two minutes): rule tables of 1 and 1,000, one
    /// offered rate, 200,000 frames per live scenario.
    #[arg(long)]
    pub quick: bool,
    /// Only the in-kernel (test_run) measurements.
    #[arg(long)]
    pub kernel_only: bool,
    /// Only the classifier at scale: the drop path with sources spread over
    /// 1 to 1,048,576 prefixes beside the kernel's LPM trie, and a million
    /// rules from a file (start-up, memory, a reload under load).
    #[arg(long, conflicts_with = "kernel_only")]
    pub scale: bool,
    /// Only what counting costs and how well it counts: per-rule counters
    /// and --top on the drop path, top talkers on a Zipf mix, and --read
    /// beside tcpdump -r and tshark -r.
    #[arg(long, conflicts_with_all = ["kernel_only", "scale"])]
    pub counting: bool,
    /// Only what --metrics and --ipfix add to traffic's CPU at 200,000
    /// frames/s, beside a real Prometheus and a real nfcapd.
    #[arg(long, conflicts_with_all = ["kernel_only", "scale", "counting"])]
    pub exporters: bool,
    /// Only the soak: ten minutes of capture at a steady rate, reporting
    /// memory, open descriptors and exact counts.
    #[arg(long)]
    pub soak: bool,
    /// The soak's length in seconds (default 600).
    #[arg(long, value_name = "SECS", requires = "soak")]
    pub soak_seconds: Option<u64>,
}

pub fn bench(opts: &Options) -> Result<()> {
    let built = build(&build::Options { release: true })?;
    setup::ensure_commands(
        "the benchmark",
        &[
            ("tcpdump", "tcpdump"),
            // --read is checked against files tshark's editcap converts,
            // and measured beside tshark -r.
            ("tshark", "tshark"),
            ("xdp-filter", "xdp-tools"),
            ("ip", "iproute2"),
            // --metrics and --ipfix are measured with a real scraper and
            // collector.
            ("prometheus", "prometheus"),
            ("nfcapd", "nfdump"),
        ],
    )?;
    let stamp = String::from_utf8(
        Command::new("date")
            .args(["-u", "+%Y%m%d-%H%M"])
            .output()
            .context("running date")?
            .stdout,
    )?;
    let host = String::from_utf8(
        Command::new("uname")
            .arg("-n")
            .output()
            .context("running uname")?
            .stdout,
    )?;
    let dir =
        workspace_root()
            .join("target/bench")
            .join(format!("{}-{}", stamp.trim(), host.trim()));
    let mut cmd = privileged(&built.traffic.to_string_lossy())?;
    cmd.args(["bench", "--out"]).arg(&dir);
    if opts.quick {
        cmd.arg("--quick");
    }
    if opts.kernel_only {
        cmd.arg("--kernel-only");
    }
    if opts.scale {
        cmd.arg("--scale");
    }
    if opts.counting {
        cmd.arg("--counting");
    }
    if opts.exporters {
        cmd.arg("--exporters");
    }
    if opts.soak {
        cmd.arg("--soak");
    }
    if let Some(secs) = opts.soak_seconds {
        cmd.args(["--soak-seconds", &secs.to_string()]);
    }
    exec(&mut cmd)?;
    let latest = workspace_root().join("target/bench/latest");
    let _ = std::fs::remove_file(&latest);
    std::os::unix::fs::symlink(&dir, &latest).context("linking target/bench/latest")?;
    eprintln!(
        "xtask bench: report in {} (summary.md, raw.json, kernel.svg, live.svg, README.SETUP); target/bench/latest points there",
        dir.display()
    );
    Ok(())
}
