//! The session without a kernel: a fake source and scripted counters.

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    rc::Rc,
    task::{Context, Poll},
    time::Duration,
};

use traffic_common::{EventHeader, Stats, action};

use super::*;
use crate::{
    kernel::AttachMode,
    rules::{Action, RuleSet},
    sink::Start,
    source::{
        Captured,
        clock::{self, WallClock},
        ringbuf::Event,
    },
};

/// Counters that follow a script, one snapshot per reading, and remember
/// when they were stopped.
struct Script {
    snapshots: Vec<Stats>,
    reads: usize,
    stopped: Rc<Cell<bool>>,
}

impl Counters for Script {
    fn read(&mut self) -> Result<Stats, EngineError> {
        let i = self.reads.min(self.snapshots.len() - 1);
        self.reads += 1;
        Ok(self.snapshots[i])
    }

    fn stop(&mut self) {
        self.stopped.set(true);
    }

    fn replace_rules(&mut self, _: &Table) -> Result<(), EngineError> {
        Ok(())
    }

    fn run_frame(&mut self, _: &[u8]) -> Result<bool, EngineError> {
        Ok(true)
    }
}

/// A source that offers its batches one readiness at a time, and holds
/// `late` back until the counters are stopped, as events still in a ring
/// at exit.
struct Fake {
    batches: VecDeque<u64>,
    late: u64,
    stopped: Rc<Cell<bool>>,
}

fn event(i: u64) -> EventHeader {
    EventHeader {
        ts_ns: clock::monotonic_ns().saturating_sub(1_000 + i),
        action: action::CAPTURE as u8,
        flags: traffic_common::event_flags::IPV4,
        rule_id: traffic_common::NO_RULE,
        wire_len: 60,
        ..EventHeader::default()
    }
}

impl Source for Fake {
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), SourceError>> {
        if self.batches.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn drain(&mut self, deliver: &mut dyn FnMut(&Captured<'_>)) -> Result<Drained, SourceError> {
        let mut n = self.batches.pop_front().unwrap_or(0);
        if self.stopped.get() {
            n += std::mem::take(&mut self.late);
        }
        let clock = WallClock::new();
        for i in 0..n {
            let ev = Event {
                header: event(i),
                data: &[0; 60],
            };
            deliver(&ev.captured(&clock, 0, clock::monotonic_ns()));
        }
        Ok(Drained {
            delivered: n,
            undecodable: 0,
        })
    }

    fn handed_over(&self, stats: &Stats) -> u64 {
        stats.events
    }
}

#[derive(Default)]
struct Record {
    started: bool,
    packets: u64,
    intervals: Vec<Counts>,
    summary: Option<Counts>,
}

struct Recorder(Rc<RefCell<Record>>);

impl Sink for Recorder {
    fn start(&mut self, _: &Start) -> Result<(), SinkError> {
        self.0.borrow_mut().started = true;
        Ok(())
    }

    fn packet(&mut self, p: &Captured<'_>) -> Result<(), SinkError> {
        assert!(p.latency_ns.is_some_and(|ns| ns >= 1_000));
        self.0.borrow_mut().packets += 1;
        Ok(())
    }

    fn interval(&mut self, i: &Interval<'_>) -> Result<(), SinkError> {
        self.0.borrow_mut().intervals.push(*i.counts);
        Ok(())
    }

    fn finish(&mut self, s: &Summary<'_>) -> Result<(), SinkError> {
        self.0.borrow_mut().summary = Some(*s.counts);
        Ok(())
    }
}

fn start() -> Start {
    Start {
        iface: "fake0".into(),
        ifindex: 1,
        mode: AttachMode::Native,
        refused: Vec::new(),
        replaced: None,
        rules_v4: 1,
        rules_v6: 0,
        default: Action::Capture,
        afxdp: None,
        ifaces: Vec::new(),
    }
}

/// Snapshots of a kernel that captured `captured[i]` packets by reading
/// `i`, of which it wrote `written[i]` events and lost the rest.
fn snapshots(captured: &[u64], written: &[u64]) -> Vec<Stats> {
    captured
        .iter()
        .zip(written)
        .map(|(&c, &w)| Stats {
            packets: c + 3,
            bytes: (c + 3) * 60,
            capture: c,
            capture_bytes: c * 60,
            pass: 3,
            pass_bytes: 180,
            ipv4: c,
            non_ip: 3,
            events: w,
            events_lost: c - w,
            ..Stats::default()
        })
        .collect()
}

/// A sink that fails on its `fail_at`-th packet, as a full disk would.
struct Failing {
    taken: u64,
    fail_at: u64,
}

impl Sink for Failing {
    fn packet(&mut self, _: &Captured<'_>) -> Result<(), SinkError> {
        self.taken += 1;
        if self.taken == self.fail_at {
            return Err(SinkError::Write {
                what: "the test file".into(),
                source: std::io::Error::from_raw_os_error(libc::ENOSPC),
            });
        }
        Ok(())
    }
}

/// Runs a session over `batches` (and `late`, only read at exit) against
/// `script` for 150 ms with 20 ms intervals.
fn run(batches: &[u64], late: u64, script: Vec<Stats>) -> (Outcome, Record) {
    run_with(batches, late, script, Vec::new())
}

fn run_with(
    batches: &[u64],
    late: u64,
    script: Vec<Stats>,
    extra: Vec<Box<dyn Sink>>,
) -> (Outcome, Record) {
    let stopped = Rc::new(Cell::new(false));
    let record = Rc::new(RefCell::new(Record::default()));
    let session = Session::new(
        start(),
        std::sync::Arc::new(RuleSet::new(Action::Pass)),
        Box::new(Script {
            snapshots: script,
            reads: 0,
            stopped: Rc::clone(&stopped),
        }),
        vec![Box::new(Fake {
            batches: batches.iter().copied().collect(),
            late,
            stopped: Rc::clone(&stopped),
        })],
        std::iter::once(Box::new(Recorder(Rc::clone(&record))) as Box<dyn Sink>)
            .chain(extra)
            .collect(),
        Timing {
            interval: Duration::from_millis(20),
            exit_drain: Duration::from_millis(50),
        },
    );
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let stop = async {
                tokio::time::sleep(Duration::from_millis(150)).await;
                Stop::Duration
            };
            session.run(stop).await
        })
        .unwrap();
    assert!(stopped.get(), "the kernel side is stopped at the end");
    let record = Rc::try_unwrap(record).ok().unwrap().into_inner();
    (outcome, record)
}

fn sum(intervals: &[Counts]) -> Counts {
    let mut total = Counts::default();
    for i in intervals {
        total.accumulate(i);
    }
    total
}

#[test]
fn intervals_add_up_to_the_summary_and_late_events_are_delivered() {
    let script = snapshots(&[0, 10, 25, 40, 47], &[0, 10, 25, 40, 47]);
    let (outcome, record) = run(&[10, 15, 15], 7, script);
    assert!(record.started);
    assert!(record.intervals.len() >= 3, "{}", record.intervals.len());
    let summary = record.summary.expect("a summary");
    assert_eq!(sum(&record.intervals), summary, "intervals add up");
    assert_eq!(record.packets, 47, "the late events were read at exit");
    assert_eq!((summary.events, summary.events_lost), (47, 0));
    assert_eq!(summary.capture, 47);
    assert_eq!(outcome.total, summary);
    assert_eq!((outcome.lost(), outcome.exit_code()), (0, 0));
}

#[test]
fn events_never_read_are_counted_lost_and_the_run_exits_1() {
    // The kernel wrote 30 events and could not write 5 more; the source
    // only ever delivers 24 of the 30.
    let script = snapshots(&[0, 20, 35], &[0, 20, 30]);
    let (outcome, record) = run(&[20, 4], 0, script);
    let summary = record.summary.expect("a summary");
    assert_eq!(sum(&record.intervals), summary, "intervals add up");
    assert_eq!(record.packets, 24);
    assert_eq!(outcome.unread, 6);
    assert_eq!(summary.events, 24);
    assert_eq!(summary.events_lost, 5 + 6);
    assert_eq!(
        summary.events + summary.events_lost,
        summary.capture,
        "every capture is delivered or counted lost"
    );
    assert_eq!(outcome.exit_code(), 1);
}

#[test]
fn a_failing_output_is_reported_and_the_run_goes_on() {
    let script = snapshots(&[0, 30, 40], &[0, 30, 40]);
    let failing = Failing {
        taken: 0,
        fail_at: 12,
    };
    let (outcome, record) = run_with(&[30, 10], 0, script, vec![Box::new(failing)]);
    let summary = record.summary.expect("the summary is printed all the same");
    assert_eq!(record.packets, 40, "the other outputs got every packet");
    assert_eq!((summary.events, summary.events_lost), (40, 0));
    let [failed] = &outcome.failed[..] else {
        panic!("{:?}", outcome.failed)
    };
    assert!(failed.error.to_string().contains("the test file"));
    assert_eq!((failed.packets_before, failed.packets_missed), (11, 29));
    assert_eq!(
        outcome.exit_code(),
        1,
        "an output that failed makes the run exit 1"
    );
}

#[test]
fn the_loss_message_names_each_paths_ring_and_flag() {
    let ring = Outcome {
        total: Stats {
            capture: 10,
            events: 7,
            events_lost: 3,
            ..Stats::default()
        },
        ..Outcome::default()
    };
    let text = ring.loss_message().unwrap();
    assert!(
        text.contains("3 capture events were lost because the event ring buffer was full")
            && text.contains("--ring-size")
            && !text.contains("AF_XDP"),
        "{text}"
    );
    let afxdp = Outcome {
        total: Stats {
            capture: 10,
            events: 5,
            events_lost: 5,
            xsk_unbound: 1,
            ..Stats::default()
        },
        socket_drops: 4,
        ..Outcome::default()
    };
    let text = afxdp.loss_message().unwrap();
    assert!(
        text.contains("4 frames were dropped by the AF_XDP sockets")
            && text.contains("--afxdp-ring")
            && text.contains("1 frames arrived on a receive queue with no AF_XDP socket")
            && !text.contains("--ring-size"),
        "{text}"
    );
    assert_eq!(Outcome::default().loss_message(), None);
}

/// Requests that fire once each, all at the first poll.
struct Burst(Vec<&'static str>);

impl reload::Requests for Burst {
    fn poll_request(&mut self, _: &mut Context<'_>) -> Poll<&'static str> {
        self.0.pop().map_or(Poll::Pending, Poll::Ready)
    }
}

/// Records reload reports.
struct Reloads(Rc<RefCell<Vec<ReloadReport>>>);

impl Sink for Reloads {
    fn takes_packets(&self) -> bool {
        false
    }

    fn reload(&mut self, r: &ReloadReport, _: &std::sync::Arc<RuleSet>) -> Result<(), SinkError> {
        self.0.borrow_mut().push(r.clone());
        Ok(())
    }
}

/// Two requests in a burst: the second is read after the first is in
/// force, so it is counted against the first's rules (here: no change), and
/// the counters see one replacement each.
#[test]
fn a_request_during_a_reload_is_read_after_it_against_its_rules() {
    let dir = std::env::temp_dir().join(format!("traffic-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("rules.txt");
    std::fs::write(&file, "pass 192.0.2.0/24\n").unwrap();
    let spec = crate::rules::RuleSpec {
        default: Action::Pass,
        flags: Vec::new(),
        files: vec![file.clone()],
    };
    let mut first = RuleSet::new(Action::Pass);
    first
        .add_str(
            Action::Drop,
            "192.0.2.0/24",
            crate::rules::Origin::Flag("--drop"),
        )
        .unwrap();
    first.seal();
    let first = std::sync::Arc::new(first);
    let reports = Rc::new(RefCell::new(Vec::new()));
    let stopped = Rc::new(Cell::new(false));
    let session = Session::new(
        start(),
        std::sync::Arc::clone(&first),
        Box::new(Script {
            snapshots: vec![Stats::default()],
            reads: 0,
            stopped: Rc::clone(&stopped),
        }),
        Vec::new(),
        vec![Box::new(Reloads(Rc::clone(&reports)))],
        Timing {
            interval: Duration::from_millis(20),
            exit_drain: Duration::from_millis(50),
        },
    )
    .with_reloader(Reloader::new(
        Box::new(Burst(vec!["second", "first"])),
        spec,
        first,
    ));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let stop = async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Stop::Duration
            };
            session.run(stop).await
        })
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let reports = reports.borrow();
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert!(reports.iter().all(|r| r.ok), "{reports:?}");
    assert_eq!(reports[0].trigger, "first");
    assert_eq!(reports[0].change.changed, 1);
    assert_eq!(reports[1].trigger, "second");
    assert_eq!((reports[1].change.changed, reports[1].change.kept), (0, 1));
}
