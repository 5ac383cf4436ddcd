//! IPv6 parsing: Ethernet + IPv6 + extension headers + TCP/UDP/SCTP, into the same
//! `Packet` the IPv4 parser makes (with `Ip6` addresses), so lb.rs decides both families
//! with one code. Verdicts for what is not a candidate for translation (README "IPv6"):
//! - the IPv6 header cut short or a version other than 6, a payload length beyond the
//!   frame (a frame longer than it is Ethernet padding, and fine), extension headers
//!   that end beyond the payload, a TCP/UDP/SCTP header cut short or contradicting the
//!   payload length: DropMalformed (the stack drops all of these, ipv6_rcv and the L4
//!   receive functions);
//! - extension headers: hop-by-hop (0), routing (43) and destination options (60) are
//!   walked, at most MAX_EXT_HEADERS of them, and so is an atomic fragment header (offset
//!   0, no more fragments: a whole packet, RFC 6946). More of them, or one that is not
//!   walked (AH, ESP, mobility, HIP, shim6, experimental): PassIpv6Unparsed, untouched;
//! - a first fragment (offset 0, more fragments) is parsed as a packet, with
//!   `first_fragment` set and the fragment header's identification in `ip_id`: its L4
//!   header is there. A later fragment (an offset) is PassFragment, for frag6.rs to give
//!   the first one's translation. (Unlike IPv4, an IPv6 router never fragments: only a
//!   sender makes fragments, of UDP datagrams above the path MTU, a large DNS answer);
//! - ICMPv6 (neighbour discovery, echo, errors) and every other protocol: PassOtherProto,
//!   never looked up, so neighbour discovery works with no maps at all.
use svc_common::{Ip6, PROTO_SCTP, PROTO_TCP, PROTO_UDP, Verdict};

use crate::parse::{ETH_HLEN, Packet, l4_ports, ptr_at};

pub const IPV6_HLEN: usize = 40;
/// Offsets of the IPv6 addresses from the start of the frame.
pub const IP6_SADDR_OFF: usize = ETH_HLEN + 8;
pub const IP6_DADDR_OFF: usize = ETH_HLEN + 24;

/// Extension headers walked before the upper-layer header. Linux walks any number, but
/// real packets carry one or two (a hop-by-hop for jumbograms or router alerts, a routing
/// header for segment routing); 8 leaves room and keeps the verifier's work fixed.
pub const MAX_EXT_HEADERS: usize = 8;
/// The furthest an upper-layer header may start (extension headers are up to 2 KiB each):
/// beyond it the packet is PassIpv6Unparsed. Bounds the verifier's range of the offset.
const MAX_L4_OFF: usize = 512;

const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_ESP: u8 = 50;
const NEXTHDR_AUTH: u8 = 51;
const NEXTHDR_DEST: u8 = 60;
const NEXTHDR_MOBILITY: u8 = 135;
const NEXTHDR_HIP: u8 = 139;
const NEXTHDR_SHIM6: u8 = 140;
const NEXTHDR_EXP1: u8 = 253;
const NEXTHDR_EXP2: u8 = 254;

/// The fragment header's offset (13 bits, in 8-byte units) and M flag, host order.
const FRAG6_OFFSET_MASK: u16 = 0xfff8;
const FRAG6_MF: u16 = 0x0001;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ipv6Hdr {
    /// Version (4 bits), traffic class, flow label; network order.
    pub vtc_flow_be: u32,
    pub payload_len_be: u16,
    pub nexthdr: u8,
    pub hop_limit: u8,
    pub saddr: Ip6,
    pub daddr: Ip6,
}

/// An extension header's first bytes: the next header and the length (8-byte units, not
/// counting the first 8; the fragment header's second byte is reserved and it is 8 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
struct ExtHdr {
    nexthdr: u8,
    hdr_ext_len: u8,
    /// Fragment header: offset and M flag.
    frag_off_be: u16,
}

/// Whether `next` is an extension header (RFC 8200 and the IANA list) rather than an
/// upper-layer protocol.
#[inline(always)]
fn is_extension(next: u8) -> bool {
    matches!(
        next,
        NEXTHDR_HOP
            | NEXTHDR_ROUTING
            | NEXTHDR_FRAGMENT
            | NEXTHDR_ESP
            | NEXTHDR_AUTH
            | NEXTHDR_DEST
            | NEXTHDR_MOBILITY
            | NEXTHDR_HIP
            | NEXTHDR_SHIM6
            | NEXTHDR_EXP1
            | NEXTHDR_EXP2
    )
}

/// Parses an IPv6 frame (the caller checked the EtherType). `frame_len` as for
/// `parse::parse`. The error is the verdict for packets that are not candidates for
/// translation (module doc).
#[inline(always)]
pub fn parse6(start: usize, end: usize, frame_len: usize) -> Result<Packet<Ip6>, Verdict> {
    let ip: *mut Ipv6Hdr = ptr_at(start, end, ETH_HLEN).ok_or(Verdict::DropMalformed)?;
    // SAFETY: bounds checked by ptr_at. Fields are read one by one: a copy of the header
    // would take 40 bytes of a stack the translation needs.
    let ip = unsafe { &*ip };
    if u32::from_be(ip.vtc_flow_be) >> 28 != 6 {
        return Err(Verdict::DropMalformed);
    }
    let payload_len = u16::from_be(ip.payload_len_be) as usize;
    // A payload length of 0 with a hop-by-hop header is a jumbogram, and without one a
    // BIG TCP aggregate (Linux's GRO above 64 KiB): the frame's length is the packet's.
    let ip_end = if payload_len == 0 {
        frame_len
    } else {
        ETH_HLEN + IPV6_HLEN + payload_len
    };
    if ip_end > frame_len {
        return Err(Verdict::DropMalformed);
    }
    let mut next = ip.nexthdr;
    let mut off = ETH_HLEN + IPV6_HLEN;
    let mut walked = 0;
    let mut frag_id = 0u32;
    let mut first_fragment = false;
    while walked < MAX_EXT_HEADERS {
        match next {
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST => {
                let h: *mut ExtHdr = ptr_at(start, end, off).ok_or(Verdict::DropMalformed)?;
                // SAFETY: bounds checked by ptr_at.
                let h = unsafe { *h };
                next = h.nexthdr;
                off += (h.hdr_ext_len as usize + 1) * 8;
            }
            NEXTHDR_FRAGMENT => {
                let h: *mut ExtHdr = ptr_at(start, end, off).ok_or(Verdict::DropMalformed)?;
                let h = unsafe { *h };
                let frag = u16::from_be(h.frag_off_be);
                if frag & FRAG6_OFFSET_MASK != 0 {
                    return Err(Verdict::PassFragment);
                }
                if frag & FRAG6_MF != 0 {
                    // SAFETY: bounds checked by ptr_at (the identification follows).
                    let id: *mut u32 = ptr_at(start, end, off + 4).ok_or(Verdict::DropMalformed)?;
                    frag_id = unsafe { *id };
                    first_fragment = true;
                }
                next = h.nexthdr;
                off += 8;
            }
            _ => break,
        }
        if off > MAX_L4_OFF {
            return Err(Verdict::PassIpv6Unparsed);
        }
        walked += 1;
    }
    if off > ip_end {
        return Err(Verdict::DropMalformed);
    }
    if !matches!(next, PROTO_TCP | PROTO_UDP | PROTO_SCTP) {
        return Err(if is_extension(next) {
            Verdict::PassIpv6Unparsed
        } else {
            Verdict::PassOtherProto
        });
    }
    let (sport, dport, tcp_flags) = l4_ports(start, end, next, off, ip_end - off, first_fragment)?;
    Ok(Packet {
        saddr: ip.saddr,
        daddr: ip.daddr,
        sport,
        dport,
        proto: next,
        tcp_flags,
        l4_off: off,
        has_ip_options: false,
        ip_id: frag_id,
        first_fragment,
        ifindex: 0,
    })
}
