//! The node the agent runs on, as the loop touches it: its interfaces (which get the TC
//! program), the sysctl masqueraded flows need, and waiting for the Node object's
//! addresses in Kubernetes mode.
use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

use tracing::{info, warn};

use crate::kubernetes::KubeSource;

/// True if `iface` matches one of the patterns (`lxc*` matches every name starting with lxc).
pub fn matches_pattern(patterns: &[String], iface: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => iface.starts_with(prefix),
        None => iface == p,
    })
}

/// Sets net.ipv4.conf.<iface>.accept_local=1. Masqueraded packets carry the node's own
/// address as their source when XDP or TC hands them to the stack (an SNATed flow from
/// outside on the external interface, a hairpinned one on a pod interface), and the kernel
/// drops such packets as martians unless the interface accepts local sources.
pub fn enable_accept_local(proc_sys_net: &Path, iface: &str) {
    let path = proc_sys_net.join(format!("ipv4/conf/{iface}/accept_local"));
    if let Err(e) = std::fs::write(&path, "1") {
        warn!(iface = %iface, path = %path.display(), error = %e, "cannot set accept_local; masqueraded flows through this interface will be dropped");
    }
}

/// Interfaces of the agent's network namespace.
pub fn interfaces() -> BTreeSet<String> {
    match nix::net::if_::if_nameindex() {
        Ok(list) => list
            .iter()
            .map(|i| i.name().to_string_lossy().into_owned())
            .collect(),
        Err(e) => {
            warn!(error = %e, "cannot list interfaces");
            BTreeSet::new()
        }
    }
}

/// Waits (for ever, logging every 10 s) for this node's Node object to list its
/// addresses: NodePorts and the masquerade source depend on them. Pinned programs keep
/// serving the old state meanwhile.
pub async fn wait_for_node_addresses(source: &KubeSource) -> Vec<Ipv4Addr> {
    let started = Instant::now();
    let mut last_log = Instant::now();
    loop {
        if let Some(facts) = source.node()
            && !facts.addresses.is_empty()
        {
            info!(addresses = ?facts.addresses, "node addresses from the Node object");
            return facts.addresses;
        }
        if last_log.elapsed() >= Duration::from_secs(10) {
            last_log = Instant::now();
            warn!(
                waited_s = started.elapsed().as_secs(),
                "waiting for this node's Node object (with an InternalIP address); pass --node-ip to skip"
            );
        }
        tokio::select! {
            _ = source.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let p = vec!["lxc*".to_string(), "veth0".to_string()];
        assert!(matches_pattern(&p, "lxc-p1"));
        assert!(matches_pattern(&p, "veth0"));
        assert!(!matches_pattern(&p, "veth01"));
        assert!(!matches_pattern(&p, "eth0"));
        assert!(!matches_pattern(&[], "lxc1"));
    }
}
