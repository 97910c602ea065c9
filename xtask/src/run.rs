//! `cargo xtask run`: build, then run `traffic` as root.

use std::process::Command;

use anyhow::{Result, bail};
use clap::Parser;

use crate::{
    build::{self, build},
    exec::{exec, is_root},
};

#[derive(Debug, Parser)]
pub struct Options {
    /// Build the userspace side with the debug profile (the default is
    /// release: the capture path's cost per event depends on it).
    #[arg(long)]
    pub debug: bool,
    /// Arguments for `traffic`. Without `--iface` (or a subcommand), traffic
    /// runs on its built-in lab (`--lab`).
    #[arg(last = true)]
    pub args: Vec<String>,
}

pub fn run(opts: Options) -> Result<()> {
    let Options { debug, mut args } = opts;
    let built = build(&build::Options { release: !debug })?;
    let subcommand = args
        .first()
        .is_some_and(|a| matches!(a.as_str(), "gen" | "bench" | "help"));
    let wants_lab = !subcommand
        && !args.iter().any(|a| {
            matches!(
                a.as_str(),
                "--iface" | "-i" | "--lab" | "--help" | "-h" | "--version" | "-V"
            ) || a.starts_with("--iface=")
        });
    if wants_lab {
        eprintln!("xtask run: no --iface given; running traffic on its built-in lab (--lab)");
        args.insert(0, "--lab".to_owned());
    }
    let mut cmd = privileged(&built.traffic.to_string_lossy())?;
    cmd.args(&args);
    exec(&mut cmd)
}

/// A command that runs `program` as root: directly when we are root, else
/// through `sudo -E`.
pub fn privileged(program: &str) -> Result<Command> {
    if is_root() {
        return Ok(Command::new(program));
    }
    if Command::new("sudo").arg("--version").output().is_ok() {
        let mut cmd = Command::new("sudo");
        cmd.args(["-E", program]);
        return Ok(cmd);
    }
    bail!(
        "traffic needs root (CAP_BPF and CAP_NET_ADMIN) and there is no sudo here; run this command as root"
    )
}
