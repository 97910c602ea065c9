//! Recorded captures (`--read`): frames out of pcap and pcapng files.
//!
//! [`Recorded`] reads a file (or a FIFO, or standard input as `-`) front to
//! back without seeking, one frame at a time into a buffer it reuses. It
//! reads pcap with microsecond or nanosecond timestamps in either byte
//! order, and pcapng (section header, interface description with
//! `if_tsresol` and `if_tsoffset`, enhanced, simple and obsolete packet
//! blocks; other blocks are skipped). Only Ethernet frames can go through
//! the XDP program; another link type is refused at its interface.
//!
//! A record that is cut short or cannot be right is an error naming its
//! byte offset in the file and how many frames came before it, so that a
//! run can report the counts up to it.

use std::{
    fs::File,
    io::{self, BufReader, Read},
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, RawFd},
    path::{Path, PathBuf},
    time::Duration,
};

/// The largest frame a record may hold: larger is taken as corruption
/// (libpcap's limit for Ethernet is 262,144 bytes).
pub const MAX_FRAME: u32 = 256 * 1024;
/// The largest pcapng block read: larger is taken as corruption.
const MAX_BLOCK: u32 = 16 << 20;

const LINKTYPE_ETHERNET: u32 = 1;

/// What went wrong reading a recorded capture.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The file cannot be opened.
    #[error("cannot open {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Reading failed.
    #[error("reading {path} failed at byte offset {offset}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Not a capture file at all.
    #[error(
        "{path} is not a pcap or pcapng file (it starts with {magic:02x?}); give a file written by tcpdump -w, tshark -w, dumpcap or traffic -w"
    )]
    NotCapture {
        /// The file.
        path: PathBuf,
        /// Its first bytes.
        magic: Vec<u8>,
    },
    /// A link type whose frames are not Ethernet.
    #[error(
        "{path}: the capture's link type is {linktype}, not Ethernet (1); traffic's XDP program reads Ethernet frames (a capture on `any` is Linux cooked, 113: capture on one interface instead)"
    )]
    LinkType {
        /// The file.
        path: PathBuf,
        /// The link type.
        linktype: u32,
    },
    /// A record or block that is cut short or cannot be right.
    #[error("{path}: bad record at byte offset {offset} (after {frames} frames): {what}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// Where the record starts.
        offset: u64,
        /// Frames read before it.
        frames: u64,
        /// What is wrong.
        what: String,
    },
}

impl RecordError {
    /// Whether the error is in the file's content (after frames that were
    /// read), rather than the file not being one at all.
    pub fn frames_before(&self) -> Option<u64> {
        match self {
            RecordError::Bad { frames, .. } => Some(*frames),
            _ => None,
        }
    }
}

/// One frame of a recorded capture.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// Unix time of the frame.
    pub ts: Duration,
    /// The bytes recorded.
    pub data: &'a [u8],
    /// The frame's length on the wire.
    pub wire_len: u32,
    /// Its byte offset in the file.
    pub offset: u64,
}

/// Where a record's frame lies in the reader's buffer.
struct Located {
    ts: Duration,
    wire_len: u32,
    /// The frame's bytes: `buf[at..at + len]`.
    at: usize,
    len: usize,
    /// The record's byte offset in the file.
    offset: u64,
}

/// The file's format, as read from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// pcap, with microsecond or nanosecond timestamps.
    Pcap {
        /// Nanosecond timestamps.
        nanos: bool,
    },
    /// pcapng.
    PcapNg,
}

/// An interface of a pcapng section.
#[derive(Clone, Copy, Debug)]
struct Iface {
    linktype: u32,
    /// Timestamp units per second.
    units: u64,
    /// Seconds added to every timestamp.
    offset_s: i64,
}

/// A capture's input, opened: a file, a FIFO or standard input.
pub struct Input {
    reader: Box<dyn Read>,
    /// The descriptor of `reader` when the input is not a regular file (a
    /// pipe, a FIFO, a terminal): its reads may block for as long as the
    /// writer is quiet.
    wait_fd: Option<RawFd>,
}

impl Input {
    /// Opens `path` (`-` for standard input) for reading, without waiting
    /// for a FIFO's writer: [`Input::wait_fd`] is there to wait on, so that
    /// a signal can end the wait. Directories are refused.
    ///
    /// # Errors
    ///
    /// [`RecordError::Open`] when it cannot be opened, or is a directory.
    pub fn open(path: &Path) -> Result<Self, RecordError> {
        let open_error = |source| RecordError::Open {
            path: path.to_owned(),
            source,
        };
        const WHAT: &str = "a capture file";
        let (file, ty) = if path.as_os_str() == "-" {
            // A descriptor of its own, read without the standard library's
            // buffer, whose bytes a wait on the descriptor would not see.
            let file = File::from(
                io::stdin()
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(open_error)?,
            );
            let ty = crate::os::input_type(&file, WHAT).map_err(open_error)?;
            (file, ty)
        } else {
            crate::os::open_input(path, WHAT).map_err(open_error)?
        };
        Ok(Self {
            wait_fd: (!ty.is_file()).then(|| file.as_raw_fd()),
            reader: Box::new(file),
        })
    }

    /// The descriptor to wait on for the input's bytes, when it is not a
    /// regular file.
    pub fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        // SAFETY: the descriptor of the file `reader` owns, open as long
        // as `self`.
        self.wait_fd.map(|fd| unsafe { BorrowedFd::borrow_raw(fd) })
    }
}

/// A pcap or pcapng file being read.
pub struct Recorded {
    path: PathBuf,
    input: BufReader<Box<dyn Read>>,
    /// [`Input::wait_fd`].
    wait_fd: Option<RawFd>,
    format: Format,
    big_endian: bool,
    /// Bytes consumed so far.
    offset: u64,
    frames: u64,
    buf: Vec<u8>,
    ifaces: Vec<Iface>,
    /// The last timestamp seen (simple packet blocks carry none).
    last_ts: Duration,
}

impl Recorded {
    /// Opens `path` (`-` for standard input) and reads its header.
    ///
    /// # Errors
    ///
    /// When it cannot be opened or read, is not a capture file, or its
    /// link type is not Ethernet.
    pub fn open(path: &Path) -> Result<Self, RecordError> {
        Self::from_input(path, Input::open(path)?)
    }

    /// Reads a capture from an opened [`Input`], named `path` in errors.
    ///
    /// # Errors
    ///
    /// As [`Recorded::open`].
    pub fn from_input(path: &Path, input: Input) -> Result<Self, RecordError> {
        let mut r = Self::from_reader(path, input.reader)?;
        r.wait_fd = input.wait_fd;
        Ok(r)
    }

    /// The descriptor to wait on before the next frame is read, so that
    /// the wait can end another way: an input that is not a regular file,
    /// with none of its bytes at hand.
    pub fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        self.wait_fd
            .filter(|_| self.input.buffer().is_empty())
            // SAFETY: the descriptor of the file `input` owns, open as
            // long as `self`.
            .map(|fd| unsafe { BorrowedFd::borrow_raw(fd) })
    }

    /// Reads a capture from `input`, named `path` in errors.
    ///
    /// # Errors
    ///
    /// As [`Recorded::open`].
    pub fn from_reader(path: &Path, input: Box<dyn Read>) -> Result<Self, RecordError> {
        let mut r = Self {
            path: path.to_owned(),
            input: BufReader::with_capacity(1 << 20, input),
            wait_fd: None,
            format: Format::PcapNg,
            big_endian: false,
            offset: 0,
            frames: 0,
            buf: Vec::with_capacity(64 * 1024),
            ifaces: Vec::new(),
            last_ts: Duration::ZERO,
        };
        let mut magic = [0u8; 4];
        let got = r.fill(&mut magic)?;
        if got < 4 {
            return Err(RecordError::NotCapture {
                path: r.path,
                magic: magic[..got].to_vec(),
            });
        }
        match magic {
            [0xd4, 0xc3, 0xb2, 0xa1] => r.pcap_header(false, false)?,
            [0xa1, 0xb2, 0xc3, 0xd4] => r.pcap_header(true, false)?,
            [0x4d, 0x3c, 0xb2, 0xa1] => r.pcap_header(false, true)?,
            [0xa1, 0xb2, 0x3c, 0x4d] => r.pcap_header(true, true)?,
            [0x0a, 0x0d, 0x0d, 0x0a] => {
                let mut len = [0u8; 4];
                r.exact(&mut len, 0)?;
                r.section(0, len)?;
            }
            _ => {
                return Err(RecordError::NotCapture {
                    path: r.path,
                    magic: magic.to_vec(),
                });
            }
        }
        Ok(r)
    }

    /// The file's format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Frames read so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Reads as much of `out` as the input holds; the bytes read.
    fn fill(&mut self, out: &mut [u8]) -> Result<usize, RecordError> {
        let mut got = 0;
        while got < out.len() {
            match self.input.read(&mut out[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(RecordError::Read {
                        path: self.path.clone(),
                        offset: self.offset + got as u64,
                        source,
                    });
                }
            }
        }
        self.offset += got as u64;
        Ok(got)
    }

    /// Reads exactly `out`, or says the record at `start` is cut short.
    fn exact(&mut self, out: &mut [u8], start: u64) -> Result<(), RecordError> {
        let got = self.fill(out)?;
        if got < out.len() {
            return Err(self.bad(
                start,
                format!(
                    "the file ends {} bytes into it, {} bytes short (cut short while being written?)",
                    self.offset - start,
                    out.len() - got
                ),
            ));
        }
        Ok(())
    }

    fn bad(&self, offset: u64, what: String) -> RecordError {
        RecordError::Bad {
            path: self.path.clone(),
            offset,
            frames: self.frames,
            what,
        }
    }

    fn u32_at(&self, b: &[u8], at: usize) -> u32 {
        let w = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if self.big_endian {
            u32::from_be_bytes(w)
        } else {
            u32::from_le_bytes(w)
        }
    }

    fn u16_at(&self, b: &[u8], at: usize) -> u16 {
        let w = [b[at], b[at + 1]];
        if self.big_endian {
            u16::from_be_bytes(w)
        } else {
            u16::from_le_bytes(w)
        }
    }

    /// The rest of a pcap file header, after its magic.
    fn pcap_header(&mut self, big_endian: bool, nanos: bool) -> Result<(), RecordError> {
        self.big_endian = big_endian;
        self.format = Format::Pcap { nanos };
        let mut h = [0u8; 20];
        self.exact(&mut h, 0)?;
        let linktype = self.u32_at(&h, 16) & 0x0fff_ffff;
        if linktype != LINKTYPE_ETHERNET {
            return Err(RecordError::LinkType {
                path: self.path.clone(),
                linktype,
            });
        }
        Ok(())
    }

    /// A pcapng section header block at `start`, whose type and length
    /// (`len`, in the section's byte order) were read.
    fn section(&mut self, start: u64, len: [u8; 4]) -> Result<(), RecordError> {
        let mut magic = [0u8; 4];
        self.exact(&mut magic, start)?;
        self.big_endian = match magic {
            [0x1a, 0x2b, 0x3c, 0x4d] => true,
            [0x4d, 0x3c, 0x2b, 0x1a] => false,
            _ => {
                return Err(self.bad(
                    start,
                    "a pcapng section header with no byte-order magic".into(),
                ));
            }
        };
        self.format = Format::PcapNg;
        self.ifaces.clear();
        let total = self.u32_at(&len, 0);
        // Type, length, magic read; the rest (version, section length,
        // options, trailing length) is skipped.
        self.body(start, total, 12)
    }

    /// Reads the body of a pcapng block of `total` bytes starting at
    /// `start`, of which `read` are read already, into `buf` (without the
    /// trailing length).
    fn body(&mut self, start: u64, total: u32, read: u32) -> Result<(), RecordError> {
        if !total.is_multiple_of(4) || total < read + 4 || total > MAX_BLOCK {
            return Err(self.bad(
                start,
                format!("a pcapng block claims {total} bytes, which no valid block has"),
            ));
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize((total - read) as usize, 0);
        let r = self.exact(&mut buf, start);
        self.buf = buf;
        r?;
        let trailer = self.u32_at(&self.buf, self.buf.len() - 4);
        if trailer != total {
            return Err(self.bad(
                start,
                format!(
                    "a pcapng block's lengths disagree ({total} at its start, {trailer} at its end)"
                ),
            ));
        }
        self.buf.truncate(self.buf.len() - 4);
        Ok(())
    }

    /// The next frame, or `None` at the end of the file.
    ///
    /// # Errors
    ///
    /// [`RecordError::Bad`] for a record cut short or impossible;
    /// [`RecordError::Read`] when reading fails.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, RecordError> {
        let Located {
            ts,
            wire_len,
            at,
            len,
            offset,
        } = match self.format {
            Format::Pcap { nanos } => match self.pcap_record(nanos)? {
                Some(r) => r,
                None => return Ok(None),
            },
            Format::PcapNg => match self.pcapng_record()? {
                Some(r) => r,
                None => return Ok(None),
            },
        };
        self.frames += 1;
        self.last_ts = ts;
        Ok(Some(Frame {
            ts,
            data: &self.buf[at..at + len],
            wire_len,
            offset,
        }))
    }

    /// The `N`-byte header of the record or block at the read position,
    /// or `None` at the end of the file.
    fn header<const N: usize>(&mut self, what: &str) -> Result<Option<[u8; N]>, RecordError> {
        let start = self.offset;
        let mut h = [0u8; N];
        match self.fill(&mut h)? {
            0 => Ok(None),
            got if got < N => Err(self.bad(
                start,
                format!(
                    "the file ends {got} bytes into a {N}-byte {what} header (cut short while being written?)"
                ),
            )),
            _ => Ok(Some(h)),
        }
    }

    /// A pcap record, its frame into `buf`.
    fn pcap_record(&mut self, nanos: bool) -> Result<Option<Located>, RecordError> {
        let start = self.offset;
        let Some(h) = self.header::<16>("record")? else {
            return Ok(None);
        };
        let (secs, frac, incl, orig) = (
            self.u32_at(&h, 0),
            self.u32_at(&h, 4),
            self.u32_at(&h, 8),
            self.u32_at(&h, 12),
        );
        let limit = if nanos { 1_000_000_000 } else { 1_000_000 };
        if frac >= limit {
            return Err(self.bad(
                start,
                format!("its timestamp's fraction {frac} is not below {limit}"),
            ));
        }
        if incl > MAX_FRAME {
            return Err(self.bad(
                start,
                format!("it claims {incl} bytes, more than any frame ({MAX_FRAME})"),
            ));
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(incl as usize, 0);
        let r = self.exact(&mut buf, start);
        self.buf = buf;
        r?;
        let ns = if nanos { frac } else { frac * 1000 };
        let ts = Duration::new(u64::from(secs), ns);
        Ok(Some(Located {
            ts,
            wire_len: orig.max(incl),
            at: 0,
            len: incl as usize,
            offset: start,
        }))
    }

    /// The next packet block of a pcapng file, skipping other blocks.
    fn pcapng_record(&mut self) -> Result<Option<Located>, RecordError> {
        loop {
            let start = self.offset;
            let Some(h) = self.header::<8>("block")? else {
                return Ok(None);
            };
            // A section header's type reads the same in either byte order.
            if h[..4] == [0x0a, 0x0d, 0x0d, 0x0a] {
                // Its length is in its own byte order, which follows it.
                self.section(start, [h[4], h[5], h[6], h[7]])?;
                continue;
            }
            let kind = self.u32_at(&h, 0);
            let total = self.u32_at(&h, 4);
            self.body(start, total, 8)?;
            match kind {
                1 => self.interface(start)?,
                6 => return self.enhanced(start).map(Some),
                3 => return self.simple(start).map(Some),
                2 => return self.obsolete(start).map(Some),
                _ => {}
            }
        }
    }

    /// An interface description block in `buf`.
    fn interface(&mut self, start: u64) -> Result<(), RecordError> {
        if self.buf.len() < 8 {
            return Err(self.bad(start, "an interface description block too short".into()));
        }
        let linktype = u32::from(self.u16_at(&self.buf, 0));
        let mut iface = Iface {
            linktype,
            units: 1_000_000,
            offset_s: 0,
        };
        let mut at = 8;
        while at + 4 <= self.buf.len() {
            let code = self.u16_at(&self.buf, at);
            let len = usize::from(self.u16_at(&self.buf, at + 2));
            let value = at + 4;
            if value + len > self.buf.len() {
                return Err(self.bad(start, "an interface option runs past its block".into()));
            }
            match (code, len) {
                (0, _) => break,
                (9, 1) => {
                    let r = self.buf[value];
                    let units = if r & 0x80 != 0 {
                        1u64.checked_shl(u32::from(r & 0x7f))
                    } else {
                        10u64.checked_pow(u32::from(r))
                    };
                    iface.units = units.filter(|&u| u > 0).ok_or_else(|| {
                        self.bad(
                            start,
                            format!("an interface's timestamp resolution {r:#x} is out of range"),
                        )
                    })?;
                }
                (14, 8) => {
                    let lo = u64::from(self.u32_at(&self.buf, value));
                    let hi = u64::from(self.u32_at(&self.buf, value + 4));
                    let v = if self.big_endian {
                        (lo << 32) | hi
                    } else {
                        (hi << 32) | lo
                    };
                    iface.offset_s = v as i64;
                }
                _ => {}
            }
            at = value + len.next_multiple_of(4);
        }
        self.ifaces.push(iface);
        Ok(())
    }

    fn iface(&self, start: u64, id: u32) -> Result<Iface, RecordError> {
        let iface = self.ifaces.get(id as usize).copied().ok_or_else(|| {
            self.bad(
                start,
                format!("a packet of interface {id}, which the section does not describe"),
            )
        })?;
        if iface.linktype != LINKTYPE_ETHERNET {
            return Err(RecordError::LinkType {
                path: self.path.clone(),
                linktype: iface.linktype,
            });
        }
        Ok(iface)
    }

    fn timestamp(iface: Iface, units: u64) -> Duration {
        let secs = units / iface.units;
        let rest = units % iface.units;
        let nanos = (u128::from(rest) * 1_000_000_000 / u128::from(iface.units)) as u32;
        let secs = secs.saturating_add_signed(iface.offset_s);
        Duration::new(secs, nanos)
    }

    /// The frame of a packet block at `start` whose data starts at `at` in
    /// `buf`, `cap` bytes of `orig`, at time `ts`.
    fn packet(
        &self,
        start: u64,
        at: usize,
        (cap, orig): (u32, u32),
        ts: Duration,
    ) -> Result<Located, RecordError> {
        if cap > MAX_FRAME || at + cap as usize > self.buf.len() {
            return Err(self.bad(
                start,
                format!("a packet block claims {cap} captured bytes, more than the block holds"),
            ));
        }
        Ok(Located {
            ts,
            wire_len: orig.max(cap),
            at,
            len: cap as usize,
            offset: start,
        })
    }

    /// An enhanced packet block in `buf`.
    fn enhanced(&mut self, start: u64) -> Result<Located, RecordError> {
        if self.buf.len() < 20 {
            return Err(self.bad(start, "an enhanced packet block too short".into()));
        }
        let id = self.u32_at(&self.buf, 0);
        self.timed(start, id)
    }

    /// The packet of an enhanced or obsolete packet block in `buf`, of
    /// interface `id`: both hold the time at 4, the lengths at 12 and the
    /// data at 20.
    fn timed(&self, start: u64, id: u32) -> Result<Located, RecordError> {
        let iface = self.iface(start, id)?;
        let units =
            (u64::from(self.u32_at(&self.buf, 4)) << 32) | u64::from(self.u32_at(&self.buf, 8));
        let lengths = (self.u32_at(&self.buf, 12), self.u32_at(&self.buf, 16));
        self.packet(start, 20, lengths, Self::timestamp(iface, units))
    }

    /// A simple packet block in `buf`: no timestamp, the last one's.
    fn simple(&mut self, start: u64) -> Result<Located, RecordError> {
        if self.buf.len() < 4 {
            return Err(self.bad(start, "a simple packet block too short".into()));
        }
        self.iface(start, 0)?;
        let orig = self.u32_at(&self.buf, 0);
        let cap = orig.min((self.buf.len() - 4) as u32);
        self.packet(start, 4, (cap, orig), self.last_ts)
    }

    /// An obsolete packet block in `buf`.
    fn obsolete(&mut self, start: u64) -> Result<Located, RecordError> {
        if self.buf.len() < 20 {
            return Err(self.bad(start, "a packet block too short".into()));
        }
        let id = u32::from(self.u16_at(&self.buf, 0));
        self.timed(start, id)
    }
}
