//! Two network namespaces joined by a veth pair.
//!
//! Used by the root tests and by `traffic --lab`: frames sent on the `tx` end
//! arrive on the `rx` end, where the engine attaches. Nothing in the lab
//! touches the host's own interfaces, and it only ever carries frames with
//! documentation addresses that its own generator makes.
//!
//! Namespace names carry the creating process's pid, so concurrent runs
//! never collide and [`remove_stale`] can tell a leftover of a killed run
//! from a lab in use.

use std::{
    fs::File,
    io,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
};

/// The prefix of every lab namespace's name.
pub const NS_PREFIX: &str = "trf-";

/// MAC of the sending end.
pub const TX_MAC: [u8; 6] = [0x02, 0x74, 0x72, 0x66, 0x00, 0x01];
/// MAC of the receiving end.
pub const RX_MAC: [u8; 6] = [0x02, 0x74, 0x72, 0x66, 0x00, 0x02];

/// Two namespaces and a veth pair; removed on drop.
#[derive(Debug)]
pub struct Lab {
    /// Namespace of the sending end.
    pub tx_ns: String,
    /// Namespace of the receiving end.
    pub rx_ns: String,
    /// Interface name of the sending end (in `tx_ns`).
    pub tx_if: String,
    /// Interface name of the receiving end (in `rx_ns`).
    pub rx_if: String,
}

/// Runs `ip ARGS`, failing with its stderr.
pub fn ip(args: &[&str]) -> io::Result<()> {
    run(Command::new("ip").args(args))
}

fn run(cmd: &mut Command) -> io::Result<()> {
    let out = cmd.output().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot run {cmd:?}: {e} (is iproute2 installed?)"),
        )
    })?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn sysctl(ns: &str, key: &str, value: &str) -> io::Result<()> {
    run(Command::new("ip").args([
        "netns",
        "exec",
        ns,
        "sysctl",
        "-qw",
        &format!("{key}={value}"),
    ]))
}

fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Lab {
    /// Creates a lab with `queues` receive and transmit queues per veth end.
    ///
    /// IPv6 is disabled in both namespaces and no addresses are assigned, so
    /// that the kernel sends nothing of its own (neighbour discovery, MLD):
    /// every frame the receiving end sees was sent by a test or generator.
    ///
    /// # Errors
    ///
    /// When `ip` fails (no root, no veth support); what was created is removed.
    pub fn create(tag: &str, queues: u32) -> io::Result<Lab> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = format!("{NS_PREFIX}{}-{n}-{tag}", std::process::id());
        let lab = Lab {
            tx_ns: format!("{base}-tx"),
            rx_ns: format!("{base}-rx"),
            tx_if: "trf-tx".to_owned(),
            rx_if: "trf-rx".to_owned(),
        };
        // From here on, dropping `lab` removes whatever was made.
        ip(&["netns", "add", &lab.tx_ns])?;
        ip(&["netns", "add", &lab.rx_ns])?;
        for ns in [&lab.tx_ns, &lab.rx_ns] {
            sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")?;
            sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")?;
        }
        let q = queues.max(1).to_string();
        ip(&[
            "link",
            "add",
            &lab.tx_if,
            "netns",
            &lab.tx_ns,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "address",
            &mac_string(TX_MAC),
            "type",
            "veth",
            "peer",
            "name",
            &lab.rx_if,
            "netns",
            &lab.rx_ns,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "address",
            &mac_string(RX_MAC),
        ])?;
        for (ns, ifname) in [(&lab.tx_ns, &lab.tx_if), (&lab.rx_ns, &lab.rx_if)] {
            ip(&["-n", ns, "link", "set", "dev", ifname, "up"])?;
        }
        Ok(lab)
    }

    /// Joins the lab's two namespaces by one more veth pair, `tx_if` in the
    /// sending namespace and `rx_if` in the receiving one, both up (for
    /// runs on several interfaces). They go away with the namespaces.
    ///
    /// # Errors
    ///
    /// When `ip` fails.
    pub fn add_pair(&self, tx_if: &str, rx_if: &str) -> io::Result<()> {
        ip(&[
            "link",
            "add",
            tx_if,
            "netns",
            &self.tx_ns,
            "type",
            "veth",
            "peer",
            "name",
            rx_if,
            "netns",
            &self.rx_ns,
        ])?;
        ip(&["-n", &self.tx_ns, "link", "set", "dev", tx_if, "up"])?;
        ip(&["-n", &self.rx_ns, "link", "set", "dev", rx_if, "up"])
    }

    /// Brings up the loopback interface of namespace `ns`, for collectors
    /// and servers the tests start there.
    ///
    /// # Errors
    ///
    /// When `ip` fails.
    pub fn loopback_up(ns: &str) -> io::Result<()> {
        ip(&["-n", ns, "link", "set", "dev", "lo", "up"])
    }

    /// A command that runs `program` inside namespace `ns`.
    pub fn command_in(ns: &str, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, program]);
        cmd
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end in it, and with it the peer.
        for ns in [&self.rx_ns, &self.tx_ns] {
            let _ = ip(&["netns", "delete", ns]);
        }
    }
}

/// Runs `f` on a new thread that has entered namespace `ns`.
///
/// Sockets made inside `f` belong to `ns` and keep working from any thread.
///
/// # Errors
///
/// When the namespace cannot be opened or entered.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    crate::os::in_netns(Arc::new(open_netns(ns)?), f)
}

/// Enters namespace `ns` for the calling thread (and the threads it starts
/// afterwards).
///
/// # Errors
///
/// When the namespace cannot be opened or entered.
pub fn enter_netns(ns: &str) -> io::Result<()> {
    crate::os::enter_netns(&open_netns(ns)?)
}

/// The namespace named `ns` (by `ip netns add`).
fn open_netns(ns: &str) -> io::Result<File> {
    File::open(format!("/var/run/netns/{ns}"))
}

/// Whether process `pid` runs: it exists and is not a zombie (killed, and
/// not yet reaped by its parent), which cleans up nothing any more.
fn runs(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may
    // hold any byte, so it is found after the last `)`.
    let state = stat
        .rfind(')')
        .and_then(|end| stat[end + 1..].split_whitespace().next());
    !matches!(state, Some("Z" | "X"))
}

/// Removes lab namespaces left by processes that no longer run (a run killed
/// with SIGKILL cannot clean up after itself). Returns the names removed.
pub fn remove_stale() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/var/run/netns") else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(NS_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if runs(pid) {
            continue;
        }
        if ip(&["netns", "delete", &name]).is_ok() {
            removed.push(name);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::runs;

    #[test]
    fn a_zombie_or_a_missing_process_does_not_run() {
        assert!(runs(std::process::id()));
        assert!(!runs(999_999_999));
        // Exited and not yet waited for: a zombie.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let zombie = (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            !runs(child.id())
        });
        child.wait().unwrap();
        assert!(zombie, "an exited child not yet reaped counts as gone");
    }
}
