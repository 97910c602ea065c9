//! In-kernel cost per packet, measured with `BPF_PROG_TEST_RUN`.
//!
//! The kernel runs the program `repeat` times on the same frame and reports
//! the mean time per run; this measures the program alone, without the
//! driver, so it is the figure to compare programs by. Each measurement is
//! taken [`ROUNDS`] times and the median kept, since the machine's other
//! work shows up as outliers.

use std::{net::IpAddr, time::Duration};

use aya::programs::{TestRun as _, TestRunOptions, Xdp};

use crate::{
    engine::{Engine, EngineError},
    frame::FrameSpec,
    rules::{Action, Cidr, Origin, RuleSet},
};

/// Measurements per figure; the median is reported.
pub const ROUNDS: usize = 5;

/// One measured figure.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Cost {
    /// What ran: `floor` or `traffic`.
    pub program: String,
    /// The path through the program: `pass` (floor), `drop`, `capture`.
    pub path: String,
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// Rules loaded of the frame's family.
    pub rules: usize,
    /// Runs per measurement.
    pub repeat: u32,
    /// Median nanoseconds per packet.
    pub ns_per_packet: f64,
    /// Every round's nanoseconds per packet.
    pub rounds: Vec<f64>,
}

/// Errors of a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Loading the engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The kernel refused the test run.
    #[error("BPF_PROG_TEST_RUN failed")]
    TestRun(#[source] Box<aya::programs::ProgramError>),
    /// The program gave an unexpected verdict.
    #[error(
        "the program returned {got} where {want} was expected; the benchmark would measure the wrong path"
    )]
    Verdict {
        /// The verdict returned.
        got: u32,
        /// The verdict expected.
        want: u32,
    },
}

/// The frame every figure is measured on: a 64-byte UDP frame.
pub fn frame(src: IpAddr) -> Vec<u8> {
    let dst: IpAddr = if src.is_ipv4() {
        "198.51.100.1".parse().expect("valid")
    } else {
        "2001:db8::1".parse().expect("valid")
    };
    let mut spec = FrameSpec::udp(src, dst);
    spec.payload_len = if src.is_ipv4() { 22 } else { 2 };
    spec.build()
}

/// Runs `program` on `frame` `repeat` times, [`ROUNDS`] times over, checking
/// the verdict; returns the median and all rounds in ns per packet.
///
/// # Errors
///
/// When the kernel refuses the run or the verdict is not `want`.
pub fn measure(
    program: &Xdp,
    frame: &[u8],
    repeat: u32,
    want: u32,
) -> Result<(f64, Vec<f64>), BenchError> {
    let mut rounds = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..TestRunOptions::default()
            })
            .map_err(|e| BenchError::TestRun(Box::new(e)))?;
        if result.return_value != want {
            return Err(BenchError::Verdict {
                got: result.return_value,
                want,
            });
        }
        rounds.push(ns(result.duration));
    }
    let mut sorted = rounds.clone();
    sorted.sort_by(f64::total_cmp);
    Ok((sorted[sorted.len() / 2], rounds))
}

fn ns(d: Duration) -> f64 {
    d.as_nanos() as f64
}

/// A rule set of `n` rules for `family`, one of which (the last) covers
/// `target` with `action`; the others are distinct prefixes elsewhere.
pub fn rules_with(n: usize, target: IpAddr, action: Action) -> RuleSet {
    let mut set = RuleSet::new(Action::Pass);
    let origin = || Origin::Flag("bench");
    for i in 0..n.saturating_sub(1) {
        // Table entries only: nothing is ever sent to these prefixes.
        let cidr = match target {
            IpAddr::V4(_) => {
                let i = i as u32;
                Cidr::new(IpAddr::from((0x0a00_0000 + (i << 8)).to_be_bytes()), 24)
            }
            IpAddr::V6(_) => {
                let i = i as u128;
                Cidr::new(
                    IpAddr::from(((0x2001_0db8_8000u128 << 80) + (i << 64)).to_be_bytes()),
                    64,
                )
            }
        }
        .expect("aligned prefix");
        set.add(crate::rules::Rule {
            cidr,
            action: Action::Drop,
            origin: origin(),
        })
        .expect("distinct prefixes");
    }
    let len = if target.is_ipv4() { 24 } else { 48 };
    let net = Cidr::new(mask(target, len), len).expect("prefix of the target");
    set.add(crate::rules::Rule {
        cidr: net,
        action,
        origin: origin(),
    })
    .expect("the target's prefix is distinct");
    set
}

fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::from((a.to_bits() & (u32::MAX << (32 - len))).to_be_bytes()),
        IpAddr::V6(a) => IpAddr::from((a.to_bits() & (u128::MAX << (128 - len))).to_be_bytes()),
    }
}

/// XDP verdicts.
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// Measures the floor and traffic's drop and capture paths for IPv4 and IPv6
/// with each rule count in `rule_counts`. `progress` is told of each figure.
///
/// # Errors
///
/// As [`measure`], or when loading fails.
pub fn kernel_costs(
    rule_counts: &[usize],
    repeat: u32,
    mut progress: impl FnMut(&Cost),
) -> Result<Vec<Cost>, BenchError> {
    let mut costs = Vec::new();
    let mut push = |cost: Cost, costs: &mut Vec<Cost>| {
        progress(&cost);
        costs.push(cost);
    };
    let sources: [(&str, IpAddr); 2] = [
        ("ipv4", "192.0.2.1".parse().expect("valid")),
        ("ipv6", "2001:db8:bad::1".parse().expect("valid")),
    ];
    for (family, src) in sources {
        let frame = frame(src);
        let mut floor_engine = Engine::load(&RuleSet::new(Action::Pass))?;
        let (median, rounds) = measure(floor_engine.floor_program()?, &frame, repeat, XDP_PASS)?;
        push(
            Cost {
                program: "floor".into(),
                path: "pass".into(),
                family: family.into(),
                rules: 0,
                repeat,
                ns_per_packet: median,
                rounds,
            },
            &mut costs,
        );
        for &n in rule_counts {
            for (path, action, want) in [
                ("drop", Action::Drop, XDP_DROP),
                ("capture", Action::Capture, XDP_PASS),
            ] {
                let engine = Engine::load(&rules_with(n, src, action))?;
                let (median, rounds) = measure(engine.program(), &frame, repeat, want)?;
                push(
                    Cost {
                        program: "traffic".into(),
                        path: path.into(),
                        family: family.into(),
                        rules: n,
                        repeat,
                        ns_per_packet: median,
                        rounds,
                    },
                    &mut costs,
                );
            }
        }
    }
    Ok(costs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_rules_cover_the_target_once() {
        for target in ["192.0.2.1", "2001:db8:bad::1"] {
            let ip: IpAddr = target.parse().unwrap();
            let set = rules_with(1000, ip, Action::Capture);
            assert_eq!(set.rules().len(), 1000);
            assert_eq!(set.action_for(ip), Action::Capture);
            assert_eq!(
                set.rules().iter().filter(|r| r.cidr.contains(ip)).count(),
                1
            );
        }
        assert_eq!(
            rules_with(1, "192.0.2.1".parse().unwrap(), Action::Drop)
                .rules()
                .len(),
            1
        );
    }
}
