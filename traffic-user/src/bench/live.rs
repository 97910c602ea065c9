//! Live benchmarks on the lab: the same traffic, offered to a receiving
//! veth end with nothing attached, with the floor programs, with traffic,
//! with xdp-filter and with tcpdump, one after the other in one run.
//!
//! The sender is `traffic gen` in the sending namespace. veth pushes back
//! when the receiving side falls behind, and the generator waits for it, so
//! the rate it reaches is the rate the receiving side sustains. CPU cost is
//! the whole machine's busy time (sender and receiver: on veth the receive
//! path runs in the sender's softirq) per packet, from `/proc/stat`, plus
//! the receiving tool's own process time where there is one.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::{
    kernel::{EngineError, ModeChoice, Tool, ToolProgram},
    lab::{
        self, Lab,
        generator::{GenReport, Mechanism},
        in_netns,
    },
    sink::{Percentiles, report::Line},
};

/// Why a scenario could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// A step failed with an I/O error.
    #[error("{step} failed")]
    Io {
        /// What was being done.
        step: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A tool did not say what it says when ready.
    #[error("{tool} did not start (is it installed?): no `{needle}` within {timeout:?}")]
    NotReady {
        /// The tool.
        tool: &'static str,
        /// What it should have printed.
        needle: &'static str,
        /// How long we waited.
        timeout: Duration,
    },
    /// A floor program could not be loaded or attached.
    #[error("attaching the floor program failed")]
    Floor(#[source] EngineError),
    /// The generator failed.
    #[error("traffic gen failed: {0}")]
    Generator(String),
    /// traffic ended without a summary.
    #[error("traffic printed no summary")]
    NoSummary,
}

fn io_step(step: &'static str) -> impl FnOnce(std::io::Error) -> LiveError {
    move |source| LiveError::Io { step, source }
}

/// What receives the traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Receiver {
    /// Nothing attached: the kernel's stack drops the frames (no address).
    Nothing,
    /// traffic's floor program: XDP_PASS, nothing else.
    FloorPass,
    /// traffic's drop floor: XDP_DROP, nothing else.
    FloorDrop,
    /// `traffic --drop 192.0.2.0/24`.
    TrafficDrop,
    /// `traffic --capture 192.0.2.0/24 --write FILE`.
    TrafficCapture,
    /// The same at the largest snaplen (4096).
    TrafficCaptureMaxSnap,
    /// `traffic --afxdp --capture 192.0.2.0/24 --write FILE`: whole packets.
    TrafficAfxdp,
    /// xdp-filter with one source address denied.
    XdpFilterDrop,
    /// `tcpdump -w FILE`.
    Tcpdump,
    /// traffic capturing and tcpdump writing, at the same time.
    TrafficAndTcpdump,
}

impl Receiver {
    /// The name in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Receiver::Nothing => "no program",
            Receiver::FloorPass => "floor (XDP_PASS)",
            Receiver::FloorDrop => "floor (XDP_DROP)",
            Receiver::TrafficDrop => "traffic dropping",
            Receiver::TrafficCapture => "traffic capturing to pcap",
            Receiver::TrafficCaptureMaxSnap => "traffic capturing to pcap, snaplen 4096",
            Receiver::TrafficAfxdp => "traffic AF_XDP whole packets to pcap",
            Receiver::XdpFilterDrop => "xdp-filter dropping",
            Receiver::Tcpdump => "tcpdump -w",
            Receiver::TrafficAndTcpdump => "traffic + tcpdump -w, side by side",
        }
    }
}

/// One measured scenario.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct LiveResult {
    /// [`Receiver::name`].
    pub scenario: String,
    /// Frames per second asked of the generator; `None`: as fast as it can.
    pub offered_pps: Option<u64>,
    /// How the generator sent: `af-packet` or `live-frames`.
    pub sender: String,
    /// Frames sent.
    pub sent: u64,
    /// Seconds the generator took.
    pub seconds: f64,
    /// Frames per second sent, which veth's back-pressure ties to what the
    /// receiving side sustains.
    pub rate_pps: f64,
    /// Frames the receiving tool saw, where it counts them.
    pub seen: Option<u64>,
    /// Frames captured: traffic's delivered events or tcpdump's packets.
    pub captured: Option<u64>,
    /// Frames meant to be captured but lost.
    pub capture_lost: Option<u64>,
    /// tcpdump's counts when it ran beside traffic.
    pub tcpdump_captured: Option<u64>,
    /// tcpdump's losses when it ran beside traffic.
    pub tcpdump_lost: Option<u64>,
    /// Whole-machine busy CPU time per frame sent, in nanoseconds.
    pub cpu_ns_per_packet: f64,
    /// CPU seconds of the receiving tool's process.
    pub tool_cpu_s: Option<f64>,
    /// traffic's delivery latency.
    pub latency_ns: Option<Percentiles>,
}

/// Busy jiffies of all CPUs together, from the first line of /proc/stat.
fn cpu_busy_jiffies() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else {
        return 0;
    };
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = [0, 1, 2, 5, 6, 7];
    busy.iter().filter_map(|&i| fields.get(i)).sum()
}

/// CPU seconds of process `pid` (user + system), or `None` when it is gone.
fn process_cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3; utime and stime are 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// A child process whose stdout lines arrive on a channel.
struct Spawned {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl Spawned {
    fn start(mut cmd: Command) -> std::io::Result<Self> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (etx, stderr) = mpsc::channel();
        let err = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if etx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            lines,
            stderr,
        })
    }

    /// Waits for a line on stdout (or stderr) containing `needle`.
    fn wait_for(
        &self,
        tool: &'static str,
        needle: &'static str,
        on_stderr: bool,
        timeout: Duration,
    ) -> Result<String, LiveError> {
        let deadline = Instant::now() + timeout;
        let rx = if on_stderr { &self.stderr } else { &self.lines };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(_) => {}
                Err(_) => {
                    return Err(LiveError::NotReady {
                        tool,
                        needle,
                        timeout,
                    });
                }
            }
        }
    }

    fn interrupt(&mut self) -> std::process::ExitStatus {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.child.wait().expect("wait for a child")
    }

    fn rest(rx: &mpsc::Receiver<String>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
            out.push(line);
        }
        out
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The source of all benchmark traffic: one address, so that xdp-filter,
/// which matches exact addresses, needs one rule like the others.
const SOURCE: &str = "192.0.2.1/32";
const PREFIX: &str = "192.0.2.0/24";

/// Runs one scenario.
///
/// # Errors
///
/// When the lab, a tool or the generator fails.
pub fn run_scenario(
    traffic_bin: &Path,
    workdir: &Path,
    receiver: &Receiver,
    count: u64,
    rate: Option<u64>,
    mechanism: Mechanism,
) -> Result<LiveResult, LiveError> {
    let lab = Lab::create("bench", 1).map_err(io_step("creating the lab"))?;
    let pcap = workdir.join("bench.pcap");
    let tcpdump_pcap = workdir.join("bench-tcpdump.pcap");
    let _ = std::fs::remove_file(&pcap);
    let _ = std::fs::remove_file(&tcpdump_pcap);
    let bin = traffic_bin.to_string_lossy().into_owned();
    let traffic = |args: &[&str]| -> Result<Spawned, LiveError> {
        let mut cmd = Lab::command_in(&lab.rx_ns, &bin);
        cmd.args(["--iface", &lab.rx_if, "--json", "--interval", "0.5"])
            .args(args);
        let s = Spawned::start(cmd).map_err(io_step("starting traffic"))?;
        s.wait_for(
            "traffic",
            "\"type\":\"start\"",
            false,
            Duration::from_secs(30),
        )?;
        Ok(s)
    };
    let tcpdump = |file: &Path| -> Result<Spawned, LiveError> {
        let mut cmd = Lab::command_in(&lab.rx_ns, "tcpdump");
        // The same buffer as traffic's ring (8 MiB), written to a file.
        cmd.args(["-i", &lab.rx_if, "-n", "-B", "8192", "-w"])
            .arg(file);
        let s = Spawned::start(cmd).map_err(io_step("starting tcpdump"))?;
        s.wait_for("tcpdump", "listening on", true, Duration::from_secs(10))?;
        Ok(s)
    };
    let pcap_arg = pcap.to_string_lossy().into_owned();

    // Start the receiving side. veth takes XDP frames (live frames) only
    // when the receiving end runs an XDP program: give the receivers that
    // attach none the pass floor.
    let mut engine_guard = None;
    let mut floor_guard = None;
    if mechanism == Mechanism::LiveFrames
        && matches!(receiver, Receiver::Nothing | Receiver::Tcpdump)
    {
        floor_guard = Some(attach_floor(&lab, Tool::FloorPass)?);
    }
    let mut tool: Option<Spawned> = None;
    let mut tcpdump_tool: Option<Spawned> = None;
    match receiver {
        Receiver::Nothing => {}
        Receiver::FloorPass | Receiver::FloorDrop => {
            let tool = if *receiver == Receiver::FloorPass {
                Tool::FloorPass
            } else {
                Tool::FloorDrop
            };
            engine_guard = Some(attach_floor(&lab, tool)?);
        }
        Receiver::TrafficDrop => tool = Some(traffic(&["--drop", PREFIX])?),
        Receiver::TrafficCapture => {
            tool = Some(traffic(&["--capture", PREFIX, "--write", &pcap_arg])?)
        }
        Receiver::TrafficCaptureMaxSnap => {
            tool = Some(traffic(&[
                "--capture",
                PREFIX,
                "--write",
                &pcap_arg,
                "--snaplen",
                "4096",
            ])?);
        }
        Receiver::TrafficAfxdp => {
            tool = Some(traffic(&[
                "--capture",
                PREFIX,
                "--write",
                &pcap_arg,
                "--afxdp",
            ])?);
        }
        Receiver::TrafficAndTcpdump => {
            tool = Some(traffic(&["--capture", PREFIX, "--write", &pcap_arg])?);
            tcpdump_tool = Some(tcpdump(&tcpdump_pcap)?);
        }
        Receiver::Tcpdump => tool = Some(tcpdump(&tcpdump_pcap)?),
        Receiver::XdpFilterDrop => {
            // xdp-filter keeps its state pinned in a bpffs; `ip netns exec`
            // gives each command a fresh /sys, so one shell does it all.
            let script = format!(
                "mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf; \
                 xdp-filter load --mode native {ifname} && xdp-filter ip {ip} --mode src && echo READY && read _ ; \
                 xdp-filter status {ifname} ; xdp-filter unload {ifname}",
                ifname = lab.rx_if,
                ip = SOURCE.trim_end_matches("/32"),
            );
            let mut cmd = Lab::command_in(&lab.rx_ns, "sh");
            cmd.args(["-c", &script]);
            let s = Spawned::start(cmd).map_err(io_step("starting xdp-filter"))?;
            s.wait_for("xdp-filter", "READY", false, Duration::from_secs(20))?;
            tool = Some(s);
        }
    }

    let tool_cpu_before = tool.as_ref().and_then(|t| process_cpu_s(t.child.id()));
    let busy_before = cpu_busy_jiffies();
    let mut sender = Lab::command_in(&lab.tx_ns, &bin);
    let count_arg = count.to_string();
    sender
        .args([
            "gen",
            "--iface",
            &lab.tx_if,
            "--count",
            &count_arg,
            "--src",
            SOURCE,
            "--payload",
            "22",
            "--json",
        ])
        .args(["--dst-mac", "02:74:72:66:00:02"]);
    if mechanism == Mechanism::LiveFrames {
        sender.args(["--mechanism", "live-frames"]);
    }
    let rate_arg;
    if let Some(r) = rate {
        rate_arg = r.to_string();
        sender.args(["--rate", &rate_arg]);
    }
    let out = sender.output().map_err(io_step("running traffic gen"))?;
    if !out.status.success() {
        return Err(LiveError::Generator(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    let report: GenReport = serde_json::from_slice(&out.stdout)
        .map_err(|e| LiveError::Generator(format!("it printed no report ({e})")))?;
    // Let the receiving side finish what is queued: tcpdump hands libpcap's
    // ring blocks to userspace when they fill or after 1 s, so stopping it
    // sooner would count its last partial block as lost.
    std::thread::sleep(Duration::from_millis(1500));
    let busy_after = cpu_busy_jiffies();
    let tool_cpu_after = tool.as_ref().and_then(|t| process_cpu_s(t.child.id()));

    let sent = report.sent;
    let seconds = report.elapsed_ns as f64 / 1e9;
    let mut result = LiveResult {
        scenario: if floor_guard.is_some() {
            format!("{} (+ floor XDP_PASS)", receiver.name())
        } else {
            receiver.name().to_owned()
        },
        offered_pps: rate,
        sender: match mechanism {
            Mechanism::AfPacket => "af-packet".to_owned(),
            Mechanism::LiveFrames => "live-frames".to_owned(),
        },
        sent,
        seconds,
        rate_pps: sent as f64 / seconds.max(1e-9),
        cpu_ns_per_packet: (busy_after - busy_before) as f64 / clock_ticks() * 1e9
            / sent.max(1) as f64,
        tool_cpu_s: tool_cpu_before.zip(tool_cpu_after).map(|(a, b)| b - a),
        ..LiveResult::default()
    };

    // Stop the receiving side and collect its counts.
    if let Some(mut t) = tcpdump_tool.take() {
        let (captured, lost) = stop_tcpdump(&mut t);
        result.tcpdump_captured = captured;
        result.tcpdump_lost = lost;
    }
    if let Some(mut t) = tool.take() {
        match receiver {
            Receiver::TrafficDrop
            | Receiver::TrafficCapture
            | Receiver::TrafficCaptureMaxSnap
            | Receiver::TrafficAfxdp
            | Receiver::TrafficAndTcpdump => {
                t.interrupt();
                let summary = Spawned::rest(&t.lines)
                    .into_iter()
                    .rev()
                    .find_map(|l| match serde_json::from_str(&l) {
                        Ok(Line::Summary(s)) => Some(s),
                        _ => None,
                    })
                    .ok_or(LiveError::NoSummary)?;
                result.seen = Some(summary.counts.packets);
                if *receiver != Receiver::TrafficDrop {
                    // traffic's own count of what it lost, not the
                    // difference to what was sent: a test can then check
                    // that the two add up.
                    result.captured = Some(summary.counts.events);
                    result.capture_lost = Some(summary.counts.events_lost);
                    result.latency_ns = Some(summary.latency_ns);
                }
            }
            Receiver::Tcpdump => {
                let (captured, lost) = stop_tcpdump(&mut t);
                result.captured = captured;
                result.capture_lost = captured.map(|c| sent.saturating_sub(c)).or(lost);
            }
            Receiver::XdpFilterDrop => {
                let _ = t.child.stdin.as_mut().map(|s| s.write_all(b"\n"));
                let _ = t.child.wait();
                let status = Spawned::rest(&t.lines);
                result.seen = xdp_filter_drops(&status);
            }
            _ => {}
        }
    }
    drop(engine_guard);
    drop(floor_guard);
    drop(lab);
    Ok(result)
}

/// Attaches a floor program to the lab's receiving end.
fn attach_floor(lab: &Lab, tool: Tool) -> Result<ToolProgram, LiveError> {
    let ifname = lab.rx_if.clone();
    in_netns(&lab.rx_ns, move || -> Result<ToolProgram, EngineError> {
        let mut program = ToolProgram::load(tool)?;
        program.attach(&ifname, ModeChoice::Native)?;
        Ok(program)
    })
    .map_err(io_step("entering the lab's receiving namespace"))?
    .map_err(LiveError::Floor)
}

/// tcpdump's "N packets captured" and "M packets dropped by kernel".
fn stop_tcpdump(t: &mut Spawned) -> (Option<u64>, Option<u64>) {
    t.interrupt();
    let lines = Spawned::rest(&t.stderr);
    let find = |what: &str| {
        lines
            .iter()
            .find(|l| l.contains(what))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
    };
    (find("packets captured"), find("dropped by kernel"))
}

/// The XDP_DROP packet count from `xdp-filter status`.
fn xdp_filter_drops(lines: &[String]) -> Option<u64> {
    lines
        .iter()
        .find(|l| l.trim_start().starts_with("XDP_DROP"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

/// Where the lab's stray namespaces would come from if a run is killed.
pub fn cleanup() -> Vec<String> {
    lab::remove_stale()
}

/// The directory for this run's files.
pub fn workdir() -> PathBuf {
    std::env::temp_dir().join(format!("traffic-bench-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xdp_filter_status_is_parsed() {
        let lines: Vec<String> = [
            "CURRENT XDP-FILTER STATUS:",
            "Aggregate per-action statistics:",
            "  XDP_ABORTED                                   0 pkts           0 KiB",
            "  XDP_DROP                                 123456 pkts        7716 KiB",
            "  XDP_PASS                                      3 pkts           0 KiB",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(xdp_filter_drops(&lines), Some(123_456));
    }

    #[test]
    fn cpu_counters_are_readable() {
        assert!(cpu_busy_jiffies() > 0);
        assert!(process_cpu_s(std::process::id()).is_some());
    }
}
