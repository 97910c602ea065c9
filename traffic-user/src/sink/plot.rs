//! SVG charts, written by hand: no plotting dependency, and files any
//! browser opens.
//!
//! [`timeline`] draws packets per second per action (or rule, or source)
//! over a run; [`histogram`]
//! draws a latency distribution on a logarithmic axis; [`bars`] draws
//! labelled horizontal bars, for benchmark reports.

use std::{collections::HashMap, fmt::Write as _, io::Write as _};

use hdrhistogram::Histogram;

use super::{Interval, Sink, SinkError, Summary, file::Output};

const W: f64 = 760.0;
const H: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLORS: [&str; 11] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
    "#17becf", "#7f7f7f", "#393b79",
];
/// Legend entries per row, and the width of each.
const LEGEND_PER_ROW: usize = 4;
const LEGEND_W: f64 = 180.0;
/// Lines drawn per rule or per source: the busiest, the rest summed.
pub const MAX_LINES: usize = 10;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn header(out: &mut String, width: f64, height: f64, title: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        width / 2.0,
        escape(title)
    );
}

/// A "nice" upper bound for an axis: 1, 2 or 5 times a power of ten.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * p {
            return m * p;
        }
    }
    10.0 * p
}

/// Packets per second over time, one line per series.
///
/// `times` are seconds since the start; each series is `(name, values)`,
/// one value per time.
pub fn timeline(title: &str, times: &[f64], series: &[(&str, Vec<f64>)], y_label: &str) -> String {
    let mut out = String::new();
    // The legend goes under the axis, LEGEND_PER_ROW entries a row.
    let legend_rows = series.len().div_ceil(LEGEND_PER_ROW);
    header(&mut out, W, H + 18.0 * legend_rows as f64, title);
    let x_max = times.iter().copied().fold(0.0, f64::max).max(1e-9);
    let y_max = nice_max(
        series
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .fold(0.0, f64::max),
    );
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let x = |t: f64| LEFT + t / x_max * pw;
    let y = |v: f64| TOP + ph - v / y_max * ph;
    axes(&mut out, pw, ph, y_max, &super::report::si, y_label);
    for i in 0..=4 {
        let t = x_max * f64::from(i) / 4.0;
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{t:.1}</text>"#,
            x(t),
            TOP + ph + 16.0
        );
    }
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">seconds</text>"#,
        LEFT + pw / 2.0,
        H - 8.0
    );
    for (i, (name, values)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<String> = times
            .iter()
            .zip(values)
            .map(|(&t, &v)| format!("{:.1},{:.1}", x(t), y(v)))
            .collect();
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        let lx = LEFT + (i % LEGEND_PER_ROW) as f64 * LEGEND_W;
        let ly = H + 4.0 + (i / LEGEND_PER_ROW) as f64 * 18.0;
        let _ = write!(
            out,
            r#"<rect x="{lx}" y="{}" width="12" height="3" fill="{color}"/><text x="{}" y="{}">{}</text>"#,
            ly - 4.0,
            lx + 16.0,
            ly,
            escape(name)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn axes(
    out: &mut String,
    pw: f64,
    ph: f64,
    y_max: f64,
    fmt: &dyn Fn(f64) -> String,
    y_label: &str,
) {
    let _ = write!(
        out,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{}" stroke="#333"/><line x1="{LEFT}" y1="{}" x2="{}" y2="{}" stroke="#333"/>"##,
        TOP + ph,
        TOP + ph,
        LEFT + pw,
        TOP + ph
    );
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let yy = TOP + ph - ph * f64::from(i) / 4.0;
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            yy + 4.0,
            fmt(v)
        );
    }
    let _ = write!(
        out,
        r#"<text transform="translate(14,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        TOP + ph / 2.0,
        escape(y_label)
    );
}

/// The distribution of latencies, in buckets doubling in width from 1 µs,
/// with the percentiles marked.
pub fn histogram(title: &str, hist: &Histogram<u64>) -> String {
    let mut out = String::new();
    header(&mut out, W, H, title);
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    if hist.is_empty() {
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">no events</text></svg>"#,
            W / 2.0,
            H / 2.0
        );
        return out;
    }
    // Buckets [2^k, 2^(k+1)) µs from below 1 µs up to the maximum.
    let mut edges = vec![0u64, 1_000];
    while *edges.last().expect("non-empty") <= hist.max() {
        let next = edges.last().expect("non-empty") * 2;
        edges.push(next);
    }
    let counts: Vec<u64> = edges
        .windows(2)
        .map(|w| hist.count_between(w[0], w[1].saturating_sub(1)))
        .collect();
    let y_max = nice_max(counts.iter().copied().max().unwrap_or(0) as f64);
    axes(&mut out, pw, ph, y_max, &super::report::si, "events");
    let bw = pw / counts.len() as f64;
    for (i, &c) in counts.iter().enumerate() {
        let h = c as f64 / y_max * ph;
        let _ = write!(
            out,
            r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"/>"#,
            LEFT + i as f64 * bw + 1.0,
            TOP + ph - h,
            (bw - 2.0).max(1.0),
            COLORS[0]
        );
        if counts.len() <= 16 || i % 2 == 0 {
            let label = super::report::duration_text(edges[i + 1], 1);
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">&lt;{label}</text>"#,
                LEFT + (i as f64 + 0.5) * bw,
                TOP + ph + 14.0
            );
        }
    }
    let p = |q: f64| super::report::duration_text(hist.value_at_quantile(q), 1);
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">delivery latency (bucket upper bounds); p50 {} p90 {} p99 {} p99.9 {} max {}</text>"#,
        LEFT + pw / 2.0,
        H - 8.0,
        p(0.5),
        p(0.9),
        p(0.99),
        p(0.999),
        super::report::duration_text(hist.max(), 1)
    );
    out.push_str("</svg>\n");
    out
}

/// Horizontal bars, one per `(label, value)`, with the value printed.
pub fn bars(title: &str, unit: &str, rows: &[(String, f64)]) -> String {
    let mut out = String::new();
    let row_h = 22.0;
    let label_w = 300.0;
    let height = TOP + rows.len() as f64 * row_h + 30.0;
    header(&mut out, W, height, title);
    let v_max = nice_max(rows.iter().map(|r| r.1).fold(0.0, f64::max));
    let pw = W - label_w - RIGHT - 70.0;
    for (i, (label, v)) in rows.iter().enumerate() {
        let yy = TOP + i as f64 * row_h;
        let w = (v / v_max * pw).max(0.0);
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text><rect x="{label_w}" y="{yy:.1}" width="{w:.1}" height="{:.1}" fill="{}"/><text x="{:.1}" y="{:.1}">{} {}</text>"#,
            label_w - 6.0,
            yy + row_h * 0.65,
            escape(label),
            row_h - 6.0,
            COLORS[i % COLORS.len()],
            label_w + w + 4.0,
            yy + row_h * 0.65,
            super::report::si(*v),
            escape(unit)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// The height an SVG of ours declares.
fn height_of(svg: &str) -> f64 {
    svg.split_once("height=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .and_then(|(h, _)| h.parse().ok())
        .unwrap_or(H)
}

/// Charts stacked in one SVG, in order.
pub fn run_report(title: &str, charts: &[&str]) -> String {
    let strip = |s: &str| {
        let start = s.find('>').map_or(0, |i| i + 1);
        let end = s.rfind("</svg>").unwrap_or(s.len());
        s[start..end].to_owned()
    };
    let mut body = String::new();
    let mut y = 0.0;
    for chart in charts {
        let _ = write!(
            body,
            r#"<g transform="translate(0,{y})">{}</g>"#,
            strip(chart)
        );
        y += height_of(chart);
    }
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{y}" viewBox="0 0 {W} {y}" font-family="sans-serif" font-size="12"><title>{}</title>{body}</svg>
"#,
        escape(title),
    )
}

/// The `MAX_LINES` busiest of `named` (each a name and its value per
/// interval, `n` intervals) by their sum, and the rest summed as `other`.
fn busiest(mut named: Vec<(String, Vec<f64>)>, n: usize) -> Vec<(String, Vec<f64>)> {
    named.sort_by(|a, b| {
        let sum = |v: &[f64]| v.iter().sum::<f64>();
        sum(&b.1).total_cmp(&sum(&a.1)).then_with(|| a.0.cmp(&b.0))
    });
    if named.len() <= MAX_LINES {
        return named;
    }
    let rest = named.split_off(MAX_LINES);
    let mut other = vec![0.0; n];
    for (_, v) in &rest {
        for (o, x) in other.iter_mut().zip(v) {
            *o += x;
        }
    }
    named.push((format!("other ({} more)", rest.len()), other));
    named
}

/// `--plot FILE.svg`: at the end of the run, packets per second per action
/// over time, and the delivery-latency histogram.
pub struct PlotSink {
    out: Option<Output>,
    seconds: Vec<f64>,
    pass: Vec<f64>,
    drop: Vec<f64>,
    capture: Vec<f64>,
    /// Packets per second of each rule, per interval.
    rules: HashMap<String, Vec<f64>>,
    /// Packets per second of each source named in an interval's top list,
    /// per interval (0 when not in that interval's list).
    sources: HashMap<String, Vec<f64>>,
    /// Whether the run counted top talkers.
    top: bool,
}

impl PlotSink {
    /// A plot to be written to `out`, opened before the run so that a path
    /// that cannot be written is refused before anything is attached.
    pub fn new(out: Output) -> Self {
        Self {
            out: Some(out),
            seconds: Vec::new(),
            pass: Vec::new(),
            drop: Vec::new(),
            capture: Vec::new(),
            rules: HashMap::new(),
            sources: HashMap::new(),
            top: false,
        }
    }
}

/// Adds `value` at interval `at` (of `n` so far) to `name`'s line.
fn put(lines: &mut HashMap<String, Vec<f64>>, name: &str, at: usize, value: f64) {
    let line = lines
        .entry(name.to_owned())
        .or_insert_with(|| vec![0.0; at + 1]);
    line.resize(at + 1, 0.0);
    line[at] += value;
}

impl Sink for PlotSink {
    fn takes_packets(&self) -> bool {
        false
    }

    fn interval(&mut self, i: &Interval<'_>) -> Result<(), SinkError> {
        let secs = i.length.as_secs_f64().max(1e-9);
        self.seconds.push(i.at.as_secs_f64());
        self.pass.push(i.counts.pass as f64 / secs);
        self.drop.push(i.counts.drop as f64 / secs);
        self.capture.push(i.counts.capture as f64 / secs);
        let at = self.seconds.len() - 1;
        for r in i.rules {
            put(
                &mut self.rules,
                &format!("{} {}", r.action, r.rule),
                at,
                r.packets as f64 / secs,
            );
        }
        if let Some(top) = i.top {
            self.top = true;
            for t in &top.sources {
                put(&mut self.sources, &t.source, at, t.packets as f64 / secs);
            }
        }
        Ok(())
    }

    fn finish(&mut self, s: &Summary<'_>) -> Result<(), SinkError> {
        let title = format!("traffic on {} ({} mode)", s.start.iface, s.start.mode);
        let series = [
            ("pass", std::mem::take(&mut self.pass)),
            ("drop", std::mem::take(&mut self.drop)),
            ("capture", std::mem::take(&mut self.capture)),
        ];
        let n = self.seconds.len();
        let lines = |map: &mut HashMap<String, Vec<f64>>| {
            let named = map
                .drain()
                .map(|(k, mut v)| {
                    v.resize(n, 0.0);
                    (k, v)
                })
                .collect();
            busiest(named, n)
        };
        let mut charts = vec![timeline(&title, &self.seconds, &series, "packets/s")];
        let rules = lines(&mut self.rules);
        if !rules.is_empty() {
            let series: Vec<(&str, Vec<f64>)> =
                rules.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            charts.push(timeline(
                "packets/s by rule",
                &self.seconds,
                &series,
                "packets/s",
            ));
        }
        if self.top {
            // The run's busiest sources, each from the intervals whose
            // top list named it.
            let mut sources = lines(&mut self.sources);
            sources.retain(|(k, _)| !k.starts_with("other ("));
            let series: Vec<(&str, Vec<f64>)> = sources
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            charts.push(timeline(
                "packets/s of the busiest sources (0 where not in an interval's --top list)",
                &self.seconds,
                &series,
                "packets/s",
            ));
        }
        charts.push(histogram("delivery latency", &s.latency.total_histogram()));
        let charts: Vec<&str> = charts.iter().map(String::as_str).collect();
        let svg = run_report(&title, &charts);
        let Some(mut out) = self.out.take() else {
            return Ok(());
        };
        let what = format!("the plot {}", out.path.display());
        out.file
            .write_all(svg.as_bytes())
            .map_err(SinkError::write(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_well_formed_svg_with_their_data() {
        let t = timeline(
            "rates",
            &[1.0, 2.0, 3.0],
            &[
                ("pass", vec![10.0, 20.0, 30.0]),
                ("drop", vec![1.0, 2.0, 3.0]),
            ],
            "packets/s",
        );
        assert!(t.starts_with("<svg") && t.trim_end().ends_with("</svg>"));
        assert_eq!(t.matches("<polyline").count(), 2);
        assert!(t.contains(">pass<") && t.contains(">drop<"));

        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for v in [500, 1_500, 3_000, 3_100, 70_000] {
            h.record(v).unwrap();
        }
        let svg = histogram("latency", &h);
        assert!(svg.contains("p50"));
        // Buckets: <1us, <2us, <4us, ... up to 128us: 8 bars.
        assert_eq!(svg.matches("<rect x=").count(), 8);

        let b = bars("cost", "ns", &[("a".into(), 10.0), ("b <x>".into(), 20.0)]);
        assert!(b.contains("b &lt;x&gt;"));
        assert_eq!(nice_max(730.0), 1000.0);
        assert_eq!(nice_max(0.0), 1.0);
        let both = run_report("r", &[&t, &svg]);
        assert_eq!(both.matches("<svg").count(), 1);
        assert!(both.contains(&format!("height=\"{}\"", 2.0 * H + 18.0)));
    }
}
