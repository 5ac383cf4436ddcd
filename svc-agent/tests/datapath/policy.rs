//! Traffic policies on node 1: NodePort with externalTrafficPolicy Cluster (masqueraded,
//! from outside and from a pod) and Local (client address kept, local endpoints only, DROP
//! without one; from a pod every endpoint), internalTrafficPolicy Local (local endpoints
//! only, DROP without one), and a localhost NodePort frontend (127.0.0.1), which packets
//! never use.
use std::collections::BTreeSet;

use svc_agent::packet::SYN;
use svc_common::Verdict;

use crate::services::{self, LOCAL_BE, REMOTE_BE};
use crate::support::*;

fn cases() -> Vec<Case> {
    use Output::{Exact, Unchanged};
    use Prog::{Tc, Xdp};
    let n = node;
    vec![
        // --- NodePort 192.0.2.1:30000, ETP Cluster, remote backend -------------------------
        case(
            "xdp: outside -> NodePort 192.0.2.1:30000 (Cluster): DNAT + SNAT",
            Xdp,
            segment("192.0.2.100:50010", &n(30000), SYN, 6000),
            XDP_PASS,
            Exact(segment(&n(50010), REMOTE_BE, SYN, 6000)),
            Verdict::DnatNew,
        ),
        case(
            "xdp: NodePort reply on eth0 -> 192.0.2.1:30000 > 192.0.2.100:50010",
            Xdp,
            synack(REMOTE_BE, &n(50010), 9300, 6001),
            XDP_PASS,
            Exact(synack(&n(30000), "192.0.2.100:50010", 9300, 6001)),
            Verdict::RevNat,
        ),
        case(
            "tc: pod -> NodePort (Cluster): DNAT + SNAT (external, policy Cluster)",
            Tc,
            segment("10.244.1.20:40010", &n(30000), SYN, 6100),
            TC_ACT_OK,
            Exact(segment(&n(40010), REMOTE_BE, SYN, 6100)),
            Verdict::DnatNew,
        ),
        // --- NodePort 192.0.2.1:30001, ETP Local ------------------------------------------
        case(
            "xdp: outside -> NodePort (Local): local backend, client address kept",
            Xdp,
            segment("192.0.2.100:50020", &n(30001), SYN, 7000),
            XDP_PASS,
            Exact(segment("192.0.2.100:50020", LOCAL_BE, SYN, 7000)),
            Verdict::DnatNew,
        ),
        case(
            "tc: ETP Local reply -> from 192.0.2.1:30001, destination untouched",
            Tc,
            synack(LOCAL_BE, "192.0.2.100:50020", 9400, 7001),
            TC_ACT_OK,
            Exact(synack(&n(30001), "192.0.2.100:50020", 9400, 7001)),
            Verdict::RevNat,
        ),
        case(
            "tc: outside -> NodePort (Local) via TC: local backend, no SNAT",
            Tc,
            segment("198.51.100.7:50021", &n(30001), SYN, 7100),
            TC_ACT_OK,
            Exact(segment("198.51.100.7:50021", LOCAL_BE, SYN, 7100)),
            Verdict::DnatNew,
        ),
        // 192.0.2.1:30002: ETP Local, endpoints only on node 2.
        case(
            "xdp: outside -> NodePort (Local, no local endpoint): DROP",
            Xdp,
            segment("192.0.2.100:50022", &n(30002), SYN, 7200),
            XDP_DROP,
            Unchanged,
            Verdict::DropNoLocalBackend,
        ),
        case(
            "tc: outside -> NodePort (Local, no local endpoint): DROP",
            Tc,
            segment("192.0.2.100:50023", &n(30002), SYN, 7300),
            TC_ACT_SHOT,
            Unchanged,
            Verdict::DropNoLocalBackend,
        ),
        case(
            "tc: pod -> NodePort (Local, no local endpoint): remote backend, no SNAT",
            Tc,
            segment("10.244.1.20:40023", &n(30002), SYN, 7400),
            TC_ACT_OK,
            Exact(segment("10.244.1.20:40023", REMOTE_BE, SYN, 7400)),
            Verdict::DnatNew,
        ),
        // --- internalTrafficPolicy Local ----------------------------------------------------
        case(
            "tc: pod -> ClusterIP (ITP Local, no local endpoint): DROP",
            Tc,
            segment("10.244.1.20:40030", "10.96.0.13:80", SYN, 8000),
            TC_ACT_SHOT,
            Unchanged,
            Verdict::DropNoLocalBackend,
        ),
        case(
            "xdp: outside -> ClusterIP (ITP Local, no local endpoint): DROP",
            Xdp,
            segment("192.0.2.100:50030", "10.96.0.13:80", SYN, 8100),
            XDP_DROP,
            Unchanged,
            Verdict::DropNoLocalBackend,
        ),
        case(
            "xdp: outside -> ClusterIP (ITP Local, one local): local one, still SNAT",
            Xdp,
            segment("192.0.2.100:50031", "10.96.0.14:80", SYN, 8200),
            XDP_PASS,
            Exact(segment(&n(50031), LOCAL_BE, SYN, 8200)),
            Verdict::DnatNew,
        ),
    ]
}

#[test]
fn policy_table() {
    let mut h = services::node1("policy");
    h.run_table(&cases());
}

/// ETP Local from a pod: all endpoints, no SNAT.
#[test]
fn etp_local_from_a_pod_uses_every_endpoint() {
    let mut h = services::node1("etp-local-pod");
    let mut seen = BTreeSet::new();
    for i in 0..20u16 {
        let client = format!("10.244.1.20:{}", 43000 + i);
        let name = format!("pod {client} -> NodePort (Local)");
        let out = h.expect(
            &name,
            Prog::Tc,
            &segment(&client, &node(30001), SYN, u32::from(i)),
            TC_ACT_OK,
            Verdict::DnatNew,
        );
        let dst = dst_of(&out);
        assert!(
            dst == sa(LOCAL_BE) || dst == sa(REMOTE_BE),
            "{name}: went to {dst}"
        );
        bytes_eq(
            &name,
            &segment(&client, &dst.to_string(), SYN, u32::from(i)),
            &out,
        );
        seen.insert(dst);
    }
    // 20 picks out of 2 all on one: probability 2^-19.
    assert_eq!(
        seen.len(),
        2,
        "ETP Local from a pod must use every endpoint, saw only {seen:?}"
    );
    println!("ok   ETP Local from a pod: 20 flows over both endpoints, none masqueraded");
}

/// ITP Local with one local endpoint: always it.
#[test]
fn itp_local_uses_the_local_endpoint() {
    let mut h = services::node1("itp-local");
    for i in 0..10u16 {
        let client = format!("10.244.1.20:{}", 43100 + i);
        let name = format!("pod {client} -> ClusterIP (ITP Local, one local)");
        let out = h.expect(
            &name,
            Prog::Tc,
            &segment(&client, "10.96.0.14:80", SYN, u32::from(i)),
            TC_ACT_OK,
            Verdict::DnatNew,
        );
        bytes_eq(&name, &segment(&client, LOCAL_BE, SYN, u32::from(i)), &out);
    }
    println!("ok   ITP Local: 10 flows from a pod all to the local endpoint, no SNAT");
}

/// A localhost NodePort frontend (127.0.0.1:30000, for the node's own processes through
/// the socket programs) is never used for a packet: one that arrives with a 127/8
/// destination (a martian the kernel drops, or a neighbour trying to reach a NodePort
/// through 127.0.0.1, cf. CVE-2020-8558) is passed untouched, through XDP and TC.
#[test]
fn packets_to_a_localhost_node_port_are_not_translated() {
    use Output::Unchanged;
    use Prog::{Tc, Xdp};
    let mut h = services::node1("localhost-np");
    let mut desired = services::node1_services();
    let (f, s) = fe(
        "127.0.0.1:30000",
        TCP,
        NP,
        "np-cluster",
        &[REMOTE_BE],
        no_edit,
    );
    desired.frontends.insert(f, s);
    let (f, s) = fe(
        "127.0.0.1:30000",
        UDP,
        NP,
        "np-cluster",
        &[REMOTE_BE],
        no_edit,
    );
    desired.frontends.insert(f, s);
    h.sync(&desired);
    h.run_table(&[
        case(
            "xdp: outside -> 127.0.0.1:30000 (localhost NodePort): not translated",
            Xdp,
            segment("192.0.2.100:50040", "127.0.0.1:30000", SYN, 100),
            XDP_PASS,
            Unchanged,
            Verdict::PassNotService,
        ),
        case(
            "tc: outside -> 127.0.0.1:30000 (localhost NodePort): not translated",
            Tc,
            segment("192.0.2.100:50041", "127.0.0.1:30000", SYN, 200),
            TC_ACT_OK,
            Unchanged,
            Verdict::PassNotService,
        ),
        case(
            "tc: pod -> 127.0.0.1:30000 UDP: not translated",
            Tc,
            datagram("10.244.1.20:40040", "127.0.0.1:30000", b"lo", false),
            TC_ACT_OK,
            Unchanged,
            Verdict::PassNotService,
        ),
        case(
            "xdp: outside -> 127.0.0.5:30000: not translated",
            Xdp,
            segment("192.0.2.100:50042", "127.0.0.5:30000", SYN, 300),
            XDP_PASS,
            Unchanged,
            Verdict::PassNotService,
        ),
        // The same NodePort on the node's address is translated as ever.
        case(
            "xdp: outside -> 192.0.2.1:30000: DNAT + SNAT",
            Xdp,
            segment("192.0.2.100:50043", &node(30000), SYN, 400),
            XDP_PASS,
            Output::Exact(segment(&node(50043), REMOTE_BE, SYN, 400)),
            Verdict::DnatNew,
        ),
    ]);
}
