//! Writing captured frames as a pcap file (nanosecond timestamps), which
//! tcpdump, tshark and Wireshark read; for a run on several interfaces, as
//! pcapng with one interface description block per interface, so that
//! every frame says where it arrived.

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    direct::FileWriter,
    file::{Output, OutputError},
};

/// The pcap magic for nanosecond-resolution timestamps.
const MAGIC_NS: u32 = 0xa1b2_3c4d;
/// `LINKTYPE_ETHERNET`.
const LINKTYPE_ETHERNET: u32 = 1;

/// Why a pcap file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    /// The path cannot be opened for writing.
    #[error(transparent)]
    Open(#[from] OutputError),
    /// Writing failed.
    #[error("cannot write the pcap file {path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// Bytes buffered before a write: a write per megabyte (per two when the
/// file is written directly, in huge pages), or per report interval,
/// whichever comes first (see [`PcapWriter::flush_blocks`]).
const BUFFER: usize = 1 << 20;

/// The interfaces a capture file names: one means pcap, more mean pcapng
/// with an interface description block each, in this order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interfaces(pub Vec<(String, u32)>);

impl Interfaces {
    /// Whether the file is pcapng.
    pub fn is_ng(&self) -> bool {
        self.0.len() > 1
    }

    /// The pcapng interface ID of interface `ifindex` (0 when unknown).
    fn id(&self, ifindex: u32) -> u32 {
        self.0
            .iter()
            .position(|(_, i)| *i == ifindex)
            .map_or(0, |p| p as u32)
    }
}

/// A pcap (or, for several interfaces, pcapng) file being written.
pub struct PcapWriter {
    /// The file, and the records not yet written to it: one copy per
    /// record, no allocation.
    out: FileWriter,
    path: PathBuf,
    /// pcapng's interfaces, when the file is pcapng.
    ng: Option<Interfaces>,
    /// Frames written.
    pub frames: u64,
    /// Bytes written, the header included.
    pub bytes: u64,
    /// Where the last [`RECENT`] records end, and the frames up to each:
    /// the records that may straddle what was handed on to be written.
    recent: Box<[(u64, u64); RECENT]>,
    /// Records put in `recent`, the header counted as one of none.
    recent_at: usize,
    /// Record boundaries (end, frames) at or before what was handed on, in
    /// order: on a failure, the last one the file holds is where it is cut.
    marks: std::collections::VecDeque<(u64, u64)>,
    /// Frames in the file for good once a write failed (it was cut after
    /// the last whole record it held).
    kept: Option<u64>,
    /// The bytes of the file's header (pcap's, or pcapng's section and
    /// interface blocks).
    header_len: usize,
}

/// Records remembered for [`PcapWriter::recent`]: more than a direct-I/O
/// block's remainder can hold (4,096 bytes of records of 17 bytes at
/// least).
const RECENT: usize = 256;

impl PcapWriter {
    /// Opens `path` as [`Output::create`] does (a new file is private, an
    /// existing one keeps its mode, devices and FIFOs are written as they
    /// are, `-` is stdout) and writes the header.
    ///
    /// # Errors
    ///
    /// [`PcapError::Open`] when `path` cannot be written; otherwise I/O.
    pub fn create(path: &Path, snaplen: u32) -> Result<Self, PcapError> {
        Self::new(Output::create(path)?, snaplen)
    }

    /// Writes the pcap header to an opened output.
    ///
    /// # Errors
    ///
    /// When writing fails.
    pub fn new(output: Output, snaplen: u32) -> Result<Self, PcapError> {
        Self::for_interfaces(output, snaplen, &Interfaces::default(), true)
    }

    /// Writes the header of a file of frames from `ifaces` to an opened
    /// output: pcap for one interface, pcapng (a section header and one
    /// interface description block per interface, nanosecond timestamps)
    /// for more. A regular file is written around the page cache when
    /// `direct` and its file system allows ([`super::direct`]).
    ///
    /// # Errors
    ///
    /// When writing fails.
    pub fn for_interfaces(
        output: Output,
        snaplen: u32,
        ifaces: &Interfaces,
        direct: bool,
    ) -> Result<Self, PcapError> {
        let path = output.path;
        let mut out = FileWriter::new(output.file, output.kind, BUFFER, direct);
        let header = if ifaces.is_ng() {
            ng_header(snaplen, ifaces)
        } else {
            pcap_header(snaplen)
        };
        // Buffered like the records: a disk that is full is found by the
        // first flush, while the run goes on, as for any later write.
        out.buf().extend_from_slice(&header);
        let mut recent = Box::new([(0, 0); RECENT]);
        recent[0] = (header.len() as u64, 0);
        Ok(Self {
            header_len: header.len(),
            out,
            path,
            ng: ifaces.is_ng().then(|| ifaces.clone()),
            frames: 0,
            bytes: header.len() as u64,
            recent,
            recent_at: 1,
            marks: std::collections::VecDeque::from([(0, 0)]),
            kept: None,
        })
    }

    /// Adds one record (buffered) of a frame from interface `ifindex`.
    ///
    /// # Errors
    ///
    /// When flushing the buffer fails.
    pub fn write(
        &mut self,
        ts: Duration,
        wire_len: u32,
        data: &[u8],
        ifindex: u32,
    ) -> Result<(), PcapError> {
        let cap = data.len() as u32;
        let wire = wire_len.max(cap);
        let len = match &self.ng {
            None => 16 + data.len(),
            Some(_) => 32 + data.len().next_multiple_of(4),
        };
        if self.out.pending() + len > self.out.buf().capacity() {
            self.flush_blocks()?;
        }
        let buf = self.out.buf();
        match &self.ng {
            None => {
                let rec: [u32; 4] = [ts.as_secs() as u32, ts.subsec_nanos(), cap, wire];
                buf.extend_from_slice(bytemuck::bytes_of(&rec));
                buf.extend_from_slice(data);
            }
            Some(ifaces) => {
                let ns = ts.as_nanos() as u64;
                let head: [u32; 7] = [
                    EPB,
                    len as u32,
                    ifaces.id(ifindex),
                    (ns >> 32) as u32,
                    ns as u32,
                    cap,
                    wire,
                ];
                buf.extend_from_slice(bytemuck::bytes_of(&head));
                buf.extend_from_slice(data);
                buf.extend_zeros(data.len().next_multiple_of(4) - data.len());
                buf.extend_from_slice(&(len as u32).to_ne_bytes());
            }
        }
        self.frames += 1;
        self.bytes += len as u64;
        self.recent[self.recent_at % RECENT] = (self.bytes, self.frames);
        self.recent_at += 1;
        Ok(())
    }

    /// Frames the file holds for good: all written, or, once a write
    /// failed, those up to the last whole record the file held.
    pub fn kept(&self) -> u64 {
        self.kept.unwrap_or(self.frames)
    }

    /// Notes the last record boundary within what was handed on to be
    /// written, and forgets those before the last one the file is known to
    /// hold.
    fn mark(&mut self) {
        // What was handed on: all appended, less what waits in the buffer.
        let handed = self.bytes - self.out.pending() as u64;
        let known = self.recent_at.min(RECENT);
        let boundary = (1..=known)
            .map(|back| self.recent[(self.recent_at - back) % RECENT])
            .find(|&(end, _)| end <= handed);
        if let Some(b) = boundary
            && self.marks.back().is_none_or(|&last| last.0 < b.0)
        {
            self.marks.push_back(b);
        }
        let durable = self.out.durable();
        while self.marks.len() > 1 && self.marks[1].0 <= durable {
            self.marks.pop_front();
        }
    }

    /// Writes every record held: the file is complete up to here (with
    /// direct I/O, its tail goes through the page cache, and so does the
    /// rest of the file: call this where a file ends).
    ///
    /// # Errors
    ///
    /// When writing fails.
    pub fn flush(&mut self) -> Result<(), PcapError> {
        let written = self.out.finish();
        self.io(written)
    }

    /// Writes every record held, so that the file is complete up to here,
    /// and goes on writing as before ([`FileWriter::write_out`]).
    ///
    /// # Errors
    ///
    /// When writing fails.
    pub fn write_out(&mut self) -> Result<(), PcapError> {
        let written = self.out.write_out();
        self.io(written)
    }

    /// The frames kept when a write failed: the file is cut after the last
    /// whole record it holds.
    fn failed(&mut self) {
        if self.kept.is_some() {
            return;
        }
        let durable = self.out.durable();
        let (mut end, mut frames) = self
            .marks
            .iter()
            .rev()
            .copied()
            .find(|&(end, _)| end <= durable)
            .unwrap_or((0, 0));
        // A write here that failed may have been taken in part (a pipe
        // whose reader left took what its buffer held): the records it
        // took whole count as written. They start at the last mark, where
        // the write began.
        if let Some(bytes) = self.out.failed_write()
            && self.bytes - bytes.len() as u64 == end
        {
            let (len, taken) = self.whole_records(bytes, end, durable - end);
            end += len;
            frames += taken;
        }
        self.out.cut(end);
        self.kept = Some(frames);
    }

    /// The bytes and the frames of the whole records and blocks at the
    /// start of `bytes` (which begin at `offset` in the file) within its
    /// first `taken` bytes; the file's header counts as a record of no
    /// frame.
    fn whole_records(&self, bytes: &[u8], offset: u64, taken: u64) -> (u64, u64) {
        let taken = (taken as usize).min(bytes.len());
        let word = |at: usize| {
            bytes
                .get(at..at + 4)
                .map(|w| u32::from_ne_bytes(w.try_into().expect("four bytes")) as usize)
        };
        let mut at = 0;
        let mut frames = 0;
        if offset == 0 {
            // The header: pcap's fixed one, or pcapng's blocks up to the
            // first record.
            if self.header_len > taken {
                return (0, 0);
            }
            at = self.header_len;
        }
        loop {
            let (len, frame) = match &self.ng {
                None => match word(at + 8) {
                    Some(cap) => (16 + cap, true),
                    None => break,
                },
                Some(_) => match (word(at), word(at + 4)) {
                    (Some(kind), Some(len)) if len >= 12 => (len, kind == EPB as usize),
                    _ => break,
                },
            };
            if at + len > taken {
                break;
            }
            at += len;
            frames += u64::from(frame);
        }
        (at as u64, frames)
    }

    /// Writes what can be written now: every record through the page
    /// cache, whole blocks with direct I/O (the rest, less than a block,
    /// waits for the next write or the end of the file).
    ///
    /// # Errors
    ///
    /// When writing fails.
    pub fn flush_blocks(&mut self) -> Result<(), PcapError> {
        let written = self.out.flush();
        self.io(written)
    }

    /// What could not be written is not tried again: the error says so, and
    /// the run reports this output as failed from here on, with the frames
    /// the file kept ([`PcapWriter::kept`]).
    fn io(&mut self, written: io::Result<()>) -> Result<(), PcapError> {
        match written {
            Ok(()) => {
                self.mark();
                Ok(())
            }
            Err(source) => {
                self.failed();
                Err(PcapError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }
}

/// pcapng's block types.
const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 1;
const EPB: u32 = 6;

/// The pcap file header: nanosecond timestamps, Ethernet.
fn pcap_header(snaplen: u32) -> Vec<u8> {
    let mut header = Vec::with_capacity(24);
    header.extend_from_slice(&MAGIC_NS.to_ne_bytes());
    header.extend_from_slice(&2u16.to_ne_bytes());
    header.extend_from_slice(&4u16.to_ne_bytes());
    header.extend_from_slice(&0i32.to_ne_bytes()); // thiszone
    header.extend_from_slice(&0u32.to_ne_bytes()); // sigfigs
    header.extend_from_slice(&snaplen.to_ne_bytes());
    header.extend_from_slice(&LINKTYPE_ETHERNET.to_ne_bytes());
    header
}

/// A pcapng option: code, length, value padded to 4 bytes.
fn ng_option(out: &mut Vec<u8>, code: u16, value: &[u8]) {
    out.extend_from_slice(&code.to_ne_bytes());
    out.extend_from_slice(&(value.len() as u16).to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + value.len().next_multiple_of(4) - value.len(), 0);
}

/// A pcapng block of `kind` around `body`.
fn ng_block(out: &mut Vec<u8>, kind: u32, body: &[u8]) {
    let len = (12 + body.len()) as u32;
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&len.to_ne_bytes());
}

/// A pcapng section header and one interface description block per
/// interface (Ethernet, `if_name`, nanosecond `if_tsresol`).
fn ng_header(snaplen: u32, ifaces: &Interfaces) -> Vec<u8> {
    let mut out = Vec::new();
    let mut body = Vec::new();
    body.extend_from_slice(&0x1A2B_3C4Du32.to_ne_bytes());
    body.extend_from_slice(&1u16.to_ne_bytes());
    body.extend_from_slice(&0u16.to_ne_bytes());
    body.extend_from_slice(&(-1i64).to_ne_bytes()); // section length unknown
    let app = concat!("traffic ", env!("CARGO_PKG_VERSION"));
    ng_option(&mut body, 4, app.as_bytes()); // shb_userappl
    ng_option(&mut body, 0, &[]);
    ng_block(&mut out, SHB, &body);
    for (name, _) in &ifaces.0 {
        body.clear();
        body.extend_from_slice(&(LINKTYPE_ETHERNET as u16).to_ne_bytes());
        body.extend_from_slice(&0u16.to_ne_bytes());
        body.extend_from_slice(&snaplen.to_ne_bytes());
        ng_option(&mut body, 2, name.as_bytes()); // if_name
        ng_option(&mut body, 9, &[9]); // if_tsresol: nanoseconds
        ng_option(&mut body, 0, &[]);
        ng_block(&mut out, IDB, &body);
    }
    out
}

impl Drop for PcapWriter {
    fn drop(&mut self) {
        // Whatever fails here was reported, or will be, by a flush that
        // returns its error: every path that ends a file flushes it first.
        let _ = self.flush();
    }
}

/// tcpdump's `-C`, `-G` and `-W`: when to start a new pcap file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rotation {
    /// `-C`: start a new file before a packet once the current one is
    /// larger than this many bytes.
    pub size: Option<u64>,
    /// `-G`: start a new file once the current one is this old; the name
    /// given to `-w` may hold strftime(3) conversions, filled in with the
    /// time the file starts.
    pub seconds: Option<u64>,
    /// `-W`: with `-C`, reuse this many names in turn; with `-G` alone,
    /// stop the run once this many files are written.
    pub count: Option<u32>,
}

impl Rotation {
    /// Whether any rotation was asked for.
    pub fn is_on(&self) -> bool {
        self.size.is_some() || self.seconds.is_some()
    }

    /// Digits of the file counter: enough for `count - 1` with `-W`.
    fn digits(&self) -> usize {
        match self.count {
            Some(n) if self.size.is_some() => n.saturating_sub(1).max(1).to_string().len(),
            _ => 0,
        }
    }

    /// The name of file `n` (from 0) of a `-C` series, started at Unix
    /// time `at` for `-G`: tcpdump's naming. The first file of a `-C`
    /// series without `-W` has no number.
    pub fn file_name(&self, base: &Path, n: u32, at: Duration) -> PathBuf {
        let mut name = base.as_os_str().to_owned();
        if self.seconds.is_some() {
            name = strftime(&base.to_string_lossy(), at).into();
        }
        let digits = self.digits();
        if self.size.is_some() && (n > 0 || digits > 0) {
            name.push(format!("{n:0digits$}"));
        }
        PathBuf::from(name)
    }
}

/// `format` with its strftime(3) conversions filled in for Unix time `at`,
/// in local time.
fn strftime(format: &str, at: Duration) -> String {
    let Ok(c_format) = std::ffi::CString::new(format) else {
        return format.to_owned();
    };
    let secs = at.as_secs() as libc::time_t;
    // SAFETY: an all-zero tm is valid; localtime_r fills it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to locals.
    if unsafe { libc::localtime_r(&secs, &mut tm) }.is_null() {
        return format.to_owned();
    }
    let mut buf = vec![0u8; format.len() * 4 + 256];
    // SAFETY: `buf` is writable for its length; the format is a C string.
    let n = unsafe { libc::strftime(buf.as_mut_ptr().cast(), buf.len(), c_format.as_ptr(), &tm) };
    if n == 0 {
        return format.to_owned();
    }
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// The pcap output of a run: one file, or a series of them (`-C`, `-G`).
pub struct PcapFiles {
    current: PcapWriter,
    base: PathBuf,
    rotation: Rotation,
    snaplen: u32,
    /// The interfaces every file names.
    ifaces: Interfaces,
    /// Files started so far, the current one included.
    files: u32,
    /// When the current file was started (Unix time), for `-G`.
    started: Duration,
    /// `-G -W`: the last file is full; the run should stop.
    done: bool,
    /// Whether files are written around the page cache where they can be.
    direct: bool,
    /// Frames in the files finished before the current one.
    finished_frames: u64,
}

impl PcapFiles {
    /// Starts with `first`, opened before the run as `rotation`'s file 0
    /// of `base` naming `ifaces`, started at `now`; the next files written
    /// around the page cache when `direct` and their file system allows.
    pub fn new(
        first: PcapWriter,
        base: PathBuf,
        rotation: Rotation,
        snaplen: u32,
        ifaces: Interfaces,
        now: Duration,
        direct: bool,
    ) -> Self {
        Self {
            current: first,
            base,
            rotation,
            snaplen,
            ifaces,
            files: 1,
            started: now,
            done: false,
            direct,
            finished_frames: 0,
        }
    }

    /// Starts the next file, at Unix time `now`. Files are created after a
    /// `-Z` switch as that user, the way the first was: a new file 0600, an
    /// existing one truncated, a link refused.
    fn rotate(&mut self, now: Duration) -> Result<(), PcapError> {
        self.current.flush()?;
        self.finished_frames += self.current.frames;
        let n = match self.rotation.count {
            Some(w) if self.rotation.size.is_some() => self.files % w,
            _ => self.files,
        };
        let name = self.rotation.file_name(&self.base, n, now);
        self.current = PcapWriter::for_interfaces(
            Output::create(&name)?,
            self.snaplen,
            &self.ifaces,
            self.direct,
        )?;
        self.files += 1;
        self.started = now;
        Ok(())
    }

    /// Whether a packet at `ts` belongs in a new file.
    fn due(&self, ts: Duration) -> bool {
        let by_size = self
            .rotation
            .size
            .is_some_and(|limit| self.current.bytes > limit);
        let by_time = self
            .rotation
            .seconds
            .is_some_and(|g| ts.saturating_sub(self.started).as_secs() >= g);
        by_size || by_time
    }
}

impl super::Sink for PcapFiles {
    fn packet(&mut self, p: &crate::source::Captured<'_>) -> Result<(), super::SinkError> {
        if self.done {
            return Ok(());
        }
        if self.due(p.ts) {
            // -G with -W and no -C: stop after that many files.
            if self.rotation.size.is_none() && self.rotation.count.is_some_and(|w| self.files >= w)
            {
                self.current.flush()?;
                self.done = true;
                return Ok(());
            }
            self.rotate(p.ts)?;
        }
        Ok(self.current.write(p.ts, p.wire_len, p.data, p.ifindex)?)
    }

    fn interval(&mut self, _: &super::Interval<'_>) -> Result<(), super::SinkError> {
        Ok(self.current.flush_blocks()?)
    }

    fn write_out(&mut self) -> Result<(), super::SinkError> {
        Ok(self.current.write_out()?)
    }

    fn finish(&mut self, _: &super::Summary<'_>) -> Result<(), super::SinkError> {
        Ok(self.current.flush()?)
    }

    fn wants_stop(&self) -> bool {
        self.done
    }

    fn kept(&self) -> Option<u64> {
        Some(self.finished_frames + self.current.kept())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("traffic-pcap-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn writes_header_and_records_privately() {
        let dir = temp("records");
        let path = dir.join("out.pcap");
        let mut w = PcapWriter::create(&path, 256).unwrap();
        w.write(Duration::new(1_700_000_000, 123_456_789), 60, &[1, 2, 3], 0)
            .unwrap();
        w.flush().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 24 + 16 + 3);
        assert_eq!(
            u32::from_ne_bytes(bytes[0..4].try_into().unwrap()),
            MAGIC_NS
        );
        assert_eq!(u32::from_ne_bytes(bytes[16..20].try_into().unwrap()), 256);
        assert_eq!(
            u32::from_ne_bytes(bytes[24..28].try_into().unwrap()),
            1_700_000_000
        );
        assert_eq!(
            u32::from_ne_bytes(bytes[28..32].try_into().unwrap()),
            123_456_789
        );
        assert_eq!(u32::from_ne_bytes(bytes[32..36].try_into().unwrap()), 3);
        assert_eq!(u32::from_ne_bytes(bytes[36..40].try_into().unwrap()), 60);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_symlinks() {
        let dir = temp("symlink");
        let target = dir.join("target");
        std::fs::write(&target, b"keep me").unwrap();
        let link = dir.join("link.pcap");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = PcapWriter::create(&link, 128).err().unwrap();
        assert!(
            matches!(err, PcapError::Open(OutputError::Symlink { .. })),
            "{err}"
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rotated_names_follow_tcpdump() {
        let base = Path::new("/tmp/cap.pcap");
        let at = Duration::from_secs(1_700_000_000);
        let c = Rotation {
            size: Some(1),
            ..Rotation::default()
        };
        assert_eq!(c.file_name(base, 0, at), Path::new("/tmp/cap.pcap"));
        assert_eq!(c.file_name(base, 1, at), Path::new("/tmp/cap.pcap1"));
        assert_eq!(c.file_name(base, 12, at), Path::new("/tmp/cap.pcap12"));
        let cw = Rotation {
            size: Some(1),
            count: Some(10),
            ..Rotation::default()
        };
        assert_eq!(cw.file_name(base, 0, at), Path::new("/tmp/cap.pcap0"));
        assert_eq!(cw.file_name(base, 9, at), Path::new("/tmp/cap.pcap9"));
        let cw100 = Rotation {
            count: Some(100),
            ..cw
        };
        assert_eq!(cw100.file_name(base, 7, at), Path::new("/tmp/cap.pcap07"));
        let g = Rotation {
            seconds: Some(60),
            ..Rotation::default()
        };
        assert_eq!(
            g.file_name(Path::new("/tmp/cap-%Y.pcap"), 3, at),
            Path::new("/tmp/cap-2023.pcap"),
            "-G fills in strftime and adds no counter"
        );
    }

    #[test]
    fn records_a_pipe_took_before_its_reader_left_count_as_written() {
        use std::{fs::File, io::Read as _, os::fd::FromRawFd as _};
        let mut fds = [0; 2];
        // SAFETY: a valid array of two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both were just opened and are owned here alone.
        let (mut rx, tx) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
        // The smallest pipe: it takes at most a page beyond what was read.
        // SAFETY: a valid descriptor.
        let size = unsafe { libc::fcntl(fds[1], libc::F_SETPIPE_SZ, 4096) };
        assert!(size >= 4096, "pipe size {size}");
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; 1000];
            rx.read_exact(&mut got).unwrap();
            got
        });
        let output = Output {
            file: tx,
            kind: crate::sink::file::Kind::Fifo,
            path: PathBuf::from("pipe"),
        };
        let mut w = PcapWriter::new(output, 256).unwrap();
        for i in 0..1000u32 {
            w.write(Duration::new(1_700_000_000, i), 60, &[7; 60], 0)
                .unwrap();
        }
        let err = w.flush().unwrap_err();
        assert!(
            matches!(&err, PcapError::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe),
            "{err:?}"
        );
        let read = reader.join().unwrap();
        // 24 bytes of header, then records of 76 bytes: the reader got 12
        // whole ones, the pipe took at most a page more.
        assert_eq!(&read[..4], &MAGIC_NS.to_ne_bytes());
        let kept = w.kept();
        let most = ((1000 + size as u64) - 24) / 76;
        assert!((12..=most).contains(&kept), "kept {kept}, at most {most}");
    }
}
