//! BPF arrays mapped into this process (`BPF_F_MMAPABLE`): read and
//! written as memory, without a system call per element.
//!
//! The per-rule counters are such an array, a part per CPU, read while the
//! program counts (each count is a u64 the program writes whole) and
//! zeroed only for the table out of force.
//!
//! The logs of sources are such arrays ([`traffic_common::top`]): each CPU
//! appends to its own part and publishes its head; this process reads the
//! units between its tail and that head, which the program does not write
//! again until the tail, published after the reading, has passed them.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
    ptr::NonNull,
    sync::atomic::AtomicU64,
};

use bytemuck::Pod;

/// A BPF array of `T` mapped into this process.
pub struct MappedArray<T> {
    ptr: NonNull<T>,
    entries: usize,
    /// Bytes mapped.
    len: usize,
}

impl<T: Pod> MappedArray<T> {
    /// Maps the `entries` values of the array behind `fd`.
    ///
    /// # Errors
    ///
    /// When the kernel refuses (the map was not made `BPF_F_MMAPABLE`).
    pub fn map(fd: BorrowedFd<'_>, entries: usize) -> io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let len = (entries * size_of::<T>()).next_multiple_of(page).max(page);
        // SAFETY: a new shared mapping of a BPF array's values; the kernel
        // checks the length against the map.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<T>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Self { ptr, entries, len })
    }

    /// Entry `i`, read once. The program may write it at the same time
    /// (then the value is whichever the read saw); for a log, read only
    /// units the program has published and not been given back.
    ///
    /// # Panics
    ///
    /// When `i` is not in the array.
    pub fn get(&self, i: usize) -> T {
        assert!(i < self.entries, "entry out of the array");
        // SAFETY: in bounds (checked above) of a live mapping that this
        // value owns; `T` is Pod, so any bytes are a value; volatile, since
        // the program writes the memory behind the compiler's back.
        unsafe { self.ptr.as_ptr().add(i).read_volatile() }
    }

    /// Entries `first .. first + n`, read as plain memory: only entries
    /// the program does not write while the borrow lasts (a log's
    /// published units, until the tail is published past them).
    ///
    /// # Panics
    ///
    /// When they are not all in the array.
    pub fn published(&self, first: usize, n: usize) -> &[T] {
        assert!(first + n <= self.entries, "entries out of the array");
        // SAFETY: in bounds (checked above) of a live mapping that lives as
        // long as the borrow of `self`; `T` is Pod, so any bytes are a
        // value; nothing writes these entries meanwhile (the caller's part).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(first), n) }
    }

    /// Writes entry `i`, once; for entries the program does not write
    /// meanwhile (the per-rule counters of the table out of force).
    ///
    /// # Panics
    ///
    /// When `i` is not in the array.
    pub fn set(&self, i: usize, value: T) {
        assert!(i < self.entries, "entry out of the array");
        // SAFETY: in bounds (checked above) of a live, writable mapping
        // that this value owns; volatile, as in `get`.
        unsafe { self.ptr.as_ptr().add(i).write_volatile(value) }
    }
}

impl MappedArray<u64> {
    /// Entry `i` as an atomic word, for positions the program and this
    /// process publish to each other.
    ///
    /// # Panics
    ///
    /// When `i` is not in the array.
    pub fn atomic(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.entries, "entry out of the array");
        // SAFETY: in bounds of a live mapping that lives as long as the
        // borrow of `self`; page-aligned, so every u64 is aligned; AtomicU64
        // has u64's layout, and the program's accesses are single aligned
        // 8-byte loads and stores.
        unsafe { AtomicU64::from_ptr(self.ptr.as_ptr().add(i)) }
    }
}

impl<T> Drop for MappedArray<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

// SAFETY: the mapping is plain memory owned by this value; moving it to
// another thread moves that ownership.
unsafe impl<T: Send> Send for MappedArray<T> {}
