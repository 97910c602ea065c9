//! Running commands with the whole command line in every error.

use std::process::{Command, Output};

use anyhow::{Context as _, Result, bail};

/// Runs `cmd` with inherited stdio and fails unless it exits 0.
pub fn exec(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("failed to start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Runs `cmd`, captures its output and fails unless it exits 0.
pub fn output(cmd: &mut Command) -> Result<Output> {
    let output = cmd
        .output()
        .with_context(|| format!("failed to start {cmd:?}"))?;
    if !output.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
    }
    Ok(output)
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // `id -u` keeps xtask free of unsafe code and of a libc dependency.
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.trim_ascii() == b"0")
}
