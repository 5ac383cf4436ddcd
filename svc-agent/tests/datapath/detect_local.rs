//! Detect-local (kube-proxy's --detect-local-mode, svc-ebpf/src/local.rs): which new flows
//! come from pods, as ClusterIP masquerade and the externalTrafficPolicy Local
//! short-circuit see them. By address: several pod CIDRs (ClusterCIDR with more than one
//! --cluster-cidr, NodeCIDR with several podCIDRs), and a change of them while loaded (the
//! Node's podCIDRs followed). By interface (InterfaceNamePrefix, BridgeInterface): the
//! interface the packet entered through is in SVC_POD_IFACES, whatever its source address.
//! BPF_PROG_TEST_RUN runs the programs on the loopback device, so "entered through a pod
//! interface" is "lo is listed" here.
use std::collections::{BTreeMap, BTreeSet};

use svc_agent::dataplane::{DatapathConfig, DetectLocal};
use svc_agent::desired::{DesiredState, Ipv4Cidr};
use svc_agent::packet::SYN;
use svc_common::Verdict;

use crate::services::{LOCAL_BE, REMOTE_BE};
use crate::support::*;

fn services() -> DesiredState {
    DesiredState {
        frontends: BTreeMap::from([
            fe("10.96.0.10:80", TCP, CIP, "one", &[LOCAL_BE], no_edit),
            // externalTrafficPolicy Local, endpoints only on node 2: from outside DROP, from
            // a pod every endpoint, unmasqueraded.
            fe(
                "192.0.2.1:30002",
                TCP,
                NP,
                "np-local-none",
                &[REMOTE_BE],
                |s| s.local_policy = true,
            ),
        ]),
        ..Default::default()
    }
}

fn config(detect_local: DetectLocal, pod_cidrs: Vec<Ipv4Cidr>) -> DatapathConfig {
    DatapathConfig {
        detect_local,
        pod_cidrs: pod_cidrs.into_iter().map(Into::into).collect(),
        masquerade_addr: Some(ip(NODE_IP)),
        masquerade_ports: (30000, 65535),
        ..Default::default()
    }
}

fn cidr(s: &str) -> Ipv4Cidr {
    s.parse().unwrap()
}

fn syn(src: &str, dst: &str) -> Vec<u8> {
    segment(src, dst, SYN, 1)
}

/// A ClusterIP SYN from `src`: DNAT, and SNAT to the node when `masqueraded`.
fn to_clusterip(name: &'static str, prog: Prog, src: &str, masqueraded: bool) -> Case {
    let port = sa(src).port();
    let from = if masqueraded {
        node(port)
    } else {
        src.to_string()
    };
    let ret = if prog == Prog::Tc {
        TC_ACT_OK
    } else {
        XDP_PASS
    };
    case(
        name,
        prog,
        syn(src, "10.96.0.10:80"),
        ret,
        Output::Exact(syn(&from, LOCAL_BE)),
        Verdict::DnatNew,
    )
}

#[test]
fn several_pod_cidrs_and_a_change_of_them() {
    let cidrs = vec![cidr("10.244.0.0/16"), cidr("10.200.0.0/16")];
    let mut h = Harness::load("detect-cidrs", &config(DetectLocal::Cidr, cidrs.clone()));
    h.sync(&services());
    assert_eq!(h.maps.read_pod_cidrs().unwrap(), {
        let mut c: Vec<svc_agent::addr::IpCidr> = cidrs.iter().copied().map(Into::into).collect();
        c.sort();
        c
    });
    h.run_table(&[
        to_clusterip(
            "tc: pod in the first CIDR: not masqueraded",
            Prog::Tc,
            "10.244.1.20:40100",
            false,
        ),
        to_clusterip(
            "tc: pod in the second CIDR: not masqueraded",
            Prog::Tc,
            "10.200.1.20:40101",
            false,
        ),
        to_clusterip(
            "xdp: pod of another node in the second CIDR: not masqueraded",
            Prog::Xdp,
            "10.200.2.20:40102",
            false,
        ),
        to_clusterip(
            "tc: outside both: masqueraded",
            Prog::Tc,
            "192.0.2.100:40103",
            true,
        ),
        case(
            "tc: ETP Local NodePort from a pod in the second CIDR: every endpoint, unmasqueraded",
            Prog::Tc,
            syn("10.200.1.20:40104", "192.0.2.1:30002"),
            TC_ACT_OK,
            Output::Exact(syn("10.200.1.20:40104", REMOTE_BE)),
            Verdict::DnatNew,
        ),
        case(
            "xdp: ETP Local NodePort from outside, no local endpoint: dropped",
            Prog::Xdp,
            syn("192.0.2.100:40105", "192.0.2.1:30002"),
            XDP_DROP,
            Output::Unchanged,
            Verdict::DropNoLocalBackend,
        ),
    ]);
    // The Node's podCIDRs change (NodeCIDR): the second range is no pod range any more.
    assert!(
        h.maps
            .set_pod_cidrs(&[cidr("10.244.0.0/16").into()])
            .unwrap()
    );
    assert!(
        !h.maps
            .set_pod_cidrs(&[cidr("10.244.0.0/16").into()])
            .unwrap()
    );
    h.run_table(&[
        to_clusterip(
            "tc: after the change, the second CIDR is outside: masqueraded",
            Prog::Tc,
            "10.200.1.21:40106",
            true,
        ),
        to_clusterip(
            "tc: the first still a pod range",
            Prog::Tc,
            "10.244.1.21:40107",
            false,
        ),
    ]);
}

#[test]
fn by_interface_the_ingress_interface_decides() {
    let mut h = Harness::load("detect-iface", &config(DetectLocal::Interface, vec![]));
    h.sync(&services());
    let lo = nix::net::if_::if_nametoindex("lo").expect("lo's ifindex");
    h.run_table(&[
        to_clusterip(
            "tc: no pod interface listed: a pod address is masqueraded",
            Prog::Tc,
            "10.244.1.20:40200",
            true,
        ),
        case(
            "xdp: ETP Local NodePort, not from a pod interface: dropped",
            Prog::Xdp,
            syn("10.244.1.20:40201", "192.0.2.1:30002"),
            XDP_DROP,
            Output::Unchanged,
            Verdict::DropNoLocalBackend,
        ),
    ]);
    assert!(h.maps.set_pod_ifaces(&BTreeSet::from([lo])).unwrap());
    assert_eq!(h.maps.read_pod_ifaces().unwrap(), BTreeSet::from([lo]));
    h.run_table(&[
        to_clusterip(
            "tc: through a pod interface: not masqueraded",
            Prog::Tc,
            "10.244.1.20:40202",
            false,
        ),
        // The address does not matter, only the interface (kube-proxy's `iifname`).
        to_clusterip(
            "tc: any address through a pod interface: not masqueraded",
            Prog::Tc,
            "192.0.2.100:40203",
            false,
        ),
        case(
            "tc: ETP Local NodePort through a pod interface: every endpoint, unmasqueraded",
            Prog::Tc,
            syn("10.244.1.20:40204", "192.0.2.1:30002"),
            TC_ACT_OK,
            Output::Exact(syn("10.244.1.20:40204", REMOTE_BE)),
            Verdict::DnatNew,
        ),
    ]);
    assert!(h.maps.set_pod_ifaces(&BTreeSet::new()).unwrap());
    h.run_table(&[to_clusterip(
        "tc: the interface gone from the list: masqueraded again",
        Prog::Tc,
        "10.244.1.20:40205",
        true,
    )]);
}

#[test]
fn a_cidr_test_ignores_the_interfaces_and_no_test_masquerades_no_clusterip() {
    let mut h = Harness::load("detect-none", &config(DetectLocal::None, vec![]));
    h.sync(&services());
    let lo = nix::net::if_::if_nametoindex("lo").expect("lo's ifindex");
    h.maps.set_pod_ifaces(&BTreeSet::from([lo])).unwrap();
    h.maps
        .set_pod_cidrs(&[cidr("10.244.0.0/16").into()])
        .unwrap();
    // Pods cannot be told apart: ClusterIP traffic is never masqueraded (kube-proxy's
    // no-op detector), whatever the maps hold.
    h.run_table(&[
        to_clusterip("tc: detect-local none: outside source not masqueraded", Prog::Tc, "192.0.2.100:40300", false),
        case(
            "tc: detect-local none: ETP Local NodePort from a pod address counts as outside: dropped",
            Prog::Tc,
            syn("10.244.1.20:40301", "192.0.2.1:30002"),
            TC_ACT_SHOT,
            Output::Unchanged,
            Verdict::DropNoLocalBackend,
        ),
    ]);
    drop(h);
    let mut h = Harness::load(
        "detect-cidr-only",
        &config(DetectLocal::Cidr, vec![cidr("10.244.0.0/16")]),
    );
    h.sync(&services());
    h.maps.set_pod_ifaces(&BTreeSet::from([lo])).unwrap();
    h.run_table(&[to_clusterip(
        "tc: by address, a listed interface does not make an outside source a pod",
        Prog::Tc,
        "192.0.2.100:40302",
        true,
    )]);
}
