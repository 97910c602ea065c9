//! Reports: one row per interval and a summary at the end, as a table for
//! people or as JSON lines for programs.
//!
//! With `--json` every line is one object of [`super::json`]'s `Line`.
//!
//! The intervals add up to the summary: the last, partial interval is
//! reported when the run stops.

use std::{
    io::{self, Write},
    sync::Arc,
};

use super::{
    Format, Interval, Sink, SinkError, Summary,
    json::{IntervalReport, Line, ReloadReport, RuleRow, Start, SummaryReport, TopReport},
};
use crate::{rules::RuleSet, source::QueueReport};

/// Notes for people (stderr), written as well as they can be: a standard
/// error that is full or closed loses them, and must not take the report
/// on standard output down with it.
struct Notes<W>(W);

impl<W: Write> Write for Notes<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let _ = self.0.write_all(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}

/// Writes reports to `out`, and notes for people to `note` (stderr).
pub struct Reporter<W> {
    out: W,
    note: Box<dyn Write>,
    format: Format,
    rows: usize,
    /// What `out` is, for error messages.
    what: &'static str,
    /// `--by-rule`: per-rule rows in the table.
    by_rule: bool,
}

/// Rules listed under an interval's row of the table; the rest are summed.
const RULES_PER_INTERVAL: usize = 10;
/// Rules listed in the summary's table; the rest are summed.
const RULES_IN_SUMMARY: usize = 50;

/// Rows between repeated table headers.
const HEADER_EVERY: usize = 20;

fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

/// `1234567` as `1.23M`: three significant digits and an SI suffix.
pub fn si(value: f64) -> String {
    const UNITS: [&str; 5] = ["", "k", "M", "G", "T"];
    let mut v = value;
    let mut unit = 0;
    while v.abs() >= 999.5 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0}")
    } else if v < 9.995 {
        format!("{v:.2}{}", UNITS[unit])
    } else if v < 99.95 {
        format!("{v:.1}{}", UNITS[unit])
    } else {
        format!("{v:.0}{}", UNITS[unit])
    }
}

/// [`si`] for a count.
pub fn si_u64(value: u64) -> String {
    si(value as f64)
}

/// `1234` ns as `1.23us`; `-` when nothing was measured.
pub fn duration_text(ns: u64, count: u64) -> String {
    if count == 0 {
        return "-".to_owned();
    }
    let ns = ns as f64;
    if ns < 1e3 {
        format!("{ns:.0}ns")
    } else if ns < 1e6 {
        format!("{:.1}us", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2}ms", ns / 1e6)
    } else {
        format!("{:.2}s", ns / 1e9)
    }
}

impl<W: Write> Reporter<W> {
    /// A reporter writing `format` to `out`, named `what` in errors, with
    /// notes to stderr.
    pub fn new(out: W, format: Format, what: &'static str) -> Self {
        Self {
            out,
            note: Box::new(Notes(io::stderr())),
            format,
            rows: 0,
            what,
            by_rule: false,
        }
    }

    /// Lists packets and bytes per rule in the table (`--by-rule`).
    #[must_use]
    pub fn by_rule(mut self, on: bool) -> Self {
        self.by_rule = on;
        self
    }

    /// The per-rule rows of the table: the first `limit`, then the rest
    /// summed.
    fn rule_rows(&mut self, rules: &[RuleRow], secs: Option<f64>, limit: usize) -> io::Result<()> {
        let out = &mut self.out;
        for r in rules.iter().take(limit) {
            let rate = secs.map_or_else(String::new, |s| {
                format!(" {:>8} pkts/s", si(rate(r.packets, s)))
            });
            writeln!(
                out,
                "  rule {:<43} {:<7} {:>12} packets {:>14} bytes{rate}",
                r.rule, r.action, r.packets, r.bytes
            )?;
        }
        if rules.len() > limit {
            let rest = &rules[limit..];
            writeln!(
                out,
                "  ... {} more rules: {} packets, {} bytes",
                rest.len(),
                rest.iter().map(|r| r.packets).sum::<u64>(),
                rest.iter().map(|r| r.bytes).sum::<u64>()
            )?;
        }
        Ok(())
    }

    /// The top-talker rows of the table.
    fn top_rows(&mut self, top: &TopReport) -> io::Result<()> {
        let out = &mut self.out;
        for t in &top.sources {
            let error = if t.error > 0 {
                format!(" (at most {} too many)", t.error)
            } else {
                String::new()
            };
            writeln!(
                out,
                "  top  {:<43} {:>12} packets {:>14} bytes {:>6.2}%  rule {} {}{error}",
                t.source,
                t.packets,
                t.bytes,
                t.share * 100.0,
                t.rule,
                t.action
            )?;
        }
        if !top.exact {
            writeln!(
                out,
                "  top  not exact: {} packets ({} bytes) from sources the kernel had no room for{}",
                top.untracked_packets,
                top.untracked_bytes,
                if top.sources.iter().any(|t| t.error > 0) {
                    "; counts with an error bound may be that much too high"
                } else {
                    ""
                }
            )?;
        }
        Ok(())
    }

    /// Reports where the engine is attached. The table format writes this to
    /// the notes (stderr), leaving `out` for the table.
    ///
    /// # Errors
    ///
    /// When writing fails.
    pub fn start(&mut self, start: &Start) -> io::Result<()> {
        match self.format {
            Format::Json => self.json(&Line::Start(start.clone())),
            Format::Table => {
                let note = &mut self.note;
                for r in &start.refused {
                    writeln!(note, "traffic: {} mode refused: {}", r.mode, r.error)?;
                }
                if let Some(p) = &start.replaced {
                    writeln!(
                        note,
                        "traffic: removed the XDP program already on {} ({p})",
                        start.iface
                    )?;
                }
                if let Some(x) = &start.afxdp {
                    if let Some(why) = &x.zerocopy_refused {
                        writeln!(
                            note,
                            "traffic: AF_XDP zero-copy refused ({why}); using copy mode"
                        )?;
                    }
                    writeln!(
                        note,
                        "traffic: AF_XDP: {} sockets in {} mode; captured packets do not reach the network stack",
                        x.queues, x.mode
                    )?;
                }
                if start.mode == crate::kernel::AttachMode::TestRun {
                    return writeln!(
                        note,
                        "traffic: reading {} through the XDP program (BPF_PROG_RUN, frame by frame); {} IPv4 and {} IPv6 rules, default {}",
                        start.iface, start.rules_v4, start.rules_v6, start.default
                    );
                }
                let each: Vec<String> = if start.ifaces.is_empty() {
                    vec![format!("{} in {} mode", start.iface, start.mode)]
                } else {
                    start
                        .ifaces
                        .iter()
                        .map(|i| format!("{} in {} mode", i.iface, i.mode))
                        .collect()
                };
                writeln!(
                    note,
                    "traffic: attached to {}; {} IPv4 and {} IPv6 rules, default {}; Ctrl-C to stop",
                    each.join(" and "),
                    start.rules_v4,
                    start.rules_v6,
                    start.default
                )
            }
        }
    }

    /// Reports one interval.
    ///
    /// # Errors
    ///
    /// When writing fails.
    pub fn interval(&mut self, interval: &Interval<'_>) -> io::Result<()> {
        let Interval {
            counts,
            latency,
            length,
            ..
        } = *interval;
        let secs = length.as_secs_f64();
        let pps = rate(counts.packets, secs);
        let bps = rate(counts.bytes * 8, secs);
        match self.format {
            Format::Json => self.json(&Line::Interval(IntervalReport {
                ts: interval.ts.as_secs_f64(),
                interval_s: secs,
                counts: *counts,
                pps,
                bps,
                latency_ns: *latency,
                rules: interval.rules.to_vec(),
                top: interval.top.cloned(),
                ifaces: interval.ifaces.to_vec(),
            })),
            Format::Table => {
                if self.rows.is_multiple_of(HEADER_EVERY) {
                    writeln!(
                        self.out,
                        "{:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8}",
                        "pkts/s",
                        "bits/s",
                        "pass/s",
                        "drop/s",
                        "capt/s",
                        "ipv6/s",
                        "non-ip",
                        "malformed",
                        "events/s",
                        "lost",
                        "lat p50",
                        "lat p99",
                    )?;
                }
                self.rows += 1;
                writeln!(
                    self.out,
                    "{:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8}",
                    si(pps),
                    si(bps),
                    si(rate(counts.pass, secs)),
                    si(rate(counts.drop, secs)),
                    si(rate(counts.capture, secs)),
                    si(rate(counts.ipv6, secs)),
                    counts.non_ip,
                    counts.malformed,
                    si(rate(counts.events, secs)),
                    counts.events_lost,
                    duration_text(latency.p50, latency.count),
                    duration_text(latency.p99, latency.count),
                )?;
                for i in interval.ifaces {
                    let c = &i.counts;
                    writeln!(
                        self.out,
                        "  {}: {} pkts/s, pass {}/s, drop {}/s, capture {}/s, events {}/s, lost {}",
                        i.iface,
                        si(rate(c.packets, secs)),
                        si(rate(c.pass, secs)),
                        si(rate(c.drop, secs)),
                        si(rate(c.capture, secs)),
                        si(rate(c.events, secs)),
                        c.events_lost,
                    )?;
                }
                if self.by_rule {
                    self.rule_rows(interval.rules, Some(secs), RULES_PER_INTERVAL)?;
                }
                if let Some(top) = interval.top {
                    self.top_rows(top)?;
                }
                self.out.flush()
            }
        }
    }

    /// Reports the totals of the run.
    ///
    /// # Errors
    ///
    /// When writing fails.
    pub fn summary(&mut self, report: &SummaryReport) -> io::Result<()> {
        if self.format == Format::Json {
            return self.json(&Line::Summary(report.clone()));
        }
        let c = &report.counts;
        let l = &report.latency_ns;
        let out = &mut self.out;
        writeln!(
            out,
            "--- {} ({} mode), {:.1} s ---",
            report.iface, report.mode, report.duration_s
        )?;
        writeln!(
            out,
            "{} packets, {} bytes ({} pkts/s, {} bits/s on average)",
            c.packets,
            c.bytes,
            si(report.pps),
            si(report.bps)
        )?;
        writeln!(
            out,
            "pass {} ({} bytes), drop {} ({} bytes), capture {} ({} bytes)",
            c.pass, c.pass_bytes, c.drop, c.drop_bytes, c.capture, c.capture_bytes
        )?;
        writeln!(
            out,
            "ipv4 {}, ipv6 {}, non-ip {}, malformed {}",
            c.ipv4, c.ipv6, c.non_ip, c.malformed
        )?;
        if c.capture + c.sampled + c.events_lost > 0 {
            writeln!(
                out,
                "events {} delivered, {} lost; delivery latency p50 {} p90 {} p99 {} p99.9 {} max {}",
                c.events,
                c.events_lost,
                duration_text(l.p50, l.count),
                duration_text(l.p90, l.count),
                duration_text(l.p99, l.count),
                duration_text(l.p999, l.count),
                duration_text(l.max, l.count),
            )?;
        }
        for i in &report.ifaces {
            let c = &i.counts;
            writeln!(
                out,
                "{}: {} packets, {} bytes; pass {}, drop {}, capture {}; events {} delivered, {} lost",
                i.iface, c.packets, c.bytes, c.pass, c.drop, c.capture, c.events, c.events_lost
            )?;
        }
        for q in report.afxdp_queues.iter().flatten() {
            // With several interfaces, each queue says whose it is.
            let iface = report
                .ifaces
                .iter()
                .find(|i| i.ifindex == q.ifindex)
                .map_or(String::new(), |i| format!("{} ", i.iface));
            writeln!(
                out,
                "{iface}AF_XDP queue {}: {} delivered, {} dropped (RX ring full), {} dropped (no fill-ring frame)",
                q.queue, q.delivered, q.rx_ring_full, q.rx_dropped
            )?;
        }
        for f in &report.failed_outputs {
            writeln!(
                out,
                "output failed: {}; it took {} packets before, and missed {} after",
                f.error, f.packets_written, f.packets_not_written
            )?;
        }
        if self.by_rule && !report.rules.is_empty() {
            writeln!(self.out, "by rule:")?;
            self.rule_rows(&report.rules, None, RULES_IN_SUMMARY)?;
        }
        if let Some(top) = &report.top {
            writeln!(
                self.out,
                "top sources over the run ({} kept{}):",
                top.tracked,
                if top.exact { ", exact" } else { "" }
            )?;
            self.top_rows(top)?;
        }
        self.out.flush()
    }

    fn json(&mut self, line: &Line) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, line)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

impl<W: Write> Sink for Reporter<W> {
    fn takes_packets(&self) -> bool {
        false
    }

    fn start(&mut self, start: &Start) -> Result<(), SinkError> {
        Reporter::start(self, start).map_err(SinkError::write(self.what))
    }

    fn interval(&mut self, interval: &Interval<'_>) -> Result<(), SinkError> {
        Reporter::interval(self, interval).map_err(SinkError::write(self.what))
    }

    fn reload(&mut self, r: &ReloadReport, _: &Arc<RuleSet>) -> Result<(), SinkError> {
        let written = match self.format {
            Format::Json => self.json(&Line::Reload(r.clone())),
            Format::Table if r.ok => {
                let c = &r.change;
                writeln!(
                    self.note,
                    "traffic: rules reloaded ({}) in {:.0} ms: {} IPv4 and {} IPv6 rules in force; {} added, {} removed, {} changed action, {} kept",
                    r.trigger,
                    r.took_ms,
                    r.rules_v4,
                    r.rules_v6,
                    c.added,
                    c.removed,
                    c.changed,
                    c.kept
                )
            }
            Format::Table => (|| {
                writeln!(
                    self.note,
                    "traffic: reload ({}) refused; the rules in force stay ({} IPv4, {} IPv6):",
                    r.trigger, r.rules_v4, r.rules_v6
                )?;
                for e in &r.errors {
                    writeln!(self.note, "  {e}")?;
                }
                Ok(())
            })(),
        };
        written.map_err(SinkError::write(self.what))
    }

    fn finish(&mut self, s: &Summary<'_>) -> Result<(), SinkError> {
        let secs = s.duration.as_secs_f64();
        let report = SummaryReport {
            iface: s.start.iface.clone(),
            mode: s.start.mode,
            duration_s: secs,
            counts: *s.counts,
            pps: rate(s.counts.packets, secs),
            bps: rate(s.counts.bytes * 8, secs),
            latency_ns: s.latency.total(),
            afxdp_queues: s.queues.map(<[QueueReport]>::to_vec),
            failed_outputs: s.failed.to_vec(),
            rules: s.rules.to_vec(),
            top: s.top.cloned(),
            ifaces: s.ifaces.to_vec(),
        };
        self.summary(&report).map_err(SinkError::write(self.what))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        kernel::AttachMode,
        sink::{Counts, Percentiles},
    };

    fn test_interval<'a>(counts: &'a Counts, latency: &'a Percentiles, secs: u64) -> Interval<'a> {
        Interval {
            counts,
            latency,
            length: Duration::from_secs(secs),
            at: Duration::from_secs(secs),
            ts: Duration::from_secs(1_800_000_000),
            rules: &[],
            top: None,
            ifaces: &[],
            flows: None,
            latency_run: &EMPTY,
            latency_sum_s: 0.0,
            queues: &[],
        }
    }

    static EMPTY: std::sync::LazyLock<hdrhistogram::Histogram<u64>> =
        std::sync::LazyLock::new(|| hdrhistogram::Histogram::new(2).unwrap());

    #[test]
    fn table_header_names_every_column() {
        let mut out = Vec::new();
        let mut r = Reporter::new(&mut out, Format::Table, "the test");
        r.interval(&test_interval(
            &Counts::default(),
            &Percentiles::default(),
            1,
        ))
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().count() - 2, // "lat p50", "lat p99"
            lines[1].split_whitespace().count(),
            "{text}"
        );
        assert_eq!(lines[0].len(), lines[1].len(), "columns line up:\n{text}");
    }

    #[test]
    fn by_rule_lists_the_busiest_and_sums_the_rest() {
        let rules: Vec<RuleRow> = (0..12u64)
            .map(|i| RuleRow {
                rule: format!("192.0.2.{}/32", i),
                action: crate::rules::Action::Drop,
                packets: 100 - i,
                bytes: (100 - i) * 60,
            })
            .collect();
        let counts = Counts::default();
        let latency = Percentiles::default();
        let mut interval = test_interval(&counts, &latency, 1);
        interval.rules = &rules;
        let mut out = Vec::new();
        let mut r = Reporter::new(&mut out, Format::Table, "the test").by_rule(true);
        r.interval(&interval).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("  rule ").count(), 10, "{text}");
        assert!(text.contains("192.0.2.0/32"));
        assert!(!text.contains("192.0.2.10/32"));
        assert!(
            text.contains("... 2 more rules: 179 packets, 10740 bytes"),
            "{text}"
        );
        // Without --by-rule, no rows.
        let mut out = Vec::new();
        Reporter::new(&mut out, Format::Table, "the test")
            .interval(&interval)
            .unwrap();
        assert!(!String::from_utf8(out).unwrap().contains("  rule "));
    }

    #[test]
    fn si_keeps_three_significant_digits() {
        assert_eq!(si(0.0), "0");
        assert_eq!(si(999.0), "999");
        assert_eq!(si(1234.0), "1.23k");
        assert_eq!(si(45_600.0), "45.6k");
        assert_eq!(si(999_999.0), "1.00M");
        assert_eq!(si(12_300_000_000.0), "12.3G");
    }

    #[test]
    fn json_lines_carry_the_documented_keys() {
        let mut out = Vec::new();
        let mut r = Reporter::new(&mut out, Format::Json, "the test");
        let counts = Counts {
            packets: 10,
            bytes: 1000,
            pass: 6,
            drop: 3,
            capture: 1,
            ..Counts::default()
        };
        let latency = Percentiles {
            count: 1,
            p50: 10,
            p90: 20,
            p99: 30,
            p999: 40,
            max: 50,
        };
        r.interval(&test_interval(&counts, &latency, 2)).unwrap();
        r.summary(&SummaryReport {
            iface: "veth0".into(),
            mode: AttachMode::Native,
            duration_s: 4.0,
            counts,
            pps: 2.5,
            bps: 2000.0,
            latency_ns: latency,
            afxdp_queues: None,
            failed_outputs: Vec::new(),
            rules: Vec::new(),
            top: None,
            ifaces: Vec::new(),
        })
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["type"], "interval");
        assert_eq!(lines[0]["pps"], 5.0);
        assert_eq!(lines[0]["bps"], 4000.0);
        for key in [
            "packets",
            "bytes",
            "pass",
            "drop",
            "capture",
            "non_ip",
            "malformed",
            "interval_s",
            "ts",
        ] {
            assert!(lines[0].get(key).is_some(), "interval lacks {key}");
        }
        assert_eq!(lines[1]["type"], "summary");
        assert_eq!(lines[1]["iface"], "veth0");
        assert_eq!(lines[1]["mode"], "native");
        assert_eq!(lines[1]["duration_s"], 4.0);
        assert_eq!(lines[1]["drop"], 3);
    }
}
