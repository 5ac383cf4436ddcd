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
