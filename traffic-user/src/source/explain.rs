//! `--explain N`: the XDP program's own words on why a frame is malformed
//! or not IP, read from its aya-log ring and written to stderr.
//!
//! It is a source of messages, not of packets: the session waits on it
//! with the others and reads it at exit, so no explanation written before
//! the end is lost.

use std::{
    io::{self, Write as _},
    task::{Context, Poll},
};

use aya_log::EbpfLogger;
use tokio::io::unix::AsyncFd;
use traffic_common::Stats;

use super::{Captured, Drained, Source, SourceError, poll_readable, watch};

/// Writes each record of the program's log as one line on stderr:
/// `traffic: explain: malformed frame of 60 bytes on queue 0: IPv4 header
/// length (IHL) below 5; dropped`.
pub struct ExplainLog;

impl log::Log for ExplainLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let line = render(&record.args().to_string());
        // stderr is unbuffered; a failed write has nowhere else to go.
        let _ = writeln!(io::stderr(), "traffic: explain: {line}");
    }

    fn flush(&self) {}
}

/// A record of the program's log in words: it sends the reason as its
/// code (`reason 7`), which becomes the code's text.
pub fn render(message: &str) -> String {
    let Some(at) = message.find("reason ") else {
        return message.to_owned();
    };
    let rest = &message[at + "reason ".len()..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    match rest[..digits].parse::<u8>() {
        Ok(code) => format!(
            "{}{}{}",
            &message[..at],
            traffic_common::why::text(code),
            &rest[digits..]
        ),
        Err(_) => message.to_owned(),
    }
}

const WHAT: &str = "the XDP program's log";

/// The program's log ring, watched by the reactor.
pub struct ExplainSource {
    log: AsyncFd<EbpfLogger<ExplainLog>>,
}

impl ExplainSource {
    /// Watches `log`.
    ///
    /// # Errors
    ///
    /// When the reactor cannot poll it.
    pub fn new(log: EbpfLogger<ExplainLog>) -> Result<Self, SourceError> {
        // SAFETY: the logger owns its ring's map fd for as long as the
        // AsyncFd owns the logger.
        let log = unsafe { watch(log, WHAT) }?;
        Ok(Self { log })
    }
}

impl Source for ExplainSource {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SourceError>> {
        poll_readable(&mut self.log, WHAT, cx)
    }

    fn drain(&mut self, _deliver: &mut dyn FnMut(&Captured<'_>)) -> Result<Drained, SourceError> {
        self.log.get_mut().flush();
        Ok(Drained::default())
    }

    fn handed_over(&self, _: &Stats) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reasons_become_words() {
        assert_eq!(
            super::render("malformed frame of 42 bytes on queue 0: reason 7; dropped"),
            "malformed frame of 42 bytes on queue 0: IPv4 header length (IHL) below 5; dropped"
        );
        assert_eq!(super::render("no code here"), "no code here");
    }
}
