//! Embeds the XDP object named by `TRAFFIC_EBPF_OBJECT` (set by `cargo xtask`).
//!
//! The object is built by `cargo xtask build` with the nightly toolchain and
//! bpf-linker. Compiling it from here on every `cargo check` would make
//! analysis tools need that toolchain, so without the variable an empty object
//! is embedded and `traffic` explains how to build it properly when run.

use std::{env, fs, path::PathBuf};

fn main() {
    const VAR: &str = "TRAFFIC_EBPF_OBJECT";
    println!("cargo:rerun-if-env-changed={VAR}");
    let out =
        PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("traffic.bpf.o");
    match env::var_os(VAR) {
        Some(path) => {
            let path = PathBuf::from(path);
            println!("cargo:rerun-if-changed={}", path.display());
            if let Err(err) = fs::copy(&path, &out) {
                panic!(
                    "cannot copy the XDP object {} named by {VAR}: {err}",
                    path.display()
                );
            }
        }
        None => fs::write(&out, []).expect("write an empty object into OUT_DIR"),
    }
}
