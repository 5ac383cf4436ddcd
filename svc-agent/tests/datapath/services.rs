//! The Services the tables run against, and the two datapaths they are loaded on: a single
//! node with the agent's defaults (no pod CIDR: nothing is masqueraded), and node 1 of the
//! two-node lab.
use std::collections::BTreeMap;

use svc_agent::desired::{DesiredState, Ipv4Cidr};

use crate::support::*;

/// A pod on node 1 (10.244.1.0/24).
pub const LOCAL_BE: &str = "10.244.1.11:8080";
/// A pod on node 2 (10.244.2.0/24).
pub const REMOTE_BE: &str = "10.244.2.11:8080";
pub const AFFINITY_BES: [&str; 3] = ["10.244.1.11:8080", "10.244.1.12:8080", "10.244.1.13:8080"];
/// Backends of the terminating test: used by no other frontend, so the one that goes
/// terminating really gets BACKEND_STATE_TERMINATING.
pub const TERM_BES: [&str; 2] = ["10.244.1.31:8080", "10.244.1.32:8080"];

/// The single-node datapath (default config) with its ClusterIPs programmed.
pub fn single_node(tag: &str) -> Harness {
    let mut h = Harness::load(tag, &default_config());
    let report = h.sync(&single_node_services());
    assert_eq!(report.frontends_written, 6, "{report:?}");
    assert_eq!(report.backends_added, 4, "{report:?}"); // .11/TCP, .11/UDP, .12, .13
    h
}

fn single_node_services() -> DesiredState {
    let three = ["10.244.1.11:8080", "10.244.1.12:8080", "10.244.1.13:8080"];
    DesiredState {
        frontends: BTreeMap::from([
            fe("10.96.0.10:80", TCP, CIP, "one", &[LOCAL_BE], no_edit),
            fe("10.96.0.10:80", UDP, CIP, "one", &[LOCAL_BE], no_edit),
            fe("10.96.0.20:80", TCP, CIP, "three", &three, no_edit),
            // Service port = target port: DNAT rewrites the address only.
            fe(
                "10.96.0.30:8080",
                TCP,
                CIP,
                "same-port",
                &[LOCAL_BE],
                no_edit,
            ),
            fe("10.96.0.11:80", TCP, CIP, "empty", &[], no_edit),
            fe("10.96.0.11:80", UDP, CIP, "empty", &[], no_edit),
        ]),
        ..Default::default()
    }
}

/// Node 1's datapath ([`node1_fixture_config`], masquerade_all off) with
/// [`node1_services`] programmed.
pub fn node1(tag: &str) -> Harness {
    let mut h = Harness::load(tag, &node1_fixture_config(false));
    h.sync(&node1_services());
    h
}

/// Every kind of frontend and policy node 1 serves.
pub fn node1_services() -> DesiredState {
    let frontends = BTreeMap::from([
        // ClusterIP, one backend on this node.
        fe("10.96.0.10:80", TCP, CIP, "one", &[LOCAL_BE], no_edit),
        fe("10.96.0.10:80", UDP, CIP, "one", &[LOCAL_BE], no_edit),
        // ClusterIP, one backend on node 2.
        fe("10.96.0.12:80", TCP, CIP, "remote", &[REMOTE_BE], no_edit),
        // internalTrafficPolicy Local, no local endpoint.
        fe("10.96.0.13:80", TCP, CIP, "itp-none", &[REMOTE_BE], |s| {
            s.local_policy = true;
        }),
        // internalTrafficPolicy Local, one local endpoint of two.
        fe(
            "10.96.0.14:80",
            TCP,
            CIP,
            "itp-one",
            &[LOCAL_BE, REMOTE_BE],
            |s| {
                s.local_policy = true;
                s.local_backends = backends(&[LOCAL_BE], TCP);
            },
        ),
        // sessionAffinity: ClientIP, three backends.
        fe("10.96.0.15:80", TCP, CIP, "affinity", &AFFINITY_BES, |s| {
            s.affinity_timeout = Some(10800);
        }),
        // Two backends, one of which goes terminating during the test.
        fe("10.96.0.16:80", TCP, CIP, "terminating", &TERM_BES, no_edit),
        // NodePort, externalTrafficPolicy Cluster, remote backend.
        fe(
            "192.0.2.1:30000",
            TCP,
            NP,
            "np-cluster",
            &[REMOTE_BE],
            no_edit,
        ),
        // NodePort, externalTrafficPolicy Local, one local endpoint of two.
        fe(
            "192.0.2.1:30001",
            TCP,
            NP,
            "np-local",
            &[LOCAL_BE, REMOTE_BE],
            |s| {
                s.local_policy = true;
                s.local_backends = backends(&[LOCAL_BE], TCP);
            },
        ),
        // NodePort, externalTrafficPolicy Local, endpoints only on node 2.
        fe(
            "192.0.2.1:30002",
            TCP,
            NP,
            "np-local-none",
            &[REMOTE_BE],
            |s| {
                s.local_policy = true;
            },
        ),
        // NodePort without endpoints (Cluster and Local): reject.
        fe("192.0.2.1:30003", TCP, NP, "np-empty", &[], no_edit),
        fe("192.0.2.1:30004", TCP, NP, "np-local-empty", &[], |s| {
            s.local_policy = true;
        }),
        // LoadBalancer IP with loadBalancerSourceRanges.
        fe("203.0.113.10:80", TCP, LB, "lb-ranges", &[REMOTE_BE], |s| {
            s.source_ranges = vec![
                Ipv4Cidr::new(ip("10.0.0.0"), 8).into(),
                Ipv4Cidr::new(ip("192.0.2.0"), 24).into(),
            ];
        }),
    ]);
    DesiredState {
        frontends,
        ..Default::default()
    }
}
