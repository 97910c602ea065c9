//! `traffic --lab` (and `cargo xtask run` without `--iface`): a lab whose
//! generator sends a mix of IPv4 and IPv6 from documentation prefixes, and
//! demo rules unless the user gave some.

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use super::{
    Lab, RX_MAC, enter_netns,
    generator::{self, GenOptions, Mix, Proto},
    remove_stale,
};
use crate::{
    rules::{Action, Origin, RuleError, RuleSet},
    session::{self, Outcome, RunConfig, SetupError},
};

/// Sources of the lab's generator.
pub const SOURCES: [&str; 6] = [
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "2001:db8:bad::/64",
    "2001:db8:1::/64",
    "2001:db8:c::/64",
];
/// The demo rules applied to them when no rule is given.
pub const RULES: [(Action, &str); 4] = [
    (Action::Drop, "192.0.2.0/25"),
    (Action::Capture, "203.0.113.0/24"),
    (Action::Drop, "2001:db8:bad::/48"),
    (Action::Capture, "2001:db8:c::/48"),
];
/// The exponent of the lab's Zipf mix of sources: a few heavy senders and
/// a long tail, as on real links.
pub const ZIPF_S: f64 = 1.1;
/// Distinct sources in the lab's mix.
pub const ZIPF_SOURCES: u64 = 10_000;
/// Frames per second the lab's generator sends.
pub const RATE: u64 = 10_000;

/// Why the built-in lab failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A demo rule did not parse (a bug).
    #[error(transparent)]
    Rule(#[from] RuleError),
    /// The namespaces or the veth pair could not be made.
    #[error("creating the lab failed (it needs root, iproute2 and veth)")]
    Create(#[source] io::Error),
    /// The namespace traffic started in, where --metrics and --ipfix stay,
    /// could not be opened.
    #[error(
        "opening the network namespace traffic was started in (/proc/thread-self/ns/net) failed; --metrics and --ipfix are opened there"
    )]
    StartingNetns(#[source] io::Error),
    /// A namespace could not be entered.
    #[error("entering the lab's {which} namespace failed")]
    Enter {
        /// `sending` or `receiving`.
        which: &'static str,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The generator failed.
    #[error("the lab's generator failed")]
    Generator(#[source] io::Error),
    /// The generator's thread panicked.
    #[error("the lab's generator panicked")]
    GeneratorPanicked,
    /// Starting the runtime failed.
    #[error("starting the tokio runtime failed")]
    Runtime(#[source] io::Error),
    /// The run failed.
    #[error(transparent)]
    Run(#[from] SetupError),
}

/// Runs `cfg` on a new lab, removing it afterwards; leftovers of a killed
/// lab are removed first.
///
/// # Errors
///
/// [`LabError`].
pub fn run(mut cfg: RunConfig) -> Result<Outcome, LabError> {
    for name in remove_stale() {
        crate::say!("traffic: removed namespace {name} left by a lab that was killed");
    }
    if !cfg.rules_given {
        let mut rules = RuleSet::new(cfg.rules.default_action());
        for (action, cidr) in RULES {
            rules.add_str(action, cidr, Origin::Flag("--lab"))?;
        }
        if let Some(e) = rules.seal().into_iter().next() {
            return Err(e.into());
        }
        cfg.rules = std::sync::Arc::new(rules);
    }
    // The run attaches inside the lab's namespace; the user's scraper and
    // collector are where traffic was started, and so are --metrics and
    // --ipfix (in the lab's namespace, whose loopback is down, neither
    // could be reached).
    if cfg.metrics.is_some() || cfg.ipfix.is_some() {
        cfg.sockets_netns = Some(crate::os::current_netns().map_err(LabError::StartingNetns)?);
    }
    let lab = Lab::create("lab", 1).map_err(LabError::Create)?;
    crate::say!(
        "traffic: lab: {} (namespace {}) sends {RATE} frames/s to {} (namespace {}) from {ZIPF_SOURCES} sources in {}, Zipf-distributed (s = {ZIPF_S})",
        lab.tx_if,
        lab.tx_ns,
        lab.rx_if,
        lab.rx_ns,
        SOURCES.join(", ")
    );
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = Arc::clone(&stop);
        let ns = lab.tx_ns.clone();
        let options = GenOptions {
            iface: lab.tx_if.clone(),
            count: u64::MAX,
            sources: SOURCES
                .iter()
                .map(|s| s.parse().expect("valid lab prefix"))
                .collect(),
            dst4: "198.51.100.1".parse().expect("valid address"),
            dst6: "2001:db8::1".parse().expect("valid address"),
            dst_mac: RX_MAC,
            rate: Some(RATE),
            proto: Proto::Udp,
            payload_len: 64,
            mix: Mix::Zipf {
                s: ZIPF_S,
                sources: ZIPF_SOURCES,
                seed: 1,
            },
        };
        std::thread::spawn(move || -> Result<(), LabError> {
            enter_netns(&ns).map_err(|source| LabError::Enter {
                which: "sending",
                source,
            })?;
            // One paced stream until told to stop. (Rounds of a tenth of
            // a second, each opening its socket and drawing its sources
            // anew, sent 8,700 frames/s of the 10,000.)
            generator::run_until(&options, &stop).map_err(LabError::Generator)?;
            Ok(())
        })
    };
    let result = enter_netns(&lab.rx_ns)
        .map_err(|source| LabError::Enter {
            which: "receiving",
            source,
        })
        .and_then(|()| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(LabError::Runtime)
        })
        .and_then(|rt| Ok(rt.block_on(session::watch(&cfg, std::slice::from_ref(&lab.rx_if)))?));
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().map_err(|_| LabError::GeneratorPanicked)?;
    drop(lab);
    sent.and(result)
}
