//! Source-prefix rules: parsing, validation and longest-prefix semantics.
//!
//! A rule set maps IPv4 and IPv6 prefixes to an [`Action`]. The kernel keeps
//! them in a multibit trie ([`crate::kernel::table`]); this module is the
//! userspace model of the same semantics, built differently (a sorted list
//! searched per prefix length), so that tests can hold one against the
//! other, and so that reports can name the rule a packet matched. A packet from an address no rule covers gets the
//! default action.
//!
//! # Examples
//!
//! ```
//! use traffic::rules::{Action, RuleSet, Origin};
//!
//! let mut rules = RuleSet::new(Action::Pass);
//! rules.add_str(Action::Drop, "192.0.2.0/24", Origin::Flag("--drop")).unwrap();
//! rules.add_str(Action::Pass, "192.0.2.7", Origin::Flag("--pass")).unwrap();
//! assert!(rules.seal().is_empty());
//! assert_eq!(rules.action_for("192.0.2.7".parse().unwrap()), Action::Pass);
//! assert_eq!(rules.action_for("192.0.2.8".parse().unwrap()), Action::Drop);
//! ```

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    str::FromStr,
};

use traffic_common::action;

/// What happens to a packet.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Hand it to the network stack.
    Pass,
    /// Drop it in the driver.
    Drop,
    /// Hand it to the network stack and to the capture path.
    Capture,
}

impl Action {
    /// The value the XDP program uses for this action.
    pub const fn to_kernel(self) -> u32 {
        match self {
            Action::Pass => action::PASS,
            Action::Drop => action::DROP,
            Action::Capture => action::CAPTURE,
        }
    }

    /// The action for a value the XDP program uses, if it is one.
    pub const fn from_kernel(value: u32) -> Option<Self> {
        match value {
            action::PASS => Some(Action::Pass),
            action::DROP => Some(Action::Drop),
            action::CAPTURE => Some(Action::Capture),
            _ => None,
        }
    }

    /// The word used in rule files and on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Pass => "pass",
            Action::Drop => "drop",
            Action::Capture => "capture",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "pass" => Ok(Action::Pass),
            "drop" => Ok(Action::Drop),
            "capture" => Ok(Action::Capture),
            _ => Err(()),
        }
    }
}

/// An IPv4 or IPv6 prefix with its host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    /// The prefix of `len` bits starting at `addr`.
    ///
    /// # Errors
    ///
    /// When `len` is longer than the address or `addr` has bits set past it
    /// (as in `192.0.2.1/24`, which is ambiguous: a host or a network?).
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, CidrError> {
        let max = max_len(addr);
        if len > max {
            return Err(CidrError::PrefixTooLong { len, max });
        }
        if let IpAddr::V6(a) = addr
            && len >= 96
            && let Some(v4) = a.to_ipv4_mapped()
        {
            return Err(match Cidr::new(IpAddr::V4(v4), len - 96) {
                Ok(ipv4) => CidrError::Ipv4Mapped { ipv4 },
                Err(e) => e,
            });
        }
        let cidr = Cidr { addr, len };
        if cidr.network() != addr {
            return Err(CidrError::HostBitsSet {
                network: Cidr {
                    addr: cidr.network(),
                    len,
                },
            });
        }
        Ok(cidr)
    }

    /// The first address of the prefix.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether this is IPv4's or IPv6's default route (`/0`).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from_bits(a.to_bits() & mask32(self.len))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from_bits(a.to_bits() & mask128(self.len))),
        }
    }

    /// Whether `ip` lies inside this prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => ip.to_bits() & mask32(self.len) == net.to_bits(),
            (IpAddr::V6(net), IpAddr::V6(ip)) => ip.to_bits() & mask128(self.len) == net.to_bits(),
            _ => false,
        }
    }

    /// The `index`-th address of the prefix, wrapping around its size.
    pub fn nth(&self, index: u128) -> IpAddr {
        match self.addr {
            IpAddr::V4(net) => {
                let host = !mask32(self.len);
                IpAddr::V4(Ipv4Addr::from_bits(net.to_bits() | (index as u32 & host)))
            }
            IpAddr::V6(net) => {
                let host = !mask128(self.len);
                IpAddr::V6(Ipv6Addr::from_bits(net.to_bits() | (index & host)))
            }
        }
    }
}

const fn max_len(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// `text` as an error shows it: control characters escaped (`\u{0}`,
/// `\u{1b}`), so that what a file or flag held cannot hide in, or act on,
/// the terminal.
fn shown(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Why a prefix did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The address part is neither an IPv4 nor an IPv6 address.
    #[error("`{}` is not an IPv4 or IPv6 address", shown(.text))]
    BadAddress {
        /// The address text.
        text: String,
    },
    /// The length after `/` is not a number.
    #[error("prefix length `{}` is not a number", shown(.text))]
    BadLength {
        /// The length text.
        text: String,
    },
    /// The length is longer than the address.
    #[error("prefix length /{len} is longer than the address (at most /{max})")]
    PrefixTooLong {
        /// The length given.
        len: u8,
        /// 32 or 128.
        max: u8,
    },
    /// The address has bits set after the prefix length.
    #[error("host bits are set; did you mean {network}?")]
    HostBitsSet {
        /// The prefix with its host bits cleared.
        network: Cidr,
    },
    /// An IPv4-mapped IPv6 prefix (`::ffff:a.b.c.d/96+n`): IPv4 packets
    /// carry IPv4 source addresses, so it would never match.
    #[error(
        "an IPv4-mapped IPv6 prefix never matches IPv4 packets (they carry IPv4 addresses); write it as {ipv4}"
    )]
    Ipv4Mapped {
        /// The same prefix in IPv4.
        ipv4: Cidr,
    },
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// Parses `ADDR/LEN` or a bare `ADDR` (a /32 or /128).
    fn from_str(s: &str) -> Result<Self, CidrError> {
        let (addr_text, len_text) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| CidrError::BadAddress {
            text: addr_text.to_owned(),
        })?;
        let len = match len_text {
            None => max_len(addr),
            Some(l) => {
                let n: u16 = l
                    .parse()
                    .map_err(|_| CidrError::BadLength { text: l.to_owned() })?;
                u8::try_from(n).map_err(|_| CidrError::PrefixTooLong {
                    len: u8::MAX,
                    max: max_len(addr),
                })?
            }
        };
        Cidr::new(addr, len)
    }
}

/// Where a rule came from, for error messages and reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag such as `--drop`.
    Flag(&'static str),
    /// A line of a rules file (1-based).
    File {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "{flag}"),
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
        }
    }
}

/// One prefix and what to do with packets from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The source prefix.
    pub cidr: Cidr,
    /// The action for packets from it.
    pub action: Action,
    /// Where the rule was given.
    pub origin: Origin,
}

/// A problem with one rule; the set collects them all before failing.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// The prefix did not parse.
    #[error("{origin}: bad prefix `{}`: {source}", shown(.text))]
    Cidr {
        /// Where it was given.
        origin: Origin,
        /// The text given.
        text: String,
        /// Why it did not parse.
        #[source]
        source: CidrError,
    },
    /// A rules-file line whose first word is not an action.
    #[error("{origin}: unknown action `{}`; expected pass, drop or capture", shown(.word))]
    BadAction {
        /// Where it was given.
        origin: Origin,
        /// The word found.
        word: String,
    },
    /// A rules-file line that is not `ACTION CIDR`.
    #[error(
        "{origin}: expected `ACTION CIDR` (e.g. `drop 192.0.2.0/24`), found `{}`",
        shown(.line)
    )]
    BadLine {
        /// Where it was given.
        origin: Origin,
        /// The line, trimmed.
        line: String,
    },
    /// The same prefix was given twice with different actions.
    #[error(
        "{origin}: {cidr} is already a `{earlier_action}` rule (from {earlier}); a prefix can have only one action"
    )]
    Conflict {
        /// Where the second rule was given.
        origin: Origin,
        /// The prefix.
        cidr: Cidr,
        /// The action it already has.
        earlier_action: Action,
        /// Where it was first given.
        earlier: Origin,
    },
    /// A rules-file line longer than [`MAX_LINE`].
    #[error(
        "{origin}: the line is longer than {MAX_LINE} bytes; is this a rules file? (reading stopped there)"
    )]
    LongLine {
        /// Where.
        origin: Origin,
    },
    /// A rules-file line that is not UTF-8 text.
    #[error(
        "{origin}: byte 0x{byte:02x} in column {column} is not UTF-8 text; is this a rules file? (reading stopped there)"
    )]
    NotText {
        /// Where.
        origin: Origin,
        /// The first byte that is not text.
        byte: u8,
        /// Its column, from 1.
        column: usize,
    },
    /// Too many bad lines in one file.
    #[error("{path}: more than {MAX_ERRORS} bad lines; reading stopped at line {line}")]
    TooManyErrors {
        /// The file.
        path: PathBuf,
        /// Where reading stopped.
        line: usize,
    },
    /// A rules file could not be read.
    #[error("cannot read rules file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The longest line a rules file may have, in bytes.
pub const MAX_LINE: usize = 4096;
/// Bad lines reported from one rules file before reading stops.
pub const MAX_ERRORS: usize = 50;
/// How long a rules FIFO may take to have something to read.
pub const FIFO_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads one line, without its newline, into `line`; at most [`MAX_LINE`]
/// bytes. Returns the bytes consumed (0 at the end).
///
/// # Errors
///
/// `InvalidData` for a longer line; I/O errors.
fn read_line(reader: &mut impl std::io::BufRead, line: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut consumed = 0;
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(consumed);
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let content = &buf[..if done { take - 1 } else { take }];
        if line.len() + content.len() > MAX_LINE {
            return Err(std::io::Error::from(std::io::ErrorKind::InvalidData));
        }
        line.extend_from_slice(content);
        reader.consume(take);
        consumed += take;
        if done {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(consumed);
        }
    }
}

/// Opens a rules file for reading without blocking on a FIFO that has no
/// writer: such a FIFO is waited on for [`FIFO_WAIT`], then refused.
fn open_rules(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::FileTypeExt as _;
    let (file, ty) = crate::os::open_input(path, "a rules file")?;
    if ty.is_fifo() {
        let mut pfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&file),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = FIFO_WAIT.as_millis() as libc::c_int;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n <= 0 {
            return Err(std::io::Error::other(format!(
                "it is a FIFO and nothing was written to it within {} s; start its writer first",
                FIFO_WAIT.as_secs()
            )));
        }
    }
    Ok(file)
}

/// Where a group of rules came from: a flag, or a file (lines apart).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    Flag(&'static str),
    File(PathBuf),
}

/// An address stored in a rule: IPv4's 32 bits or IPv6's 128.
trait Addr: Copy + Ord + std::fmt::Debug {
    const BITS: u8;
    fn bits(self) -> u128;
    fn from_bits(bits: u128) -> Self;
    fn ip(self) -> IpAddr;
}

impl Addr for u32 {
    const BITS: u8 = 32;
    fn bits(self) -> u128 {
        u128::from(self) << 96
    }
    fn from_bits(bits: u128) -> Self {
        (bits >> 96) as u32
    }
    fn ip(self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from_bits(self))
    }
}

/// IPv6 addresses as four words: 4-byte alignment keeps a stored rule at
/// 24 bytes where a `u128` would pad it to 32.
impl Addr for [u32; 4] {
    const BITS: u8 = 128;
    fn bits(self) -> u128 {
        let [a, b, c, d] = self.map(u128::from);
        (a << 96) | (b << 64) | (c << 32) | d
    }
    fn from_bits(bits: u128) -> Self {
        let w = |i: u32| (bits >> (96 - 32 * i)) as u32;
        [w(0), w(1), w(2), w(3)]
    }
    fn ip(self) -> IpAddr {
        IpAddr::V6(Ipv6Addr::from_bits(self.bits()))
    }
}

/// A matching rule's place: its index in its family's list.
enum Matched {
    V4(usize),
    V6(usize),
}

/// One rule as the set keeps it: 12 bytes for IPv4, 24 for IPv6, whatever
/// its origin, so a million rules take 12 MB and no string of their own.
#[derive(Clone, Copy, Debug)]
struct Stored<A> {
    addr: A,
    /// The line of its file; for a flag, its position among the flags.
    line: u32,
    /// Index into [`RuleSet::sources`].
    source: u16,
    len: u8,
    /// The action's kernel value.
    action: u8,
}

impl<A: Addr> Stored<A> {
    fn action(&self) -> Action {
        Action::from_kernel(u32::from(self.action)).unwrap_or(Action::Pass)
    }

    fn cidr(&self) -> Cidr {
        Cidr {
            addr: self.addr.ip(),
            len: self.len,
        }
    }

    /// The prefix: what makes two rules the same.
    fn prefix(&self) -> (u8, A) {
        (self.len, self.addr)
    }

    /// The table's order: length, address; then the order given, so that of
    /// equal prefixes the first given comes first.
    fn order(&self) -> (u8, A, u16, u32) {
        (self.len, self.addr, self.source, self.line)
    }
}

/// The rules of one family.
#[derive(Clone, Debug)]
struct Family<A> {
    rules: Vec<Stored<A>>,
    /// Once sealed: where each length's rules start in `rules`, the end
    /// last (`BITS + 2` entries).
    starts: Vec<u32>,
}

impl<A: Addr> Family<A> {
    fn new() -> Self {
        Self {
            rules: Vec::new(),
            starts: vec![0; usize::from(A::BITS) + 2],
        }
    }

    /// Sorts by prefix, drops repeated prefixes (keeping the first given)
    /// and returns the repeats whose action differs, each with the rule it
    /// repeats.
    fn seal(&mut self) -> Vec<(Stored<A>, Stored<A>)> {
        self.rules.sort_unstable_by_key(Stored::order);
        let mut conflicts = Vec::new();
        let mut kept = 0;
        for i in 0..self.rules.len() {
            let r = self.rules[i];
            if kept > 0 && self.rules[kept - 1].prefix() == r.prefix() {
                let first = self.rules[kept - 1];
                if first.action != r.action && conflicts.len() < MAX_ERRORS {
                    conflicts.push((r, first));
                }
                continue;
            }
            self.rules[kept] = r;
            kept += 1;
        }
        self.rules.truncate(kept);
        self.rules.shrink_to_fit();
        let mut starts = vec![0u32; usize::from(A::BITS) + 2];
        for r in &self.rules {
            starts[usize::from(r.len) + 1] += 1;
        }
        for k in 1..starts.len() {
            starts[k] += starts[k - 1];
        }
        self.starts = starts;
        conflicts
    }

    /// The index of the longest prefix containing `addr`.
    fn lookup(&self, bits: u128) -> Option<usize> {
        for len in (0..=A::BITS).rev() {
            let (lo, hi) = (
                self.starts[usize::from(len)] as usize,
                self.starts[usize::from(len) + 1] as usize,
            );
            if lo == hi {
                continue;
            }
            let want = A::from_bits(bits & mask128(len));
            if let Ok(k) = self.rules[lo..hi].binary_search_by_key(&want, |r| r.addr) {
                return Some(lo + k);
            }
        }
        None
    }

    /// Prefixes added, removed, changed and kept from `old` to `self`.
    fn change_from(&self, old: &Self, change: &mut Change) {
        let (mut a, mut b) = (old.rules.iter().peekable(), self.rules.iter().peekable());
        loop {
            match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(_), None) => {
                    change.removed += 1;
                    a.next();
                }
                (None, Some(_)) => {
                    change.added += 1;
                    b.next();
                }
                (Some(x), Some(y)) => match x.prefix().cmp(&y.prefix()) {
                    std::cmp::Ordering::Less => {
                        change.removed += 1;
                        a.next();
                    }
                    std::cmp::Ordering::Greater => {
                        change.added += 1;
                        b.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if x.action == y.action {
                            change.kept += 1;
                        } else {
                            change.changed += 1;
                        }
                        a.next();
                        b.next();
                    }
                },
            }
        }
    }
}

/// One prefix of a [`RuleSet`] in the order the kernel's table is built:
/// by family, then length, then address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    /// The rule's id.
    pub id: u32,
    /// Whether it is an IPv6 prefix.
    pub v6: bool,
    /// The address, left-aligned in 128 bits (IPv4's in the top 32).
    pub bits: u128,
    /// The prefix length.
    pub len: u8,
    /// The action.
    pub action: Action,
}

/// What a new rule set changes against an old one, by prefix.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Change {
    /// Prefixes only in the new set.
    pub added: u64,
    /// Prefixes only in the old set.
    pub removed: u64,
    /// Prefixes in both with another action.
    pub changed: u64,
    /// Prefixes in both with the same action.
    pub kept: u64,
}

/// All rules, with the default action for packets that match none.
///
/// Rules are added, then the set is [sealed](RuleSet::seal): sorted by
/// prefix, duplicates merged and conflicts reported. A rule's id is its
/// position in the sealed set: IPv4 before IPv6, shorter prefixes first,
/// then by address. Lookups and the kernel's table need a sealed set.
#[derive(Clone, Debug)]
pub struct RuleSet {
    v4: Family<u32>,
    v6: Family<[u32; 4]>,
    sources: Vec<Source>,
    /// Rules given by flags so far: their order, kept in `line`.
    flags: u32,
    sealed: bool,
    default: Action,
}

impl RuleSet {
    /// An empty set with the given default action.
    pub fn new(default: Action) -> Self {
        Self {
            v4: Family::new(),
            v6: Family::new(),
            sources: Vec::new(),
            flags: 0,
            sealed: true,
            default,
        }
    }

    /// The default action.
    pub fn default_action(&self) -> Action {
        self.default
    }

    /// How many rules there are (duplicates merged once sealed).
    pub fn len(&self) -> usize {
        self.v4.rules.len() + self.v6.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rule with id `id`.
    pub fn rule(&self, id: usize) -> Option<Rule> {
        match id.checked_sub(self.v4.rules.len()) {
            None => self.v4.rules.get(id).map(|s| self.expand(s)),
            Some(i) => self.v6.rules.get(i).map(|s| self.expand(s)),
        }
    }

    /// The rules in id order.
    pub fn iter(&self) -> impl Iterator<Item = Rule> + '_ {
        let v4 = self.v4.rules.iter().map(|s| self.expand(s));
        v4.chain(self.v6.rules.iter().map(|s| self.expand(s)))
    }

    fn expand<A: Addr>(&self, s: &Stored<A>) -> Rule {
        Rule {
            cidr: s.cidr(),
            action: s.action(),
            origin: self.origin(s),
        }
    }

    fn origin<A: Addr>(&self, s: &Stored<A>) -> Origin {
        match &self.sources[usize::from(s.source)] {
            Source::Flag(flag) => Origin::Flag(flag),
            Source::File(path) => Origin::File {
                path: path.clone(),
                line: s.line as usize,
            },
        }
    }

    /// The index of `source` in `sources`, added if new.
    fn source_id(&mut self, source: Source) -> u16 {
        if let Some(i) = self.sources.iter().position(|s| *s == source) {
            return i as u16;
        }
        self.sources.push(source);
        u16::try_from(self.sources.len() - 1).unwrap_or(u16::MAX)
    }

    /// Adds one rule. Duplicates and conflicts are found by [`seal`](Self::seal).
    pub fn add(&mut self, rule: Rule) {
        let (source, line) = match &rule.origin {
            Origin::Flag(flag) => {
                self.flags += 1;
                (self.source_id(Source::Flag(flag)), self.flags)
            }
            Origin::File { path, line } => (
                self.source_id(Source::File(path.clone())),
                u32::try_from(*line).unwrap_or(u32::MAX),
            ),
        };
        self.push(rule.cidr, rule.action, source, line);
    }

    fn push(&mut self, cidr: Cidr, action: Action, source: u16, line: u32) {
        let action = action.to_kernel() as u8;
        match cidr.addr {
            IpAddr::V4(a) => self.v4.rules.push(Stored {
                addr: a.to_bits(),
                line,
                source,
                len: cidr.len,
                action,
            }),
            IpAddr::V6(a) => self.v6.rules.push(Stored {
                addr: <[u32; 4]>::from_bits(a.to_bits()),
                line,
                source,
                len: cidr.len,
                action,
            }),
        }
        self.sealed = false;
    }

    /// Parses `text` as a prefix and adds it.
    ///
    /// # Errors
    ///
    /// A bad prefix, as [`RuleError::Cidr`].
    pub fn add_str(&mut self, action: Action, text: &str, origin: Origin) -> Result<(), RuleError> {
        let cidr = text.parse().map_err(|source| RuleError::Cidr {
            origin: origin.clone(),
            text: text.to_owned(),
            source,
        })?;
        self.add(Rule {
            cidr,
            action,
            origin,
        });
        Ok(())
    }

    /// Adds the rules of a rules file's text: one `ACTION CIDR` per line,
    /// blank lines and `#` comments ignored. Every bad line is reported, not
    /// only the first.
    pub fn add_file_text(&mut self, path: &Path, text: &str) -> Vec<RuleError> {
        let source = self.source_id(Source::File(path.to_owned()));
        let mut errors = Vec::new();
        for (i, line) in text.lines().enumerate() {
            self.add_line(path, source, i + 1, line, &mut errors);
        }
        errors
    }

    /// Adds one line of a rules file, pushing what is wrong with it.
    fn add_line(
        &mut self,
        path: &Path,
        source: u16,
        number: usize,
        line: &str,
        errors: &mut Vec<RuleError>,
    ) {
        let origin = || Origin::File {
            path: path.to_owned(),
            line: number,
        };
        let content = line.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            return;
        }
        let mut words = content.split_whitespace();
        let (Some(word), Some(text), None) = (words.next(), words.next(), words.next()) else {
            errors.push(RuleError::BadLine {
                origin: origin(),
                line: content.to_owned(),
            });
            return;
        };
        let Ok(action) = word.parse::<Action>() else {
            errors.push(RuleError::BadAction {
                origin: origin(),
                word: word.to_owned(),
            });
            return;
        };
        match text.parse::<Cidr>() {
            Ok(cidr) => self.push(
                cidr,
                action,
                source,
                u32::try_from(number).unwrap_or(u32::MAX),
            ),
            Err(source) => errors.push(RuleError::Cidr {
                origin: origin(),
                text: text.to_owned(),
                source,
            }),
        }
    }

    /// Reads and adds a rules file, line by line: a file of any size is
    /// streamed, and reading stops with an error at a line longer than
    /// [`MAX_LINE`] bytes (`/dev/zero` has none), at a line that is not
    /// UTF-8 (a binary file), or after [`MAX_ERRORS`] bad lines. A UTF-8
    /// byte-order mark is skipped. A FIFO must have a writer already: one
    /// without is refused after [`FIFO_WAIT`] instead of blocking.
    pub fn add_file(&mut self, path: &Path) -> Vec<RuleError> {
        let read_err = |source| {
            vec![RuleError::Read {
                path: path.to_owned(),
                source,
            }]
        };
        let file = match open_rules(path) {
            Ok(file) => file,
            Err(e) => return read_err(e),
        };
        let source = self.source_id(Source::File(path.to_owned()));
        let mut reader = std::io::BufReader::with_capacity(64 * 1024, file);
        let mut errors = Vec::new();
        let mut line = Vec::with_capacity(256);
        for number in 1.. {
            line.clear();
            match read_line(&mut reader, &mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    errors.push(RuleError::LongLine {
                        origin: Origin::File {
                            path: path.to_owned(),
                            line: number,
                        },
                    });
                    break;
                }
                Err(e) => {
                    errors.extend(read_err(e));
                    break;
                }
            }
            let bytes = match (number, line.strip_prefix(b"\xef\xbb\xbf")) {
                (1, Some(rest)) => rest,
                _ => &line[..],
            };
            let Ok(text) = std::str::from_utf8(bytes) else {
                let at = std::str::from_utf8(bytes).unwrap_err().valid_up_to();
                errors.push(RuleError::NotText {
                    origin: Origin::File {
                        path: path.to_owned(),
                        line: number,
                    },
                    byte: bytes[at],
                    column: at + 1,
                });
                break;
            };
            self.add_line(path, source, number, text, &mut errors);
            if errors.len() >= MAX_ERRORS {
                errors.push(RuleError::TooManyErrors {
                    path: path.to_owned(),
                    line: number,
                });
                break;
            }
        }
        errors
    }

    /// Sorts the rules by prefix, keeps the first given of equal prefixes
    /// and reports each prefix given again with another action (the first
    /// one stays). Ids are then positions in this order.
    pub fn seal(&mut self) -> Vec<RuleError> {
        if self.sealed {
            return Vec::new();
        }
        let mut errors = Vec::new();
        for (again, first) in self.v4.seal() {
            errors.push(self.conflict(&again, &first));
        }
        for (again, first) in self.v6.seal() {
            errors.push(self.conflict(&again, &first));
        }
        self.sealed = true;
        errors
    }

    fn conflict<A: Addr>(&self, again: &Stored<A>, first: &Stored<A>) -> RuleError {
        RuleError::Conflict {
            origin: self.origin(again),
            cidr: again.cidr(),
            earlier_action: first.action(),
            earlier: self.origin(first),
        }
    }

    /// Whether the set is sealed (no rule added since [`seal`](Self::seal)).
    pub fn is_sealed(&self) -> bool {
        self.sealed
    }

    fn assert_sealed(&self) {
        assert!(
            self.sealed,
            "RuleSet used before seal(): call seal() after adding rules"
        );
    }

    /// The prefix of rule `id` of a sealed set; ids run through IPv4's
    /// rules, then IPv6's, each by length, then address: the order in which
    /// the kernel's table is built.
    pub fn prefix(&self, id: u32) -> Option<Prefix> {
        fn of<A: Addr>(id: u32, r: &Stored<A>) -> Prefix {
            Prefix {
                id,
                v6: A::BITS == 128,
                bits: r.addr.bits(),
                len: r.len,
                action: r.action(),
            }
        }
        match (id as usize).checked_sub(self.v4.rules.len()) {
            None => self.v4.rules.get(id as usize).map(|r| of(id, r)),
            Some(i) => self.v6.rules.get(i).map(|r| of(id, r)),
        }
    }

    /// The rule with the longest prefix containing `ip`, if any: one binary
    /// search per prefix length present, longest first.
    ///
    /// # Panics
    ///
    /// When the set is not sealed.
    pub fn lookup(&self, ip: IpAddr) -> Option<(usize, Rule)> {
        Some(match self.matched(ip)? {
            Matched::V4(i) => (i, self.expand(&self.v4.rules[i])),
            Matched::V6(i) => (self.v4.rules.len() + i, self.expand(&self.v6.rules[i])),
        })
    }

    /// The action for a packet from `ip`: its longest matching rule's, or the
    /// default.
    ///
    /// # Panics
    ///
    /// When the set is not sealed.
    pub fn action_for(&self, ip: IpAddr) -> Action {
        // Not through `lookup`, which also makes the rule's origin: a
        // file's path, copied.
        match self.matched(ip) {
            Some(Matched::V4(i)) => self.v4.rules[i].action(),
            Some(Matched::V6(i)) => self.v6.rules[i].action(),
            None => self.default,
        }
    }

    /// Where the rule with the longest prefix containing `ip` is kept.
    fn matched(&self, ip: IpAddr) -> Option<Matched> {
        self.assert_sealed();
        match ip {
            IpAddr::V4(a) => self
                .v4
                .lookup(u128::from(a.to_bits()) << 96)
                .map(Matched::V4),
            IpAddr::V6(a) => self.v6.lookup(a.to_bits()).map(Matched::V6),
        }
    }

    /// How many IPv4 and IPv6 rules there are.
    pub fn counts(&self) -> (usize, usize) {
        (self.v4.rules.len(), self.v6.rules.len())
    }

    /// What `self` changes against `old`, prefix by prefix.
    ///
    /// # Panics
    ///
    /// When either set is not sealed.
    pub fn change_from(&self, old: &RuleSet) -> Change {
        self.assert_sealed();
        old.assert_sealed();
        let mut change = Change::default();
        self.v4.change_from(&old.v4, &mut change);
        self.v6.change_from(&old.v6, &mut change);
        change
    }
}

/// What a run's rules are made of, kept so that they can be read again
/// (SIGHUP, `--watch-rules`): the default action, the rule flags in order,
/// and the rules files.
#[derive(Clone, Debug)]
pub struct RuleSpec {
    /// The default action.
    pub default: Action,
    /// `--drop`, `--pass`, `--capture` prefixes: (flag, action, text).
    pub flags: Vec<(&'static str, Action, String)>,
    /// `--rules` files, read in order after the flags.
    pub files: Vec<PathBuf>,
}

impl RuleSpec {
    /// Reads the rules: flags first, then files, sealed.
    ///
    /// # Errors
    ///
    /// Every problem found (at most [`MAX_ERRORS`] per file), the set read
    /// so far discarded.
    pub fn read(&self) -> Result<RuleSet, Vec<RuleError>> {
        let mut rules = RuleSet::new(self.default);
        let mut errors = Vec::new();
        for (flag, action, text) in &self.flags {
            if let Err(err) = rules.add_str(*action, text, Origin::Flag(flag)) {
                errors.push(err);
            }
        }
        for path in &self.files {
            errors.extend(rules.add_file(path));
        }
        errors.extend(rules.seal());
        if errors.is_empty() {
            Ok(rules)
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bare_addresses_are_host_prefixes() {
        assert_eq!("192.0.2.1".parse::<Cidr>().unwrap().len(), 32);
        assert_eq!("2001:db8::1".parse::<Cidr>().unwrap().len(), 128);
    }

    #[test]
    fn bad_prefixes_say_why() {
        assert!(matches!(
            "192.0.2.1/24".parse::<Cidr>(),
            Err(CidrError::HostBitsSet { network }) if network.to_string() == "192.0.2.0/24"
        ));
        assert!(matches!(
            "192.0.2.0/33".parse::<Cidr>(),
            Err(CidrError::PrefixTooLong { len: 33, max: 32 })
        ));
        assert!(matches!(
            "2001:db8::/129".parse::<Cidr>(),
            Err(CidrError::PrefixTooLong { len: 129, max: 128 })
        ));
        assert!(matches!(
            "192.0.2.0/999".parse::<Cidr>(),
            Err(CidrError::PrefixTooLong { .. })
        ));
        assert!(matches!(
            "192.0.2/24".parse::<Cidr>(),
            Err(CidrError::BadAddress { .. })
        ));
        assert!(matches!(
            "192.0.2.0/x".parse::<Cidr>(),
            Err(CidrError::BadLength { .. })
        ));
        assert!(matches!(
            "".parse::<Cidr>(),
            Err(CidrError::BadAddress { .. })
        ));
    }

    #[test]
    fn zero_length_prefixes_match_everything_of_their_family() {
        let all4: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all4.contains(ip("203.0.113.9")));
        assert!(!all4.contains(ip("2001:db8::1")));
        let all6: Cidr = "::/0".parse().unwrap();
        assert!(all6.contains(ip("2001:db8::1")));
    }

    #[test]
    fn longest_prefix_wins_whatever_the_order() {
        let mut rules = RuleSet::new(Action::Capture);
        let flag = || Origin::Flag("--test");
        rules
            .add_str(Action::Pass, "192.0.2.128/25", flag())
            .unwrap();
        rules.add_str(Action::Drop, "192.0.2.0/24", flag()).unwrap();
        rules
            .add_str(Action::Capture, "192.0.2.200", flag())
            .unwrap();
        rules
            .add_str(Action::Drop, "2001:db8::/32", flag())
            .unwrap();
        rules
            .add_str(Action::Pass, "2001:db8:1::/48", flag())
            .unwrap();
        assert!(rules.seal().is_empty());
        assert_eq!(rules.action_for(ip("192.0.2.1")), Action::Drop);
        assert_eq!(rules.action_for(ip("192.0.2.129")), Action::Pass);
        assert_eq!(rules.action_for(ip("192.0.2.200")), Action::Capture);
        assert_eq!(rules.action_for(ip("198.51.100.1")), Action::Capture);
        assert_eq!(rules.action_for(ip("2001:db8:2::1")), Action::Drop);
        assert_eq!(rules.action_for(ip("2001:db8:1::1")), Action::Pass);
        assert_eq!(rules.action_for(ip("2001:db9::1")), Action::Capture);
        // An IPv4 rule never matches an IPv4-mapped IPv6 address.
        assert_eq!(rules.action_for(ip("::ffff:192.0.2.1")), Action::Capture);
        assert_eq!(rules.counts(), (3, 2));
    }

    #[test]
    fn conflicting_duplicates_are_refused_and_equal_ones_kept_once() {
        let mut rules = RuleSet::new(Action::Pass);
        rules
            .add_str(Action::Drop, "192.0.2.0/24", Origin::Flag("--drop"))
            .unwrap();
        rules
            .add_str(Action::Pass, "198.51.100.0/24", Origin::Flag("--pass"))
            .unwrap();
        rules
            .add_str(Action::Drop, "192.0.2.0/24", Origin::Flag("--drop"))
            .unwrap();
        rules
            .add_str(Action::Pass, "192.0.2.0/24", Origin::Flag("--pass"))
            .unwrap();
        let errors = rules.seal();
        assert_eq!(rules.len(), 2);
        assert_eq!(errors.len(), 1);
        // The first one given stays, with its id.
        assert_eq!(rules.action_for(ip("192.0.2.9")), Action::Drop);
        assert_eq!(rules.lookup(ip("192.0.2.9")).unwrap().0, 0);
        assert_eq!(rules.rule(1).unwrap().cidr.to_string(), "198.51.100.0/24");
        assert_eq!(
            errors[0].to_string(),
            "--pass: 192.0.2.0/24 is already a `drop` rule (from --drop); a prefix can have only one action"
        );
    }

    #[test]
    fn control_characters_of_a_bad_line_are_shown_escaped() {
        // NUL bytes, and an escape sequence that would clear the screen.
        let text = "\0\0drop 192.0.2.0/24\ndrop 192.0.2.\u{1b}[2J/24\n";
        let mut rules = RuleSet::new(Action::Pass);
        let messages: Vec<String> = rules
            .add_file_text(Path::new("r.txt"), text)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            messages,
            [
                "r.txt:1: unknown action `\\u{0}\\u{0}drop`; expected pass, drop or capture",
                "r.txt:2: bad prefix `192.0.2.\\u{1b}[2J/24`: `192.0.2.\\u{1b}[2J` is not an IPv4 or IPv6 address",
            ]
        );
        assert!(messages.iter().all(|m| !m.chars().any(char::is_control)));
    }

    #[test]
    fn rules_files_report_every_bad_line_with_its_number() {
        let text = "\
# comment line
drop 192.0.2.0/24   # trailing comment

pass 2001:db8::/32
block 198.51.100.0/24
capture 198.51.100.300
drop
capture 203.0.113.0/24 extra
capture 203.0.113.0/24
";
        let mut rules = RuleSet::new(Action::Pass);
        let errors = rules.add_file_text(Path::new("r.txt"), text);
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "r.txt:5: unknown action `block`; expected pass, drop or capture",
                "r.txt:6: bad prefix `198.51.100.300`: `198.51.100.300` is not an IPv4 or IPv6 address",
                "r.txt:7: expected `ACTION CIDR` (e.g. `drop 192.0.2.0/24`), found `drop`",
                "r.txt:8: expected `ACTION CIDR` (e.g. `drop 192.0.2.0/24`), found `capture 203.0.113.0/24 extra`",
            ]
        );
        assert!(rules.seal().is_empty());
        assert_eq!(rules.len(), 3);
        assert_eq!(
            rules.lookup(ip("203.0.113.5")).unwrap().1.origin,
            Origin::File {
                path: "r.txt".into(),
                line: 9
            }
        );
    }

    #[test]
    fn nth_walks_the_prefix() {
        let c: Cidr = "192.0.2.0/30".parse().unwrap();
        let got: Vec<String> = (0..5).map(|i| c.nth(i).to_string()).collect();
        assert_eq!(
            got,
            [
                "192.0.2.0",
                "192.0.2.1",
                "192.0.2.2",
                "192.0.2.3",
                "192.0.2.0"
            ]
        );
        let c6: Cidr = "2001:db8::/126".parse().unwrap();
        assert_eq!(c6.nth(6).to_string(), "2001:db8::2");
    }

    #[test]
    fn ipv4_mapped_prefixes_are_refused_with_their_ipv4_form() {
        let err = "::ffff:198.51.100.0/120".parse::<Cidr>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "an IPv4-mapped IPv6 prefix never matches IPv4 packets (they carry IPv4 addresses); write it as 198.51.100.0/24"
        );
        assert!("::ffff:0:0/96".parse::<Cidr>().is_err());
        // Shorter prefixes cover much more than the mapped range: allowed.
        assert!("::/64".parse::<Cidr>().is_ok());
    }

    fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("traffic-rules-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn rules_files_are_streamed_with_a_line_limit() {
        // /dev/zero: no newline ever; memory stays bounded.
        let mut set = RuleSet::new(Action::Pass);
        let errors = set.add_file(Path::new("/dev/zero"));
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].to_string(),
            format!(
                "/dev/zero:1: the line is longer than {MAX_LINE} bytes; is this a rules file? (reading stopped there)"
            )
        );
        // Binary: the line is named.
        let path = temp_file("binary", b"drop 192.0.2.0/24\n\x7fELF\xff\xfe\n");
        let errors = RuleSet::new(Action::Pass).add_file(&path);
        assert!(
            errors[0].to_string().ends_with(":2: byte 0xff in column 5 is not UTF-8 text; is this a rules file? (reading stopped there)"),
            "{}",
            errors[0]
        );
        // A byte-order mark and CRLF line ends are taken in stride.
        let path2 = temp_file(
            "bom",
            b"\xef\xbb\xbfdrop 192.0.2.0/24\r\ncapture 2001:db8::/32\r\n",
        );
        let mut set = RuleSet::new(Action::Pass);
        assert!(set.add_file(&path2).is_empty());
        assert!(set.seal().is_empty());
        assert_eq!(set.counts(), (1, 1));
        // A directory says so.
        let errors = RuleSet::new(Action::Pass).add_file(&std::env::temp_dir());
        assert!(errors[0].to_string().contains("directory"), "{}", errors[0]);
        for p in [path, path2] {
            std::fs::remove_file(p).unwrap();
        }
    }

    #[test]
    fn a_rules_fifo_without_writer_is_refused_not_waited_on_forever() {
        let path = std::env::temp_dir().join(format!("traffic-rules-{}-fifo", std::process::id()));
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        let _ = std::fs::remove_file(&path);
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let started = std::time::Instant::now();
        let errors = RuleSet::new(Action::Pass).add_file(&path);
        assert!(started.elapsed() < FIFO_WAIT * 2);
        assert!(
            errors[0].to_string().contains("start its writer first"),
            "{}",
            errors[0]
        );
        std::fs::remove_file(&path).unwrap();
    }
}
