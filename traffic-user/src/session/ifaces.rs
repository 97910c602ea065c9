//! A run on several interfaces: one program per interface, each with its
//! own maps and counters, read by the session as one [`Counters`].
//!
//! Each interface's program is loaded and attached on its own (its rule
//! tables, counters, ring buffer and logs of sources are its own), so that
//! the interfaces are counted apart and a busy one cannot fill another's
//! ring. The session sums them for the run's counts and reports each.

use std::time::Duration;

use traffic_common::{Count, Stats, TopKey};

use super::Counters;
use crate::kernel::{Engine, EngineError, table::Table};

/// The programs of a run, one per interface, in the order given.
pub struct Ifaces {
    engines: Vec<Engine>,
}

impl Ifaces {
    /// The programs `engines`, the first being the one whose rule tables
    /// the others follow.
    ///
    /// # Panics
    ///
    /// When `engines` is empty.
    pub fn new(engines: Vec<Engine>) -> Self {
        assert!(!engines.is_empty(), "a run has at least one interface");
        Self { engines }
    }

    fn first(&self) -> &Engine {
        &self.engines[0]
    }
}

impl Counters for Ifaces {
    fn read(&mut self) -> Result<Stats, EngineError> {
        Ok(self.read_each()?.0)
    }

    fn read_each(&mut self) -> Result<(Stats, Vec<Stats>), EngineError> {
        let mut total = Stats::default();
        let mut each = Vec::with_capacity(self.engines.len());
        for e in &self.engines {
            let s = e.stats()?;
            total.accumulate(&s);
            each.push(s);
        }
        if each.len() == 1 {
            each.clear();
        }
        Ok((total, each))
    }

    fn stop(&mut self) {
        for e in &mut self.engines {
            e.detach();
        }
    }

    /// Puts `table` in force on every interface in turn. Should one refuse
    /// it (the kernel out of memory), the interfaces before it keep the new
    /// rules: the error says so through its caller's report.
    fn replace_rules(&mut self, table: &Table) -> Result<(), EngineError> {
        for e in &mut self.engines {
            e.replace_rules(table)?;
        }
        Ok(())
    }

    fn rule_slots(&self) -> u32 {
        self.first().rule_slots()
    }

    fn read_slots(
        &mut self,
        first: u32,
        n: u32,
        each: &mut dyn FnMut(u32, Count),
    ) -> Result<(), EngineError> {
        if let [one] = self.engines.as_mut_slice() {
            return one.read_slots(first, n, each);
        }
        let mut sum = vec![Count::default(); n as usize];
        for e in &mut self.engines {
            e.read_slots(first, n, &mut |slot, c| {
                if let Some(s) = sum.get_mut((slot - first) as usize) {
                    s.add(&c);
                }
            })?;
        }
        for (i, c) in sum.into_iter().enumerate() {
            each(first + i as u32, c);
        }
        Ok(())
    }

    fn free_half(&self) -> u32 {
        self.first().free_half()
    }

    fn settle(&mut self) {
        // The programs switched tables together: one wait covers them all.
        self.first().settle();
    }

    fn gather_sources(&mut self) {
        for e in &mut self.engines {
            e.gather_sources();
        }
    }

    fn take_sources(&mut self, each: &mut dyn FnMut(u32, &TopKey, Count)) {
        for e in &mut self.engines {
            let ifindex = e.ifindex();
            e.take_sources(&mut |key, count| each(ifindex, key, count));
        }
    }

    fn grace(&self) -> Duration {
        if self.engines.iter().any(Engine::ever_attached) {
            crate::kernel::table::GRACE
        } else {
            Duration::ZERO
        }
    }

    fn run_frame(&mut self, frame: &[u8]) -> Result<bool, EngineError> {
        self.first().run_frame(frame)
    }
}
