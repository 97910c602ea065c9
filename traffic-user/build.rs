//! Embeds the XDP objects: the classifier named by `TRAFFIC_EBPF_OBJECT` (set
//! by `cargo xtask`) and, beside it, `traffic-tools` (the floor and XDP_TX
//! programs of the benchmark and the generator) and `traffic-lpm` (the
//! benchmark's reference classifier on the kernel's LPM tries).
//!
//! The objects are built by `cargo xtask build` with the nightly toolchain and
//! bpf-linker. Compiling it from here on every `cargo check` would make
//! analysis tools need that toolchain, so without the variable an empty object
//! is embedded and `traffic` explains how to build it properly when run.

use std::{env, fs, path::PathBuf};

fn main() {
    const VAR: &str = "TRAFFIC_EBPF_OBJECT";
    println!("cargo:rerun-if-env-changed={VAR}");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let embedded = [
        (out_dir.join("traffic.bpf.o"), "traffic"),
        (out_dir.join("traffic-tools.bpf.o"), "traffic-tools"),
        (out_dir.join("traffic-lpm.bpf.o"), "traffic-lpm"),
    ];
    match env::var_os(VAR) {
        Some(path) => {
            let path = PathBuf::from(path);
            for (out, name) in &embedded {
                let from = path.with_file_name(name);
                println!("cargo:rerun-if-changed={}", from.display());
                if let Err(err) = fs::copy(&from, out) {
                    panic!(
                        "cannot copy the XDP object {} (named by {VAR}, or beside it): {err}",
                        from.display()
                    );
                }
            }
        }
        None => {
            for (out, _) in &embedded {
                fs::write(out, []).expect("write an empty object into OUT_DIR");
            }
        }
    }
}
