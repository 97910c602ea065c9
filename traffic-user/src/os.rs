//! System calls on descriptors that the inputs (rules files) and the
//! outputs (capture files) share, and the network namespaces the built-in
//! lab moves between.

use std::{fs::File, io, os::fd::AsRawFd as _, sync::Arc};

/// Waits until `fd` has bytes to read (or its writer left), without
/// blocking the runtime: the caller can wait for a signal beside it. A
/// descriptor the kernel cannot poll (a device that never blocks) is ready
/// at once.
///
/// # Errors
///
/// When polling fails.
pub async fn readable(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: a borrowed descriptor stays open, the same file, for as long
    // as the borrow, which outlives the registration made here.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
    };
    let Ok(fd) = registered else {
        return Ok(());
    };
    fd.readable().await?.retain_ready();
    Ok(())
}

/// Opens `path` for reading without waiting for a FIFO's writer: opening
/// a FIFO blocks in the kernel until one comes, where no signal handler
/// can end the wait, so it is opened with `O_NONBLOCK` and read blocking
/// afterwards; the caller waits for its bytes as it sees fit. A directory
/// is refused, as [`input_type`] says.
///
/// # Errors
///
/// When it cannot be opened, or is a directory.
pub fn open_input(path: &std::path::Path, what: &str) -> io::Result<(File, std::fs::FileType)> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    set_blocking(&file)?;
    let ty = input_type(&file, what)?;
    Ok((file, ty))
}

/// The type of the input `file`, refusing a directory ("it is a
/// directory; give `what`").
///
/// # Errors
///
/// When it is a directory, or its type cannot be read.
pub fn input_type(file: &File, what: &str) -> io::Result<std::fs::FileType> {
    let ty = file.metadata()?.file_type();
    if ty.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::IsADirectory,
            format!("it is a directory; give {what}"),
        ));
    }
    Ok(ty)
}

/// Clears `O_NONBLOCK` on `file`.
pub fn set_blocking(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor `file` owns.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The calling thread's network namespace, to open sockets in after the
/// thread has entered another ([`enter_netns`]).
///
/// # Errors
///
/// When `/proc` cannot be read.
pub fn current_netns() -> io::Result<Arc<File>> {
    File::open("/proc/thread-self/ns/net").map(Arc::new)
}

/// Enters the network namespace `ns` refers to, for the calling thread (and
/// the threads it starts afterwards).
///
/// # Errors
///
/// When the kernel refuses (`ns` is not a network namespace, or the caller
/// lacks CAP_SYS_ADMIN).
pub fn enter_netns(ns: &File) -> io::Result<()> {
    // SAFETY: setns on a descriptor `ns` owns; it changes only this thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a new thread that has entered the network namespace `ns`
/// refers to, and returns what it returns.
///
/// Sockets made inside `f` belong to `ns` and keep working from any thread;
/// threads `f` starts stay in `ns`.
///
/// # Errors
///
/// When the namespace cannot be entered, or the thread panicked.
pub fn in_netns<T: Send + 'static>(
    ns: Arc<File>,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    std::thread::spawn(move || {
        enter_netns(&ns)?;
        Ok(f())
    })
    .join()
    .map_err(|_| io::Error::other("a thread in another network namespace panicked"))?
}

/// Ignores SIGXFSZ, so that a write past the file-size limit (`ulimit -f`)
/// fails with EFBIG, which an output reports as any failed write (the run
/// goes on, counted, and ends with its summary), instead of the signal
/// ending the process on the spot: no summary, and the lab's namespaces
/// left behind.
pub fn ignore_file_size_signal() {
    // SAFETY: setting a signal's disposition to SIG_IGN, before any thread
    // is started.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}
