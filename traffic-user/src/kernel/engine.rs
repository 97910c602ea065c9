//! The classifier as seen from userspace: loading the XDP program, filling
//! its rule tables, attaching it to an interface and reading its counters.
//!
//! # Examples
//!
//! ```no_run
//! use traffic::{kernel::{Engine, ModeChoice}, rules::{Action, RuleSet, Origin}};
//!
//! let mut rules = RuleSet::new(Action::Pass);
//! rules.add_str(Action::Drop, "192.0.2.0/24", Origin::Flag("--drop"))?;
//! assert!(rules.seal().is_empty());
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
//! bpf_link attachment of XDP needs Linux 5.9; the rule table, an array
//! written through a memory mapping, 5.5.

use aya::{
    Ebpf, EbpfLoader,
    maps::{Map, MapData, PerCpuArray, XskMap},
    programs::{Xdp, xdp::XdpLinkId},
};
use std::{os::fd::AsFd, sync::atomic::Ordering};

use traffic_common::{
    Config, Count, CpuState, MAX_SNAPLEN, Stats, TopKey, names, rule_slot,
    top::{self, LOG_UNITS, POS_WORDS},
};

use super::{
    Attached, EngineError, EventRing, ModeChoice, attach,
    mapped::MappedArray,
    object::{self, load_program, take_map, xdp, xdp_mut},
    sums::SourceSums,
    table::{Table, Tables},
};
use crate::rules::RuleSet;

/// How the capture path behaves; fixed when the program is loaded.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Bytes of each captured frame to copy into its event (1 to 4096).
    pub snaplen: u32,
    /// Send 1 in this many packets to the capture path; 0 for none.
    pub sample_every: u32,
    /// Size of the event ring buffer in bytes: a power of two, at least a page.
    pub ring_bytes: u32,
    /// `--explain N`: log why for the first N malformed or non-IP frames
    /// per CPU; 0 for none.
    pub explain: u32,
    /// Redirect packets to capture to AF_XDP sockets, one per receive queue
    /// (at most this many queues); 0 for the ring-buffer path.
    pub afxdp_queues: u32,
    /// MiB of each of the two rule tables; `None` for twice what the first
    /// rule set needs (at least 1 MiB).
    pub rule_table_mib: Option<u32>,
    /// Count packets and bytes per rule in the kernel.
    pub rule_counts: bool,
    /// Rules each table may hold, as far as per-rule counters go; `None`
    /// for half again the first rule set, at least [`MIN_RULE_SLOTS`].
    pub max_rules: Option<u32>,
    /// Count packets and bytes per source (`--top`).
    pub top: Option<TopSettings>,
}

/// How the program counts per source (`--top`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopSettings {
    /// Sources counted per interval; later new ones are untracked.
    pub capacity: u32,
    /// Count IPv4 sources by this prefix of them (32: by address).
    pub prefix_v4: u8,
    /// Count IPv6 sources by this prefix of them (128: by address).
    pub prefix_v6: u8,
}

impl Default for TopSettings {
    fn default() -> Self {
        Self {
            capacity: DEFAULT_TOP_CAPACITY,
            prefix_v4: 32,
            prefix_v6: 128,
        }
    }
}

/// Sources counted per interval by default: 2^17, whose table takes at most
/// 8 MiB of the loader's memory (twice as many 32-byte slots); the kernel's
/// is the logs', 2 MiB per CPU.
pub const DEFAULT_TOP_CAPACITY: u32 = 1 << 17;

/// The most rule slots a table may have (`--max-rules`): 512 MiB of
/// counters per CPU.
pub const MAX_RULE_SLOTS: u32 = 1 << 24;

/// The rule slots a table has at least by default: room for a reload to
/// grow a small rule set, at 128 KiB of counters per CPU.
pub const MIN_RULE_SLOTS: u32 = 4096;

/// Above this many rules, per-rule counters are off unless asked for
/// (`--by-rule`, `--max-rules`; the command line decides). Their memory is
/// 48 bytes a rule per CPU (two tables' slots, half again the rules, 16
/// bytes each; 48 MiB per CPU for a million rules, mapped into traffic
/// too), and with sources spread over the rules each packet's counter is a
/// cache miss of its own: `traffic bench --scale` measured 131,072 rules
/// at +44 to +248 ns a packet live with them against without (three runs),
/// a million at +32 to +257, where 1,024 were within the noise; 16,384
/// already cost +41 and +47 (two quick runs). The bound is where the
/// memory, more than the miss, says stop.
pub const RULE_COUNTS_BY_DEFAULT: usize = 65_536;

/// Whether a set of `rules` rules is counted per rule when nothing asks
/// either way.
pub fn counts_rules_by_default(rules: usize) -> bool {
    rules <= RULE_COUNTS_BY_DEFAULT
}

/// The rule counters a first set of `rules` gets by default.
fn default_rule_slots(rules: usize) -> u32 {
    let rules = u32::try_from(rules).unwrap_or(u32::MAX / 4);
    (rules + rules / 2).max(MIN_RULE_SLOTS)
}

/// The kernel memory per CPU of the per-rule counters of a first set of
/// `rules`, by default, in bytes.
pub fn rule_counter_bytes(rules: usize) -> u64 {
    counter_bytes(default_rule_slots(rules))
}

/// The kernel memory per CPU of per-rule counters for `slots` rules a
/// table, in bytes.
fn counter_bytes(slots: u32) -> u64 {
    u64::from(rule_slot::total(slots)) * std::mem::size_of::<Count>() as u64
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            snaplen: traffic_common::DEFAULT_SNAPLEN,
            sample_every: 0,
            ring_bytes: DEFAULT_RING_BYTES,
            afxdp_queues: 0,
            explain: 0,
            rule_table_mib: None,
            rule_counts: true,
            max_rules: None,
            top: None,
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
                "--snaplen {} is out of range: use 1 to {MAX_SNAPLEN} bytes (0 keeps {MAX_SNAPLEN}; --afxdp captures whole frames)",
                self.snaplen
            ));
        }
        match self.max_rules {
            Some(0) => problems.push("--max-rules 0: give at least 1".to_owned()),
            Some(n) if n > MAX_RULE_SLOTS => problems.push(format!(
                "--max-rules {n}: at most {MAX_RULE_SLOTS} (per-rule counters take 32 bytes a rule per CPU)"
            )),
            _ => {}
        }
        if let Some(top) = &self.top {
            if top.capacity == 0 {
                problems.push(
                    "--top-capacity 0: top talkers need room for at least one source an interval"
                        .to_owned(),
                );
            }
            if top.prefix_v4 > 32 || top.prefix_v4 == 0 {
                problems.push(format!(
                    "--top-prefix {}: an IPv4 prefix is 1 to 32 bits",
                    top.prefix_v4
                ));
            }
            if top.prefix_v6 > 128 || top.prefix_v6 == 0 {
                problems.push(format!(
                    "--top-prefix6 {}: an IPv6 prefix is 1 to 128 bits",
                    top.prefix_v6
                ));
            }
        }
        if self.rule_table_mib == Some(0) {
            problems.push("--rule-table-mib 0: the rule tables need at least 1 MiB".to_owned());
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

/// The loaded XDP program with its maps.
pub struct Engine {
    ebpf: Ebpf,
    stats: PerCpuArray<MapData, CpuState>,
    events: Option<EventRing>,
    xsks: XskMap<MapData>,
    /// Fixed at load time (a constant to the verifier).
    default_action: crate::rules::Action,
    tables: Tables,
    /// Per-rule counters, when counted; see [`rule_slot`].
    rule_counts: Option<RuleCounts>,
    /// Rules each table may hold (0 when not counted).
    rule_slots: u32,
    /// Rules in each table, as last installed.
    table_rules: [u32; 2],
    top: Option<TopLogs>,
    cpus: usize,
    attached: Option<(Attached, XdpLinkId)>,
    /// The interface it was last attached to (0: never; no interface has
    /// index 0). Once attached, packets it classified may still be in
    /// flight just after a switch or a detach.
    ifindex: u32,
}

/// The per-rule counters ([`rule_slot`]), mapped: a part of `per_cpu`
/// slots per possible CPU.
struct RuleCounts {
    counts: MappedArray<Count>,
    /// The map itself, kept open.
    _map: MapData,
    per_cpu: usize,
}

impl RuleCounts {
    /// The index of `cpu`'s counter of `slot`: each CPU's part follows the
    /// one before, as the program lays them out.
    fn index(&self, cpu: usize, slot: usize) -> usize {
        cpu * self.per_cpu + slot
    }
}

/// The per-CPU logs of sources ([`traffic_common::top`]), mapped, and what
/// was read of them since the last [`Engine::take_sources`].
struct TopLogs {
    log: MappedArray<u64>,
    pos: MappedArray<u64>,
    /// The maps themselves, kept open.
    _maps: [MapData; 2],
    /// The sources read, and their counts summed over the CPUs, up to
    /// `--top-capacity` of them; kept from one interval to the next so that
    /// its room is made once. What finds it full is added to the kernel's
    /// untracked counts.
    sums: SourceSums,
    /// The sources and lengths of one reading.
    frames: Vec<(TopKey, u64)>,
}

impl Engine {
    /// Loads the XDP program with `rules` in its tables.
    ///
    /// The rule table is sized to the rule set; [`Engine::replace_rules`]
    /// swaps in another.
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
    ///
    /// # Panics
    ///
    /// When `rules` is not sealed ([`RuleSet::seal`]).
    pub fn load_with(rules: &RuleSet, settings: &Settings) -> Result<Self, EngineError> {
        validate(settings)?;

        let table = Table::build(rules).map_err(EngineError::Table)?;
        let table_bytes = settings.rule_table_mib.map_or_else(
            || Tables::default_bytes(table.blocks()),
            |m| u64::from(m) << 20,
        );
        let table_entries = Tables::map_entries(table_bytes).map_err(EngineError::Table)?;
        let rule_slots = if settings.rule_counts {
            settings
                .max_rules
                .unwrap_or_else(|| default_rule_slots(rules.len()))
        } else {
            0
        };
        if rules.len() > rule_slots as usize && settings.rule_counts {
            return Err(EngineError::TooManyRules {
                rules: rules.len(),
                room: rule_slots,
            });
        }
        let top = settings.top.unwrap_or_default();
        let config = Config {
            default_action: rules.default_action().to_kernel(),
            snaplen: settings.snaplen,
            sample_every: settings.sample_every,
            afxdp: u32::from(settings.afxdp_queues > 0),
            explain: settings.explain,
            rule_slots,
            top: u32::from(settings.top.is_some()),
            top_mask_v4: prefix_mask(top.prefix_v4, 32) as u32,
            top_mask_v6: {
                let m = prefix_mask(top.prefix_v6, 128);
                [
                    (m >> 96) as u32,
                    (m >> 64) as u32,
                    (m >> 32) as u32,
                    m as u32,
                ]
            },
        };
        let cpus = possible_cpus().map_err(|source| EngineError::Counters {
            what: "list of possible CPUs",
            source,
        })?;
        if settings.rule_counts {
            counters_fit(rule_slots, cpus, mem_available())?;
        }
        // Every CPU that may run the program has a log.
        let logs = if settings.top.is_some() {
            cpus as u32
        } else {
            0
        };
        let mut ebpf = object::load(
            object::CLASSIFIER,
            EbpfLoader::new()
                .override_global(names::CONFIG, &config, true)
                .map_max_entries(names::TABLE, table_entries)
                .map_max_entries(names::EVENTS, settings.ring_bytes)
                .map_max_entries(names::XSKS, settings.afxdp_queues.max(1))
                .map_max_entries(
                    names::RULE_COUNTS,
                    if settings.rule_counts {
                        cpus as u32 * rule_slot::total(rule_slots)
                    } else {
                        1
                    },
                )
                .map_max_entries(names::TOP_LOG, (logs * LOG_UNITS).max(1))
                .map_max_entries(names::TOP_POS, (logs * POS_WORDS).max(1)),
        )?;

        // The program must be loaded while the object still owns its maps:
        // loading resolves map references to the maps' file descriptors.
        load_program(&mut ebpf, names::PROGRAM)?;
        let mut tables = Tables::new(
            raw_map(&mut ebpf, names::TABLE)?,
            take_map(&mut ebpf, names::TABLE_BASE)?,
            table_entries,
        );
        tables.install(&table).map_err(EngineError::Table)?;
        drop(table);
        let rule_counts = if settings.rule_counts {
            let map = raw_map(&mut ebpf, names::RULE_COUNTS)?;
            let per_cpu = rule_slot::total(rule_slots) as usize;
            Some(RuleCounts {
                counts: mapped(&map, cpus * per_cpu, "per-rule counters, mapped")?,
                _map: map,
                per_cpu,
            })
        } else {
            None
        };
        let top = match settings.top {
            Some(t) => {
                let log = raw_map(&mut ebpf, names::TOP_LOG)?;
                let pos = raw_map(&mut ebpf, names::TOP_POS)?;
                Some(TopLogs {
                    log: mapped(&log, (logs * LOG_UNITS) as usize, "logs of sources, mapped")?,
                    pos: mapped(
                        &pos,
                        (logs * POS_WORDS) as usize,
                        "positions of the logs of sources, mapped",
                    )?,
                    _maps: [log, pos],
                    sums: SourceSums::new(t.capacity as usize),
                    frames: Vec::new(),
                })
            }
            None => None,
        };
        let stats = take_map(&mut ebpf, names::STATS)?;
        let events = EventRing::new(
            raw_map(&mut ebpf, names::EVENTS)?,
            raw_map(&mut ebpf, names::WAKE)?,
            settings.ring_bytes,
        )
        .map_err(EngineError::MapRing)?;
        let xsks = take_map(&mut ebpf, names::XSKS)?;
        Ok(Self {
            ebpf,
            stats,
            events: Some(events),
            xsks,
            default_action: rules.default_action(),
            tables,
            rule_counts,
            rule_slots,
            table_rules: [rules.len() as u32, 0],
            top,
            cpus,
            attached: None,
            ifindex: 0,
        })
    }

    /// Rules each table may hold, as far as per-rule counters go; 0 when
    /// rules are not counted.
    pub fn rule_slots(&self) -> u32 {
        self.rule_slots
    }

    /// The table the next rule set goes into (0 or 1).
    pub fn free_half(&self) -> u32 {
        self.tables.free_half()
    }

    /// Waits until no packet can still be classified, or counted, by the
    /// table out of force, so that its counts are final.
    pub fn settle(&self) {
        self.tables.settle();
    }

    /// Per-rule counter slots `first .. first + n` ([`rule_slot`]), summed
    /// over the CPUs, each handed to `each` with its slot.
    ///
    /// # Errors
    ///
    /// When the kernel refuses the read.
    pub fn read_slots(
        &self,
        first: u32,
        n: u32,
        each: &mut dyn FnMut(u32, Count),
    ) -> Result<(), EngineError> {
        let Some(rc) = &self.rule_counts else {
            return Ok(());
        };
        let (first, n) = (first as usize, n as usize);
        if first + n > rc.per_cpu {
            return Err(EngineError::Counters {
                what: "per-rule counters",
                source: std::io::Error::other(format!(
                    "slots {first}..{} asked of {}",
                    first + n,
                    rc.per_cpu
                )),
            });
        }
        for slot in first..first + n {
            let mut sum = Count::default();
            for cpu in 0..self.cpus {
                sum.add(&rc.counts.get(rc.index(cpu, slot)));
            }
            each(slot as u32, sum);
        }
        Ok(())
    }

    /// Reads what the program logged of sources since the last reading
    /// into the sums [`Engine::take_sources`] hands out. Run it at least
    /// every [`top::GATHER_EVERY_MS`] while packets flow, so that the logs
    /// keep room; nothing without `--top`.
    pub fn gather_sources(&mut self) {
        let Some(top) = &mut self.top else {
            return;
        };
        for cpu in 0..self.cpus {
            top.gather(cpu);
        }
    }

    /// Reads the logs ([`Engine::gather_sources`]) and hands each source
    /// counted since the last call, with its counts summed over the CPUs,
    /// to `each`; then starts the sums anew.
    pub fn take_sources(&mut self, each: &mut dyn FnMut(&TopKey, Count)) {
        self.gather_sources();
        let Some(top) = &mut self.top else {
            return;
        };
        top.sums.drain(each);
    }

    /// Puts the rules of `table` (see [`Table::build`], which can run on
    /// any thread) in force in place of the rules in force, atomically:
    /// each packet is classified by the old table or the new one, whole,
    /// and the counters go on. On error the old rules stay in force.
    ///
    /// # Errors
    ///
    /// [`EngineError::DefaultChanged`] when the table's rules have another
    /// default action; [`EngineError::Table`] when it cannot be installed.
    pub fn replace_rules(&mut self, table: &Table) -> Result<(), EngineError> {
        if table.default_action() != self.default_action {
            return Err(EngineError::DefaultChanged);
        }
        let half = self.tables.free_half();
        if let Some(rc) = &self.rule_counts {
            if table.rules() > self.rule_slots as usize {
                return Err(EngineError::TooManyRules {
                    rules: table.rules(),
                    room: self.rule_slots,
                });
            }
            self.tables.settle();
            // No packet counts into the table out of force once settled.
            let first = rule_slot::of(half, self.rule_slots, 0) as usize;
            for cpu in 0..self.cpus {
                let part = rc.index(cpu, first);
                for i in part..part + table.rules() {
                    rc.counts.set(i, Count::default());
                }
            }
        }
        self.tables.install(table).map_err(EngineError::Table)?;
        self.table_rules[half as usize] = table.rules() as u32;
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

    /// The reader of the program's log (`--explain`), handing each record
    /// to `logger`. It can be taken once.
    ///
    /// # Errors
    ///
    /// When the object has no log map.
    pub fn take_log<T: log::Log>(
        &mut self,
        logger: T,
    ) -> Result<aya_log::EbpfLogger<T>, EngineError> {
        aya_log::EbpfLogger::init_with_logger(&mut self.ebpf, logger).map_err(|e| {
            EngineError::Map {
                name: "AYA_LOGS",
                source: match e {
                    aya_log::Error::MapError(m) => Some(m),
                    _ => None,
                },
            }
        })
    }

    /// The ring buffer the program writes capture events to. It can be taken
    /// once, by the one reader.
    pub fn take_events(&mut self) -> Option<EventRing> {
        self.events.take()
    }

    /// The classifier program, loaded; for `test_run`.
    pub fn program(&self) -> &Xdp {
        xdp(&self.ebpf, names::PROGRAM)
    }

    /// Runs `frame` through the classifier once (BPF_PROG_RUN), as if it had
    /// arrived on receive queue 0: counted, classified, captured. `false`
    /// when the kernel refuses to run a frame of its size (below an
    /// Ethernet header, or larger than a page can hold).
    ///
    /// # Errors
    ///
    /// When the run fails otherwise.
    pub fn run_frame(&self, frame: &[u8]) -> Result<bool, EngineError> {
        let run = aya::TestRun::test_run(
            self.program(),
            aya::programs::TestRunOptions {
                data_in: Some(frame),
                repeat: 1,
                ..aya::programs::TestRunOptions::default()
            },
        );
        match run {
            Ok(_) => Ok(true),
            Err(e) if super::os_error(&e) == Some(libc::EINVAL) => Ok(false),
            Err(source) => Err(EngineError::Program {
                program: names::PROGRAM,
                source: Box::new(source),
            }),
        }
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
        if let Some(top) = &self.top {
            let untracked = top.sums.untracked();
            total.untracked += untracked.packets;
            total.untracked_bytes += untracked.bytes;
        }
        Ok(total)
    }

    /// Attaches the classifier to `iface` through a bpf_link; see
    /// [`attach::attach`].
    ///
    /// # Errors
    ///
    /// As [`attach::attach`].
    pub fn attach(
        &mut self,
        iface: &str,
        mode: ModeChoice,
        force: bool,
    ) -> Result<&Attached, EngineError> {
        let program = xdp_mut(&mut self.ebpf, names::PROGRAM);
        let (attached, link) = attach::attach(program, iface, mode, force)?;
        self.ifindex = attached.ifindex;
        Ok(&self.attached.insert((attached, link)).0)
    }

    /// The index of the interface the program was last attached to, even
    /// once detached; 0 when it never was.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Whether the program was ever attached (see [`Engine::attach`]).
    pub fn ever_attached(&self) -> bool {
        self.ifindex != 0
    }

    /// Where the program is attached, if it is.
    pub fn attached(&self) -> Option<&Attached> {
        self.attached.as_ref().map(|(attached, _)| attached)
    }

    /// Detaches the program, if attached. Counters stay readable.
    pub fn detach(&mut self) {
        if let Some((_, link)) = self.attached.take() {
            attach::detach(xdp_mut(&mut self.ebpf, names::PROGRAM), link);
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.detach();
    }
}

impl TopLogs {
    /// Reads `cpu`'s log from its tail to its head, sums each source in,
    /// and gives the units back to the program.
    fn gather(&mut self, cpu: usize) {
        let words = cpu * POS_WORDS as usize;
        let head = self
            .pos
            .atomic(words + top::HEAD as usize)
            .load(Ordering::Acquire);
        let tail = self.pos.atomic(words + top::TAIL as usize);
        let mut at = tail.load(Ordering::Relaxed);
        // The program never runs more than a log ahead; a head that says
        // otherwise is not believed past one log.
        let end = at + head.wrapping_sub(at).min(u64::from(LOG_UNITS));
        // The published units, in at most two pieces (the ring wraps),
        // read in place: the program does not write them until the tail
        // passes them.
        let (base, first) = (
            cpu * LOG_UNITS as usize,
            at as usize & (LOG_UNITS as usize - 1),
        );
        let n = (end - at) as usize;
        let to_end = n.min(LOG_UNITS as usize - first);
        let mut units = self
            .log
            .published(base + first, to_end)
            .iter()
            .chain(self.log.published(base, n - to_end))
            .copied();
        let frames = &mut self.frames;
        frames.clear();
        while let Some(unit) = units.next() {
            let key = match unit & 0xff {
                top::TAG_V4 => {
                    at += 1;
                    TopKey::v4((unit >> 32) as u32)
                }
                top::TAG_V6 => {
                    // Published whole: a head in its middle was not believed.
                    let (Some(hi), Some(lo)) = (units.next(), units.next()) else {
                        break;
                    };
                    at += 3;
                    TopKey {
                        words: [(hi >> 32) as u32, hi as u32, (lo >> 32) as u32, lo as u32],
                    }
                }
                // Not a unit the program writes: skip it.
                _ => {
                    at += 1;
                    continue;
                }
            };
            frames.push((key, top::unit_len(unit)));
        }
        self.sums.add_all(frames);
        tail.store(at, Ordering::Release);
    }
}

/// The `entries` values of BPF array `map`, mapped (`what` names it in an
/// error).
fn mapped<T: bytemuck::Pod>(
    map: &MapData,
    entries: usize,
    what: &'static str,
) -> Result<MappedArray<T>, EngineError> {
    MappedArray::map(map.fd().as_fd(), entries)
        .map_err(|source| EngineError::Counters { what, source })
}

/// Whether per-rule counters of `slots` rules a table for `cpus` CPUs fit
/// in half of the `available` memory (when it is known): a mistyped
/// `--max-rules` must not take the machine's memory.
fn counters_fit(slots: u32, cpus: usize, available: Option<u64>) -> Result<(), EngineError> {
    let bytes = cpus as u64 * counter_bytes(slots);
    match available {
        Some(available) if bytes > available / 2 => Err(EngineError::RuleCountsTooLarge {
            slots,
            bytes,
            cpus,
            available,
        }),
        _ => Ok(()),
    }
}

/// The kernel's estimate of the memory available for new allocations
/// (`MemAvailable` in /proc/meminfo), in bytes.
fn mem_available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The number of possible CPUs: the number of values of a per-CPU map
/// element, and of the parts of the per-CPU arrays.
fn possible_cpus() -> std::io::Result<usize> {
    aya::util::nr_cpus().map_err(|(_, e)| e)
}

/// The mask of the top `len` bits of a `width`-bit address, in the low
/// `width` bits.
fn prefix_mask(len: u8, width: u32) -> u128 {
    let len = u32::from(len).min(width);
    let all = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    if len == 0 {
        0
    } else {
        all & !((1u128 << (width - len)) - 1)
    }
}

fn validate(settings: &Settings) -> Result<(), EngineError> {
    match settings.problems().into_iter().next() {
        Some(problem) => Err(EngineError::BadSetting(problem)),
        None => Ok(()),
    }
}

/// The map `name` as the kernel object it is, whatever its type.
fn raw_map(ebpf: &mut Ebpf, name: &'static str) -> Result<MapData, EngineError> {
    match ebpf.take_map(name) {
        Some(Map::RingBuf(m) | Map::Array(m) | Map::PerCpuArray(m) | Map::PerCpuHashMap(m)) => {
            Ok(m)
        }
        _ => Err(EngineError::Map { name, source: None }),
    }
}

#[cfg(test)]
mod tests {
    use super::Settings;

    #[test]
    fn per_rule_counters_must_fit_in_half_the_available_memory() {
        use super::counters_fit;
        // A million slots a table, two tables, 16 bytes: 32 MiB a CPU, and
        // 64 CPUs: 2 GiB, more than half of 3 GiB, less than half of 5.
        let err = counters_fit(1 << 20, 64, Some(3 << 30))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("2048 MiB of kernel memory (32 MiB per CPU, 64 CPUs)")
                && err.contains("--max-rules")
                && err.contains("--no-rule-counts"),
            "{err}"
        );
        assert!(counters_fit(1 << 20, 64, Some(5 << 30)).is_ok());
        assert!(counters_fit(1 << 20, 64, None).is_ok(), "unknown: tried");
    }

    #[test]
    fn settings_problems_name_the_flags() {
        assert!(Settings::default().problems().is_empty());
        let bad = Settings {
            snaplen: 5000,
            ring_bytes: 5000,
            rule_table_mib: Some(0),
            ..Settings::default()
        };
        assert_eq!(
            bad.problems(),
            [
                "--snaplen 5000 is out of range: use 1 to 4096 bytes (0 keeps 4096; --afxdp captures whole frames)",
                "--rule-table-mib 0: the rule tables need at least 1 MiB",
                "--ring-size 5000 must be a power of two of at least 4096 bytes (e.g. 8388608)",
            ]
        );
    }
}
