//! A terminating backend on node 1 (10.96.0.16, two backends): after a re-sync that moves
//! the backend of an established flow to terminating, the flow and its replies stay on it
//! and every new flow goes to the other backend.
use svc_agent::packet::SYN;
use svc_common::Verdict;

use crate::services::{self, TERM_BES};
use crate::support::*;

#[test]
fn terminating_backend_keeps_its_flow() {
    use Prog::Tc;
    let mut h = services::node1("terminating");
    let mut desired = services::node1_services();
    let client = "10.244.1.20:45000";
    let out = h.expect(
        "terminating: SYN",
        Tc,
        &segment(client, "10.96.0.16:80", SYN, 1),
        TC_ACT_OK,
        Verdict::DnatNew,
    );
    let x = dst_of(&out);
    assert!(TERM_BES.iter().any(|b| sa(b) == x), "went to {x}");
    bytes_eq(
        "terminating: SYN",
        &segment(client, &x.to_string(), SYN, 1),
        &out,
    );
    let other = TERM_BES.iter().map(|b| sa(b)).find(|b| *b != x).unwrap();

    // Re-sync with X moved from backends to terminating.
    let term = desired
        .frontends
        .iter_mut()
        .find(|(f, _)| f.vip == ip("10.96.0.16"))
        .map(|(_, s)| s)
        .unwrap();
    term.backends = backends(&[&other.to_string()], TCP);
    term.terminating = backends(&[&x.to_string()], TCP);
    h.sync(&desired);

    let out = h.expect(
        "terminating: next packet of the flow",
        Tc,
        &tcp_data(client, "10.96.0.16:80", 2, 1),
        TC_ACT_OK,
        Verdict::DnatEstablished,
    );
    bytes_eq(
        "terminating: next packet of the flow keeps X",
        &tcp_data(client, &x.to_string(), 2, 1),
        &out,
    );
    let out = h.expect(
        "terminating: reply from X",
        Tc,
        &synack(&x.to_string(), client, 5, 2),
        TC_ACT_OK,
        Verdict::RevNat,
    );
    bytes_eq(
        "terminating: reply from X",
        &synack("10.96.0.16:80", client, 5, 2),
        &out,
    );
    for i in 0..20u16 {
        let src = format!("10.244.1.20:{}", 45100 + i);
        let name = format!("terminating: new flow {src}");
        let out = h.expect(
            &name,
            Tc,
            &segment(&src, "10.96.0.16:80", SYN, u32::from(i)),
            TC_ACT_OK,
            Verdict::DnatNew,
        );
        bytes_eq(
            &name,
            &segment(&src, &other.to_string(), SYN, u32::from(i)),
            &out,
        );
    }
    println!("ok   terminating: the flow stays on {x}, 20 new flows all to {other}");
}

/// A backend removed from the Service (not terminating: gone from the slices): its TCP
/// connection keeps going to the address it was given, as netfilter's conntrack entry does
/// (a pod that left the Service but still runs keeps serving it; another backend could
/// only answer with a RST), while a UDP flow moves to a backend of the new set at its next
/// packet, as kube-proxy clears a removed endpoint's UDP entries.
#[test]
fn a_removed_backend_keeps_its_tcp_connection_and_loses_its_udp_flow() {
    use Prog::Tc;
    let mut h = services::node1("removed");
    let mut desired = services::node1_services();
    let (tcp_client, udp_client) = ("10.244.1.20:45500", "10.244.1.20:45501");
    let out = h.expect(
        "removed: SYN",
        Tc,
        &segment(tcp_client, "10.96.0.16:80", SYN, 1),
        TC_ACT_OK,
        Verdict::DnatNew,
    );
    let x = dst_of(&out);
    let other = TERM_BES.iter().map(|b| sa(b)).find(|b| *b != x).unwrap();
    // A UDP port beside the TCP one, with X as its only backend.
    let term = desired
        .frontends
        .iter_mut()
        .find(|(f, _)| f.vip == ip("10.96.0.16"))
        .map(|(f, s)| (*f, s.clone()))
        .unwrap();
    let udp_frontend = svc_agent::desired::Frontend {
        proto: UDP,
        ..term.0
    };
    let mut udp_state = term.1.clone();
    udp_state.backends = backends(&[&x.to_string()], UDP);
    desired.frontends.insert(udp_frontend, udp_state);
    h.sync(&desired);
    let out = h.expect(
        "removed: UDP to the one backend",
        Tc,
        &datagram(udp_client, "10.96.0.16:80", b"one", false),
        TC_ACT_OK,
        Verdict::DnatNew,
    );
    bytes_eq(
        "removed: UDP to the one backend",
        &datagram(udp_client, &x.to_string(), b"one", false),
        &out,
    );

    // X leaves both Services; the UDP frontend gets the other backend.
    for (f, s) in desired.frontends.iter_mut() {
        if f.vip == ip("10.96.0.16") {
            s.backends = backends(&[&other.to_string()], f.proto);
            s.terminating.clear();
        }
    }
    h.sync(&desired);

    let out = h.expect(
        "removed: next TCP segment",
        Tc,
        &tcp_data(tcp_client, "10.96.0.16:80", 2, 1),
        TC_ACT_OK,
        Verdict::DnatEstablished,
    );
    bytes_eq(
        "removed: the TCP connection stays on its address",
        &tcp_data(tcp_client, &x.to_string(), 2, 1),
        &out,
    );
    let out = h.expect(
        "removed: next UDP datagram",
        Tc,
        &datagram(udp_client, "10.96.0.16:80", b"two", false),
        TC_ACT_OK,
        Verdict::DnatNew,
    );
    bytes_eq(
        "removed: the UDP flow moved to the other backend",
        &datagram(udp_client, &other.to_string(), b"two", false),
        &out,
    );
    println!("ok   removed: TCP stays on {x}, UDP moved to {other}");
}
