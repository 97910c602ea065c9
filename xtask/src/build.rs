//! Building the XDP program and the binaries that embed it.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};
use clap::Parser;

use crate::setup;

/// The environment variable through which `traffic-user/build.rs` learns the
/// path of the XDP object to embed. Without it the binary is built without one
/// and says so when run (this keeps `cargo check` and `cargo clippy` free of
/// the nightly toolchain).
pub const EBPF_OBJECT_ENV: &str = "TRAFFIC_EBPF_OBJECT";

#[derive(Debug, Parser)]
pub struct Options {
    /// Build the userspace side with the release profile (the XDP program is
    /// always optimised).
    #[arg(long)]
    pub release: bool,
}

/// What a build produced.
pub struct Built {
    /// The `traffic` binary, with the XDP program embedded.
    pub traffic: PathBuf,
    /// The XDP object file.
    pub ebpf_object: PathBuf,
}

/// The workspace root: the parent of this crate.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
}

/// Installs what is missing, then builds the XDP program and `traffic`.
pub fn build(opts: &Options) -> Result<Built> {
    setup::ensure(&setup::Options { check: false })?;
    let ebpf_object = build_ebpf()?;
    let mut cmd = cargo_json(&["build", "--package", "traffic-user", "--bins"]);
    if opts.release {
        cmd.arg("--release");
    }
    cmd.env(EBPF_OBJECT_ENV, &ebpf_object);
    let traffic = artifacts(&mut cmd)?
        .into_iter()
        .find(|(name, _)| name == "traffic")
        .map(|(_, path)| path)
        .context("cargo built no `traffic` binary")?;
    Ok(Built {
        traffic,
        ebpf_object,
    })
}

/// Builds `traffic-ebpf` from its own directory, so that its
/// `rust-toolchain.toml` (nightly) and `.cargo/config.toml` (BPF target,
/// build-std) apply.
fn build_ebpf() -> Result<PathBuf> {
    // The rustup proxy `cargo`, not this cargo: only the proxy reads the
    // eBPF crate's rust-toolchain.toml.
    let mut cmd = Command::new("cargo");
    cmd.args([
        "build",
        "--release",
        "--bins",
        "--message-format=json-render-diagnostics",
    ])
    .current_dir(workspace_root().join("traffic-ebpf"))
    // Set by `cargo xtask` for the stable toolchain; removed so that the
    // eBPF crate's own toolchain file applies.
    .env_remove("RUSTUP_TOOLCHAIN")
    .env_remove("RUSTC")
    .env_remove("RUSTC_WORKSPACE_WRAPPER")
    .env_remove("CARGO_BUILD_TARGET");
    let (_, object) = artifacts(&mut cmd)
        .context("building the XDP program (traffic-ebpf) failed")?
        .into_iter()
        .find(|(name, _)| name == "traffic")
        .context("cargo built no `traffic` object for the BPF target")?;
    Ok(object)
}

/// A cargo command that reports artifacts as JSON on stdout and renders
/// diagnostics to stderr as usual.
pub fn cargo_json(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(args)
        .arg("--message-format=json-render-diagnostics")
        .current_dir(workspace_root());
    cmd
}

/// Runs a cargo command made by [`cargo_json`] and returns `(target name,
/// executable)` for each executable it produced.
pub fn artifacts(cmd: &mut Command) -> Result<Vec<(String, PathBuf)>> {
    let output = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("failed to start {cmd:?}"))?;
    if !output.status.success() {
        bail!("{cmd:?} failed: {}", output.status);
    }
    let mut found = Vec::new();
    for line in output.stdout.split(|&b| b == b'\n') {
        let Ok(msg) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        if let (Some(name), Some(exe)) =
            (msg["target"]["name"].as_str(), msg["executable"].as_str())
        {
            found.push((name.to_owned(), PathBuf::from(exe)));
        }
    }
    Ok(found)
}
