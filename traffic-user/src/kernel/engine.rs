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
use traffic_common::{Config, CpuState, MAX_SNAPLEN, Stats, names};

use super::{
    Attached, EngineError, EventRing, ModeChoice, attach,
    object::{self, load_program, take_map, xdp, xdp_mut},
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
    attached: Option<(Attached, XdpLinkId)>,
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
        let config = Config {
            default_action: rules.default_action().to_kernel(),
            snaplen: settings.snaplen,
            sample_every: settings.sample_every,
            afxdp: u32::from(settings.afxdp_queues > 0),
            explain: settings.explain,
        };
        let mut ebpf = object::load(
            object::CLASSIFIER,
            EbpfLoader::new()
                .override_global(names::CONFIG, &config, true)
                .map_max_entries(names::TABLE, table_entries)
                .map_max_entries(names::EVENTS, settings.ring_bytes)
                .map_max_entries(names::XSKS, settings.afxdp_queues.max(1)),
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
            attached: None,
        })
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
        self.tables.install(table).map_err(EngineError::Table)
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
        Ok(&self.attached.insert((attached, link)).0)
    }

    /// Where the program is attached, if it is.
    pub fn attached(&self) -> Option<&Attached> {
        self.attached.as_ref().map(|(attached, _)| attached)
    }

    /// Detaches the program, if attached. Counters stay readable.
    pub fn detach(&mut self) {
        if let Some((_, link)) = self.attached.take() {
            // Failure means the link is already gone (interface removed).
            let _ = xdp_mut(&mut self.ebpf, names::PROGRAM).detach(link);
        }
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

/// The map `name` as the kernel object it is, whatever its type.
fn raw_map(ebpf: &mut Ebpf, name: &'static str) -> Result<MapData, EngineError> {
    match ebpf.take_map(name) {
        Some(Map::RingBuf(m) | Map::Array(m)) => Ok(m),
        _ => Err(EngineError::Map { name, source: None }),
    }
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
            rule_table_mib: Some(0),
            ..Settings::default()
        };
        assert_eq!(
            bad.problems(),
            [
                "--snaplen 5000 is out of range: use 1 to 4096 bytes",
                "--rule-table-mib 0: the rule tables need at least 1 MiB",
                "--ring-size 5000 must be a power of two of at least 4096 bytes (e.g. 8388608)",
            ]
        );
    }
}
