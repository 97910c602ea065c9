//! traffic tried as a careless or hostile user would (issue 9): odd output
//! paths, odd rules files, a vanished interface, signals, full outputs. Each
//! test failed before its fix.

use std::{
    io::Read as _,
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use traffic::sink::{Counts, json::SummaryReport};
use traffic_tests::{
    Lab, Running, TempDir, eventually, fails, has_xdp, mkfifo, read_pcap, send, send_on_cpu,
    signal, spawn_attached, tcpdump_read, traffic_in,
};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn writing_to_dev_null_leaves_its_mode_alone() {
    let lab = Lab::create("devnull", 1).expect("create the lab");
    let before = mode(Path::new("/dev/null"));
    let (running, _) = Running::watch(
        &lab,
        &["--write", "/dev/null", "--capture", "203.0.113.0/24"],
    );
    send(&lab, &["--count", "100", "--src", "203.0.113.0/24"]);
    let (summary, status, stderr) = running.expect_packets(100).stop();
    assert!(status.success(), "{stderr}");
    assert_eq!(summary.counts.events, 100);
    assert_eq!(
        mode(Path::new("/dev/null")),
        before,
        "/dev/null keeps its mode"
    );
}

#[test]
fn a_full_output_is_reported_and_counting_goes_on() {
    // /dev/full fails every write with ENOSPC, as a full disk does.
    let lab = Lab::create("full", 1).expect("create the lab");
    let before = mode(Path::new("/dev/full"));
    let (running, _) = Running::watch(
        &lab,
        &["--write", "/dev/full", "--capture", "203.0.113.0/24"],
    );
    send(&lab, &["--count", "300", "--src", "203.0.113.0/24"]);
    send(&lab, &["--count", "200", "--src", "192.0.2.0/24"]);
    let (summary, status, stderr) = running.expect_packets(500).stop();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(
        (
            summary.counts.packets,
            summary.counts.capture,
            summary.counts.events
        ),
        (500, 300, 300),
        "counting went on after the output failed"
    );
    full_output_reported(&summary, &stderr, 300);
    assert_eq!(mode(Path::new("/dev/full")), before);
}

/// The summary names the one output that failed for want of space, with
/// the packets it took and missed adding up to `captured`, and stderr
/// says the run went on without it.
fn full_output_reported(summary: &SummaryReport, stderr: &str, captured: u64) {
    let [failed] = &summary.failed_outputs[..] else {
        panic!("{summary:?}")
    };
    assert!(
        failed.error.contains("No space left on device"),
        "{failed:?}"
    );
    assert_eq!(
        failed.packets_written + failed.packets_not_written,
        captured
    );
    assert!(stderr.contains("the run went on without it"), "{stderr}");
}

#[test]
fn fifos_need_a_reader_and_a_reader_that_leaves_is_reported() {
    let lab = Lab::create("fifo", 1).expect("create the lab");
    let dir = TempDir::new("fifo");
    let fifo = dir.0.join("capture.fifo");
    mkfifo(&fifo);
    let fifo_arg = fifo.to_str().unwrap().to_owned();

    // No reader: refused at once instead of blocking where Ctrl-C cannot
    // reach it.
    let started = Instant::now();
    let err = fails(&lab.rx_ns, &["--iface", &lab.rx_if, "--write", &fifo_arg]);
    assert!(err.contains("nobody is reading the FIFO"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!has_xdp(&lab.rx_ns, &lab.rx_if), "nothing was attached");

    // A reader that takes the pcap header and the first records, then
    // leaves.
    let mut reader = Command::new("head")
        .args(["-c", "200"])
        .arg(&fifo)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (running, _) = Running::watch(&lab, &["--write", &fifo_arg, "--capture", "203.0.113.0/24"]);
    for _ in 0..3 {
        send(&lab, &["--count", "200", "--src", "203.0.113.0/24"]);
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut head = Vec::new();
    reader
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut head)
        .unwrap();
    reader.wait().unwrap();
    assert_eq!(&head[..4], &0xa1b2_3c4du32.to_ne_bytes(), "a pcap header");
    let (summary, status, stderr) = running.expect_packets(600).stop();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(
        summary.counts.events, 600,
        "every capture was still counted"
    );
    let [failed] = &summary.failed_outputs[..] else {
        panic!("{summary:?}")
    };
    assert!(failed.error.contains("Broken pipe"), "{failed:?}");
    // The reader got the header and three whole records of 58 bytes; the
    // pipe may have taken more before it left. Every capture is one or
    // the other.
    assert!(failed.packets_written >= 3, "{failed:?}");
    assert_eq!(failed.packets_written + failed.packets_not_written, 600);
    assert_eq!(mode(&fifo), 0o600, "the FIFO keeps its mode");
}

#[test]
fn pcap_on_stdout_by_dash_or_by_any_path_to_it() {
    // `-w -`, `-w /dev/stdout` and `-w FILE > FILE` each put the capture on
    // stdout alone, the report on stderr. Before, the last two wrote the
    // report's lines into the capture, and tcpdump read none of it.
    let lab = Lab::create("dash", 1).expect("create the lab");
    let dir = TempDir::new("dash");
    let file = dir.0.join("stdout.pcap");
    let file_arg = file.to_str().unwrap().to_owned();
    let run = |target: &str, stdout: Stdio| {
        traffic_in(
            &lab.rx_ns,
            &[
                "--iface",
                &lab.rx_if,
                "-w",
                target,
                "--capture",
                "203.0.113.0/24",
                "--duration",
                "2",
            ],
        )
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let check = |target: &str, child: std::process::Child| {
        assert!(
            traffic_tests::eventually(Duration::from_secs(5), || has_xdp(&lab.rx_ns, &lab.rx_if)),
            "traffic did not attach ({target})"
        );
        send(&lab, &["--count", "50", "--src", "203.0.113.0/24"]);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{target}: {stderr}");
        assert!(
            stderr.contains("events 50 delivered"),
            "the report went to stderr ({target}): {stderr}"
        );
        out.stdout
    };
    for target in ["-", "/dev/stdout", file_arg.as_str()] {
        let child = run(target, std::fs::File::create(&file).unwrap().into());
        check(target, child);
        let (_, _, records) = read_pcap(&file);
        assert_eq!(records.len(), 50, "{target}");
        assert_eq!(tcpdump_read(&file).len(), 50, "{target}");
    }
    // A pipe, as in `traffic -w /dev/stdout | tcpdump -r -`.
    let piped = check("a pipe", run("/dev/stdout", Stdio::piped()));
    std::fs::write(&file, piped).unwrap();
    assert_eq!(tcpdump_read(&file).len(), 50, "through a pipe");
    // Packet lines or a plot there as well would garble it: refused.
    for extra in [
        &["-w", "/dev/stdout", "--print"][..],
        &["--plot", "/dev/stdout"],
    ] {
        let mut all = vec!["--iface", lab.rx_if.as_str()];
        all.extend_from_slice(extra);
        let err = fails(&lab.rx_ns, &all);
        assert!(err.contains("/dev/stdout is standard output"), "{err}");
    }
}

#[test]
fn an_output_that_is_an_input_is_refused_and_left_alone() {
    // `traffic -r cap.pcap -w cap.pcap` truncated the capture it was about
    // to read (a 16 MB file kept 1,000 frames), and `--rules r -w r` the
    // rules a reload reads again.
    let lab = Lab::create("same", 1).expect("create the lab");
    let dir = TempDir::new("same");
    let capture = dir.0.join("cap.pcap");
    let header = traffic_tests::pcap_header();
    std::fs::write(&capture, &header).unwrap();
    let link = dir.0.join("link.pcap");
    std::os::unix::fs::symlink(&capture, &link).unwrap();
    let rules = dir.0.join("rules.txt");
    std::fs::write(&rules, "drop 192.0.2.0/24\n").unwrap();
    let (cap, lnk, rul) = (
        capture.to_str().unwrap(),
        link.to_str().unwrap(),
        rules.to_str().unwrap(),
    );
    let iface = lab.rx_if.as_str();
    for args in [
        vec!["--read", cap, "-w", cap],
        vec!["--read", lnk, "-w", cap],
        vec!["--read", cap, "--plot", cap],
        vec!["--iface", iface, "--rules", rul, "-w", rul],
        vec!["--iface", iface, "--rules", rul, "--plot", rul],
    ] {
        let err = fails(&lab.rx_ns, &args);
        assert!(err.contains("which this run reads"), "{args:?}: {err}");
        assert_eq!(std::fs::read(&capture).unwrap(), header, "{args:?}");
        assert_eq!(
            std::fs::read_to_string(&rules).unwrap(),
            "drop 192.0.2.0/24\n",
            "{args:?}"
        );
    }
    // --plot over -w's file, by its name, another, or a link: the SVG
    // replaced the capture at the end of the run. Refused before either
    // file is made. /dev/null takes both.
    let out = dir.0.join("out.pcap");
    let out_link = dir.0.join("out-link.pcap");
    let (o, same_dir) = (
        out.to_str().unwrap(),
        format!("{}/./out.pcap", dir.0.display()),
    );
    for plot in [o, same_dir.as_str()] {
        let err = fails(&lab.rx_ns, &["--read", cap, "-w", o, "--plot", plot]);
        assert!(err.contains("is the file -w writes"), "{plot}: {err}");
        assert!(!out.exists(), "nothing was made for {plot}");
    }
    std::fs::write(&out, b"").unwrap();
    std::os::unix::fs::symlink(&out, &out_link).unwrap();
    let err = fails(
        &lab.rx_ns,
        &["--read", cap, "-w", o, "--plot", out_link.to_str().unwrap()],
    );
    assert!(err.contains("is the file -w writes"), "{err}");
    let ok = traffic_in(
        &lab.rx_ns,
        &["--read", cap, "-w", "/dev/null", "--plot", "/dev/null"],
    )
    .output()
    .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

#[test]
fn a_rules_file_of_zeros_is_refused_quickly() {
    let lab = Lab::create("zero", 1).expect("create the lab");
    let started = Instant::now();
    let err = fails(&lab.rx_ns, &["--iface", &lab.rx_if, "--rules", "/dev/zero"]);
    assert!(
        err.contains("/dev/zero:1: the line is longer than 4096 bytes"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_vanished_interface_ends_the_run_with_a_summary_and_status_2() {
    let lab = Lab::create("gone", 1).expect("create the lab");
    let (running, _) = Running::watch(&lab, &["--drop", "192.0.2.0/24"]);
    send(&lab, &["--count", "100", "--src", "192.0.2.0/24"]);
    let running = running.expect_packets(100);
    traffic::lab::ip(&["-n", &lab.rx_ns, "link", "del", &lab.rx_if]).unwrap();
    let (summary, status, stderr) = running.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("went away while traffic ran"), "{stderr}");
    let summary = summary.expect("the summary is printed");
    assert_eq!(summary.counts.drop, 100);
}

#[test]
fn sighup_and_sigxcpu_end_the_run_with_a_summary() {
    // SIGHUP without --rules: a terminal closing. SIGXCPU: the soft
    // CPU-time limit (`ulimit -t`, systemd's LimitCPU=), whose default
    // action ended the run with no summary before it was handled.
    for (tag, sig) in [("hup", libc::SIGHUP), ("xcpu", libc::SIGXCPU)] {
        let lab = Lab::create(tag, 1).expect("create the lab");
        let (running, _) = Running::watch(&lab, &["--drop", "192.0.2.0/24"]);
        send(&lab, &["--count", "50", "--src", "192.0.2.0/24"]);
        let running = running.expect_packets(50);
        traffic_tests::signal(running.pid(), sig);
        let (summary, status, stderr) = running.wait_exit(Duration::from_secs(10));
        assert!(status.success(), "{tag}: {stderr}");
        assert_eq!(summary.expect("a summary").counts.drop, 50, "{tag}");
    }
}

#[test]
fn sigusr1_says_the_counts_so_far_and_sigquit_ends_with_the_summary() {
    let lab = Lab::create("usr1", 1).expect("create the lab");
    let (running, _) = Running::watch(&lab, &["--drop", "192.0.2.0/24"]);
    send(&lab, &["--count", "50", "--src", "192.0.2.0/24"]);
    let running = running.expect_packets(50);
    // As tcpdump does: the counts so far on stderr, and the run goes on.
    traffic_tests::signal(running.pid(), libc::SIGUSR1);
    std::thread::sleep(Duration::from_millis(300));
    send(&lab, &["--count", "30", "--src", "192.0.2.0/24"]);
    let running = running.expect_packets(30);
    // A terminal's Ctrl-\ ends the run as Ctrl-C does, summary and all.
    traffic_tests::signal(running.pid(), libc::SIGQUIT);
    let (summary, status, stderr) = running.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{stderr}");
    assert_eq!(summary.expect("a summary").counts.drop, 80);
    let (_, status_block) = stderr
        .split_once("traffic: SIGUSR1: the counts so far; the run goes on\n")
        .unwrap_or_else(|| panic!("no status on stderr: {stderr}"));
    // The block the summary has, with the counts at the signal.
    let lines: Vec<&str> = status_block.lines().take(4).collect();
    assert!(lines[0].starts_with("--- "), "{status_block}");
    assert!(lines[1].starts_with("50 packets, "), "{status_block}");
    assert!(
        lines[2].starts_with("pass 0 (0 bytes), drop 50 ("),
        "{status_block}"
    );
}

/// The whole records of the pcap file at `path` as it is now, while it may
/// still be written.
fn whole_records(path: &Path) -> usize {
    let bytes = std::fs::read(path).unwrap_or_default();
    let mut at = 24;
    let mut n = 0;
    while let Some(header) = bytes.get(at..at + 16) {
        let incl = u32::from_ne_bytes(header[8..12].try_into().unwrap()) as usize;
        if at + 16 + incl > bytes.len() {
            break;
        }
        at += 16 + incl;
        n += 1;
    }
    n
}

#[test]
fn sigusr2_writes_the_capture_out_and_the_run_goes_on() {
    let lab = Lab::create("usr2", 1).expect("create the lab");
    let dir = TempDir::new("usr2");
    let path = dir.0.join("cap.pcap");
    let path_arg = path.to_str().unwrap().to_owned();
    let (running, _) = Running::watch(&lab, &["--write", &path_arg, "--capture", "203.0.113.0/24"]);
    // Written around the page cache (ext4 here), the file gets whole
    // direct-I/O blocks only: its last records wait in traffic's buffer
    // until the file ends (before, the file showed 34 of these 37)...
    send(&lab, &["--count", "37", "--src", "203.0.113.0/24"]);
    let running = running.expect_packets(37);
    // ...unless asked, as tcpdump is, to write out what it holds. Before,
    // SIGUSR2 ended the run with no summary, and the packets held were lost.
    traffic_tests::signal(running.pid(), libc::SIGUSR2);
    assert!(
        eventually(Duration::from_secs(5), || whole_records(&path) == 37),
        "the file holds {} whole records of 37",
        whole_records(&path)
    );
    // The run goes on, and the file is whole at its end.
    send(&lab, &["--count", "20", "--src", "203.0.113.0/24"]);
    let running = running.expect_packets(20);
    let (summary, status, stderr) = running.stop();
    assert!(status.success(), "{stderr}");
    assert_eq!(summary.counts.capture, 57);
    assert!(
        stderr.contains(
            "traffic: SIGUSR2: the outputs hold every packet read so far; the run goes on"
        ),
        "{stderr}"
    );
    let (_, _, records) = read_pcap(&path);
    assert_eq!(records.len(), 57);
}

#[test]
fn outputs_are_checked_before_anything_is_attached() {
    let lab = Lab::create("paths", 1).expect("create the lab");
    let dir = TempDir::new("paths");
    let dir_arg = dir.0.to_str().unwrap().to_owned();
    let missing = dir.0.join("no-such-dir/run.svg");
    let missing_arg = missing.to_str().unwrap().to_owned();
    for args in [
        vec!["--plot", dir_arg.as_str()],
        vec!["--plot", missing_arg.as_str()],
        vec!["--write", dir_arg.as_str()],
    ] {
        let mut all = vec!["--iface", lab.rx_if.as_str()];
        all.extend(args.iter().copied());
        let err = fails(&lab.rx_ns, &all);
        assert!(
            err.contains("a directory") || err.contains("No such file or directory"),
            "{args:?}: {err}"
        );
        assert!(!has_xdp(&lab.rx_ns, &lab.rx_if));
    }
}

#[test]
fn odd_numbers_get_traffics_own_messages() {
    let lab = Lab::create("msgs", 1).expect("create the lab");
    let err = fails(
        &lab.rx_ns,
        &[
            "--iface",
            &lab.rx_if,
            "--interval",
            "-1",
            "--duration",
            "1e30",
        ],
    );
    assert!(
        err.contains("--interval must be a positive number of seconds below 1000000000 (about 31 years), not -1")
            && err.contains("--duration must be a positive number of seconds below 1000000000 (about 31 years), not 1000000000000000000000000000000")
            && !err.contains("is below"),
        "{err}"
    );
    // An interval of a nanosecond wrote a report line per turn of the
    // loop: twenty thousand in 0.3 s.
    let err = fails(&lab.rx_ns, &["--iface", &lab.rx_if, "--interval", "1e-9"]);
    assert!(
        err.contains("--interval 0.000000001 is below 0.001 s"),
        "{err}"
    );
    let err = fails(
        &lab.rx_ns,
        &[
            "--iface",
            &lab.rx_if,
            "--afxdp",
            "--afxdp-ring",
            "2147483648",
        ],
    );
    assert!(
        err.contains("--afxdp-ring 2147483648") && err.contains("lower it"),
        "{err}"
    );
    // A mistyped --max-rules must not take the machine's memory.
    let err = fails(
        &lab.rx_ns,
        &["--iface", &lab.rx_if, "--max-rules", "200000000"],
    );
    assert!(
        err.contains("--max-rules 200000000: at most 16777216"),
        "{err}"
    );
    assert!(!has_xdp(&lab.rx_ns, &lab.rx_if), "nothing was attached");
}

#[test]
fn a_full_stdout_is_named_as_stdout() {
    let lab = Lab::create("stdout", 1).expect("create the lab");
    let out = traffic_in(
        &lab.rx_ns,
        &["--iface", &lab.rx_if, "--json", "--duration", "0.5"],
    )
    .stdout(
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap(),
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("writing stdout failed: No space left on device"),
        "{stderr}"
    );
}

#[test]
fn a_reader_that_leaves_stdout_ends_the_run_unless_another_output_works() {
    let lab = Lab::create("leaves", 1).expect("create the lab");
    let dir = TempDir::new("leaves");
    let pcap = dir.0.join("kept.pcap");
    // `traffic --json | head -1`: once the reader is gone, nothing is
    // left to write to, and the run ends as any command in a pipeline
    // does, quietly, the program detached.
    let mut child = spawn_attached(&lab, &["--json", "--interval", "0.2", "--duration", "30"]);
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(first.contains("\"type\":\"start\""), "{first}");
    // The reader dropped its end: the next interval line finds it gone.
    assert!(
        eventually(Duration::from_secs(5), || child
            .try_wait()
            .unwrap()
            .is_some()),
        "the run went on with no reader"
    );
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!has_xdp(&lab.rx_ns, &lab.rx_if), "detached");

    // With a file to write as well, the run goes on for the file.
    let mut child = spawn_attached(
        &lab,
        &[
            "--json",
            "--interval",
            "0.2",
            "--capture",
            "203.0.113.0/24",
            "-w",
            pcap.to_str().unwrap(),
        ],
    );
    drop(child.stdout.take());
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        child.try_wait().unwrap().is_none(),
        "stopped with a file still written"
    );
    send(&lab, &["--count", "100", "--src", "203.0.113.0/24"]);
    std::thread::sleep(Duration::from_millis(500));
    signal(child.id(), libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "a closed stdout is not a failure: {stderr}"
    );
    assert_eq!(read_pcap(&pcap).2.len(), 100);
}

#[test]
fn a_full_stderr_leaves_the_report_and_its_exit_status_alone() {
    let lab = Lab::create("stderr", 1).expect("create the lab");
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    // Before, writing a note there panicked (exit 101) or took the table
    // on stdout down with it (exit 1, nothing on stdout).
    for format in [&[][..], &["--json"][..]] {
        let out = traffic_in(
            &lab.rx_ns,
            &[
                &["--iface", lab.rx_if.as_str(), "--duration", "0.5"],
                format,
            ]
            .concat(),
        )
        .stderr(full())
        .output()
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{format:?}: {stdout}");
        assert!(
            stdout.contains("0 packets, 0 bytes") || stdout.contains("\"type\":\"summary\""),
            "{format:?}: {stdout}"
        );
    }
    // A failure still exits with its status, its message lost.
    let out = traffic_in(&lab.rx_ns, &["--iface", "no-such-iface0"])
        .stderr(full())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// The pcap files in `dir`, by name, with their record counts (read back
/// with the independent reader, and each one by tcpdump too).
fn pcap_files(dir: &Path) -> Vec<(String, usize)> {
    let mut files: Vec<(String, usize)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let n = read_pcap(&p).2.len();
            assert_eq!(tcpdump_read(&p).len(), n, "{}", p.display());
            (p.file_name().unwrap().to_string_lossy().into_owned(), n)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn dash_c_rotates_by_size_with_tcpdumps_names_and_dash_w_reuses_them() {
    let lab = Lab::create("rotc", 1).expect("create the lab");
    let dir = TempDir::new("rotc");
    // Files created after -Z are the user's: the directory lets it write.
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    let base = dir.0.join("cap.pcap");
    let base_arg = base.to_str().unwrap().to_owned();
    let (running, _) = Running::watch(
        &lab,
        &[
            "-w",
            &base_arg,
            "-C",
            "4k",
            "-Z",
            "nobody",
            "--capture",
            "203.0.113.0/24",
        ],
    );
    // 100-byte payloads: 158-byte records (128 captured), 25 a file.
    send(
        &lab,
        &[
            "--count",
            "200",
            "--src",
            "203.0.113.0/24",
            "--payload",
            "100",
        ],
    );
    let (summary, status, stderr) = running.expect_packets(200).stop();
    assert!(status.success(), "{stderr}");
    assert_eq!(summary.counts.events, 200);
    let files = pcap_files(&dir.0);
    assert_eq!(files.iter().map(|f| f.1).sum::<usize>(), 200, "{files:?}");
    assert!(files.len() >= 7, "{files:?}");
    assert_eq!(files[0].0, "cap.pcap");
    assert!(files.iter().any(|f| f.0 == "cap.pcap1") && files.iter().any(|f| f.0 == "cap.pcap6"));
    for name in files.iter().map(|f| &f.0).filter(|n| *n != "cap.pcap") {
        let meta = std::fs::metadata(dir.0.join(name)).unwrap();
        assert_eq!(
            (
                std::os::unix::fs::MetadataExt::uid(&meta),
                mode(&dir.0.join(name))
            ),
            (65534, 0o600),
            "{name} was made by the user, private"
        );
    }

    // -W 3: three names in turn.
    let dir = TempDir::new("rotw");
    let base = dir.0.join("ring.pcap");
    let base_arg = base.to_str().unwrap().to_owned();
    let (running, _) = Running::watch(
        &lab,
        &[
            "-w",
            &base_arg,
            "-C",
            "4k",
            "-W",
            "3",
            "--capture",
            "203.0.113.0/24",
        ],
    );
    send(
        &lab,
        &[
            "--count",
            "200",
            "--src",
            "203.0.113.0/24",
            "--payload",
            "100",
        ],
    );
    let (_, status, stderr) = running.expect_packets(200).stop();
    assert!(status.success(), "{stderr}");
    let names: Vec<String> = pcap_files(&dir.0).into_iter().map(|f| f.0).collect();
    assert_eq!(names, ["ring.pcap0", "ring.pcap1", "ring.pcap2"]);
}

#[test]
fn dash_g_with_dash_w_stops_after_that_many_files() {
    let lab = Lab::create("rotg", 1).expect("create the lab");
    let dir = TempDir::new("rotg");
    let base = dir.0.join("cap-%H%M%S.pcap");
    let base_arg = base.to_str().unwrap().to_owned();
    let (running, _) = Running::watch(
        &lab,
        &[
            "-w",
            &base_arg,
            "-G",
            "1",
            "-W",
            "2",
            "--capture",
            "203.0.113.0/24",
        ],
    );
    // Packets for about three seconds: the second file ends the run.
    for _ in 0..15 {
        send(&lab, &["--count", "10", "--src", "203.0.113.0/24"]);
        std::thread::sleep(Duration::from_millis(200));
    }
    let (summary, status, stderr) = running.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{stderr}");
    assert!(summary.is_some(), "a summary");
    let files = pcap_files(&dir.0);
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(
        files
            .iter()
            .all(|f| f.0.starts_with("cap-") && f.0.ends_with(".pcap") && f.1 > 0)
    );
}

/// Sends `count` frames from 203.0.113.0/24 while traffic is stopped
/// (SIGSTOP), so that whatever it reads from overflows, then lets it go on.
fn send_while_stopped(lab: &Lab, running: &Running, count: u64) {
    let pid = running.pid() as i32;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    send(
        lab,
        &["--count", &count.to_string(), "--src", "203.0.113.0/24"],
    );
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
}

/// Stops `running` once it has counted `sent` packets and checks that each
/// was delivered or counted lost and that the run exits with status 1;
/// returns the counts and what it said on stderr.
fn stop_with_losses(running: Running, sent: u64) -> (Counts, String) {
    let (summary, status, stderr) = running.expect_packets(sent).stop();
    let c = summary.counts;
    assert_eq!(c.events + c.events_lost, sent, "{c:?}");
    assert_eq!(status.code(), Some(1), "{stderr}");
    (c, stderr)
}

#[test]
fn lost_events_are_named_by_their_ring_and_flag() {
    // A 4 KiB ring holds about forty events: two thousand sent while the
    // reader is stopped overflow it.
    let lab = Lab::create("lossmsg", 1).expect("create the lab");
    let (running, _) = Running::watch(
        &lab,
        &["--capture", "203.0.113.0/24", "--ring-size", "4096"],
    );
    send_while_stopped(&lab, &running, 2000);
    let (c, stderr) = stop_with_losses(running, 2000);
    assert!(c.events_lost > 0, "{c:?}");
    assert!(
        stderr.contains(&format!(
            "{} capture events were lost because the event ring buffer was full",
            c.events_lost
        )) && stderr.contains("--ring-size")
            && !stderr.contains("--afxdp-ring")
            && !stderr.contains("AF_XDP"),
        "{stderr}"
    );
}

#[test]
fn lost_afxdp_frames_are_named_by_their_socket_and_flag() {
    // A 64-entry RX ring and 128 frames per socket: two thousand frames
    // sent while the reader is stopped overflow them.
    let lab = Lab::create("xsklossmsg", 1).expect("create the lab");
    let (running, _) = Running::watch(
        &lab,
        &[
            "--capture",
            "203.0.113.0/24",
            "--afxdp",
            "--afxdp-ring",
            "64",
        ],
    );
    send_while_stopped(&lab, &running, 2000);
    let (c, stderr) = stop_with_losses(running, 2000);
    assert!(c.events_lost > 0, "{c:?}");
    assert!(
        stderr.contains(&format!(
            "{} frames were dropped by the AF_XDP sockets",
            c.events_lost
        )) && stderr.contains("--afxdp-ring")
            && !stderr.contains("--ring-size"),
        "{stderr}"
    );
}

#[test]
fn frames_on_a_queue_without_a_socket_are_named_with_their_flag() {
    // Two receive queues, a socket on the first only (`--queues 1`):
    // frames that veth puts on the second are passed uncaptured, counted.
    // AF_PACKET picks the transmit queue (and so veth the receive queue) by
    // the sending CPU: send from each of two CPUs.
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    assert!(cpus >= 2, "this test needs two CPUs to reach two queues");
    let lab = Lab::create("xskunbound", 2).expect("create the lab");
    let (running, _) = Running::watch(
        &lab,
        &["--capture", "203.0.113.0/24", "--afxdp", "--queues", "1"],
    );
    for cpu in 0..2 {
        send_on_cpu(&lab, cpu, &["--count", "500", "--src", "203.0.113.0/24"]);
    }
    let (c, stderr) = stop_with_losses(running, 1000);
    assert!(c.xsk_unbound > 0, "{c:?}");
    assert!(
        stderr.contains(&format!(
            "{} frames arrived on a receive queue with no AF_XDP socket",
            c.xsk_unbound
        )) && stderr.contains("--queues")
            && !stderr.contains("--ring-size"),
        "{stderr}"
    );
}

#[test]
fn a_file_system_that_fills_up_under_direct_writes_is_reported() {
    // /dev/full is a device, written plainly; a regular file is written
    // around the page cache (O_DIRECT) by a thread of its own, whose
    // failure must reach the summary just the same. A small ext4 file
    // system, mounted in a mount namespace of the run's own (it goes away
    // with the run), fills up partway through a recorded capture.
    let dir = TempDir::new("fullfs");
    let image = dir.0.join("fs.img");
    let mnt = dir.0.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    std::fs::File::create(&image)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&image)
        .status()
        .expect("mkfs.ext4 (e2fsprogs)");
    assert!(mkfs.success());
    // 20,000 frames of 542 bytes: 11 MB of pcap for a 6 MB file system.
    let input = frames_of_542_bytes(&dir.0);
    let out = mnt.join("out.pcap");
    let script = format!(
        "mount -o loop {} {} && {} --read {} --capture 203.0.113.0/24 --snaplen 1500 --json -w {out}; rc=$?; echo \"file records written: $(tcpdump -r {out} 2>/dev/null | wc -l)\" >&2; exit $rc",
        image.display(),
        mnt.display(),
        traffic_tests::traffic_bin().display(),
        input.display(),
        out = out.display()
    );
    let mut unshare = Command::new("unshare");
    unshare.args(["-m", "sh", "-c", &script]);
    let (summary, stderr) = failed_run(unshare, "ext4");
    assert_eq!(
        (summary.counts.packets, summary.counts.events),
        (20_000, 20_000),
        "counting went on after the output failed"
    );
    full_output_reported(&summary, &stderr, 20_000);
    assert!(
        summary.failed_outputs[0].packets_not_written > 0,
        "the file system filled partway: {summary:?}"
    );
    // The records the full file holds, counted by tcpdump in the run's
    // mount namespace: what the summary says was written.
    let counted: u64 = stderr
        .split("file records written: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(counted, summary.failed_outputs[0].packets_written);
}

/// A recorded capture of 20,000 frames of 542 bytes from 203.0.113.0/24
/// (11 MB of pcap), in `dir`.
fn frames_of_542_bytes(dir: &std::path::Path) -> std::path::PathBuf {
    let input = dir.join("in.pcap");
    let mut w = traffic::sink::pcap::PcapWriter::create(&input, 4096).unwrap();
    for i in 0..20_000u32 {
        let src = std::net::Ipv4Addr::new(203, 0, 113, (i % 250) as u8 + 1);
        let mut spec =
            traffic::lab::frame::FrameSpec::udp(src.into(), "198.51.100.1".parse().unwrap());
        spec.payload_len = 500;
        w.write(Duration::from_millis(u64::from(i)), 542, &spec.build(), 0)
            .unwrap();
    }
    w.flush().unwrap();
    input
}

#[test]
fn a_file_size_limit_is_a_failed_output_not_a_killed_run() {
    // `ulimit -f` sends SIGXFSZ to a process that writes past it, which
    // would end the run on the spot, without its summary. Through the page
    // cache and around it, the write fails instead and the run goes on.
    let dir = TempDir::new("fsize");
    let input = frames_of_542_bytes(&dir.0);
    // Through the page cache, then around it (the default).
    for (name, mode) in [("cached", "--page-cache"), ("direct", "")] {
        let out = dir.0.join(format!("{name}.pcap"));
        let script = format!(
            "ulimit -f 2048 && exec {} --read {} --capture 203.0.113.0/24 --snaplen 1500 --json {mode} -w {}",
            traffic_tests::traffic_bin().display(),
            input.display(),
            out.display()
        );
        let mut sh = Command::new("sh");
        sh.args(["-c", &script]);
        let (summary, _) = failed_run(sh, name);
        assert_eq!(summary.counts.events, 20_000, "{mode}");
        let [failed] = &summary.failed_outputs[..] else {
            panic!("{mode}: {summary:?}")
        };
        assert!(
            failed.error.contains("File too large"),
            "{mode}: {failed:?}"
        );
        assert_eq!(
            failed.packets_written + failed.packets_not_written,
            20_000,
            "{mode}"
        );
        assert!(
            std::fs::metadata(&out).unwrap().len() <= 2048 * 1024,
            "{mode}"
        );
        // What the summary says was written is what the file holds, whole:
        // it was cut after the last whole record, not in one.
        let (_, _, records) = traffic_tests::read_pcap(&out);
        assert!(!records.is_empty(), "{mode}");
        assert_eq!(records.len() as u64, failed.packets_written, "{mode}");
    }
}

/// Runs `cmd` (a `traffic --json` run whose output fails), expecting exit
/// status 1; its JSON summary and stderr.
fn failed_run(mut cmd: Command, what: &str) -> (SummaryReport, String) {
    let run = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert_eq!(run.status.code(), Some(1), "{what}: {stderr}");
    let summary = stdout
        .lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .filter(|v| v["type"] == "summary")
        })
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_else(|| panic!("{what}: a summary: {stdout}"));
    (summary, stderr)
}
