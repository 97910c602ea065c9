//! `cargo xtask test`: every test, unprivileged and root.
//!
//! The root tests in `tests/` load XDP programs, create network namespaces
//! and veth pairs. Each test makes its own namespaces with names unique to the
//! run, so they do not collide with each other or with a concurrent run; they
//! never touch the host's own interfaces.

use std::process::Command;

use anyhow::{Context as _, Result, bail};
use clap::Parser;

use crate::{
    build::{self, EBPF_OBJECT_ENV, build, workspace_root},
    exec::{exec, is_root},
    setup,
};

#[derive(Debug, Parser)]
pub struct Options {
    /// Skip the tests that need root and a kernel.
    #[arg(long)]
    pub unprivileged_only: bool,
    /// Arguments for the test binaries, e.g. a test name filter.
    #[arg(last = true)]
    pub args: Vec<String>,
}

pub fn test(opts: &Options) -> Result<()> {
    let built = build(&build::Options { release: false })?;
    setup::ensure_commands(
        "the root tests",
        &[
            ("ip", "iproute2"),
            ("tcpdump", "tcpdump"),
            // --read is checked against files tshark's editcap converts,
            // and measured beside tshark -r.
            ("tshark", "tshark"),
            ("setpriv", "util-linux"),
            // The bench tests measure xdp-filter's program beside ours.
            ("xdp-filter", "xdp-tools"),
            // Issue 13: a real Prometheus scrapes --metrics and promtool
            // lints it; nfcapd receives --ipfix and nfdump reads it back.
            ("prometheus", "prometheus"),
            ("promtool", "prometheus"),
            ("nfcapd", "nfdump"),
            ("nfdump", "nfdump"),
            // The systemd unit is checked by systemd-analyze verify, and
            // the generated man page rendered by man.
            ("systemd-analyze", "systemd"),
            ("man", "man-db"),
        ],
    )?;

    // The man page and completions, made as `cargo xtask dist` makes them:
    // CI proves they can be.
    let dist = workspace_root().join("target/dist");
    crate::dist::generate(&built.traffic, &dist)?;
    eprintln!(
        "xtask test: man page and shell completions made in {}",
        dist.display()
    );

    let cargo = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(args)
            .current_dir(workspace_root())
            .env(EBPF_OBJECT_ENV, &built.ebpf_object)
            .env("TRAFFIC_BIN", &built.traffic);
        cmd
    };

    eprintln!("xtask test: unit tests (no privileges needed)");
    let mut unit = cargo(&[
        "test",
        "--workspace",
        "--exclude",
        "traffic-ebpf",
        "--exclude",
        "traffic-tests",
    ]);
    unit.arg("--").args(&opts.args);
    exec(&mut unit).context("unit tests failed")?;

    if opts.unprivileged_only {
        return Ok(());
    }
    eprintln!("xtask test: root tests in tests/ (XDP, test_run, veth labs in network namespaces)");
    let mut root = cargo(&["test", "--package", "traffic-tests"]);
    if !is_root() {
        if Command::new("sudo").arg("--version").output().is_err() {
            bail!(
                "the tests in tests/ need root (CAP_BPF, CAP_NET_ADMIN) and there is no sudo; run `cargo xtask test` as root, or `cargo xtask test --unprivileged-only`"
            );
        }
        root.env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER", "sudo -E");
    }
    root.arg("--").args(&opts.args);
    exec(&mut root).context("root tests failed")
}
