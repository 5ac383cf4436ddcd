//! Answers for a Service without endpoints, built in place from the offending packet and
//! sent back out of the interface it came in on (as kube-proxy's REJECT rule does):
//! TCP gets a RST, UDP an ICMP port unreachable. The reply comes from the Service address.
use aya_ebpf::{
    bindings::{__sk_buff, TC_ACT_SHOT},
    helpers::{bpf_redirect, bpf_skb_change_tail, bpf_skb_load_bytes},
    programs::TcContext,
};
use svc_common::{PROTO_TCP, Verdict};

use crate::{
    csum,
    parse::{
        ETH_HLEN, EthHdr, Ipv4Hdr, Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, TcpHdr, ptr_at,
    },
};

const IPPROTO_ICMP: u8 = 1;
const IP_DF_BE: u16 = 0x4000u16.to_be();
const IP_HLEN: usize = 20;
const TCP_HLEN: usize = 20;
/// What an ICMP error quotes: the offending IPv4 header (no options) + 8 bytes of L4.
const ICMP_QUOTE: usize = IP_HLEN + 8;

#[repr(C)]
#[derive(Clone, Copy)]
struct IcmpUnreach {
    kind: u8,
    code: u8,
    csum: u16,
    unused: u32,
    quote: [u8; ICMP_QUOTE],
}

// A separate BPF function, not inlined: inlined into the TC program, LLVM carried an
// undefined register through the no-endpoints path, which the verifier refuses (R3
// !read_ok). As a call, the arguments and result travel in defined registers.
#[inline(never)]
pub fn reject(ctx: &TcContext, pkt: &Packet) -> (Verdict, i32) {
    let result = if pkt.proto == PROTO_TCP {
        tcp_rst(ctx, pkt)
    } else {
        icmp_unreachable(ctx, pkt)
    };
    send_back(ctx, result)
}

/// The program's verdict and action for an answer built in place (`Ok`: sent back out of
/// the interface the packet came in on) or a packet that gets none (dropped); both
/// families'.
#[inline(always)]
pub(crate) fn send_back(ctx: &TcContext, result: Result<Verdict, Verdict>) -> (Verdict, i32) {
    match result {
        Ok(verdict) => {
            // SAFETY: reading the ifindex of the skb we were given.
            let ifindex = unsafe { (*(ctx.skb.skb as *const __sk_buff)).ifindex };
            // Egress of the interface the packet arrived on: back to the sender.
            let ret = unsafe { bpf_redirect(ifindex, 0) } as i32;
            (verdict, ret)
        }
        Err(verdict) => (verdict, TC_ACT_SHOT),
    }
}

#[inline(always)]
pub(crate) fn swapped_eth(ctx: &TcContext) -> Result<EthHdr, Verdict> {
    let eth: *mut EthHdr = ptr_at(ctx.data(), ctx.data_end(), 0).ok_or(Verdict::DropMalformed)?;
    let eth = unsafe { *eth };
    Ok(EthHdr {
        dst: eth.src,
        src: eth.dst,
        proto_be: eth.proto_be,
    })
}

#[inline(always)]
fn reply_ip(pkt: &Packet, proto: u8, tot_len: u16, frag_off_be: u16) -> Ipv4Hdr {
    let mut ip = Ipv4Hdr {
        vihl: 0x45,
        tos: 0,
        tot_len_be: tot_len.to_be(),
        id_be: 0,
        frag_off_be,
        ttl: 64,
        proto,
        csum: 0,
        saddr_be: pkt.daddr,
        daddr_be: pkt.saddr,
    };
    ip.csum = !csum::fold(csum::sum_words::<_, 10>(&ip));
    ip
}

/// RST as RFC 9293 3.10.7.1 prescribes for a closed port: if the segment had ACK, the RST
/// takes its sequence number from that ACK; else it acknowledges the segment. A RST is
/// never answered.
#[inline(always)]
fn tcp_rst(ctx: &TcContext, pkt: &Packet) -> Result<Verdict, Verdict> {
    if pkt.tcp_flags & TCP_RST != 0 {
        return Err(Verdict::DropNoBackend);
    }
    let eth = swapped_eth(ctx)?;
    let ip: *mut Ipv4Hdr =
        ptr_at(ctx.data(), ctx.data_end(), ETH_HLEN).ok_or(Verdict::DropMalformed)?;
    let tot_len = u16::from_be(unsafe { (*ip).tot_len_be }) as u32;
    let tcp: *mut TcpHdr =
        ptr_at(ctx.data(), ctx.data_end(), pkt.l4_off).ok_or(Verdict::DropMalformed)?;
    let tcp = unsafe { *tcp };
    let headers = (pkt.l4_off - ETH_HLEN) as u32 + ((tcp.doff_res >> 4) as u32) * 4;
    let payload = tot_len.saturating_sub(headers);

    let ip = reply_ip(pkt, PROTO_TCP, (IP_HLEN + TCP_HLEN) as u16, IP_DF_BE);
    let mut rst = rst_for(&tcp, payload);
    let sum = csum::pseudo_header(ip.saddr_be, ip.daddr_be, PROTO_TCP, TCP_HLEN as u16)
        + csum::sum_words::<_, 10>(&rst);
    rst.csum = !csum::fold(sum);

    resize(ctx, ETH_HLEN + IP_HLEN + TCP_HLEN)?;
    store(ctx, 0, &eth)?;
    store(ctx, ETH_HLEN, &ip)?;
    store(ctx, ETH_HLEN + IP_HLEN, &rst)?;
    Ok(Verdict::RejectTcpRst)
}

/// The RST answering the segment `tcp` with `payload` bytes of data (RFC 9293 3.10.7.1),
/// checksum not yet set; both families'.
#[inline(always)]
pub(crate) fn rst_for(tcp: &TcpHdr, payload: u32) -> TcpHdr {
    let (seq, ack, flags) = if tcp.flags & TCP_ACK != 0 {
        (u32::from_be(tcp.ack_seq_be), 0, TCP_RST)
    } else {
        let syn_fin = (tcp.flags & TCP_SYN != 0) as u32 + (tcp.flags & TCP_FIN != 0) as u32;
        (
            0,
            u32::from_be(tcp.seq_be)
                .wrapping_add(payload)
                .wrapping_add(syn_fin),
            TCP_RST | TCP_ACK,
        )
    };
    TcpHdr {
        sport_be: tcp.dport_be,
        dport_be: tcp.sport_be,
        seq_be: seq.to_be(),
        ack_seq_be: ack.to_be(),
        doff_res: 5 << 4,
        flags,
        window_be: 0,
        csum: 0,
        urg_ptr_be: 0,
    }
}

/// ICMP destination unreachable / port unreachable quoting the datagram. Packets with IPv4
/// options are dropped instead: the quote would need their variable-length header.
#[inline(always)]
fn icmp_unreachable(ctx: &TcContext, pkt: &Packet) -> Result<Verdict, Verdict> {
    if pkt.has_ip_options {
        return Err(Verdict::DropRewriteFailed);
    }
    let eth = swapped_eth(ctx)?;
    let mut icmp = IcmpUnreach {
        kind: 3,
        code: 3,
        csum: 0,
        unused: 0,
        quote: [0; ICMP_QUOTE],
    };
    // The raw helper with a constant length: aya's load_bytes clamps the length to the
    // packet, which the verifier sees as a possibly zero-sized read and rejects.
    // SAFETY: writes exactly ICMP_QUOTE bytes into the stack buffer.
    let ret = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb as *const _,
            ETH_HLEN as u32,
            icmp.quote.as_mut_ptr() as *mut _,
            ICMP_QUOTE as u32,
        )
    };
    if ret < 0 {
        return Err(Verdict::DropMalformed);
    }
    icmp.csum = !csum::fold(csum::sum_words::<_, { (8 + ICMP_QUOTE) / 2 }>(&icmp));
    let ip = reply_ip(pkt, IPPROTO_ICMP, (IP_HLEN + 8 + ICMP_QUOTE) as u16, 0);

    resize(ctx, ETH_HLEN + IP_HLEN + 8 + ICMP_QUOTE)?;
    store(ctx, 0, &eth)?;
    store(ctx, ETH_HLEN, &ip)?;
    store(ctx, ETH_HLEN + IP_HLEN, &icmp)?;
    Ok(Verdict::RejectIcmp)
}

#[inline(always)]
pub(crate) fn resize(ctx: &TcContext, len: usize) -> Result<(), Verdict> {
    // SAFETY: helper on our own skb.
    let ret = unsafe { bpf_skb_change_tail(ctx.skb.skb, len as u32, 0) };
    if ret < 0 {
        Err(Verdict::DropRewriteFailed)
    } else {
        Ok(())
    }
}

#[inline(always)]
pub(crate) fn store<T>(ctx: &TcContext, offset: usize, value: &T) -> Result<(), Verdict> {
    ctx.store(offset, value, 0)
        .map_err(|_| Verdict::DropRewriteFailed)
}
