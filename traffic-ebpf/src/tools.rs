//! XDP programs for tooling, kept out of the classifier's object so that
//! neither the benchmark nor the generator loads the classifier (its rule
//! tables, counters and ring buffer) to use them. None has a map.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

/// The cost floor for benchmarks: an XDP program that passes everything.
#[xdp]
pub fn traffic_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The floor with one read of the clock every event needs
/// (`bpf_ktime_get_ns`), then a pass: what a capture's timestamp costs
/// before anything is written, the same way the capture path is measured.
#[xdp]
pub fn traffic_floor_clock(_ctx: XdpContext) -> u32 {
    // SAFETY: a helper without arguments.
    let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    // Kept: a value nothing reads would be dropped with its call.
    core::hint::black_box(now);
    xdp_action::XDP_PASS
}

/// The floor of the drop path: an XDP program that drops everything.
#[xdp]
pub fn traffic_floor_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

/// Sends every frame back out of the interface it came in on. With
/// BPF_PROG_RUN's live-frames mode, a traffic generator.
#[xdp]
pub fn traffic_tx(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
