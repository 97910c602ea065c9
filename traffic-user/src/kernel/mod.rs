//! The kernel side: the XDP objects, loading and attaching them, and the
//! system interfaces around them.
//!
//! - [`engine`]: the classifier with its rule tables, counters, event ring
//!   and AF_XDP socket map.
//! - [`ring`]: the event ring buffer, mapped and read in batches.
//! - [`mapped`]: BPF arrays mapped into the process (per-rule counters, the
//!   logs of sources).
//! - [`sums`]: the sources of those logs, summed.
//! - [`tools`]: the floor and XDP_TX programs of the benchmark and the
//!   generator, from an object of their own.
//! - [`attach`]: bpf_link attachment, mode fallback, programs in the way.
//! - [`netlink`]: interface indexes, queues, and XDP programs by netlink.
//! - [`caps`]: the capabilities the process holds.

pub mod attach;
pub mod caps;
pub mod engine;
pub mod mapped;
pub mod netlink;
pub(crate) mod object;
pub mod ring;
pub mod sums;
pub mod table;
pub mod tools;

pub use attach::{AttachMode, Attached, ModeChoice};
pub use engine::{DEFAULT_RING_BYTES, Engine, Settings};
pub(crate) use object::os_error;
pub use object::{EngineError, error_chain};
pub use ring::EventRing;
pub use tools::{Tool, ToolProgram};
