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
    sink::{
        Percentiles,
        json::{Line, SummaryReport},
    },
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

pub(crate) fn io_step(step: &'static str) -> impl FnOnce(std::io::Error) -> LiveError {
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
    /// The same with `--busy-poll`.
    TrafficCaptureBusy,
    /// `traffic --afxdp --capture 192.0.2.0/24 --write FILE`: whole packets.
    TrafficAfxdp,
    /// xdp-filter with one source address denied.
    XdpFilterDrop,
    /// `tcpdump -w FILE`.
    Tcpdump,
    /// `xdpdump --load-xdp-program -w FILE`: xdp-tools' XDP capture (an XDP
    /// program sending packets through a perf buffer). Without a program
    /// of its own loaded, xdpdump falls back to libpcap, which is tcpdump.
    Xdpdump,
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
            Receiver::TrafficCaptureBusy => {
                "traffic capturing to pcap, --busy-poll (reader and sender pinned to cores of their own)"
            }
            Receiver::TrafficAfxdp => "traffic AF_XDP whole packets to pcap",
            Receiver::XdpFilterDrop => "xdp-filter dropping",
            Receiver::Tcpdump => "tcpdump -w",
            Receiver::Xdpdump => "xdpdump -w (XDP mode)",
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
    /// The receiving tool's CPU per frame sent, in nanoseconds.
    #[serde(default)]
    pub tool_cpu_ns_per_packet: Option<f64>,
    /// traffic's delivery latency.
    pub latency_ns: Option<Percentiles>,
}

/// The times of all CPUs together, in clock ticks, from the `cpu` line of
/// /proc/stat: user, nice, system, idle, iowait, irq, softirq, steal, ...;
/// empty when it cannot be read.
fn cpu_ticks() -> Vec<u64> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return Vec::new();
    };
    line.split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect()
}

/// Busy jiffies of all CPUs together: user, nice, system, irq, softirq and
/// steal.
fn cpu_busy_jiffies() -> u64 {
    let ticks = cpu_ticks();
    [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| ticks.get(i))
        .sum()
}

/// Seconds the machine's CPUs have been busy since boot: user, nice,
/// system, IRQ and softirq time (not idle, I/O wait, or the time the
/// hypervisor gave to others). `None` when /proc/stat cannot be read.
pub(crate) fn machine_busy_s() -> Option<f64> {
    let t = cpu_ticks();
    let busy = t.first()? + t.get(1)? + t.get(2)? + t.get(5)? + t.get(6)?;
    Some(busy as f64 / clock_ticks())
}

/// CPU seconds of process `pid` (user + system), or `None` when it is gone.
///
/// Nanoseconds on the CPU from the scheduler (`/proc/PID/task/*/schedstat`),
/// summed over the process's threads: `/proc/PID/stat` counts in clock
/// ticks of 10 ms, too coarse for a capture that costs 0.05 s.
pub(crate) fn process_cpu_s(pid: u32) -> Option<f64> {
    threads_cpu_s(pid, None)
}

/// CPU seconds of the threads of process `pid` named `name` (all of them
/// when `None`), as [`process_cpu_s`]; `None` when the process is gone.
pub(crate) fn threads_cpu_s(pid: u32, name: Option<&str>) -> Option<f64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut ns = 0u64;
    for task in tasks.flatten() {
        if let Some(name) = name {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim() != name {
                continue;
            }
        }
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        ns += stat
            .split_whitespace()
            .next()
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(ns as f64 / 1e9)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// A child process whose stdout lines arrive on a channel.
pub(crate) struct Spawned {
    pub(crate) child: Child,
    pub(crate) lines: mpsc::Receiver<String>,
    pub(crate) stderr: mpsc::Receiver<String>,
}

impl Spawned {
    pub(crate) fn start(mut cmd: Command) -> std::io::Result<Self> {
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
    pub(crate) fn wait_for(
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

    /// Starts `cmd`, a `traffic --json` run, and waits up to `timeout` for
    /// its `start` line (the program attached).
    pub(crate) fn traffic(cmd: Command, timeout: Duration) -> Result<Self, LiveError> {
        let s = Spawned::start(cmd).map_err(io_step("starting traffic"))?;
        s.wait_for("traffic", "\"type\":\"start\"", false, timeout)?;
        Ok(s)
    }

    pub(crate) fn interrupt(&mut self) -> std::process::ExitStatus {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.child.wait().expect("wait for a child")
    }

    pub(crate) fn rest(rx: &mpsc::Receiver<String>) -> Vec<String> {
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

/// Runs one scenario: starts the receiving side on a new lab, sends
/// `count` frames at `rate` (or as fast as veth takes them), and collects
/// what each side measured.
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
    let files = Files {
        pcap: workdir.join("bench.pcap"),
        tcpdump: workdir.join("bench-tcpdump.pcap"),
    };
    let _ = std::fs::remove_file(&files.pcap);
    let _ = std::fs::remove_file(&files.tcpdump);
    let bin = traffic_bin.to_string_lossy().into_owned();
    // Busy polling is for a core given to capture: the reader on the last
    // core, the sender (whose softirq runs the XDP program on veth) on the
    // first.
    let pin = (*receiver == Receiver::TrafficCaptureBusy)
        .then(pinned_cores)
        .flatten();
    let mut side = Receiving::start(&lab, &bin, receiver, mechanism, &files, pin)?;

    let tool_cpu_before = side.tool.as_ref().and_then(|t| process_cpu_s(t.child.id()));
    let busy_before = cpu_busy_jiffies();
    let report = send(&lab, &bin, count, rate, mechanism, pin.map(|p| p.0))?;
    // Let the receiving side finish what is queued: tcpdump hands libpcap's
    // ring blocks to userspace when they fill or after 1 s, so stopping it
    // sooner would count its last partial block as lost.
    std::thread::sleep(Duration::from_millis(1500));
    let busy_after = cpu_busy_jiffies();
    let tool_cpu_after = side.tool.as_ref().and_then(|t| process_cpu_s(t.child.id()));

    let sent = report.sent;
    let seconds = report.elapsed_ns as f64 / 1e9;
    let mut result = LiveResult {
        scenario: if side.floor.is_some() {
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
    result.tool_cpu_ns_per_packet = result.tool_cpu_s.map(|s| s * 1e9 / sent.max(1) as f64);
    side.collect(receiver, &mut result)?;
    drop(side);
    drop(lab);
    Ok(result)
}

/// The capture files of a scenario.
struct Files {
    /// traffic's.
    pcap: PathBuf,
    /// tcpdump's.
    tcpdump: PathBuf,
}

/// What receives a scenario's frames, kept running until collected.
struct Receiving {
    /// The receiving tool, where there is one.
    tool: Option<Spawned>,
    /// tcpdump running beside traffic.
    tcpdump: Option<Spawned>,
    /// A floor program attached as the receiver itself.
    program: Option<ToolProgram>,
    /// The pass floor under a receiver that attaches nothing, for live
    /// frames.
    floor: Option<ToolProgram>,
}

impl Receiving {
    fn start(
        lab: &Lab,
        bin: &str,
        receiver: &Receiver,
        mechanism: Mechanism,
        files: &Files,
        pin: Option<(usize, usize)>,
    ) -> Result<Self, LiveError> {
        let traffic = |args: &[&str]| -> Result<Spawned, LiveError> {
            let mut cmd = match pin {
                Some((_, reader)) => {
                    let mut cmd = Lab::command_in(&lab.rx_ns, "taskset");
                    cmd.args(["-c", &reader.to_string(), bin]);
                    cmd
                }
                None => Lab::command_in(&lab.rx_ns, bin),
            };
            cmd.args(["--iface", &lab.rx_if, "--json", "--interval", "0.5"])
                .args(args);
            Spawned::traffic(cmd, Duration::from_secs(30))
        };
        let pcap = files.pcap.to_string_lossy().into_owned();
        let capture = ["--capture", PREFIX, "--write", pcap.as_str()];
        let mut side = Receiving {
            tool: None,
            tcpdump: None,
            program: None,
            floor: None,
        };
        // veth takes XDP frames (live frames) only when the receiving end
        // runs an XDP program: give the receivers that attach none the pass
        // floor.
        if mechanism == Mechanism::LiveFrames
            && matches!(receiver, Receiver::Nothing | Receiver::Tcpdump)
        {
            side.floor = Some(attach_floor(lab, Tool::FloorPass)?);
        }
        match receiver {
            Receiver::Nothing => {}
            Receiver::FloorPass => side.program = Some(attach_floor(lab, Tool::FloorPass)?),
            Receiver::FloorDrop => side.program = Some(attach_floor(lab, Tool::FloorDrop)?),
            Receiver::TrafficDrop => side.tool = Some(traffic(&["--drop", PREFIX])?),
            Receiver::TrafficCapture => side.tool = Some(traffic(&capture)?),
            Receiver::TrafficCaptureMaxSnap => {
                side.tool = Some(traffic(&[&capture[..], &["--snaplen", "4096"]].concat())?);
            }
            Receiver::TrafficCaptureBusy => {
                side.tool = Some(traffic(&[&capture[..], &["--busy-poll"]].concat())?);
            }
            Receiver::Xdpdump => side.tool = Some(start_xdpdump(lab, &files.tcpdump)?),
            Receiver::TrafficAfxdp => {
                side.tool = Some(traffic(&[&capture[..], &["--afxdp"]].concat())?);
            }
            Receiver::TrafficAndTcpdump => {
                side.tool = Some(traffic(&capture)?);
                side.tcpdump = Some(start_tcpdump(lab, &files.tcpdump)?);
            }
            Receiver::Tcpdump => side.tool = Some(start_tcpdump(lab, &files.tcpdump)?),
            Receiver::XdpFilterDrop => side.tool = Some(start_xdp_filter(lab)?),
        }
        Ok(side)
    }

    /// Stops the receiving side and puts its counts in `result`.
    fn collect(&mut self, receiver: &Receiver, result: &mut LiveResult) -> Result<(), LiveError> {
        if let Some(mut t) = self.tcpdump.take() {
            let (captured, lost) = stop_tcpdump(&mut t);
            result.tcpdump_captured = captured;
            result.tcpdump_lost = lost;
        }
        let Some(mut t) = self.tool.take() else {
            return Ok(());
        };
        match receiver {
            Receiver::TrafficDrop
            | Receiver::TrafficCapture
            | Receiver::TrafficCaptureMaxSnap
            | Receiver::TrafficCaptureBusy
            | Receiver::TrafficAfxdp
            | Receiver::TrafficAndTcpdump => {
                t.interrupt();
                let summary = last_summary(&t).ok_or(LiveError::NoSummary)?;
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
            Receiver::Tcpdump | Receiver::Xdpdump => {
                let (captured, lost) = stop_tcpdump(&mut t);
                result.captured = captured;
                result.capture_lost = captured.map(|c| result.sent.saturating_sub(c)).or(lost);
            }
            Receiver::XdpFilterDrop => {
                let _ = t.child.stdin.as_mut().map(|s| s.write_all(b"\n"));
                let _ = t.child.wait();
                result.seen = xdp_filter_drops(&Spawned::rest(&t.lines));
            }
            _ => {}
        }
        Ok(())
    }
}

/// Starts `tcpdump -w FILE` on the lab's receiving end.
fn start_tcpdump(lab: &Lab, file: &Path) -> Result<Spawned, LiveError> {
    let mut cmd = Lab::command_in(&lab.rx_ns, "tcpdump");
    // The same buffer as traffic's ring (8 MiB), written to a file.
    cmd.args(["-i", &lab.rx_if, "-n", "-B", "8192", "-w"])
        .arg(file);
    let s = Spawned::start(cmd).map_err(io_step("starting tcpdump"))?;
    s.wait_for("tcpdump", "listening on", true, Duration::from_secs(10))?;
    Ok(s)
}

/// Starts xdpdump in its XDP mode on the lab's receiving end, writing
/// `file`.
fn start_xdpdump(lab: &Lab, file: &Path) -> Result<Spawned, LiveError> {
    let mut cmd = Lab::command_in(&lab.rx_ns, "xdpdump");
    cmd.args(["-i", &lab.rx_if, "--load-xdp-program", "-w"])
        .arg(file);
    let s = Spawned::start(cmd).map_err(io_step("starting xdpdump"))?;
    s.wait_for("xdpdump", "listening on", true, Duration::from_secs(20))?;
    Ok(s)
}

/// Loads xdp-filter on the lab's receiving end, denying [`SOURCE`].
fn start_xdp_filter(lab: &Lab) -> Result<Spawned, LiveError> {
    // xdp-filter keeps its state pinned in a bpffs; `ip netns exec` gives
    // each command a fresh /sys, so one shell does it all.
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
    Ok(s)
}

/// The cores to pin the sender and a busy-polling reader to: the first and
/// the last, when there are two or more.
fn pinned_cores() -> Option<(usize, usize)> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    (cores >= 2).then_some((0, cores - 1))
}

/// Sends `count` frames from [`SOURCE`] with `traffic gen` in the lab's
/// sending namespace, on core `pin` when given.
fn send(
    lab: &Lab,
    bin: &str,
    count: u64,
    rate: Option<u64>,
    mechanism: Mechanism,
    pin: Option<usize>,
) -> Result<GenReport, LiveError> {
    let mut sender = match pin {
        Some(core) => {
            let mut cmd = Lab::command_in(&lab.tx_ns, "taskset");
            cmd.args(["-c", &core.to_string(), bin]);
            cmd
        }
        None => Lab::command_in(&lab.tx_ns, bin),
    };
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
    if let Some(r) = rate {
        sender.args(["--rate", &r.to_string()]);
    }
    run_gen(&mut sender)
}

/// Runs `cmd`, a `traffic gen --json`, and reads its report.
pub(crate) fn run_gen(cmd: &mut Command) -> Result<GenReport, LiveError> {
    let out = cmd.output().map_err(io_step("running traffic gen"))?;
    if !out.status.success() {
        return Err(LiveError::Generator(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| LiveError::Generator(format!("it printed no report ({e})")))
}

/// The summary line among what traffic printed after it was stopped.
pub(crate) fn last_summary(traffic: &Spawned) -> Option<SummaryReport> {
    Spawned::rest(&traffic.lines)
        .into_iter()
        .rev()
        .find_map(|l| match serde_json::from_str(&l) {
            Ok(Line::Summary(s)) => Some(s),
            _ => None,
        })
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

/// tcpdump's (or xdpdump's) "N packets captured" and "M packets dropped
/// by kernel" (or "by perf ring").
fn stop_tcpdump(t: &mut Spawned) -> (Option<u64>, Option<u64>) {
    t.interrupt();
    let lines = Spawned::rest(&t.stderr);
    let find = |what: &str| {
        lines
            .iter()
            .find(|l| l.contains(what))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
    };
    (
        find("packets captured"),
        find("dropped by kernel").or_else(|| find("dropped by perf ring")),
    )
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
        assert!(machine_busy_s().is_some_and(|s| s > 0.0));
        assert!(process_cpu_s(std::process::id()).is_some());
    }
}
