//! The kernel side as seen from userspace: loading the XDP program, filling
//! its rule tables, attaching it to an interface and reading its counters.
//!
//! # Examples
//!
//! ```no_run
//! use traffic::{engine::{Engine, ModeChoice}, rules::{Action, RuleSet, Origin}};
//!
//! let mut rules = RuleSet::new(Action::Pass);
//! rules.add_str(Action::Drop, "192.0.2.0/24", Origin::Flag("--drop"))?;
//! let mut engine = Engine::load(&rules)?;
//! let attached = engine.attach("veth0", ModeChoice::Auto, false)?;
//! println!("attached in {} mode", attached.mode);
//! let stats = engine.stats()?;
//! println!("{} packets so far", stats.packets);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Minimum kernel version
//!
//! bpf_link attachment of XDP needs Linux 5.9; the LPM tries need 4.11.

use std::{fmt, io, time::Duration};

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        MapData, PerCpuArray, RingBuf, XskMap,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{
        ProgramError, Xdp, XdpMode, links::LinkType, loaded_links, loaded_programs, xdp::XdpLinkId,
    },
};
use traffic_common::{Config, CpuState, MAX_SNAPLEN, Rule as KernelRule, Stats, names};

use crate::{
    netlink,
    rules::{Cidr, RuleSet},
};

/// The XDP object built by `cargo xtask build`, or empty when this binary was
/// built by plain cargo.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/traffic.bpf.o"));

/// Which XDP mode the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeChoice {
    /// Native if the driver supports it, else generic (skb).
    Auto,
    /// In the driver: fastest; the driver must support XDP.
    Native,
    /// Generic XDP, after the kernel has built an skb: works everywhere, slower.
    Skb,
}

/// The mode the program is attached in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// In the driver.
    Native,
    /// Generic XDP.
    Skb,
}

impl AttachMode {
    fn xdp_mode(self) -> XdpMode {
        match self {
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Skb => XdpMode::Skb,
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachMode::Native => "native",
            AttachMode::Skb => "skb",
        })
    }
}

/// How the capture path behaves; fixed when the program is loaded.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Bytes of each captured frame to copy into its event (1 to 4096).
    pub snaplen: u32,
    /// Send 1 in this many packets to the capture path; 0 for none.
    pub sample_every: u32,
    /// Size of the event ring buffer in bytes: a power of two, at least a page.
    pub ring_bytes: u32,
    /// Wake the reader at most this often per CPU while events flow (zero:
    /// for every event); see the wake-up comment in the XDP program.
    pub wakeup_interval: Duration,
    /// Redirect packets to capture to AF_XDP sockets, one per receive queue
    /// (at most this many queues); 0 for the ring-buffer path.
    pub afxdp_queues: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            snaplen: traffic_common::DEFAULT_SNAPLEN,
            sample_every: 0,
            ring_bytes: DEFAULT_RING_BYTES,
            wakeup_interval: DEFAULT_WAKEUP_INTERVAL,
            afxdp_queues: 0,
        }
    }
}

impl Settings {
    /// What is wrong with these settings, one sentence each, naming the
    /// command-line flag; empty when they can be loaded.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.snaplen == 0 || self.snaplen > MAX_SNAPLEN {
            problems.push(format!(
                "--snaplen {} is out of range: use 1 to {MAX_SNAPLEN} bytes",
                self.snaplen
            ));
        }
        let page = 4096;
        if !self.ring_bytes.is_power_of_two() || self.ring_bytes < page {
            problems.push(format!(
                "--ring-size {} must be a power of two of at least {page} bytes (e.g. 8388608)",
                self.ring_bytes
            ));
        }
        problems
    }
}

/// The default size of the event ring: 8 MiB, about 40,000 events of the
/// default snaplen, or 40 ms of them at a million events per second.
pub const DEFAULT_RING_BYTES: u32 = 8 << 20;

/// The default bound on how long an event may wait for a wake-up; chosen by
/// measurement, see the wake-up comment in the XDP program.
pub const DEFAULT_WAKEUP_INTERVAL: Duration = Duration::from_micros(200);

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
    /// A rule could not be written into the kernel's table.
    #[error("writing rule {cidr} into the kernel's rule table failed")]
    InsertRule {
        /// The rule's prefix.
        cidr: Cidr,
        /// aya's error.
        #[source]
        source: aya::maps::MapError,
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
    fn from_load(source: aya::EbpfError) -> Self {
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

fn os_error(err: &ProgramError) -> Option<i32> {
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

/// Where the program is attached.
#[derive(Clone, Debug)]
pub struct Attached {
    /// The interface name.
    pub iface: String,
    /// Its index.
    pub ifindex: u32,
    /// The mode the kernel accepted.
    pub mode: AttachMode,
    /// Modes tried and refused before this one, with the kernel's reason.
    pub refused: Vec<(AttachMode, String)>,
    /// The program that `--force` removed, if any.
    pub replaced: Option<String>,
}

/// The loaded XDP program with its maps.
pub struct Engine {
    ebpf: Ebpf,
    stats: PerCpuArray<MapData, CpuState>,
    events: Option<RingBuf<MapData>>,
    xsks: XskMap<MapData>,
    attached: Option<(Attached, &'static str, XdpLinkId)>,
}

impl Engine {
    /// Loads the XDP program with `rules` in its tables.
    ///
    /// The rule tables are sized to the rule set; rules cannot be added later.
    ///
    /// # Errors
    ///
    /// [`EngineError::NotBuilt`] when the binary has no XDP object;
    /// [`EngineError::PermissionDenied`] without the needed capabilities; the
    /// verifier's refusal as [`EngineError::Program`].
    pub fn load(rules: &RuleSet) -> Result<Self, EngineError> {
        Self::load_with(rules, &Settings::default())
    }

    /// Loads the XDP program with `rules` and capture `settings`.
    ///
    /// # Errors
    ///
    /// As [`Engine::load`], and [`EngineError::BadSetting`] for a snaplen or
    /// ring size out of range.
    pub fn load_with(rules: &RuleSet, settings: &Settings) -> Result<Self, EngineError> {
        if EBPF_OBJECT.is_empty() {
            return Err(EngineError::NotBuilt);
        }
        validate(settings)?;
        // Before Linux 5.11 BPF memory was charged to RLIMIT_MEMLOCK; lift it
        // so large rule sets load there too. See https://lwn.net/Articles/837122/
        raise_memlock_limit();

        let (v4, v6) = rules.counts();
        let wakeup_ns = u64::try_from(settings.wakeup_interval.as_nanos()).unwrap_or(u64::MAX);
        let config = Config {
            default_action: rules.default_action().to_kernel(),
            snaplen: settings.snaplen,
            sample_every: settings.sample_every,
            // Wake early when a quarter of the ring is full, whatever the
            // interval, so a burst never waits for the timer to drain.
            wakeup_bytes: settings.ring_bytes / 4,
            wakeup_interval_ns: wakeup_ns,
            afxdp: u32::from(settings.afxdp_queues > 0),
            _pad: 0,
        };
        // A map needs at least one entry even when it will hold none.
        let size = |n: usize| u32::try_from(n.max(1)).unwrap_or(u32::MAX);
        let mut ebpf = EbpfLoader::new()
            .override_global(names::CONFIG, &config, true)
            .map_max_entries(names::RULES_V4, size(v4))
            .map_max_entries(names::RULES_V6, size(v6))
            .map_max_entries(names::EVENTS, settings.ring_bytes)
            .map_max_entries(names::XSKS, settings.afxdp_queues.max(1))
            .load(EBPF_OBJECT)
            .map_err(EngineError::from_load)?;

        // The program must be loaded while the object still owns its maps:
        // loading resolves map references to the maps' file descriptors.
        load_program(&mut ebpf, names::PROGRAM)?;
        fill_rules(&mut ebpf, rules)?;
        let stats = take_map(&mut ebpf, names::STATS)?;
        let events = take_map(&mut ebpf, names::EVENTS)?;
        let xsks = take_map(&mut ebpf, names::XSKS)?;
        Ok(Self {
            ebpf,
            stats,
            events: Some(events),
            xsks,
            attached: None,
        })
    }

    /// Transmits `frame` `count` times out of interface `ifindex` with
    /// BPF_PROG_RUN's live-frames mode (a program returning XDP_TX), `batch`
    /// frames per kernel batch. The kernel neither retries nor reports frames
    /// the device could not take: count them at the receiver.
    ///
    /// # Errors
    ///
    /// When the kernel refuses the run (it needs Linux 5.18 and a device
    /// that can transmit XDP frames).
    ///
    /// # Minimum kernel version
    ///
    /// 5.18 (`BPF_F_TEST_XDP_LIVE_FRAMES`).
    pub fn send_live_frames(
        &mut self,
        frame: &[u8],
        ifindex: u32,
        count: u32,
        batch: u32,
    ) -> Result<(), EngineError> {
        use aya::programs::{TestRun as _, TestRunAttrs, TestRunOptions};
        load_program(&mut self.ebpf, names::TX_PROGRAM)?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex. The kernel wants data_end to be
        // the frame's length (no metadata in front).
        let mut ctx = [0u8; 24];
        let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        ctx[4..8].copy_from_slice(&len.to_ne_bytes());
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        xdp(&self.ebpf, names::TX_PROGRAM)
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&ctx),
                repeat: count,
                attrs: TestRunAttrs::new().xdp_live_frames(batch),
                ..TestRunOptions::default()
            })
            .map_err(|source| EngineError::Program {
                program: names::TX_PROGRAM,
                source: Box::new(source),
            })?;
        Ok(())
    }

    /// Puts the AF_XDP socket `fd` in the program's map for receive queue
    /// `queue`: from then on, packets to capture that arrive on that queue
    /// go to it.
    ///
    /// # Errors
    ///
    /// When the queue is beyond the map's size or the kernel refuses the fd.
    pub fn set_xsk(
        &mut self,
        queue: u32,
        fd: impl std::os::fd::AsRawFd,
    ) -> Result<(), EngineError> {
        self.xsks
            .set(queue, fd, 0)
            .map_err(|source| EngineError::Map {
                name: names::XSKS,
                source: Some(source),
            })
    }

    /// The ring buffer the program writes capture events to. It can be taken
    /// once, by the one reader.
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    /// The classifier program, loaded; for `test_run`.
    pub fn program(&self) -> &Xdp {
        xdp(&self.ebpf, names::PROGRAM)
    }

    /// The do-nothing program used as the cost floor in benchmarks, loaded on
    /// first use.
    ///
    /// # Errors
    ///
    /// When the kernel refuses to load it.
    pub fn floor_program(&mut self) -> Result<&Xdp, EngineError> {
        load_program(&mut self.ebpf, names::FLOOR_PROGRAM)?;
        Ok(xdp(&self.ebpf, names::FLOOR_PROGRAM))
    }

    /// The counters summed over all CPUs.
    ///
    /// # Errors
    ///
    /// When the map cannot be read.
    pub fn stats(&self) -> Result<Stats, EngineError> {
        let per_cpu = self
            .stats
            .get(&0, 0)
            .map_err(|source| EngineError::ReadStats { source })?;
        let mut total = Stats::default();
        for cpu in per_cpu.iter() {
            total.accumulate(&cpu.stats);
        }
        Ok(total)
    }

    /// Attaches the classifier to `iface` through a bpf_link, so that the
    /// kernel removes it when this process exits, however it exits.
    ///
    /// With [`ModeChoice::Auto`], native mode is tried first and generic (skb)
    /// mode if the driver refuses; [`Attached::refused`] says why.
    ///
    /// # Errors
    ///
    /// [`EngineError::NoSuchInterface`]; [`EngineError::AlreadyAttached`] when
    /// another XDP program is there and `force` is false;
    /// [`EngineError::HeldByLink`] when it is held by a bpf_link;
    /// [`EngineError::ModeRefused`] when no acceptable mode works.
    pub fn attach(
        &mut self,
        iface: &str,
        mode: ModeChoice,
        force: bool,
    ) -> Result<&Attached, EngineError> {
        self.attach_program(names::PROGRAM, iface, mode, force)
    }

    /// Attaches one of the floor programs instead of the classifier, for
    /// benchmarks: [`names::FLOOR_PROGRAM`] passes every packet,
    /// [`names::FLOOR_DROP_PROGRAM`] drops every packet; neither counts.
    ///
    /// # Errors
    ///
    /// As [`Engine::attach`], or when the program cannot be loaded.
    pub fn attach_floor(
        &mut self,
        program: &'static str,
        iface: &str,
        mode: ModeChoice,
    ) -> Result<&Attached, EngineError> {
        load_program(&mut self.ebpf, program)?;
        self.attach_program(program, iface, mode, false)
    }

    fn attach_program(
        &mut self,
        name: &'static str,
        iface: &str,
        mode: ModeChoice,
        force: bool,
    ) -> Result<&Attached, EngineError> {
        let ifindex = netlink::ifindex(iface).ok_or_else(|| EngineError::NoSuchInterface {
            iface: iface.to_owned(),
        })?;
        let replaced = self.clear_the_way(iface, ifindex, force)?;

        let candidates: &[AttachMode] = match mode {
            ModeChoice::Auto => &[AttachMode::Native, AttachMode::Skb],
            ModeChoice::Native => &[AttachMode::Native],
            ModeChoice::Skb => &[AttachMode::Skb],
        };
        let mut refused = Vec::new();
        let program = xdp_mut(&mut self.ebpf, name);
        for (i, &candidate) in candidates.iter().enumerate() {
            match program.attach_to_if_index(ifindex, candidate.xdp_mode()) {
                Ok(link) => {
                    let attached = Attached {
                        iface: iface.to_owned(),
                        ifindex,
                        mode: candidate,
                        refused,
                        replaced,
                    };
                    return Ok(&self.attached.insert((attached, name, link)).0);
                }
                Err(source) => {
                    if os_error(&source) == Some(libc::EPERM) {
                        return Err(EngineError::PermissionDenied {
                            action: "attaching the XDP program",
                        });
                    }
                    if i + 1 == candidates.len() {
                        let hint = match (candidate, os_error(&source)) {
                            (AttachMode::Native, Some(libc::ERANGE)) => format!(
                                ": the MTU is too large for native XDP on this driver; lower it (`ip link set dev {iface} mtu 1500`) or use --mode skb"
                            ),
                            (AttachMode::Native, Some(libc::EOPNOTSUPP)) => {
                                ": the driver does not support native XDP; use --mode skb (or auto)".to_owned()
                            }
                            (AttachMode::Native, _) => {
                                ": the driver may not support native XDP; try --mode skb".to_owned()
                            }
                            (AttachMode::Skb, _) => {
                                ": the kernel refused even generic XDP; check `dmesg` and the interface's MTU".to_owned()
                            }
                        };
                        return Err(EngineError::ModeRefused {
                            iface: iface.to_owned(),
                            mode: candidate,
                            hint,
                            source: Box::new(source),
                        });
                    }
                    refused.push((candidate, error_chain(&source)));
                }
            }
        }
        unreachable!("every mode list is non-empty")
    }

    /// Where the program is attached, if it is.
    pub fn attached(&self) -> Option<&Attached> {
        self.attached.as_ref().map(|(attached, _, _)| attached)
    }

    /// Detaches the program, if attached. Counters stay readable.
    pub fn detach(&mut self) {
        if let Some((_, name, link)) = self.attached.take() {
            // Failure means the link is already gone (interface removed).
            let _ = xdp_mut(&mut self.ebpf, name).detach(link);
        }
    }

    /// Refuses, or with `force` removes, an XDP program already on the
    /// interface. Returns a description of what was removed.
    fn clear_the_way(
        &self,
        iface: &str,
        ifindex: u32,
        force: bool,
    ) -> Result<Option<String>, EngineError> {
        let existing = match netlink::attached_programs(ifindex) {
            Ok(existing) => existing,
            Err(err) if err.raw_os_error() == Some(libc::ENODEV) => {
                return Err(EngineError::NoSuchInterface {
                    iface: iface.to_owned(),
                });
            }
            // Without the query, the attach itself reports a conflict.
            Err(_) => return Ok(None),
        };
        let Some(found) = existing.first() else {
            return Ok(None);
        };
        let program = describe_program(found);
        if held_by_link(found.id) {
            return Err(EngineError::HeldByLink {
                iface: iface.to_owned(),
                program,
            });
        }
        if !force {
            return Err(EngineError::AlreadyAttached {
                iface: iface.to_owned(),
                program,
            });
        }
        for p in &existing {
            netlink::detach(ifindex, p.mode_flag).map_err(|source| EngineError::ForceDetach {
                iface: iface.to_owned(),
                source,
            })?;
        }
        Ok(Some(program))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.detach();
    }
}

fn validate(settings: &Settings) -> Result<(), EngineError> {
    match settings.problems().into_iter().next() {
        Some(problem) => Err(EngineError::BadSetting(problem)),
        None => Ok(()),
    }
}

fn describe_program(p: &netlink::AttachedProgram) -> String {
    let name = loaded_programs()
        .filter_map(Result::ok)
        .find(|info| info.id() == p.id)
        .and_then(|info| info.name_as_str().map(str::to_owned));
    match name {
        Some(name) if !name.is_empty() => format!("id {}, `{name}`, {} mode", p.id, p.mode_name()),
        _ => format!("id {}, {} mode", p.id, p.mode_name()),
    }
}

fn held_by_link(prog_id: u32) -> bool {
    loaded_links()
        .filter_map(Result::ok)
        .any(|link| link.program_id() == prog_id && matches!(link.link_type(), Ok(LinkType::Xdp)))
}

/// `err` and its sources, joined by ": ".
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cur = e.source();
    }
    text
}

fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `rlim` is a valid rlimit; failure only matters on old kernels,
    // where map creation then reports its own error.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
}

fn xdp<'a>(ebpf: &'a Ebpf, name: &'static str) -> &'a Xdp {
    ebpf.program(name)
        .and_then(|p| p.try_into().ok())
        .unwrap_or_else(|| panic!("the embedded object has an XDP program `{name}`"))
}

fn xdp_mut<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> &'a mut Xdp {
    ebpf.program_mut(name)
        .and_then(|p| p.try_into().ok())
        .unwrap_or_else(|| panic!("the embedded object has an XDP program `{name}`"))
}

fn load_program(ebpf: &mut Ebpf, name: &'static str) -> Result<(), EngineError> {
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
    program.load().map_err(|source| {
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

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, EngineError>
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

fn fill_rules(ebpf: &mut Ebpf, rules: &RuleSet) -> Result<(), EngineError> {
    let mut v4: LpmTrie<MapData, [u8; 4], KernelRule> = take_map(ebpf, names::RULES_V4)?;
    let mut v6: LpmTrie<MapData, [u8; 16], KernelRule> = take_map(ebpf, names::RULES_V6)?;
    for (id, rule) in rules.rules().iter().enumerate() {
        let value = KernelRule {
            action: rule.action.to_kernel(),
            id: u32::try_from(id).unwrap_or(u32::MAX - 1),
        };
        let len = u32::from(rule.cidr.len());
        let result = match rule.cidr.addr() {
            std::net::IpAddr::V4(a) => v4.insert(&Key::new(len, a.octets()), value, 0),
            std::net::IpAddr::V6(a) => v6.insert(&Key::new(len, a.octets()), value, 0),
        };
        result.map_err(|source| EngineError::InsertRule {
            cidr: rule.cidr,
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Settings;

    #[test]
    fn settings_problems_name_the_flags() {
        assert!(Settings::default().problems().is_empty());
        let bad = Settings {
            snaplen: 5000,
            ring_bytes: 5000,
            ..Settings::default()
        };
        assert_eq!(
            bad.problems(),
            [
                "--snaplen 5000 is out of range: use 1 to 4096 bytes",
                "--ring-size 5000 must be a power of two of at least 4096 bytes (e.g. 8388608)",
            ]
        );
    }
}
