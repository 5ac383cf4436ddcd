//! Packet parsing shared by the TC and XDP programs: bounds-checked header access and the
//! parsed view of an IPv4 or IPv6 TCP/UDP/SCTP packet (IPv6: parse6.rs).
use core::mem::size_of;
use svc_common::{PROTO_SCTP, PROTO_TCP, PROTO_UDP, Verdict};

use crate::sctp::SctpHdr;

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP_BE: u16 = 0x0800u16.to_be();
pub const ETH_P_IPV6_BE: u16 = 0x86DDu16.to_be();
/// Offsets of IPv4 header fields from the start of the frame.
pub const IP_CSUM_OFF: usize = ETH_HLEN + 10;
pub const IP_SADDR_OFF: usize = ETH_HLEN + 12;
pub const IP_DADDR_OFF: usize = ETH_HLEN + 16;
/// The IPv4 flags/fragment offset field (host order): more fragments, offset in 8 bytes.
pub const IP_MF: u16 = 0x2000;
pub const IP_OFFSET_MASK: u16 = 0x1fff;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub proto_be: u16,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ipv4Hdr {
    pub vihl: u8,
    pub tos: u8,
    pub tot_len_be: u16,
    pub id_be: u16,
    pub frag_off_be: u16,
    pub ttl: u8,
    pub proto: u8,
    pub csum: u16,
    pub saddr_be: u32,
    pub daddr_be: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct TcpHdr {
    pub sport_be: u16,
    pub dport_be: u16,
    pub seq_be: u32,
    pub ack_seq_be: u32,
    /// Data offset in the high nibble.
    pub doff_res: u8,
    pub flags: u8,
    pub window_be: u16,
    pub csum: u16,
    pub urg_ptr_be: u16,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct UdpHdr {
    pub sport_be: u16,
    pub dport_be: u16,
    pub len_be: u16,
    pub csum: u16,
}

/// A `T` at `offset` in [start, end), or None if the packet is too short. The one place
/// packet bounds are checked: the verifier needs this comparison before every access.
#[inline(always)]
pub fn ptr_at<T>(start: usize, end: usize, offset: usize) -> Option<*mut T> {
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// Whether the frame in [start, end) is IPv6 (its EtherType): which family's path takes it.
#[inline(always)]
pub fn is_ipv6(start: usize, end: usize) -> bool {
    match ptr_at::<EthHdr>(start, end, 0) {
        // SAFETY: bounds checked by ptr_at.
        Some(eth) => (unsafe { (*eth).proto_be }) == ETH_P_IPV6_BE,
        None => false,
    }
}

/// The parts of a TCP/UDP/SCTP packet the translation needs; `A` is the address family
/// (family.rs): `u32` for IPv4, `Ip6` for IPv6. Addresses and ports are in network order,
/// as on the wire.
#[derive(Clone, Copy)]
pub struct Packet<A = u32> {
    pub saddr: A,
    pub daddr: A,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// TCP flags; 0 for UDP.
    pub tcp_flags: u8,
    /// Offset of the TCP/UDP header: 14 + IHL * 4 (IPv4 options move it); IPv6: after the
    /// extension headers.
    pub l4_off: usize,
    /// The IPv4 header carries options (IHL > 5). IPv6: false (XDP rewrites at `l4_off`).
    pub has_ip_options: bool,
    /// The IPv4 identification field (keys SVC4_FRAG), or an IPv6 first fragment's
    /// fragment header identification (keys SVC6_FRAG); network order, IPv4's in the low
    /// 16 bits.
    pub ip_id: u32,
    /// The first fragment of a fragmented datagram (MF set, offset 0): its TCP/UDP header
    /// is here, the rest of the datagram follows in fragments without one (frag.rs).
    pub first_fragment: bool,
    /// The interface the packet entered through (detect-local by interface, local.rs);
    /// 0 from `parse`, set by the program that has a context.
    pub ifindex: u32,
}

impl<A> Packet<A> {
    /// Offset of the TCP or UDP checksum field.
    #[inline(always)]
    pub fn l4_csum_off(&self) -> usize {
        if self.proto == PROTO_TCP {
            self.l4_off + 16
        } else {
            self.l4_off + 6
        }
    }
}

/// Parses Ethernet + IPv4 + TCP/UDP. `frame_len` is the whole frame's length (TC: the
/// skb's, which may hold more than the linear part [start, end); XDP: end - start). The
/// error is the verdict for packets that are not candidates for translation:
/// - not IPv4: PassNotIp (the callers send IPv6 to parse6.rs first);
/// - IPv4 header cut short, version != 4 or IHL < 5, or the TCP/UDP header cut short:
///   DropMalformed (no valid packet looks like this; the kernel would drop it too);
/// - lengths that contradict each other: DropMalformed, before the packet can create a
///   conntrack entry or take a masquerade port. The stack drops all of these (ip_rcv_core,
///   tcp_v4_rcv, __udp4_lib_rcv), so translating them would only cost state:
///   - the IPv4 total length below the IPv4 header (IHL), or beyond the frame (a frame
///     longer than the total length is Ethernet padding, and fine);
///   - TCP: a data offset below 5 words, or a TCP header that ends beyond the total length;
///   - UDP: a UDP length below 8 or beyond the total length (a first fragment's UDP length
///     counts the whole datagram, so there it may go beyond);
/// - a fragment after the first (a fragment offset): PassFragment, for frag.rs to decide:
///   it carries no TCP/UDP header. A first fragment (MF set, offset 0) is parsed as a
///   packet, with `first_fragment` set;
/// - SCTP: its common header (ports at the TCP/UDP offsets) cut short, or longer than
///   the total length leaves: DropMalformed;
/// - neither TCP, UDP nor SCTP: PassOtherProto.
#[inline(always)]
pub fn parse(start: usize, end: usize, frame_len: usize) -> Result<Packet, Verdict> {
    let eth: *mut EthHdr = ptr_at(start, end, 0).ok_or(Verdict::DropMalformed)?;
    // SAFETY: bounds checked by ptr_at.
    if unsafe { (*eth).proto_be } != ETH_P_IP_BE {
        return Err(Verdict::PassNotIp);
    }
    let ip: *mut Ipv4Hdr = ptr_at(start, end, ETH_HLEN).ok_or(Verdict::DropMalformed)?;
    let ip = unsafe { *ip };
    let ihl = (ip.vihl & 0x0f) as usize;
    if ip.vihl >> 4 != 4 || ihl < 5 {
        return Err(Verdict::DropMalformed);
    }
    let tot_len = u16::from_be(ip.tot_len_be) as usize;
    if tot_len < ihl * 4 || ETH_HLEN + tot_len > frame_len {
        return Err(Verdict::DropMalformed);
    }
    let frag_off = u16::from_be(ip.frag_off_be);
    if frag_off & IP_OFFSET_MASK != 0 {
        return Err(Verdict::PassFragment);
    }
    let first_fragment = frag_off & IP_MF != 0;
    let l4_off = ETH_HLEN + ihl * 4;
    // What the total length leaves for the TCP/UDP header and payload.
    let l4_len = tot_len - ihl * 4;
    let (sport, dport, tcp_flags) = l4_ports(start, end, ip.proto, l4_off, l4_len, first_fragment)?;
    Ok(Packet {
        saddr: ip.saddr_be,
        daddr: ip.daddr_be,
        sport,
        dport,
        proto: ip.proto,
        tcp_flags,
        l4_off,
        has_ip_options: ihl > 5,
        ip_id: ip.id_be as u32,
        first_fragment,
        ifindex: 0,
    })
}

/// The ports and TCP flags of the TCP/UDP/SCTP header at `l4_off`, with `l4_len` bytes
/// left for it and its payload by the IP header's length; the checks of `parse`, shared
/// by both families. `first_fragment`: a UDP length beyond `l4_len` is allowed.
#[inline(always)]
pub fn l4_ports(
    start: usize,
    end: usize,
    proto: u8,
    l4_off: usize,
    l4_len: usize,
    first_fragment: bool,
) -> Result<(u16, u16, u8), Verdict> {
    Ok(match proto {
        PROTO_TCP => {
            let tcp: *mut TcpHdr = ptr_at(start, end, l4_off).ok_or(Verdict::DropMalformed)?;
            let tcp = unsafe { *tcp };
            let doff = (tcp.doff_res >> 4) as usize * 4;
            if doff < size_of::<TcpHdr>() || doff > l4_len {
                return Err(Verdict::DropMalformed);
            }
            (tcp.sport_be, tcp.dport_be, tcp.flags)
        }
        PROTO_UDP => {
            let udp: *mut UdpHdr = ptr_at(start, end, l4_off).ok_or(Verdict::DropMalformed)?;
            let udp = unsafe { *udp };
            let ulen = u16::from_be(udp.len_be) as usize;
            if ulen < size_of::<UdpHdr>() || (ulen > l4_len && !first_fragment) {
                return Err(Verdict::DropMalformed);
            }
            (udp.sport_be, udp.dport_be, 0)
        }
        PROTO_SCTP => {
            let sctp: *mut SctpHdr = ptr_at(start, end, l4_off).ok_or(Verdict::DropMalformed)?;
            if l4_len < size_of::<SctpHdr>() {
                return Err(Verdict::DropMalformed);
            }
            let sctp = unsafe { *sctp };
            (sctp.sport_be, sctp.dport_be, 0)
        }
        _ => return Err(Verdict::PassOtherProto),
    })
}
