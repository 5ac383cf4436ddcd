//! Network-namespace plumbing: entering a namespace from a thread, and running commands in one.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// Where `ip netns add` bind-mounts named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Path of the bind mount that keeps the named namespace alive.
pub fn netns_path(ns: &str) -> PathBuf {
    PathBuf::from(NETNS_RUN_DIR).join(ns)
}

/// Open the namespace file; the fd is what `setns` wants.
pub fn open_netns(ns: &str) -> io::Result<File> {
    File::open(netns_path(ns))
        .map_err(|e| io::Error::new(e.kind(), format!("open netns {ns}: {e}")))
}

/// Move the *calling thread* into network namespace `ns`.
///
/// The network namespace is per-thread, so this never affects other threads; callers
/// use it on threads they own (see [`try_in_netns`]). Sockets created afterwards belong
/// to `ns` for their whole life, even when used from other threads.
pub fn enter_netns(ns: &str) -> io::Result<()> {
    let f = open_netns(ns)?;
    // SAFETY: plain syscall on a valid fd we own for the duration of the call.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("setns into {ns}: {e}")));
    }
    Ok(())
}

/// Run `f` on a fresh scoped thread that has entered `ns`; the caller's thread is untouched.
/// A panic in `f` is propagated to the caller.
pub fn try_in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            enter_netns(ns)?;
            Ok(f())
        });
        match h.join() {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        }
    })
}

/// Like [`try_in_netns`] but panics (with the namespace name) if the namespace cannot be entered.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    try_in_netns(ns, f).unwrap_or_else(|e| panic!("in_netns({ns}): {e}"))
}

/// Make `cmd` start inside network namespace `ns` while keeping the caller's mount
/// namespace (unlike `ip netns exec`, which remounts /sys and would hide /sys/fs/bpf).
/// Same effect as `nsenter --net=/run/netns/<ns> -- cmd`, but stdio/env/cwd set on `cmd`
/// are preserved and the spawned pid is the program itself.
///
/// The namespace fd is opened now and moved into the hook, so it lives as long as `cmd`.
pub fn command_in_netns(cmd: &mut Command, ns: &str) -> io::Result<()> {
    let f = open_netns(ns)?;
    // SAFETY: the hook runs between fork and exec and only issues setns(2), which is
    // async-signal-safe and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

/// Run a command to completion, capturing its output.
pub fn run_output<S: AsRef<OsStr>>(prog: &str, args: &[S]) -> io::Result<Output> {
    Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("spawn {prog}: {e}")))
}

/// Run a command and fail with its stderr if it exits non-zero.
pub fn run_checked<S: AsRef<OsStr>>(prog: &str, args: &[S]) -> anyhow::Result<Output> {
    let out = run_output(prog, args)?;
    if !out.status.success() {
        let argv: Vec<String> = args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        anyhow::bail!(
            "`{prog} {}` failed ({}): {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// `ip -n <ns> <args...>`, failing on non-zero exit.
pub fn ip_in(ns: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut v = vec!["-n", ns];
    v.extend_from_slice(args);
    run_checked("ip", &v).map(|_| ())
}

/// `ip netns exec <ns> <args...>`: for ad-hoc commands (ethtool, ss, nstat, ...).
pub fn exec_in<S: AsRef<OsStr>>(ns: &str, args: &[S]) -> io::Result<Output> {
    let mut v: Vec<&OsStr> = vec![OsStr::new("netns"), OsStr::new("exec"), OsStr::new(ns)];
    v.extend(args.iter().map(|a| a.as_ref()));
    run_output("ip", &v)
}

/// Set a sysctl under /proc/sys/net inside `ns`.
///
/// /proc/sys/net resolves against the netns of the task that opens it, so writing from a
/// thread that has entered `ns` changes that namespace only.
pub fn sysctl_in(ns: &str, key: &str, value: &str) -> anyhow::Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    try_in_netns(ns, || std::fs::write(&path, value))?
        .map_err(|e| anyhow::anyhow!("sysctl {key}={value} in {ns}: {e}"))
}

/// Names of all named network namespaces (entries of /run/netns).
pub fn list_netns() -> Vec<String> {
    std::fs::read_dir(NETNS_RUN_DIR)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `ip netns del <ns>`; deleting a namespace also destroys its veths and their BPF programs.
pub fn delete_netns(ns: &str) -> anyhow::Result<()> {
    run_checked("ip", &["netns", "del", ns]).map(|_| ())
}
