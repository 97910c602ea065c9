//! Batched map reads and writes (`BPF_MAP_*_BATCH`, Linux 5.6), which aya
//! 0.14 does not wrap: a million per-rule counters read in a few hundred
//! system calls instead of a million.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Runs batch command `cmd`; the count the kernel filled in, and whether
/// the map has no more elements after them.
fn batch(cmd: libc::c_long, attr: &mut BatchAttr) -> io::Result<(u32, bool)> {
    // SAFETY: `attr` is a valid `bpf_attr` prefix of its size; every
    // pointer in it is to a live buffer of the size the command needs,
    // checked by the callers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            size_of::<BatchAttr>(),
        )
    };
    if rc == 0 {
        return Ok((attr.count, false));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOENT) => Ok((attr.count, true)),
        _ => Err(e),
    }
}

/// Element `i` of a batch of per-CPU values: one `T` per possible CPU,
/// each in 8-byte-aligned room, as the kernel lays them out.
fn per_cpu<T: bytemuck::Pod>(values: &[u8], i: usize, cpus: usize) -> Vec<T> {
    let stride = size_of::<T>().next_multiple_of(8);
    let element = &values[i * stride * cpus..(i + 1) * stride * cpus];
    (0..cpus)
        .map(|c| bytemuck::pod_read_unaligned(&element[c * stride..c * stride + size_of::<T>()]))
        .collect()
}

/// The number of possible CPUs: the number of values of a per-CPU map
/// element.
///
/// # Errors
///
/// When `/sys/devices/system/cpu/possible` cannot be read.
pub fn possible_cpus() -> io::Result<usize> {
    aya::util::nr_cpus().map_err(|(_, e)| e)
}

/// Reads elements `first .. first + n` of the per-CPU array `fd` whose
/// values are `T`, handing each index and its values (one per possible
/// CPU) to `each`, in chunks of at most `chunk` elements.
///
/// # Errors
///
/// When the kernel refuses a read.
pub fn read_per_cpu_array<T: bytemuck::Pod>(
    fd: BorrowedFd<'_>,
    first: u32,
    n: u32,
    cpus: usize,
    each: &mut dyn FnMut(u32, &[T]),
) -> io::Result<()> {
    const CHUNK: u32 = 16 * 1024;
    let stride = size_of::<T>().next_multiple_of(8);
    let mut keys = vec![0u32; CHUNK as usize];
    let mut values = vec![0u8; CHUNK as usize * stride * cpus];
    let end = first + n;
    let mut next = first;
    while next < end {
        let want = (end - next).min(CHUNK);
        let prev = next.wrapping_sub(1);
        let mut out = 0u32;
        let mut attr = BatchAttr {
            in_batch: if next == 0 {
                0
            } else {
                std::ptr::from_ref(&prev) as u64
            },
            out_batch: std::ptr::from_mut(&mut out) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: want,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        let (got, at_end) = batch(BPF_MAP_LOOKUP_BATCH, &mut attr)?;
        for (i, &key) in keys.iter().take(got as usize).enumerate() {
            each(key, &per_cpu::<T>(&values, i, cpus));
        }
        if at_end || got == 0 {
            break;
        }
        next += got;
    }
    Ok(())
}

/// Sets elements `first .. first + n` of the per-CPU array `fd` whose
/// values are `value_size` bytes to zero on every CPU.
///
/// # Errors
///
/// When the kernel refuses a write.
pub fn zero_per_cpu_array(
    fd: BorrowedFd<'_>,
    first: u32,
    n: u32,
    value_size: usize,
    cpus: usize,
) -> io::Result<()> {
    const CHUNK: u32 = 16 * 1024;
    let stride = value_size.next_multiple_of(8);
    let values = vec![0u8; CHUNK as usize * stride * cpus];
    let mut next = first;
    let end = first + n;
    while next < end {
        let want = (end - next).min(CHUNK);
        let keys: Vec<u32> = (next..next + want).collect();
        let mut attr = BatchAttr {
            keys: keys.as_ptr() as u64,
            values: values.as_ptr() as u64,
            count: want,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        let (done, _) = batch(BPF_MAP_UPDATE_BATCH, &mut attr)?;
        if done == 0 {
            return Err(io::Error::other("the kernel wrote no element of a batch"));
        }
        next += done;
    }
    Ok(())
}
