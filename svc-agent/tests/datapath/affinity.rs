//! sessionAffinity ClientIP on node 1 (10.96.0.15, three backends): every new flow of a
//! client goes to that client's backend, and clients are spread over the backends.
use std::collections::{BTreeMap, BTreeSet};

use svc_agent::packet::SYN;
use svc_common::Verdict;

use crate::services::{self, AFFINITY_BES};
use crate::support::*;

#[test]
fn session_affinity() {
    let mut h = services::node1("affinity");
    let mut per_client = BTreeMap::new();
    for c in 0..16u8 {
        let client = format!("10.244.1.{}", 100 + c);
        let mut chosen = BTreeSet::new();
        for i in 0..10u16 {
            let src = format!("{client}:{}", 44000 + i);
            let name = format!("affinity {src} -> 10.96.0.15:80");
            let out = h.expect(
                &name,
                Prog::Tc,
                &segment(&src, "10.96.0.15:80", SYN, u32::from(i)),
                TC_ACT_OK,
                Verdict::DnatNew,
            );
            let dst = dst_of(&out);
            assert!(
                AFFINITY_BES.iter().any(|b| sa(b) == dst),
                "{name}: went to {dst}"
            );
            bytes_eq(
                &name,
                &segment(&src, &dst.to_string(), SYN, u32::from(i)),
                &out,
            );
            chosen.insert(dst);
        }
        assert_eq!(
            chosen.len(),
            1,
            "session affinity: 10 flows of {client} went to {chosen:?}"
        );
        per_client.insert(client, *chosen.first().unwrap());
    }
    let distinct: BTreeSet<_> = per_client.values().collect();
    // 16 clients all given the same of 3 backends: probability 3^-15.
    assert!(
        distinct.len() > 1,
        "16 clients all went to {distinct:?}: affinity pins every client to one backend"
    );
    println!(
        "ok   session affinity: 16 clients x 10 flows, each client on one backend, {} backends used",
        distinct.len()
    );
}
