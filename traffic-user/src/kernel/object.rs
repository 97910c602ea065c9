//! The XDP objects embedded in the binary and the helpers that load them.

use std::io;

use aya::{
    Ebpf, EbpfLoader,
    programs::{ProgramError, Xdp},
};

use super::AttachMode;

/// The classifier's object built by `cargo xtask build`, or empty when this
/// binary was built by plain cargo.
pub(crate) static CLASSIFIER: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/traffic.bpf.o"));

/// The tools' object (floor and XDP_TX programs, no maps), likewise.
pub(crate) static TOOLS: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/traffic-tools.bpf.o"));

/// The benchmark's reference classifier on the kernel's LPM tries, likewise.
pub(crate) static LPM: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/traffic-lpm.bpf.o"));

/// Loads `object` with `loader` after checking it was embedded.
pub(crate) fn load(object: &[u8], loader: &mut EbpfLoader<'_>) -> Result<Ebpf, EngineError> {
    if object.is_empty() {
        return Err(EngineError::NotBuilt);
    }
    // Before Linux 5.11 BPF memory was charged to RLIMIT_MEMLOCK; lift it
    // so large rule sets load there too. See https://lwn.net/Articles/837122/
    raise_memlock_limit();
    loader.load(object).map_err(EngineError::from_load)
}

/// Errors from loading, attaching or reading the XDP program.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The binary carries no XDP object.
    #[error(
        "this traffic binary was built without its XDP program (plain `cargo build`); build it with `cargo xtask build`, or use `cargo xtask run -- ARGS`"
    )]
    NotBuilt,
    /// The process may not load BPF programs.
    #[error(
        "permission denied while {action}: traffic needs root, or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON; run it as root"
    )]
    PermissionDenied {
        /// What was being done.
        action: &'static str,
    },
    /// The object could not be loaded (maps created, relocated).
    #[error("loading the XDP object failed")]
    Load {
        /// aya's error.
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// The kernel refused the program; the verifier log is in the source.
    #[error("the kernel refused to load the XDP program `{program}`")]
    Program {
        /// The program's name.
        program: &'static str,
        /// aya's error, with the verifier log.
        #[source]
        source: Box<ProgramError>,
    },
    /// A map the program should have is missing or of the wrong type.
    #[error("the XDP object has no usable map `{name}`; rebuild with `cargo xtask build`")]
    Map {
        /// The map's name.
        name: &'static str,
        /// aya's error.
        #[source]
        source: Option<aya::maps::MapError>,
    },
    /// The event ring could not be mapped into this process.
    #[error(
        "mapping the event ring buffer into memory failed (is RLIMIT_MEMLOCK or the address space limited?)"
    )]
    MapRing(#[source] std::io::Error),
    /// The rule table could not be built or put in force.
    #[error(transparent)]
    Table(#[from] super::table::TableError),
    /// A reload tried to change the default action, which is fixed when
    /// the program is loaded.
    #[error(
        "the default action cannot change while traffic runs (it is compiled into the program); restart traffic to change --default"
    )]
    DefaultChanged,
    /// A rule set has more rules than there are per-rule counters.
    #[error(
        "{rules} rules do not fit in the {room} per-rule counters set when traffic started; restart it with --max-rules {rules} or more"
    )]
    TooManyRules {
        /// Rules in the set.
        rules: usize,
        /// Counters for each table.
        room: u32,
    },
    /// The per-rule counters would take too much of the kernel's memory.
    #[error(
        "per-rule counters for {slots} rules a table would take {} MiB of kernel memory ({} MiB per CPU, {cpus} CPUs), more than half of the {} MiB available; give a smaller --max-rules, or --no-rule-counts",
        bytes >> 20, (bytes / *cpus as u64) >> 20, available >> 20
    )]
    RuleCountsTooLarge {
        /// Rules each table may hold.
        slots: u32,
        /// Bytes the counters would take, over all CPUs.
        bytes: u64,
        /// Possible CPUs.
        cpus: usize,
        /// The kernel's estimate of the memory available (MemAvailable).
        available: u64,
    },
    /// A batched read or write of per-rule or per-source counters failed.
    #[error("reading or clearing the {what} failed")]
    Counters {
        /// Which counters.
        what: &'static str,
        /// The system call's error.
        #[source]
        source: io::Error,
    },
    /// The interface does not exist.
    #[error(
        "there is no network interface named `{iface}` (in this network namespace); list them with `ip link`"
    )]
    NoSuchInterface {
        /// The name given.
        iface: String,
    },
    /// Another XDP program is attached and `--force` was not given.
    #[error(
        "{iface} already has an XDP program attached ({program}); remove it first (`ip link set dev {iface} xdp off`, or `xdp-loader unload {iface} --all`) or pass --force to replace it"
    )]
    AlreadyAttached {
        /// The interface.
        iface: String,
        /// A description of the program found.
        program: String,
    },
    /// Another XDP program is held by a bpf_link, which `--force` cannot remove.
    #[error(
        "{iface} has an XDP program attached through a bpf_link ({program}); only the process holding the link can remove it: stop that process (another traffic?) and try again"
    )]
    HeldByLink {
        /// The interface.
        iface: String,
        /// A description of the program found.
        program: String,
    },
    /// Removing the other program for `--force` failed.
    #[error("could not remove the XDP program already on {iface} (--force)")]
    ForceDetach {
        /// The interface.
        iface: String,
        /// The netlink error.
        #[source]
        source: io::Error,
    },
    /// The driver or kernel refused the requested mode.
    #[error("{iface} refused XDP in {mode} mode{hint}")]
    ModeRefused {
        /// The interface.
        iface: String,
        /// The mode asked for.
        mode: AttachMode,
        /// What to try instead.
        hint: String,
        /// aya's error.
        #[source]
        source: Box<ProgramError>,
    },
    /// A capture setting is out of range.
    #[error("{0}")]
    BadSetting(String),
    /// Reading the counters failed.
    #[error("reading the packet counters failed")]
    ReadStats {
        /// aya's error.
        #[source]
        source: aya::maps::MapError,
    },
}

impl EngineError {
    pub(crate) fn from_load(source: aya::EbpfError) -> Self {
        if is_eperm(&source) {
            return EngineError::PermissionDenied {
                action: "creating BPF maps",
            };
        }
        EngineError::Load {
            source: Box::new(source),
        }
    }
}

fn is_eperm(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && io.raw_os_error() == Some(libc::EPERM)
        {
            return true;
        }
        if let Some(sys) = e.downcast_ref::<aya::sys::SyscallError>()
            && sys.io_error.raw_os_error() == Some(libc::EPERM)
        {
            return true;
        }
        cur = e.source();
    }
    false
}

pub(crate) fn os_error(err: &ProgramError) -> Option<i32> {
    match err {
        ProgramError::SyscallError(sys) => sys.io_error.raw_os_error(),
        _ => {
            let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
            while let Some(e) = cur {
                if let Some(io) = e.downcast_ref::<io::Error>() {
                    return io.raw_os_error();
                }
                cur = e.source();
            }
            None
        }
    }
}

/// `err` and its sources, joined by ": "; a source the text already
/// quotes is left out.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        // A message that names its cause in its own words ("cannot listen
        // there (Address already in use); give a free port") is not
        // followed by that cause again.
        let cause = e.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        cur = e.source();
    }
    text
}

/// Lifts the locked-memory limit: to infinity where the process may (root,
/// CAP_SYS_RESOURCE), else the soft limit to the hard one. AF_XDP charges
/// its UMEM to it.
pub(crate) fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `unlimited` is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } == 0 {
        return;
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills a valid rlimit; then setrlimit reads it. A
    // failure only matters where the kernel then reports its own error.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim);
        }
    }
}

pub(crate) fn xdp<'a>(ebpf: &'a Ebpf, name: &'static str) -> &'a Xdp {
    ebpf.program(name)
        .and_then(|p| p.try_into().ok())
        .unwrap_or_else(|| panic!("the embedded object has an XDP program `{name}`"))
}

pub(crate) fn xdp_mut<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> &'a mut Xdp {
    ebpf.program_mut(name)
        .and_then(|p| p.try_into().ok())
        .unwrap_or_else(|| panic!("the embedded object has an XDP program `{name}`"))
}

pub(crate) fn load_program(ebpf: &mut Ebpf, name: &'static str) -> Result<(), EngineError> {
    let program: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or(EngineError::Map { name, source: None })
        .and_then(|p| {
            p.try_into().map_err(|source| EngineError::Program {
                program: name,
                source: Box::new(source),
            })
        })?;
    if program.fd().is_ok() {
        return Ok(());
    }
    load_xdp(program).map_err(|source| {
        if os_error(&source) == Some(libc::EPERM) {
            EngineError::PermissionDenied {
                action: "loading the XDP program",
            }
        } else {
            EngineError::Program {
                program: name,
                source: Box::new(source),
            }
        }
    })
}

/// Attempts at loading a program that the verifier gave up on because a
/// signal came (as libbpf makes).
const LOAD_ATTEMPTS: usize = 5;

/// Loads `program`, again when the verifier stopped because a signal
/// came while it worked (EAGAIN: it checks for one as it goes, and a
/// large program takes it a tenth of a second): a SIGUSR1, a SIGHUP or a
/// child's SIGCHLD at that moment must not fail the run.
///
/// # Errors
///
/// The last attempt's.
pub(crate) fn load_xdp(program: &mut Xdp) -> Result<(), ProgramError> {
    again_after_a_signal(|| program.load(), |e| os_error(e) == Some(libc::EAGAIN))
}

/// Runs `load` up to [`LOAD_ATTEMPTS`] times while it fails as `eagain`
/// says a signal made it fail.
fn again_after_a_signal<E>(
    mut load: impl FnMut() -> Result<(), E>,
    eagain: impl Fn(&E) -> bool,
) -> Result<(), E> {
    let mut attempt = 1;
    loop {
        match load() {
            Err(e) if eagain(&e) && attempt < LOAD_ATTEMPTS => attempt += 1,
            result => return result,
        }
    }
}

pub(crate) fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, EngineError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(EngineError::Map { name, source: None })?;
    T::try_from(map).map_err(|source| EngineError::Map {
        name,
        source: Some(source),
    })
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot listen there ({source}); give a free port")]
    struct Quoting {
        #[source]
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("reading the rules failed")]
    struct Plain(#[source] std::io::Error);

    #[test]
    fn a_cause_is_said_once() {
        let busy = || std::io::Error::from_raw_os_error(libc::EADDRINUSE);
        let quoted = error_chain(&Quoting { source: busy() });
        assert_eq!(quoted.matches("in use").count(), 1, "{quoted}");
        let plain = error_chain(&Plain(busy()));
        assert!(
            plain.starts_with("reading the rules failed: Address"),
            "{plain}"
        );
    }

    /// What loading comes to when its attempts fail as `fails` says (by
    /// attempt, from 1), and the attempts made.
    fn attempts(
        fails: impl Fn(usize) -> Option<&'static str>,
    ) -> (Result<(), &'static str>, usize) {
        let mut calls = 0;
        let r = super::again_after_a_signal(
            || {
                calls += 1;
                fails(calls).map_or(Ok(()), Err)
            },
            |e| *e == "EAGAIN",
        );
        (r, calls)
    }

    #[test]
    fn a_load_a_signal_stopped_is_tried_again_a_few_times_and_no_other() {
        // Two signals, then the verifier finishes.
        assert_eq!(attempts(|n| (n < 3).then_some("EAGAIN")), (Ok(()), 3));
        // Signals all along: the last attempt's error.
        assert_eq!(
            attempts(|_| Some("EAGAIN")),
            (Err("EAGAIN"), super::LOAD_ATTEMPTS)
        );
        // The verifier's refusal is not tried again.
        assert_eq!(attempts(|_| Some("EACCES")), (Err("EACCES"), 1));
    }
}
