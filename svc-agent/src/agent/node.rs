//! The node the agent runs on, as the loop touches it: its interfaces (which get the TC
//! program), the sysctl masqueraded flows need, and waiting for the Node object's
//! addresses in Kubernetes mode.
use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::Path,
    time::{Duration, Instant},
};

use tracing::{info, warn};

use crate::{addr::IpCidr, kubernetes::KubeSource};

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

/// Interfaces of the agent's network namespace, with their ifindexes.
pub fn interfaces() -> BTreeMap<String, u32> {
    match nix::net::if_::if_nameindex() {
        Ok(list) => list
            .iter()
            .map(|i| (i.name().to_string_lossy().into_owned(), i.index()))
            .collect(),
        Err(e) => {
            warn!(error = %e, "cannot list interfaces");
            BTreeMap::new()
        }
    }
}

/// The addresses of `devices`, in device order (then the kernel's order): where NodePorts
/// answer besides --node-ip (filtered by --node-port-addresses). IPv6: global addresses
/// only; link-local ones (fe80::/10) are left out, as they are the same on every link and
/// only mean something with their interface, which a NodePort frontend has not got.
pub fn device_addresses(devices: &[String]) -> Vec<IpAddr> {
    if devices.is_empty() {
        return Vec::new();
    }
    let all: Vec<(String, IpAddr)> = match nix::ifaddrs::getifaddrs() {
        Ok(list) => list
            .filter_map(|a| {
                let addr = a.address.as_ref()?;
                let ip = match (addr.as_sockaddr_in(), addr.as_sockaddr_in6()) {
                    (Some(v4), _) => IpAddr::V4(v4.ip()),
                    (None, Some(v6)) if node_port_capable(&v6.ip()) => IpAddr::V6(v6.ip()),
                    _ => return None,
                };
                Some((a.interface_name, ip))
            })
            .collect(),
        Err(e) => {
            warn!(error = %e, "cannot list interface addresses");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for dev in devices {
        for (_, ip) in all.iter().filter(|(name, _)| name == dev) {
            if !out.contains(ip) {
                out.push(*ip);
            }
        }
    }
    out
}

/// An IPv6 address NodePorts may answer on: not link-local, loopback, unspecified or
/// multicast.
fn node_port_capable(ip: &std::net::Ipv6Addr) -> bool {
    !(ip.is_unicast_link_local() || ip.is_loopback() || ip.is_unspecified() || ip.is_multicast())
}

/// Waits (for ever, logging every 10 s) for this node's Node object to list its
/// addresses: NodePorts and the masquerade source depend on them. Pinned programs keep
/// serving the old state meanwhile.
pub async fn wait_for_node_addresses(source: &KubeSource) -> Vec<IpAddr> {
    let started = Instant::now();
    let mut last_log = Instant::now();
    loop {
        if let Some(facts) = source.node()
            && !facts.addresses.is_empty()
        {
            info!(addresses = %crate::logfmt::comma_list(&facts.addresses, "none"), "node addresses from the Node object");
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

/// Waits (for ever, logging every 10 s) for this node's Node object to have pod CIDRs
/// (`spec.podCIDRs`): `--detect-local-mode NodeCIDR` tells pods by them, as kube-proxy,
/// which waits for them too.
pub async fn wait_for_node_pod_cidrs(source: &KubeSource) -> Vec<IpCidr> {
    let started = Instant::now();
    let mut last_log = Instant::now();
    loop {
        if let Some(facts) = source.node()
            && !facts.pod_cidrs.is_empty()
        {
            info!(pod_cidrs = %crate::logfmt::comma_list(&facts.pod_cidrs, "none"), "pod CIDRs from the Node object (NodeCIDR)");
            return facts.pod_cidrs;
        }
        if last_log.elapsed() >= Duration::from_secs(10) {
            last_log = Instant::now();
            warn!(
                waited_s = started.elapsed().as_secs(),
                "waiting for this node's Node object to have spec.podCIDRs (--detect-local-mode NodeCIDR)"
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

    #[test]
    fn loopback_has_an_address_and_an_index() {
        // 127.0.0.1 once (a device listed twice); ::1 is never a NodePort address.
        assert_eq!(
            device_addresses(&["lo".to_string(), "lo".to_string()]),
            vec![IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)]
        );
        assert!(!node_port_capable(&"fe80::1".parse().unwrap()));
        assert!(node_port_capable(&"fd00:192:0:2::1".parse().unwrap()));
        assert!(device_addresses(&[]).is_empty());
        assert!(interfaces().contains_key("lo"));
    }
}
