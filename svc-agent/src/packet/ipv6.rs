//! Ethernet + IPv6 frames as bytes: TCP, UDP and ICMPv6 (neighbour discovery, echo) with
//! checksums over the IPv6 pseudo-header (RFC 8200 8.1), behind any chain of extension
//! headers, for the fixtures and the benchmark of the programs' IPv6 path
//! (svc-agent/tests/datapath/ipv6.rs).
//!
//! ```
//! use std::net::SocketAddrV6;
//! use svc_agent::packet::{Ipv6Builder, Ipv6Ext, SYN};
//! let src: SocketAddrV6 = "[fd00:10:244:1::20]:40000".parse().unwrap();
//! let dst: SocketAddrV6 = "[fd00:10:96::10]:80".parse().unwrap();
//! let frame = Ipv6Builder::tcp(src, dst).flags(SYN).ext(Ipv6Ext::DestOpts(6)).build();
//! assert_eq!(frame.len(), 14 + 40 + 8 + 20);
//! ```
use std::net::{Ipv6Addr, SocketAddrV6};

use super::{DEFAULT_DST_MAC, DEFAULT_SRC_MAC, ETH_HLEN, PROTO_TCP, PROTO_UDP, fold, sum_be_words};

/// The IPv6 EtherType.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// ICMPv6's next-header number.
pub const PROTO_ICMPV6: u8 = 58;
/// Extension header numbers (RFC 8200 4.1).
pub const NEXT_HOP_BY_HOP: u8 = 0;
pub const NEXT_ROUTING: u8 = 43;
pub const NEXT_FRAGMENT: u8 = 44;
pub const NEXT_DEST_OPTS: u8 = 60;
/// ICMPv6 types (RFC 4443, RFC 4861).
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
pub const ICMPV6_NEIGHBOR_SOLICIT: u8 = 135;

const IPV6_HLEN: usize = 40;

/// One extension header before the L4 header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv6Ext {
    /// Hop-by-hop options with this many bytes of PadN (the header is padded to 8 bytes).
    HopByHop(u8),
    /// Destination options, likewise.
    DestOpts(u8),
    /// A routing header of type 4 (segment routing) with no segments left: 8 bytes.
    Routing,
    /// A fragment header: offset in 8-byte units, the M flag, the identification.
    Fragment {
        offset_units: u16,
        more: bool,
        id: u32,
    },
}

impl Ipv6Ext {
    fn number(self) -> u8 {
        match self {
            Ipv6Ext::HopByHop(_) => NEXT_HOP_BY_HOP,
            Ipv6Ext::DestOpts(_) => NEXT_DEST_OPTS,
            Ipv6Ext::Routing => NEXT_ROUTING,
            Ipv6Ext::Fragment { .. } => NEXT_FRAGMENT,
        }
    }

    /// The header's bytes, with `next` as its next-header field.
    fn bytes(self, next: u8) -> Vec<u8> {
        match self {
            Ipv6Ext::HopByHop(pad) | Ipv6Ext::DestOpts(pad) => {
                // Next header, length, then PadN options (type 1, length, zeros) filling
                // `pad` bytes or more, rounded up to a multiple of 8 in all.
                let body = 2 + usize::from(pad).max(6);
                let total = body.div_ceil(8) * 8;
                let mut h = vec![next, (total / 8 - 1) as u8];
                let mut left = total - 2;
                while left > 0 {
                    if left == 1 {
                        h.push(0); // Pad1
                        left = 0;
                    } else {
                        let n = (left - 2).min(255);
                        h.push(1);
                        h.push(n as u8);
                        h.extend(std::iter::repeat_n(0, n));
                        left -= n + 2;
                    }
                }
                h
            }
            Ipv6Ext::Routing => vec![next, 0, 4, 0, 0, 0, 0, 0],
            Ipv6Ext::Fragment {
                offset_units,
                more,
                id,
            } => {
                let field = (offset_units << 3) | u16::from(more);
                let mut h = vec![next, 0];
                h.extend_from_slice(&field.to_be_bytes());
                h.extend_from_slice(&id.to_be_bytes());
                h
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum L4v6 {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
        seq: u32,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    Icmpv6 {
        kind: u8,
        code: u8,
        rest: [u8; 4],
    },
}

/// Builds one Ethernet + IPv6 frame: MACs [`DEFAULT_SRC_MAC`] -> [`DEFAULT_DST_MAC`], hop
/// limit 64, no extension headers, no payload; checksums over the pseudo-header with the
/// final destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv6Builder {
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    exts: Vec<Ipv6Ext>,
    l4: L4v6,
    payload: Vec<u8>,
    truncate: Option<usize>,
}

impl Ipv6Builder {
    fn new(src: Ipv6Addr, dst: Ipv6Addr, l4: L4v6) -> Self {
        Ipv6Builder {
            src,
            dst,
            hop_limit: 64,
            exts: Vec::new(),
            l4,
            payload: Vec::new(),
            truncate: None,
        }
    }

    /// A TCP segment (flags 0 until [`flags`](Self::flags) sets them).
    pub fn tcp(src: SocketAddrV6, dst: SocketAddrV6) -> Self {
        let l4 = L4v6::Tcp {
            sport: src.port(),
            dport: dst.port(),
            flags: 0,
            seq: 0,
        };
        Self::new(*src.ip(), *dst.ip(), l4)
    }

    /// A UDP datagram.
    pub fn udp(src: SocketAddrV6, dst: SocketAddrV6) -> Self {
        let l4 = L4v6::Udp {
            sport: src.port(),
            dport: dst.port(),
        };
        Self::new(*src.ip(), *dst.ip(), l4)
    }

    /// An ICMPv6 message: type, code, the 4 bytes after the checksum, then the payload.
    pub fn icmpv6(src: Ipv6Addr, dst: Ipv6Addr, kind: u8, code: u8, rest: [u8; 4]) -> Self {
        Self::new(src, dst, L4v6::Icmpv6 { kind, code, rest })
    }

    /// A neighbour solicitation for `target` from `src`, to its solicited-node multicast
    /// address, with the source link-layer address option (RFC 4861 4.3); hop limit 255.
    pub fn neighbor_solicitation(src: Ipv6Addr, target: Ipv6Addr, src_mac: [u8; 6]) -> Self {
        let t = target.octets();
        let dst = Ipv6Addr::new(
            0xff02,
            0,
            0,
            0,
            0,
            1,
            0xff00 | u16::from(t[13]),
            u16::from_be_bytes([t[14], t[15]]),
        );
        let mut payload = t.to_vec();
        payload.extend_from_slice(&[1, 1]);
        payload.extend_from_slice(&src_mac);
        let mut b = Self::icmpv6(src, dst, ICMPV6_NEIGHBOR_SOLICIT, 0, [0; 4]).payload(&payload);
        b.hop_limit = 255;
        b
    }

    /// TCP flags.
    pub fn flags(mut self, f: u8) -> Self {
        if let L4v6::Tcp { flags, .. } = &mut self.l4 {
            *flags = f;
        }
        self
    }

    /// An extension header, after those given before.
    pub fn ext(mut self, e: Ipv6Ext) -> Self {
        self.exts.push(e);
        self
    }

    pub fn payload(mut self, p: &[u8]) -> Self {
        self.payload = p.to_vec();
        self
    }

    /// Cut the finished frame to `len` bytes (checksums stay those of the whole packet).
    pub fn truncate(mut self, len: usize) -> Self {
        self.truncate = Some(len);
        self
    }

    fn l4_number(&self) -> u8 {
        match self.l4 {
            L4v6::Tcp { .. } => PROTO_TCP,
            L4v6::Udp { .. } => PROTO_UDP,
            L4v6::Icmpv6 { .. } => PROTO_ICMPV6,
        }
    }

    /// The L4 header and payload, checksummed over the pseudo-header.
    fn l4_bytes(&self) -> Vec<u8> {
        let mut seg = match self.l4 {
            L4v6::Tcp {
                sport,
                dport,
                flags,
                seq,
            } => {
                let mut s = Vec::with_capacity(20 + self.payload.len());
                s.extend_from_slice(&sport.to_be_bytes());
                s.extend_from_slice(&dport.to_be_bytes());
                s.extend_from_slice(&seq.to_be_bytes());
                s.extend_from_slice(&[0; 4]);
                s.extend_from_slice(&[5 << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
                s
            }
            L4v6::Udp { sport, dport } => {
                let len = (8 + self.payload.len()) as u16;
                let mut s = Vec::with_capacity(8 + self.payload.len());
                s.extend_from_slice(&sport.to_be_bytes());
                s.extend_from_slice(&dport.to_be_bytes());
                s.extend_from_slice(&len.to_be_bytes());
                s.extend_from_slice(&[0, 0]);
                s
            }
            L4v6::Icmpv6 { kind, code, rest } => {
                let mut s = vec![kind, code, 0, 0];
                s.extend_from_slice(&rest);
                s
            }
        };
        seg.extend_from_slice(&self.payload);
        let csum = checksum6(self.src, self.dst, self.l4_number(), &seg);
        let at = match self.l4 {
            L4v6::Tcp { .. } => 16,
            L4v6::Udp { .. } => 6,
            L4v6::Icmpv6 { .. } => 2,
        };
        // UDP over IPv6 has no "no checksum": a computed zero is sent as all ones.
        let csum = if csum == 0 { 0xffff } else { csum };
        seg[at..at + 2].copy_from_slice(&csum.to_be_bytes());
        seg
    }

    /// The frame.
    pub fn build(&self) -> Vec<u8> {
        let l4 = self.l4_bytes();
        // Each header names the next: the L4 protocol after the last extension header.
        let numbers: Vec<u8> = self
            .exts
            .iter()
            .map(|e| e.number())
            .chain([self.l4_number()])
            .collect();
        let mut exts = Vec::new();
        for (i, e) in self.exts.iter().enumerate() {
            exts.extend(e.bytes(numbers[i + 1]));
        }
        let payload_len = (exts.len() + l4.len()) as u16;
        let mut frame = Vec::with_capacity(ETH_HLEN + IPV6_HLEN + payload_len as usize);
        frame.extend_from_slice(&DEFAULT_DST_MAC);
        frame.extend_from_slice(&DEFAULT_SRC_MAC);
        frame.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
        frame.extend_from_slice(&[0x60, 0, 0, 0]);
        frame.extend_from_slice(&payload_len.to_be_bytes());
        frame.push(numbers[0]);
        frame.push(self.hop_limit);
        frame.extend_from_slice(&self.src.octets());
        frame.extend_from_slice(&self.dst.octets());
        frame.extend_from_slice(&exts);
        frame.extend_from_slice(&l4);
        if let Some(len) = self.truncate {
            frame.truncate(len);
        }
        frame
    }
}

/// The TCP / UDP / ICMPv6 checksum of `segment` over the IPv6 pseudo-header (source,
/// destination, upper-layer length, next header).
pub fn checksum6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, segment: &[u8]) -> u16 {
    let len = segment.len() as u32;
    let pseudo = sum_be_words(&src.octets())
        + sum_be_words(&dst.octets())
        + (len >> 16)
        + (len & 0xffff)
        + u32::from(next);
    !fold(pseudo + sum_be_words(segment))
}

/// Checks an IPv6 frame's upper-layer checksum (TCP, UDP or ICMPv6, after any hop-by-hop,
/// routing, destination options and atomic fragment headers) over the pseudo-header, and
/// that the payload length matches the frame. Frames of other protocols, and fragments of a
/// datagram (whose checksum covers the whole datagram), pass.
pub fn verify_checksums6(frame: &[u8]) -> Result<(), String> {
    let ip = frame
        .get(ETH_HLEN..ETH_HLEN + IPV6_HLEN)
        .ok_or_else(|| format!("IPv6 header cut short: frame of {} bytes", frame.len()))?;
    if ip[0] >> 4 != 6 {
        return Err(format!("IP version {} is not 6", ip[0] >> 4));
    }
    let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let payload = frame
        .get(ETH_HLEN + IPV6_HLEN..ETH_HLEN + IPV6_HLEN + payload_len)
        .ok_or_else(|| {
            format!(
                "payload length {payload_len} beyond the frame ({} bytes)",
                frame.len()
            )
        })?;
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).expect("16 bytes"));
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).expect("16 bytes"));
    let (mut next, mut off) = (ip[6], 0usize);
    loop {
        match next {
            NEXT_HOP_BY_HOP | NEXT_ROUTING | NEXT_DEST_OPTS => {
                let h = payload
                    .get(off..off + 2)
                    .ok_or("extension header cut short")?;
                next = h[0];
                off += (usize::from(h[1]) + 1) * 8;
            }
            NEXT_FRAGMENT => {
                let h = payload
                    .get(off..off + 8)
                    .ok_or("fragment header cut short")?;
                // A fragment's L4 checksum covers the whole datagram, which one fragment
                // does not hold: nothing to verify.
                if u16::from_be_bytes([h[2], h[3]]) != 0 {
                    return Ok(());
                }
                next = h[0];
                off += 8;
            }
            _ => break,
        }
    }
    if !matches!(next, PROTO_TCP | PROTO_UDP | PROTO_ICMPV6) {
        return Ok(());
    }
    let segment = payload
        .get(off..)
        .ok_or("extension headers beyond the payload")?;
    if checksum6(src, dst, next, segment) != 0 {
        return Err(format!(
            "IPv6 next header {next}: checksum over the pseudo-header does not verify"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::SYN;

    #[test]
    fn built_frames_verify_and_a_changed_address_does_not() {
        let frame = Ipv6Builder::tcp(sa("[fd00::1]:1000"), sa("[fd00::2]:80"))
            .flags(SYN)
            .ext(Ipv6Ext::HopByHop(4))
            .build();
        verify_checksums6(&frame).unwrap();
        let udp = Ipv6Builder::udp(sa("[fd00::1]:1000"), sa("[fd00::2]:53"))
            .payload(b"q")
            .build();
        verify_checksums6(&udp).unwrap();
        let mut moved = frame.clone();
        moved[14 + 39] ^= 1;
        assert!(verify_checksums6(&moved).is_err());
    }

    fn sa(s: &str) -> SocketAddrV6 {
        s.parse().unwrap()
    }

    /// The checksum field verifies: the sum over pseudo-header and segment folds to 0.
    fn verifies(frame: &[u8], l4_at: usize, next: u8) -> bool {
        let src = Ipv6Addr::from(<[u8; 16]>::try_from(&frame[22..38]).unwrap());
        let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&frame[38..54]).unwrap());
        checksum6(src, dst, next, &frame[l4_at..]) == 0
    }

    #[test]
    fn tcp_udp_and_icmpv6_checksums_verify() {
        let (src, dst) = (sa("[fd00:10:244:1::20]:40000"), sa("[fd00:10:96::10]:80"));
        let syn = Ipv6Builder::tcp(src, dst).flags(SYN).build();
        assert_eq!(syn.len(), 14 + 40 + 20);
        assert_eq!(&syn[12..14], &[0x86, 0xdd]);
        assert_eq!(syn[14] >> 4, 6);
        assert_eq!(syn[20], PROTO_TCP);
        assert_eq!(u16::from_be_bytes([syn[18], syn[19]]), 20);
        assert!(verifies(&syn, 54, PROTO_TCP));

        let udp = Ipv6Builder::udp(src, dst).payload(b"ping").build();
        assert!(verifies(&udp, 54, PROTO_UDP));
        assert_ne!(&udp[60..62], &[0, 0], "UDP over IPv6 always has a checksum");

        let ns = Ipv6Builder::neighbor_solicitation(
            "fd00:10:244:1::20".parse().unwrap(),
            "fd00:10:244:1::1".parse().unwrap(),
            [2, 0, 0, 0, 0, 1],
        )
        .build();
        assert_eq!(ns[21], 255, "hop limit 255");
        assert_eq!(
            &ns[38..54],
            &"ff02::1:ff00:1".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(ns[54], ICMPV6_NEIGHBOR_SOLICIT);
        assert!(verifies(&ns, 54, PROTO_ICMPV6));
    }

    #[test]
    fn extension_headers_chain_to_the_l4_header() {
        let (src, dst) = (sa("[fd00::1]:1"), sa("[fd00::2]:2"));
        let frame = Ipv6Builder::udp(src, dst)
            .ext(Ipv6Ext::HopByHop(4))
            .ext(Ipv6Ext::Routing)
            .ext(Ipv6Ext::Fragment {
                offset_units: 0,
                more: true,
                id: 7,
            })
            .ext(Ipv6Ext::DestOpts(13))
            .payload(b"x")
            .build();
        // IPv6 says hop-by-hop; each header names the next; UDP last.
        assert_eq!(frame[20], NEXT_HOP_BY_HOP);
        let mut at = 54;
        let mut next = frame[20];
        let mut seen = Vec::new();
        while next != PROTO_UDP {
            seen.push(next);
            let len = if next == NEXT_FRAGMENT {
                8
            } else {
                (usize::from(frame[at + 1]) + 1) * 8
            };
            next = frame[at];
            at += len;
        }
        assert_eq!(
            seen,
            [NEXT_HOP_BY_HOP, NEXT_ROUTING, NEXT_FRAGMENT, NEXT_DEST_OPTS]
        );
        // Destination options with 13 bytes of padding: 16 bytes.
        assert_eq!(frame.len() - at, 8 + 1);
        assert_eq!(
            usize::from(u16::from_be_bytes([frame[18], frame[19]])),
            frame.len() - 54
        );
        assert!(verifies(&frame, at, PROTO_UDP));
        // The fragment header: M set, id 7.
        let frag = 54 + 8 + 8;
        assert_eq!(&frame[frag + 2..frag + 8], &[0, 1, 0, 0, 0, 7]);
    }
}
