//! reject.rs for IPv6: TCP gets a RST, UDP and SCTP an ICMPv6 destination unreachable,
//! code 4 (port unreachable), as ip6tables' REJECT does for kube-proxy. Built in place
//! from the offending packet and sent back out of the interface it came in on, from the
//! Service address. Both checksums cover the IPv6 pseudo-header (RFC 8200 8.1).
use aya_ebpf::{helpers::bpf_skb_load_bytes, programs::TcContext};
use svc_common::{Ip6, PROTO_TCP, Verdict};

use crate::{
    csum,
    parse::{ETH_HLEN, Packet, TCP_RST, TcpHdr, ptr_at},
    parse6::{IPV6_HLEN, Ipv6Hdr},
    reject::{resize, rst_for, send_back, store, swapped_eth},
};

const IPPROTO_ICMPV6: u8 = 58;
const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_PORT_UNREACH: u8 = 4;
const TCP_HLEN: usize = 20;
/// What the ICMPv6 error quotes: the offending IPv6 header and the first 8 bytes after
/// it (the ports, when no extension header comes first). RFC 4443 asks for as much as
/// fits in 1280 bytes; the receiver needs these 48 to find the socket, and a fixed length
/// keeps the copy a constant-size one the verifier accepts.
const ICMP6_QUOTE: usize = IPV6_HLEN + 8;

#[repr(C)]
#[derive(Clone, Copy)]
struct Icmp6Unreach {
    kind: u8,
    code: u8,
    csum: u16,
    unused: u32,
    quote: [u8; ICMP6_QUOTE],
}

// A BPF function of its own, as reject::reject.
#[inline(never)]
pub fn reject(ctx: &TcContext, pkt: &Packet<Ip6>) -> (Verdict, i32) {
    let result = if pkt.proto == PROTO_TCP {
        tcp_rst(ctx, pkt)
    } else {
        icmp_unreachable(ctx, pkt)
    };
    send_back(ctx, result)
}

/// The IPv6 header of the answer: from the Service address back to the client.
#[inline(always)]
fn reply_ip(pkt: &Packet<Ip6>, nexthdr: u8, payload_len: u16) -> Ipv6Hdr {
    Ipv6Hdr {
        vtc_flow_be: (6u32 << 28).to_be(),
        payload_len_be: payload_len.to_be(),
        nexthdr,
        hop_limit: 64,
        saddr: pkt.daddr,
        daddr: pkt.saddr,
    }
}

/// The IPv6 pseudo-header's sum: both addresses, the upper-layer length and next header
/// (as 32-bit fields; their upper halves are zero).
#[inline(always)]
fn pseudo_header(ip: &Ipv6Hdr, len: u16) -> u64 {
    let mut sum = (ip.nexthdr as u16).to_be() as u64 + len.to_be() as u64;
    let mut i = 0;
    while i < 4 {
        sum += csum::sum_u32(ip.saddr[i]) + csum::sum_u32(ip.daddr[i]);
        i += 1;
    }
    sum
}

#[inline(always)]
fn tcp_rst(ctx: &TcContext, pkt: &Packet<Ip6>) -> Result<Verdict, Verdict> {
    if pkt.tcp_flags & TCP_RST != 0 {
        return Err(Verdict::DropNoBackend);
    }
    let eth = swapped_eth(ctx)?;
    let ip: *mut Ipv6Hdr =
        ptr_at(ctx.data(), ctx.data_end(), ETH_HLEN).ok_or(Verdict::DropMalformed)?;
    let payload_len = u16::from_be(unsafe { (*ip).payload_len_be }) as u32;
    let tcp: *mut TcpHdr =
        ptr_at(ctx.data(), ctx.data_end(), pkt.l4_off).ok_or(Verdict::DropMalformed)?;
    let tcp = unsafe { *tcp };
    // Extension headers and the TCP header come out of the payload length.
    let headers = (pkt.l4_off - ETH_HLEN - IPV6_HLEN) as u32 + ((tcp.doff_res >> 4) as u32) * 4;
    let payload = payload_len.saturating_sub(headers);

    let ip = reply_ip(pkt, PROTO_TCP, TCP_HLEN as u16);
    let mut rst = rst_for(&tcp, payload);
    rst.csum = !csum::fold(pseudo_header(&ip, TCP_HLEN as u16) + csum::sum_words::<_, 10>(&rst));

    resize(ctx, ETH_HLEN + IPV6_HLEN + TCP_HLEN)?;
    store(ctx, 0, &eth)?;
    store(ctx, ETH_HLEN, &ip)?;
    store(ctx, ETH_HLEN + IPV6_HLEN, &rst)?;
    Ok(Verdict::RejectTcpRst)
}

#[inline(always)]
fn icmp_unreachable(ctx: &TcContext, pkt: &Packet<Ip6>) -> Result<Verdict, Verdict> {
    let eth = swapped_eth(ctx)?;
    let mut icmp = Icmp6Unreach {
        kind: ICMPV6_DEST_UNREACH,
        code: ICMPV6_PORT_UNREACH,
        csum: 0,
        unused: 0,
        quote: [0; ICMP6_QUOTE],
    };
    // A constant length, as in reject.rs. The packet holds at least this much: parse6
    // found a UDP or SCTP header after the IPv6 header.
    // SAFETY: writes exactly ICMP6_QUOTE bytes into the stack buffer.
    let ret = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb as *const _,
            ETH_HLEN as u32,
            icmp.quote.as_mut_ptr() as *mut _,
            ICMP6_QUOTE as u32,
        )
    };
    if ret < 0 {
        return Err(Verdict::DropMalformed);
    }
    const ICMP_LEN: usize = 8 + ICMP6_QUOTE;
    let ip = reply_ip(pkt, IPPROTO_ICMPV6, ICMP_LEN as u16);
    icmp.csum = !csum::fold(
        pseudo_header(&ip, ICMP_LEN as u16) + csum::sum_words::<_, { ICMP_LEN / 2 }>(&icmp),
    );

    resize(ctx, ETH_HLEN + IPV6_HLEN + ICMP_LEN)?;
    store(ctx, 0, &eth)?;
    store(ctx, ETH_HLEN, &ip)?;
    store(ctx, ETH_HLEN + IPV6_HLEN, &icmp)?;
    Ok(Verdict::RejectIcmp)
}
