//! A throw-away network namespace, `svb-<pid>-<n>-<tag>`, deleted on drop (also when
//! unwinding from a panic). For loading rule sets where no full lab is needed.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Context;
use svc_lab::netns;

/// Prefix of every namespace made here (the lab's own are `svl-`).
pub const PREFIX: &str = "svb-";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A named network namespace with only `lo` (up) in it.
#[derive(Debug)]
pub struct ScratchNs {
    name: String,
}

impl ScratchNs {
    /// Create `svb-<pid>-<n>-<tag>` (unique per process and call). Removes scratch namespaces
    /// of dead processes first. Needs root.
    pub fn new(tag: &str) -> anyhow::Result<ScratchNs> {
        cleanup_stale();
        let name = format!(
            "{PREFIX}{}-{}-{tag}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        netns::run_checked("ip", &["netns", "add", &name])
            .with_context(|| format!("creating scratch netns {name}"))?;
        let ns = ScratchNs { name };
        // From here on, Drop deletes it, also if this fails.
        netns::ip_in(&ns.name, &["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ScratchNs {
    fn drop(&mut self) {
        if let Err(e) = netns::delete_netns(&self.name) {
            eprintln!("svc-bench: deleting netns {}: {e:#}", self.name);
        }
    }
}

/// Delete `svb-<pid>-...` namespaces whose owning process is gone.
pub fn cleanup_stale() {
    cleanup_where(|pid| !Path::new(&format!("/proc/{pid}")).exists());
}

/// Remove the scratch namespaces process `pid` made (see `svc_lab::Lab::cleanup_owned_by`).
pub fn cleanup_owned_by(pid: u32) {
    cleanup_where(|p| p == pid);
}

fn cleanup_where(owned: impl Fn(u32) -> bool) {
    for name in netns::list_netns() {
        let pid = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && owned(pid)
            && let Err(e) = netns::delete_netns(&name)
        {
            eprintln!("svc-bench: removing stale netns {name}: {e:#}");
        }
    }
}
