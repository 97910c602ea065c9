//! Reading a run's rules again while it goes on: on SIGHUP, and with
//! `--watch-rules` when a rules file changes.
//!
//! The files are read and checked, and the new table built, on a blocking
//! thread while packets keep flowing under the rules in force; the session
//! then only writes the table and puts it in force in one step ([`Counters::replace_rules`](super::Counters::replace_rules)),
//! and every sink hears of it ([`Sink::reload`](crate::sink::Sink::reload)).
//! A set that does not read, or does not fit, is refused with its reasons
//! and the old one stays.

use std::{
    future::Future as _,
    io,
    os::fd::{AsRawFd, FromRawFd as _, OwnedFd, RawFd},
    path::PathBuf,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::Signal,
    task::JoinHandle,
};

use crate::{
    kernel::{error_chain, table::Table},
    rules::{Change, RuleSet, RuleSpec},
};

/// What asks for the rules to be read again.
pub trait Requests {
    /// Ready with the name of what asked (`SIGHUP`, `file changed`).
    fn poll_request(&mut self, cx: &mut Context<'_>) -> Poll<&'static str>;
}

/// SIGHUP, and with `--watch-rules` a change to a rules file.
pub struct SignalOrChange {
    hangup: Signal,
    watch: Option<FileWatch>,
}

impl SignalOrChange {
    /// Requests on `hangup`, and on changes to `files` when given.
    ///
    /// # Errors
    ///
    /// When the files cannot be watched.
    pub fn new(hangup: Signal, files: Option<&[PathBuf]>) -> io::Result<Self> {
        let watch = files.map(FileWatch::new).transpose()?;
        Ok(Self { hangup, watch })
    }
}

impl Requests for SignalOrChange {
    fn poll_request(&mut self, cx: &mut Context<'_>) -> Poll<&'static str> {
        if self.hangup.poll_recv(cx).is_ready() {
            return Poll::Ready("SIGHUP");
        }
        if let Some(watch) = &mut self.watch
            && watch.poll_changed(cx).is_ready()
        {
            return Poll::Ready("file changed");
        }
        Poll::Pending
    }
}

/// An inotify watch on the directories of the rules files. Any event there
/// (a file written and closed, renamed into place, a symbolic link
/// swapped, as Kubernetes swaps a ConfigMap's `..data`) makes it look at
/// the files again, through their links: a file whose device, inode, size
/// or modification time changed is a change.
pub struct FileWatch {
    fd: AsyncFd<Inotify>,
    files: Vec<PathBuf>,
    /// What each file was when last looked at.
    seen: Vec<Option<Identity>>,
}

/// What tells one version of a file from another.
type Identity = (u64, u64, u64, i64, i64);

fn identity(path: &std::path::Path) -> Option<Identity> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

struct Inotify(OwnedFd);

impl AsRawFd for Inotify {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl FileWatch {
    fn new(files: &[PathBuf]) -> io::Result<Self> {
        // SAFETY: no pointers; the fd returned is checked and owned below.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd this function owns.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut dirs = Vec::new();
        for file in files {
            let dir = match file.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
                _ => PathBuf::from("."),
            };
            if dirs.contains(&dir) {
                continue;
            }
            let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
                .map_err(io::Error::other)?;
            let mask = libc::IN_CLOSE_WRITE
                | libc::IN_MOVED_TO
                | libc::IN_CREATE
                | libc::IN_DELETE
                | libc::IN_ATTRIB;
            // SAFETY: a valid C string and our inotify fd.
            if unsafe { libc::inotify_add_watch(fd, c.as_ptr(), mask) } < 0 {
                let e = io::Error::last_os_error();
                return Err(io::Error::new(
                    e.kind(),
                    format!("watching {} for --watch-rules: {e}", dir.display()),
                ));
            }
            dirs.push(dir);
        }
        // SAFETY: the Inotify owns its fd for as long as the AsyncFd owns it.
        let fd = unsafe { AsyncFd::register_with_interest(Inotify(owned), Interest::READABLE) }?;
        Ok(Self {
            fd,
            files: files.to_vec(),
            seen: files.iter().map(|f| identity(f)).collect(),
        })
    }

    /// Ready when a watched file changed since the last call; every event
    /// waiting is read, so a burst of writes is one change.
    fn poll_changed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let mut guard = match self.fd.poll_read_ready(cx) {
                Poll::Ready(Ok(g)) => g,
                Poll::Ready(Err(_)) | Poll::Pending => return Poll::Pending,
            };
            let mut buf = [0u8; 4096];
            let mut events = false;
            loop {
                // SAFETY: reads into a buffer we own, of its length.
                let n = unsafe {
                    libc::read(
                        self.fd.get_ref().as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                    )
                };
                if n <= 0 {
                    break;
                }
                events = true;
            }
            guard.clear_ready();
            if events && self.changed() {
                return Poll::Ready(());
            }
        }
    }

    /// Whether a file is not what it was when last looked at; remembers
    /// what it is now. A file that is gone counts once (the reload then
    /// says so).
    fn changed(&mut self) -> bool {
        let mut changed = false;
        for (file, seen) in self.files.iter().zip(&mut self.seen) {
            let now = identity(file);
            if now != *seen {
                *seen = now;
                changed = true;
            }
        }
        changed
    }
}

/// A rule set read again, ready to be put in force.
pub(super) struct NewRules {
    /// The rules.
    pub rules: RuleSet,
    /// What they change against the rules in force when they were read.
    pub change: Change,
    /// Their table.
    pub table: Table,
}

/// A reload under way: the rules being read on a blocking thread.
type Reading = JoinHandle<Result<NewRules, Vec<String>>>;

/// The reload state of a session.
pub struct Reloader<'a> {
    requests: Box<dyn Requests + 'a>,
    spec: RuleSpec,
    /// The rules in force.
    pub(super) rules: Arc<RuleSet>,
    reading: Option<(&'static str, Instant, Reading)>,
    /// A request that came while reading: read again after.
    again: Option<&'static str>,
}

/// A reload that finished reading: the rules to put in force, or why not.
pub(super) struct Read {
    pub trigger: &'static str,
    pub asked: Instant,
    pub result: Result<NewRules, Vec<String>>,
}

impl<'a> Reloader<'a> {
    /// Reloads `spec` on `requests`; `rules` are in force now.
    pub fn new(requests: Box<dyn Requests + 'a>, spec: RuleSpec, rules: Arc<RuleSet>) -> Self {
        Self {
            requests,
            spec,
            rules,
            reading: None,
            again: None,
        }
    }

    /// Ready when a reload has read its rules; starts reading on requests.
    pub(super) fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Read> {
        while let Poll::Ready(trigger) = self.requests.poll_request(cx) {
            if self.reading.is_some() {
                self.again = Some(trigger);
            } else {
                self.start(trigger);
            }
        }
        // A request that came during the last read starts once that read's
        // rules are in force, so its change is counted against them.
        if self.reading.is_none()
            && let Some(trigger) = self.again.take()
        {
            self.start(trigger);
        }
        let Some((trigger, asked, handle)) = &mut self.reading else {
            return Poll::Pending;
        };
        let Poll::Ready(joined) = std::pin::Pin::new(handle).poll(cx) else {
            return Poll::Pending;
        };
        let read = Read {
            trigger,
            asked: *asked,
            result: joined.unwrap_or_else(|e| Err(vec![format!("reading the rules failed: {e}")])),
        };
        self.reading = None;
        if self.again.is_some() {
            // Polled again once the session has put `read` in force.
            cx.waker().wake_by_ref();
        }
        Poll::Ready(read)
    }

    fn start(&mut self, trigger: &'static str) {
        let spec = self.spec.clone();
        let old = Arc::clone(&self.rules);
        let handle = tokio::task::spawn_blocking(move || {
            let rules = spec
                .read()
                .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
            let table = Table::build(&rules).map_err(|e| vec![error_chain(&e)])?;
            let change = rules.change_from(&old);
            Ok(NewRules {
                rules,
                change,
                table,
            })
        });
        self.reading = Some((trigger, Instant::now(), handle));
    }
}
