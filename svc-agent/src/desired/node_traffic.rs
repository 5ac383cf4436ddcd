//! What the node's own traffic gets beyond the frontends every source shares (shared
//! service-semantics, "Localhost NodePorts" and "loadBalancerSourceRanges"):
//!
//! - **Localhost NodePorts.** kube-proxy's iptables mode (`--iptables-localhost-nodeports`,
//!   default true) lets a node process reach every NodePort on 127.0.0.1, masqueraded,
//!   when nodePortAddresses is unset or includes loopback; Cilium does the same. Here they
//!   are NodePort frontends at 127.0.0.1 ([`NodeContext::localhost_node_port_ip`]): only the
//!   cgroup socket programs ever look them up (the TC and XDP programs never translate a
//!   127/8 destination, see svc-ebpf/src/rules.rs), and a call they translate leaves with
//!   the node's own address, as routing picks it for the backend, which is the masquerade
//!   kube-proxy applies. Only 127.0.0.1: kube-proxy's default rule (`addrtype --dst-type
//!   LOCAL`) also covers 127.0.0.2 and the rest of 127/8, which one frontend per address
//!   cannot; with nodePortAddresses given, kube-proxy too serves only the loopback
//!   address `lo` carries, 127.0.0.1.
//! - **The LoadBalancer IPs as sources** ([`source_ranges`]): when the node's primary IP
//!   of a family (the first node IP of it; for IPv4 the masquerade address) is inside a
//!   Service's
//!   loadBalancerSourceRanges, kube-proxy also accepts the Service's LoadBalancer IPs as
//!   sources on its LoadBalancer frontends: a node that has the VIP on a local interface
//!   reaches it with the VIP as the source (a local destination gets itself as source).
//!   Per family, as each kube-proxy proxier does it with its own ranges and node IP.
//!   Localhost NodePorts are IPv4 only (kube-proxy's IPv6 proxier has none: the kernel
//!   has no route_localnet for ::1).
use std::net::{IpAddr, Ipv4Addr};

use super::{Family, IpCidr, IpMode, NodeContext, Service};

impl NodeContext {
    /// The loopback address NodePorts answer on for the node's own processes: 127.0.0.1,
    /// when `localhost_node_ports` is on and nodePortAddresses is empty (every address) or
    /// has a CIDR containing it, as kube-proxy's iptables mode decides; else None.
    pub fn localhost_node_port_ip(&self) -> Option<IpAddr> {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        // Only IPv4 CIDRs decide, as for the IPv4 node addresses (see `node_port_ips`).
        let mut v4 = self
            .node_port_addresses
            .iter()
            .filter(|c| c.family() == Family::V4)
            .peekable();
        let allowed = v4.peek().is_none() || v4.any(|c| c.contains(lo));
        (self.localhost_node_ports && allowed).then_some(lo)
    }

    /// nodePortAddresses includes 127.0.0.1 but localhost NodePorts are off: kube-proxy
    /// logs this as an error and serves no NodePort there; so does the agent (a warning).
    pub fn loopback_node_ports_disabled(&self) -> bool {
        !self.localhost_node_ports
            && self
                .node_port_addresses
                .iter()
                .any(|c| c.contains(IpAddr::V4(Ipv4Addr::LOCALHOST)))
    }
}

/// The source ranges of a LoadBalancer frontend of `svc` of `family`: its
/// loadBalancerSourceRanges of that family, then each of its LoadBalancer IPs of that
/// family (ingress IPs that are not `ipMode: Proxy`) as a /32 (/128) when the node's
/// primary IP of the family is inside the ranges (kube-proxy's `allowFromNode`); empty
/// when the Service has no range of the family (every source allowed).
pub(super) fn source_ranges(svc: &Service, node: &NodeContext, family: Family) -> Vec<IpCidr> {
    let mut ranges: Vec<IpCidr> = svc
        .load_balancer_source_ranges
        .iter()
        .copied()
        .filter(|c| c.family() == family)
        .collect();
    let from_node = node
        .primary_ip(family)
        .is_some_and(|ip| ranges.iter().any(|c| c.contains(ip)));
    if from_node {
        for ingress in &svc.load_balancer_ingress {
            if let (Some(ip), IpMode::Vip) = (ingress.ip, ingress.ip_mode) {
                if Family::of(ip) != family {
                    continue;
                }
                let vip = IpCidr::host(ip);
                if !ranges.contains(&vip) {
                    ranges.push(vip);
                }
            }
        }
    }
    ranges
}
