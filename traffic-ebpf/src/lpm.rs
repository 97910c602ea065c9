//! A reference classifier for the benchmark: the same source-prefix rules
//! in the kernel's LPM tries (`BPF_MAP_TYPE_LPM_TRIE`), which is how traffic
//! classified before its own table. It parses Ethernet, up to two VLAN
//! tags and the IPv4 or IPv6 header, looks the source up, and drops or
//! passes; it counts nothing, so it is, if anything, flattered against
//! traffic's program.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{LpmTrie, lpm_trie::Key},
    programs::XdpContext,
};

/// IPv4 rules: the address bytes in network order, the action
/// (`traffic_common::action`) as the value.
#[map(name = "LPM_V4")]
static LPM_V4: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(1, 1);

/// IPv6 rules, likewise.
#[map(name = "LPM_V6")]
static LPM_V6: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(1, 1);

#[xdp]
pub fn traffic_lpm(ctx: XdpContext) -> u32 {
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + 14 > end {
        return xdp_action::XDP_PASS;
    }
    let mut off = 12;
    // SAFETY: bounds checked above and at each step below.
    let mut proto = unsafe { u16::from_be_bytes(*((data + off) as *const [u8; 2])) };
    off += 2;
    for _ in 0..2 {
        if proto != 0x8100 && proto != 0x88a8 {
            break;
        }
        if data + off + 4 > end {
            return xdp_action::XDP_PASS;
        }
        // SAFETY: checked just above.
        proto = unsafe { u16::from_be_bytes(*((data + off + 2) as *const [u8; 2])) };
        off += 4;
    }
    let action = match proto {
        0x0800 => {
            if data + off + 20 > end {
                return xdp_action::XDP_PASS;
            }
            // SAFETY: the 20-byte header is inside the frame.
            let src = unsafe { *((data + off + 12) as *const [u8; 4]) };
            LPM_V4.get(&Key::new(32, src)).copied()
        }
        0x86dd => {
            if data + off + 40 > end {
                return xdp_action::XDP_PASS;
            }
            // SAFETY: the 40-byte header is inside the frame.
            let src = unsafe { *((data + off + 8) as *const [u8; 16]) };
            LPM_V6.get(&Key::new(128, src)).copied()
        }
        _ => None,
    };
    match action {
        Some(1) => xdp_action::XDP_DROP,
        _ => xdp_action::XDP_PASS,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
