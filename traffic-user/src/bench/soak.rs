//! `traffic bench --soak`: a long run at a steady rate, capturing to a
//! rotating pcap file, that checks that nothing grows and nothing is lost.
//!
//! traffic captures everything the lab's generator sends, at a fixed rate,
//! for the whole soak. Its resident memory and open descriptors are read
//! from /proc when it has started, every `sample` seconds, and at the end;
//! at the end its summary must count every frame sent, each either
//! delivered or lost (none lost, at a rate the lab sustains).

use std::{
    path::Path,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::live::{LiveError, Spawned, io_step, last_summary, run_gen};
use crate::{
    lab::{Lab, RX_MAC},
    sink::json::SummaryReport,
};

/// What a soak measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SoakResult {
    /// Seconds of traffic.
    pub seconds: u64,
    /// Frames per second offered.
    pub rate: u64,
    /// Frames sent, all from the capture prefix.
    pub sent: u64,
    /// `(seconds since start, resident KiB, open descriptors)`, from the
    /// start to the end.
    pub samples: Vec<(u64, u64, u64)>,
    /// traffic's summary.
    pub summary: Option<SummaryReport>,
    /// traffic's own CPU seconds over the soak.
    pub cpu_s: Option<f64>,
}

impl SoakResult {
    /// Whether the counts are exact: every frame sent was captured, and
    /// delivered or counted lost.
    pub fn exact(&self) -> bool {
        self.summary.as_ref().is_some_and(|s| {
            s.counts.capture == self.sent && s.counts.events + s.counts.events_lost == self.sent
        })
    }
}

/// Resident memory in KiB and open descriptors of `pid`.
fn footprint(pid: u32) -> (u64, u64) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    (rss, fds)
}

/// Runs the soak: `seconds` of traffic at `rate` frames/s, sampled every
/// `sample` seconds.
///
/// # Errors
///
/// When the lab, traffic or the generator fails.
pub fn run(
    traffic_bin: &Path,
    workdir: &Path,
    seconds: u64,
    rate: u64,
    sample: u64,
) -> Result<SoakResult, LiveError> {
    let lab = Lab::create("soak", 1).map_err(io_step("creating the lab"))?;
    let bin = traffic_bin.to_string_lossy().into_owned();
    let pcap = workdir.join("soak.pcap");
    let pcap = pcap.to_string_lossy().into_owned();
    // A ring of four 100 MB files: the disk stays bounded however long.
    let mut cmd = Lab::command_in(&lab.rx_ns, &bin);
    cmd.args([
        "--iface",
        &lab.rx_if,
        "--json",
        "--capture",
        "203.0.113.0/24",
    ])
    .args(["-w", &pcap, "-C", "100", "-W", "4"]);
    let mut traffic = Spawned::traffic(cmd, Duration::from_secs(30))?;
    let pid = traffic.child.id();
    let cpu_before = super::live::process_cpu_s(pid);
    let started = Instant::now();
    let mut result = SoakResult {
        seconds,
        rate,
        ..SoakResult::default()
    };
    let (rss, fds) = footprint(pid);
    result.samples.push((0, rss, fds));
    // Rounds of one second each, paced by the generator.
    let mac = RX_MAC.map(|b| format!("{b:02x}")).join(":");
    let mut next_sample = sample;
    for second in 1..=seconds {
        let report = run_gen(
            Lab::command_in(&lab.tx_ns, &bin)
                .args(["gen", "--iface", &lab.tx_if, "--json", "--dst-mac", &mac])
                .args(["--src", "203.0.113.0/24", "--count", &rate.to_string()])
                .args(["--rate", &rate.to_string(), "--payload", "64"]),
        )?;
        result.sent += report.sent;
        if second >= next_sample || second == seconds {
            let (rss, fds) = footprint(pid);
            result.samples.push((started.elapsed().as_secs(), rss, fds));
            next_sample += sample;
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    result.cpu_s = cpu_before
        .zip(super::live::process_cpu_s(pid))
        .map(|(a, b)| b - a);
    traffic.interrupt();
    result.summary = last_summary(&traffic);
    drop(traffic);
    drop(lab);
    Ok(result)
}

/// The soak as a Markdown section.
pub fn table(r: &SoakResult) -> String {
    let mut md = format!(
        "## Soak\n\n{} s at {} frames/s offered, captured to a ring of four 100 MB pcap files (`-C 100 -W 4`).\n\n\
         | at (s) | resident (KiB) | open descriptors |\n|---:|---:|---:|\n",
        r.seconds, r.rate
    );
    for (at, rss, fds) in &r.samples {
        md.push_str(&format!("| {at} | {rss} | {fds} |\n"));
    }
    match &r.summary {
        Some(s) => md.push_str(&format!(
            "\nsent {}, captured {}, delivered {}, lost {}: {}; traffic's CPU {:.1} s ({:.0} ns a frame)\n",
            r.sent,
            s.counts.capture,
            s.counts.events,
            s.counts.events_lost,
            if r.exact() { "exact" } else { "NOT exact" },
            r.cpu_s.unwrap_or(f64::NAN),
            r.cpu_s.unwrap_or(f64::NAN) * 1e9 / r.sent.max(1) as f64,
        )),
        None => md.push_str("\ntraffic printed no summary\n"),
    }
    md
}
