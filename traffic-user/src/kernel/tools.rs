//! The tools' XDP programs, for the benchmark and the generator: a floor
//! that passes every packet, the same with one clock read, one that drops
//! every packet, and an XDP_TX
//! program that BPF_PROG_RUN's live-frames mode turns into a sender.
//!
//! They come from their own object, which has no maps, so using them loads
//! nothing of the classifier: no rule tables, counters or ring buffer.

use aya::{
    Ebpf, EbpfLoader,
    programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp, xdp::XdpLinkId},
};
use traffic_common::names;

use super::{
    Attached, EngineError, ModeChoice, attach,
    object::{self, load_program, xdp, xdp_mut},
};

/// One of the tools' programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// Passes every packet: the cost floor.
    FloorPass,
    /// Reads the clock once and passes: the floor plus a capture's
    /// timestamp.
    FloorClock,
    /// Drops every packet: the floor of the drop path.
    FloorDrop,
    /// Sends every frame back out (XDP_TX).
    Transmit,
}

impl Tool {
    /// The program's name in the object.
    pub const fn name(self) -> &'static str {
        match self {
            Tool::FloorPass => names::FLOOR_PROGRAM,
            Tool::FloorClock => names::FLOOR_CLOCK_PROGRAM,
            Tool::FloorDrop => names::FLOOR_DROP_PROGRAM,
            Tool::Transmit => names::TX_PROGRAM,
        }
    }
}

/// A loaded tool program, detached when dropped.
pub struct ToolProgram {
    ebpf: Ebpf,
    tool: Tool,
    link: Option<XdpLinkId>,
}

impl ToolProgram {
    /// Loads `tool`.
    ///
    /// # Errors
    ///
    /// [`EngineError::NotBuilt`] when the binary has no XDP objects;
    /// [`EngineError::PermissionDenied`] without the needed capabilities.
    pub fn load(tool: Tool) -> Result<Self, EngineError> {
        let mut ebpf = object::load(object::TOOLS, &mut EbpfLoader::new())?;
        load_program(&mut ebpf, tool.name())?;
        Ok(Self {
            ebpf,
            tool,
            link: None,
        })
    }

    /// The program, for `test_run`.
    pub fn program(&self) -> &Xdp {
        xdp(&self.ebpf, self.tool.name())
    }

    /// Attaches the program to `iface` (never replacing another).
    ///
    /// # Errors
    ///
    /// As [`attach::attach`].
    pub fn attach(&mut self, iface: &str, mode: ModeChoice) -> Result<Attached, EngineError> {
        let program = xdp_mut(&mut self.ebpf, self.tool.name());
        let (attached, link) = attach::attach(program, iface, mode, false)?;
        self.link = Some(link);
        Ok(attached)
    }

    /// Detaches the program, if attached.
    pub fn detach(&mut self) {
        if let Some(link) = self.link.take() {
            attach::detach(xdp_mut(&mut self.ebpf, self.tool.name()), link);
        }
    }

    /// Transmits `frame` `count` times out of interface `ifindex` with
    /// BPF_PROG_RUN's live-frames mode, `batch` frames per kernel batch. The
    /// kernel neither retries nor reports frames the device could not take:
    /// count them at the receiver. Only for [`Tool::Transmit`].
    ///
    /// # Errors
    ///
    /// When the kernel refuses the run (it needs Linux 5.18 and a device
    /// that can transmit XDP frames).
    ///
    /// # Minimum kernel version
    ///
    /// 5.18 (`BPF_F_TEST_XDP_LIVE_FRAMES`).
    pub fn send_live_frames(
        &self,
        frame: &[u8],
        ifindex: u32,
        count: u32,
        batch: u32,
    ) -> Result<(), EngineError> {
        debug_assert_eq!(self.tool, Tool::Transmit);
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex. The kernel wants data_end to be
        // the frame's length (no metadata in front).
        let mut ctx = [0u8; 24];
        let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        ctx[4..8].copy_from_slice(&len.to_ne_bytes());
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        self.program()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&ctx),
                repeat: count,
                attrs: TestRunAttrs::new().xdp_live_frames(batch),
                ..TestRunOptions::default()
            })
            .map_err(|source| EngineError::Program {
                program: self.tool.name(),
                source: Box::new(source),
            })?;
        Ok(())
    }
}

impl Drop for ToolProgram {
    fn drop(&mut self) {
        self.detach();
    }
}
