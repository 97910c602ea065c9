//! `cargo xtask dist`: what a host or an image needs, in `target/dist/`:
//! the release binary, its man page and shell completions (made by the
//! binary from its own flag definitions), and the deployment files.
//!
//! `cargo xtask test` makes the man page and completions the same way, so
//! that CI proves they can be made.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use clap::Parser;

use crate::build::{self, build, workspace_root};

#[derive(Debug, Parser)]
pub struct Options {
    /// Where to put everything (default: target/dist).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// What `traffic --generate KIND` makes, and the file each goes to.
pub const GENERATED: [(&str, &str); 6] = [
    ("man", "man/traffic.1"),
    ("bash", "completions/traffic.bash"),
    ("zsh", "completions/_traffic"),
    ("fish", "completions/traffic.fish"),
    ("elvish", "completions/traffic.elv"),
    ("powershell", "completions/_traffic.ps1"),
];

/// The deployment files, from `deploy/`.
const DEPLOY: [&str; 4] = [
    "traffic.service",
    "traffic.default",
    "Containerfile",
    "daemonset.yaml",
];

pub fn dist(opts: &Options) -> Result<()> {
    let built = build(&build::Options { release: true })?;
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| workspace_root().join("target/dist"));
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let binary = out.join("traffic");
    fs::copy(&built.traffic, &binary)
        .with_context(|| format!("copying the binary to {}", binary.display()))?;
    generate(&built.traffic, &out)?;
    for name in DEPLOY {
        let from = workspace_root().join("deploy").join(name);
        fs::copy(&from, out.join(name)).with_context(|| format!("copying {}", from.display()))?;
    }
    eprintln!(
        "xtask dist: {} holds traffic, its man page, completions for bash, zsh, fish, elvish and PowerShell, and the deployment files",
        out.display()
    );
    Ok(())
}

/// Writes the man page and every completion script that `traffic` (the
/// binary at `traffic`) makes into `out`.
pub fn generate(traffic: &Path, out: &Path) -> Result<()> {
    for (kind, name) in GENERATED {
        let path = out.join(name);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let made = Command::new(traffic)
            .args(["--generate", kind])
            .output()
            .with_context(|| format!("running {} --generate {kind}", traffic.display()))?;
        if !made.status.success() || made.stdout.is_empty() {
            bail!(
                "{} --generate {kind} failed: {}",
                traffic.display(),
                String::from_utf8_lossy(&made.stderr)
            );
        }
        fs::write(&path, &made.stdout).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
