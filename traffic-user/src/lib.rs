//! `traffic`: a packet filter and capture engine on XDP.
//!
//! The crate is split along the data flow, like a search tool's searcher,
//! matcher and sink:
//!
//! - [`rules`] decides: source prefixes and their actions, longest prefix wins.
//! - [`engine`] is the kernel side: it loads the XDP program with the rules,
//!   attaches it and reads its per-CPU counters.
//! - [`capture`] is the source of captured packets: events from the XDP
//!   program's ring buffer.
//! - The sinks: [`report`] (interval and summary reports, as a table or
//!   JSON), [`latency`] (delivery-latency histograms), [`pcap`] (files) and
//!   [`print`] (one line per packet).
//! - [`frame`], [`generator`] and [`lab`] make test traffic: frames, a sender, and
//!   veth pairs in network namespaces.

pub mod afxdp;
pub mod bench;
pub mod caps;
pub mod capture;
pub mod engine;
pub mod frame;
pub mod generator;
pub mod lab;
pub mod latency;
pub mod livebench;
pub mod netlink;
pub mod pcap;
pub mod plot;
pub mod print;
pub mod report;
pub mod rules;
