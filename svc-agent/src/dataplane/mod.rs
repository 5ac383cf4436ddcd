//! The bottom of the agent: the one module that touches the BPF side from userspace. It
//! owns the maps: their list and layouts (from svc-common), the encoding of every key and
//! value ([`layout`]), the store the reconciler writes through ([`MapStore`]), loading the
//! object and attaching the programs ([`Datapath`], pinned [`links`]), and reading the maps
//! back for svcctl, trace and the metrics. It imports nothing from the modules above it
//! (sources, model, desired state, reconciler, svcctl's views); the address types it
//! shares with them live in the leaf module [`crate::addr`].
//!
//! | file | what |
//! |---|---|
//! | `maps.rs` | the typed handles and specs of every map, derived from svc-common's list; pin checks; reads; usage |
//! | `layout.rs` | typed values to raw keys and values, and back |
//! | `store.rs` | [`MapStore`] (the reconciler's writes), [`RawMaps`], the in-memory fake for unit tests |
//! | `loader.rs` | [`Datapath`]: load with globals, attach TC / XDP / cgroup through pinned links |
//! | `links.rs` | pinned BPF links: adopt, atomically update, prune |
//! | `config.rs` | [`DatapathConfig`]: the node facts the programs are loaded with |
//! | `local.rs` | the detect-local maps: pod CIDRs and pod interfaces, each set as a whole |
//! | `lock.rs` | [`BpffsLock`]: one agent per pin directory (flock), held for the agent's life |
//! | `report.rs` | errors for people: the chain said once, the privilege a failure lacks |
//! | `monitor.rs` | svcctl monitor's switch (SVC_MONITOR); its events come from `Maps::events` |
//!
//! [`cleanup`] (here) is `svc-agent cleanup`: under the lock, the links, then the maps, then
//! the directory.
pub mod layout;
pub mod links;
pub mod report;

mod batch;
mod config;
mod loader;
mod local;
mod lock;
mod maps;
mod monitor;
mod store;

use std::{
    io,
    path::{Path, PathBuf},
};

use aya::maps::MapError;
use aya::programs::ProgramError;
use svc_common::map_names;

pub use config::{DEFAULT_MASQUERADE_PORTS, DatapathConfig, DetectLocal};
pub use loader::{Attached, Datapath, EBPF_OBJECT};
pub use lock::BpffsLock;
pub use maps::{MAP_SPECS, MapSizes, MapSpec, MapUsage, Maps, Sizing, map_usage};
pub use monitor::monotonic_ns;
#[cfg(test)]
pub use store::FakeMaps;
pub use store::{MapStore, Parts, RawMaps, StoreError};

use links::LINKS_SUBDIR;

/// Default bpffs directory for the pins.
pub const DEFAULT_BPFFS_DIR: &str = "/sys/fs/bpf/svc-ebpf";

/// Errors of the dataplane. A variant with a cause keeps it as its `source()` and does not
/// repeat it in its own text: print the chain ([`report::chain_text`], anyhow's `{:#}`).
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(
        "this build has no eBPF object (it was built with AYA_BUILD_SKIP=1); rebuild without it"
    )]
    NoObject,
    #[error("{dir} is not on a bpf filesystem; mount one with `mount -t bpf bpf /sys/fs/bpf`")]
    NotBpffs { dir: PathBuf },
    #[error("cannot create {dir}")]
    PinDir { dir: PathBuf, source: io::Error },
    #[error("cannot open {path}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot remove {path}")]
    Unpin { path: PathBuf, source: io::Error },
    #[error(
        "another svc-agent ({}) holds {dir}: one agent per bpffs directory. Stop that one \
         first, or give this one its own --bpffs",
        holder_text(*.holder)
    )]
    Locked { dir: PathBuf, holder: Option<u32> },
    #[error(
        "another svc-agent ({}) holds {dir}: stop it first (on a cluster: delete the \
         DaemonSet), then run cleanup again. --force unpins under it anyway: its programs are \
         detached and it keeps running on maps nobody can see",
        holder_text(*.holder)
    )]
    CleanupWhileRunning { dir: PathBuf, holder: Option<u32> },
    #[error("nothing to clean up at {dir}: {}", if *.missing {
        "the directory does not exist"
    } else {
        "it holds none of svc-agent's pins (no maps of its names, no links/)"
    })]
    NothingToClean { dir: PathBuf, missing: bool },
    #[error("nothing is pinned at {dir}: {why}")]
    NotPinned { dir: PathBuf, why: NotPinnedWhy },
    #[error(
        "{dir} holds only some of svc-agent's maps (missing: {}): an agent of another \
         version pinned them, or one stopped while creating them. Use the svcctl of that \
         agent's version, or start afresh: stop the agent, run `svc-agent cleanup --bpffs \
         {dir}` and start it again.",
        .missing.join(", ")
    )]
    MissingMaps {
        dir: PathBuf,
        missing: Vec<&'static str>,
    },
    #[error(
        "pinned map {path} does not match this build ({what}: pinned {pinned}, expected \
         {expected}); it comes from an incompatible version of svc-agent. Either run the \
         version that made it, or start afresh: stop the agent, run `svc-agent cleanup \
         --bpffs {dir}` (detaches the programs and unpins the maps; established connections \
         through Services break) and start this version.",
        dir = .path.parent().map(|p| p.display().to_string()).unwrap_or_default()
    )]
    IncompatiblePin {
        path: PathBuf,
        what: &'static str,
        pinned: u32,
        expected: u32,
    },
    #[error(
        "the maps pinned in {dir} have {} (this build: {}): they come from an incompatible \
         version of svc-agent. Either run the version that made them, or start afresh: stop \
         the agent, run `svc-agent cleanup --bpffs {dir}` (detaches the programs and unpins \
         the maps; established connections through Services break) and start this version.",
        match .pinned { Some(v) => format!("map layout version {v}"), None => "no layout version (an older agent)".to_string() },
        svc_common::LAYOUT_VERSION,
        dir = .dir.display()
    )]
    IncompatibleLayout { dir: PathBuf, pinned: Option<u32> },
    #[error("map {name}")]
    Map {
        name: &'static str,
        source: MapError,
    },
    #[error("reading the maps")]
    Read(#[from] StoreError),
    #[error("cannot open the cgroup {path}")]
    Cgroup { path: PathBuf, source: io::Error },
    #[error("loading the eBPF object")]
    Load(#[from] aya::EbpfError),
    #[error("link {hook}")]
    Link { hook: String, source: io::Error },
    #[error("program {name}{}", if .iface.is_empty() { String::new() } else { format!(" on {}", .iface) })]
    Program {
        name: &'static str,
        iface: String,
        source: ProgramError,
    },
}

/// `pid 1234`, or `pid unknown` when /proc/locks did not say.
fn holder_text(holder: Option<u32>) -> String {
    holder.map_or_else(|| "pid unknown".to_string(), |p| format!("pid {p}"))
}

/// Why nothing is pinned where svcctl looked, each with what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotPinnedWhy {
    /// The directory does not exist, on a bpffs.
    NoDir,
    /// `mount`, the directory or its closest existing ancestor, is not on a bpffs: under
    /// `ip netns exec` (a fresh /sys) /sys/fs/bpf is a plain sysfs directory.
    NoBpffs { mount: PathBuf },
    /// The directory exists but holds none of the maps.
    Empty,
}

impl std::fmt::Display for NotPinnedWhy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotPinnedWhy::NoBpffs { mount } => write!(
                f,
                "{} is not on a bpf filesystem here. Under `ip netns exec`, which mounts a \
                 fresh /sys, /sys/fs/bpf is an empty sysfs directory: run svcctl outside the \
                 network namespace (it needs none; `nsenter --net=/run/netns/NAME` enters one \
                 and keeps /sys), or pass --bpffs with a path where the host's bpffs is \
                 mounted outside /sys. Otherwise no bpffs is mounted, and no svc-agent runs \
                 on this node (it needs one: `mount -t bpf bpf /sys/fs/bpf`)",
                mount.display()
            ),
            NotPinnedWhy::NoDir => f.write_str(
                "the directory does not exist. Is svc-agent running, with this --bpffs? It \
                 creates the directory when it starts; an agent started with another --bpffs \
                 pins there: pass that directory (--bpffs or SVC_BPFFS)",
            ),
            NotPinnedWhy::Empty => f.write_str(
                "it holds none of svc-agent's maps. Is svc-agent running with this --bpffs? \
                 An agent still waiting for its Node object, or one that failed to load its \
                 programs, has pinned nothing yet (see its log)",
            ),
        }
    }
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

/// What `svc-agent cleanup` removed.
#[derive(Debug, Default)]
pub struct Cleanup {
    pub links: Vec<String>,
    pub maps: Vec<String>,
    /// Files in the directory that are not ours, left alone (the directory stays too).
    pub left: Vec<String>,
    /// With [`IfRunning::Force`]: an agent held the directory, and now runs on maps nobody
    /// can see (its pid in `holder`, if known).
    pub forced: bool,
    pub holder: Option<u32>,
}

/// What [`cleanup_with`] does when an agent holds the directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IfRunning {
    /// Refuse with [`DataplaneError::CleanupWhileRunning`], naming its pid.
    #[default]
    Refuse,
    /// Unpin anyway (`svc-agent cleanup --force`).
    Force,
}

/// [`cleanup_with`], refusing while an agent holds `dir`.
pub fn cleanup(dir: &Path) -> Result<Cleanup, DataplaneError> {
    cleanup_with(dir, IfRunning::Refuse)
}

/// Detaches and unpins everything an agent pinned under `dir`: the links first (so no
/// program runs on maps that are going away), then the maps, then the directories.
/// Takes the directory's [`BpffsLock`] first: while an agent holds it, this refuses (or,
/// with [`IfRunning::Force`], goes on). A `dir` that does not exist, or holds none of our
/// pins, is [`DataplaneError::NothingToClean`] (a mistyped path must not look like a
/// successful uninstall) and nothing is touched.
pub fn cleanup_with(dir: &Path, if_running: IfRunning) -> Result<Cleanup, DataplaneError> {
    let mut out = Cleanup::default();
    let open_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataplaneError::Open { path, source }
    };
    match std::fs::symlink_metadata(dir) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(DataplaneError::NothingToClean {
                dir: dir.to_path_buf(),
                missing: true,
            });
        }
        Err(e) => return Err(open_err(dir)(e)),
    }
    // Held until the directory is gone: no agent can start on it halfway through.
    let _lock = match lock::try_lock_dir(dir) {
        Ok(lock) => Some(lock),
        Err(lock::LockFailure::Held { holder }) => match if_running {
            IfRunning::Refuse => {
                return Err(DataplaneError::CleanupWhileRunning {
                    dir: dir.to_path_buf(),
                    holder,
                });
            }
            IfRunning::Force => {
                out.forced = true;
                out.holder = holder;
                None
            }
        },
        Err(lock::LockFailure::Io(e)) => return Err(open_err(dir)(e)),
    };
    let links_dir = dir.join(LINKS_SUBDIR);
    let link_names = read_names(&links_dir)?;
    let names = read_names(dir)?;
    let has_links_dir = names.iter().any(|n| n == LINKS_SUBDIR);
    let ours = |n: &String| map_names::ALL.contains(&n.as_str());
    if link_names.is_empty() && !has_links_dir && !names.iter().any(ours) {
        return Err(DataplaneError::NothingToClean {
            dir: dir.to_path_buf(),
            missing: false,
        });
    }
    let rm_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataplaneError::Unpin { path, source }
    };
    for name in link_names {
        let path = links_dir.join(&name);
        std::fs::remove_file(&path).map_err(rm_err(&path))?;
        out.links.push(name);
    }
    if has_links_dir {
        std::fs::remove_dir(&links_dir).map_err(rm_err(&links_dir))?;
    }
    for name in names.into_iter().filter(|n| n != LINKS_SUBDIR) {
        let path = dir.join(&name);
        if ours(&name) {
            std::fs::remove_file(&path).map_err(rm_err(&path))?;
            out.maps.push(name);
        } else {
            out.left.push(name);
        }
    }
    if out.left.is_empty() {
        std::fs::remove_dir(dir).map_err(rm_err(dir))?;
    }
    Ok(out)
}

/// The names in `dir`, sorted; none if it does not exist. Other errors (EACCES) are errors:
/// an unreadable directory is not an empty one.
fn read_names(dir: &Path) -> Result<Vec<String>, DataplaneError> {
    let open_err = |source| DataplaneError::Open {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(open_err(e)),
    };
    let mut names = Vec::new();
    for e in entries {
        names.push(
            e.map_err(open_err)?
                .file_name()
                .to_string_lossy()
                .into_owned(),
        );
    }
    names.sort();
    Ok(names)
}

/// The cookie of the network namespace this process runs in (`SO_NETNS_COOKIE`, kernel
/// 5.14+): what the socket programs compare a socket's with to tell the node's own from
/// pods' (svc-ebpf/src/sock.rs, "Pods").
pub fn own_netns_cookie() -> std::io::Result<u64> {
    let socket = std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0))?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`, which we own.
    let ret = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if ret != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cookie)
}
