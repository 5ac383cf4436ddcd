//! loadBalancerSourceRanges on node 1's LoadBalancer IP 203.0.113.10 (ranges 10.0.0.0/8
//! and 192.0.2.0/24): sources inside are translated (TC and XDP) and their replies reverse
//! translated, sources outside are dropped (also just past a range's end).
use svc_agent::packet::SYN;
use svc_common::Verdict;

use crate::services::{self, REMOTE_BE};
use crate::support::*;

fn cases() -> Vec<Case> {
    use Output::{Exact, Unchanged};
    use Prog::{Tc, Xdp};
    let n = node;
    vec![
        case(
            "tc: 192.0.2.100 (in 192.0.2.0/24) -> LB IP: DNAT + SNAT",
            Tc,
            segment("192.0.2.100:50050", "203.0.113.10:80", SYN, 10_000),
            TC_ACT_OK,
            Exact(segment(&n(50050), REMOTE_BE, SYN, 10_000)),
            Verdict::DnatNew,
        ),
        case(
            "xdp: LB reply on eth0 -> 203.0.113.10:80 > 192.0.2.100:50050",
            Xdp,
            synack(REMOTE_BE, &n(50050), 9500, 10_001),
            XDP_PASS,
            Exact(synack("203.0.113.10:80", "192.0.2.100:50050", 9500, 10_001)),
            Verdict::RevNat,
        ),
        case(
            "xdp: 192.0.2.100 (in 192.0.2.0/24) -> LB IP: DNAT + SNAT",
            Xdp,
            segment("192.0.2.100:50051", "203.0.113.10:80", SYN, 10_100),
            XDP_PASS,
            Exact(segment(&n(50051), REMOTE_BE, SYN, 10_100)),
            Verdict::DnatNew,
        ),
        case(
            "tc: 10.1.2.3 (in 10.0.0.0/8) -> LB IP: allowed",
            Tc,
            segment("10.1.2.3:50052", "203.0.113.10:80", SYN, 10_200),
            TC_ACT_OK,
            Exact(segment(&n(50052), REMOTE_BE, SYN, 10_200)),
            Verdict::DnatNew,
        ),
        case(
            "tc: 198.51.100.7 (outside the ranges) -> LB IP: DROP",
            Tc,
            segment("198.51.100.7:50053", "203.0.113.10:80", SYN, 10_300),
            TC_ACT_SHOT,
            Unchanged,
            Verdict::DropSourceRange,
        ),
        case(
            "xdp: 198.51.100.7 (outside the ranges) -> LB IP: DROP",
            Xdp,
            segment("198.51.100.7:50054", "203.0.113.10:80", SYN, 10_400),
            XDP_DROP,
            Unchanged,
            Verdict::DropSourceRange,
        ),
        case(
            "xdp: 192.0.3.1 (just past 192.0.2.0/24) -> LB IP: DROP",
            Xdp,
            segment("192.0.3.1:50055", "203.0.113.10:80", SYN, 10_500),
            XDP_DROP,
            Unchanged,
            Verdict::DropSourceRange,
        ),
    ]
}

#[test]
fn source_ranges_table() {
    let mut h = services::node1("source-ranges");
    h.run_table(&cases());
}
