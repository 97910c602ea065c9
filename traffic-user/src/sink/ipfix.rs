//! `--ipfix HOST:PORT`: IPFIX (RFC 7011) flow records to a collector, every
//! interval: one record per source address (or `--top-prefix` prefix) and
//! interface, with its packets and bytes of the interval, and one aggregate
//! record per interface for the packets no source could be counted for, so
//! that the records add up to the counters.
//!
//! Information elements, from the IANA registry: sourceIPv4Address (8) and
//! sourceIPv4PrefixLength (9), or sourceIPv6Address (27) and
//! sourceIPv6PrefixLength (29); ingressInterface (10, the ifindex);
//! forwardingStatus (89: 64 "forwarded" for pass and capture, 128
//! "dropped" for drop, 0 "unknown" for the aggregate, whose packets had
//! every action); packetDeltaCount (2); octetDeltaCount (1);
//! flowStartMilliseconds (152) and flowEndMilliseconds (153), the
//! interval's edges. The action is the one the rules in force give the
//! source's address.
//!
//! Over UDP every message fits one datagram of a 1,500-byte path, and the
//! templates go in the first message and again every `--ipfix-templates`
//! seconds (section 8.4); over TCP they go once per connection, and a
//! connection that breaks is opened again at the next interval. Records
//! that could not be sent are counted and reported at the end.

use std::{
    io::{self, Write as _},
    net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use traffic_common::{Count, TopKey};

use super::{Flow, Interval, ReloadReport, Sink, SinkError, Start, Summary};
use crate::{
    kernel::engine::TopSettings,
    rules::{Action, RuleSet},
};

/// Where and how a run exports (`--ipfix` and its options).
#[derive(Debug, Clone)]
pub struct IpfixSettings {
    /// The collector, as given (`HOST:PORT`); resolved when the run starts.
    pub collector: String,
    /// Over TCP rather than UDP.
    pub tcp: bool,
    /// The observation domain ID.
    pub domain: u32,
    /// How often templates are sent again over UDP.
    pub template_every: Duration,
}

/// Template IDs.
const IPV4: u16 = 256;
const IPV6: u16 = 257;
const UNTRACKED: u16 = 258;

/// Information elements (IANA), with their lengths.
const SOURCE_V4: (u16, u16) = (8, 4);
const PREFIX_V4: (u16, u16) = (9, 1);
const SOURCE_V6: (u16, u16) = (27, 16);
const PREFIX_V6: (u16, u16) = (29, 1);
const INGRESS: (u16, u16) = (10, 4);
const STATUS: (u16, u16) = (89, 1);
const PACKETS: (u16, u16) = (2, 8);
const OCTETS: (u16, u16) = (1, 8);
const START_MS: (u16, u16) = (152, 8);
const END_MS: (u16, u16) = (153, 8);

/// The fields every template ends with.
const COMMON: [(u16, u16); 6] = [INGRESS, STATUS, PACKETS, OCTETS, START_MS, END_MS];

/// forwardingStatus values (RFC 7270): status in the top two bits, reason 0.
const FORWARDED: u8 = 0b0100_0000;
const DROPPED: u8 = 0b1000_0000;
const UNKNOWN: u8 = 0;

/// Largest message over UDP when the path's MTU is not known: a 1,500-byte
/// MTU less IPv6 and UDP headers.
const UDP_MESSAGE: usize = 1452;
/// Largest message over TCP (the length field's limit).
const TCP_MESSAGE: usize = 65_535;

const HEADER: usize = 16;
const SET_HEADER: usize = 4;

/// Why `--ipfix` cannot start.
#[derive(Debug, thiserror::Error)]
pub enum IpfixError {
    /// The collector's name does not resolve.
    #[error("--ipfix {collector}: cannot resolve the collector's address: {source}")]
    Resolve {
        /// As given.
        collector: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Port 0, where no collector listens (a datagram to it goes nowhere).
    #[error(
        "--ipfix {collector}: port 0 is no collector's port; give the one it listens on (IPFIX's is 4739, nfcapd's default 9995)"
    )]
    PortZero {
        /// As given.
        collector: String,
    },
    /// No socket to it.
    #[error(
        "--ipfix {collector}: cannot reach the collector over {proto} ({source}); check that it listens there{hint}"
    )]
    Connect {
        /// As given.
        collector: String,
        /// `UDP` or `TCP`.
        proto: &'static str,
        /// What to try.
        hint: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Where messages go.
enum Transport {
    /// The socket, and the largest message its path carries whole.
    Udp(UdpSocket, usize),
    /// `None` while disconnected.
    Tcp(Option<TcpStream>),
}

/// What the exporter thread counted, read at the end.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    lost: u64,
    first_error: Option<String>,
}

/// Batches of records the exporter thread has not taken yet, at most.
const QUEUE: usize = 8;

/// One interval's counts, handed to the exporter thread, which makes the
/// records: the session's thread only copies them.
struct Batch {
    flows: Vec<Flow>,
    /// Per interface: packets no source could be counted for.
    untracked: Vec<(u32, Count)>,
    start_ms: u64,
    end_ms: u64,
    /// The rules in force, for each source's action.
    rules: Arc<RuleSet>,
}

/// Bytes sent back to back over UDP before a pause of [`PAUSE`] per
/// [`BURST`] bytes: a thousand 1,452-byte datagrams at once would overflow
/// a collector's socket buffer (nfcapd's default is 200 KiB), and the
/// records would be lost there, uncounted. 46 MB/s, about a million
/// records a second.
const BURST: usize = 16 * UDP_MESSAGE;
const PAUSE: Duration = Duration::from_micros(500);

/// The IPFIX export of a run. Records are made on the session's thread,
/// which only hands them over; a thread of its own builds the messages and
/// sends them, paced, so that a slow collector never holds up the run.
pub struct IpfixSink {
    rules: Arc<RuleSet>,
    /// The interfaces, for the aggregate records.
    ifaces: Vec<(String, u32)>,
    collector: SocketAddr,
    queue: Option<std::sync::mpsc::SyncSender<Batch>>,
    exporter: Option<std::thread::JoinHandle<Tally>>,
    /// Records of batches the exporter had no room for.
    dropped: u64,
}

impl IpfixSink {
    /// Resolves the collector and opens a socket to it (over TCP,
    /// connects), exporting by the rules `rules` and the per-source
    /// counting `top` (for the prefix lengths).
    ///
    /// # Errors
    ///
    /// When the collector does not resolve or cannot be reached.
    pub fn open(
        cfg: &IpfixSettings,
        rules: Arc<RuleSet>,
        top: Option<TopSettings>,
    ) -> Result<Self, IpfixError> {
        let collector = cfg
            .collector
            .to_socket_addrs()
            .and_then(|mut a| {
                a.next().ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, "the name has no address")
                })
            })
            .map_err(|source| IpfixError::Resolve {
                collector: cfg.collector.clone(),
                source,
            })?;
        if collector.port() == 0 {
            return Err(IpfixError::PortZero {
                collector: cfg.collector.clone(),
            });
        }
        let connect_error = |proto, hint, source| IpfixError::Connect {
            collector: cfg.collector.clone(),
            proto,
            hint,
            source,
        };
        let transport = if cfg.tcp {
            let stream = connect(collector)
                .map_err(|e| connect_error("TCP", " (or leave out --ipfix-tcp for UDP)", e))?;
            Transport::Tcp(Some(stream))
        } else {
            let any: SocketAddr = if collector.is_ipv4() {
                "0.0.0.0:0".parse().expect("an address")
            } else {
                "[::]:0".parse().expect("an address")
            };
            let socket = UdpSocket::bind(any)
                .and_then(|s| s.connect(collector).map(|()| s))
                .and_then(|s| {
                    s.set_write_timeout(Some(Duration::from_millis(100)))
                        .map(|()| s)
                })
                .map_err(|e| connect_error("UDP", "", e))?;
            let max = udp_message(&socket, collector.is_ipv4());
            Transport::Udp(socket, max)
        };
        let top = top.unwrap_or(TopSettings {
            capacity: 0,
            prefix_v4: 32,
            prefix_v6: 128,
        });
        let (queue, batches) = std::sync::mpsc::sync_channel::<Batch>(QUEUE);
        let mut exporter = Exporter {
            prefix: (top.prefix_v4.min(32), top.prefix_v6.min(128)),
            transport,
            collector,
            domain: cfg.domain,
            template_every: cfg.template_every,
            templates_sent: None,
            sequence: 0,
            tally: Tally::default(),
        };
        let exporter = std::thread::Builder::new()
            .name("ipfix".into())
            .spawn(move || {
                for batch in batches {
                    let records = exporter.records(&batch);
                    exporter.export(&records);
                }
                exporter.tally
            })
            .map_err(|e| connect_error(if cfg.tcp { "TCP" } else { "UDP" }, "", e))?;
        Ok(Self {
            rules,
            ifaces: Vec::new(),
            collector,
            queue: Some(queue),
            exporter: Some(exporter),
            dropped: 0,
        })
    }
}

/// The forwardingStatus of a source under `rules`.
fn action_status(rules: &RuleSet, key: &TopKey) -> u8 {
    match rules.action_for(key.addr()) {
        Action::Drop => DROPPED,
        Action::Pass | Action::Capture => FORWARDED,
    }
}

/// The exporter thread's side: the socket, the templates, the sequence.
struct Exporter {
    /// The prefix lengths sources are counted by (`--top-prefix`).
    prefix: (u8, u8),
    transport: Transport,
    collector: SocketAddr,
    domain: u32,
    template_every: Duration,
    /// When the templates were last sent, or `None`: send them next.
    templates_sent: Option<Instant>,
    /// Data records sent (the messages' sequence numbers).
    sequence: u32,
    tally: Tally,
}

impl Exporter {
    /// The records of one interval: one per source and interface, one
    /// aggregate per interface for what no source could be counted for.
    fn records(&self, b: &Batch) -> Vec<Record> {
        let (start_ms, end_ms) = (b.start_ms, b.end_ms);
        let sources = b.flows.iter().map(|f| Record {
            source: Some((
                f.key,
                if f.key.as_v4().is_some() {
                    self.prefix.0
                } else {
                    self.prefix.1
                },
            )),
            ifindex: f.ifindex,
            status: action_status(&b.rules, &f.key),
            packets: f.count.packets,
            bytes: f.count.bytes,
            start_ms,
            end_ms,
        });
        let untracked = b
            .untracked
            .iter()
            .filter(|(_, c)| c.packets > 0)
            .map(|&(ifindex, c)| Record {
                source: None,
                ifindex,
                status: UNKNOWN,
                packets: c.packets,
                bytes: c.bytes,
                start_ms,
                end_ms,
            });
        sources.chain(untracked).collect()
    }

    fn max_message(&self) -> usize {
        match self.transport {
            Transport::Udp(_, max) => max,
            Transport::Tcp(_) => TCP_MESSAGE,
        }
    }

    /// Whether the templates go in the next message: the first, then over
    /// UDP every `template_every`, over TCP once per connection.
    fn templates_due(&self) -> bool {
        match (&self.transport, self.templates_sent) {
            (_, None) => true,
            (Transport::Udp(..), Some(at)) => at.elapsed() >= self.template_every,
            (Transport::Tcp(_), Some(_)) => false,
        }
    }

    /// Over TCP, opens the connection again if it broke; the templates
    /// then go first.
    fn reconnect(&mut self) {
        if let Transport::Tcp(stream @ None) = &mut self.transport
            && let Ok(s) = connect(self.collector)
        {
            *stream = Some(s);
            self.templates_sent = None;
        }
    }

    /// Sends one interval's records (and the templates when due).
    fn export(&mut self, records: &[Record]) {
        self.reconnect();
        if records.is_empty() && !self.templates_due() {
            return;
        }
        let mut b = Builder::new(self.max_message(), self.domain, self.sequence);
        if self.templates_due() {
            b.templates();
            self.templates_sent = Some(Instant::now());
        }
        for r in records {
            b.record(r);
        }
        let (messages, sequence) = b.finish();
        self.sequence = sequence;
        // Bytes sent since the last pause.
        let mut owed = 0;
        for (m, records) in &messages {
            if owed >= BURST && matches!(self.transport, Transport::Udp(..)) {
                std::thread::sleep(PAUSE.mul_f64(owed as f64 / BURST as f64));
                owed = 0;
            }
            owed += m.len();
            let records = u64::from(*records);
            let result = match &mut self.transport {
                Transport::Udp(s, _) => send_udp(s, m),
                Transport::Tcp(Some(stream)) => stream.write_all(m),
                Transport::Tcp(None) => Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the connection to the collector broke",
                )),
            };
            match result {
                Ok(()) => self.tally.sent += records,
                Err(e) => {
                    self.tally.lost += records;
                    self.tally.first_error.get_or_insert_with(|| e.to_string());
                    if let Transport::Tcp(stream) = &mut self.transport {
                        // Opened again at the next interval.
                        *stream = None;
                    }
                }
            }
        }
    }
}

/// Connects over TCP, not waiting long.
fn connect(to: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
    s.set_write_timeout(Some(Duration::from_secs(1)))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// The largest message a datagram on `s`'s path carries whole: the route's
/// MTU (`IP_MTU`, `IPV6_MTU` of the connected socket) less the IP and UDP
/// headers, at most the 65,535 bytes a message can say it is long, so that
/// a collector on loopback gets ten thousand records in 7 datagrams rather
/// than 290 (each a pass through both network stacks and a wake-up of the
/// collector). [`UDP_MESSAGE`] when the kernel does not say.
fn udp_message(s: &UdpSocket, v4: bool) -> usize {
    use std::os::fd::AsRawFd as _;
    let (level, name, headers) = if v4 {
        (libc::IPPROTO_IP, libc::IP_MTU, 20 + 8)
    } else {
        (libc::IPPROTO_IPV6, libc::IPV6_MTU, 40 + 8)
    };
    let mut mtu: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: an int-sized option into an int, with its length.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            level,
            name,
            (&raw mut mtu).cast(),
            &raw mut len,
        )
    };
    match usize::try_from(mtu) {
        Ok(mtu) if rc == 0 && mtu > headers + HEADER + 64 => {
            // An IPv4 packet's length field counts its header too, and
            // stops at 65,535; loopback's MTU is 65,536.
            let mtu = if v4 { mtu.min(65_535) } else { mtu };
            (mtu - headers).min(TCP_MESSAGE)
        }
        _ => UDP_MESSAGE,
    }
}

/// Sends one datagram, retrying briefly while the socket's buffer is full.
fn send_udp(s: &UdpSocket, m: &[u8]) -> io::Result<()> {
    let mut tries = 0;
    loop {
        match s.send(m) {
            Ok(_) => return Ok(()),
            Err(e)
                if tries < 50
                    && (e.kind() == io::ErrorKind::WouldBlock
                        || e.raw_os_error() == Some(libc::ENOBUFS)) =>
            {
                tries += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
            // The collector's port was closed when the last one arrived
            // (ICMP port unreachable): this one may well get through.
            Err(e) if tries == 0 && e.kind() == io::ErrorKind::ConnectionRefused => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

/// One data record.
#[derive(Clone, Copy, Debug)]
struct Record {
    /// The source and its prefix length; `None` for the aggregate.
    source: Option<(TopKey, u8)>,
    ifindex: u32,
    status: u8,
    packets: u64,
    bytes: u64,
    start_ms: u64,
    end_ms: u64,
}

impl Record {
    fn template(&self) -> u16 {
        match self.source {
            Some((key, _)) if key.as_v4().is_some() => IPV4,
            Some(_) => IPV6,
            None => UNTRACKED,
        }
    }
}

/// The fields of the templates: a source and its prefix length, then
/// [`COMMON`].
const FIELDS_V4: [(u16, u16); 8] = with_source(SOURCE_V4, PREFIX_V4);
const FIELDS_V6: [(u16, u16); 8] = with_source(SOURCE_V6, PREFIX_V6);

const fn with_source(source: (u16, u16), prefix: (u16, u16)) -> [(u16, u16); 8] {
    let mut f = [
        source,
        prefix,
        (0, 0),
        (0, 0),
        (0, 0),
        (0, 0),
        (0, 0),
        (0, 0),
    ];
    let mut i = 0;
    while i < COMMON.len() {
        f[2 + i] = COMMON[i];
        i += 1;
    }
    f
}

fn fields(template: u16) -> &'static [(u16, u16)] {
    match template {
        IPV4 => &FIELDS_V4,
        IPV6 => &FIELDS_V6,
        _ => &COMMON,
    }
}

/// A record's size under template `id`; `None` for a set that is not data.
fn record_size(id: u16) -> Option<usize> {
    (id >= 256).then(|| fields(id).iter().map(|(_, len)| usize::from(*len)).sum())
}

/// Messages being built.
struct Builder {
    max: usize,
    domain: u32,
    /// The sequence number of the message being built.
    sequence: u32,
    /// Data records in it.
    records: u32,
    message: Vec<u8>,
    /// Where the open set's header is, and its ID.
    set: Option<(usize, u16)>,
    /// The messages made, each with its data records.
    done: Vec<(Vec<u8>, u32)>,
}

impl Builder {
    fn new(max: usize, domain: u32, sequence: u32) -> Self {
        let mut b = Self {
            max,
            domain,
            sequence,
            records: 0,
            message: Vec::with_capacity(max),
            set: None,
            done: Vec::new(),
        };
        b.begin();
        b
    }

    fn begin(&mut self) {
        self.message.clear();
        self.message.extend_from_slice(&10u16.to_be_bytes());
        self.message.extend_from_slice(&0u16.to_be_bytes()); // length, at the end
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as u32;
        self.message.extend_from_slice(&now.to_be_bytes());
        self.message.extend_from_slice(&self.sequence.to_be_bytes());
        self.message.extend_from_slice(&self.domain.to_be_bytes());
        self.records = 0;
        self.set = None;
    }

    fn close_set(&mut self) {
        if let Some((at, _)) = self.set.take() {
            let len = (self.message.len() - at) as u16;
            self.message[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
        }
    }

    /// Ends the message being built, if it has anything.
    fn end(&mut self) {
        self.close_set();
        if self.message.len() > HEADER {
            let len = self.message.len() as u16;
            self.message[2..4].copy_from_slice(&len.to_be_bytes());
            let message = std::mem::replace(&mut self.message, Vec::with_capacity(self.max));
            self.done.push((message, self.records));
            self.sequence = self.sequence.wrapping_add(self.records);
        }
        self.begin();
    }

    /// Makes room for `len` more bytes in a set `id`, opening it (or a new
    /// message) as needed.
    fn room(&mut self, id: u16, len: usize) {
        let open = matches!(self.set, Some((_, s)) if s == id);
        let need = len + if open { 0 } else { SET_HEADER };
        if self.message.len() + need > self.max {
            self.end();
        }
        if !matches!(self.set, Some((_, s)) if s == id) {
            self.close_set();
            self.set = Some((self.message.len(), id));
            self.message.extend_from_slice(&id.to_be_bytes());
            self.message.extend_from_slice(&0u16.to_be_bytes());
        }
    }

    /// A template set with the three templates.
    fn templates(&mut self) {
        for id in [IPV4, IPV6, UNTRACKED] {
            let f = fields(id);
            self.room(2, 4 + 4 * f.len());
            self.message.extend_from_slice(&id.to_be_bytes());
            self.message
                .extend_from_slice(&(f.len() as u16).to_be_bytes());
            for &(ie, len) in f {
                self.message.extend_from_slice(&ie.to_be_bytes());
                self.message.extend_from_slice(&len.to_be_bytes());
            }
        }
    }

    fn record(&mut self, r: &Record) {
        let id = r.template();
        let size = record_size(id).unwrap_or(0);
        self.room(id, size);
        let m = &mut self.message;
        if let Some((key, len)) = r.source {
            match key.as_v4() {
                Some(a) => m.extend_from_slice(&a.to_be_bytes()),
                None => {
                    for w in key.words {
                        m.extend_from_slice(&w.to_be_bytes());
                    }
                }
            }
            m.push(len);
        }
        m.extend_from_slice(&r.ifindex.to_be_bytes());
        m.push(r.status);
        m.extend_from_slice(&r.packets.to_be_bytes());
        m.extend_from_slice(&r.bytes.to_be_bytes());
        m.extend_from_slice(&r.start_ms.to_be_bytes());
        m.extend_from_slice(&r.end_ms.to_be_bytes());
        self.records += 1;
    }

    /// The messages, each with its data records, and the sequence number
    /// after them.
    fn finish(mut self) -> (Vec<(Vec<u8>, u32)>, u32) {
        self.end();
        (self.done, self.sequence)
    }
}

impl Sink for IpfixSink {
    fn takes_packets(&self) -> bool {
        false
    }

    fn start(&mut self, start: &Start) -> Result<(), SinkError> {
        self.ifaces = start.each();
        Ok(())
    }

    fn interval(&mut self, i: &Interval<'_>) -> Result<(), SinkError> {
        let untracked: Vec<(u32, Count)> = if i.ifaces.is_empty() {
            let ifindex = self.ifaces.first().map_or(0, |(_, x)| *x);
            vec![(
                ifindex,
                Count {
                    packets: i.counts.untracked,
                    bytes: i.counts.untracked_bytes,
                },
            )]
        } else {
            i.ifaces
                .iter()
                .map(|x| {
                    (
                        x.ifindex,
                        Count {
                            packets: x.counts.untracked,
                            bytes: x.counts.untracked_bytes,
                        },
                    )
                })
                .collect()
        };
        let batch = Batch {
            flows: i.flows.unwrap_or(&[]).to_vec(),
            untracked,
            start_ms: i.ts.saturating_sub(i.length).as_millis() as u64,
            end_ms: i.ts.as_millis() as u64,
            rules: Arc::clone(&self.rules),
        };
        let n = batch.flows.len() as u64 + batch.untracked.len() as u64;
        if let Some(queue) = &self.queue
            && queue.try_send(batch).is_err()
        {
            self.dropped += n;
        }
        Ok(())
    }

    fn reload(&mut self, _: &ReloadReport, rules: &Arc<RuleSet>) -> Result<(), SinkError> {
        self.rules = Arc::clone(rules);
        Ok(())
    }

    fn finish(&mut self, _: &Summary<'_>) -> Result<(), SinkError> {
        // Closing the queue ends the thread once it has sent what it holds.
        self.queue = None;
        let tally = self
            .exporter
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        let lost = tally.lost + self.dropped;
        if lost > 0 {
            let why = match (&tally.first_error, self.dropped) {
                (Some(e), _) => e.clone(),
                (None, _) => "the collector took them too slowly".to_owned(),
            };
            crate::say!(
                "traffic: --ipfix: {lost} of {} flow records could not be sent to {} ({why}); the collector's totals are short by them",
                lost + tally.sent,
                self.collector,
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Data records in a message, read from its data sets' lengths.
    fn records_in(m: &[u8]) -> u32 {
        let mut n = 0;
        let mut at = HEADER;
        while at + SET_HEADER <= m.len() {
            let id = u16::from_be_bytes([m[at], m[at + 1]]);
            let len = usize::from(u16::from_be_bytes([m[at + 2], m[at + 3]]));
            if len < SET_HEADER {
                break;
            }
            if let Some(size) = record_size(id) {
                n += ((len - SET_HEADER) / size) as u32;
            }
            at += len;
        }
        n
    }

    fn record(i: u32) -> Record {
        Record {
            source: Some((TopKey::v4(0xc000_0200 + i), 32)),
            ifindex: 3,
            status: DROPPED,
            packets: u64::from(i) + 1,
            bytes: 100,
            start_ms: 1_000,
            end_ms: 2_000,
        }
    }

    #[test]
    fn messages_fit_a_datagram_and_number_their_records() {
        let mut b = Builder::new(UDP_MESSAGE, 7, 40);
        b.templates();
        for i in 0..100 {
            b.record(&record(i));
        }
        let (messages, sequence) = b.finish();
        assert!(messages.len() > 1);
        assert_eq!(sequence, 140);
        let mut next = 40;
        let mut total = 0;
        for (m, records) in &messages {
            assert!(m.len() <= UDP_MESSAGE);
            assert_eq!(u16::from_be_bytes([m[0], m[1]]), 10);
            assert_eq!(usize::from(u16::from_be_bytes([m[2], m[3]])), m.len());
            assert_eq!(u32::from_be_bytes(m[8..12].try_into().unwrap()), next);
            assert_eq!(u32::from_be_bytes(m[12..16].try_into().unwrap()), 7);
            let n = records_in(m);
            assert_eq!(n, *records, "the count the message is sent with");
            next += n;
            total += n;
        }
        assert_eq!(total, 100);
        // The templates lead the first message: set ID 2, IPv4 first.
        let m = &messages[0].0;
        assert_eq!(u16::from_be_bytes([m[16], m[17]]), 2);
        assert_eq!(u16::from_be_bytes([m[20], m[21]]), IPV4);
        assert_eq!(u16::from_be_bytes([m[22], m[23]]), 8, "eight fields");
    }

    #[test]
    fn messages_over_loopback_take_its_whole_mtu() {
        // Connecting a UDP socket sends nothing.
        let v4 = UdpSocket::bind("127.0.0.1:0").unwrap();
        v4.connect("127.0.0.1:9").unwrap();
        assert_eq!(udp_message(&v4, true), 65_507);
        if let Ok(v6) = UdpSocket::bind("[::1]:0") {
            v6.connect("[::1]:9").unwrap();
            assert_eq!(udp_message(&v6, false), 65_488);
        }
        // Not connected: no route, so no MTU to go by.
        let loose = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(udp_message(&loose, true), UDP_MESSAGE);
    }

    #[test]
    fn a_record_is_its_template_long() {
        let mut b = Builder::new(UDP_MESSAGE, 1, 0);
        b.record(&record(1));
        let v6 = Record {
            source: Some((
                TopKey {
                    words: [0x2001_0db8, 0, 0, 1],
                },
                128,
            )),
            ..record(2)
        };
        b.record(&v6);
        b.record(&Record {
            source: None,
            ..record(3)
        });
        let (m, _) = b.finish();
        let (m, records) = &m[0];
        assert_eq!(*records, 3);
        let sizes = [4 + 1 + 37, 16 + 1 + 37, 37];
        assert_eq!(
            m.len(),
            HEADER + 3 * SET_HEADER + sizes.iter().sum::<usize>()
        );
        // The IPv4 record: address, prefix length, ifindex, status, counts.
        let r = &m[HEADER + SET_HEADER..];
        assert_eq!(&r[..4], &[192, 0, 2, 1]);
        assert_eq!(r[4], 32);
        assert_eq!(u32::from_be_bytes(r[5..9].try_into().unwrap()), 3);
        assert_eq!(r[9], DROPPED);
        assert_eq!(u64::from_be_bytes(r[10..18].try_into().unwrap()), 2);
    }
}
