//! Recorded captures (`--read FILE`): every frame of a pcap or pcapng file
//! run through the loaded XDP program with BPF_PROG_RUN, one at a time, in
//! the file's order.
//!
//! The program counts, classifies and captures each frame as it would on
//! an interface, so the counters, the per-rule counts, the top talkers and
//! the captured packets are the ones a live run over the same frames
//! reports. Time is the file's: a frame's events carry its timestamp, and
//! an interval ends when a frame's timestamp passes its end. A stretch of
//! the file with no frames is one interval, however long. After each frame
//! the event ring is read, so every event gets its own frame's time.

use std::{future::Future, time::Duration};

use super::{Clock, Outcome, Session, SessionError, Stop};
use crate::source::recorded::{RecordError, Recorded};

/// Frames between two readings of the logs of sources: a log holds 87,381
/// IPv6 sources or 262,144 IPv4 ones ([`traffic_common::top::LOG_UNITS`]).
const GATHER_FRAMES: u64 = 16_384;

/// How a recorded capture ran.
#[derive(Debug)]
pub struct Replayed {
    /// The run, as a live one ends.
    pub outcome: Outcome,
    /// Frames run through the program.
    pub frames: u64,
    /// Frames the kernel would not run: shorter than an Ethernet header, or
    /// too large for XDP without multi-buffer support.
    pub refused: u64,
    /// The bad record that ended the run early, if one did; the summary
    /// covers the frames before it.
    pub error: Option<RecordError>,
    /// Wall-clock time the run took.
    pub took: Duration,
}

impl Session<'_> {
    /// Runs every frame of `file` through the program and reports as a live
    /// run does, with the file's time; finishes the sinks however the file
    /// ends.
    ///
    /// # Errors
    ///
    /// When the program cannot run a frame, or a source or the counters
    /// fail. A bad record is not an error of the run: see
    /// [`Replayed::error`].
    pub async fn replay(
        mut self,
        file: &mut Recorded,
        stop: impl Future<Output = Stop>,
    ) -> Result<Replayed, SessionError> {
        let began = std::time::Instant::now();
        let mut stop = std::pin::pin!(stop);
        let mut stopped = Stop::Duration;
        let mut frames = 0u64;
        let mut refused = 0u64;
        let mut error = None;
        let start = self.start.clone();
        for slot in &mut self.sinks {
            slot.call(|sink| sink.start(&start));
        }
        // The first frame's time, and the interval that ends next.
        let mut first_ts = None;
        let mut last = None;
        let mut edge = self.timing.interval;
        loop {
            if frames.is_multiple_of(4096) {
                // A signal ends the run early, with its summary. The loop
                // never waits otherwise, so it lets the runtime look at
                // its events (the signal's pipe) here.
                tokio::task::yield_now().await;
                tokio::select! {
                    biased;
                    s = &mut stop => {
                        stopped = s;
                        break;
                    }
                    Some(r) = super::next_request(self.requests.as_mut()) => self.answer(r)?,
                    () = std::future::ready(()) => {}
                }
            }
            // A pipe or a FIFO whose writer is quiet: wait for its bytes
            // beside the signals, which a read blocked in the kernel would
            // not see.
            if let Some(fd) = file.wait_fd() {
                tokio::select! {
                    biased;
                    s = &mut stop => {
                        stopped = s;
                        break;
                    }
                    Some(r) = super::next_request(self.requests.as_mut()) => {
                        self.answer(r)?;
                        continue;
                    }
                    r = crate::os::readable(fd) => r.map_err(|source| {
                        SessionError::Source(crate::source::SourceError::Poll {
                            what: "the recorded capture's input",
                            source,
                        })
                    })?,
                }
            }
            let frame = match file.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            };
            // A frame earlier than the last (clocks step) counts at the last
            // frame's time: intervals only move forward.
            let now = match (first_ts, self.clock) {
                (Some(_), Clock::File { now, .. }) => frame.ts.max(now),
                _ => frame.ts,
            };
            let first = *first_ts.get_or_insert(now);
            self.clock = Clock::File { first, now };
            let from = last.get_or_insert_with(|| self.first_mark()).clone();
            let at = now - first;
            if at >= edge {
                // The interval ends at its edge, not at this frame.
                self.clock = Clock::File {
                    first,
                    now: first + edge,
                };
                let mark = self.mark()?;
                let sources = self.collect_top();
                self.report_interval(&from, &mark, 0, sources)?;
                last = Some(mark);
                self.clock = Clock::File { first, now };
                // A gap of several intervals is one empty interval.
                while edge <= at {
                    edge += self.timing.interval;
                }
            }
            if self
                .counters
                .run_frame(frame.data)
                .map_err(SessionError::Counters)?
            {
                frames += 1;
                // Within what a log holds ([`traffic_common::top`]).
                if frames.is_multiple_of(GATHER_FRAMES) {
                    self.counters.gather_sources();
                }
            } else {
                refused += 1;
            }
            self.drain_all()?;
            if let Some(stop) = self.done() {
                stopped = stop;
                break;
            }
        }
        // No frame at all: the run is empty, but still reported.
        let last = last.unwrap_or_else(|| self.first_mark());
        let outcome = self.finish(last, stopped).await?;
        Ok(Replayed {
            outcome,
            frames,
            refused,
            error,
            took: began.elapsed(),
        })
    }
}
