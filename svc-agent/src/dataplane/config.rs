//! The node facts the programs read as load-time globals (svc-ebpf/src/config.rs, Cilium's
//! DECLARE_CONFIG), the pod CIDRs they start with, and the capacities of the sizable maps:
//! what [`Datapath::load`] loads the programs with. Their encoding (the globals, and
//! SVC_CONFIG for svcctl trace) is in [`layout`](super::layout).
//!
//! [`Datapath::load`]: super::Datapath::load
use std::net::{Ipv4Addr, Ipv6Addr};

pub use svc_common::DetectLocal;

use super::MapSizes;
use crate::addr::IpCidr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatapathConfig {
    /// How the programs tell a new flow comes from a pod (kube-proxy's detect-local, as the
    /// datapath tests it): by source address ([`DetectLocal::Cidr`], the CIDRs in
    /// SVC4_POD_CIDRS and SVC6_POD_CIDRS; one mode for both families), by the interface it entered through ([`DetectLocal::Interface`],
    /// SVC_POD_IFACES, written by the agent as it attaches), or not at all
    /// ([`DetectLocal::None`]: ClusterIP traffic is then never masqueraded).
    pub detect_local: DetectLocal,
    /// The pod CIDRs of both families SVC4_POD_CIDRS and SVC6_POD_CIDRS hold after the load (the agent may change them later:
    /// [`Maps::set_pod_cidrs`](super::Maps::set_pod_cidrs)). Only read with
    /// [`DetectLocal::Cidr`].
    pub pod_cidrs: Vec<IpCidr>,
    /// The source address of masqueraded flows (the node's IP). None: never masquerade.
    pub masquerade_addr: Option<Ipv4Addr>,
    /// The source address of masqueraded IPv6 flows (the node's first IPv6 address; the
    /// MASQ_ADDR6_BE global). None (all zero in the global): never masquerade IPv6.
    pub masquerade_addr6: Option<Ipv6Addr>,
    /// Masquerade every translated flow (kube-proxy's --masquerade-all).
    pub masquerade_all: bool,
    /// Source ports of masqueraded flows (inclusive). Keep it apart from the node's
    /// ip_local_port_range and the NodePort range: see svc-ebpf/src/config.rs.
    pub masquerade_ports: (u16, u16),
    /// Capacities of the sizable maps.
    pub map_sizes: MapSizes,
    /// The socket programs translate pods' sockets too (`--socket-lb all`), for what needs
    /// no packet rule (svc-ebpf/src/sock.rs, "Pods"); false: only the node's own.
    pub sock_lb_pods: bool,
    /// The node's own network namespace cookie (SO_NETNS_COOKIE of the agent's): sockets
    /// of other namespaces are pods'. 0: unknown, every socket counts as the node's.
    pub host_netns_cookie: u64,
}

/// Above Linux's default ip_local_port_range (32768-60999) and the NodePort range.
pub const DEFAULT_MASQUERADE_PORTS: (u16, u16) = svc_common::MASQUERADE_PORTS;

impl Default for DatapathConfig {
    fn default() -> Self {
        DatapathConfig {
            detect_local: DetectLocal::None,
            pod_cidrs: Vec::new(),
            masquerade_addr: None,
            masquerade_addr6: None,
            masquerade_all: false,
            masquerade_ports: DEFAULT_MASQUERADE_PORTS,
            map_sizes: MapSizes::default(),
            sock_lb_pods: false,
            host_netns_cookie: 0,
        }
    }
}

impl DatapathConfig {
    /// Detect-local by these CIDRs (kube-proxy's ClusterCIDR and NodeCIDR modes); none
    /// given: no source is a pod.
    pub fn by_cidrs(cidrs: Vec<IpCidr>) -> (DetectLocal, Vec<IpCidr>) {
        if cidrs.is_empty() {
            (DetectLocal::None, cidrs)
        } else {
            (DetectLocal::Cidr, cidrs)
        }
    }
}
