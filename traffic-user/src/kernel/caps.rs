//! Checking, before touching the kernel, that we may load and attach XDP.

/// Linux capability numbers from `linux/capability.h`.
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Why the process may not run the engine.
#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    /// Capabilities are missing.
    #[error(
        "traffic needs root (or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN) to load and attach XDP programs; it is missing {missing}; run it as root"
    )]
    Missing {
        /// The missing capabilities, comma-separated.
        missing: String,
    },
}

/// The effective capability set of this process, from `/proc/self/status`.
fn effective() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Checks that the process can load BPF programs and attach them to
/// interfaces: CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON, plus CAP_NET_ADMIN.
///
/// # Errors
///
/// [`CapsError::Missing`] naming what is missing. When the capability set
/// cannot be read, the check passes and the kernel has the last word.
pub fn check() -> Result<(), CapsError> {
    let Some(eff) = effective() else {
        return Ok(());
    };
    let has = |cap: u32| eff & (1u64 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_SYS_ADMIN) && !has(CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_SYS_ADMIN) && !has(CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CapsError::Missing {
            missing: missing.join(", "),
        })
    }
}
