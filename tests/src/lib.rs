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

use serde_json::Value;

pub use traffic::lab::Lab;

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

/// Sends frames with `traffic gen` from the lab's sending end and returns its
/// JSON report.
pub fn send(lab: &Lab, args: &[&str]) -> Value {
    let mac = "02:74:72:66:00:02";
    let mut all = vec!["gen", "--iface", &lab.tx_if, "--dst-mac", mac, "--json"];
    all.extend_from_slice(args);
    let out = traffic_in(&lab.tx_ns, &all)
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
    lines: mpsc::Receiver<Value>,
    stderr: std::thread::JoinHandle<String>,
}

impl Running {
    /// Starts `traffic --json ARGS` in `ns` and waits for its `start` line.
    ///
    /// # Panics
    ///
    /// When it exits or prints nothing within 20 s.
    pub fn start(ns: &str, args: &[&str]) -> (Running, Value) {
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
                let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
                    panic!("traffic printed a line that is not JSON ({e}): {line}")
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
        };
        let start = running.next_line(Duration::from_secs(20));
        assert_eq!(start["type"], "start", "first line: {start}");
        (running, start)
    }

    /// The process id of traffic (`ip netns exec` execs it in place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn next_line(&mut self, timeout: Duration) -> Value {
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
        let mut seen = 0;
        while seen < packets {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.lines.recv_timeout(left) {
                Ok(v) if v["type"] == "interval" => seen += v["packets"].as_u64().expect("packets"),
                Ok(v) => panic!("unexpected line before the summary: {v}"),
                Err(_) => break,
            }
        }
        seen
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
    /// status and stderr. Interval lines still unread are summed into the
    /// returned summary's `intervals_packets` field for checking.
    pub fn stop(mut self) -> (Value, std::process::ExitStatus, String) {
        signal(self.pid(), libc::SIGINT);
        let status = self.child.wait().expect("wait for traffic");
        let stderr = self.take_stderr();
        let mut summary = None;
        while let Ok(v) = self.lines.recv_timeout(Duration::from_secs(5)) {
            if v["type"] == "summary" {
                summary = Some(v);
            }
        }
        let summary = summary
            .unwrap_or_else(|| panic!("no summary line; status {status}; stderr:\n{stderr}"));
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
