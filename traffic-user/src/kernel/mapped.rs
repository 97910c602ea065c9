//! BPF arrays mapped into this process (`BPF_F_MMAPABLE`): read and
//! written as memory, without a system call per element.
//!
//! The top-talker slots and bitmaps are such arrays, in parts of which
//! each CPU writes only its own ([`traffic_common::top::part`]); the loader
//! reads and empties a part only once no packet can still be counting into
//! it (after the switch of sides and the grace period), so the program and
//! this process never touch the same part at once.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
    ptr::NonNull,
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

    /// Entries `first .. first + n`, to read and change in place.
    ///
    /// The caller must only ask for entries the program does not write
    /// until the borrow ends: for the top-talker arrays, a side out of use
    /// after its grace period (see the module's comment).
    ///
    /// # Panics
    ///
    /// When they are not all in the array.
    pub fn part_mut(&mut self, first: usize, n: usize) -> &mut [T] {
        assert!(first + n <= self.entries, "entries out of the array");
        // SAFETY: in bounds (checked above) of a live, writable mapping
        // that this value owns; `T` is Pod, so any bytes are a value; no
        // one else writes these entries while the borrow lasts (the
        // caller's part of the contract above).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(first), n) }
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
