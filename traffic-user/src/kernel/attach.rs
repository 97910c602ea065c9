//! Attaching an XDP program to an interface through a bpf_link: the mode
//! fallback, and what to do about a program already there.
//!
//! # Minimum kernel version
//!
//! bpf_link attachment of XDP needs Linux 5.9.

use std::fmt;

use aya::programs::{
    ProgramError, Xdp, XdpMode, links::LinkType, loaded_links, loaded_programs, xdp::XdpLinkId,
};

use super::{EngineError, error_chain, netlink, os_error};

/// Which XDP mode the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeChoice {
    /// Native if the driver supports it, else generic (skb).
    Auto,
    /// In the driver: fastest; the driver must support XDP.
    Native,
    /// Generic XDP, after the kernel has built an skb: works everywhere, slower.
    Skb,
}

/// The mode the program is attached in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// In the driver.
    Native,
    /// Generic XDP.
    Skb,
    /// Not attached: frames of a recorded capture run through the program
    /// by BPF_PROG_RUN (`--read`).
    #[serde(rename = "test_run")]
    TestRun,
}

impl AttachMode {
    fn xdp_mode(self) -> XdpMode {
        match self {
            AttachMode::Native => XdpMode::Driver,
            // Never attached; generic XDP is what it would be closest to.
            AttachMode::Skb | AttachMode::TestRun => XdpMode::Skb,
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachMode::Native => "native",
            AttachMode::Skb => "skb",
            AttachMode::TestRun => "test_run",
        })
    }
}

/// Where the program is attached.
#[derive(Clone, Debug)]
pub struct Attached {
    /// The interface name.
    pub iface: String,
    /// Its index.
    pub ifindex: u32,
    /// The mode the kernel accepted.
    pub mode: AttachMode,
    /// Modes tried and refused before this one, with the kernel's reason.
    pub refused: Vec<(AttachMode, String)>,
    /// The program that `--force` removed, if any.
    pub replaced: Option<String>,
}

/// Detaches `program` from the attachment `link` made by [`attach`]. A
/// failure means the link is already gone (its interface was removed), and
/// there is nothing left to undo.
pub fn detach(program: &mut Xdp, link: XdpLinkId) {
    let _ = program.detach(link);
}

/// Attaches `program` (loaded) to `iface` through a bpf_link, so that the
/// kernel removes it when this process exits, however it exits.
///
/// With [`ModeChoice::Auto`], native mode is tried first and generic (skb)
/// mode if the driver refuses; [`Attached::refused`] says why.
///
/// # Errors
///
/// [`EngineError::NoSuchInterface`]; [`EngineError::AlreadyAttached`] when
/// another XDP program is there and `force` is false;
/// [`EngineError::HeldByLink`] when it is held by a bpf_link;
/// [`EngineError::ModeRefused`] when no acceptable mode works.
pub fn attach(
    program: &mut Xdp,
    iface: &str,
    mode: ModeChoice,
    force: bool,
) -> Result<(Attached, XdpLinkId), EngineError> {
    let ifindex = netlink::ifindex(iface).ok_or_else(|| EngineError::NoSuchInterface {
        iface: iface.to_owned(),
    })?;
    let replaced = clear_the_way(iface, ifindex, force)?;

    let candidates: &[AttachMode] = match mode {
        ModeChoice::Auto => &[AttachMode::Native, AttachMode::Skb],
        ModeChoice::Native => &[AttachMode::Native],
        ModeChoice::Skb => &[AttachMode::Skb],
    };
    let mut refused = Vec::new();
    for (i, &candidate) in candidates.iter().enumerate() {
        match program.attach_to_if_index(ifindex, candidate.xdp_mode()) {
            Ok(link) => {
                let attached = Attached {
                    iface: iface.to_owned(),
                    ifindex,
                    mode: candidate,
                    refused,
                    replaced,
                };
                return Ok((attached, link));
            }
            Err(source) => {
                if os_error(&source) == Some(libc::EPERM) {
                    return Err(EngineError::PermissionDenied {
                        action: "attaching the XDP program",
                    });
                }
                if i + 1 == candidates.len() {
                    return Err(EngineError::ModeRefused {
                        iface: iface.to_owned(),
                        mode: candidate,
                        hint: refusal_hint(iface, candidate, &source),
                        source: Box::new(source),
                    });
                }
                refused.push((candidate, error_chain(&source)));
            }
        }
    }
    unreachable!("every mode list is non-empty")
}

/// What to try when the kernel refused `mode`.
fn refusal_hint(iface: &str, mode: AttachMode, source: &ProgramError) -> String {
    match (mode, os_error(source)) {
        (AttachMode::Native, Some(libc::ERANGE)) => format!(
            ": the MTU is too large for native XDP on this driver; lower it (`ip link set dev {iface} mtu 1500`) or use --mode skb"
        ),
        (AttachMode::Native, Some(libc::EOPNOTSUPP)) => {
            ": the driver does not support native XDP; use --mode skb (or auto)".to_owned()
        }
        (AttachMode::Native, _) => {
            ": the driver may not support native XDP; try --mode skb".to_owned()
        }
        (AttachMode::Skb | AttachMode::TestRun, _) => {
            ": the kernel refused even generic XDP; check `dmesg` and the interface's MTU"
                .to_owned()
        }
    }
}

/// Refuses, or with `force` removes, an XDP program already on the
/// interface. Returns a description of what was removed.
fn clear_the_way(iface: &str, ifindex: u32, force: bool) -> Result<Option<String>, EngineError> {
    let existing = match netlink::attached_programs(ifindex) {
        Ok(existing) => existing,
        Err(err) if err.raw_os_error() == Some(libc::ENODEV) => {
            return Err(EngineError::NoSuchInterface {
                iface: iface.to_owned(),
            });
        }
        // Without the query, the attach itself reports a conflict.
        Err(_) => return Ok(None),
    };
    let Some(found) = existing.first() else {
        return Ok(None);
    };
    let program = describe_program(found);
    if held_by_link(found.id) {
        return Err(EngineError::HeldByLink {
            iface: iface.to_owned(),
            program,
        });
    }
    if !force {
        return Err(EngineError::AlreadyAttached {
            iface: iface.to_owned(),
            program,
        });
    }
    for p in &existing {
        netlink::detach(ifindex, p.mode_flag).map_err(|source| EngineError::ForceDetach {
            iface: iface.to_owned(),
            source,
        })?;
    }
    Ok(Some(program))
}

fn describe_program(p: &netlink::AttachedProgram) -> String {
    let name = loaded_programs()
        .filter_map(Result::ok)
        .find(|info| info.id() == p.id)
        .and_then(|info| info.name_as_str().map(str::to_owned));
    match name {
        Some(name) if !name.is_empty() => format!("id {}, `{name}`, {} mode", p.id, p.mode_name()),
        _ => format!("id {}, {} mode", p.id, p.mode_name()),
    }
}

fn held_by_link(prog_id: u32) -> bool {
    loaded_links()
        .filter_map(Result::ok)
        .any(|link| link.program_id() == prog_id && matches!(link.link_type(), Ok(LinkType::Xdp)))
}
