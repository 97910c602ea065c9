//! Capabilities: checking, before touching the kernel, that we may load and
//! attach XDP; and giving them up once everything is open (`-Z USER`).

use std::ffi::{CStr, CString};

/// Linux capability numbers from `linux/capability.h`.
const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Why the process may not run the engine.
#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    /// Capabilities are missing.
    #[error(
        "traffic needs root (or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, and CAP_NET_RAW with --afxdp) to load and attach XDP programs; it is missing {missing}; run it as root"
    )]
    Missing {
        /// The missing capabilities, comma-separated.
        missing: String,
    },
    /// `-Z USER` names no user.
    #[error("-Z/--user: there is no user named `{0}` (see /etc/passwd)")]
    NoSuchUser(String),
    /// Switching to the user failed.
    #[error("switching to user {user} failed at {call}")]
    Switch {
        /// The user.
        user: String,
        /// The call that failed.
        call: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A user to run as after start-up (`-Z USER`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The name given.
    pub name: String,
    /// Its uid.
    pub uid: libc::uid_t,
    /// Its primary gid.
    pub gid: libc::gid_t,
}

impl User {
    /// Looks `name` up in the user database.
    ///
    /// # Errors
    ///
    /// [`CapsError::NoSuchUser`].
    pub fn lookup(name: &str) -> Result<Self, CapsError> {
        let missing = || CapsError::NoSuchUser(name.to_owned());
        let c = CString::new(name).map_err(|_| missing())?;
        // SAFETY: all-zero is a valid passwd to be filled in.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: valid pointers and the buffer's length.
        let rc = unsafe {
            libc::getpwnam_r(
                c.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            )
        };
        if rc != 0 || found.is_null() {
            return Err(missing());
        }
        // SAFETY: getpwnam_r set pw_name to a C string inside `buf`.
        let name = unsafe { CStr::from_ptr(pwd.pw_name) }
            .to_string_lossy()
            .into_owned();
        Ok(Self {
            name,
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
        })
    }

    /// Switches the whole process to this user and group, with no
    /// supplementary groups; changing from root to another uid clears every
    /// capability (no `SECBIT_KEEP_CAPS`), and no new privilege can be
    /// gained afterwards. What is open stays usable: the attached program's
    /// link, its maps and ring, AF_XDP sockets, output files.
    ///
    /// # Errors
    ///
    /// [`CapsError::Switch`], naming the call.
    pub fn switch(&self) -> Result<(), CapsError> {
        let fail = |call| CapsError::Switch {
            user: self.name.clone(),
            call,
            source: std::io::Error::last_os_error(),
        };
        // SAFETY: plain syscalls with valid arguments; each result is checked.
        unsafe {
            if libc::setgroups(1, &self.gid) != 0 {
                return Err(fail("setgroups"));
            }
            if libc::setgid(self.gid) != 0 {
                return Err(fail("setgid"));
            }
            if libc::setuid(self.uid) != 0 {
                return Err(fail("setuid"));
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(fail("prctl(PR_SET_NO_NEW_PRIVS)"));
            }
        }
        Ok(())
    }
}

/// The effective capability set of this process, from `/proc/self/status`.
pub fn effective() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Checks that the process can load BPF programs and attach them to
/// interfaces: CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON, plus
/// CAP_NET_ADMIN; and with `afxdp`, CAP_NET_RAW for the sockets.
///
/// # Errors
///
/// [`CapsError::Missing`] naming what is missing. When the capability set
/// cannot be read, the check passes and the kernel has the last word.
pub fn check(afxdp: bool) -> Result<(), CapsError> {
    let Some(eff) = effective() else {
        return Ok(());
    };
    let has = |cap: u32| eff & (1u64 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_SYS_ADMIN) && !has(CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_SYS_ADMIN) && !has(CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if afxdp && !has(CAP_NET_RAW) {
        missing.push("CAP_NET_RAW");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CapsError::Missing {
            missing: missing.join(", "),
        })
    }
}
