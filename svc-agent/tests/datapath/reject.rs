//! Services without endpoints: TC answers TCP with a RST (sequence numbers per RFC 9293)
//! and UDP with an ICMP port unreachable, never answers a RST, drops UDP with IPv4 options;
//! XDP passes them to TC. On the single-node ClusterIP, then on node 1's NodePorts
//! (Cluster and Local: no endpoints anywhere is REJECT, not DROP).
use svc_agent::packet::{ACK, FIN, PSH, RST, SYN};
use svc_common::Verdict;

use crate::support::*;
use crate::{conntrack, services};

/// To 10.96.0.11:80 (TCP and UDP), which has no endpoints.
fn clusterip_cases() -> Vec<Case> {
    use Output::{Exact, Unchanged};
    use Prog::{Tc, Xdp};
    let svc = "10.96.0.11:80";

    let syn = tcp("10.244.1.20:40020", svc).flags(SYN).seq(4242).build();
    // An ACK segment with payload: the RST takes its sequence number from the ACK field and
    // the frame shrinks from 14+20+20+100 to 54 bytes.
    let ack = tcp("10.244.1.20:40021", svc)
        .flags(PSH | ACK)
        .seq(9000)
        .ack(0xdead_beef)
        .payload(&[0x5a; 100])
        .build();
    // A FIN without ACK carrying 10 bytes: ack = seq + 10 + 1 (FIN counts).
    let fin = tcp("10.244.1.20:40022", svc)
        .flags(FIN)
        .seq(100)
        .payload(&[1; 10])
        .build();
    let rst = tcp("10.244.1.20:40023", svc).flags(RST).seq(5).build();
    let plain_ack = tcp("10.244.1.20:40027", svc)
        .flags(ACK)
        .seq(1)
        .ack(77)
        .build();
    // TCP options (data offset 8) are header, not payload: ack = seq + 1.
    let syn_tcpopts = tcp("10.244.1.20:40028", svc)
        .flags(SYN)
        .seq(0xffff_ffff)
        .tcp_options(&[
            2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ])
        .build();
    // IPv4 options move the TCP header; the RST has none.
    let syn_ipopts = tcp("10.244.1.20:40029", svc)
        .flags(SYN)
        .seq(10)
        .ip_options(&[1, 1, 1, 1])
        .build();
    // A 54-byte SYN padded to the Ethernet minimum of 60: the padding is not payload.
    let syn_padded = tcp("10.244.1.20:40019", svc)
        .flags(SYN)
        .seq(500)
        .pad_to(60)
        .build();
    let udp_dns = udp("10.244.1.20:40024", svc).payload(b"dns?").build();
    let udp_icmp = expected_port_unreachable(ip("10.96.0.11"), ip("10.244.1.20"), &udp_dns);
    // A bare UDP header (42 bytes): the reply grows the frame to 70 bytes.
    let udp_bare = udp("10.244.1.20:40025", svc).build();
    let udp_bare_icmp = expected_port_unreachable(ip("10.96.0.11"), ip("10.244.1.20"), &udp_bare);
    let udp_opts = udp("10.244.1.20:40026", svc)
        .ip_options(&[1, 1, 1, 1])
        .payload(b"x")
        .build();

    vec![
        case(
            "tc: SYN to 10.96.0.11 (no endpoints) -> RST|ACK",
            Tc,
            syn,
            TC_ACT_REDIRECT,
            Exact(expected_rst(svc, "10.244.1.20:40020", 0, 4243, RST | ACK)),
            Verdict::RejectTcpRst,
        ),
        case(
            "tc: ACK with payload to 10.96.0.11 -> RST seq=ack",
            Tc,
            ack,
            TC_ACT_REDIRECT,
            Exact(expected_rst(svc, "10.244.1.20:40021", 0xdead_beef, 0, RST)),
            Verdict::RejectTcpRst,
        ),
        case(
            "tc: FIN with payload to 10.96.0.11 -> RST|ACK ack=seq+len+1",
            Tc,
            fin,
            TC_ACT_REDIRECT,
            Exact(expected_rst(svc, "10.244.1.20:40022", 0, 111, RST | ACK)),
            Verdict::RejectTcpRst,
        ),
        case(
            "tc: pure ACK to 10.96.0.11 -> RST seq=ack",
            Tc,
            plain_ack,
            TC_ACT_REDIRECT,
            Exact(expected_rst(svc, "10.244.1.20:40027", 77, 0, RST)),
            Verdict::RejectTcpRst,
        ),
        case(
            "tc: SYN with TCP options to 10.96.0.11 -> ack=seq+1 (wraps)",
            Tc,
            syn_tcpopts,
            TC_ACT_REDIRECT,
            Exact(expected_rst(svc, "10.244.1.20:40028", 0, 0, RST | ACK)),
            Verdict::RejectTcpRst,
        ),
        case(
            "tc: SYN with IPv4 options to 10.96.0.11 -> RST without options",
            Tc,
            syn_ipopts,
            TC_ACT_REDIRECT,
            Exact(expected_rst(svc, "10.244.1.20:40029", 0, 11, RST | ACK)),
            Verdict::RejectTcpRst,
        ),
        case(
            "tc: SYN padded to 60 bytes to 10.96.0.11 -> 54-byte RST",
            Tc,
            syn_padded,
            TC_ACT_REDIRECT,
            Exact(expected_rst(svc, "10.244.1.20:40019", 0, 501, RST | ACK)),
            Verdict::RejectTcpRst,
        ),
        case(
            "tc: RST to 10.96.0.11 is not answered",
            Tc,
            rst,
            TC_ACT_SHOT,
            Unchanged,
            Verdict::DropNoBackend,
        ),
        case(
            "tc: UDP to 10.96.0.11 -> ICMP port unreachable",
            Tc,
            udp_dns,
            TC_ACT_REDIRECT,
            Exact(udp_icmp),
            Verdict::RejectIcmp,
        ),
        case(
            "tc: bare UDP header to 10.96.0.11 -> ICMP (frame grows)",
            Tc,
            udp_bare,
            TC_ACT_REDIRECT,
            Exact(udp_bare_icmp),
            Verdict::RejectIcmp,
        ),
        case(
            "tc: UDP with IPv4 options to 10.96.0.11 -> dropped",
            Tc,
            udp_opts,
            TC_ACT_SHOT,
            Unchanged,
            Verdict::DropRewriteFailed,
        ),
        case(
            "xdp: SYN to 10.96.0.11 -> passed to TC unchanged",
            Xdp,
            tcp("192.0.2.100:50003", svc).flags(SYN).build(),
            XDP_PASS,
            Unchanged,
            Verdict::XdpPassToTc,
        ),
    ]
}

#[test]
fn clusterip_without_endpoints() {
    let mut h = services::single_node("reject");
    h.run_table(&clusterip_cases());
    conntrack::assert_translated_flows(&h, &[]);
}

/// To node 1's NodePorts 30003 (Cluster) and 30004 (Local), which have no endpoints.
fn nodeport_cases() -> Vec<Case> {
    use Output::{Exact, Unchanged};
    use Prog::{Tc, Xdp};
    vec![
        case(
            "tc: outside -> NodePort without endpoints: RST|ACK from 192.0.2.1:30003",
            Tc,
            segment("192.0.2.100:50040", &node(30003), SYN, 9000),
            TC_ACT_REDIRECT,
            Exact(expected_rst(
                &node(30003),
                "192.0.2.100:50040",
                0,
                9001,
                RST | ACK,
            )),
            Verdict::RejectTcpRst,
        ),
        case(
            "xdp: outside -> NodePort without endpoints: passed to TC unchanged",
            Xdp,
            segment("192.0.2.100:50041", &node(30003), SYN, 9100),
            XDP_PASS,
            Unchanged,
            Verdict::XdpPassToTc,
        ),
        case(
            "tc: outside -> NodePort (Local) without endpoints anywhere: RST (not DROP)",
            Tc,
            segment("192.0.2.100:50042", &node(30004), SYN, 9200),
            TC_ACT_REDIRECT,
            Exact(expected_rst(
                &node(30004),
                "192.0.2.100:50042",
                0,
                9201,
                RST | ACK,
            )),
            Verdict::RejectTcpRst,
        ),
    ]
}

#[test]
fn nodeport_without_endpoints() {
    let mut h = services::node1("reject-np");
    h.run_table(&nodeport_cases());
}
