//! Whole-packet capture through AF_XDP on the veth lab (copy mode: veth has
//! no zero-copy support).

use std::collections::HashMap;

use traffic::source::afxdp::XskMode;
use traffic_tests::{
    Lab, Running, TempDir, expected_frames, fails, gen_options, read_pcap, send, send_on_cpu,
    send_opts, tcpdump_read,
};

#[test]
fn whole_packets_up_to_the_mtu_reach_the_pcap_byte_for_byte() {
    let lab = Lab::create("xsk", 1).expect("create the lab");
    let dir = TempDir::new("xsk");
    let file = dir.0.join("whole.pcap");
    let file_arg = file.to_str().unwrap().to_owned();
    let (running, start) = Running::watch(
        &lab,
        &[
            "--afxdp",
            "--write",
            &file_arg,
            "--capture",
            "203.0.113.0/24",
            "--capture",
            "2001:db8:c::/48",
        ],
    );
    let afxdp = start.afxdp.as_ref().expect("an afxdp start object");
    assert_eq!(afxdp.mode, XskMode::Copy, "{start:?}");
    assert!(
        afxdp.zerocopy_refused.is_some(),
        "auto says why it fell back: {start:?}"
    );
    assert_eq!(afxdp.queues, 1);

    // UDP payloads up to a 1514-byte frame: the veth's 1500-byte MTU.
    let mut sent = Vec::new();
    for (source, payload) in [
        ("203.0.113.0/24", 0),
        ("203.0.113.0/24", 100),
        ("2001:db8:c::/64", 500),
        ("203.0.113.0/24", 1000),
        ("203.0.113.0/24", 1472),
        ("2001:db8:c::/64", 1452),
    ] {
        let opts = gen_options(&[source], 200, payload);
        send_opts(&lab, &opts);
        sent.extend(expected_frames(&opts));
    }
    // Not captured: passed to the stack as usual.
    send(&lab, &["--count", "300", "--src", "192.0.2.0/24"]);
    let (summary, status, stderr) = running.expect_packets(1500).stop();
    assert!(status.success(), "{stderr}");
    let c = &summary.counts;
    assert_eq!((c.capture, c.pass), (1200, 300));
    assert_eq!((c.events, c.events_lost), (1200, 0), "{summary:?}");
    assert_eq!(c.xsk_redirected, 1200);
    assert_eq!(summary.afxdp_queues.as_ref().unwrap()[0].delivered, 1200);
    assert_eq!(
        summary.latency_ns.count, 1200,
        "timestamps came through the metadata"
    );

    let (snaplen, _, records) = read_pcap(&file);
    assert_eq!(snaplen, 4096);
    assert_eq!(records.len(), 1200);
    assert_eq!(tcpdump_read(&file).len(), 1200);
    let mut want: HashMap<Vec<u8>, usize> = HashMap::new();
    for f in sent {
        *want.entry(f).or_default() += 1;
    }
    for r in &records {
        assert_eq!(r.orig_len as usize, r.data.len(), "whole packets");
        let left = want
            .get_mut(&r.data)
            .unwrap_or_else(|| panic!("a frame that was never sent ({} bytes)", r.data.len()));
        assert!(*left > 0, "captured more often than sent");
        *left -= 1;
    }
    assert!(
        records.iter().any(|r| r.data.len() == 1514),
        "full-MTU frames are captured whole"
    );
}

#[test]
fn sockets_on_every_queue_share_the_load() {
    let lab = Lab::create("xskmq", 2).expect("create the lab");
    let (running, start) = Running::watch(&lab, &["--afxdp", "--capture", "203.0.113.0/24"]);
    assert_eq!(start.afxdp.as_ref().map(|a| a.queues), Some(2), "{start:?}");
    // AF_PACKET picks the transmit queue (and so veth the receive queue) by
    // the sending CPU: send from each CPU in turn.
    let cpus = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(2);
    for cpu in 0..cpus {
        send_on_cpu(&lab, cpu, &["--count", "500", "--src", "203.0.113.0/24"]);
    }
    let total = 500 * cpus as u64;
    let (summary, status, _) = running.expect_packets(total).stop();
    assert!(status.success());
    assert_eq!(summary.counts.events, total, "{summary:?}");
    let delivered: Vec<u64> = summary
        .afxdp_queues
        .as_ref()
        .expect("per-queue counts")
        .iter()
        .map(|q| q.delivered)
        .collect();
    assert_eq!(delivered.iter().sum::<u64>(), total);
    if cpus == 2 {
        assert!(
            delivered.iter().all(|&d| d == 500),
            "each queue got its CPU's packets: {delivered:?}"
        );
    }
}

#[test]
fn a_refused_zero_copy_mode_says_what_to_do() {
    let lab = Lab::create("xskzc", 1).expect("create the lab");
    let err = fails(
        &lab.rx_ns,
        &[
            "--iface",
            &lab.rx_if,
            "--afxdp",
            "--afxdp-mode",
            "zerocopy",
            "--capture",
            "203.0.113.0/24",
            "--duration",
            "0.2",
        ],
    );
    assert!(
        err.contains("refused AF_XDP zero-copy") && err.contains("--afxdp-mode copy"),
        "{err}"
    );
    assert!(!traffic_tests::has_xdp(&lab.rx_ns, &lab.rx_if));
}

#[test]
fn with_sampling_both_paths_account_for_every_packet() {
    // Issue 9: with --afxdp --sample the exit drain compared AF_XDP frames
    // against ring events and could stop early; each source now waits for
    // its own, and events + events_lost = capture + sampled.
    let lab = Lab::create("xsksample", 1).expect("create the lab");
    let (running, _) = Running::watch(
        &lab,
        &["--afxdp", "--sample", "10", "--capture", "203.0.113.0/24"],
    );
    send(&lab, &["--count", "400", "--src", "203.0.113.0/24"]);
    send(&lab, &["--count", "600", "--src", "192.0.2.0/24"]);
    let (summary, status, stderr) = running.expect_packets(1000).stop();
    assert!(status.success(), "{stderr}");
    let c = summary.counts;
    assert_eq!(c.capture, 400);
    assert!(c.sampled > 0, "{c:?}");
    assert_eq!(
        c.events + c.events_lost,
        c.capture + c.sampled,
        "every packet sent to either path is delivered or counted lost: {c:?}"
    );
    assert_eq!(c.events_lost, 0, "{c:?}");
}
