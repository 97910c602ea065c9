//! The kernel's rule table: built from a sealed [`RuleSet`] in userspace,
//! written through a memory mapping into the program's table not in force,
//! and put in force with one write ([`Tables`]).
//!
//! The layout is [`traffic_common::table`]'s: a multibit trie with a 16-bit
//! first level and, below, one block per node of the width (1 to 24 bits)
//! its prefixes fill densely enough (`stride_for`), longest-prefix answers
//! pushed into every slot. Each node is built from the prefixes under it,
//! a contiguous run of them sorted by address: its block starts as copies
//! of the entry it replaces, the prefixes that end in it are written
//! shortest first, and each slot with longer prefixes below becomes a
//! child built the same way.
//!
//! Its size grows with the prefixes, not the cost of a lookup: 1,048,576
//! IPv4 /28s take 4.5 MiB and a lookup reads two entries, as one /8 does
//! one. Every read is an array lookup the verifier inlines (a table of a
//! size fixed at load time), with no helper call: a call per level cost
//! about 15 ns here, an inlined read about 2.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    time::{Duration, Instant},
};

use aya::maps::{Array, MapData, MapError};
use traffic_common::table::{
    self, BLOCK, CHILD, FIRST_BLOCK, MAX_RULES, MAX_STRIDE, ROOT_BITS, STRIDE, V4_ROOT, V6_ROOT,
};

use super::ring::Mapping;
use crate::rules::{Action, RuleSet};

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
        "the rule table would need {entries} entries, more than the {} it can index; use fewer or shorter prefixes",
        table::MAX_ENTRIES
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
    /// The default action of the rules it was built from, which the
    /// program has compiled in and a table cannot change.
    default: Action,
    /// How many rules it holds.
    rules: usize,
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
        assert!(
            rules.is_sealed(),
            "RuleSet used before seal(): call seal() after adding rules"
        );
        if rules.len() > MAX_RULES as usize {
            return Err(TableError::TooManyRules { rules: rules.len() });
        }
        let mut entries = vec![0u32; FIRST_BLOCK as usize];
        // A sealed set's ids are IPv4's first, then IPv6's.
        let (v4, v6) = rules.counts();
        let (v4, v6) = (v4 as u32, v6 as u32);
        for (root, width, ids) in [(V4_ROOT, 32, 0..v4), (V6_ROOT, 128, v4..v4 + v6)] {
            let mut family: Vec<u32> = ids.collect();
            let pref = |id: u32| {
                let p = rules.prefix(id).expect("an id of the set");
                Pref {
                    bits: p.bits,
                    len: u32::from(p.len),
                    leaf: table::leaf(p.action.to_kernel(), p.id),
                }
            };
            // By address, then length: the prefixes under any node are
            // then a contiguous run.
            family.sort_unstable_by_key(|&id| {
                let p = pref(id);
                (p.bits, p.len)
            });
            let b = Builder {
                pref,
                width,
                sparse_block: sparse_block(family.len()),
            };
            let first = root as usize;
            b.expand(
                &mut entries[first..first + (1 << ROOT_BITS)],
                &family,
                0,
                ROOT_BITS,
            );
            b.children(&mut entries, first, &family, 0, ROOT_BITS)?;
        }
        Ok(Self {
            entries: by_level(&entries),
            default: rules.default_action(),
            rules: rules.len(),
        })
    }

    /// The default action of the rules it was built from.
    pub fn default_action(&self) -> Action {
        self.default
    }

    /// How many rules it holds.
    pub fn rules(&self) -> usize {
        self.rules
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
        let root = if v6 { V6_ROOT } else { V4_ROOT };
        let mut entry = self.entries[(root + (bits >> (128 - ROOT_BITS)) as u32) as usize];
        let mut at = ROOT_BITS;
        while entry & CHILD != 0 {
            let stride = table::stride_of(entry);
            let slot = bits_at(bits, at, stride);
            at += stride;
            entry = self.entries[(table::index_of(entry) + slot) as usize];
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
pub const GRACE: Duration = Duration::from_millis(20);

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

    /// The tables of a loaded program, whose `TABLE` map was given
    /// `elements` ([`Tables::map_entries`]).
    pub fn new(table: MapData, base: Array<MapData, u32>, elements: u32) -> Self {
        let half = u64::from(elements) / 2;
        Self {
            table,
            base,
            half,
            in_force: None,
            swapped_at: Instant::now(),
        }
    }

    /// The table the next rule set goes into: the one not in force.
    pub fn free_half(&self) -> u32 {
        self.in_force.map_or(0, |t| 1 - t) as u32
    }

    /// Waits until no packet can still be classified by the table not in
    /// force: [`GRACE`] after the last swap.
    pub fn settle(&self) {
        if self.in_force.is_some() {
            std::thread::sleep(GRACE.saturating_sub(self.swapped_at.elapsed()));
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
        let next = u64::from(self.free_half());
        self.settle();
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

fn page_round(n: u64) -> u64 {
    n.div_ceil(4096) * 4096
}

/// The same trie with its blocks laid out level by level, in address order
/// within a level: the upper levels, which every lookup reads, then sit
/// together on a few pages and cache lines. Built depth first, a level's
/// blocks were spread among the others'.
fn by_level(entries: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(entries.len());
    out.extend_from_slice(&entries[..FIRST_BLOCK as usize]);
    let mut level: Vec<usize> = (0..FIRST_BLOCK as usize)
        .filter(|&i| out[i] & CHILD != 0)
        .collect();
    while !level.is_empty() {
        let mut next = Vec::new();
        for at in level {
            let stride = table::stride_of(out[at]);
            let old = table::index_of(out[at]) as usize;
            let new = out.len();
            let size = block_size(stride);
            out.extend_from_slice(&entries[old..old + size]);
            out[at] = table::child(new as u32, stride);
            next.extend((new..new + size).filter(|&i| out[i] & CHILD != 0));
        }
        level = next;
    }
    out
}

/// Entries a block of `stride` bits takes: at least a [`BLOCK`], so that
/// every block starts at a multiple of one (a stride below 4 happens only
/// at an address's last bits).
fn block_size(stride: u32) -> usize {
    (1usize << stride).max(BLOCK as usize)
}

/// One prefix as the builder takes it.
#[derive(Clone, Copy, Debug)]
struct Pref {
    /// The address, left-aligned in 128 bits.
    bits: u128,
    len: u32,
    leaf: u32,
}

/// The `stride` bits of `bits` starting `at` bits from the top.
fn bits_at(bits: u128, at: u32, stride: u32) -> u32 {
    ((bits >> (128 - stride - at)) as u32) & ((1 << stride) - 1)
}

/// Builds one family's nodes from its prefixes, given as rule ids sorted by
/// address, then length (4 bytes each, read from the rule set as needed).
struct Builder<F> {
    pref: F,
    width: u32,
    /// The widest block any node may take however sparse it is: wide for
    /// small families ([`sparse_block`]).
    sparse_block: usize,
}

/// The widest block a node of a family of `prefixes` may take however
/// sparse it is. In small families memory is no concern and fewer reads
/// are worth a wider block: with under 16 prefixes, 65,536 entries (a lone
/// IPv6 /32 is two reads from the first level, not five; at most 15
/// prefixes * 7 levels * 256 KiB: 27 MiB), with under 1,024, 256 entries (at
/// most 1,023 * 14 * 1 KiB: 14 MiB); otherwise 16, as the fill decides.
fn sparse_block(prefixes: usize) -> usize {
    match prefixes {
        0..16 => 1 << 16,
        16..1024 => 256,
        _ => BLOCK as usize,
    }
}

impl<F: Fn(u32) -> Pref> Builder<F> {
    /// Writes into `block` (the node for the bits before `at`, `stride` bits
    /// wide) the leaves of the prefixes that end within it, longest last.
    /// Prefixes that end above the node are skipped; one that ends exactly
    /// at `at` (the /0 at the first level) is written too, which below the
    /// first level writes what the block inherited anyway.
    fn expand(&self, block: &mut [u32], ids: &[u32], at: u32, stride: u32) {
        let end = at + stride;
        let mut ending: Vec<Pref> = ids
            .iter()
            .map(|&id| (self.pref)(id))
            .filter(|p| p.len >= at && p.len <= end)
            .collect();
        ending.sort_by_key(|p| p.len);
        for p in ending {
            let span = 1usize << (end - p.len);
            let first = bits_at(p.bits, at, stride) as usize & !(span - 1);
            block[first..first + span].fill(p.leaf);
        }
    }

    /// Builds a child for each slot of the node at `block_at` (`stride`
    /// bits from `at`) with prefixes longer than the node reaches, and
    /// points the slot at it. The prefixes of one slot are a contiguous run
    /// of `ids`.
    fn children(
        &self,
        entries: &mut Vec<u32>,
        block_at: usize,
        ids: &[u32],
        at: u32,
        stride: u32,
    ) -> Result<(), TableError> {
        let end = at + stride;
        let mut i = 0;
        while i < ids.len() {
            let p = (self.pref)(ids[i]);
            let slot = bits_at(p.bits, at, stride);
            let run = ids[i..]
                .iter()
                .take_while(|&&id| bits_at((self.pref)(id).bits, at, stride) == slot)
                .count();
            let under = &ids[i..i + run];
            i += run;
            if !under.iter().any(|&id| (self.pref)(id).len > end) {
                continue;
            }
            let inherited = entries[block_at + slot as usize];
            let child_stride = stride_for(self, under, end);
            let child_at = entries.len();
            let size = block_size(child_stride);
            if (child_at + size) as u64 > table::MAX_ENTRIES {
                return Err(TableError::TooLarge {
                    entries: child_at as u64,
                });
            }
            entries.extend(std::iter::repeat_n(inherited, size));
            self.expand(&mut entries[child_at..], under, end, child_stride);
            entries[block_at + slot as usize] = table::child(child_at as u32, child_stride);
            self.children(entries, child_at, under, end, child_stride)?;
        }
        Ok(())
    }
}

/// A node whose prefixes sit in few slots may still take a wide block when
/// there are at least this many prefixes below it for each of the block's
/// entries: a million IPv6 /52s under one /32 then take one level of 18
/// bits above the /32 (a mebibyte, four slots used) instead of four
/// 16-entry levels, each a dependent read for every packet. The entries
/// such blocks add are at most a quarter of the prefixes per level.
const NARROW_PER_ENTRY: usize = 4;

/// The stride of a node `at` bits down over the prefixes `ids` (sorted
/// by address): the widest, within the address and (for IPv6) its 64-bit
/// half, whose block the prefixes fill to at least a quarter (counting the
/// slots they start in) and whose size is at most two entries per prefix
/// (in a small family, any block up to [`sparse_block`]); the narrowest when
/// none is. Dense parts of the rule set then take few, wide levels (131,072
/// /25s under a /8: one 1,024-entry block per /16, the /25s two slots each),
/// sparse ones small blocks.
fn stride_for<F: Fn(u32) -> Pref>(b: &Builder<F>, ids: &[u32], at: u32) -> u32 {
    let mut room = (b.width - at).min(MAX_STRIDE);
    if at < 64 {
        room = room.min(64 - at);
    }
    // Wider than the longest prefix below only repeats its leaves.
    let longest = ids.iter().map(|&id| (b.pref)(id).len).max().unwrap_or(at);
    room = room.min(longest.saturating_sub(at)).max(1);
    let n = ids.len();
    // Slots in use at every stride, in one pass over the sorted prefixes: a
    // prefix starts a new slot of `s` bits when it differs from the one
    // before within its first `s` bits (below `at`).
    let mut differs_at = vec![0usize; room as usize + 1];
    let mut prev: Option<u128> = None;
    for &id in ids {
        let bits = (b.pref)(id).bits << at;
        if let Some(p) = prev {
            differs_at[((p ^ bits).leading_zeros()).min(room) as usize] += 1;
        }
        prev = Some(bits);
    }
    let used = |stride: u32| 1 + differs_at[..stride as usize].iter().sum::<usize>();
    for stride in (STRIDE + 1..=room).rev() {
        if 1usize << stride <= b.sparse_block {
            return stride;
        }
        if (1usize << stride) <= 2 * n && used(stride) * 4 >= 1usize << stride {
            return stride;
        }
        if (1usize << stride) * NARROW_PER_ENTRY <= n {
            return stride;
        }
    }
    STRIDE.min(room)
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

    /// Random rule sets, sparse and dense (where the builder picks wide
    /// strides), nested at random lengths: the table's walk answers every
    /// probe as the rule set's own lookup does.
    #[test]
    fn random_rule_sets_agree_with_the_rule_set() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..6 {
            let mut set = RuleSet::new(Action::Pass);
            let actions = [Action::Drop, Action::Pass, Action::Capture];
            let add = |set: &mut RuleSet, v6: bool, bits: u128, len: u32, a: usize| {
                let width = if v6 { 128 } else { 32 };
                let len = len.min(width);
                let net = bits & u128::MAX.checked_shl(128 - len).unwrap_or(0);
                let addr = if v6 {
                    IpAddr::V6(std::net::Ipv6Addr::from_bits(net))
                } else {
                    IpAddr::V4(std::net::Ipv4Addr::from_bits((net >> 96) as u32))
                };
                let Ok(cidr) = crate::rules::Cidr::new(addr, len as u8) else {
                    return;
                };
                set.add(crate::rules::Rule {
                    cidr,
                    action: actions[a % 3],
                    origin: Origin::Flag("--test"),
                });
            };
            let mut probes = Vec::new();
            if round % 3 == 0 {
                add(&mut set, false, 0, 0, 1);
                add(&mut set, true, 0, 0, 2);
            }
            for _ in 0..3000 {
                let v6 = next() % 2 == 0;
                let bits = (u128::from(next()) << 64) | u128::from(next());
                // Mostly /8../32 (and /16../64), some anywhere.
                let len = match (v6, next() % 4) {
                    (false, 0) => (next() % 33) as u32,
                    (false, _) => 8 + (next() % 25) as u32,
                    (true, 0) => (next() % 129) as u32,
                    (true, _) => 16 + (next() % 49) as u32,
                };
                add(&mut set, v6, bits, len, next() as usize);
                probes.push((v6, bits));
            }
            // A dense block: every /28 (or /52) under a /16 (or /36), with
            // longer and shorter prefixes nested inside.
            let v6 = round % 2 == 1;
            let (base, top, dense) = if v6 {
                (0x2001_0db8_a000u128 << 80, 36, 52)
            } else {
                (0xcb00_0000u128 << 96, 16, 28)
            };
            for i in 0..1u128 << (dense - top) {
                add(
                    &mut set,
                    v6,
                    base | (i << (128 - dense)),
                    dense,
                    (i % 5) as usize,
                );
                if i % 97 == 0 {
                    add(&mut set, v6, base | (i << (128 - dense)), dense + 3, 1);
                    add(&mut set, v6, base | (i << (128 - dense)), dense - 6, 2);
                }
                let host = u128::from(next()) & (u128::MAX >> dense);
                probes.push((v6, base | (i << (128 - dense)) | host));
            }
            set.seal();
            let table = Table::build(&set).unwrap();
            for (v6, bits) in probes {
                let ip = if v6 {
                    IpAddr::V6(std::net::Ipv6Addr::from_bits(bits))
                } else {
                    IpAddr::V4(std::net::Ipv4Addr::from_bits((bits >> 96) as u32))
                };
                let want = set
                    .lookup(ip)
                    .map(|(id, r)| (r.action.to_kernel(), id as u32));
                let key = if v6 { bits } else { bits >> 96 << 96 };
                assert_eq!(table.lookup(v6, key), want, "round {round}: {ip}");
            }
        }
    }

    /// A sealed set that drops each of `nets`, each `len` bits long.
    fn dropping(nets: impl Iterator<Item = IpAddr>, len: u8) -> RuleSet {
        let mut set = RuleSet::new(Action::Pass);
        for net in nets {
            set.add(crate::rules::Rule {
                cidr: crate::rules::Cidr::new(net, len).unwrap(),
                action: Action::Drop,
                origin: Origin::Flag("--test"),
            });
        }
        assert!(set.seal().is_empty());
        set
    }

    #[test]
    fn a_million_prefixes_take_a_few_mebibytes() {
        let nets = (0..1u32 << 20)
            .map(|i| IpAddr::V4(std::net::Ipv4Addr::from_bits(0xf000_0000 | (i << 4))));
        let table = Table::build(&dropping(nets, 28)).unwrap();
        assert!(table.bytes() < 6 << 20, "{} bytes", table.bytes());
        // Dense: the first level, then one 4,096-entry block per /16.
        let root = table.entries()[0xf000];
        assert_eq!(table::stride_of(root), 12, "{root:#x}");
        assert_eq!(table.lookup(false, 0xf000_0013u128 << 96), Some((1, 1)));
        assert_eq!(table.lookup(false, 0xf100_0013u128 << 96), None);
    }

    #[test]
    fn a_million_ipv6_prefixes_under_one_32_take_three_reads() {
        let base = u128::from(0x2001_0db8u32) << 96;
        let nets =
            (0..1u128 << 20).map(|i| IpAddr::V6(std::net::Ipv6Addr::from_bits(base | (i << 76))));
        let table = Table::build(&dropping(nets, 52)).unwrap();
        assert!(table.bytes() < 8 << 20, "{} bytes", table.bytes());
        // The first level at 2001::/16, one level of 18 bits to /34, one
        // of 18 to /52: the leaf is the third read.
        let root = table.entries()[(table::V6_ROOT + 0x2001) as usize];
        assert_eq!(table::stride_of(root), 18, "{root:#x}");
        // db8's slot at /34 (the /52s' top two bits below the /32 are 0
        // for the first quarter).
        let second = table.entries()[(table::index_of(root) + (0x0db8 << 2)) as usize];
        assert_eq!(table::stride_of(second), 18, "{second:#x}");
        let addr = base | (5u128 << 76) | 0x1234;
        assert_eq!(table.lookup(true, addr).map(|(action, _)| action), Some(1));
        assert_eq!(table.lookup(true, base ^ (1u128 << 100)), None);
    }
}
