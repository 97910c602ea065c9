//! `--metrics ADDR:PORT`: the run's counters as Prometheus metrics, served
//! over HTTP at `/metrics` in the text exposition format (version 0.0.4).
//!
//! The sink adds each interval's counts to running totals; a scrape renders
//! them, once per interval at most (later scrapes of the same interval get
//! the same page). Counters move once per `--interval`, and a run that is
//! never scraped never renders.
//!
//! The server runs on a thread of its own (named `metrics`), with a tokio
//! runtime of its own: a scrape never delays the reading of packets, and
//! its cost shows as that thread's CPU.
//!
//! Labels are bounded: interfaces, actions, families, parse outcomes,
//! queues and the rules themselves. Source addresses are never labels
//! (their number has no bound): top talkers go to JSON and IPFIX.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use hdrhistogram::Histogram;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Bytes, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram as PromHistogram, LabelPair, Metric, MetricFamily, MetricType,
};
use tokio::sync::Semaphore;

use super::{Counts, Interval, ReloadReport, Sink, SinkError, Start};
use crate::rules::{Action, RuleSet};

/// The exposition format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Scrapes served at once; more wait for their turn.
const CONNECTIONS: usize = 16;

/// How long a client may take to send its request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Upper bounds of the delivery-latency histogram, in seconds: 1 µs to 1 s.
const LATENCY_BUCKETS: [f64; 19] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2,
    5e-2, 0.1, 0.25, 0.5, 1.0,
];

/// Why `--metrics` cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address cannot be bound.
    #[error(
        "--metrics {addr}: cannot listen there ({source}); give a free port on an address of this host, for example 127.0.0.1:9464"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The server's thread or runtime could not start.
    #[error(
        "--metrics: the server's thread could not start ({0}); the system is out of threads or memory"
    )]
    Start(#[source] io::Error),
}

/// The totals and their last rendering, shared with the server.
#[derive(Default)]
struct Shared {
    model: Model,
    /// The page of the totals as they are, once rendered.
    page: Option<Bytes>,
}

type Page = Arc<Mutex<Shared>>;

/// The Prometheus metrics of a run, and the server that hands them out.
pub struct MetricsSink {
    shared: Page,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Ends the server when sent (or dropped).
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<std::thread::JoinHandle<()>>,
}

impl Drop for MetricsSink {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

impl MetricsSink {
    /// Binds `addr` and serves `/metrics` on a thread of its own until the
    /// sink is dropped; the first `rules` rules to match get series of
    /// their own.
    ///
    /// # Errors
    ///
    /// When `addr` cannot be bound, or the thread cannot start.
    pub fn serve(addr: SocketAddr, rules: usize) -> Result<Self, MetricsError> {
        let error = |source| MetricsError::Bind { addr, source };
        let listener = std::net::TcpListener::bind(addr).map_err(error)?;
        listener.set_nonblocking(true).map_err(error)?;
        let addr = listener.local_addr().unwrap_or(addr);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(MetricsError::Start)?;
        let shared = Arc::new(Mutex::new(Shared {
            model: Model {
                rule_series: rules,
                ..Model::default()
            },
            page: None,
        }));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let page = Arc::clone(&shared);
        let server = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => {
                            tokio::select! {
                                () = serve(listener, page) => {}
                                _ = stopped => {}
                            }
                        }
                        Err(e) => log::warn!("--metrics: cannot serve: {e}"),
                    }
                });
            })
            .map_err(MetricsError::Start)?;
        Ok(Self {
            shared,
            addr,
            stop: Some(stop),
            server: Some(server),
        })
    }

    /// Changes the totals; the next scrape renders them.
    fn update(&mut self, change: impl FnOnce(&mut Model)) {
        if let Ok(mut shared) = self.shared.lock() {
            change(&mut shared.model);
            shared.page = None;
        }
    }
}

/// Accepts scrapes until aborted.
async fn serve(listener: tokio::net::TcpListener, page: Page) {
    let permits = Arc::new(Semaphore::new(CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                log::warn!("--metrics: accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let page = Arc::clone(&page);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let page = Arc::clone(&page);
                async move { Ok::<_, Infallible>(respond(&req, &page)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}

/// The answer to one request: the metrics at `/metrics`, a pointer to them
/// at `/`, 404 elsewhere, 405 for anything but GET and HEAD.
fn respond<B>(req: &Request<B>, page: &Page) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, kind: &str, body: Bytes| {
        Response::builder()
            .status(status)
            .header("content-type", kind)
            .body(Full::new(body))
            .unwrap_or_default()
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            Bytes::from_static(b"only GET\n"),
        );
        r.headers_mut().insert(
            "allow",
            hyper::header::HeaderValue::from_static("GET, HEAD"),
        );
        return r;
    }
    match req.uri().path() {
        "/metrics" => {
            let body = page
                .lock()
                .map(|mut shared| {
                    let Shared { model, page } = &mut *shared;
                    page.get_or_insert_with(|| model.render()).clone()
                })
                .unwrap_or_default();
            reply(StatusCode::OK, CONTENT_TYPE, body)
        }
        "/" => reply(
            StatusCode::OK,
            "text/plain",
            Bytes::from_static(b"traffic: Prometheus metrics are at /metrics\n"),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"not found; the metrics are at /metrics\n"),
        ),
    }
}

/// Everything the metrics say, as running totals.
#[derive(Debug, Default)]
struct Model {
    /// Per interface, by name: the counts since the start.
    ifaces: BTreeMap<String, Counts>,
    /// Interface names by index, for the queues.
    names: BTreeMap<u32, String>,
    /// Per rule: (rule, action) to packets and bytes.
    rules: BTreeMap<(String, Action), (u64, u64)>,
    /// Rules with series of their own, at most; later ones go to `other`.
    rule_series: usize,
    /// AF_XDP queues: (interface, queue) to their counts since the start.
    queues: BTreeMap<(String, u32), super::QueueReport>,
    /// Delivery latency over the run (nanoseconds), as of the last
    /// interval, and its sum in seconds: made into buckets when rendered.
    latency: Option<(Histogram<u64>, f64)>,
    /// Reloads that put new rules in force, and that were refused.
    reloads: (u64, u64),
    /// Rules in force: IPv4, IPv6.
    rules_in_force: (usize, usize),
    /// Whether sources are counted (untracked packets mean something).
    counts_sources: bool,
    /// Unix seconds at the end of the last interval.
    last_report: f64,
}

impl Model {
    fn start(&mut self, start: &Start) {
        for (name, ifindex) in start.each() {
            self.names.insert(ifindex, name.clone());
            self.ifaces.entry(name).or_default();
        }
        self.rules_in_force = (start.rules_v4, start.rules_v6);
    }

    fn interval(&mut self, i: &Interval<'_>) {
        if i.ifaces.is_empty() {
            if let Some((_, counts)) = self.ifaces.iter_mut().next() {
                counts.accumulate(i.counts);
            }
        } else {
            for each in i.ifaces {
                self.ifaces
                    .entry(each.iface.clone())
                    .or_default()
                    .accumulate(&each.counts);
            }
        }
        for r in i.rules {
            let mut key = (r.rule.clone(), r.action);
            if !self.rules.contains_key(&key) && self.rules.len() >= self.rule_series {
                key.0 = "other".to_owned();
            }
            let e = self.rules.entry(key).or_default();
            e.0 += r.packets;
            e.1 += r.bytes;
        }
        for q in i.queues {
            let name = self.names.get(&q.ifindex).cloned().unwrap_or_default();
            self.queues.insert((name, q.queue), *q);
        }
        self.counts_sources |= i.top.is_some() || i.flows.is_some();
        match &mut self.latency {
            Some((h, sum)) => {
                h.clone_from(i.latency_run);
                *sum = i.latency_sum_s;
            }
            None => self.latency = Some((i.latency_run.clone(), i.latency_sum_s)),
        }
        self.last_report = i.ts.as_secs_f64();
    }

    /// The exposition text of every family with a sample.
    fn render(&self) -> Bytes {
        let families = self.families();
        let mut text = String::with_capacity(16 << 10);
        match prometheus::TextEncoder::new().encode_utf8(&families, &mut text) {
            Ok(()) => Bytes::from(text),
            Err(e) => Bytes::from(format!("# traffic could not render its metrics: {e}\n")),
        }
    }

    fn families(&self) -> Vec<MetricFamily> {
        let mut f = Families::default();
        f.gauge(
            "traffic_build_info",
            "The running traffic: its version, always 1.",
            vec![(vec![("version", env!("CARGO_PKG_VERSION").to_owned())], 1.0)],
        );
        let per_iface = |get: &dyn Fn(&Counts) -> Vec<(&'static str, u64)>, label: &'static str| {
            self.ifaces
                .iter()
                .flat_map(|(name, counts)| {
                    get(counts).into_iter().map(move |(value, n)| {
                        (
                            vec![("iface", name.clone()), (label, value.to_owned())],
                            n as f64,
                        )
                    })
                })
                .collect::<Vec<_>>()
        };
        let one = |get: &dyn Fn(&Counts) -> u64| {
            self.ifaces
                .iter()
                .map(|(name, counts)| (vec![("iface", name.clone())], get(counts) as f64))
                .collect::<Vec<_>>()
        };
        f.counter(
            "traffic_packets_total",
            "Packets the XDP program saw, by the action they got.",
            per_iface(
                &|c| vec![("pass", c.pass), ("drop", c.drop), ("capture", c.capture)],
                "action",
            ),
        );
        f.counter(
            "traffic_bytes_total",
            "Bytes of the packets the XDP program saw (frame length, no FCS), by action.",
            per_iface(
                &|c| {
                    vec![
                        ("pass", c.pass_bytes),
                        ("drop", c.drop_bytes),
                        ("capture", c.capture_bytes),
                    ]
                },
                "action",
            ),
        );
        f.counter(
            "traffic_family_packets_total",
            "Well-formed IP packets, by address family.",
            per_iface(&|c| vec![("ipv4", c.ipv4), ("ipv6", c.ipv6)], "family"),
        );
        f.counter(
            "traffic_family_bytes_total",
            "Bytes of well-formed IP packets, by address family.",
            per_iface(
                &|c| vec![("ipv4", c.ipv4_bytes), ("ipv6", c.ipv6_bytes)],
                "family",
            ),
        );
        f.counter(
            "traffic_parse_total",
            "Frames by what the parser made of them: ip (IPv4 or IPv6, classified), non_ip (another EtherType), malformed (cut short or inconsistent).",
            per_iface(
                &|c| {
                    vec![
                        ("ip", c.ipv4 + c.ipv6),
                        ("non_ip", c.non_ip),
                        ("malformed", c.malformed),
                    ]
                },
                "outcome",
            ),
        );
        f.counter(
            "traffic_sampled_total",
            "Packets captured because --sample chose them.",
            one(&|c| c.sampled),
        );
        f.counter(
            "traffic_events_total",
            "Captured packets delivered to traffic (ring-buffer events and AF_XDP frames).",
            one(&|c| c.events),
        );
        f.counter(
            "traffic_events_lost_total",
            "Packets to capture that never reached traffic: ring buffer full, AF_XDP rings full, no socket on the queue, or unread at the end.",
            one(&|c| c.events_lost),
        );
        f.counter(
            "traffic_afxdp_redirected_total",
            "Packets redirected to an AF_XDP socket (--afxdp).",
            one(&|c| c.xsk_redirected),
        );
        if self.counts_sources {
            f.counter(
                "traffic_untracked_packets_total",
                "IP packets whose source the per-source maps had no room for (raise --top-capacity): in every other count, in no source's.",
                one(&|c| c.untracked),
            );
        }
        let queue = |get: &dyn Fn(&super::QueueReport) -> u64| {
            self.queues
                .iter()
                .map(|((name, q), r)| {
                    (
                        vec![("iface", name.clone()), ("queue", q.to_string())],
                        get(r) as f64,
                    )
                })
                .collect::<Vec<_>>()
        };
        f.counter(
            "traffic_afxdp_queue_delivered_total",
            "Frames an AF_XDP socket delivered, per receive queue.",
            queue(&|r| r.delivered),
        );
        let mut drops = Vec::new();
        for ((name, q), r) in &self.queues {
            for (reason, n) in [
                ("rx_ring_full", r.rx_ring_full),
                ("no_fill_frame", r.rx_dropped),
            ] {
                drops.push((
                    vec![
                        ("iface", name.clone()),
                        ("queue", q.to_string()),
                        ("reason", reason.to_owned()),
                    ],
                    n as f64,
                ));
            }
        }
        f.counter(
            "traffic_afxdp_queue_drops_total",
            "Frames an AF_XDP socket's kernel side dropped, per receive queue and reason (raise --afxdp-ring).",
            drops,
        );
        let rule = |bytes: bool| {
            self.rules
                .iter()
                .map(|((rule, action), (p, b))| {
                    (
                        vec![("rule", rule.clone()), ("action", action.to_string())],
                        if bytes { *b } else { *p } as f64,
                    )
                })
                .collect::<Vec<_>>()
        };
        f.counter(
            "traffic_rule_packets_total",
            "Packets per rule (its prefix and action; default: IP packets no rule matched; unclassified: frames with no source to look up; other: rules past --metrics-rules).",
            rule(false),
        );
        f.counter("traffic_rule_bytes_total", "Bytes per rule.", rule(true));
        f.gauge(
            "traffic_rules",
            "Rules in force, by address family.",
            vec![
                (
                    vec![("family", "ipv4".to_owned())],
                    self.rules_in_force.0 as f64,
                ),
                (
                    vec![("family", "ipv6".to_owned())],
                    self.rules_in_force.1 as f64,
                ),
            ],
        );
        f.counter(
            "traffic_reloads_total",
            "Rule reloads (SIGHUP, --watch-rules), by result.",
            vec![
                (vec![("result", "ok".to_owned())], self.reloads.0 as f64),
                (
                    vec![("result", "refused".to_owned())],
                    self.reloads.1 as f64,
                ),
            ],
        );
        if let Some((h, sum)) = &self.latency {
            let (counts, count) = buckets(h);
            let sum = *sum;
            f.histogram(
                "traffic_delivery_latency_seconds",
                "From the XDP hook to traffic reading the captured packet.",
                &counts,
                count,
                sum,
            );
        }
        if self.last_report > 0.0 {
            f.gauge(
                "traffic_last_report_timestamp_seconds",
                "Unix time of the end of the interval these counts cover.",
                vec![(Vec::new(), self.last_report)],
            );
        }
        f.0
    }
}

/// The cumulative counts of `h` (nanoseconds) at each of
/// [`LATENCY_BUCKETS`], and its count, to within the histogram's 1%
/// resolution: a sum over each bucket's range of counts rather than a walk
/// of every recorded value.
fn buckets(h: &Histogram<u64>) -> (Vec<u64>, u64) {
    let mut cumulative = Vec::with_capacity(LATENCY_BUCKETS.len());
    let mut below = 0u64;
    let mut low = 0u64;
    for &le in &LATENCY_BUCKETS {
        let high = (le * 1e9) as u64;
        if !h.is_empty() && low <= h.max() {
            below += h.count_between(low, high);
        }
        cumulative.push(below);
        low = h.next_non_equivalent(high);
    }
    (cumulative, h.len())
}

/// Metric families being built.
#[derive(Default)]
struct Families(Vec<MetricFamily>);

/// Samples: labels and a value.
type Samples = Vec<(Vec<(&'static str, String)>, f64)>;

fn labels(pairs: Vec<(&'static str, String)>) -> Vec<LabelPair> {
    pairs
        .into_iter()
        .map(|(name, value)| {
            let mut l = LabelPair::default();
            l.set_name(name.to_owned());
            l.set_value(value);
            l
        })
        .collect()
}

impl Families {
    /// A family of `kind` with a metric per sample, its value set by `set`.
    fn samples(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        samples: Samples,
        set: impl Fn(&mut Metric, f64),
    ) {
        let metrics = samples
            .into_iter()
            .map(|(l, v)| {
                let mut m = Metric::from_label(labels(l));
                set(&mut m, v);
                m
            })
            .collect();
        self.family(name, help, kind, metrics);
    }

    fn family(&mut self, name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) {
        if metrics.is_empty() {
            return;
        }
        let mut f = MetricFamily::default();
        f.set_name(name.to_owned());
        f.set_help(help.to_owned());
        f.set_field_type(kind);
        f.set_metric(metrics);
        self.0.push(f);
    }

    fn counter(&mut self, name: &str, help: &str, samples: Samples) {
        self.samples(name, help, MetricType::COUNTER, samples, |m, v| {
            let mut c = Counter::default();
            c.set_value(v);
            m.set_counter(c);
        });
    }

    fn gauge(&mut self, name: &str, help: &str, samples: Samples) {
        self.samples(name, help, MetricType::GAUGE, samples, |m, v| {
            let mut g = Gauge::default();
            g.set_value(v);
            m.set_gauge(g);
        });
    }

    fn histogram(&mut self, name: &str, help: &str, cumulative: &[u64], count: u64, sum: f64) {
        let mut h = PromHistogram::default();
        h.set_sample_count(count);
        h.set_sample_sum(sum);
        h.set_bucket(
            LATENCY_BUCKETS
                .iter()
                .zip(cumulative)
                .map(|(&le, &n)| {
                    let mut b = Bucket::default();
                    b.set_upper_bound(le);
                    b.set_cumulative_count(n);
                    b
                })
                .collect(),
        );
        let mut m = Metric::default();
        m.set_histogram(h);
        self.family(name, help, MetricType::HISTOGRAM, vec![m]);
    }
}

impl Sink for MetricsSink {
    fn takes_packets(&self) -> bool {
        false
    }

    fn start(&mut self, start: &Start) -> Result<(), SinkError> {
        self.update(|m| m.start(start));
        Ok(())
    }

    fn interval(&mut self, interval: &Interval<'_>) -> Result<(), SinkError> {
        self.update(|m| m.interval(interval));
        Ok(())
    }

    fn reload(&mut self, report: &ReloadReport, _: &Arc<RuleSet>) -> Result<(), SinkError> {
        self.update(|m| {
            if report.ok {
                m.reloads.0 += 1;
            } else {
                m.reloads.1 += 1;
            }
            m.rules_in_force = (report.rules_v4, report.rules_v6);
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::{IfaceCounts, Percentiles, json::RuleRow};

    fn start() -> Start {
        Start {
            iface: "veth0".into(),
            ifindex: 7,
            mode: crate::kernel::AttachMode::Skb,
            refused: Vec::new(),
            replaced: None,
            rules_v4: 2,
            rules_v6: 1,
            default: Action::Pass,
            afxdp: None,
            ifaces: Vec::new(),
        }
    }

    #[test]
    fn intervals_add_up_per_interface_action_and_rule() {
        let mut m = Model {
            rule_series: 1,
            ..Model::default()
        };
        m.start(&start());
        let counts = Counts {
            packets: 10,
            pass: 6,
            drop: 4,
            drop_bytes: 400,
            ipv4: 10,
            ipv4_bytes: 1000,
            ..Counts::default()
        };
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 2).unwrap();
        h.record_n(3_000, 5).unwrap();
        h.record_n(2_000_000, 1).unwrap();
        let rules = [
            RuleRow {
                rule: "192.0.2.0/24".into(),
                action: Action::Drop,
                packets: 4,
                bytes: 400,
            },
            // Past --metrics-rules 1: counted as `other`.
            RuleRow {
                rule: "198.51.100.0/24".into(),
                action: Action::Drop,
                packets: 1,
                bytes: 10,
            },
        ];
        let p = Percentiles::default();
        let interval = Interval {
            counts: &counts,
            latency: &p,
            length: Duration::from_secs(1),
            at: Duration::from_secs(1),
            ts: Duration::from_secs(1_700_000_000),
            rules: &rules,
            top: None,
            ifaces: &[],
            flows: None,
            latency_run: &h,
            latency_sum_s: 0.0,
            queues: &[],
        };
        m.interval(&interval);
        m.interval(&interval);
        let text = String::from_utf8(m.render().to_vec()).unwrap();
        for want in [
            "# TYPE traffic_packets_total counter",
            r#"traffic_packets_total{iface="veth0",action="drop"} 8"#,
            r#"traffic_bytes_total{iface="veth0",action="drop"} 800"#,
            r#"traffic_family_bytes_total{iface="veth0",family="ipv4"} 2000"#,
            r#"traffic_rule_packets_total{rule="192.0.2.0/24",action="drop"} 8"#,
            r#"traffic_rule_packets_total{rule="other",action="drop"} 2"#,
            r#"traffic_delivery_latency_seconds_bucket{le="0.000005"} 5"#,
            r#"traffic_delivery_latency_seconds_bucket{le="0.0025"} 6"#,
            "traffic_delivery_latency_seconds_count 6",
            r#"traffic_rules{family="ipv4"} 2"#,
        ] {
            assert!(text.contains(want), "{want} not in\n{text}");
        }
        assert!(!text.contains("untracked"), "no sources counted");
        assert!(!text.contains("198.51.100.0/24"), "past the rule series");
    }

    #[test]
    fn several_interfaces_are_labelled_apart() {
        let mut m = Model::default();
        let mut s = start();
        s.ifaces = ["a", "b"]
            .iter()
            .enumerate()
            .map(|(i, n)| crate::sink::json::IfaceStart {
                iface: (*n).into(),
                ifindex: i as u32 + 1,
                mode: crate::kernel::AttachMode::Skb,
                refused: Vec::new(),
                replaced: None,
                afxdp: None,
            })
            .collect();
        m.start(&s);
        let each = |n| Counts {
            packets: n,
            pass: n,
            ..Counts::default()
        };
        let ifaces = [
            IfaceCounts {
                iface: "a".into(),
                ifindex: 1,
                counts: each(3),
            },
            IfaceCounts {
                iface: "b".into(),
                ifindex: 2,
                counts: each(5),
            },
        ];
        let h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 2).unwrap();
        let p = Percentiles::default();
        m.interval(&Interval {
            counts: &each(8),
            latency: &p,
            length: Duration::from_secs(1),
            at: Duration::from_secs(1),
            ts: Duration::from_secs(1),
            rules: &[],
            top: None,
            ifaces: &ifaces,
            flows: None,
            latency_run: &h,
            latency_sum_s: 0.0,
            queues: &[],
        });
        let text = String::from_utf8(m.render().to_vec()).unwrap();
        assert!(text.contains(r#"traffic_packets_total{iface="a",action="pass"} 3"#));
        assert!(text.contains(r#"traffic_packets_total{iface="b",action="pass"} 5"#));
        assert!(!text.contains("veth0"));
    }

    #[test]
    fn answers_only_get_on_its_paths() {
        let page: Page = Arc::new(Mutex::new(Shared::default()));
        let req = |m: Method, p: &str| Request::builder().method(m).uri(p).body(()).unwrap();
        let r = respond(&req(Method::GET, "/metrics"), &page);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], CONTENT_TYPE);
        assert_eq!(
            respond(&req(Method::POST, "/metrics"), &page).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            respond(&req(Method::GET, "/nope"), &page).status(),
            StatusCode::NOT_FOUND
        );
    }
}
