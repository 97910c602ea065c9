//! `traffic`: a packet filter and capture engine on XDP.
//!
//! The crate's folders follow the data flow of a run:
//!
//! - [`cli`]: the flags, parsed and then validated into a run's
//!   configuration ([`session::RunConfig`]).
//! - [`rules`] decides: source prefixes and their actions, longest prefix
//!   wins.
//! - [`kernel`]: the XDP objects; loading, attaching, counters, and the
//!   netlink and capability queries around them.
//! - [`source`]: where captured packets come from, the ring buffer or
//!   AF_XDP sockets.
//! - [`packet`]: the one userspace parser, which agrees with the kernel's.
//! - [`session`]: a run, which drives sources into sinks and reports
//!   counters every interval.
//! - [`sink`]: where a run goes: reports (table or JSON), latency
//!   histograms, pcap files, packet lines, plots, metrics and IPFIX.
//! - [`os`]: descriptor calls that the inputs and outputs share.
//!
//! Tooling lives beside the product: [`lab`] makes test traffic (veth pairs
//! in network namespaces, frames, a generator, the built-in lab) and
//! [`bench`](mod@bench) measures what traffic costs beside its peers.

/// Writes a line to standard error as `eprintln!` does, except that a
/// standard error that cannot be written (closed, `2>/dev/full`) does not
/// stop traffic: the line is lost, and the run goes on to its summary.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod bench;
pub mod cli;
pub mod kernel;
pub mod lab;
pub mod os;
pub mod packet;
pub mod rules;
pub mod session;
pub mod sink;
pub mod source;
