//! Addresses no frontend takes (kube-proxy nftables' `cluster-ips` set and `service-cidrs`
//! rule): which ClusterIPs are allocated, and the service CIDRs. See
//! [`compute_with_incumbents`](super::compute_with_incumbents), "Service CIDRs".
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use svc_common::ClusterIpUse;

use super::{ComputeProblem, IpCidr, NodeContext};
use crate::model::{Cluster, ObjectRef};

/// The service CIDRs the datapath drops unallocated addresses in, and where they come from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceCidrs {
    /// Sorted and deduplicated; the ones that hold an address of this node are left out
    /// (with a problem).
    /// IPv4 ones first (each family goes to its own map).
    pub cidrs: Vec<IpCidr>,
    pub from: CidrSource,
}

/// Where the service CIDRs come from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CidrSource {
    /// Neither a ServiceCIDR object nor `--service-cluster-ip-range`: nothing is dropped.
    #[default]
    None,
    /// `networking.k8s.io/v1` ServiceCIDR objects (their names).
    Objects(Vec<String>),
    /// `--service-cluster-ip-range` (no ServiceCIDR object exists).
    Flag,
}

impl fmt::Display for ServiceCidrs {
    /// `10.96.0.0/12,fd00:10:96::/112 (ServiceCIDR kubernetes)`, `10.96.0.0/12
    /// (--service-cluster-ip-range)`, `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.cidrs.is_empty() && self.from == CidrSource::None {
            return f.write_str("none");
        }
        let list: Vec<String> = self.cidrs.iter().map(ToString::to_string).collect();
        let list = if list.is_empty() {
            "no CIDR".to_string()
        } else {
            list.join(",")
        };
        match &self.from {
            CidrSource::None => f.write_str(&list),
            CidrSource::Objects(names) => write!(f, "{list} (ServiceCIDR {})", names.join(", ")),
            CidrSource::Flag => write!(f, "{list} ({FLAG})"),
        }
    }
}

/// The flag whose CIDRs are used when no ServiceCIDR object exists.
pub const FLAG: &str = "--service-cluster-ip-range";

/// Every ClusterIP (both families) of the cluster's Services with what a packet to it on
/// a port no frontend has gets: [`ClusterIpUse::Reject`], or [`ClusterIpUse::OtherProxy`] when only
/// Services another proxy owns have it. Headless and ExternalName Services have none. An
/// address of this node is left out, with a problem.
pub fn cluster_ips(
    cluster: &Cluster,
    node: &NodeContext,
    problems: &mut Vec<ComputeProblem>,
) -> BTreeMap<IpAddr, ClusterIpUse> {
    let mut out: BTreeMap<IpAddr, ClusterIpUse> = BTreeMap::new();
    for svc in cluster.services.values() {
        let use_ = if svc.proxy_name_label.is_some() {
            ClusterIpUse::OtherProxy
        } else {
            ClusterIpUse::Reject
        };
        for ip in svc.cluster_ips.iter().copied() {
            if node.node_ips.contains(&ip) {
                problems.push(ComputeProblem::about(
                    "Service",
                    svc.id.clone(),
                    format!(
                        "ClusterIP {ip} is an address of this node: ports no Service has are not rejected on it"
                    ),
                ));
                continue;
            }
            // Another proxy's Service passes: it may take the packet after us.
            let entry = out.entry(ip).or_insert(use_);
            if use_ == ClusterIpUse::OtherProxy {
                *entry = use_;
            }
        }
    }
    out
}

/// The service CIDRs (both families): those of every ServiceCIDR object when one exists
/// (even with an empty `spec.cidrs`), else `node.service_cluster_ip_range`, else none. A CIDR that holds one of
/// this node's addresses is left out with a problem: the datapath sees packets to the node
/// itself, which kube-proxy's rule (forward and output paths only) never does, so it would
/// drop the node's own traffic.
pub fn service_cidrs(
    cluster: &Cluster,
    node: &NodeContext,
    problems: &mut Vec<ComputeProblem>,
) -> ServiceCidrs {
    let mut wanted: Vec<(IpCidr, &'static str, ObjectRef)> = Vec::new();
    let from = if !cluster.service_cidrs.is_empty() {
        for (id, cidrs) in &cluster.service_cidrs {
            wanted.extend(cidrs.iter().map(|c| (*c, "ServiceCIDR", id.clone())));
        }
        CidrSource::Objects(
            cluster
                .service_cidrs
                .keys()
                .map(|id| id.name.clone())
                .collect(),
        )
    } else if !node.service_cluster_ip_range.is_empty() {
        let flag = ObjectRef::new("", FLAG);
        wanted.extend(
            node.service_cluster_ip_range
                .iter()
                .map(|c| (*c, "flag", flag.clone())),
        );
        CidrSource::Flag
    } else {
        CidrSource::None
    };
    let mut cidrs = Vec::new();
    for (cidr, kind, id) in wanted {
        let on_node = node.node_ips.iter().find(|ip| cidr.contains(**ip));
        match on_node {
            Some(ip) => problems.push(ComputeProblem::about(
                kind,
                id,
                format!(
                    "service CIDR {cidr} skipped: it holds {ip}, an address of this node (its own traffic would be dropped)"
                ),
            )),
            None => cidrs.push(cidr),
        }
    }
    cidrs.sort();
    cidrs.dedup();
    ServiceCidrs { cidrs, from }
}
