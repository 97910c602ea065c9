//! Writing a capture file around the page cache (`O_DIRECT`).
//!
//! A buffered write copies every record into the page cache, and for every
//! new page the file system allocates a folio, buffer heads and a delayed
//! block. Profiled at full rate in the veth lab (ext4), that was a quarter
//! of traffic's CPU per captured frame, and it is most of what a capture
//! to a file costs beyond reading the ring. Direct I/O hands the buffer to
//! the disk as it is: no copy, no page cache filled with capture data that
//! nobody reads back, and the writer's CPU per megabyte falls to the cost
//! of one request and of pinning its pages for the device. The buffers
//! are transparent huge pages, so that a 2 MiB buffer is pinned as one:
//! in small pages, pinning and mapping them for the block layer cost the
//! writing thread 220 µs a megabyte here, in huge pages 75.
//!
//! Direct I/O wants the buffer's address, the file offset and the length
//! aligned as the file system says (`statx`'s `STATX_DIOALIGN`). So while
//! the run goes on the writer writes whole aligned blocks only and keeps the
//! rest (less than a block) in front of the next records; the last write of
//! a file turns direct I/O off and writes the tail through the page cache.
//! A file system that offers no direct I/O (or says nothing of its
//! alignment), a device, a FIFO and standard output get plain writes.

use std::{
    alloc::{self, Layout},
    fs::File,
    io::{self, Write as _},
    os::fd::AsRawFd as _,
    ptr::NonNull,
    sync::mpsc,
    thread,
};

use super::file::Kind;

/// A fixed-capacity byte buffer whose start is aligned to `align`.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    layout: Layout,
    len: usize,
}

// SAFETY: the buffer owns its allocation, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// An empty buffer of `capacity` bytes starting at a multiple of
    /// `align` (a power of two).
    ///
    /// # Panics
    ///
    /// When `align` is not a power of two or `capacity` is zero.
    pub fn new(capacity: usize, align: usize) -> Self {
        assert!(capacity > 0, "an aligned buffer needs room");
        let layout = Layout::from_size_align(capacity, align).expect("a power-of-two alignment");
        // SAFETY: the layout's size is not zero.
        let ptr = unsafe { alloc::alloc(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            alloc::handle_alloc_error(layout)
        };
        Self {
            ptr,
            layout,
            len: 0,
        }
    }

    /// A buffer of at least `capacity` bytes in whole transparent huge
    /// pages (2 MiB), aligned to them and to `block`.
    pub fn huge(capacity: usize, block: usize) -> Self {
        let align = HUGE.max(block);
        let buf = Self::new(capacity.next_multiple_of(align), align);
        // SAFETY: advice on memory this buffer owns; failing, the pages are
        // small ones, which work as well.
        unsafe {
            libc::madvise(buf.ptr.as_ptr().cast(), buf.capacity(), libc::MADV_HUGEPAGE);
        }
        buf
    }

    /// Touches every page, so that none is faulted in later.
    pub fn fault_in(&mut self) {
        // SAFETY: the whole allocation, which this buffer owns.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr(), 0, self.capacity()) };
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes that fit.
    pub fn capacity(&self) -> usize {
        self.layout.size()
    }

    /// Appends `bytes`.
    ///
    /// # Panics
    ///
    /// When they do not fit; the caller writes the buffer out first.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        assert!(bytes.len() <= self.capacity() - self.len, "buffer overrun");
        // SAFETY: the destination is inside the allocation (checked above)
        // and cannot overlap a borrowed `bytes`.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.as_ptr().add(self.len),
                bytes.len(),
            );
        }
        self.len += bytes.len();
    }

    /// Appends `n` zero bytes.
    ///
    /// # Panics
    ///
    /// When they do not fit.
    pub fn extend_zeros(&mut self, n: usize) {
        assert!(n <= self.capacity() - self.len, "buffer overrun");
        // SAFETY: inside the allocation, checked above.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr().add(self.len), 0, n) };
        self.len += n;
    }

    /// Empties the buffer.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Keeps the first `n` bytes.
    pub fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n);
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the first `len` bytes are initialised.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// How a capture file is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// Around the page cache, in whole blocks of this many bytes.
    Direct(usize),
    /// Through the page cache.
    Buffered,
}

/// A file and the buffer of what is not yet written to it.
///
/// Written through the page cache, the buffer is written by the caller's
/// thread, as a `write` there costs CPU, not waiting. Written directly, a
/// `write` waits for the disk (0.6 ms a megabyte here, much longer on a
/// slow or throttled volume), and a reader blocked meanwhile delays every
/// packet that arrives (measured at 10,000 packets/s: p99.9 of delivery
/// 270-600 µs against 120-150 through the page cache). So full buffers go
/// to a thread of the file's own, which writes them in order, and the
/// caller fills the next; it waits only when [`IN_FLIGHT`] buffers are all
/// still being written.
pub struct FileWriter {
    /// The buffer being filled.
    buf: AlignedBuf,
    to: Target,
    /// Bytes known written, from the file's start: up to the first write
    /// that failed.
    durable: u64,
    /// Whether `buf` holds the bytes of a write here that failed: the
    /// kernel may have taken some of them ([`FileWriter::failed_write`]).
    holds_failed: bool,
}

/// Where full buffers go.
enum Target {
    /// Written here.
    Here(File),
    /// Written by the file's thread.
    Thread(Thread),
    /// Finished with an error: nothing more is written. The file, when it
    /// came back, to cut a record in half off its end ([`FileWriter::cut`]).
    Gone(Option<File>),
}

/// The file's writing thread, and the buffers it has.
struct Thread {
    /// The direct-I/O block: whole ones are handed to the thread.
    block: usize,
    jobs: Option<mpsc::Sender<Job>>,
    done: mpsc::Receiver<Done>,
    /// Buffers the thread made ready before its first job.
    fresh: mpsc::Receiver<AlignedBuf>,
    handle: Option<thread::JoinHandle<File>>,
    /// Buffers sent and not yet back.
    in_flight: usize,
    /// Buffers back, to fill again.
    spare: Vec<AlignedBuf>,
    /// The first error the thread met, not yet reported.
    failed: Option<io::Error>,
    /// Bytes of the buffers it wrote whole, before any failed.
    durable: u64,
}

/// A buffer for the thread to write.
enum Job {
    /// Whole blocks, directly.
    Blocks(AlignedBuf),
    /// The end of the file: direct I/O off, every byte written.
    Finish(AlignedBuf),
    /// The tail, less than a block, through the page cache at its place
    /// without moving the file's offset: the next blocks written rewrite
    /// it, directly ([`FileWriter::write_out`]).
    Tail(AlignedBuf),
}

/// A buffer back from the thread, and how its write went: whole, or not
/// (an error, or not tried after an earlier one).
struct Done {
    buf: AlignedBuf,
    result: io::Result<()>,
    /// Whether the buffer was a [`Job::Tail`]: its bytes count when their
    /// block is written, and it is not filled again.
    tail: bool,
}

/// Buffers a file may have with its thread at once: at full rate on the
/// veth lab (about 22 MB/s of pcap) a 2 MiB buffer lasts 90 ms, so a disk
/// may take 270 ms over one before the reader waits.
const IN_FLIGHT: usize = 3;

/// The alignment of every buffer, whatever the file system asks beyond it:
/// a page.
const PAGE: usize = 4096;

/// A transparent huge page.
const HUGE: usize = 2 << 20;

/// The buffer of a file after its end ([`FileWriter::finish`]).
const AFTER_END: usize = 1 << 16;

impl FileWriter {
    /// A writer of `capacity` buffered bytes to `file`, an output of `kind`:
    /// direct I/O when `direct` is asked, the output is a regular file and
    /// its file system supports it.
    pub fn new(file: File, kind: Kind, capacity: usize, direct: bool) -> Self {
        let regular = matches!(kind, Kind::Created | Kind::Truncated { .. });
        let mode = if direct && regular {
            enable_direct(&file)
        } else {
            WriteMode::Buffered
        };
        let (buf, to) = match mode {
            WriteMode::Direct(block) => {
                // The first buffer is faulted in here: for a run's first
                // file, before anything is attached.
                let mut buf = AlignedBuf::huge(capacity, block);
                buf.fault_in();
                let capacity = buf.capacity();
                (buf, Target::Thread(Thread::start(file, block, capacity)))
            }
            WriteMode::Buffered => (
                AlignedBuf::new(capacity.next_multiple_of(PAGE), PAGE),
                Target::Here(file),
            ),
        };
        Self {
            buf,
            to,
            durable: 0,
            holds_failed: false,
        }
    }

    /// The bytes of the write here that just failed, from where the
    /// durable bytes stood before it: the first of them up to
    /// [`FileWriter::durable`] were taken (a pipe's reader may have read
    /// them). `None` once anything else was done, and for the file's
    /// thread, whose writes count whole or not at all.
    pub fn failed_write(&self) -> Option<&[u8]> {
        self.holds_failed.then_some(&self.buf[..])
    }

    /// How the file is written now.
    pub fn mode(&self) -> WriteMode {
        match &self.to {
            Target::Thread(t) => WriteMode::Direct(t.block),
            Target::Here(_) | Target::Gone(_) => WriteMode::Buffered,
        }
    }

    /// The buffer, to append records to.
    pub fn buf(&mut self) -> &mut AlignedBuf {
        &mut self.buf
    }

    /// Bytes not yet handed on to be written.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Bytes known to be in the file, from its start: every byte handed on
    /// before the first write that failed (a write still with the thread
    /// is not counted until it is done).
    pub fn durable(&self) -> u64 {
        match &self.to {
            Target::Thread(t) => self.durable + t.durable,
            _ => self.durable,
        }
    }

    /// After a failure, cuts the file to `len` bytes, where its last whole
    /// record ends, so that a reader finds no record cut in half. Only a
    /// regular file can be cut; for anything else this does nothing.
    pub fn cut(&mut self, len: u64) {
        if let Target::Here(file) | Target::Gone(Some(file)) = &self.to
            && file.metadata().is_ok_and(|m| m.is_file())
        {
            let _ = file.set_len(len);
        }
    }

    /// Writes what can be written now: every byte through the page cache,
    /// or hands the whole blocks to the file's thread, keeping the rest. A
    /// write that failed is reported by the next call (the thread's, by
    /// the call after it failed); from then on nothing more is written:
    /// the error says what was lost, and the caller stops writing this
    /// file.
    ///
    /// # Errors
    ///
    /// When a write failed.
    pub fn flush(&mut self) -> io::Result<()> {
        let result = match &mut self.to {
            Target::Here(file) => write_all(file, &self.buf, &mut self.durable),
            Target::Thread(t) => t.send_blocks(&mut self.buf),
            Target::Gone(_) => Ok(()),
        };
        // Kept, for the caller to see what the failed write held.
        self.holds_failed = result.is_err() && matches!(self.to, Target::Here(_));
        if result.is_err() {
            self.stop();
        }
        // The thread took the whole blocks and left the rest; anywhere else
        // the buffer is written, or given up.
        if !matches!(self.to, Target::Thread(_)) && !self.holds_failed {
            self.buf.clear();
        }
        result
    }

    /// Writes every byte held and waits until every write is done, as
    /// [`FileWriter::finish`] does, and goes on as before: with direct I/O
    /// the tail, less than a block, goes through the page cache at its
    /// place, and stays in the buffer to be written again, directly, as
    /// the start of its block. For a reader who asks for a complete file
    /// while the run goes on (SIGUSR2, as tcpdump has it).
    ///
    /// # Errors
    ///
    /// When a write failed.
    pub fn write_out(&mut self) -> io::Result<()> {
        let Target::Thread(t) = &mut self.to else {
            return self.flush();
        };
        let result = t
            .send_blocks(&mut self.buf)
            .and_then(|()| t.write_tail(&self.buf));
        if result.is_err() {
            self.stop();
        }
        result
    }

    /// Writes every byte held and waits until every write is done: the file
    /// is complete up to here. Direct I/O is turned off for a tail shorter
    /// than a block, which the page cache takes, and for the rest of the
    /// file.
    ///
    /// # Errors
    ///
    /// When a write failed.
    pub fn finish(&mut self) -> io::Result<()> {
        self.holds_failed = false;
        let result = match std::mem::replace(&mut self.to, Target::Gone(None)) {
            Target::Here(file) => {
                let r = write_all(&file, &self.buf, &mut self.durable);
                self.to = Target::Here(file);
                self.holds_failed = r.is_err();
                r
            }
            Target::Thread(t) => {
                // Written through the page cache from here on, a file needs
                // no more than a modest buffer: writes after its end are
                // rare (a file that was read back and then added to).
                let tail = std::mem::replace(&mut self.buf, AlignedBuf::new(AFTER_END, PAGE));
                let (file, durable, r) = t.finish(tail);
                self.durable += durable;
                self.to = match file {
                    Some(file) if r.is_ok() => Target::Here(file),
                    file => Target::Gone(file),
                };
                r
            }
            Target::Gone(file) => {
                self.to = Target::Gone(file);
                Ok(())
            }
        };
        if !self.holds_failed {
            self.buf.clear();
        }
        if result.is_err() {
            self.stop();
        }
        result
    }

    /// Writes nothing more to this file; keeps it, to be cut.
    fn stop(&mut self) {
        self.to = match std::mem::replace(&mut self.to, Target::Gone(None)) {
            Target::Thread(t) => {
                let (file, durable, _) = t.finish(AlignedBuf::new(PAGE, PAGE));
                self.durable += durable;
                Target::Gone(file)
            }
            Target::Here(file) => Target::Gone(Some(file)),
            gone @ Target::Gone(_) => gone,
        };
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        // Whoever owns the writer finishes it first when it cares about the
        // error; this only makes sure the thread ends and the bytes held are
        // not silently left.
        if matches!(self.to, Target::Thread(_)) {
            let _ = self.finish();
        }
    }
}

impl Thread {
    /// Starts the thread writing `file` directly in blocks of `block`.
    /// Its first job is to fill [`IN_FLIGHT`] buffers of `capacity` with
    /// zeroes, so that their pages (huge ones, found by compacting memory
    /// if need be) are faulted in by this thread, not by the reader while
    /// packets wait.
    fn start(file: File, block: usize, capacity: usize) -> Self {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (tx, done) = mpsc::channel::<Done>();
        let (fresh_tx, fresh) = mpsc::channel::<AlignedBuf>();
        let handle = thread::Builder::new()
            .name("pcap-writer".into())
            .spawn(move || {
                for _ in 0..IN_FLIGHT {
                    let mut buf = AlignedBuf::huge(capacity, block);
                    buf.fault_in();
                    if fresh_tx.send(buf).is_err() {
                        break;
                    }
                }
                drop(fresh_tx);
                write_jobs(file, block, &rx, &tx)
            });
        match handle {
            Ok(handle) => Self {
                block,
                jobs: Some(jobs),
                done,
                fresh,
                handle: Some(handle),
                in_flight: 0,
                spare: Vec::new(),
                failed: None,
                durable: 0,
            },
            // No thread: the file was moved into the closure, which is gone;
            // report it at the first write.
            Err(e) => Self {
                block,
                jobs: None,
                done,
                fresh: mpsc::channel().1,
                handle: None,
                in_flight: 0,
                spare: Vec::new(),
                failed: Some(e),
                durable: 0,
            },
        }
    }

    /// Takes the buffers the thread is done with, without waiting; `wait`:
    /// waits for one at least.
    fn collect(&mut self, wait: bool) {
        let mut wait = wait && self.in_flight > 0;
        loop {
            let next = if wait {
                self.done.recv().ok()
            } else {
                self.done.try_recv().ok()
            };
            let Some(Done {
                mut buf,
                result,
                tail,
            }) = next
            else {
                break;
            };
            wait = false;
            self.in_flight -= 1;
            match result {
                Ok(()) if tail => {}
                Ok(()) => self.durable += buf.len() as u64,
                Err(e) => {
                    self.failed.get_or_insert(e);
                }
            }
            if !tail {
                buf.clear();
                self.spare.push(buf);
            }
        }
    }

    /// Hands the whole blocks of `buf` to the thread, and puts the rest at
    /// the start of a fresh buffer in its place.
    fn send_blocks(&mut self, buf: &mut AlignedBuf) -> io::Result<()> {
        self.collect(false);
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let block = self.block;
        let n = buf.len() / block * block;
        if n == 0 {
            return Ok(());
        }
        if self.in_flight >= IN_FLIGHT {
            self.collect(true);
        }
        let mut next = self
            .spare
            .pop()
            .or_else(|| self.fresh.try_recv().ok())
            .unwrap_or_else(|| AlignedBuf::huge(buf.capacity(), block));
        next.extend_from_slice(&buf[n..]);
        buf.truncate(n);
        let full = std::mem::replace(buf, next);
        self.send(Job::Blocks(full))
    }

    fn send(&mut self, job: Job) -> io::Result<()> {
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok());
        if sent {
            self.in_flight += 1;
            Ok(())
        } else {
            Err(self
                .failed
                .take()
                .unwrap_or_else(|| io::Error::other("the pcap writing thread has stopped")))
        }
    }

    /// Waits until every buffer sent is back, or the thread is gone.
    fn wait_all(&mut self) {
        while self.in_flight > 0 {
            let before = self.in_flight;
            self.collect(true);
            if self.in_flight == before {
                break; // the thread is gone
            }
        }
    }

    /// Has `tail` (less than a block) written after the blocks sent, at its
    /// place and through the page cache, and waits for every write: the
    /// file is complete up to here. The thread goes on.
    fn write_tail(&mut self, tail: &[u8]) -> io::Result<()> {
        if !tail.is_empty() {
            let mut buf = AlignedBuf::new(tail.len().next_multiple_of(PAGE), PAGE);
            buf.extend_from_slice(tail);
            self.send(Job::Tail(buf))?;
        }
        self.wait_all();
        self.failed.take().map_or(Ok(()), Err)
    }

    /// Sends `tail` as the end of the file, waits for every write, and ends
    /// the thread: the file back, the bytes written whole before any
    /// failure, and the first error.
    fn finish(mut self, tail: AlignedBuf) -> (Option<File>, u64, io::Result<()>) {
        let sent = self.send(Job::Finish(tail));
        self.jobs = None;
        self.wait_all();
        let file = self.handle.take().and_then(|h| h.join().ok());
        let result = match (sent, self.failed.take()) {
            (_, Some(e)) | (Err(e), None) => Err(e),
            (Ok(()), None) => Ok(()),
        };
        (file, self.durable, result)
    }
}

/// The thread: writes each job's buffer in order, and gives it back. After
/// an error it writes nothing more (what follows a gap would be a corrupt
/// file), but still gives buffers back. Returns the file, direct I/O off.
fn write_jobs(
    file: File,
    block: usize,
    jobs: &mpsc::Receiver<Job>,
    done: &mpsc::Sender<Done>,
) -> File {
    let mut direct = Some(block);
    let mut failed = false;
    for job in jobs {
        let (buf, last, tail) = match job {
            Job::Blocks(buf) => (buf, false, false),
            Job::Finish(buf) => (buf, true, false),
            Job::Tail(buf) => (buf, false, true),
        };
        if last && direct.take().is_some() {
            let _ = set_direct(&file, false);
        }
        let result = if failed {
            Err(io::Error::other("not written: an earlier write failed"))
        } else if tail {
            write_tail(&file, &buf, direct.is_some())
        } else {
            // A buffer counts whole or not at all: the file is cut after
            // the last record of the buffers written whole.
            write_blocks(&file, &buf, &mut direct, &mut 0)
        };
        failed |= result.is_err();
        if done.send(Done { buf, result, tail }).is_err() || last {
            break;
        }
    }
    if direct.is_some() {
        let _ = set_direct(&file, false);
    }
    file
}

/// Writes `bytes` whole, directly while `direct` holds the block size: a
/// short write leaves the offset out of alignment, and a file system that
/// refuses the alignment statx gave says EINVAL; either way the rest goes
/// through the page cache. Every byte the kernel took is counted in
/// `taken`, also those taken before a write failed.
fn write_blocks(
    mut file: &File,
    bytes: &[u8],
    direct: &mut Option<usize>,
    taken: &mut u64,
) -> io::Result<()> {
    let mut done = 0;
    while done < bytes.len() {
        match file.write(&bytes[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(k) => {
                done += k;
                *taken += k as u64;
                if let Some(block) = *direct
                    && done % block != 0
                {
                    let _ = set_direct(file, false);
                    *direct = None;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && direct.is_some() => {
                set_direct(file, false)?;
                *direct = None;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes `bytes` at the file's offset through the page cache, leaving the
/// offset where it is (`pwrite`), and turns direct I/O back on after when
/// `direct`: the blocks written next start at the same offset and write
/// these bytes again, directly, over the cached ones.
fn write_tail(file: &File, bytes: &[u8], direct: bool) -> io::Result<()> {
    use std::os::unix::fs::FileExt as _;
    let at = {
        let mut f = file;
        io::Seek::stream_position(&mut f)?
    };
    if direct {
        set_direct(file, false)?;
    }
    let written = file.write_all_at(bytes, at);
    if direct {
        set_direct(file, true)?;
    }
    written
}

/// Writes `bytes` whole through the page cache (or into a pipe), counting
/// in `durable` every byte the kernel took ([`write_blocks`]): a pipe
/// cannot be cut back, and what its reader was given is part of what the
/// output took.
fn write_all(file: &File, bytes: &[u8], durable: &mut u64) -> io::Result<()> {
    write_blocks(file, bytes, &mut None, durable)
}

/// Turns direct I/O on for `file` when its file system supports it, and
/// says in what blocks to write.
fn enable_direct(file: &File) -> WriteMode {
    let Some(block) = dio_block(file) else {
        return WriteMode::Buffered;
    };
    match set_direct(file, true) {
        Ok(()) => WriteMode::Direct(block),
        Err(_) => WriteMode::Buffered,
    }
}

/// The alignment direct I/O asks of `file`'s offsets, lengths and buffers,
/// or `None` when its file system supports none or does not say.
fn dio_block(file: &File) -> Option<usize> {
    // SAFETY: a plain C struct, for which all zeroes is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: statx fills the struct; an empty path with AT_EMPTY_PATH
    // names the descriptor itself.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &raw mut stx,
        )
    };
    if rc != 0 || stx.stx_mask & libc::STATX_DIOALIGN == 0 || stx.stx_dio_offset_align == 0 {
        return None;
    }
    let block = stx.stx_dio_offset_align.max(stx.stx_dio_mem_align) as usize;
    // A page-aligned buffer serves any alignment up to a page; beyond
    // that, the buffer is aligned to the block itself.
    (block.is_power_of_two() && block <= 1 << 20).then_some(block)
}

/// Sets or clears `O_DIRECT` on `file`.
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, with integer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if on {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("traffic-direct-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    const EXT4_SUPER_MAGIC: i64 = 0xEF53;

    fn fs_type(dir: &std::path::Path) -> i64 {
        use std::os::unix::ffi::OsStrExt as _;
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
        // SAFETY: a plain C struct, for which all zeroes is a valid value.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: statfs fills the struct for a valid C path.
        let rc = unsafe { libc::statfs(path.as_ptr(), &raw mut st) };
        assert_eq!(rc, 0);
        st.f_type as i64
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// Writes `chunks` through a writer in direct mode where the file
    /// system allows, flushing after each; the file must hold them all, in
    /// order, whatever the tails.
    fn round_trip(name: &str, chunks: &[usize], direct: bool) -> WriteMode {
        let path = temp(name);
        let file = File::create(&path).unwrap();
        let mut w = FileWriter::new(file, Kind::Created, 64 * 1024, direct);
        let mode = w.mode();
        let mut all = Vec::new();
        for &n in chunks {
            let bytes = pattern(n);
            if w.pending() + n > w.buf().capacity() {
                w.flush().unwrap();
            }
            w.buf().extend_from_slice(&bytes);
            all.extend_from_slice(&bytes);
            w.flush().unwrap();
            if let WriteMode::Direct(block) = w.mode() {
                assert!(w.pending() < block, "whole blocks are written at once");
            }
        }
        w.finish().unwrap();
        assert_eq!(w.pending(), 0);
        drop(w);
        let mut back = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut back).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(back.len(), all.len());
        assert!(back == all, "the file holds what was written, in order");
        mode
    }

    #[test]
    fn every_byte_arrives_with_unaligned_tails() {
        // Sizes of every kind, many more buffers than the thread holds at
        // once, so that the writer waits for it too.
        let mut chunks = vec![24, 80, 4000, 96, 8192, 1, 60_000, 4096, 3, 4464];
        let mut x: u32 = 12_345;
        for _ in 0..300 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            chunks.push(1 + (x >> 8) as usize % 20_000);
        }
        let mode = round_trip("tails", &chunks, true);
        // The temporary directory's file system decides; ext4 (these
        // machines' root) supports direct I/O, so there the direct path is
        // the one tried.
        if fs_type(&std::env::temp_dir()) == EXT4_SUPER_MAGIC {
            assert!(matches!(mode, WriteMode::Direct(_)), "{mode:?} on ext4");
        }
        assert_eq!(round_trip("plain", &chunks, false), WriteMode::Buffered);
    }

    #[test]
    fn a_write_out_completes_the_file_and_the_writer_goes_on() {
        let path = temp("writeout");
        let file = File::create(&path).unwrap();
        let mut w = FileWriter::new(file, Kind::Created, 64 * 1024, true);
        let mode = w.mode();
        if fs_type(&std::env::temp_dir()) == EXT4_SUPER_MAGIC {
            assert!(matches!(mode, WriteMode::Direct(_)), "{mode:?} on ext4");
        }
        let read = || {
            let mut back = Vec::new();
            File::open(&path).unwrap().read_to_end(&mut back).unwrap();
            back
        };
        let mut all = Vec::new();
        // Tails of every length against the block, a write-out after each:
        // the file holds every byte so far, and the blocks written after
        // rewrite each tail in place.
        for n in [100, 5000, 4096, 1, 9000, 30_000, 77] {
            let bytes = pattern(n + all.len())[all.len()..].to_vec();
            w.buf().extend_from_slice(&bytes);
            all.extend_from_slice(&bytes);
            w.flush().unwrap();
            w.write_out().unwrap();
            assert_eq!(w.mode(), mode, "the writer goes on as it was");
            let back = read();
            assert_eq!(back.len(), all.len());
            assert!(back == all, "complete after a write-out of {n}");
        }
        w.buf()
            .extend_from_slice(&pattern(all.len() + 3)[all.len()..]);
        all.extend_from_slice(&pattern(all.len() + 3)[all.len()..]);
        w.finish().unwrap();
        drop(w);
        let back = read();
        let _ = std::fs::remove_file(&path);
        assert!(back == all, "the file holds what was written, in order");
    }

    #[test]
    fn devices_are_written_plainly() {
        let null = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .unwrap();
        let w = FileWriter::new(null, Kind::Device, 4096, true);
        assert_eq!(w.mode(), WriteMode::Buffered);
    }

    #[test]
    fn buffers_are_aligned_and_hold_what_is_appended() {
        let mut b = AlignedBuf::new(8192, 4096);
        assert_eq!(b.as_ptr() as usize % 4096, 0);
        b.extend_from_slice(&pattern(5000));
        b.extend_zeros(3);
        assert_eq!(b.len(), 5003);
        assert_eq!(&b[..5000], &pattern(5000)[..]);
        assert_eq!(&b[5000..], &[0, 0, 0]);
        b.truncate(4096);
        assert_eq!(&b[..], &pattern(5000)[..4096]);
    }
}
