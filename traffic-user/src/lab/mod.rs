//! Test traffic: the tooling that makes packets for the root tests, the
//! built-in lab and the benchmark.
//!
//! - [`netns`]: two network namespaces joined by a veth pair.
//! - [`frame`]: Ethernet frames, built with etherparse.
//! - [`generator`]: `traffic gen`, an exact sender.
//! - [`zipf`]: skewed source mixes for it.
//! - [`builtin`]: `traffic --lab`, a lab with a generator and demo rules.

pub mod builtin;
pub mod frame;
pub mod generator;
pub mod netns;
pub mod zipf;

pub use netns::{Lab, NS_PREFIX, RX_MAC, TX_MAC, enter_netns, in_netns, ip, remove_stale};
