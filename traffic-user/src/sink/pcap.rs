//! Writing captured frames as a pcap file (nanosecond timestamps), which
//! tcpdump, tshark and Wireshark read.

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use super::file::{Output, OutputError};

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

/// A pcap file being written.
pub struct PcapWriter {
    out: BufWriter<File>,
    path: PathBuf,
    /// Frames written.
    pub frames: u64,
}

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

    /// Writes the header to an opened output.
    ///
    /// # Errors
    ///
    /// When writing fails.
    pub fn new(output: Output, snaplen: u32) -> Result<Self, PcapError> {
        let path = output.path;
        let io_err = |source| PcapError::Io {
            path: path.clone(),
            source,
        };
        let file = output.file;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut header = Vec::with_capacity(24);
        header.extend_from_slice(&MAGIC_NS.to_ne_bytes());
        header.extend_from_slice(&2u16.to_ne_bytes());
        header.extend_from_slice(&4u16.to_ne_bytes());
        header.extend_from_slice(&0i32.to_ne_bytes()); // thiszone
        header.extend_from_slice(&0u32.to_ne_bytes()); // sigfigs
        header.extend_from_slice(&snaplen.to_ne_bytes());
        header.extend_from_slice(&LINKTYPE_ETHERNET.to_ne_bytes());
        out.write_all(&header).map_err(io_err)?;
        Ok(Self {
            out,
            path,
            frames: 0,
        })
    }

    /// Appends one frame: `data` is what was captured of a frame of
    /// `wire_len` bytes, seen at Unix time `ts`.
    ///
    /// # Errors
    ///
    /// When writing fails.
    pub fn write(&mut self, ts: Duration, wire_len: u32, data: &[u8]) -> Result<(), PcapError> {
        let mut rec = [0u8; 16];
        rec[0..4].copy_from_slice(&(ts.as_secs() as u32).to_ne_bytes());
        rec[4..8].copy_from_slice(&ts.subsec_nanos().to_ne_bytes());
        rec[8..12].copy_from_slice(&(data.len() as u32).to_ne_bytes());
        rec[12..16].copy_from_slice(&wire_len.max(data.len() as u32).to_ne_bytes());
        self.out
            .write_all(&rec)
            .and_then(|()| self.out.write_all(data))
            .map_err(|source| PcapError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.frames += 1;
        Ok(())
    }

    /// Pushes buffered frames to the file.
    ///
    /// # Errors
    ///
    /// When writing fails.
    pub fn flush(&mut self) -> Result<(), PcapError> {
        self.out.flush().map_err(|source| PcapError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

impl super::Sink for PcapWriter {
    fn packet(&mut self, p: &crate::source::Captured<'_>) -> Result<(), super::SinkError> {
        Ok(self.write(p.ts, p.wire_len, p.data)?)
    }

    fn interval(&mut self, _: &super::Interval<'_>) -> Result<(), super::SinkError> {
        Ok(self.flush()?)
    }

    fn finish(&mut self, _: &super::Summary<'_>) -> Result<(), super::SinkError> {
        Ok(self.flush()?)
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
        w.write(Duration::new(1_700_000_000, 123_456_789), 60, &[1, 2, 3])
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
}
