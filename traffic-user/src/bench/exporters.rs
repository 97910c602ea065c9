//! `traffic bench --exporters`: what `--metrics` and `--ipfix` add to
//! traffic's own CPU while 200,000 frames/s flow.
//!
//! A real Prometheus scrapes `--metrics` every second and a real nfcapd
//! receives `--ipfix` every second, both in the lab's receiving namespace.
//! The generator sends a Zipf mix (s = 1.1) of 10,000 sources, half of the
//! ranks in a capture prefix (written to a pcap file) and half in a
//! dropped one, so that traffic has the work of a monitored link: events to
//! read and write, and ten thousand sources to export. Each variant runs in
//! turn, rotating which goes first, and the added CPU is the median of the
//! per-round differences to the run without exporters. `--top 10` counts
//! every source as `--ipfix` does, and exports nothing: what IPFIX adds
//! beyond it is the export itself. The metrics server
//! and the IPFIX exporter run on threads of their own, whose CPU is read
//! apart: exact where the process's difference is within the noise of a
//! shared two-core machine.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::live::{
    LiveError, Spawned, io_step, last_summary, machine_busy_s, process_cpu_s, run_gen,
    threads_cpu_s,
};
use super::scale::median_of_differences;
use crate::lab::{Lab, RX_MAC};

/// The offered rate.
const RATE: u64 = 200_000;

/// One variant's figures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExportRow {
    /// The flags measured.
    pub variant: String,
    /// traffic's CPU, milliseconds per second of the run (median of rounds).
    pub cpu_ms_per_s: f64,
    /// Median of the per-round differences to the run without exporters,
    /// as a share of that run's CPU; `None` for that run.
    pub added: Option<f64>,
    /// The CPU of the `metrics` and `ipfix` threads, ms per second of the
    /// run (median of rounds), and the session thread's.
    pub metrics_thread_ms_per_s: f64,
    pub ipfix_thread_ms_per_s: f64,
    pub session_thread_ms_per_s: f64,
    /// The whole machine's busy CPU (user, system, IRQ and softirq time of
    /// every CPU, from /proc/stat): traffic, the generator, the peers, and
    /// the XDP program, which runs in softirq and which traffic's own figure
    /// sees only in part. Milliseconds per second (median of rounds).
    #[serde(default)]
    pub machine_ms_per_s: f64,
    /// The median of per-round differences of `machine_ms_per_s` to the
    /// first variant's, in ms/s.
    #[serde(default)]
    pub machine_added: Option<f64>,
    /// Frames counted over every round, and frames sent.
    pub counted: u64,
    pub sent: u64,
    /// Frames to capture that were lost, over every round.
    pub lost: u64,
}

/// The variants, by their flags.
fn variants() -> [(&'static str, Vec<&'static str>); 4] {
    [
        ("no exporters", Vec::new()),
        // What --ipfix needs before it sends anything: the kernel counts
        // every source, and traffic reads the counts every interval.
        (
            "--top 10: sources counted, not exported",
            vec!["--top", "10"],
        ),
        (
            "--metrics, scraped every 1 s",
            vec!["--metrics", "127.0.0.1:9464"],
        ),
        (
            "--metrics and --ipfix every 1 s",
            vec!["--metrics", "127.0.0.1:9464", "--ipfix", "127.0.0.1:4739"],
        ),
    ]
}

/// A collector or scraper in the lab, stopped on drop.
struct Peer(std::process::Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn peer(lab: &Lab, program: &str, args: &[&str], log: &Path) -> Result<Peer, LiveError> {
    let out = std::fs::File::create(log).map_err(io_step("creating a log"))?;
    let err = out.try_clone().map_err(io_step("creating a log"))?;
    Lab::command_in(&lab.rx_ns, program)
        .args(args)
        .stdout(out)
        .stderr(err)
        .spawn()
        .map(Peer)
        .map_err(io_step(if program == "prometheus" {
            "starting prometheus (apt-get install prometheus)"
        } else {
            "starting nfcapd (apt-get install nfdump)"
        }))
}

/// Measures every variant over `rounds` rounds of `seconds` each.
///
/// # Errors
///
/// When the lab, a peer, traffic or the generator fails.
pub fn rows(bin: &str, quick: bool, workdir: &Path) -> Result<Vec<ExportRow>, LiveError> {
    let (rounds, seconds) = if quick { (2, 3) } else { (5, 8) };
    let lab = Lab::create("export", 1).map_err(io_step("creating the lab"))?;
    Lab::loopback_up(&lab.rx_ns).map_err(io_step("bringing up the lab's loopback"))?;
    let dir = workdir.join("exporters");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("flows")).map_err(io_step("creating the work dir"))?;
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: traffic\n    static_configs:\n      - targets: ['127.0.0.1:9464']\n",
    )
    .map_err(io_step("writing prometheus.yml"))?;
    let _prometheus = peer(
        &lab,
        "prometheus",
        &[
            &format!("--config.file={}", config.display()),
            &format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
            "--web.listen-address=127.0.0.1:9090",
        ],
        &dir.join("prometheus.log"),
    )?;
    let flows = dir.join("flows");
    let _nfcapd = peer(
        &lab,
        "nfcapd",
        &[
            "-w",
            &flows.to_string_lossy(),
            "-b",
            "127.0.0.1",
            "-p",
            "4739",
        ],
        &dir.join("nfcapd.log"),
    )?;
    let variants = variants();
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut machine: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    // Per variant: the metrics, ipfix and session threads' CPU per round.
    let mut threads: Vec<[Vec<f64>; 3]> = vec![Default::default(); variants.len()];
    let mut totals = vec![(0u64, 0u64, 0u64); variants.len()];
    let pcap = dir.join("capture.pcap").to_string_lossy().into_owned();
    for round in 0..rounds {
        for k in 0..variants.len() {
            let v = (round + k) % variants.len();
            let mut cmd = Lab::command_in(&lab.rx_ns, bin);
            cmd.args(["--iface", &lab.rx_if, "--json", "--interval", "1"])
                .args(["--capture", "192.0.2.0/24", "--drop", "240.0.0.0/16"])
                .args(["-w", &pcap])
                .args(&variants[v].1);
            let mut traffic = Spawned::traffic(cmd, Duration::from_secs(30))?;
            let pid = traffic.child.id();
            // A scrape and an export before the measurement starts.
            std::thread::sleep(Duration::from_millis(1500));
            let before = process_cpu_s(pid);
            let machine_before = machine_busy_s();
            let threads_before = THREADS.map(|t| threads_cpu_s(pid, Some(t)).unwrap_or(0.0));
            let started = Instant::now();
            let sent = send(&lab, bin, seconds)?;
            let after = process_cpu_s(pid);
            let machine_after = machine_busy_s();
            let threads_after = THREADS.map(|t| threads_cpu_s(pid, Some(t)).unwrap_or(0.0));
            let wall = started.elapsed().as_secs_f64();
            for (i, (a, b)) in threads_before.iter().zip(&threads_after).enumerate() {
                threads[v][i].push((b - a) * 1e3 / wall);
            }
            traffic.interrupt();
            let summary = last_summary(&traffic);
            if let (Some(a), Some(b)) = (before, after) {
                cpu[v].push((b - a) * 1e3 / wall);
            }
            if let (Some(a), Some(b)) = (machine_before, machine_after) {
                machine[v].push((b - a) * 1e3 / wall);
            }
            let t = &mut totals[v];
            t.0 += summary.as_ref().map_or(0, |s| s.counts.packets);
            t.1 += sent;
            t.2 += summary.as_ref().map_or(0, |s| s.counts.events_lost);
        }
    }
    let base = &cpu[0];
    Ok(variants
        .iter()
        .enumerate()
        .map(|(v, (name, _))| {
            let added = (v > 0).then(|| {
                median_of_differences(&cpu[v], base, |x, b| (x - b) / b.max(1e-9))
                    .unwrap_or(f64::NAN)
            });
            ExportRow {
                variant: (*name).to_owned(),
                cpu_ms_per_s: median(&cpu[v]),
                metrics_thread_ms_per_s: median(&threads[v][0]),
                ipfix_thread_ms_per_s: median(&threads[v][1]),
                session_thread_ms_per_s: median(&threads[v][2]),
                machine_ms_per_s: median(&machine[v]),
                machine_added: (v > 0 && !machine[v].is_empty()).then(|| {
                    median_of_differences(&machine[v], &machine[0], |x, b| x - b)
                        .unwrap_or(f64::NAN)
                }),
                added,
                counted: totals[v].0,
                sent: totals[v].1,
                lost: totals[v].2,
            }
        })
        .collect())
}

/// The threads read apart: the metrics server, the IPFIX exporter, and the
/// session (the main thread, named after the program).
const THREADS: [&str; 3] = ["metrics", "ipfix", "traffic"];

/// The median, NaN when there is nothing (the CPU could not be read).
fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        f64::NAN
    } else {
        super::scale::median(xs)
    }
}

/// Sends `seconds` of the Zipf mix at [`RATE`]; the frames sent.
fn send(lab: &Lab, bin: &str, seconds: u64) -> Result<u64, LiveError> {
    let mac = RX_MAC.map(|b| format!("{b:02x}")).join(":");
    let count = (RATE * seconds).to_string();
    let report = run_gen(
        Lab::command_in(&lab.tx_ns, bin)
            .args(["gen", "--iface", &lab.tx_if, "--json", "--dst-mac", &mac])
            .args(["--src", "192.0.2.0/24", "--src", "240.0.0.0/16"])
            .args(["--zipf", "1.1", "--zipf-sources", "10000"])
            .args(["--count", &count, "--rate", &RATE.to_string()]),
    )?;
    Ok(report.sent)
}

/// The rows as a Markdown section.
pub fn table(rows: &[ExportRow]) -> String {
    let mut md = format!(
        "## Exporters\n\ntraffic's own CPU (user + system, from the scheduler) while {RATE} frames/s of a Zipf mix of 10,000 sources flow, half captured to pcap; Prometheus scraping every second, nfcapd receiving every second; variants in turn, added = median of per-round differences. *machine*: every CPU's busy time (from /proc/stat, in 10 ms ticks: traffic, the generator, the peers, and the XDP program in softirq), and its added ms/s.\n\n\
         | variant | traffic CPU (ms/s) | added | session thread | metrics thread | ipfix thread | machine (ms/s) | machine added | counted / sent | events lost |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for r in rows {
        md.push_str(&format!(
            "| {} | {:.1} | {} | {:.1} | {:.2} | {:.2} | {:.0} | {} | {} / {} | {} |\n",
            r.variant,
            r.cpu_ms_per_s,
            r.added
                .map_or("-".to_owned(), |a| format!("{:+.1}%", a * 100.0)),
            r.session_thread_ms_per_s,
            r.metrics_thread_ms_per_s,
            r.ipfix_thread_ms_per_s,
            r.machine_ms_per_s,
            r.machine_added
                .map_or("-".to_owned(), |a| format!("{a:+.0}")),
            r.counted,
            r.sent,
            r.lost
        ));
    }
    md
}
