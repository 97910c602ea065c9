//! Least privilege (issue 9): `-Z USER` gives up root once everything is
//! open, and a non-root user with the capabilities the README lists runs
//! traffic, or is told which one is missing.

use std::{process::Command, time::Duration};

use traffic_tests::{Lab, Running, TempDir, has_xdp, read_pcap, send};

/// `Uid:` and `CapEff:` of a process, from /proc.
fn identity(pid: u32) -> (String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .to_owned()
    };
    (field("Uid:"), field("CapEff:"))
}

#[test]
fn dash_z_runs_as_the_user_with_no_capabilities_and_still_captures() {
    for afxdp in [false, true] {
        let lab = Lab::create("user", 1).expect("create the lab");
        let dir = TempDir::new(if afxdp { "user-xsk" } else { "user-ring" });
        let file = dir.0.join("out.pcap");
        let file_arg = file.to_str().unwrap().to_owned();
        let mut args = vec![
            "-Z",
            "nobody",
            "--capture",
            "203.0.113.0/24",
            "--write",
            &file_arg,
        ];
        if afxdp {
            args.push("--afxdp");
        }
        let (running, _) = Running::watch(&lab, &args);
        let (uid, caps) = identity(running.pid());
        assert_eq!(uid.split_whitespace().collect::<Vec<_>>(), ["65534"; 4]);
        assert_eq!(caps, "0000000000000000", "every capability is gone");
        send(&lab, &["--count", "200", "--src", "203.0.113.0/24"]);
        let (summary, status, stderr) = running.expect_packets(200).stop();
        assert!(status.success(), "{stderr}");
        assert!(stderr.contains("running as nobody"), "{stderr}");
        assert_eq!(
            (summary.counts.events, summary.counts.events_lost),
            (200, 0),
            "afxdp {afxdp}"
        );
        assert_eq!(read_pcap(&file).2.len(), 200);
        assert!(
            traffic_tests::eventually(Duration::from_secs(5), || !has_xdp(&lab.rx_ns, &lab.rx_if)),
            "the program went away with the process"
        );
    }
}

/// `traffic ARGS` in the lab's receiving namespace as uid 65534 with
/// `caps` (ambient), under a locked-memory limit of `memlock` bytes.
fn as_nobody(lab: &Lab, caps: &str, memlock: Option<u64>, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.rx_ns]);
    let limit;
    if let Some(bytes) = memlock {
        limit = format!("--memlock={bytes}:{bytes}");
        cmd.args(["prlimit", &limit]);
    }
    let inh = format!("--inh-caps={caps}");
    let amb = format!("--ambient-caps={caps}");
    cmd.args([
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        &inh,
        &amb,
    ])
    .arg(traffic_tests::traffic_bin())
    .args(["--iface", &lab.rx_if, "--duration", "0.5"])
    .args(args);
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_user_with_the_listed_capabilities_runs_it_or_is_told_what_is_missing() {
    let lab = Lab::create("caps", 1).expect("create the lab");
    let base = "+bpf,+perfmon,+net_admin";
    let (code, stderr) = as_nobody(&lab, base, None, &[]);
    assert_eq!(code, Some(0), "{stderr}");

    let (code, stderr) = as_nobody(&lab, "+bpf,+perfmon", None, &[]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("missing CAP_NET_ADMIN"), "{stderr}");

    let (code, stderr) = as_nobody(&lab, base, None, &["--afxdp"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("missing CAP_NET_RAW"), "{stderr}");

    // AF_XDP's memory is locked memory: over the limit, the message says
    // so instead of `No buffer space available`.
    let with_raw = format!("{base},+net_raw");
    let (code, stderr) = as_nobody(&lab, &with_raw, Some(64 * 1024), &["--afxdp"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("RLIMIT_MEMLOCK, 64 KiB") && stderr.contains("CAP_IPC_LOCK"),
        "{stderr}"
    );
    // With CAP_IPC_LOCK the UMEM is not charged to the limit: it runs.
    let (code, stderr) = as_nobody(&lab, &format!("{with_raw},+ipc_lock"), None, &["--afxdp"]);
    assert_eq!(code, Some(0), "{stderr}");
}

/// Issue 11: rules read again after `-Z` has given up every capability:
/// the tables are written through maps opened before, which needs none.
#[test]
fn rules_reload_after_dash_z() {
    let lab = Lab::create("userhup", 1).expect("create the lab");
    let dir = TempDir::new("userhup");
    let rules = dir.0.join("rules.txt");
    std::fs::write(&rules, "drop 192.0.2.0/24\n").unwrap();
    let (mut running, _) =
        Running::watch(&lab, &["-Z", "nobody", "--rules", rules.to_str().unwrap()]);
    send(&lab, &["--count", "100", "--src", "192.0.2.0/24"]);
    running = running.expect_packets(100);
    std::fs::write(&rules, "pass 192.0.2.0/24\n").unwrap();
    traffic_tests::signal(running.pid(), libc::SIGHUP);
    let r = running.next_reload(Duration::from_secs(10));
    assert!(r.ok, "{:?}", r.errors);
    send(&lab, &["--count", "50", "--src", "192.0.2.0/24"]);
    let (summary, status, stderr) = running.expect_packets(50).stop();
    assert!(status.success(), "{stderr}");
    assert_eq!((summary.counts.drop, summary.counts.pass), (100, 50));
}
