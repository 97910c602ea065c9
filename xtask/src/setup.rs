//! Installs what building the XDP program needs, saying what it does.
//!
//! The eBPF crate builds with nightly (for `-Z build-std=core`) and links with
//! bpf-linker, which must be linked against the same LLVM major as that
//! nightly rustc, or the bitcode it reads is refused. So we read the major
//! from `rustc +nightly -vV`, and build bpf-linker against Debian's
//! `llvm-N-dev` when the installed one does not match.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use clap::Parser;

use crate::exec::{exec, is_root, output};

/// The toolchain the eBPF crate builds with; see traffic-ebpf/rust-toolchain.toml.
pub const EBPF_TOOLCHAIN: &str = "nightly";

#[derive(Debug, Parser)]
pub struct Options {
    /// Only report what is missing; install nothing.
    #[arg(long)]
    pub check: bool,
}

/// Checks, and unless `--check` installs, everything the eBPF build needs.
pub fn ensure(opts: &Options) -> Result<()> {
    let install = !opts.check;
    let major = nightly_llvm_major(install)?;
    ensure_rust_src(install)?;
    ensure_bpf_linker(major, install)?;
    say(&format!(
        "ready: {EBPF_TOOLCHAIN} rustc (LLVM {major}), rust-src, bpf-linker linked against LLVM {major}"
    ));
    Ok(())
}

fn say(msg: &str) {
    eprintln!("xtask setup: {msg}");
}

fn rustup() -> Command {
    let mut cmd = Command::new("rustup");
    // A RUSTUP_TOOLCHAIN inherited from `cargo +stable xtask` would override
    // the toolchain we name.
    cmd.env_remove("RUSTUP_TOOLCHAIN");
    cmd
}

/// The LLVM major version of the nightly rustc, installing nightly if absent.
fn nightly_llvm_major(install: bool) -> Result<u32> {
    let version = |_: ()| -> Result<String> {
        let out = output(
            rustup()
                .args(["run", EBPF_TOOLCHAIN, "rustc", "-vV"])
                .env_remove("RUSTC"),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let text = match version(()) {
        Ok(text) => text,
        Err(err) if install => {
            say(&format!(
                "no {EBPF_TOOLCHAIN} toolchain ({err:#}); installing it with rustup"
            ));
            exec(rustup().args([
                "toolchain",
                "install",
                EBPF_TOOLCHAIN,
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ]))
            .context("the XDP program needs a nightly Rust toolchain; install one with `rustup toolchain install nightly --component rust-src`")?;
            version(())?
        }
        Err(err) => return Err(err.context(format!("no {EBPF_TOOLCHAIN} toolchain"))),
    };
    parse_llvm_major(&text).with_context(|| {
        format!("could not find `LLVM version: N` in `rustc +{EBPF_TOOLCHAIN} -vV`:\n{text}")
    })
}

fn parse_llvm_major(rustc_vv: &str) -> Option<u32> {
    rustc_vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.trim().split('.').next())
        .and_then(|m| m.parse().ok())
}

fn ensure_rust_src(install: bool) -> Result<()> {
    let out = output(rustup().args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        EBPF_TOOLCHAIN,
    ]))?;
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        return Ok(());
    }
    if !install {
        bail!("rust-src is missing for {EBPF_TOOLCHAIN}; run `cargo xtask setup`");
    }
    say(&format!(
        "installing rust-src for {EBPF_TOOLCHAIN} (the BPF target builds core from source)"
    ));
    exec(rustup().args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        EBPF_TOOLCHAIN,
    ]))
}

fn cargo_home() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
}

/// The LLVM major the installed bpf-linker was built for, if one is installed
/// by `cargo install`: read from the features cargo recorded for it.
fn installed_bpf_linker_llvm() -> Option<Option<u32>> {
    let path = cargo_home().join(".crates2.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let installs = json.get("installs")?.as_object()?;
    let (_, install) = installs
        .iter()
        .find(|(k, _)| k.starts_with("bpf-linker "))?;
    let features = install.get("features")?.as_array()?;
    Some(features.iter().find_map(|f| {
        f.as_str()?
            .strip_prefix("llvm-")
            .and_then(|m| m.parse().ok())
    }))
}

fn ensure_bpf_linker(major: u32, install: bool) -> Result<()> {
    let found = Command::new("bpf-linker").arg("--version").output().is_ok();
    let built_for = installed_bpf_linker_llvm().flatten();
    match (found, built_for) {
        (true, Some(m)) if m == major => return Ok(()),
        (true, Some(m)) => say(&format!(
            "bpf-linker is linked against LLVM {m}, but {EBPF_TOOLCHAIN} rustc uses LLVM {major}; rebuilding it"
        )),
        (true, None) => say(&format!(
            "bpf-linker was not installed by `cargo install` with an llvm-N feature; rebuilding it against LLVM {major}"
        )),
        (false, _) => say(&format!(
            "bpf-linker is not installed; building it against LLVM {major}"
        )),
    }
    if !install {
        bail!("bpf-linker for LLVM {major} is missing; run `cargo xtask setup`");
    }
    let llvm_prefix = PathBuf::from(format!("/usr/lib/llvm-{major}"));
    if !llvm_prefix.join("bin/llvm-config").exists() {
        install_llvm_dev(major)?;
    }
    let path = env::var_os("PATH").unwrap_or_default();
    let path =
        env::join_paths(std::iter::once(llvm_prefix.join("bin")).chain(env::split_paths(&path)))?;
    say(&format!(
        "cargo install bpf-linker --no-default-features --features llvm-{major} (takes a few minutes)"
    ));
    exec(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--force",
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{major}"))
            .env("PATH", path)
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO_TARGET_DIR"),
    )
    .context("building bpf-linker failed; see cargo's output above")
}

fn install_llvm_dev(major: u32) -> Result<()> {
    let packages = [
        format!("llvm-{major}-dev"),
        format!("libpolly-{major}-dev"),
        "libzstd-dev".to_owned(),
    ];
    let manual = format!("apt-get install {}", packages.join(" "));
    if !Path::new("/etc/debian_version").exists() {
        bail!(
            "LLVM {major} development files are missing (no /usr/lib/llvm-{major}/bin/llvm-config); \
             install LLVM {major} with its llvm-config, then run `cargo xtask setup` again"
        );
    }
    if !is_root() {
        bail!(
            "LLVM {major} development files are missing; as root, run `apt-get update && {manual}`, \
             then `cargo xtask setup` again"
        );
    }
    say(&format!("installing {} with apt-get", packages.join(" ")));
    apt_install(&packages).with_context(|| format!("`{manual}` failed"))
}

/// Installs Debian packages providing `commands` that are not on PATH, when we
/// are root on Debian; otherwise says which are missing and what to run.
pub fn ensure_commands(what_for: &str, commands: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<_> = commands.iter().filter(|(cmd, _)| !on_path(cmd)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut packages: Vec<&str> = missing.iter().map(|(_, pkg)| *pkg).collect();
    packages.dedup();
    let names: Vec<&str> = missing.iter().map(|(cmd, _)| *cmd).collect();
    if !(is_root() && Path::new("/etc/debian_version").exists()) {
        bail!(
            "{what_for} needs {}; install them (Debian: apt-get install {})",
            names.join(", "),
            packages.join(" ")
        );
    }
    say(&format!(
        "{what_for} needs {}; installing {} with apt-get",
        names.join(", "),
        packages.join(" ")
    ));
    apt_install(&packages)
}

fn apt_install<S: AsRef<std::ffi::OsStr>>(packages: &[S]) -> Result<()> {
    exec(
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    exec(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn on_path(cmd: &str) -> bool {
    env::var_os("PATH")
        .is_some_and(|path| env::split_paths(&path).any(|dir| dir.join(cmd).is_file()))
}

#[cfg(test)]
mod tests {
    use super::parse_llvm_major;

    #[test]
    fn reads_llvm_major_from_rustc_vv() {
        let text =
            "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nbinary: rustc\nLLVM version: 22.1.4\n";
        assert_eq!(parse_llvm_major(text), Some(22));
        assert_eq!(parse_llvm_major("rustc 1.0\n"), None);
    }
}
