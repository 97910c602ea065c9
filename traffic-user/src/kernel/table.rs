//! The kernel's rule table: built from a sealed [`RuleSet`] in userspace,
//! written through a memory mapping into the program's table not in force,
//! and put in force with one write ([`Tables`]).
//!
//! The layout is [`traffic_common::table`]'s: a multibit trie with a 16-bit
//! first level and 4-bit levels below, longest-prefix answers pushed into
//! every slot. Prefixes are inserted shortest first, so a prefix's slots
//! never hold a child yet when it is written: each longer prefix only
//! overwrites what shorter ones left, and a new block starts as copies of
//! the entry it replaces.
//!
//! Its size grows with the prefixes, not the cost of a lookup: 1,048,576
//! IPv4 /28s take 4.5 MiB and a lookup reads four entries, as one /8 does
//! one. Every read is an array lookup the verifier inlines (a table of a
//! size fixed at load time), with no helper call: a call per level cost
//! about 15 ns here, an inlined read about 2.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    time::{Duration, Instant},
};

use aya::maps::{Array, MapData, MapError};
use traffic_common::table::{
    self, BLOCK, CHILD, FIRST_BLOCK, MAX_RULES, ROOT_BITS, STRIDE, V4_ROOT, V6_ROOT,
};

use super::ring::Mapping;
use crate::rules::RuleSet;

/// Why a table could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// More rules than a table can name.
    #[error("{rules} rules are more than the {MAX_RULES} a rule table can hold")]
    TooManyRules {
        /// How many were given.
        rules: usize,
    },
    /// More entries than a table can index.
    #[error(
        "the rule table would need {entries} entries, more than the 2^31 it can index; use fewer or shorter prefixes"
    )]
    TooLarge {
        /// Entries needed.
        entries: u64,
    },
    /// The new rule set's table is larger than the room loaded.
    #[error(
        "the new rules need a table of {needed} bytes but traffic was started with room for {room}; restart traffic (or give --rule-table-mib more room up front)"
    )]
    NoRoom {
        /// Bytes needed.
        needed: u64,
        /// Bytes of each table.
        room: u64,
    },
    /// The table could not be mapped to be written.
    #[error("mapping the new rule table into memory failed")]
    Mmap(#[source] std::io::Error),
    /// The kernel refused the write that puts the table in force.
    #[error("putting the new rule table in force failed")]
    Install(#[source] MapError),
}

/// A rule table built in userspace, ready to be installed.
#[derive(Debug)]
pub struct Table {
    entries: Vec<u32>,
}

impl Table {
    /// Builds the table of `rules`.
    ///
    /// # Errors
    ///
    /// [`TableError::TooManyRules`] or [`TableError::TooLarge`].
    ///
    /// # Panics
    ///
    /// When `rules` is not sealed.
    pub fn build(rules: &RuleSet) -> Result<Self, TableError> {
        if rules.len() > MAX_RULES as usize {
            return Err(TableError::TooManyRules { rules: rules.len() });
        }
        let mut entries = vec![0u32; FIRST_BLOCK as usize];
        for p in rules.prefixes() {
            let (root, bits) = if p.v6 { (V6_ROOT, 128) } else { (V4_ROOT, 32) };
            insert(
                &mut entries,
                root,
                p.bits,
                u32::from(p.len),
                bits,
                table::leaf(p.action.to_kernel(), p.id),
            );
            if entries.len() > (CHILD as usize) {
                return Err(TableError::TooLarge {
                    entries: entries.len() as u64,
                });
            }
        }
        Ok(Self {
            entries: by_level(&entries),
        })
    }

    /// The entries, as the kernel will hold them.
    pub fn entries(&self) -> &[u32] {
        &self.entries
    }

    /// The table's size in bytes.
    pub fn bytes(&self) -> u64 {
        self.entries.len() as u64 * 4
    }

    /// The action and rule id the kernel's lookup gives `bits` (an address
    /// left-aligned in 128 bits), walked as the program walks it; `None`
    /// for no rule. For tests of the layout.
    pub fn lookup(&self, v6: bool, bits: u128) -> Option<(u32, u32)> {
        let (root, levels) = if v6 {
            (V6_ROOT, table::V6_LEVELS)
        } else {
            (V4_ROOT, table::V4_LEVELS)
        };
        let mut entry = self.entries[(root + (bits >> (128 - ROOT_BITS)) as u32) as usize];
        let mut at = ROOT_BITS;
        for _ in 0..levels {
            if entry & CHILD == 0 {
                break;
            }
            let slot = nibble(bits, at);
            at += STRIDE;
            entry = self.entries[((entry & !CHILD) + slot) as usize];
        }
        table::rule_of(entry)
    }

    /// Blocks of 16 entries the table takes.
    pub fn blocks(&self) -> u64 {
        self.entries.len() as u64 / u64::from(BLOCK)
    }
}

/// One element of the table map: a block of entries (array elements take
/// at least 8 bytes each; sixteen entries waste none and fill a cache line).
pub type Block = [u32; BLOCK as usize];

/// Bytes of a [`Block`].
const BLOCK_BYTES: u64 = BLOCK as u64 * 4;

/// How long a table that left force is left alone before it is written
/// again: a packet being classified when the tables were swapped has long
/// finished by then (XDP runs a packet in well under a microsecond, with
/// preemption off).
const GRACE: Duration = Duration::from_millis(20);

/// The program's two tables (`TABLE`) and the pointer to the one in force
/// (`TABLE_BASE`). A new rule set is written into the table not in force,
/// whole, and then put in force with one write of the pointer; each packet
/// reads the pointer once, so it is classified by one rule set or the
/// other, never a mix.
pub struct Tables {
    table: MapData,
    base: Array<MapData, u32>,
    /// Blocks in each of the two tables.
    half: u64,
    /// The table in force (0 or 1), once one is.
    in_force: Option<u64>,
    swapped_at: Instant,
}

impl Tables {
    /// The bytes of each of the two tables to allocate for a first rule set
    /// needing `blocks`: twice that, for rule sets that grow, and at least
    /// 1 MiB; a multiple of the page size.
    pub fn default_bytes(blocks: u64) -> u64 {
        page_round(blocks * BLOCK_BYTES * 2).max(1 << 20)
    }

    /// The map elements (blocks) to give `TABLE` for two tables of
    /// `bytes` each.
    pub fn map_entries(bytes: u64) -> Result<u32, TableError> {
        u32::try_from(page_round(bytes) / BLOCK_BYTES * 2)
            .map_err(|_| TableError::TooLarge { entries: bytes / 4 })
    }

    /// The tables of a loaded program, whose `TABLE` map has
    /// [`Tables::map_entries`] elements.
    pub fn new(table: MapData, base: Array<MapData, u32>) -> Self {
        let half = u64::from(table_len(&table)) / 2;
        Self {
            table,
            base,
            half,
            in_force: None,
            swapped_at: Instant::now(),
        }
    }

    /// The bytes of each table.
    pub fn bytes(&self) -> u64 {
        self.half * BLOCK_BYTES
    }

    /// Writes `new` into the table not in force and puts it in force; from
    /// the next packet on, `new` classifies.
    ///
    /// # Errors
    ///
    /// [`TableError::NoRoom`] when `new` is larger than a table;
    /// [`TableError::Mmap`], [`TableError::Install`].
    pub fn install(&mut self, new: &Table) -> Result<(), TableError> {
        if new.blocks() > self.half {
            return Err(TableError::NoRoom {
                needed: new.blocks() * BLOCK_BYTES,
                room: self.bytes(),
            });
        }
        let next = self.in_force.map_or(0, |t| 1 - t);
        if self.in_force.is_some() {
            std::thread::sleep(GRACE.saturating_sub(self.swapped_at.elapsed()));
        }
        let bytes = usize::try_from(page_round(new.blocks() * BLOCK_BYTES)).map_err(|_| {
            TableError::TooLarge {
                entries: new.entries.len() as u64,
            }
        })?;
        let offset = usize::try_from(next * self.bytes()).map_err(|_| TableError::TooLarge {
            entries: new.entries.len() as u64,
        })?;
        {
            let mut mapping = Mapping::new(
                self.table.fd().as_fd().as_raw_fd(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                offset,
            )
            .map_err(TableError::Mmap)?;
            let out = mapping.bytes_mut();
            for (chunk, entry) in out.chunks_exact_mut(4).zip(&new.entries) {
                chunk.copy_from_slice(&entry.to_ne_bytes());
            }
        }
        // The pointer is written by a system call after the table's bytes
        // through the mapping: the kernel orders the two.
        let first = u32::try_from(next * self.half).map_err(|_| TableError::TooLarge {
            entries: new.entries.len() as u64,
        })?;
        self.base.set(0, first, 0).map_err(TableError::Install)?;
        self.in_force = Some(next);
        self.swapped_at = Instant::now();
        Ok(())
    }
}

/// Elements of the table map.
fn table_len(table: &MapData) -> u32 {
    table.info().map(|i| i.max_entries()).unwrap_or(0)
}

fn page_round(n: u64) -> u64 {
    n.div_ceil(4096) * 4096
}

/// The same trie with its blocks laid out level by level, in address order
/// within a level: the upper levels, which every lookup reads, then sit on
/// a few pages, and a lookup misses the TLB (4 KiB pages: BPF maps are
/// vmalloc'ed) mostly at its last level instead of at each. Built in
/// insertion order, a level's blocks were spread among the others'.
fn by_level(entries: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(entries.len());
    out.extend_from_slice(&entries[..FIRST_BLOCK as usize]);
    let mut level: Vec<usize> = (0..FIRST_BLOCK as usize)
        .filter(|&i| out[i] & CHILD != 0)
        .collect();
    while !level.is_empty() {
        let mut next = Vec::new();
        for at in level {
            let old = (out[at] & !CHILD) as usize;
            let new = out.len();
            out.extend_from_slice(&entries[old..old + BLOCK as usize]);
            out[at] = CHILD | new as u32;
            next.extend((new..new + BLOCK as usize).filter(|&i| out[i] & CHILD != 0));
        }
        level = next;
    }
    out
}

/// The `STRIDE` bits of `bits` starting `at` bits from the top.
fn nibble(bits: u128, at: u32) -> u32 {
    ((bits >> (128 - STRIDE - at)) as u32) & (BLOCK - 1)
}

/// Writes the leaf of one prefix (`len` bits of `bits`, an address of
/// `width` bits left-aligned in 128) into the trie under `root`.
fn insert(entries: &mut Vec<u32>, root: u32, bits: u128, len: u32, width: u32, leaf: u32) {
    let top = (bits >> (128 - ROOT_BITS)) as u32;
    if len <= ROOT_BITS {
        let span = 1u32 << (ROOT_BITS - len);
        let first = root + (top & !(span - 1));
        entries[first as usize..(first + span) as usize].fill(leaf);
        return;
    }
    debug_assert!(len <= width);
    let mut at_index = (root + top) as usize;
    let mut at = ROOT_BITS;
    loop {
        let block = match entries[at_index] {
            e if e & CHILD != 0 => e & !CHILD,
            e => {
                // A new block, every slot answering what this entry did.
                let block = entries.len() as u32;
                entries.extend(std::iter::repeat_n(e, BLOCK as usize));
                entries[at_index] = CHILD | block;
                block
            }
        };
        let slot = nibble(bits, at);
        if len <= at + STRIDE {
            let span = 1u32 << (at + STRIDE - len);
            let first = block + (slot & !(span - 1));
            entries[first as usize..(first + span) as usize].fill(leaf);
            return;
        }
        at_index = (block + slot) as usize;
        at += STRIDE;
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::rules::{Action, Origin};

    fn bits(ip: IpAddr) -> (bool, u128) {
        match ip {
            IpAddr::V4(a) => (false, u128::from(a.to_bits()) << 96),
            IpAddr::V6(a) => (true, a.to_bits()),
        }
    }

    /// The table answers as the rule set's own lookup for every address
    /// tried, with prefixes of every length, nested, and /0 defaults.
    #[test]
    fn the_table_agrees_with_the_rule_set() {
        let mut set = RuleSet::new(Action::Pass);
        let actions = [Action::Drop, Action::Capture, Action::Pass];
        let v4 = 0xc000_0207u32; // 192.0.2.7
        let v6 = 0x2001_0db8_0000_0000_0000_0000_0000_0007u128;
        for len in 0..=32u8 {
            let net = v4 & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            let text = format!("{}/{len}", std::net::Ipv4Addr::from_bits(net));
            set.add_str(actions[usize::from(len) % 3], &text, Origin::Flag("--test"))
                .unwrap();
        }
        for len in (0..=128u8).step_by(3) {
            let net = v6 & u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            let cidr = format!("{}/{len}", std::net::Ipv6Addr::from_bits(net));
            if cidr.parse::<crate::rules::Cidr>().is_ok() {
                set.add_str(actions[usize::from(len) % 3], &cidr, Origin::Flag("--test"))
                    .unwrap();
            }
        }
        assert!(set.seal().is_empty());
        let table = Table::build(&set).unwrap();
        let probe = |ip: IpAddr| {
            let (v6, b) = bits(ip);
            let want = set
                .lookup(ip)
                .map(|(id, r)| (r.action.to_kernel(), id as u32));
            assert_eq!(table.lookup(v6, b), want, "{ip}");
        };
        for flip in 0..32 {
            probe(IpAddr::V4(std::net::Ipv4Addr::from_bits(v4 ^ (1 << flip))));
        }
        probe(IpAddr::V4(std::net::Ipv4Addr::from_bits(v4)));
        for flip in 0..128 {
            probe(IpAddr::V6(std::net::Ipv6Addr::from_bits(v6 ^ (1 << flip))));
        }
        probe(IpAddr::V6(std::net::Ipv6Addr::from_bits(v6)));
    }

    #[test]
    fn a_million_prefixes_take_a_few_mebibytes() {
        let mut set = RuleSet::new(Action::Pass);
        for i in 0..1u32 << 20 {
            let net = std::net::Ipv4Addr::from_bits(0xf000_0000 | (i << 4));
            set.add(crate::rules::Rule {
                cidr: crate::rules::Cidr::new(IpAddr::V4(net), 28).unwrap(),
                action: Action::Drop,
                origin: Origin::Flag("--test"),
            });
        }
        assert!(set.seal().is_empty());
        let table = Table::build(&set).unwrap();
        assert!(table.bytes() < 6 << 20, "{} bytes", table.bytes());
        assert_eq!(table.lookup(false, 0xf000_0013u128 << 96), Some((1, 1)));
        assert_eq!(table.lookup(false, 0xf100_0013u128 << 96), None);
    }
}
