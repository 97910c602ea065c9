//! In-kernel cost per packet, measured with `BPF_PROG_TEST_RUN`.
//!
//! The kernel runs the program `repeat` times on the same frame and reports
//! the mean time per run; this measures the program alone, without the
//! driver, so it is the figure to compare programs by. Each measurement is
//! taken [`ROUNDS`] times and the median kept, since the machine's other
//! work shows up as outliers.

use std::{net::IpAddr, time::Duration};

use aya::programs::{TestRun as _, TestRunOptions, Xdp};

use crate::{
    kernel::{Engine, EngineError, Settings, Tool, ToolProgram},
    lab::frame::FrameSpec,
    rules::{Action, Cidr, Origin, RuleSet},
};

/// Measurements per figure; the median is reported.
pub const ROUNDS: usize = 5;

/// One measured figure.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Cost {
    /// What ran: `floor` or `traffic`.
    pub program: String,
    /// The path through the program: `pass` (floor), `drop`, `capture`.
    pub path: String,
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// Rules loaded of the frame's family.
    pub rules: usize,
    /// Runs per measurement.
    pub repeat: u32,
    /// Median nanoseconds per packet.
    pub ns_per_packet: f64,
    /// Every round's nanoseconds per packet.
    pub rounds: Vec<f64>,
}

/// Errors of the in-kernel measurements.
#[derive(Debug, thiserror::Error)]
pub enum CostError {
    /// Loading the engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The kernel refused the test run.
    #[error("BPF_PROG_TEST_RUN failed")]
    TestRun(#[source] Box<aya::programs::ProgramError>),
    /// Events were lost, so the capture path was not measured as it runs.
    #[error("{0} events were lost during the capture-path measurement")]
    Lost(u64),
    /// xdp-filter's program could not be measured.
    #[error("measuring xdp-filter's program failed: {0}")]
    XdpFilter(String),
    /// The program gave an unexpected verdict.
    #[error(
        "the program returned {got} where {want} was expected; the benchmark would measure the wrong path"
    )]
    Verdict {
        /// The verdict returned.
        got: u32,
        /// The verdict expected.
        want: u32,
    },
}

/// The frame every figure is measured on: a 64-byte UDP frame.
pub fn frame(src: IpAddr) -> Vec<u8> {
    let dst: IpAddr = if src.is_ipv4() {
        "198.51.100.1".parse().expect("valid")
    } else {
        "2001:db8::1".parse().expect("valid")
    };
    let mut spec = FrameSpec::udp(src, dst);
    spec.payload_len = if src.is_ipv4() { 22 } else { 2 };
    spec.build()
}

/// Runs `program` on `frame` `repeat` times, [`ROUNDS`] times over, checking
/// the verdict; returns the median and all rounds in ns per packet.
///
/// # Errors
///
/// When the kernel refuses the run or the verdict is not `want`.
pub fn measure(
    program: &Xdp,
    frame: &[u8],
    repeat: u32,
    want: u32,
) -> Result<(f64, Vec<f64>), CostError> {
    measure_rounds(program, frame, repeat, repeat, want, || {})
}

/// As [`measure`] for a program that writes an event per run: the runs go
/// in batches that fill at most an eighth of the default ring, and `ring` is
/// emptied between batches, as a reader keeping up would. The ring's memory
/// is reused as it is in a live capture, so the figure is not inflated by
/// cache misses on a ring too large to stay cached, nor deflated by runs
/// that found the ring full.
///
/// # Errors
///
/// As [`measure`].
pub fn measure_draining(
    program: &Xdp,
    frame: &[u8],
    repeat: u32,
    want: u32,
    ring: &mut crate::kernel::EventRing,
) -> Result<(f64, Vec<f64>), CostError> {
    measure_rounds(program, frame, repeat, CAPTURE_BATCH, want, || {
        ring.read(|_| {});
    })
}

/// Runs per batch on the capture path: an eighth of the default 8 MiB ring
/// at the default snaplen.
pub const CAPTURE_BATCH: u32 = 4_000;

/// [`ROUNDS`] rounds of `repeat` runs each, in test_run calls of at most
/// `batch` runs with `between` called before each call; each round's figure
/// is its mean time per run.
fn measure_rounds(
    program: &Xdp,
    frame: &[u8],
    repeat: u32,
    batch: u32,
    want: u32,
    mut between: impl FnMut(),
) -> Result<(f64, Vec<f64>), CostError> {
    let mut rounds = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let mut left = repeat;
        let mut total_ns = 0.0;
        while left > 0 {
            let n = left.min(batch);
            between();
            let result = program
                .test_run(TestRunOptions {
                    data_in: Some(frame),
                    repeat: n,
                    ..TestRunOptions::default()
                })
                .map_err(|e| CostError::TestRun(Box::new(e)))?;
            if result.return_value != want {
                return Err(CostError::Verdict {
                    got: result.return_value,
                    want,
                });
            }
            // The kernel reports the mean of the call's runs.
            total_ns += ns(result.duration) * f64::from(n);
            left -= n;
        }
        rounds.push(total_ns / f64::from(repeat));
    }
    let mut sorted = rounds.clone();
    sorted.sort_by(f64::total_cmp);
    Ok((sorted[sorted.len() / 2], rounds))
}

fn ns(d: Duration) -> f64 {
    d.as_nanos() as f64
}

/// A rule set of `n` rules for `family`, one of which (the last) covers
/// `target` with `action`; the others are distinct prefixes elsewhere.
pub fn rules_with(n: usize, target: IpAddr, action: Action) -> RuleSet {
    let mut set = RuleSet::new(Action::Pass);
    let origin = || Origin::Flag("bench");
    for i in 0..n.saturating_sub(1) {
        // Table entries only, in the reserved 240.0.0.0/4 (room for 2^20
        // /24s) and 2001:db8::/32: nothing is ever sent to these prefixes.
        let cidr = match target {
            IpAddr::V4(_) => {
                let i = i as u32;
                Cidr::new(IpAddr::from((0xf000_0000 + (i << 8)).to_be_bytes()), 24)
            }
            IpAddr::V6(_) => {
                let i = i as u128;
                Cidr::new(
                    IpAddr::from(((0x2001_0db8_8000u128 << 80) + (i << 64)).to_be_bytes()),
                    64,
                )
            }
        }
        .expect("aligned prefix");
        set.add(crate::rules::Rule {
            cidr,
            action: Action::Drop,
            origin: origin(),
        });
    }
    let len = if target.is_ipv4() { 24 } else { 48 };
    let net = Cidr::new(mask(target, len), len).expect("prefix of the target");
    set.add(crate::rules::Rule {
        cidr: net,
        action,
        origin: origin(),
    });
    assert!(set.seal().is_empty(), "distinct prefixes");
    set
}

fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::from((a.to_bits() & (u32::MAX << (32 - len))).to_be_bytes()),
        IpAddr::V6(a) => IpAddr::from((a.to_bits() & (u128::MAX << (128 - len))).to_be_bytes()),
    }
}

/// XDP verdicts.
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// The row of the floor with one clock read: `bpf_ktime_get_ns`, which
/// every capture event calls for its timestamp.
pub const CLOCK_PROGRAM: &str = "floor+clock";

/// Measures the floor and traffic's drop and capture paths for IPv4 and IPv6
/// with each rule count in `rule_counts`. `progress` is told of each figure.
///
/// # Errors
///
/// As [`measure`], or when loading fails.
pub fn kernel_costs(
    rule_counts: &[usize],
    repeat: u32,
    xdp_filter_pins: Option<&std::path::Path>,
    mut progress: impl FnMut(&Cost),
) -> Result<Vec<Cost>, CostError> {
    let mut costs = Vec::new();
    let mut push = |cost: Cost, costs: &mut Vec<Cost>| {
        progress(&cost);
        costs.push(cost);
    };
    let sources: [(&str, IpAddr); 2] = [
        ("ipv4", "192.0.2.1".parse().expect("valid")),
        ("ipv6", "2001:db8:bad::1".parse().expect("valid")),
    ];
    for (family, src) in sources {
        let frame = frame(src);
        // The floor, and what the clock read every capture event takes
        // costs by itself.
        for (tool, program) in [
            (Tool::FloorPass, "floor"),
            (Tool::FloorClock, CLOCK_PROGRAM),
        ] {
            let loaded = ToolProgram::load(tool)?;
            let (median, rounds) = measure(loaded.program(), &frame, repeat, XDP_PASS)?;
            push(
                Cost {
                    program: program.into(),
                    path: "pass".into(),
                    family: family.into(),
                    rules: 0,
                    repeat,
                    ns_per_packet: median,
                    rounds,
                },
                &mut costs,
            );
        }
        for &n in rule_counts {
            for (path, action, want) in [
                ("drop", Action::Drop, XDP_DROP),
                ("capture", Action::Capture, XDP_PASS),
            ] {
                // As the command line runs it: rules counted per rule
                // up to the default's bound.
                let settings = Settings {
                    rule_counts: crate::kernel::engine::counts_rules_by_default(n),
                    ..Settings::default()
                };
                let mut engine = Engine::load_with(&rules_with(n, src, action), &settings)?;
                let mut ring = engine.take_events().expect("a fresh engine has its ring");
                let (median, rounds) = if action == Action::Capture {
                    measure_draining(engine.program(), &frame, repeat, want, &mut ring)?
                } else {
                    measure(engine.program(), &frame, repeat, want)?
                };
                let lost = engine.stats()?.events_lost;
                if lost > 0 {
                    return Err(CostError::Lost(lost));
                }
                push(
                    Cost {
                        program: "traffic".into(),
                        path: path.into(),
                        family: family.into(),
                        rules: n,
                        repeat,
                        ns_per_packet: median,
                        rounds,
                    },
                    &mut costs,
                );
            }
            // xdp-filter's maps hold at most 10,000 entries.
            if let Some(pins) = xdp_filter_pins.filter(|_| n <= 10_000) {
                match xdp_filter_cost(pins, family, src, n, repeat) {
                    Ok(Some(cost)) => push(cost, &mut costs),
                    Ok(None) => {}
                    Err(e) => return Err(CostError::XdpFilter(e.to_string())),
                }
            }
        }
    }
    Ok(costs)
}

/// Where Debian's xdp-tools package installs xdp-filter's program objects.
pub const XDP_FILTER_DIR: &str = "/usr/lib/x86_64-linux-gnu/bpf";

/// xdp-filter's `MAP_FLAG_SRC` (xdp-filter/common_kern_user.h): the entry
/// matches source addresses.
const XDPFILT_MAP_FLAG_SRC: u64 = 1;

/// Enters a private mount namespace with a BPF filesystem of its own, so
/// that objects whose maps are pinned by name (as xdp-tools' are) load on a
/// machine where /sys/fs/bpf is not mounted, without touching the host's
/// mounts. Returns the directory to pin under.
///
/// # Errors
///
/// When the namespace or the mount cannot be made (needs CAP_SYS_ADMIN and a
/// single-threaded process).
pub fn private_bpffs() -> std::io::Result<std::path::PathBuf> {
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    // SAFETY: plain syscalls with valid, NUL-terminated arguments.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS))?;
        check(libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
    }
    let dir = std::env::temp_dir().join(format!("traffic-bench-bpffs-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let c_dir = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(std::io::Error::other)?;
    // SAFETY: as above.
    unsafe {
        check(libc::mount(
            c"bpf".as_ptr(),
            c_dir.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        ))?;
    }
    Ok(dir)
}

/// Measures xdp-filter's own program (`xdpfilt_alw_ip`: allow by default,
/// drop listed addresses) on the same frames, with `n` source addresses
/// listed, the frame's among them. Returns `None` when xdp-tools is not
/// installed.
///
/// # Errors
///
/// When loading or running fails.
pub fn xdp_filter_cost(
    pin_dir: &std::path::Path,
    family: &str,
    src: IpAddr,
    n: usize,
    repeat: u32,
) -> Result<Option<Cost>, Box<dyn std::error::Error>> {
    use aya::maps::{PerCpuHashMap, PerCpuValues};
    let path = std::path::Path::new(XDP_FILTER_DIR).join("xdpfilt_alw_ip.o");
    if !path.exists() {
        return Ok(None);
    }
    // Each measurement gets fresh maps: remove what the last one pinned.
    for name in ["filter_ipv4", "filter_ipv6", "xdp_stats_map"] {
        let _ = std::fs::remove_file(pin_dir.join(name));
    }
    let mut ebpf = aya::EbpfLoader::new()
        .default_map_pin_directory(pin_dir)
        .load_file(&path)?;
    let program: &mut Xdp = ebpf
        .program_mut("xdpfilt_alw_ip")
        .ok_or("xdpfilt_alw_ip.o has no program xdpfilt_alw_ip")?
        .try_into()?;
    crate::kernel::object::load_xdp(program)?;
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    let flags = || PerCpuValues::try_from(vec![XDPFILT_MAP_FLAG_SRC; cpus]);
    match src {
        IpAddr::V4(a) => {
            let mut map: PerCpuHashMap<_, u32, u64> =
                PerCpuHashMap::try_from(ebpf.map_mut("filter_ipv4").ok_or("no filter_ipv4 map")?)?;
            for i in 0..n.saturating_sub(1) as u32 {
                map.insert(u32::from_be(0xf000_0000 + i), flags()?, 0)?;
            }
            map.insert(u32::from_ne_bytes(a.octets()), flags()?, 0)?;
        }
        IpAddr::V6(a) => {
            let mut map: PerCpuHashMap<_, [u8; 16], u64> =
                PerCpuHashMap::try_from(ebpf.map_mut("filter_ipv6").ok_or("no filter_ipv6 map")?)?;
            for i in 0..n.saturating_sub(1) as u128 {
                map.insert(
                    ((0x2001_0db8_8000u128 << 80) + i).to_be_bytes(),
                    flags()?,
                    0,
                )?;
            }
            map.insert(a.octets(), flags()?, 0)?;
        }
    }
    let program: &Xdp = ebpf
        .program("xdpfilt_alw_ip")
        .ok_or("no program")?
        .try_into()?;
    let (median, rounds) = measure(program, &frame(src), repeat, XDP_DROP)?;
    Ok(Some(Cost {
        program: "xdp-filter".into(),
        path: "drop".into(),
        family: family.into(),
        rules: n,
        repeat,
        ns_per_packet: median,
        rounds,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_rules_cover_the_target_once() {
        for target in ["192.0.2.1", "2001:db8:bad::1"] {
            let ip: IpAddr = target.parse().unwrap();
            let set = rules_with(1000, ip, Action::Capture);
            assert_eq!(set.len(), 1000);
            assert_eq!(set.action_for(ip), Action::Capture);
            assert_eq!(set.iter().filter(|r| r.cidr.contains(ip)).count(), 1);
        }
        assert_eq!(
            rules_with(1, "192.0.2.1".parse().unwrap(), Action::Drop).len(),
            1
        );
    }
}
