//! Helpers for the root tests: they need root (CAP_BPF, CAP_NET_ADMIN) and a
//! kernel with XDP and veth. Run them with `cargo xtask test`, which builds
//! the XDP program, embeds it, and says where the `traffic` binary is.
//!
//! Shared kernel state: every lab test makes its own pair of network
//! namespaces, named after the test process's pid and a counter, so tests can
//! run in parallel and next to another run; the engine is only ever attached
//! to interfaces inside those namespaces.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

pub use traffic::lab::Lab;
use traffic::{
    lab::generator::{self, GenOptions, GenReport},
    sink::json::{IntervalReport, Line, PacketLine, ReloadReport, Start, SummaryReport},
};

/// The `traffic` binary built by `cargo xtask test`.
pub fn traffic_bin() -> PathBuf {
    let path = std::env::var_os("TRAFFIC_BIN").expect(
        "TRAFFIC_BIN is not set: these tests need root and the built XDP program; run them with `cargo xtask test`",
    );
    PathBuf::from(path)
}

/// A command running `traffic ARGS` inside namespace `ns`.
pub fn traffic_in(ns: &str, args: &[&str]) -> Command {
    let mut cmd = Lab::command_in(ns, &traffic_bin().to_string_lossy());
    cmd.args(args);
    cmd
}

/// Starts `traffic --iface <the lab's receiving end> ARGS` in the lab's
/// receiving namespace, its stdout and stderr piped, and waits until its
/// program is attached.
///
/// # Panics
///
/// When it does not attach within 5 s.
pub fn spawn_attached(lab: &Lab, args: &[&str]) -> std::process::Child {
    let child = traffic_in(
        &lab.rx_ns,
        &[&["--iface", lab.rx_if.as_str()], args].concat(),
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("start traffic");
    assert!(
        eventually(Duration::from_secs(5), || has_xdp(&lab.rx_ns, &lab.rx_if)),
        "traffic did not attach"
    );
    child
}

/// Runs `traffic ARGS` in namespace `ns`, expecting it to fail with exit
/// status 2, and returns what it said on stderr.
///
/// # Panics
///
/// When it exits any other way.
pub fn fails(ns: &str, args: &[&str]) -> String {
    let out = traffic_in(ns, args).output().expect("run traffic");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(2),
        "traffic {args:?} should fail with 2; stderr:\n{stderr}"
    );
    stderr
}

/// Sends frames with `traffic gen` from the lab's sending end and returns its
/// report.
pub fn send(lab: &Lab, args: &[&str]) -> GenReport {
    run_gen(traffic_in(&lab.tx_ns, &[]), &lab.tx_if, args)
}

/// [`send`] on another interface of the sending namespace (one added with
/// [`Lab::add_pair`]).
pub fn send_on_iface(lab: &Lab, iface: &str, args: &[&str]) -> GenReport {
    run_gen(traffic_in(&lab.tx_ns, &[]), iface, args)
}

/// [`send`] from CPU `cpu` (with taskset): AF_PACKET picks the transmit
/// queue, and so veth the receive queue, by the sending CPU.
pub fn send_on_cpu(lab: &Lab, cpu: usize, args: &[&str]) -> GenReport {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &cpu.to_string(), "ip", "netns", "exec", &lab.tx_ns])
        .arg(traffic_bin());
    run_gen(cmd, &lab.tx_if, args)
}

/// Runs `cmd` (traffic in the sending namespace) as `traffic gen ARGS` on
/// `iface`, to the lab's receiving end.
fn run_gen(mut cmd: Command, iface: &str, args: &[&str]) -> GenReport {
    let mac = "02:74:72:66:00:02";
    let out = cmd
        .args(["gen", "--iface", iface, "--dst-mac", mac, "--json"])
        .args(args)
        .output()
        .expect("run traffic gen");
    assert!(
        out.status.success(),
        "traffic gen {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("traffic gen --json prints one object")
}

/// A running `traffic --json`, with its output lines read on a thread.
pub struct Running {
    child: Child,
    lines: mpsc::Receiver<Line>,
    stderr: std::thread::JoinHandle<String>,
    /// `packet` lines (from `--print`) read so far.
    pub packets: Vec<PacketLine>,
    /// `reload` lines read so far.
    pub reloads: Vec<ReloadReport>,
    /// `interval` lines read so far.
    pub intervals: Vec<IntervalReport>,
    /// Packets of intervals read while waiting for something else, which
    /// [`Running::wait_for_packets`] counts.
    seen: u64,
}

impl Running {
    /// Starts `traffic --json ARGS` in `ns` and waits for its `start` line.
    ///
    /// # Panics
    ///
    /// When it exits or prints nothing within 20 s.
    pub fn start(ns: &str, args: &[&str]) -> (Running, Start) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let mut child = traffic_in(ns, &all)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn traffic");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value: Line = serde_json::from_str(&line).unwrap_or_else(|e| {
                    panic!("traffic printed a line that is not a report line ({e}): {line}")
                });
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                text.push_str(&line);
                text.push('\n');
            }
            text
        });
        let mut running = Running {
            child,
            lines,
            stderr,
            packets: Vec::new(),
            reloads: Vec::new(),
            intervals: Vec::new(),
            seen: 0,
        };
        match running.next_line(Duration::from_secs(20)) {
            Line::Start(start) => (running, start),
            other => panic!("the first line is not `start`: {other:?}"),
        }
    }

    /// Starts `traffic --json --iface RX --interval 0.2 ARGS` on the lab's
    /// receiving end and waits for its `start` line, as most lab tests do.
    ///
    /// # Panics
    ///
    /// As [`Running::start`].
    pub fn watch(lab: &Lab, args: &[&str]) -> (Running, Start) {
        let mut all = vec!["--iface", lab.rx_if.as_str(), "--interval", "0.2"];
        all.extend_from_slice(args);
        Running::start(&lab.rx_ns, &all)
    }

    /// The process id of traffic (`ip netns exec` execs it in place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn next_line(&mut self, timeout: Duration) -> Line {
        match self.lines.recv_timeout(timeout) {
            Ok(v) => v,
            Err(_) => {
                let _ = self.child.kill();
                let status = self.child.wait();
                panic!(
                    "traffic printed no line within {timeout:?} (status {status:?}); stderr:\n{}",
                    self.take_stderr()
                );
            }
        }
    }

    fn take_stderr(&mut self) -> String {
        let handle = std::mem::replace(&mut self.stderr, std::thread::spawn(String::new));
        handle.join().unwrap_or_default()
    }

    /// Reads interval lines until their packets add up to at least `packets`
    /// (the engine has seen all that was sent), or `timeout` passes.
    /// Returns the sum seen.
    pub fn wait_for_packets(&mut self, packets: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut seen = std::mem::take(&mut self.seen);
        while seen < packets {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.lines.recv_timeout(left) {
                Ok(Line::Interval(i)) => {
                    seen += i.counts.packets;
                    self.intervals.push(i);
                }
                Ok(Line::Packet(p)) => self.packets.push(p),
                Ok(Line::Reload(r)) => self.reloads.push(r),
                Ok(other) => panic!("unexpected line before the summary: {other:?}"),
                Err(_) => break,
            }
        }
        seen
    }

    /// Waits for the next `reload` line, reading past intervals, for at
    /// most `timeout`.
    ///
    /// # Panics
    ///
    /// When none comes.
    pub fn next_reload(&mut self, timeout: Duration) -> ReloadReport {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(Line::Reload(r)) => {
                    self.reloads.push(r.clone());
                    return r;
                }
                Ok(Line::Packet(p)) => self.packets.push(p),
                Ok(Line::Interval(i)) => {
                    self.seen += i.counts.packets;
                    self.intervals.push(i);
                }
                Ok(other) => panic!("unexpected line while waiting for a reload: {other:?}"),
                Err(_) => panic!(
                    "no reload line within {timeout:?}; stderr:\n{}",
                    self.take_stderr()
                ),
            }
        }
    }

    /// Waits until the engine has reported `total` packets, for at most 20 s.
    ///
    /// # Panics
    ///
    /// When it has not seen them all by then.
    pub fn expect_packets(mut self, total: u64) -> Self {
        let seen = self.wait_for_packets(total, Duration::from_secs(20));
        assert!(
            seen >= total,
            "the engine saw only {seen} of {total} packets within 20 s"
        );
        self
    }

    /// Sends SIGINT, waits for exit, and returns the summary line, the exit
    /// status and stderr.
    pub fn stop(self) -> (SummaryReport, std::process::ExitStatus, String) {
        let (summary, status, stderr, _) = self.stop_with_packets();
        (summary, status, stderr)
    }

    /// As [`Running::stop`], also returning every `packet` line.
    pub fn stop_with_packets(
        mut self,
    ) -> (
        SummaryReport,
        std::process::ExitStatus,
        String,
        Vec<PacketLine>,
    ) {
        signal(self.pid(), libc::SIGINT);
        let status = self.child.wait().expect("wait for traffic");
        let stderr = self.take_stderr();
        let mut summary = None;
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            match line {
                Line::Summary(s) => summary = Some(s),
                Line::Packet(p) => self.packets.push(p),
                Line::Reload(r) => self.reloads.push(r),
                Line::Interval(i) => self.intervals.push(i),
                Line::Start(_) => {}
            }
        }
        let summary = summary
            .unwrap_or_else(|| panic!("no summary line; status {status}; stderr:\n{stderr}"));
        let packets = std::mem::take(&mut self.packets);
        (summary, status, stderr, packets)
    }

    /// Waits up to `timeout` for traffic to exit by itself; returns the
    /// summary line if it printed one, the exit status and stderr.
    ///
    /// # Panics
    ///
    /// When it is still running after `timeout`.
    pub fn wait_exit(
        mut self,
        timeout: Duration,
    ) -> (Option<SummaryReport>, std::process::ExitStatus, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for traffic") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "traffic did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = self.take_stderr();
        let mut summary = None;
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            if let Line::Summary(s) = line {
                summary = Some(s);
            }
        }
        (summary, status, stderr)
    }

    /// Kills traffic with SIGKILL and waits for it.
    pub fn kill9(mut self) {
        signal(self.pid(), libc::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: plain syscall on a child we own.
    let rc = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// Whether interface `ifname` in namespace `ns` has an XDP program attached,
/// as `ip` reports it.
pub fn has_xdp(ns: &str, ifname: &str) -> bool {
    let out = Command::new("ip")
        .args(["-n", ns, "-d", "link", "show", "dev", ifname])
        .output()
        .expect("run ip link show");
    assert!(
        out.status.success(),
        "ip link show failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.contains("prog/xdp")
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One record of a pcap file.
#[derive(Debug, Clone)]
pub struct PcapRecord {
    /// Timestamp, Unix nanoseconds.
    pub ts_ns: u64,
    /// Bytes on the wire.
    pub orig_len: u32,
    /// The captured bytes.
    pub data: Vec<u8>,
}

/// Reads a nanosecond pcap file written on this machine: its snaplen,
/// link type and records. An independent reader, so that the writer is
/// checked against the format rather than against itself.
///
/// # Panics
///
/// On any format error.
pub fn read_pcap(path: &std::path::Path) -> (u32, u32, Vec<PcapRecord>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let u32_at = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap());
    assert!(bytes.len() >= 24, "no pcap header");
    assert_eq!(u32_at(0), 0xa1b2_3c4d, "nanosecond pcap magic");
    assert_eq!(
        (
            u16::from_ne_bytes([bytes[4], bytes[5]]),
            u16::from_ne_bytes([bytes[6], bytes[7]])
        ),
        (2, 4)
    );
    let (snaplen, linktype) = (u32_at(16), u32_at(20));
    let mut records = Vec::new();
    let mut at = 24;
    while at < bytes.len() {
        assert!(at + 16 <= bytes.len(), "truncated record header at {at}");
        let (sec, nsec, incl, orig) = (u32_at(at), u32_at(at + 4), u32_at(at + 8), u32_at(at + 12));
        assert!(nsec < 1_000_000_000);
        let start = at + 16;
        let end = start + incl as usize;
        assert!(end <= bytes.len(), "truncated record data at {at}");
        assert!(
            incl <= orig && incl <= snaplen,
            "incl {incl} orig {orig} snaplen {snaplen}"
        );
        records.push(PcapRecord {
            ts_ns: u64::from(sec) * 1_000_000_000 + u64::from(nsec),
            orig_len: orig,
            data: bytes[start..end].to_vec(),
        });
        at = end;
    }
    (snaplen, linktype, records)
}

/// Runs `tcpdump -nn -r FILE` and returns its lines.
///
/// # Panics
///
/// When tcpdump fails (it is installed by `cargo xtask test`).
pub fn tcpdump_read(path: &std::path::Path) -> Vec<String> {
    let out = Command::new("tcpdump")
        .args(["-nn", "-r"])
        .arg(path)
        .output()
        .expect("run tcpdump (cargo xtask test installs it)");
    assert!(
        out.status.success(),
        "tcpdump -r failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory named after the test and this process.
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("traffic-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The frames `traffic gen` sends for these options, from the lab's sender.
pub fn expected_frames(opts: &GenOptions) -> Vec<Vec<u8>> {
    (0..opts.count)
        .map(|i| generator::frame(opts, traffic::lab::TX_MAC, i))
        .collect()
}

/// What `traffic gen` is told by [`send_opts`]: UDP from `sources` to the
/// lab's receiving end, `payload` bytes each.
pub fn gen_options(sources: &[&str], count: u64, payload: usize) -> GenOptions {
    GenOptions {
        iface: String::new(),
        count,
        sources: sources.iter().map(|s| s.parse().unwrap()).collect(),
        dst4: "198.51.100.1".parse().unwrap(),
        dst6: "2001:db8::1".parse().unwrap(),
        dst_mac: traffic::lab::RX_MAC,
        rate: None,
        proto: generator::Proto::Udp,
        payload_len: payload,
        mix: generator::Mix::RoundRobin,
    }
}

/// Sends what `opts` describes with `traffic gen`; returns its report.
pub fn send_opts(lab: &Lab, opts: &GenOptions) -> GenReport {
    let count = opts.count.to_string();
    let payload = opts.payload_len.to_string();
    let mut args = vec!["--count", &count, "--payload", &payload];
    let sources: Vec<String> = opts.sources.iter().map(ToString::to_string).collect();
    for s in &sources {
        args.extend(["--src", s]);
    }
    send(lab, &args)
}

/// A program started in a lab namespace for the length of a test (a
/// collector, a scraper), killed and waited for on drop.
pub struct Background {
    child: Child,
    what: String,
}

impl Background {
    /// Starts `program ARGS` in namespace `ns`, output to `log`.
    ///
    /// # Panics
    ///
    /// When it cannot be started (`cargo xtask test` installs what the
    /// tests start).
    pub fn start(ns: &str, program: &str, args: &[&str], log: &std::path::Path) -> Self {
        let out = std::fs::File::create(log).expect("create the log");
        let err = out.try_clone().expect("clone the log");
        let child = Lab::command_in(ns, program)
            .args(args)
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {program} (cargo xtask test installs it): {e}")
            });
        Self {
            child,
            what: program.to_owned(),
        }
    }

    /// Stops it with `sig` (so that it writes what it holds) and waits.
    pub fn stop(mut self, sig: i32) {
        signal(self.child.id(), sig);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{} did not stop within 10 s of signal {sig}", self.what);
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `GET path` from `addr` inside namespace `ns`, HTTP/1.0: the status and
/// the body; `None` when nothing answers.
pub fn http_get(ns: &str, addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let addr: std::net::SocketAddr = addr.parse().expect("an address");
    let mut stream = traffic::lab::netns::in_netns(ns, move || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
    })
    .ok()?
    .ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// Runs `program ARGS` and returns its standard output, failing the test
/// with its standard error when it fails.
pub fn output_of(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (cargo xtask test installs it): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The open flags (`O_*`) of process `pid`'s descriptor for `path`, from
/// /proc/PID/fdinfo, or `None` when it has no descriptor for it.
pub fn open_flags(pid: u32, path: &std::path::Path) -> Option<i32> {
    let want = std::fs::canonicalize(path).ok()?;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        if std::fs::read_link(entry.path()).ok().as_deref() != Some(want.as_path()) {
            continue;
        }
        let fd = entry.file_name();
        let info =
            std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.to_string_lossy())).ok()?;
        let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?;
        return i32::from_str_radix(flags.trim(), 8).ok();
    }
    None
}

/// Whether the file system holding `dir` is ext4 (this project's machines'
/// root), which supports direct I/O.
pub fn is_ext4(dir: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a plain C struct, for which all zeroes is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: statfs fills the struct for a valid C path.
    let rc = unsafe { libc::statfs(path.as_ptr(), &raw mut st) };
    const EXT4_SUPER_MAGIC: i64 = 0xEF53;
    rc == 0 && st.f_type as i64 == EXT4_SUPER_MAGIC
}

/// Makes a FIFO at `path`, mode 0600.
///
/// # Panics
///
/// When it cannot.
pub fn mkfifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// A pcap file header (microseconds, little-endian, Ethernet), as tcpdump
/// writes one: the start of a capture to give `--read`.
pub fn pcap_header() -> Vec<u8> {
    let mut h = Vec::new();
    h.extend(0xa1b2_c3d4u32.to_le_bytes());
    h.extend(2u16.to_le_bytes());
    h.extend(4u16.to_le_bytes());
    h.extend([0; 8]);
    h.extend(65_535u32.to_le_bytes());
    h.extend(1u32.to_le_bytes());
    h
}
