//! The frames of the cases: what clients send (pod or outside, client MAC -> node MAC),
//! what backends answer (node MAC -> client MAC), and the rejects svc-ebpf/src/reject.rs
//! builds. Each expected frame is built with the same parameters as its input and other
//! addresses.
use std::net::Ipv4Addr;

use svc_agent::packet::{ACK, PSH, PacketBuilder, SYN};

use super::{NODE_IP, sa};

pub const CLIENT_MAC: [u8; 6] = [0x02, 0xaa, 0x00, 0x00, 0x00, 0x01];

pub const NODE_MAC: [u8; 6] = [0x02, 0xbb, 0x00, 0x00, 0x00, 0x02];

/// `192.0.2.1:port`: node 1's address, a NodePort or a masqueraded flow's source.
pub fn node(port: u16) -> String {
    format!("{NODE_IP}:{port}")
}

/// A TCP segment from a client: IPv4 id 0x1c46, DF, window 64240.
pub fn tcp(src: &str, dst: &str) -> PacketBuilder {
    PacketBuilder::tcp(sa(src), sa(dst))
        .macs(CLIENT_MAC, NODE_MAC)
        .ip_id(0x1c46)
        .dont_fragment(true)
        .window(64240)
}

/// A client's segment with these flags and sequence number, built.
pub fn segment(src: &str, dst: &str, flags: u8, seq: u32) -> Vec<u8> {
    tcp(src, dst).flags(flags).seq(seq).build()
}

/// A data segment (PSH|ACK with a payload) of a client's flow: IPv4 id 0x1c47, window 502.
pub fn tcp_data(src: &str, dst: &str, seq: u32, ack: u32) -> Vec<u8> {
    tcp(src, dst)
        .ip_id(0x1c47)
        .window(502)
        .flags(PSH | ACK)
        .seq(seq)
        .ack(ack)
        .payload(b"GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
        .build()
}

/// A TCP segment from a backend: IPv4 id 0, DF, window 65160.
pub fn tcp_reply(src: &str, dst: &str) -> PacketBuilder {
    PacketBuilder::tcp(sa(src), sa(dst))
        .macs(NODE_MAC, CLIENT_MAC)
        .ip_id(0)
        .dont_fragment(true)
        .window(65160)
}

/// A backend's SYN-ACK with an MSS option, built.
pub fn synack(src: &str, dst: &str, seq: u32, ack: u32) -> Vec<u8> {
    tcp_reply(src, dst)
        .flags(SYN | ACK)
        .seq(seq)
        .ack(ack)
        .tcp_options(&[2, 4, 0x05, 0xb4])
        .build()
}

/// A UDP datagram from a client: IPv4 id 0x2a2a.
pub fn udp(src: &str, dst: &str) -> PacketBuilder {
    PacketBuilder::udp(sa(src), sa(dst))
        .macs(CLIENT_MAC, NODE_MAC)
        .ip_id(0x2a2a)
}

/// A client's datagram with this payload, with a checksum or with checksum 0, built.
pub fn datagram(src: &str, dst: &str, payload: &[u8], zero_csum: bool) -> Vec<u8> {
    let b = udp(src, dst).payload(payload);
    if zero_csum {
        b.udp_checksum_zero().build()
    } else {
        b.build()
    }
}

/// A UDP datagram from a backend (builder defaults but the MACs).
pub fn udp_reply(src: &str, dst: &str) -> PacketBuilder {
    PacketBuilder::udp(sa(src), sa(dst)).macs(NODE_MAC, CLIENT_MAC)
}

/// The RST svc-ebpf/src/reject.rs builds: MACs swapped, IPv4 id 0, DF, TTL 64, from the
/// Service address, no options; TCP window 0, data offset 5.
pub fn expected_rst(service: &str, client: &str, seq: u32, ack: u32, flags: u8) -> Vec<u8> {
    PacketBuilder::tcp(sa(service), sa(client))
        .macs(NODE_MAC, CLIENT_MAC)
        .ip_id(0)
        .dont_fragment(true)
        .ttl(64)
        .seq(seq)
        .ack(ack)
        .flags(flags)
        .window(0)
        .build()
}

/// The ICMP port unreachable svc-ebpf/src/reject.rs builds: MACs swapped, IPv4 id 0, no
/// DF, TTL 64, from the Service address; quoting the offending IPv4 header and 8 bytes of
/// UDP.
pub fn expected_port_unreachable(service: Ipv4Addr, client: Ipv4Addr, offending: &[u8]) -> Vec<u8> {
    PacketBuilder::icmp(service, client, 3, 3, [0; 4])
        .macs(NODE_MAC, CLIENT_MAC)
        .ip_id(0)
        .dont_fragment(false)
        .ttl(64)
        .payload(&offending[14..14 + 28])
        .build()
}
