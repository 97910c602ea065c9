//! The command line: flags as parsed ([`args`]), then validated into what
//! runs ([`config`]), like a search tool's low-level and high-level
//! arguments.

pub mod args;
pub mod config;
pub mod generate;

pub use args::{BenchArgs, GenArgs, LowArgs, RunArgs, Sub};
pub use config::{ConfigError, GenConfig, Invalid};
