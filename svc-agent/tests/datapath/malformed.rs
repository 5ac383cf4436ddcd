//! Odd packets on the single-node datapath, TC then XDP: lengths that contradict each
//! other (IPv4 total length vs frame and IHL, TCP data offset, UDP length) and Ethernet
//! padding, ARP, non-Service addresses, cut IPv4/TCP/UDP headers, IPv4 version 6 and IHL
//! 4, a first fragment too short for its TCP header, a later fragment without a first one
//! (the rest of the fragment rules: fragments.rs), ICMP to a Service address, IPv4 options
//! (TC translates at the offset IHL gives, XDP passes them to TC).
use svc_agent::packet::{PROTO_TCP, PROTO_UDP, PacketBuilder, SYN, arp_request};
use svc_common::Verdict;

use crate::support::*;
use crate::{conntrack, services};

fn cases() -> Vec<Case> {
    use Output::{Exact, Unchanged};
    use Prog::{Tc, Xdp};

    // IPv4 header cut short. For TC the kernel refuses (EINVAL) any skb test run whose
    // EtherType is IPv4 and which holds less than a 20-byte IPv4 header (probed on 6.18:
    // 14..=33 bytes fail, 34 is the smallest accepted), so the TC case uses the smallest
    // accepted frame: 34 bytes whose IHL says 15 (60 bytes, 40 of them options) and whose
    // header ends after its fixed 20 bytes. XDP takes any length >= 14: there the frame ends
    // 10 bytes into a plain IPv4 header.
    let ip_cut = tcp("10.244.1.20:40031", "10.96.0.10:80")
        .flags(SYN)
        .ip_options(&[1; 40])
        .truncate(14 + 20)
        .build();
    let mut ihl4 = tcp("10.244.1.20:40037", "10.96.0.10:80").flags(SYN).build();
    ihl4[14] = 0x44;
    let tcp_cut = tcp("10.244.1.20:40032", "10.96.0.10:80")
        .flags(SYN)
        .truncate(14 + 20 + 10)
        .build();
    let udp_cut = udp("10.244.1.20:40033", "10.96.0.10:80")
        .truncate(14 + 20 + 4)
        .build();
    // A first fragment too short for its TCP header (RFC 1858's tiny fragment): the data
    // offset says 60 bytes, the fragment holds 20. First fragments are otherwise
    // translated as packets (fragments.rs).
    let tiny_first_frag = tcp("10.244.1.20:40034", "10.96.0.10:80")
        .dont_fragment(false)
        .fragment(true, 0)
        .flags(SYN)
        .tcp_data_offset(15)
        .build();
    let later_frag = PacketBuilder::ipv4_raw(ip("10.244.1.20"), ip("10.96.0.10"), PROTO_TCP)
        .macs(CLIENT_MAC, NODE_MAC)
        .fragment(false, 185)
        .payload(&[0xab; 24])
        .build();
    let echo = PacketBuilder::icmp_echo(ip("10.244.1.20"), ip("10.96.0.10"), 0x4242, 1)
        .macs(CLIENT_MAC, NODE_MAC)
        .payload(b"abcdefgh")
        .build();
    let bad_version = tcp("10.244.1.20:40035", "10.96.0.10:80")
        .flags(SYN)
        .ip_version(6)
        .build();
    let opts = |dst: &str| {
        tcp("10.244.1.20:40036", dst)
            .flags(SYN)
            .seq(31337)
            .ip_options(&[1, 1, 1, 1])
            .build()
    };
    let x_opts = tcp("192.0.2.100:50004", "10.96.0.10:80")
        .flags(SYN)
        .ip_options(&[1, 1, 1, 1])
        .build();
    let x_cut = tcp("192.0.2.100:50005", "10.96.0.10:80")
        .flags(SYN)
        .truncate(14 + 10)
        .build();

    // Lengths that contradict each other (parse.rs): the stack would drop each of these,
    // so they are dropped before they can create conntrack entries or take a port.
    let syn = |port: u16| tcp(&format!("10.244.1.20:{port}"), "10.96.0.10:80").flags(SYN);
    let len_beyond_frame = syn(40040)
        .payload(&[0x55; 100])
        .truncate(14 + 20 + 20)
        .build();
    let len_below_ihl = syn(40041).total_length(16).build();
    let len_inside_tcp = syn(40042).total_length(20 + 10).build();
    let doff_4 = syn(40043).tcp_data_offset(4).build();
    let doff_beyond = syn(40044).tcp_data_offset(15).build();
    let udp_len_4 = udp("10.244.1.20:40045", "10.96.0.10:80")
        .payload(b"abcd")
        .udp_length(4)
        .build();
    let udp_len_beyond = udp("10.244.1.20:40046", "10.96.0.10:80")
        .payload(b"abcd")
        .udp_length(200)
        .build();
    let x_len_beyond = tcp("192.0.2.100:50007", "10.96.0.10:80")
        .flags(SYN)
        .total_length(20 + 20 + 1)
        .build();
    let x_udp_len_4 = udp("192.0.2.100:50008", "10.96.0.10:80")
        .payload(b"abcd")
        .udp_length(4)
        .build();
    // Ethernet padding after the IPv4 packet is no contradiction: translated, kept.
    let x_padded = |dst: &str| {
        udp("192.0.2.100:50009", dst)
            .payload(b"pad")
            .pad_to(60)
            .build()
    };
    let malformed =
        |name, prog, input, ret| case(name, prog, input, ret, Unchanged, Verdict::DropMalformed);

    vec![
        malformed(
            "tc: IPv4 total length beyond the frame",
            Tc,
            len_beyond_frame,
            TC_ACT_SHOT,
        ),
        malformed(
            "tc: IPv4 total length 16, below the IHL's 20",
            Tc,
            len_below_ihl,
            TC_ACT_SHOT,
        ),
        malformed(
            "tc: IPv4 total length ends inside the TCP header",
            Tc,
            len_inside_tcp,
            TC_ACT_SHOT,
        ),
        malformed("tc: TCP data offset 4 (below 5)", Tc, doff_4, TC_ACT_SHOT),
        malformed(
            "tc: TCP data offset 15, beyond the total length",
            Tc,
            doff_beyond,
            TC_ACT_SHOT,
        ),
        malformed("tc: UDP length 4 (below 8)", Tc, udp_len_4, TC_ACT_SHOT),
        malformed(
            "tc: UDP length beyond the total length",
            Tc,
            udp_len_beyond,
            TC_ACT_SHOT,
        ),
        malformed(
            "xdp: IPv4 total length beyond the frame",
            Xdp,
            x_len_beyond,
            XDP_DROP,
        ),
        malformed("xdp: UDP length 4 (below 8)", Xdp, x_udp_len_4, XDP_DROP),
        case(
            "xdp: UDP padded to 60 bytes -> DNAT, padding kept",
            Xdp,
            x_padded("10.96.0.10:80"),
            XDP_PASS,
            Exact(x_padded(services::LOCAL_BE)),
            Verdict::DnatNew,
        ),
        case(
            "tc: ARP passes untouched",
            Tc,
            arp_request(CLIENT_MAC, ip("10.244.1.20"), ip("10.244.1.1")),
            TC_ACT_OK,
            Unchanged,
            Verdict::PassNotIp,
        ),
        case(
            "tc: TCP to a non-service address",
            Tc,
            tcp("10.244.1.20:40030", "10.244.1.99:80")
                .flags(SYN)
                .build(),
            TC_ACT_OK,
            Unchanged,
            Verdict::PassNotService,
        ),
        case(
            "tc: IPv4 header cut short (IHL 15, 20 bytes present)",
            Tc,
            ip_cut,
            TC_ACT_SHOT,
            Unchanged,
            Verdict::DropMalformed,
        ),
        case(
            "tc: TCP header cut short",
            Tc,
            tcp_cut,
            TC_ACT_SHOT,
            Unchanged,
            Verdict::DropMalformed,
        ),
        case(
            "tc: UDP header cut short",
            Tc,
            udp_cut,
            TC_ACT_SHOT,
            Unchanged,
            Verdict::DropMalformed,
        ),
        case(
            "tc: IPv4 version 6 in an IPv4 frame",
            Tc,
            bad_version,
            TC_ACT_SHOT,
            Unchanged,
            Verdict::DropMalformed,
        ),
        case(
            "tc: IHL 4 (below the minimum 5)",
            Tc,
            ihl4,
            TC_ACT_SHOT,
            Unchanged,
            Verdict::DropMalformed,
        ),
        case(
            "tc: first fragment (MF) cut inside its TCP header",
            Tc,
            tiny_first_frag,
            TC_ACT_SHOT,
            Unchanged,
            Verdict::DropMalformed,
        ),
        case(
            "tc: non-first fragment (offset 185) to the VIP, no first fragment seen",
            Tc,
            later_frag,
            TC_ACT_OK,
            Unchanged,
            Verdict::PassFragment,
        ),
        case(
            "tc: ICMP echo to the VIP",
            Tc,
            echo,
            TC_ACT_OK,
            Unchanged,
            Verdict::PassOtherProto,
        ),
        case(
            "tc: SYN with IPv4 options (IHL 6) -> DNAT at offset 38",
            Tc,
            opts("10.96.0.10:80"),
            TC_ACT_OK,
            Exact(opts(services::LOCAL_BE)),
            Verdict::DnatNew,
        ),
        case(
            "xdp: ARP passes",
            Xdp,
            arp_request(CLIENT_MAC, ip("192.0.2.100"), ip("192.0.2.1")),
            XDP_PASS,
            Unchanged,
            Verdict::PassNotIp,
        ),
        case(
            "xdp: SYN with IPv4 options to the VIP -> passed to TC unchanged",
            Xdp,
            x_opts,
            XDP_PASS,
            Unchanged,
            Verdict::XdpPassToTc,
        ),
        case(
            "xdp: IPv4 header cut short",
            Xdp,
            x_cut,
            XDP_DROP,
            Unchanged,
            Verdict::DropMalformed,
        ),
        case(
            "xdp: SYN to a non-service address",
            Xdp,
            tcp("192.0.2.100:50006", "10.244.1.99:80")
                .flags(SYN)
                .build(),
            XDP_PASS,
            Unchanged,
            Verdict::PassNotService,
        ),
    ]
}

#[test]
fn odd_packets() {
    let mut h = services::single_node("malformed");
    h.run_table(&cases());
    // Only the SYN with IPv4 options and the padded datagram were translated.
    conntrack::assert_translated_flows(
        &h,
        &[
            ("10.244.1.20:40036", PROTO_TCP),
            ("192.0.2.100:50009", PROTO_UDP),
        ],
    );
}
