//! Opening an output path the way a careful tool does.
//!
//! traffic runs as root, so what it does to a path given on the command
//! line must be safe whatever is there:
//!
//! - nothing: a regular file is created with mode 0600 (captures are
//!   private), never following a symbolic link;
//! - a regular file: it is truncated and keeps its mode (traffic did not
//!   create it); a note says so when other users can read it;
//! - a character device (`/dev/null`) or a FIFO: written as it is, never
//!   truncated, its mode never changed; a FIFO must have a reader already;
//! - a symbolic link: followed only to a character device or a FIFO (as
//!   `/dev/stdout` is); to anything else it is refused;
//! - a directory, a block device or a socket: refused;
//! - `-`: standard output; and so is any path to the pipe, socket or file
//!   standard output already is (`/dev/stdout`, or `-w out.pcap >
//!   out.pcap`), so that the report moves to stderr instead of mixing
//!   with the capture.

use std::{
    fs::{File, OpenOptions},
    io,
    os::unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

/// What an output path turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file traffic created (mode 0600).
    Created,
    /// A regular file that was there, truncated, its mode kept.
    Truncated {
        /// Its permission bits.
        mode: u32,
    },
    /// A character device.
    Device,
    /// A FIFO with a reader.
    Fifo,
    /// Standard output (`-`).
    Stdout,
}

/// An output, opened.
#[derive(Debug)]
pub struct Output {
    /// The open file (a duplicate of stdout for `-`).
    pub file: File,
    /// What it is.
    pub kind: Kind,
    /// The path given.
    pub path: PathBuf,
}

/// Why an output path cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// A symbolic link to something other than a device or FIFO.
    #[error(
        "refusing to write {path}: it is a symbolic link (a link could point anywhere); remove it or choose another path"
    )]
    Symlink {
        /// The path.
        path: PathBuf,
    },
    /// Something that is not a file to write to.
    #[error("refusing to write {path}: it is {what}; give a file name")]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is: `a directory`, `a block device`...
        what: &'static str,
    },
    /// A FIFO with no reader: opening it would wait forever.
    #[error(
        "nobody is reading the FIFO {path}; start its reader first (opening it would block until then)"
    )]
    FifoWithoutReader {
        /// The path.
        path: PathBuf,
    },
    /// The open or truncation failed.
    #[error("cannot write {path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

impl Output {
    /// Opens `path` for writing as described in the module docs.
    ///
    /// # Errors
    ///
    /// [`OutputError`], naming the path.
    pub fn create(path: &Path) -> Result<Self, OutputError> {
        let io_err = |source| OutputError::Io {
            path: path.to_owned(),
            source,
        };
        if path.as_os_str() == "-" || names_stdout(path) {
            let file = dup_stdout().map_err(io_err)?;
            return Ok(Self::new(file, Kind::Stdout, path));
        }
        let meta = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return match create_new(path) {
                    Ok(file) => Ok(Self::new(file, Kind::Created, path)),
                    // Made by someone else meanwhile: look again.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Self::create(path),
                    Err(e) => Err(io_err(e)),
                };
            }
            Err(e) => return Err(io_err(e)),
        };
        let ty = meta.file_type();
        if ty.is_symlink() {
            let target = std::fs::metadata(path).map_err(io_err)?.file_type();
            if target.is_char_device() {
                return open_existing(path, true).map(|f| Self::new(f, Kind::Device, path));
            }
            if target.is_fifo() {
                return open_fifo(path, true).map(|f| Self::new(f, Kind::Fifo, path));
            }
            return Err(OutputError::Symlink {
                path: path.to_owned(),
            });
        }
        if ty.is_file() {
            let file = open_existing(path, false)?;
            let now = file.metadata().map_err(io_err)?;
            // The same file we looked at, still a regular file.
            if !now.is_file() || now.ino() != meta.ino() || now.dev() != meta.dev() {
                return Err(io_err(io::Error::other(
                    "the file changed while it was opened",
                )));
            }
            file.set_len(0).map_err(io_err)?;
            let mode = now.mode() & 0o7777;
            return Ok(Self::new(file, Kind::Truncated { mode }, path));
        }
        if ty.is_char_device() {
            return open_existing(path, false).map(|f| Self::new(f, Kind::Device, path));
        }
        if ty.is_fifo() {
            return open_fifo(path, false).map(|f| Self::new(f, Kind::Fifo, path));
        }
        let what = if ty.is_dir() {
            "a directory"
        } else if ty.is_block_device() {
            "a block device"
        } else if ty.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        Err(OutputError::NotAFile {
            path: path.to_owned(),
            what,
        })
    }

    fn new(file: File, kind: Kind, path: &Path) -> Self {
        Self {
            file,
            kind,
            path: path.to_owned(),
        }
    }

    /// A sentence for stderr when the output deserves one: an existing file
    /// that other users can read.
    pub fn note(&self) -> Option<String> {
        match self.kind {
            Kind::Truncated { mode } if mode & 0o077 != 0 => Some(format!(
                "{} keeps its mode {mode:04o}: other users can read what is written there (remove the file first to have it created private)",
                self.path.display()
            )),
            _ => None,
        }
    }
}

fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

fn open_existing(path: &Path, follow: bool) -> Result<File, OutputError> {
    let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
    OpenOptions::new()
        .write(true)
        .custom_flags(nofollow | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| open_error(path, e))
}

/// Opens a FIFO without waiting for a reader: with none, the open fails at
/// once (ENXIO) instead of blocking where Ctrl-C cannot reach it. The
/// descriptor is then made blocking, so that writes wait for a slow reader
/// rather than fail.
fn open_fifo(path: &Path, follow: bool) -> Result<File, OutputError> {
    let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(nofollow | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ENXIO) {
                OutputError::FifoWithoutReader {
                    path: path.to_owned(),
                }
            } else {
                open_error(path, e)
            }
        })?;
    crate::os::set_blocking(&file).map_err(|source| OutputError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(file)
}

fn open_error(path: &Path, e: io::Error) -> OutputError {
    if e.raw_os_error() == Some(libc::ELOOP) {
        OutputError::Symlink {
            path: path.to_owned(),
        }
    } else {
        OutputError::Io {
            path: path.to_owned(),
            source: e,
        }
    }
}

/// Whether `path` (its links followed) is the pipe, socket or file that
/// standard output is. A terminal or `/dev/null` does not count: writing
/// both there garbles nothing that anyone reads back.
fn names_stdout(path: &Path) -> bool {
    let Ok(named) = std::fs::metadata(path) else {
        return false;
    };
    // SAFETY: a plain C struct, for which all zeroes is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat fills the struct for a descriptor number; a closed
    // one fails, and that is the answer.
    if unsafe { libc::fstat(libc::STDOUT_FILENO, &raw mut st) } != 0 {
        return false;
    }
    !named.file_type().is_char_device()
        && named.dev() == st.st_dev as u64
        && named.ino() == st.st_ino as u64
}

/// A `File` on a duplicate of descriptor 1.
fn dup_stdout() -> io::Result<File> {
    use std::os::fd::{AsFd as _, OwnedFd};
    let fd: OwnedFd = io::stdout().as_fd().try_clone_to_owned()?;
    Ok(File::from(fd))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("traffic-out-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    }

    #[test]
    fn new_files_are_private_and_existing_ones_keep_their_mode() {
        let dir = temp("modes");
        let new = dir.join("new.pcap");
        let out = Output::create(&new).unwrap();
        assert_eq!(out.kind, Kind::Created);
        assert_eq!(mode(&new), 0o600);

        let old = dir.join("old.pcap");
        std::fs::write(&old, b"old contents").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = Output::create(&old).unwrap();
        assert_eq!(out.kind, Kind::Truncated { mode: 0o644 });
        assert_eq!(std::fs::metadata(&old).unwrap().len(), 0, "truncated");
        assert_eq!(mode(&old), 0o644, "not ours to change");
        assert!(out.note().unwrap().contains("0644"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn devices_are_written_as_they_are() {
        let before = mode(Path::new("/dev/null"));
        let out = Output::create(Path::new("/dev/null")).unwrap();
        assert_eq!(out.kind, Kind::Device);
        assert_eq!(mode(Path::new("/dev/null")), before);
        // /dev/stdout is a link to a descriptor: standard output itself, or
        // (a terminal's) a device.
        let out = Output::create(Path::new("/dev/stdout"));
        assert!(
            out.as_ref()
                .is_ok_and(|o| matches!(o.kind, Kind::Stdout | Kind::Device))
                || out.is_err(),
            "{out:?}"
        );
    }

    #[test]
    fn a_fifo_without_reader_is_refused_at_once() {
        let dir = temp("fifo");
        let fifo = dir.join("out.fifo");
        mkfifo(&fifo);
        let err = Output::create(&fifo).unwrap_err();
        assert!(
            matches!(err, OutputError::FifoWithoutReader { .. }),
            "{err}"
        );
        // With a reader it opens, and its mode stays.
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let out = Output::create(&fifo).unwrap();
        assert_eq!(out.kind, Kind::Fifo);
        assert_eq!(mode(&fifo), 0o644);
        drop((out, reader));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn links_to_files_directories_and_block_devices_are_refused() {
        let dir = temp("refused");
        let target = dir.join("target");
        std::fs::write(&target, b"keep me").unwrap();
        let link = dir.join("link.pcap");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = Output::create(&link).unwrap_err();
        assert!(matches!(err, OutputError::Symlink { .. }), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
        let err = Output::create(&dir).unwrap_err();
        assert!(err.to_string().contains("a directory"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
