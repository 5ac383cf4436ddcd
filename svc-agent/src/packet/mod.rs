//! Ethernet + IPv4 + TCP/UDP/SCTP/ICMP frames as bytes, for BPF_PROG_TEST_RUN fixtures,
//! `svcctl trace` and benchmarks; IPv6 frames in [`ipv6`] ([`Ipv6Builder`]).
//!
//! [`PacketBuilder`] builds well-formed frames with correct checksums by default, and odd
//! ones on request: IPv4 options, fragment bits, a zero UDP checksum, a frame cut short,
//! an overridden protocol or version. Checksums are always computed over the complete
//! packet before it is cut, as a packet truncated on the wire would carry them. ICMP
//! errors quote another frame ([`PacketBuilder::icmp_error`], [`PacketBuilder::frag_needed`],
//! minimal or Linux-sized [`Quote`]s).
//!
//! [`verify_checksums`], [`parse_summary`] and [`parse_icmp_quote`] read arbitrary bytes
//! and never panic.
//!
//! ```
//! use std::net::SocketAddrV4;
//! use svc_agent::packet::{PacketBuilder, SYN, verify_checksums};
//! let src: SocketAddrV4 = "10.244.1.20:40000".parse().unwrap();
//! let dst: SocketAddrV4 = "10.96.0.10:80".parse().unwrap();
//! let frame = PacketBuilder::tcp(src, dst).flags(SYN).seq(1000).build();
//! assert_eq!(frame.len(), 14 + 20 + 20);
//! verify_checksums(&frame).unwrap();
//! ```
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

pub mod ipv6;
pub use ipv6::{
    ETH_P_IPV6, ICMPV6_ECHO_REQUEST, ICMPV6_NEIGHBOR_SOLICIT, Ipv6Builder, Ipv6Ext, PROTO_ICMPV6,
    checksum6,
};

/// EtherTypes.
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;

/// IP protocol numbers.
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_SCTP: u8 = 132;

/// SCTP chunk types the builder's callers use (RFC 9260 3.2).
pub const SCTP_DATA: u8 = 0;
pub const SCTP_INIT: u8 = 1;
pub const SCTP_INIT_ACK: u8 = 2;

/// TCP flag bits (the 14th byte of the TCP header).
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;

pub const ETH_HLEN: usize = 14;
const IPV4_HLEN: usize = 20;
const TCP_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
const ICMP_HLEN: usize = 8;
const SCTP_HLEN: usize = 12;

/// CRC32c (Castagnoli, reflected polynomial 0x82F63B78), bytewise from a table built at
/// compile time: SCTP's checksum (RFC 9260 appendix A).
const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// The CRC32c of `data` (initial value and final XOR all ones, as SCTP uses it).
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc = CRC32C_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// The checksum SCTP stores for `packet` (common header + chunks): the CRC32c computed with
/// the checksum field as zero, written in the field's byte order (the CRC's least
/// significant byte first, RFC 9260 appendix A). Returns the 4 bytes to store.
fn sctp_checksum(packet: &[u8]) -> [u8; 4] {
    let mut p = packet.to_vec();
    if p.len() >= SCTP_HLEN {
        p[8..12].copy_from_slice(&[0; 4]);
    }
    crc32c(&p).to_le_bytes()
}

/// ICMP types of the errors that quote an offending packet (RFC 792).
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;
/// Destination-unreachable codes: port unreachable; fragmentation needed and DF set.
pub const ICMP_PORT_UNREACH: u8 = 3;
pub const ICMP_FRAG_NEEDED: u8 = 4;

/// What Linux's icmp_send quotes at most: a 576-byte error less its IPv4 and ICMP headers.
const LINUX_QUOTE_MAX: usize = 576 - IPV4_HLEN - ICMP_HLEN;

/// IPv4 flag bits in the flags/fragment-offset field.
const IP_DF: u16 = 0x4000;
const IP_MF: u16 = 0x2000;
const IP_OFFSET_MASK: u16 = 0x1fff;

/// The MACs frames get unless [`PacketBuilder::macs`] says otherwise (locally administered).
pub const DEFAULT_SRC_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
pub const DEFAULT_DST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];

/// One's complement sum of big-endian 16-bit words (an odd trailing byte is padded with 0).
fn sum_be_words(data: &[u8]) -> u32 {
    let mut sum = 0u32;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [last] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*last) << 8);
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The Internet checksum (RFC 1071) of `data`, as it is stored in a header (big-endian).
pub fn internet_checksum(data: &[u8]) -> u16 {
    !fold(sum_be_words(data))
}

fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4_len: usize) -> u32 {
    sum_be_words(&src.octets())
        + sum_be_words(&dst.octets())
        + u32::from(proto)
        + (l4_len as u32 & 0xffff)
}

/// TCP or UDP checksum over the IPv4 pseudo-header and the L4 segment.
fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment: &[u8]) -> u16 {
    !fold(pseudo_header_sum(src, dst, proto, segment.len()) + sum_be_words(segment))
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        window: u16,
        urgent: u16,
        options: Vec<u8>,
    },
    Udp {
        sport: u16,
        dport: u16,
        zero_checksum: bool,
    },
    Icmp {
        kind: u8,
        code: u8,
        rest: [u8; 4],
    },
    /// An SCTP common header and one chunk (type, flags, the payload as its value),
    /// padded to 4 bytes.
    Sctp {
        sport: u16,
        dport: u16,
        vtag: u32,
        chunk: u8,
        bad_crc: bool,
    },
    /// No L4 header of our own: the payload is all there is (non-first fragments, or any
    /// protocol the builder has no header for).
    Raw {
        proto: u8,
    },
}

/// Builds one Ethernet + IPv4 frame. Defaults: MACs [`DEFAULT_SRC_MAC`] ->
/// [`DEFAULT_DST_MAC`], TOS 0, IPv4 id 0, DF clear, TTL 64, no options, not a fragment;
/// TCP seq 0, ack 0, flags 0, window 65535; no payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketBuilder {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    tos: u8,
    id: u16,
    ttl: u8,
    dont_fragment: bool,
    more_fragments: bool,
    frag_offset: u16,
    ip_options: Vec<u8>,
    version: u8,
    proto_override: Option<u8>,
    l4: L4,
    payload: Vec<u8>,
    truncate: Option<usize>,
    pad_to: usize,
    total_length: Option<u16>,
    udp_length: Option<u16>,
    tcp_data_offset: Option<u8>,
}

impl PacketBuilder {
    fn new(src: Ipv4Addr, dst: Ipv4Addr, l4: L4) -> Self {
        PacketBuilder {
            src_mac: DEFAULT_SRC_MAC,
            dst_mac: DEFAULT_DST_MAC,
            src,
            dst,
            tos: 0,
            id: 0,
            ttl: 64,
            dont_fragment: false,
            more_fragments: false,
            frag_offset: 0,
            ip_options: Vec::new(),
            version: 4,
            proto_override: None,
            l4,
            payload: Vec::new(),
            truncate: None,
            pad_to: 0,
            total_length: None,
            udp_length: None,
            tcp_data_offset: None,
        }
    }

    /// A TCP segment (flags 0 until [`flags`](Self::flags) sets them).
    pub fn tcp(src: SocketAddrV4, dst: SocketAddrV4) -> Self {
        Self::new(
            *src.ip(),
            *dst.ip(),
            L4::Tcp {
                sport: src.port(),
                dport: dst.port(),
                seq: 0,
                ack: 0,
                flags: 0,
                window: 65535,
                urgent: 0,
                options: Vec::new(),
            },
        )
    }

    /// A UDP datagram with a computed checksum.
    pub fn udp(src: SocketAddrV4, dst: SocketAddrV4) -> Self {
        Self::new(
            *src.ip(),
            *dst.ip(),
            L4::Udp {
                sport: src.port(),
                dport: dst.port(),
                zero_checksum: false,
            },
        )
    }

    /// An SCTP packet: the common header with verification tag `vtag` and one chunk of
    /// type `chunk` whose value is the payload ([`payload`](Self::payload)), padded to 4
    /// bytes; the CRC32c is computed (RFC 9260).
    pub fn sctp(src: SocketAddrV4, dst: SocketAddrV4, vtag: u32, chunk: u8) -> Self {
        Self::new(
            *src.ip(),
            *dst.ip(),
            L4::Sctp {
                sport: src.port(),
                dport: dst.port(),
                vtag,
                chunk,
                bad_crc: false,
            },
        )
    }

    /// Stores a wrong SCTP checksum (the right one, inverted; no effect on non-SCTP).
    pub fn sctp_bad_checksum(mut self) -> Self {
        if let L4::Sctp { bad_crc, .. } = &mut self.l4 {
            *bad_crc = true;
        }
        self
    }

    /// An ICMP echo request with the given identifier and sequence number.
    pub fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, ident: u16, seq: u16) -> Self {
        let [a, b] = ident.to_be_bytes();
        let [c, d] = seq.to_be_bytes();
        Self::icmp(src, dst, 8, 0, [a, b, c, d])
    }

    /// Any ICMP message: type, code and the 4 bytes after the checksum ("rest of header":
    /// id/seq for echo, unused or next-hop MTU for unreachables). The body is the payload.
    pub fn icmp(src: Ipv4Addr, dst: Ipv4Addr, kind: u8, code: u8, rest: [u8; 4]) -> Self {
        Self::new(src, dst, L4::Icmp { kind, code, rest })
    }

    /// An ICMP error (type, code, the 4 "rest of header" bytes) from `src` to `dst`
    /// quoting `offending`, an Ethernet + IPv4 frame, as [`Quote`] says.
    pub fn icmp_error(
        src: Ipv4Addr,
        dst: Ipv4Addr,
        kind: u8,
        code: u8,
        rest: [u8; 4],
        offending: &[u8],
        quote: Quote,
    ) -> Self {
        Self::icmp(src, dst, kind, code, rest).payload(&quote_of(offending, quote))
    }

    /// "Fragmentation needed and DF set" (type 3, code 4) with the next-hop MTU, as a
    /// router sends it about `offending` (RFC 1191).
    pub fn frag_needed(
        src: Ipv4Addr,
        dst: Ipv4Addr,
        mtu: u16,
        offending: &[u8],
        quote: Quote,
    ) -> Self {
        let [a, b] = mtu.to_be_bytes();
        Self::icmp_error(
            src,
            dst,
            ICMP_DEST_UNREACH,
            ICMP_FRAG_NEEDED,
            [0, 0, a, b],
            offending,
            quote,
        )
    }

    /// An IPv4 packet whose protocol field is `proto` and whose body is only the payload
    /// (e.g. a non-first fragment of a TCP segment).
    pub fn ipv4_raw(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> Self {
        Self::new(src, dst, L4::Raw { proto })
    }

    /// Ethernet source and destination.
    pub fn macs(mut self, src: [u8; 6], dst: [u8; 6]) -> Self {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }

    pub fn tos(mut self, tos: u8) -> Self {
        self.tos = tos;
        self
    }

    /// The IPv4 identification field.
    pub fn ip_id(mut self, id: u16) -> Self {
        self.id = id;
        self
    }

    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    /// The IPv4 don't-fragment bit.
    pub fn dont_fragment(mut self, df: bool) -> Self {
        self.dont_fragment = df;
        self
    }

    /// The more-fragments bit and the fragment offset in 8-byte units, as the header
    /// carries it (masked to 13 bits).
    pub fn fragment(mut self, more_fragments: bool, offset_units: u16) -> Self {
        self.more_fragments = more_fragments;
        self.frag_offset = offset_units & IP_OFFSET_MASK;
        self
    }

    /// IPv4 options, padded with zero bytes (end of option list) to a multiple of 4; IHL
    /// grows to match.
    ///
    /// # Panics
    /// If the padded options are longer than 40 bytes, which IHL cannot express.
    pub fn ip_options(mut self, options: &[u8]) -> Self {
        let mut opts = options.to_vec();
        opts.resize(options.len().div_ceil(4) * 4, 0);
        assert!(
            opts.len() <= 40,
            "IPv4 options are at most 40 bytes, got {}",
            opts.len()
        );
        self.ip_options = opts;
        self
    }

    /// Overrides the IPv4 version nibble (for malformed packets).
    pub fn ip_version(mut self, version: u8) -> Self {
        self.version = version & 0x0f;
        self
    }

    /// Overrides the IPv4 protocol field while keeping the L4 header the builder made.
    pub fn ip_proto(mut self, proto: u8) -> Self {
        self.proto_override = Some(proto);
        self
    }

    /// Sets the TCP flags (no effect on non-TCP packets).
    pub fn flags(mut self, flags: u8) -> Self {
        if let L4::Tcp { flags: f, .. } = &mut self.l4 {
            *f = flags;
        }
        self
    }

    /// Sets the TCP sequence number (no effect on non-TCP packets).
    pub fn seq(mut self, seq: u32) -> Self {
        if let L4::Tcp { seq: s, .. } = &mut self.l4 {
            *s = seq;
        }
        self
    }

    /// Sets the TCP acknowledgment number (no effect on non-TCP packets).
    pub fn ack(mut self, ack: u32) -> Self {
        if let L4::Tcp { ack: a, .. } = &mut self.l4 {
            *a = ack;
        }
        self
    }

    /// Sets the TCP window (no effect on non-TCP packets).
    pub fn window(mut self, window: u16) -> Self {
        if let L4::Tcp { window: w, .. } = &mut self.l4 {
            *w = window;
        }
        self
    }

    /// Sets the TCP urgent pointer (no effect on non-TCP packets).
    pub fn urgent(mut self, urgent: u16) -> Self {
        if let L4::Tcp { urgent: u, .. } = &mut self.l4 {
            *u = urgent;
        }
        self
    }

    /// TCP options, padded with zero bytes to a multiple of 4; the data offset grows to
    /// match (no effect on non-TCP packets).
    ///
    /// # Panics
    /// If the padded options are longer than 40 bytes.
    pub fn tcp_options(mut self, options: &[u8]) -> Self {
        let mut opts = options.to_vec();
        opts.resize(options.len().div_ceil(4) * 4, 0);
        assert!(
            opts.len() <= 40,
            "TCP options are at most 40 bytes, got {}",
            opts.len()
        );
        if let L4::Tcp { options: o, .. } = &mut self.l4 {
            *o = opts;
        }
        self
    }

    /// Sends the UDP datagram without a checksum (field 0, "none"; no effect on non-UDP).
    pub fn udp_checksum_zero(mut self) -> Self {
        if let L4::Udp { zero_checksum, .. } = &mut self.l4 {
            *zero_checksum = true;
        }
        self
    }

    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    /// Cuts the finished frame at `len` bytes (headers keep the lengths and checksums of
    /// the whole packet). A `len` beyond the frame has no effect.
    pub fn truncate(mut self, len: usize) -> Self {
        self.truncate = Some(len);
        self
    }

    /// Appends zero bytes after the IPv4 packet until the frame is `len` bytes long, as
    /// Ethernet pads short frames (to 60 bytes without FCS); the IPv4 total length does not
    /// count them. Applied before [`truncate`](Self::truncate).
    pub fn pad_to(mut self, len: usize) -> Self {
        self.pad_to = len;
        self
    }

    /// Writes `len` as the IPv4 total length instead of the real one (the header checksum
    /// covers the value written), for frames whose lengths contradict each other.
    pub fn total_length(mut self, len: u16) -> Self {
        self.total_length = Some(len);
        self
    }

    /// Writes `len` as the UDP length instead of the real one (the checksum covers the
    /// value written; the pseudo-header keeps the real length). No effect on non-UDP.
    pub fn udp_length(mut self, len: u16) -> Self {
        self.udp_length = Some(len);
        self
    }

    /// Writes `words` (4-byte words, 0..=15) as the TCP data offset instead of the real
    /// one; the options and payload stay where they are. No effect on non-TCP.
    pub fn tcp_data_offset(mut self, words: u8) -> Self {
        self.tcp_data_offset = Some(words & 0x0f);
        self
    }

    /// The IPv4 protocol number the header will carry.
    pub fn protocol(&self) -> u8 {
        self.proto_override.unwrap_or(match self.l4 {
            L4::Tcp { .. } => PROTO_TCP,
            L4::Udp { .. } => PROTO_UDP,
            L4::Icmp { .. } => PROTO_ICMP,
            L4::Sctp { .. } => PROTO_SCTP,
            L4::Raw { proto } => proto,
        })
    }

    /// The L4 header and payload, checksummed.
    fn l4_bytes(&self) -> Vec<u8> {
        let proto = self.protocol();
        match &self.l4 {
            L4::Tcp {
                sport,
                dport,
                seq,
                ack,
                flags,
                window,
                urgent,
                options,
            } => {
                let hlen = TCP_HLEN + options.len();
                let mut seg = Vec::with_capacity(hlen + self.payload.len());
                seg.extend_from_slice(&sport.to_be_bytes());
                seg.extend_from_slice(&dport.to_be_bytes());
                seg.extend_from_slice(&seq.to_be_bytes());
                seg.extend_from_slice(&ack.to_be_bytes());
                seg.push(self.tcp_data_offset.unwrap_or((hlen / 4) as u8) << 4);
                seg.push(*flags);
                seg.extend_from_slice(&window.to_be_bytes());
                seg.extend_from_slice(&[0, 0]);
                seg.extend_from_slice(&urgent.to_be_bytes());
                seg.extend_from_slice(options);
                seg.extend_from_slice(&self.payload);
                let csum = l4_checksum(self.src, self.dst, proto, &seg);
                seg[16..18].copy_from_slice(&csum.to_be_bytes());
                seg
            }
            L4::Udp {
                sport,
                dport,
                zero_checksum,
            } => {
                let len = UDP_HLEN + self.payload.len();
                let mut seg = Vec::with_capacity(len);
                seg.extend_from_slice(&sport.to_be_bytes());
                seg.extend_from_slice(&dport.to_be_bytes());
                seg.extend_from_slice(&self.udp_length.unwrap_or(len as u16).to_be_bytes());
                seg.extend_from_slice(&[0, 0]);
                seg.extend_from_slice(&self.payload);
                if !zero_checksum {
                    let csum = match l4_checksum(self.src, self.dst, proto, &seg) {
                        // RFC 768: a computed zero is sent as all ones.
                        0 => 0xffff,
                        c => c,
                    };
                    seg[6..8].copy_from_slice(&csum.to_be_bytes());
                }
                seg
            }
            L4::Icmp { kind, code, rest } => {
                let mut msg = Vec::with_capacity(ICMP_HLEN + self.payload.len());
                msg.extend_from_slice(&[*kind, *code, 0, 0]);
                msg.extend_from_slice(rest);
                msg.extend_from_slice(&self.payload);
                let csum = internet_checksum(&msg);
                msg[2..4].copy_from_slice(&csum.to_be_bytes());
                msg
            }
            L4::Sctp {
                sport,
                dport,
                vtag,
                chunk,
                bad_crc,
            } => {
                let chunk_len = 4 + self.payload.len();
                let mut pkt = Vec::with_capacity(SCTP_HLEN + chunk_len.div_ceil(4) * 4);
                pkt.extend_from_slice(&sport.to_be_bytes());
                pkt.extend_from_slice(&dport.to_be_bytes());
                pkt.extend_from_slice(&vtag.to_be_bytes());
                pkt.extend_from_slice(&[0; 4]);
                pkt.extend_from_slice(&[*chunk, 0]);
                pkt.extend_from_slice(&(chunk_len as u16).to_be_bytes());
                pkt.extend_from_slice(&self.payload);
                pkt.resize(SCTP_HLEN + chunk_len.div_ceil(4) * 4, 0);
                let mut crc = sctp_checksum(&pkt);
                if *bad_crc {
                    crc = crc.map(|b| !b);
                }
                pkt[8..12].copy_from_slice(&crc);
                pkt
            }
            L4::Raw { .. } => self.payload.clone(),
        }
    }

    /// The frame.
    pub fn build(&self) -> Vec<u8> {
        let l4 = self.l4_bytes();
        let ihl = (IPV4_HLEN + self.ip_options.len()) / 4;
        let tot_len = ihl * 4 + l4.len();
        let mut frame = Vec::with_capacity(ETH_HLEN + tot_len);
        frame.extend_from_slice(&self.dst_mac);
        frame.extend_from_slice(&self.src_mac);
        frame.extend_from_slice(&ETH_P_IP.to_be_bytes());

        let mut frag = self.frag_offset & IP_OFFSET_MASK;
        if self.dont_fragment {
            frag |= IP_DF;
        }
        if self.more_fragments {
            frag |= IP_MF;
        }
        let ip_start = frame.len();
        frame.push((self.version << 4) | ihl as u8);
        frame.push(self.tos);
        frame.extend_from_slice(&self.total_length.unwrap_or(tot_len as u16).to_be_bytes());
        frame.extend_from_slice(&self.id.to_be_bytes());
        frame.extend_from_slice(&frag.to_be_bytes());
        frame.push(self.ttl);
        frame.push(self.protocol());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&self.src.octets());
        frame.extend_from_slice(&self.dst.octets());
        frame.extend_from_slice(&self.ip_options);
        let csum = internet_checksum(&frame[ip_start..]);
        frame[ip_start + 10..ip_start + 12].copy_from_slice(&csum.to_be_bytes());

        frame.extend_from_slice(&l4);
        if frame.len() < self.pad_to {
            frame.resize(self.pad_to, 0);
        }
        if let Some(len) = self.truncate {
            frame.truncate(len);
        }
        frame
    }
}

/// Splits an Ethernet + IPv4 frame into fragments of at most `mtu` IPv4 bytes each, as
/// Linux's ip_fragment does: every fragment but the last carries a multiple of 8 payload
/// bytes and MF; all keep the Ethernet header, the IPv4 id, TOS, TTL and protocol; options
/// without the copy flag are replaced by NOPs after the first fragment (the header keeps
/// its length, as ip_options_fragment does); total length and header checksum per
/// fragment. A frame that is already a fragment is split further (offsets continue from
/// its own, the last piece keeps its MF). A frame that fits comes back as the only
/// fragment. Ethernet padding after the IPv4 packet is not carried over.
///
/// Errors: not IPv4, a header that is cut short or invalid, DF set (the sender would get
/// "fragmentation needed" instead), or an `mtu` that leaves fewer than 8 payload bytes.
pub fn fragment(frame: &[u8], mtu: usize) -> Result<Vec<Vec<u8>>, String> {
    let (ihl, tot_len) = ipv4_lengths(frame)?;
    let ip = &frame[ETH_HLEN..ETH_HLEN + tot_len];
    if tot_len <= mtu {
        return Ok(vec![frame[..ETH_HLEN + tot_len].to_vec()]);
    }
    let frag = be16(ip, 6).unwrap_or(0);
    if frag & IP_DF != 0 {
        return Err("DF is set: the packet may not be fragmented".into());
    }
    let chunk = mtu.saturating_sub(ihl) / 8 * 8;
    if chunk == 0 {
        return Err(format!(
            "an MTU of {mtu} leaves no room for 8 payload bytes after a {ihl}-byte header"
        ));
    }
    let base = usize::from(frag & IP_OFFSET_MASK) * 8;
    let payload = &ip[ihl..];
    // Later fragments' header: options without the copy flag (0x80) become NOPs.
    let mut later_header = ip[..ihl].to_vec();
    let mut i = IPV4_HLEN;
    while i < ihl {
        let kind = later_header[i];
        let len = match kind {
            0 => break,
            1 => 1,
            _ => usize::from(*later_header.get(i + 1).unwrap_or(&1)).max(2),
        };
        let end = (i + len).min(ihl);
        if kind & 0x80 == 0 {
            later_header[i..end].fill(1);
        }
        i = end;
    }
    let mut out = Vec::new();
    let mut at = 0;
    while at < payload.len() {
        let len = chunk.min(payload.len() - at);
        let last = at + len == payload.len();
        let header = if at == 0 {
            &ip[..ihl]
        } else {
            &later_header[..]
        };
        let mut f = Vec::with_capacity(ETH_HLEN + ihl + len);
        f.extend_from_slice(&frame[..ETH_HLEN]);
        f.extend_from_slice(header);
        f.extend_from_slice(&payload[at..at + len]);
        let more = !last || frag & IP_MF != 0;
        let field = ((base + at) / 8) as u16 | if more { IP_MF } else { 0 };
        set_ipv4_fields(&mut f, ihl, (ihl + len) as u16, field);
        out.push(f);
        at += len;
    }
    Ok(out)
}

/// Puts fragments of one datagram back together (any order), as a receiver does: the
/// frame of the fragment at offset 0 (Ethernet and IPv4 header) with every payload in
/// place, MF and offset cleared, total length and header checksum recomputed. Errors:
/// fragments of different datagrams (source, destination, id, protocol), a gap or an
/// overlap, no first or no last fragment, a frame that is no IPv4 fragment.
pub fn reassemble(fragments: &[Vec<u8>]) -> Result<Vec<u8>, String> {
    let mut parts = Vec::with_capacity(fragments.len());
    for (n, f) in fragments.iter().enumerate() {
        let (ihl, tot_len) = ipv4_lengths(f).map_err(|e| format!("fragment {n}: {e}"))?;
        let ip = &f[ETH_HLEN..ETH_HLEN + tot_len];
        let frag = be16(ip, 6).unwrap_or(0);
        // source, destination, id, protocol
        let id = (&ip[12..20], &ip[4..6], ip[9]);
        let offset = usize::from(frag & IP_OFFSET_MASK) * 8;
        parts.push((offset, frag & IP_MF != 0, id, ihl, f, &ip[ihl..]));
    }
    parts.sort_by_key(|p| p.0);
    let Some(&(0, _, id, ihl, first, _)) = parts.first() else {
        return Err("no fragment at offset 0".into());
    };
    let mut payload = Vec::new();
    for (n, (offset, _, other, _, _, data)) in parts.iter().enumerate() {
        if *other != id {
            return Err(format!(
                "fragment at offset {offset} belongs to another datagram"
            ));
        }
        if *offset != payload.len() {
            return Err(format!(
                "fragment {n} starts at offset {offset}, the data so far ends at {}",
                payload.len()
            ));
        }
        payload.extend_from_slice(data);
    }
    if parts.last().is_some_and(|p| p.1) {
        return Err("the last fragment has MF set: the datagram is incomplete".into());
    }
    let mut frame = first[..ETH_HLEN + ihl].to_vec();
    frame.extend_from_slice(&payload);
    let tot_len = u16::try_from(ihl + payload.len())
        .map_err(|_| format!("reassembled datagram of {} bytes", ihl + payload.len()))?;
    let flags = be16(first, ETH_HLEN + 6).unwrap_or(0) & IP_DF;
    set_ipv4_fields(&mut frame, ihl, tot_len, flags);
    Ok(frame)
}

/// (IHL in bytes, total length) of an Ethernet + IPv4 frame whose header and total length
/// are all there.
fn ipv4_lengths(frame: &[u8]) -> Result<(usize, usize), String> {
    if be16(frame, 12) != Some(ETH_P_IP) {
        return Err("not an IPv4 frame".into());
    }
    let vihl = *frame.get(ETH_HLEN).ok_or("no IPv4 header")?;
    let ihl = usize::from(vihl & 0x0f) * 4;
    let tot_len = usize::from(be16(frame, ETH_HLEN + 2).ok_or("IPv4 header cut short")?);
    if vihl >> 4 != 4 || ihl < IPV4_HLEN || tot_len < ihl || frame.len() < ETH_HLEN + tot_len {
        return Err("invalid or cut IPv4 header".into());
    }
    Ok((ihl, tot_len))
}

/// Writes total length and the flags/offset field of the IPv4 header of `frame` and
/// recomputes its checksum.
fn set_ipv4_fields(frame: &mut [u8], ihl: usize, tot_len: u16, frag_field: u16) {
    let ip = &mut frame[ETH_HLEN..ETH_HLEN + ihl];
    ip[2..4].copy_from_slice(&tot_len.to_be_bytes());
    ip[6..8].copy_from_slice(&frag_field.to_be_bytes());
    ip[10..12].fill(0);
    let csum = internet_checksum(ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
}

/// How much of the offending packet an ICMP error quotes; the IPv4 header (with its
/// options) always, then:
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quote {
    /// the first 8 bytes of its payload: RFC 792's minimum (a TCP header's ports and
    /// sequence number, a whole UDP header);
    Minimal,
    /// as much as fits in a 576-byte error (548 bytes of the packet), as Linux's
    /// icmp_send quotes.
    Linux,
}

/// The bytes an ICMP error about `offending` (an Ethernet + IPv4 frame) quotes, from its
/// IPv4 header on (see [`Quote`]); never beyond the frame.
pub fn quote_of(offending: &[u8], quote: Quote) -> Vec<u8> {
    let ip = offending.get(ETH_HLEN..).unwrap_or_default();
    let ihl = ip.first().map_or(0, |v| usize::from(v & 0x0f) * 4);
    let len = match quote {
        Quote::Minimal => ihl + 8,
        Quote::Linux => LINUX_QUOTE_MAX,
    };
    ip[..len.min(ip.len())].to_vec()
}

/// The packet an ICMP error (destination unreachable, time exceeded, parameter problem)
/// in `frame` quotes, as far as the quote shows it: addresses, protocol, TTL, and the ports
/// when the quote holds them (TCP flags and numbers are not read). None if `frame` is no
/// such error or its quote holds no IPv4 header.
pub fn parse_icmp_quote(frame: &[u8]) -> Option<Summary> {
    let outer = parse_summary(frame)?;
    match outer.icmp {
        Some((ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM, _)) => {}
        _ => return None,
    }
    let start = ETH_HLEN + outer.ip_header_len + ICMP_HLEN;
    let quote = frame.get(start..)?;
    let vihl = *quote.first()?;
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < IPV4_HLEN || quote.len() < ihl {
        return None;
    }
    let frag = be16(quote, 6)?;
    let l4 = &quote[ihl..];
    let ports = (frag & IP_OFFSET_MASK == 0 && matches!(quote[9], PROTO_TCP | PROTO_UDP))
        .then(|| Some((be16(l4, 0)?, be16(l4, 2)?)))
        .flatten();
    Some(Summary {
        src_mac: outer.src_mac,
        dst_mac: outer.dst_mac,
        src: ipv4_at(quote, 12)?,
        dst: ipv4_at(quote, 16)?,
        proto: quote[9],
        ttl: quote[8],
        ip_header_len: ihl,
        total_len: be16(quote, 2)?,
        fragment: frag & (IP_MF | IP_OFFSET_MASK) != 0,
        sport: ports.map(|p| p.0),
        dport: ports.map(|p| p.1),
        tcp_flags: None,
        seq: None,
        ack: None,
        icmp: None,
    })
}

/// An ARP request (who-has `target` tell `sender`), broadcast.
pub fn arp_request(sender_mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::with_capacity(ETH_HLEN + 28);
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&sender_mac);
    frame.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    frame.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]);
    frame.extend_from_slice(&sender_mac);
    frame.extend_from_slice(&sender.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&target.octets());
    frame
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        *b.get(at + 3)?,
    ]))
}

fn ipv4_at(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    be32(b, at).map(Ipv4Addr::from)
}

/// IPv6 frames: [`ipv6::verify_checksums6`]. IPv4:
/// checks the IPv4 header checksum and, unless the packet is a fragment, the TCP, UDP
/// (a zero UDP checksum means "none" and passes), SCTP (CRC32c) or ICMP checksum. The L4 data is the
/// IPv4 total length's worth (Ethernet padding after it is ignored). Errors name what is
/// wrong: not IPv4, cut short, bad IHL, or which checksum is off (stored vs. computed).
pub fn verify_checksums(frame: &[u8]) -> Result<(), String> {
    let ethertype = be16(frame, 12)
        .ok_or_else(|| format!("frame of {} bytes has no Ethernet header", frame.len()))?;
    if ethertype == ETH_P_IPV6 {
        return ipv6::verify_checksums6(frame);
    }
    if ethertype != ETH_P_IP {
        return Err(format!(
            "ethertype {ethertype:#06x} is neither IPv4 nor IPv6"
        ));
    }
    let ip = &frame[ETH_HLEN..];
    let vihl = *ip.first().ok_or("no IPv4 header")?;
    if vihl >> 4 != 4 {
        return Err(format!("IPv4 version {} is not 4", vihl >> 4));
    }
    let ihl = usize::from(vihl & 0x0f) * 4;
    if ihl < IPV4_HLEN {
        return Err(format!("IHL {} is below 5", ihl / 4));
    }
    if ip.len() < ihl {
        return Err(format!(
            "IPv4 header cut short: {} of {ihl} bytes",
            ip.len()
        ));
    }
    let ip_sum = fold(sum_be_words(&ip[..ihl]));
    if ip_sum != 0xffff {
        let stored = be16(ip, 10).unwrap_or(0);
        let mut hdr = ip[..ihl].to_vec();
        hdr[10] = 0;
        hdr[11] = 0;
        return Err(format!(
            "IPv4 header checksum {stored:#06x}, expected {:#06x}",
            internet_checksum(&hdr)
        ));
    }
    let tot_len = usize::from(be16(ip, 2).unwrap_or(0));
    if tot_len < ihl {
        return Err(format!(
            "IPv4 total length {tot_len} is shorter than the header ({ihl})"
        ));
    }
    if ip.len() < tot_len {
        return Err(format!(
            "packet cut short: {} of {tot_len} IPv4 bytes",
            ip.len()
        ));
    }
    let frag = be16(ip, 6).unwrap_or(0);
    if frag & (IP_MF | IP_OFFSET_MASK) != 0 {
        // The L4 checksum covers the reassembled datagram: nothing to check here.
        return Ok(());
    }
    let proto = ip[9];
    let src = ipv4_at(ip, 12).unwrap_or(Ipv4Addr::UNSPECIFIED);
    let dst = ipv4_at(ip, 16).unwrap_or(Ipv4Addr::UNSPECIFIED);
    let l4 = &ip[ihl..tot_len];
    let (name, sum, stored_at) = match proto {
        PROTO_TCP => {
            if l4.len() < TCP_HLEN {
                return Err(format!("TCP header cut short: {} bytes", l4.len()));
            }
            (
                "TCP",
                fold(pseudo_header_sum(src, dst, proto, l4.len()) + sum_be_words(l4)),
                16,
            )
        }
        PROTO_UDP => {
            if l4.len() < UDP_HLEN {
                return Err(format!("UDP header cut short: {} bytes", l4.len()));
            }
            if be16(l4, 6) == Some(0) {
                return Ok(());
            }
            (
                "UDP",
                fold(pseudo_header_sum(src, dst, proto, l4.len()) + sum_be_words(l4)),
                6,
            )
        }
        PROTO_ICMP => {
            if l4.len() < 4 {
                return Err(format!("ICMP header cut short: {} bytes", l4.len()));
            }
            ("ICMP", fold(sum_be_words(l4)), 2)
        }
        PROTO_SCTP => {
            if l4.len() < SCTP_HLEN {
                return Err(format!("SCTP header cut short: {} bytes", l4.len()));
            }
            let expected = sctp_checksum(l4);
            if l4[8..12] != expected {
                return Err(format!(
                    "SCTP CRC32c {:#010x}, expected {:#010x}",
                    u32::from_le_bytes([l4[8], l4[9], l4[10], l4[11]]),
                    u32::from_le_bytes(expected)
                ));
            }
            return Ok(());
        }
        _ => return Ok(()),
    };
    if sum != 0xffff {
        let stored = be16(l4, stored_at).unwrap_or(0);
        // The sum with the stored field taken out, complemented: what it should hold.
        let expected = !fold(u32::from(sum) + u32::from(!stored));
        return Err(format!(
            "{name} checksum {stored:#06x}, expected {expected:#06x}"
        ));
    }
    Ok(())
}

/// What [`parse_summary`] reads from a frame. Ports, TCP fields and ICMP type/code are
/// present only when the frame carries that header (not for non-first fragments).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub ttl: u8,
    /// IPv4 header length in bytes (20 without options).
    pub ip_header_len: usize,
    pub total_len: u16,
    /// MF set or a fragment offset.
    pub fragment: bool,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub tcp_flags: Option<u8>,
    pub seq: Option<u32>,
    pub ack: Option<u32>,
    /// ICMP (type, code).
    pub icmp: Option<(u8, u8)>,
}

impl Summary {
    pub fn src_socket(&self) -> Option<SocketAddrV4> {
        self.sport.map(|p| SocketAddrV4::new(self.src, p))
    }

    pub fn dst_socket(&self) -> Option<SocketAddrV4> {
        self.dport.map(|p| SocketAddrV4::new(self.dst, p))
    }
}

/// TCP flags as tcpdump prints them: `S`, `S.`, `R.`, `F.`, `P.`...; `.` alone for ACK.
pub fn tcp_flags_label(flags: u8) -> String {
    let mut s = String::new();
    for (bit, c) in [(SYN, 'S'), (FIN, 'F'), (RST, 'R'), (PSH, 'P'), (URG, 'U')] {
        if flags & bit != 0 {
            s.push(c);
        }
    }
    if flags & ACK != 0 {
        s.push('.');
    }
    if s.is_empty() {
        s.push_str("none");
    }
    s
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.proto {
            PROTO_TCP => "TCP".to_string(),
            PROTO_UDP => "UDP".to_string(),
            PROTO_SCTP => "SCTP".to_string(),
            PROTO_ICMP => "ICMP".to_string(),
            p => format!("proto {p}"),
        };
        match (self.sport, self.dport) {
            (Some(s), Some(d)) => write!(f, "{name} {}:{s} > {}:{d}", self.src, self.dst)?,
            _ => write!(f, "{name} {} > {}", self.src, self.dst)?,
        }
        if let Some(flags) = self.tcp_flags {
            write!(
                f,
                " [{}] seq {} ack {}",
                tcp_flags_label(flags),
                self.seq.unwrap_or(0),
                self.ack.unwrap_or(0)
            )?;
        }
        if let Some((t, c)) = self.icmp {
            write!(f, " type {t} code {c}")?;
        }
        if self.fragment {
            f.write_str(" (fragment)")?;
        }
        if self.ip_header_len > IPV4_HLEN {
            write!(
                f,
                " (IPv4 options, {} bytes)",
                self.ip_header_len - IPV4_HLEN
            )?;
        }
        Ok(())
    }
}

/// Reads the Ethernet, IPv4 and (where present) TCP/UDP/ICMP headers. None for a frame
/// that is not IPv4 or whose IPv4 header is cut short or invalid; L4 fields are None when
/// their header is missing or cut short. Checksums are not checked.
pub fn parse_summary(frame: &[u8]) -> Option<Summary> {
    if be16(frame, 12)? != ETH_P_IP {
        return None;
    }
    let mut dst_mac = [0u8; 6];
    dst_mac.copy_from_slice(frame.get(0..6)?);
    let mut src_mac = [0u8; 6];
    src_mac.copy_from_slice(frame.get(6..12)?);
    let ip = frame.get(ETH_HLEN..)?;
    let vihl = *ip.first()?;
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < IPV4_HLEN || ip.len() < ihl {
        return None;
    }
    let frag = be16(ip, 6)?;
    let fragment = frag & (IP_MF | IP_OFFSET_MASK) != 0;
    let mut s = Summary {
        src_mac,
        dst_mac,
        src: ipv4_at(ip, 12)?,
        dst: ipv4_at(ip, 16)?,
        proto: ip[9],
        ttl: ip[8],
        ip_header_len: ihl,
        total_len: be16(ip, 2)?,
        fragment,
        sport: None,
        dport: None,
        tcp_flags: None,
        seq: None,
        ack: None,
        icmp: None,
    };
    // A non-first fragment starts with payload bytes, not a header.
    if frag & IP_OFFSET_MASK != 0 {
        return Some(s);
    }
    let l4 = &ip[ihl..];
    match s.proto {
        PROTO_TCP if l4.len() >= TCP_HLEN => {
            s.sport = be16(l4, 0);
            s.dport = be16(l4, 2);
            s.seq = be32(l4, 4);
            s.ack = be32(l4, 8);
            s.tcp_flags = l4.get(13).copied();
        }
        PROTO_UDP if l4.len() >= UDP_HLEN => {
            s.sport = be16(l4, 0);
            s.dport = be16(l4, 2);
        }
        PROTO_SCTP if l4.len() >= SCTP_HLEN => {
            s.sport = be16(l4, 0);
            s.dport = be16(l4, 2);
        }
        PROTO_ICMP if l4.len() >= 2 => s.icmp = Some((l4[0], l4[1])),
        _ => {}
    }
    Some(s)
}

/// A side-by-side hex dump of two frames, 16 bytes a row, with differing rows marked `*`
/// and differing bytes bracketed in the `got` column. For test failure messages.
pub fn hex_diff(expected: &[u8], got: &[u8]) -> String {
    let mut out = format!(
        "expected {} bytes, got {} bytes\n",
        expected.len(),
        got.len()
    );
    let rows = expected.len().max(got.len()).div_ceil(16);
    for row in 0..rows {
        let range = row * 16..(row + 1) * 16;
        let cell = |data: &[u8], other: &[u8], i: usize, mark: bool| match data.get(i) {
            Some(b) if mark && other.get(i) != Some(b) => format!("[{b:02x}]"),
            Some(b) => format!(" {b:02x} "),
            None => "    ".to_string(),
        };
        let e: String = range
            .clone()
            .map(|i| cell(expected, got, i, false))
            .collect();
        let g: String = range
            .clone()
            .map(|i| cell(got, expected, i, true))
            .collect();
        let differs = range.clone().any(|i| expected.get(i) != got.get(i));
        out.push_str(&format!(
            "{} {:04x} exp {e}\n       got {g}\n",
            if differs { '*' } else { ' ' },
            row * 16
        ));
    }
    out
}

#[cfg(test)]
mod tests;
