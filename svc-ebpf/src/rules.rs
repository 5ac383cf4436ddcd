//! kube-proxy's per-flow rules that are not a backend choice, used by lb.rs for TC and XDP:
//! which new flows are masqueraded, and which destinations packets never translate.
use svc_common::{SVC_F_EXTERNAL, SVC_F_LOCAL};

use crate::config;

/// Whether a new flow to a frontend with `flags` is masqueraded (its source becomes the
/// node's address of the flow's family; the caller checks there is one), kube-proxy's rules (shared service-semantics, "Masquerade"):
/// - hairpin (the client is its own backend): always;
/// - an external address (NodePort, externalIP, LoadBalancer IP): with
///   externalTrafficPolicy Cluster, from every source; with Local never (from outside the
///   client's address is the point of the policy; pods short-circuit to the Service
///   unmasqueraded);
/// - a ClusterIP: from outside the pod CIDR when it is known, and from every source with
///   --masquerade-all.
///
/// --masquerade-all applies to ClusterIP traffic only: kube-proxy's rule matches the
/// cluster IP (`ip daddr <clusterIP> jump mark-for-masquerade` in the Service's chain,
/// which a pod short-circuited there from an external address of a Local Service does not
/// match), so an externalTrafficPolicy Local Service keeps the client's address on its
/// NodePorts, externalIPs and LoadBalancer IPs with or without it.
#[inline(always)]
pub fn masquerade(flags: u16, from_pod: bool, cidr_known: bool, hairpin: bool) -> bool {
    if hairpin {
        return true;
    }
    if flags & SVC_F_EXTERNAL != 0 {
        flags & SVC_F_LOCAL == 0
    } else {
        config::masquerade_all() || (cidr_known && !from_pod)
    }
}

/// 127.0.0.0/8 (`addr_be` in network order). A packet to a loopback address is never a
/// Service's: the frontends at 127.0.0.1 (localhost NodePorts) are for the node's own
/// processes, whose calls the socket programs translate; a packet on a real interface
/// with such a destination is a martian the kernel drops, and translating it would let a
/// neighbour reach a NodePort through 127.0.0.1 (kube-proxy's CVE-2020-8558 rule, "block
/// incoming localnet connections", is the same guard).
#[inline(always)]
pub fn is_loopback(addr_be: u32) -> bool {
    u32::from_be(addr_be) >> 24 == 127
}
