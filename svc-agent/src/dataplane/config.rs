//! The node facts the programs read as load-time globals (svc-ebpf/src/config.rs, Cilium's
//! DECLARE_CONFIG), and the capacities of the sizable maps: what [`Datapath::load`] loads
//! the programs with. Their encoding (the globals, and SVC_CONFIG for svcctl trace) is in
//! [`layout`](super::layout).
//!
//! [`Datapath::load`]: super::Datapath::load
use std::net::Ipv4Addr;

use super::MapSizes;
use crate::addr::Ipv4Cidr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatapathConfig {
    /// The cluster's pod CIDR: sources inside it are pods. None: unknown, and ClusterIP
    /// traffic is then never masqueraded.
    pub cluster_cidr: Option<Ipv4Cidr>,
    /// The source address of masqueraded flows (the node's IP). None: never masquerade.
    pub masquerade_addr: Option<Ipv4Addr>,
    /// Masquerade every translated flow (kube-proxy's --masquerade-all).
    pub masquerade_all: bool,
    /// Source ports of masqueraded flows (inclusive). Keep it apart from the node's
    /// ip_local_port_range and the NodePort range: see svc-ebpf/src/config.rs.
    pub masquerade_ports: (u16, u16),
    /// Capacities of the sizable maps.
    pub map_sizes: MapSizes,
}

/// Above Linux's default ip_local_port_range (32768-60999) and the NodePort range.
pub const DEFAULT_MASQUERADE_PORTS: (u16, u16) = svc_common::MASQUERADE_PORTS;

impl Default for DatapathConfig {
    fn default() -> Self {
        DatapathConfig {
            cluster_cidr: None,
            masquerade_addr: None,
            masquerade_all: false,
            masquerade_ports: DEFAULT_MASQUERADE_PORTS,
            map_sizes: MapSizes::default(),
        }
    }
}
