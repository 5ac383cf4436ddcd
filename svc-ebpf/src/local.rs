//! Detect-local: whether a new flow's source is a pod, the test kube-proxy's masquerade
//! rule for ClusterIPs and the externalTrafficPolicy short-circuit depend on. kube-proxy's
//! four modes come down to two tests (DETECT_LOCAL, set by the agent):
//! - by address (ClusterCIDR, NodeCIDR): the source is inside one of SVC4_POD_CIDRS
//!   (SVC6_POD_CIDRS for IPv6; an LPM trie, so any number of CIDRs costs one lookup);
//! - by interface (InterfaceNamePrefix, BridgeInterface): the packet entered through an
//!   interface listed in SVC_POD_IFACES (the agent lists the pod interfaces it attached
//!   to, and the pod bridge).
//!
//! Only new flows ask (established ones keep what they were given), so the lookup costs
//! nothing per packet of an established flow.
use svc_common::DetectLocal;

use crate::{config, family::Family, maps::SVC_POD_IFACES, parse::Packet};

/// (the programs can tell pods at all, the packet's source is a pod).
#[inline(always)]
pub fn pod_source<A: Family>(pkt: &Packet<A>) -> (bool, bool) {
    let mode = config::detect_local();
    if mode == DetectLocal::Cidr.raw() {
        (true, pkt.saddr.in_pod_cidrs())
    } else if mode == DetectLocal::Interface.raw() {
        // SAFETY: the value is not kept.
        (true, unsafe { SVC_POD_IFACES.get(&pkt.ifindex) }.is_some())
    } else {
        (false, false)
    }
}
