//! The event ring buffer as mapped into this process, read in batches,
//! with the wake-up request the XDP program honours.
//!
//! aya's `RingBuf` publishes the consumer position after every record; the
//! program's reservations read that position, so each store moves a cache
//! line between the reader's CPU and the producers'. Here a batch is read
//! against one reading of the producer position, and the consumer position
//! is published once per batch (or per sixteenth of the ring, so that a
//! long batch frees room as it goes).
//!
//! The layout is the kernel's (`kernel/bpf/ringbuf.c`): one read-write page
//! holding the consumer position, then one read-only page holding the
//! producer position, then the data pages mapped twice in a row, so that a
//! record that wraps around the end reads as one slice. Every record starts
//! with an 8-byte header: its length in the low 30 bits, then a discard bit
//! and a busy bit (set while the producer fills it in).

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd, RawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, AtomicU64, Ordering, fence},
};

use aya::maps::MapData;
use traffic_common::WAKE_ME;

const BUSY_BIT: u32 = 1 << 31;
const DISCARD_BIT: u32 = 1 << 30;
const HEADER_LEN: u64 = 8;

/// One `mmap`, unmapped when dropped.
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    pub(crate) fn new(fd: RawFd, len: usize, prot: libc::c_int, offset: usize) -> io::Result<Self> {
        let offset = libc::off_t::try_from(offset).map_err(io::Error::other)?;
        // SAFETY: a fresh shared mapping of the map's fd; the kernel checks
        // the length, protection and offset against the map.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            ptr: NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?,
            len,
        })
    }
}

impl Mapping {
    /// The mapped bytes, to write; the mapping must have been made with
    /// `PROT_WRITE`.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` maps `len` bytes for as long as `self` lives, and
        // `&mut self` makes this the only reference into them from here.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped; nothing borrows it after
        // its owner is gone.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// What one batch read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Records handed to the caller.
    pub records: u64,
    /// Bytes of ring they took, headers and padding included.
    pub bytes: u64,
}

/// The event ring, mapped for reading, and the program's wake-up flag.
pub struct EventRing {
    // Declared before the maps: unmapped before their fds close.
    consumer: Mapping,
    producer: Mapping,
    wake: Mapping,
    /// Bytes of data in the ring (a power of two).
    size: u64,
    /// Where the data starts in the producer mapping: one page in.
    data: usize,
    /// Where the next record starts, ahead of the published position.
    pos: u64,
    events: MapData,
    _wake_map: MapData,
}

// SAFETY: the mappings are owned, and every access to shared memory goes
// through atomics; nothing is tied to the thread that made it.
unsafe impl Send for EventRing {}

impl EventRing {
    /// Maps the ring `events` of `size` bytes, and `wake`, the program's
    /// one-entry wake-up array.
    ///
    /// # Errors
    ///
    /// When the kernel refuses a mapping.
    pub fn new(events: MapData, wake: MapData, size: u32) -> io::Result<Self> {
        let page = page_size();
        let size = u64::from(size);
        let fd = events.fd().as_fd().as_raw_fd();
        let consumer = Mapping::new(fd, page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let data_len = usize::try_from(2 * size).map_err(io::Error::other)?;
        let producer = Mapping::new(fd, page + data_len, libc::PROT_READ, page)?;
        let wake_fd = wake.fd().as_fd().as_raw_fd();
        let wake_map = Mapping::new(wake_fd, page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let mut ring = Self {
            consumer,
            producer,
            wake: wake_map,
            size,
            data: page,
            pos: 0,
            events,
            _wake_map: wake,
        };
        ring.pos = ring.consumer_pos().load(Ordering::Acquire);
        Ok(ring)
    }

    fn consumer_pos(&self) -> &AtomicU64 {
        // SAFETY: the first word of the consumer page, 8-byte aligned (page
        // aligned), valid for as long as the mapping.
        unsafe { &*self.consumer.ptr.as_ptr().cast::<AtomicU64>() }
    }

    fn producer_pos(&self) -> u64 {
        // SAFETY: as above, the producer page; the kernel publishes it with
        // a release store, paired with this acquire load.
        unsafe { &*self.producer.ptr.as_ptr().cast::<AtomicU64>() }.load(Ordering::Acquire)
    }

    fn wake_flag(&self) -> &AtomicU32 {
        // SAFETY: the one u32 entry of the mapped array, page aligned.
        unsafe { &*self.wake.ptr.as_ptr().cast::<AtomicU32>() }
    }

    /// The record header at ring position `pos`.
    fn header(&self, pos: u64) -> u32 {
        let offset = self.data + (pos & (self.size - 1)) as usize;
        // SAFETY: `offset` is inside the first copy of the data pages and
        // 8-byte aligned (records are); the kernel clears the busy bit with
        // a fully ordered exchange, paired with this acquire load.
        unsafe { &*self.producer.ptr.as_ptr().add(offset).cast::<AtomicU32>() }
            .load(Ordering::Acquire)
    }

    /// Where the producers have reserved up to, for [`EventRing::read_to`].
    /// Every record before it was stamped before this reading.
    pub fn produced(&self) -> u64 {
        self.producer_pos()
    }

    /// Reads the committed records before `produced`, in order, handing
    /// each one's bytes to `each`, and publishes the room they took. Stops
    /// early at a record still being written.
    pub fn read_to(&mut self, produced: u64, mut each: impl FnMut(&[u8])) -> Batch {
        let mut batch = Batch::default();
        let mut published = self.pos;
        while self.pos != produced {
            let header = self.header(self.pos);
            if header & BUSY_BIT != 0 {
                break;
            }
            let len = u64::from(header & !(BUSY_BIT | DISCARD_BIT));
            if len + HEADER_LEN > self.size {
                // Never written by the kernel; reading on would leave the
                // mapping.
                break;
            }
            if header & DISCARD_BIT == 0 {
                let start = self.data + ((self.pos + HEADER_LEN) & (self.size - 1)) as usize;
                // SAFETY: the record lies inside the two copies of the data
                // pages (it is at most the ring's size and starts in the
                // first), and the kernel does not reuse it before the
                // consumer position passes it, which happens below, after
                // `each` returns.
                let record = unsafe {
                    std::slice::from_raw_parts(self.producer.ptr.as_ptr().add(start), len as usize)
                };
                each(record);
                batch.records += 1;
            }
            let taken = (HEADER_LEN + len).next_multiple_of(8);
            self.pos += taken;
            batch.bytes += taken;
            if self.pos - published >= self.size / 16 {
                self.consumer_pos().store(self.pos, Ordering::Release);
                published = self.pos;
            }
        }
        if published != self.pos {
            self.consumer_pos().store(self.pos, Ordering::Release);
        }
        batch
    }

    /// Reads every committed record, as [`EventRing::read_to`] up to the
    /// producers' position now.
    pub fn read(&mut self, each: impl FnMut(&[u8])) -> Batch {
        let produced = self.produced();
        self.read_to(produced, each)
    }

    /// Whether a committed record waits.
    pub fn has_committed(&self) -> bool {
        self.pos != self.producer_pos() && self.header(self.pos) & BUSY_BIT == 0
    }

    /// Asks the program to wake the reader with the next event. Returns
    /// `false` when an event is already waiting (the request is then
    /// withdrawn: read instead of sleeping).
    ///
    /// The request is published before the last look at the ring; the
    /// program looks at the request after committing its event. So either
    /// this sees the event or the program sees the request: a reader that
    /// sleeps after `true` misses nothing. A record still being written
    /// (busy) counts as not yet there: its producer will see the request.
    pub fn ask_wake(&self) -> bool {
        self.wake_flag().store(WAKE_ME, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.has_committed() {
            self.cancel_wake();
            return false;
        }
        true
    }

    /// Withdraws a wake-up request: the reader reads on its own schedule.
    pub fn cancel_wake(&self) {
        self.wake_flag().store(0, Ordering::Relaxed);
    }

    /// Bytes of data in the ring.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// The ring's file descriptor, readable when the program wakes the reader.
impl AsRawFd for EventRing {
    fn as_raw_fd(&self) -> RawFd {
        self.events.fd().as_fd().as_raw_fd()
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page).unwrap_or(4096)
}
