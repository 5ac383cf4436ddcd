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
pub mod layout;
pub mod links;

mod config;
mod loader;
mod maps;
mod store;

use std::path::{Path, PathBuf};

use aya::maps::MapError;
use aya::programs::ProgramError;
use svc_common::map_names;

pub use config::{DEFAULT_MASQUERADE_PORTS, DatapathConfig};
pub use loader::{Attached, Datapath, EBPF_OBJECT};
pub use maps::{MAP_SPECS, MapSizes, MapSpec, MapUsage, Maps, Sizing, map_usage};
#[cfg(test)]
pub use store::FakeMaps;
pub use store::{MapStore, Parts, RawMaps, StoreError};

use links::LINKS_SUBDIR;

/// Default bpffs directory for the pins.
pub const DEFAULT_BPFFS_DIR: &str = "/sys/fs/bpf/svc-ebpf";

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(
        "this build has no eBPF object (it was built with AYA_BUILD_SKIP=1); rebuild without it"
    )]
    NoObject,
    #[error("{dir} is not on a bpf filesystem; mount one with `mount -t bpf bpf /sys/fs/bpf`")]
    NotBpffs { dir: PathBuf },
    #[error("cannot create {dir}: {source}")]
    PinDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "nothing is pinned at {path}: is svc-agent running with --bpffs {dir}?",
        dir = .path.parent().map(|p| p.display().to_string()).unwrap_or_default()
    )]
    NotPinned { path: PathBuf },
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
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: MapError,
    },
    #[error("reading the maps: {0}")]
    Read(#[from] StoreError),
    #[error("cannot open the cgroup {path}: {source}")]
    Cgroup {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("link {hook}: {source}")]
    Link {
        hook: String,
        source: std::io::Error,
    },
    #[error("program {name} on {iface}: {source}")]
    Program {
        name: &'static str,
        iface: String,
        source: ProgramError,
    },
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
}

/// Detaches and unpins everything an agent pinned under `dir`: the links first (so no
/// program runs on maps that are going away), then the maps, then the directories.
/// Run it with the agent stopped (kube-proxy's `--cleanup`). A missing `dir` is nothing
/// to clean.
pub fn cleanup(dir: &Path) -> Result<Cleanup, DataplaneError> {
    let mut out = Cleanup::default();
    if !dir.exists() {
        return Ok(out);
    }
    let rm_err = |path: PathBuf| move |source| DataplaneError::PinDir { dir: path, source };
    let links_dir = dir.join(LINKS_SUBDIR);
    for name in links::pinned_names(&links_dir) {
        let path = links_dir.join(&name);
        std::fs::remove_file(&path).map_err(rm_err(path))?;
        out.links.push(name);
    }
    if links_dir.exists() {
        std::fs::remove_dir(&links_dir).map_err(rm_err(links_dir.clone()))?;
    }
    for name in links::pinned_names(dir) {
        let path = dir.join(&name);
        if map_names::ALL.contains(&name.as_str()) {
            std::fs::remove_file(&path).map_err(rm_err(path))?;
            out.maps.push(name);
        } else {
            out.left.push(name);
        }
    }
    if out.left.is_empty() {
        std::fs::remove_dir(dir).map_err(rm_err(dir.to_path_buf()))?;
    }
    Ok(out)
}
