//! Counts per rule across a run, reloads included.
//!
//! The kernel counts each rule in a slot of the table that classified the
//! packet ([`traffic_common::rule_slot`]). A reload puts the new set in the
//! other table, so for a while two sets count: the one in force and the one
//! just taken out, into which packets classified before the swap may still
//! be counted. A [`RuleTally`] reads both every interval, takes the last
//! counts of a set before its table is reused, and names every count by its
//! rule's prefix and action, so that a rule kept across reloads keeps
//! counting and one removed keeps what it counted.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use traffic_common::{Count, rule_slot};

use super::Counters;
use crate::{
    kernel::EngineError,
    rules::{Action, Cidr, RuleSet},
    sink::json::RuleRow,
};

/// A rule as reports name it: the same in every rule set that has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleKey {
    /// Frames with no source to look up (not IP, or unreadable): passed.
    Unclassified,
    /// IP packets no rule matched: the default action.
    Default(Action),
    /// A rule.
    Prefix {
        /// Whether it is an IPv6 prefix.
        v6: bool,
        /// The address, left-aligned in 128 bits.
        bits: u128,
        /// The prefix length.
        len: u8,
        /// The action.
        action: Action,
    },
}

impl RuleKey {
    /// The key of rule `id` of `rules`.
    fn of(rules: &RuleSet, id: u32) -> Option<Self> {
        rules.prefix(id).map(|p| RuleKey::Prefix {
            v6: p.v6,
            bits: p.bits,
            len: p.len,
            action: p.action,
        })
    }

    /// The action of the packets counted under it.
    pub fn action(&self) -> Action {
        match *self {
            RuleKey::Unclassified => Action::Pass,
            RuleKey::Default(a) | RuleKey::Prefix { action: a, .. } => a,
        }
    }

    /// As reports write it: `192.0.2.0/24`, `default` or `unclassified`.
    pub fn text(&self) -> String {
        match *self {
            RuleKey::Unclassified => "unclassified".to_owned(),
            RuleKey::Default(_) => "default".to_owned(),
            RuleKey::Prefix { v6, bits, len, .. } => {
                let addr = if v6 {
                    IpAddr::from(bits.to_be_bytes())
                } else {
                    IpAddr::from(((bits >> 96) as u32).to_be_bytes())
                };
                Cidr::new(addr, len).map_or_else(|_| format!("{addr}/{len}"), |c| c.to_string())
            }
        }
    }

    /// A report row of `count` under this rule.
    pub fn row(&self, count: Count) -> RuleRow {
        RuleRow {
            rule: self.text(),
            action: self.action(),
            packets: count.packets,
            bytes: count.bytes,
        }
    }
}

/// Rows by rule, busiest first (then by name, so that equal counts come in
/// a stable order).
pub fn rows(counts: HashMap<RuleKey, Count>) -> Vec<RuleRow> {
    let mut rows: Vec<RuleRow> = counts
        .into_iter()
        .filter(|(_, c)| c.packets > 0)
        .map(|(k, c)| k.row(c))
        .collect();
    rows.sort_by(|a, b| b.packets.cmp(&a.packets).then_with(|| a.rule.cmp(&b.rule)));
    rows
}

/// A rule set that counts, in one of the two tables.
struct Live {
    rules: Arc<RuleSet>,
    half: u32,
    /// Each rule's count at the last reading: what it counted in this
    /// table (its slots were zeroed when the set was installed).
    last: Vec<Count>,
}

impl Live {
    fn new(rules: Arc<RuleSet>, half: u32) -> Self {
        let last = vec![Count::default(); rules.len()];
        Self { rules, half, last }
    }

    /// Adds what each rule counted to `into`.
    fn add_to(&self, into: &mut HashMap<RuleKey, Count>) {
        for (id, c) in self.last.iter().enumerate() {
            if c.packets > 0
                && let Some(key) = RuleKey::of(&self.rules, id as u32)
            {
                into.entry(key).or_default().add(c);
            }
        }
    }

    /// Reads the set's slots and adds what each rule counted since the last
    /// reading to `into`.
    fn read(
        &mut self,
        counters: &mut dyn Counters,
        slots: u32,
        into: &mut HashMap<RuleKey, Count>,
    ) -> Result<(), EngineError> {
        let first = rule_slot::of(self.half, slots, 0);
        let n = self.last.len() as u32;
        let Self { rules, last, .. } = self;
        counters.read_slots(first, n, &mut |slot, now| {
            let id = slot - first;
            let Some(last) = last.get_mut(id as usize) else {
                return;
            };
            let delta = Count {
                packets: now.packets.wrapping_sub(last.packets),
                bytes: now.bytes.wrapping_sub(last.bytes),
            };
            *last = now;
            if delta.packets > 0
                && let Some(key) = RuleKey::of(rules, id)
            {
                into.entry(key).or_default().add(&delta);
            }
        })
    }
}

/// Counts per rule since the start of a run.
pub struct RuleTally {
    slots: u32,
    default: Action,
    fixed_last: [Count; 2],
    current: Live,
    /// The set taken out of force by the last reload, until the next one
    /// reads its last counts.
    previous: Option<Live>,
    /// What the sets no longer counting counted, by rule.
    retired: HashMap<RuleKey, Count>,
    /// Read at a reload, not yet reported in an interval.
    pending: HashMap<RuleKey, Count>,
}

impl RuleTally {
    /// A tally of `rules`, in table 0, with `slots` counters a table; `None`
    /// when rules are not counted (`slots` 0).
    pub fn new(rules: Arc<RuleSet>, slots: u32) -> Option<Self> {
        (slots > 0).then(|| Self {
            slots,
            default: rules.default_action(),
            fixed_last: [Count::default(); 2],
            current: Live::new(rules, 0),
            previous: None,
            retired: HashMap::new(),
            pending: HashMap::new(),
        })
    }

    /// Reads everything counted since the last reading into `into`.
    fn read(
        &mut self,
        counters: &mut dyn Counters,
        into: &mut HashMap<RuleKey, Count>,
    ) -> Result<(), EngineError> {
        let (fixed_last, default) = (&mut self.fixed_last, self.default);
        counters.read_slots(rule_slot::UNCLASSIFIED, 2, &mut |slot, now| {
            let last = &mut fixed_last[slot as usize];
            let delta = Count {
                packets: now.packets.wrapping_sub(last.packets),
                bytes: now.bytes.wrapping_sub(last.bytes),
            };
            *last = now;
            if delta.packets > 0 {
                let key = if slot == rule_slot::UNCLASSIFIED {
                    RuleKey::Unclassified
                } else {
                    RuleKey::Default(default)
                };
                into.entry(key).or_default().add(&delta);
            }
        })?;
        self.current.read(counters, self.slots, into)?;
        if let Some(previous) = &mut self.previous {
            previous.read(counters, self.slots, into)?;
        }
        Ok(())
    }

    /// The counts of each rule since the last interval, busiest first.
    ///
    /// # Errors
    ///
    /// When the counters cannot be read.
    pub fn interval(&mut self, counters: &mut dyn Counters) -> Result<Vec<RuleRow>, EngineError> {
        let mut delta = std::mem::take(&mut self.pending);
        self.read(counters, &mut delta)?;
        Ok(rows(delta))
    }

    /// Before a reload's swap, once the table out of force is out of use
    /// ([`Counters::settle`]): takes the last counts of the set in it,
    /// whose slots the new set will take.
    ///
    /// # Errors
    ///
    /// When the counters cannot be read.
    pub fn before_swap(&mut self, counters: &mut dyn Counters) -> Result<(), EngineError> {
        if let Some(mut previous) = self.previous.take() {
            let mut pending = std::mem::take(&mut self.pending);
            previous.read(counters, self.slots, &mut pending)?;
            self.pending = pending;
            previous.add_to(&mut self.retired);
        }
        Ok(())
    }

    /// `rules` are in force, in table `half`.
    pub fn swapped(&mut self, rules: Arc<RuleSet>, half: u32) {
        let old = std::mem::replace(&mut self.current, Live::new(rules, half));
        self.previous = Some(old);
    }

    /// Every rule's counts since the start (as of the last reading),
    /// busiest first.
    pub fn totals(&self) -> Vec<RuleRow> {
        let mut all = self.retired.clone();
        self.current.add_to(&mut all);
        if let Some(previous) = &self.previous {
            previous.add_to(&mut all);
        }
        for (slot, c) in self.fixed_last.iter().enumerate() {
            let key = if slot as u32 == rule_slot::UNCLASSIFIED {
                RuleKey::Unclassified
            } else {
                RuleKey::Default(self.default)
            };
            all.entry(key).or_default().add(c);
        }
        rows(all)
    }
}
