//! Pinned program links: how the programs stay attached while no agent runs, and how a new
//! agent (after a crash, a restart or an upgrade) swaps its freshly loaded programs in
//! without a gap.
//!
//! Every attachment (TC ingress and XDP per interface, the cgroup socket hooks) is a BPF
//! link pinned at `<bpffs>/links/<hook>.<target>`. A pinned link keeps its program attached
//! after the process that made it exits, even on SIGKILL, so packets keep being translated
//! with the (also pinned) maps while the agent is away. On start the agent loads new program
//! instances and, for each attachment it still wants, opens the pinned link and points it
//! at the new program with BPF_LINK_UPDATE: one atomic switch in the kernel, no moment with
//! no program or with two. A link whose target is gone (an interface deleted while the agent
//! was down) answers ENOLINK; its pin is removed and a new link is made.
//!
//! Pins nobody claims after the agent's first pass (an interface no longer matching
//! `--pod-device`, a different `--device` or `--cgroup`) are removed, which detaches them:
//! the agent's configuration decides what is attached. `svc-agent cleanup` removes them all.
use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
};

use aya::programs::links::PinnedLink;

/// Subdirectory of the bpffs directory that holds the pinned links.
pub const LINKS_SUBDIR: &str = "links";

/// bpf(2) commands from include/uapi/linux/bpf.h (`enum bpf_cmd`); libc does not carry them
/// and aya keeps its wrappers crate-private.
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_UPDATE: libc::c_long = 29;

/// An attachment point, and the name of its pin.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hook {
    TcIngress {
        iface: String,
    },
    Xdp {
        iface: String,
    },
    /// One of the cgroup socket programs on a cgroup directory.
    Cgroup {
        program: &'static str,
        cgroup: PathBuf,
    },
}

impl Hook {
    /// The pin's file name: `tc-ingress@eth0`, `xdp@eth0`,
    /// `cgroup-svc_connect4@_sys_fs_cgroup` (the cgroup path with `/` as `_`, so a pin made
    /// for another cgroup is not mistaken for this one). bpffs refuses names with a dot
    /// (EPERM: "reserved for future extensions", kernel/bpf/inode.c), so a `.` of an
    /// interface name (a VLAN such as `eth0.100`) is written `%`.
    pub fn pin_name(&self) -> String {
        let safe = |s: &str| s.replace('.', "%");
        match self {
            Hook::TcIngress { iface } => format!("tc-ingress@{}", safe(iface)),
            Hook::Xdp { iface } => format!("xdp@{}", safe(iface)),
            Hook::Cgroup { program, cgroup } => format!(
                "cgroup-{program}@{}",
                safe(&cgroup.to_string_lossy().replace('/', "_"))
            ),
        }
    }

    /// The interface this hook is on, if it is on one.
    pub fn iface(&self) -> Option<&str> {
        match self {
            Hook::TcIngress { iface } | Hook::Xdp { iface } => Some(iface),
            Hook::Cgroup { .. } => None,
        }
    }
}

/// What [`update_pinned`] found at a pin.
#[derive(Debug, PartialEq, Eq)]
pub enum Adopted {
    /// No pin: attach anew.
    NoPin,
    /// The pinned link now runs the new program (`link_id`: the kernel's id of the link,
    /// unchanged; `old_program_id` the program it ran before).
    Replaced { link_id: u32, old_program_id: u32 },
    /// The link's target went away (ENOLINK); the pin was removed: attach anew.
    Defunct,
}

/// bpf(2) with `attr` as the command's part of `union bpf_attr` (the kernel zero-extends a
/// shorter attr). Returns the syscall's non-negative result.
pub(crate) fn sys_bpf<T>(cmd: libc::c_long, attr: &T) -> io::Result<libc::c_long> {
    // SAFETY: bpf(2) reads size_of::<T>() bytes of `attr`, which outlives the call, and the
    // pointers inside it (paths, key buffers) are the caller's, valid for the call too.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *const T, size_of::<T>()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// Opens a pinned BPF object (BPF_OBJ_GET).
fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // union bpf_attr, the BPF_OBJ_GET part.
    #[repr(C)]
    struct ObjGetAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        _pad: u32,
    }
    let attr = ObjGetAttr {
        pathname: c_path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        _pad: 0,
    };
    let fd = sys_bpf(BPF_OBJ_GET, &attr)?;
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Points `link` at `program` (BPF_LINK_UPDATE, without an expected old program).
fn link_update(link: BorrowedFd<'_>, program: BorrowedFd<'_>) -> io::Result<()> {
    // union bpf_attr, the BPF_LINK_UPDATE part.
    #[repr(C)]
    struct LinkUpdateAttr {
        link_fd: u32,
        new_prog_fd: u32,
        flags: u32,
        old_prog_fd: u32,
    }
    let attr = LinkUpdateAttr {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: program.as_raw_fd() as u32,
        flags: 0,
        old_prog_fd: 0,
    };
    sys_bpf(BPF_LINK_UPDATE, &attr).map(|_| ())
}

/// Ids of the link pinned at `path` and of the program it runs (for logs and tests).
pub fn pinned_link_ids(path: &Path) -> Option<(u32, u32)> {
    let link = PinnedLink::from_pin(path).ok()?;
    let info = aya::programs::links::FdLink::from(link).info().ok()?;
    Some((info.id(), info.program_id()))
}

/// If a link is pinned at `path`, switches it to `program` atomically.
pub fn update_pinned(path: &Path, program: BorrowedFd<'_>) -> io::Result<Adopted> {
    let link = match obj_get(path) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Adopted::NoPin),
        Err(e) => return Err(e),
    };
    let old_program_id = pinned_link_ids(path).map_or(0, |(_, p)| p);
    match link_update(link.as_fd(), program) {
        Ok(()) => Ok(Adopted::Replaced {
            link_id: pinned_link_ids(path).map_or(0, |(l, _)| l),
            old_program_id,
        }),
        Err(e) if e.raw_os_error() == Some(libc::ENOLINK) => {
            std::fs::remove_file(path)?;
            Ok(Adopted::Defunct)
        }
        Err(e) => Err(e),
    }
}

/// Every pin in `dir` (file names), sorted; none if the directory does not exist.
pub fn pinned_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_names_say_hook_and_target() {
        assert_eq!(
            Hook::TcIngress {
                iface: "lxc-p1".into()
            }
            .pin_name(),
            "tc-ingress@lxc-p1"
        );
        assert_eq!(
            Hook::Xdp {
                iface: "eth0".into()
            }
            .pin_name(),
            "xdp@eth0"
        );
        assert_eq!(
            Hook::Xdp {
                iface: "eth0.100".into()
            }
            .pin_name(),
            "xdp@eth0%100"
        );
        let cg = |c: &str| Hook::Cgroup {
            program: "svc_connect4",
            cgroup: c.into(),
        };
        assert_eq!(
            cg("/sys/fs/cgroup").pin_name(),
            "cgroup-svc_connect4@_sys_fs_cgroup"
        );
        assert_eq!(
            cg("/sys/fs/cgroup/svl.slice").pin_name(),
            "cgroup-svc_connect4@_sys_fs_cgroup_svl%slice"
        );
        assert_ne!(
            cg("/sys/fs/cgroup/a").pin_name(),
            cg("/sys/fs/cgroup").pin_name()
        );
    }

    #[test]
    fn a_missing_pin_is_no_pin() {
        let devnull = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(
            update_pinned(Path::new("/nonexistent/pin"), devnull.as_fd()).unwrap(),
            Adopted::NoPin
        );
    }
}
