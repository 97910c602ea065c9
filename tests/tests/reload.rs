//! Rules read again while traffic runs (issue 11): SIGHUP and
//! `--watch-rules` swap the whole rule set at once, counters go on, and a
//! bad file is refused with its line while the old rules stay.

use std::{path::Path, time::Duration};

use traffic_tests::{Lab, Running, TempDir, send, signal};

/// Writes `text` to `path` the way configuration tools do: a temporary file
/// renamed into place, so traffic never reads half a file.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

const DROP: &str = "# the set that drops\ndrop 192.0.2.0/24\npass 198.51.100.0/24\n";
const PASS: &str = "# the set that passes\npass 192.0.2.0/24\ndrop 198.51.100.0/24\n";

#[test]
fn fifty_reloads_under_a_steady_stream_count_every_packet_once() {
    let lab = Lab::create("reload", 1).expect("create the lab (needs root)");
    let dir = TempDir::new("reload");
    let rules = dir.0.join("rules.txt");
    replace(&rules, DROP);
    let rules_arg = rules.to_str().unwrap();
    let (mut running, start) = Running::watch(&lab, &["--rules", rules_arg]);
    assert_eq!(start.rules_v4, 2);
    let count: u64 = 60_000;
    let sender = std::thread::scope(|s| {
        let sender = s.spawn(|| {
            send(
                &lab,
                &[
                    "--src",
                    "192.0.2.0/24",
                    "--count",
                    &count.to_string(),
                    "--rate",
                    "20000",
                ],
            )
        });
        for i in 0..50 {
            replace(&rules, if i % 2 == 0 { PASS } else { DROP });
            signal(running.pid(), libc::SIGHUP);
            let r = running.next_reload(Duration::from_secs(10));
            assert!(r.ok, "reload {i} refused: {:?}", r.errors);
            assert_eq!(r.trigger, "SIGHUP");
            assert_eq!((r.rules_v4, r.rules_v6), (2, 0));
            // Both prefixes change action each time.
            assert_eq!((r.change.changed, r.change.kept), (2, 0), "{r:?}");
        }
        sender.join().unwrap()
    });
    assert_eq!(sender.sent, count);
    let (summary, status, stderr) = running.expect_packets(count).stop();
    assert!(status.success(), "{stderr}");
    let c = summary.counts;
    assert_eq!(c.packets, count, "every packet seen once");
    assert_eq!(c.drop + c.pass, count, "each counted under one set: {c:?}");
    assert!(
        c.drop > 0 && c.pass > 0,
        "the stream was classified by both sets: {c:?}"
    );
    assert_eq!(c.capture, 0);
    // Per-rule counts survive the swaps: the prefix counted under each of
    // its actions, the two adding up to every packet, each to its action.
    let row = |action: &str| {
        summary
            .rules
            .iter()
            .find(|r| r.rule == "192.0.2.0/24" && r.action.as_str() == action)
            .map_or(0, |r| r.packets)
    };
    assert_eq!(
        (row("drop"), row("pass")),
        (c.drop, c.pass),
        "{:?}",
        summary.rules
    );
    assert_eq!(summary.rules.len(), 2, "{:?}", summary.rules);
}

#[test]
fn a_bad_file_is_refused_with_its_line_and_the_old_rules_stay() {
    let lab = Lab::create("badreload", 1).expect("create the lab (needs root)");
    let dir = TempDir::new("badreload");
    let rules = dir.0.join("rules.txt");
    replace(&rules, DROP);
    let (mut running, _) = Running::watch(&lab, &["--rules", rules.to_str().unwrap()]);
    replace(
        &rules,
        "pass 192.0.2.0/24\ndrop 192.0.2.300/24\nblock 203.0.113.0/24\n",
    );
    signal(running.pid(), libc::SIGHUP);
    let r = running.next_reload(Duration::from_secs(10));
    assert!(!r.ok);
    assert_eq!(r.rules_v4, 2, "the old rules are still counted in force");
    assert_eq!(r.errors.len(), 2, "{:?}", r.errors);
    assert!(
        r.errors[0].contains("rules.txt:2: bad prefix `192.0.2.300/24`"),
        "{:?}",
        r.errors
    );
    assert!(
        r.errors[1].contains("rules.txt:3: unknown action `block`"),
        "{:?}",
        r.errors
    );
    // A file that vanished is refused too, naming it.
    std::fs::remove_file(&rules).unwrap();
    signal(running.pid(), libc::SIGHUP);
    let gone = running.next_reload(Duration::from_secs(10));
    assert!(!gone.ok);
    assert!(gone.errors[0].contains("No such file"), "{:?}", gone.errors);
    // The old rules still drop.
    send(&lab, &["--src", "192.0.2.0/24", "--count", "500"]);
    let (summary, status, stderr) = running.expect_packets(500).stop();
    assert!(status.success(), "{stderr}");
    assert_eq!(summary.counts.drop, 500);
}

#[test]
fn watch_rules_reloads_when_the_file_is_replaced() {
    let lab = Lab::create("watchrules", 1).expect("create the lab (needs root)");
    let dir = TempDir::new("watchrules");
    let rules = dir.0.join("rules.txt");
    replace(&rules, DROP);
    let (mut running, _) =
        Running::watch(&lab, &["--rules", rules.to_str().unwrap(), "--watch-rules"]);
    send(&lab, &["--src", "192.0.2.0/24", "--count", "300"]);
    running = running.expect_packets(300);
    replace(&rules, &format!("{PASS}capture 2001:db8:c::/48\n"));
    let r = running.next_reload(Duration::from_secs(10));
    assert!(r.ok, "{:?}", r.errors);
    assert_eq!(r.trigger, "file changed");
    assert_eq!((r.rules_v4, r.rules_v6), (2, 1));
    assert_eq!((r.change.changed, r.change.added), (2, 1));
    send(&lab, &["--src", "192.0.2.0/24", "--count", "200"]);
    let (summary, status, stderr) = running.expect_packets(200).stop();
    assert!(status.success(), "{stderr}");
    assert_eq!((summary.counts.drop, summary.counts.pass), (300, 200));
}

#[test]
fn sighup_without_rules_files_ends_the_run_with_the_summary() {
    let lab = Lab::create("hupstop", 1).expect("create the lab (needs root)");
    let (running, _) = Running::watch(&lab, &["--drop", "192.0.2.0/24"]);
    signal(running.pid(), libc::SIGHUP);
    let (summary, status, stderr) = running.wait_exit(Duration::from_secs(10));
    assert!(summary.is_some(), "{stderr}");
    assert!(status.success(), "{stderr}");
}

#[test]
fn a_reload_larger_than_the_table_is_refused_and_names_the_flag() {
    let lab = Lab::create("bigreload", 1).expect("create the lab (needs root)");
    let dir = TempDir::new("bigreload");
    let rules = dir.0.join("rules.txt");
    // 20,000 /32s spread over 240.0.0.0/4 (table entries only): far more
    // blocks than 1 MiB holds, and more rules than the per-rule counters a
    // first set of two gets (4,096).
    let mut text = String::from(PASS);
    for i in 0..20_000u32 {
        let a = 0xf000_0000 | (i.wrapping_mul(2_654_435_761) & 0x0fff_ffff);
        text.push_str(&format!("drop {}\n", std::net::Ipv4Addr::from_bits(a)));
    }
    for (limit, flag) in [
        (
            &["--rule-table-mib", "1", "--max-rules", "30000"][..],
            "--rule-table-mib",
        ),
        (&[][..], "--max-rules"),
    ] {
        replace(&rules, DROP);
        let args = [&["--rules", rules.to_str().unwrap()][..], limit].concat();
        let (mut running, _) = Running::watch(&lab, &args);
        replace(&rules, &text);
        signal(running.pid(), libc::SIGHUP);
        let r = running.next_reload(Duration::from_secs(20));
        assert!(!r.ok);
        assert_eq!(r.rules_v4, 2, "the old rules stay in force");
        assert!(
            r.errors[0].contains(flag),
            "the message names {flag}: {:?}",
            r.errors
        );
        send(&lab, &["--src", "192.0.2.0/24", "--count", "100"]);
        let (summary, status, stderr) = running.expect_packets(100).stop();
        assert!(status.success(), "{stderr}");
        assert_eq!(summary.counts.drop, 100);
    }
}

/// How Kubernetes updates a mounted ConfigMap: the file is a link through
/// `..data`, a link to a directory, swapped by a rename.
#[test]
fn watch_rules_follows_a_configmap_style_link_swap() {
    use std::os::unix::fs::symlink;
    let lab = Lab::create("linkswap", 1).expect("create the lab (needs root)");
    let dir = TempDir::new("linkswap");
    let first = dir.0.join("..2026_11_28_1");
    std::fs::create_dir(&first).unwrap();
    std::fs::write(first.join("rules.txt"), DROP).unwrap();
    symlink(&first, dir.0.join("..data")).unwrap();
    let rules = dir.0.join("rules.txt");
    symlink("..data/rules.txt", &rules).unwrap();
    let (mut running, _) =
        Running::watch(&lab, &["--rules", rules.to_str().unwrap(), "--watch-rules"]);
    let second = dir.0.join("..2026_11_28_2");
    std::fs::create_dir(&second).unwrap();
    std::fs::write(second.join("rules.txt"), PASS).unwrap();
    symlink(&second, dir.0.join("..data_tmp")).unwrap();
    std::fs::rename(dir.0.join("..data_tmp"), dir.0.join("..data")).unwrap();
    let r = running.next_reload(Duration::from_secs(10));
    assert!(r.ok, "{:?}", r.errors);
    assert_eq!(r.trigger, "file changed");
    assert_eq!(r.change.changed, 2);
    send(&lab, &["--src", "192.0.2.0/24", "--count", "100"]);
    let (summary, status, stderr) = running.expect_packets(100).stop();
    assert!(status.success(), "{stderr}");
    assert_eq!(summary.counts.pass, 100);
}
