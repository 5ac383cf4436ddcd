//! Ethernet + ARP frames, pure: parsing what arrives and building what the responder
//! sends. No I/O; every function is total (no input makes one panic).
//!
//! Only Ethernet/IPv4 ARP in an untagged Ethernet II frame is understood (htype 1, ptype
//! 0x0800, hlen 6, plen 4). An 802.1Q-tagged frame is not parsed: on Linux a VLAN is
//! announced on its VLAN device (`eth0.100`), where the kernel has already removed the tag.
use std::net::Ipv4Addr;

/// An Ethernet (EUI-48) address.
pub type Mac = [u8; 6];

/// The Ethernet broadcast address.
pub const BROADCAST: Mac = [0xff; 6];

/// The all-zero address: the "unknown" target hardware address of an ARP request.
pub const ZERO_MAC: Mac = [0; 6];

/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of IPv4 (ARP's protocol type).
const ETHERTYPE_IPV4: u16 = 0x0800;
/// ARP hardware type of Ethernet.
const HTYPE_ETHERNET: u16 = 1;

/// Ethernet header length (no tag).
pub const ETH_HLEN: usize = 14;
/// The ARP payload for Ethernet/IPv4.
pub const ARP_LEN: usize = 28;
/// A whole Ethernet/IPv4 ARP frame as built here (no padding: the NIC pads to 60 bytes).
pub const FRAME_LEN: usize = ETH_HLEN + ARP_LEN;

/// The ARP operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Request,
    Reply,
}

impl Op {
    fn code(self) -> u16 {
        match self {
            Op::Request => 1,
            Op::Reply => 2,
        }
    }
}

/// An Ethernet/IPv4 ARP frame, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpFrame {
    /// Ethernet destination.
    pub eth_dst: Mac,
    /// Ethernet source.
    pub eth_src: Mac,
    pub op: Op,
    /// Sender hardware address (SHA).
    pub sender_mac: Mac,
    /// Sender protocol address (SPA); 0.0.0.0 in an RFC 5227 probe.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address (THA); usually zero in a request.
    pub target_mac: Mac,
    /// Target protocol address (TPA): the address asked for, in a request.
    pub target_ip: Ipv4Addr,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn mac(b: &[u8], at: usize) -> Option<Mac> {
    b.get(at..at + 6)?.try_into().ok()
}

fn ipv4(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let o: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(Ipv4Addr::from(o))
}

/// Parse an Ethernet II frame carrying Ethernet/IPv4 ARP (request or reply).
///
/// `None` for anything else: too short, another EtherType (a VLAN tag included), another
/// hardware or protocol type or length, an operation other than request (1) or reply (2).
/// Bytes after the 28 ARP bytes (Ethernet padding) are ignored.
pub fn parse(frame: &[u8]) -> Option<ArpFrame> {
    if be16(frame, 12)? != ETHERTYPE_ARP {
        return None;
    }
    let arp = frame.get(ETH_HLEN..ETH_HLEN + ARP_LEN)?;
    if be16(arp, 0)? != HTYPE_ETHERNET
        || be16(arp, 2)? != ETHERTYPE_IPV4
        || arp[4] != 6
        || arp[5] != 4
    {
        return None;
    }
    let op = match be16(arp, 6)? {
        1 => Op::Request,
        2 => Op::Reply,
        _ => return None,
    };
    Some(ArpFrame {
        eth_dst: mac(frame, 0)?,
        eth_src: mac(frame, 6)?,
        op,
        sender_mac: mac(arp, 8)?,
        sender_ip: ipv4(arp, 14)?,
        target_mac: mac(arp, 18)?,
        target_ip: ipv4(arp, 24)?,
    })
}

/// Parse `frame` and keep it only if it is an ARP request: the only frames the responder
/// acts on.
pub fn parse_request(frame: &[u8]) -> Option<ArpFrame> {
    parse(frame).filter(|f| f.op == Op::Request)
}

/// Whether a request received on a device with address `device_mac` is one the responder
/// answers when it announces `announced` (the caller checks that the target is announced).
///
/// Answered: requests sent to the broadcast address or to the device's MAC (a unicast
/// refresh of a cached entry), whose sender is not the device itself. Requests from sender
/// 0.0.0.0 (RFC 5227 probes: a host checking whether an address is free before taking it)
/// ARE answered, as MetalLB does and as the Linux kernel does for its own addresses: the
/// answer is how the prober learns the address is in use (RFC 5227 section 2.1.1), which
/// is what keeps a misconfigured host from taking a Service's address.
pub fn is_answerable(req: &ArpFrame, device_mac: Mac) -> bool {
    req.op == Op::Request
        && (req.eth_dst == BROADCAST || req.eth_dst == device_mac)
        && req.sender_mac != device_mac
        && req.eth_src != device_mac
}

fn write(
    eth_dst: Mac,
    eth_src: Mac,
    op: Op,
    sha: Mac,
    spa: Ipv4Addr,
    tha: Mac,
    tpa: Ipv4Addr,
) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&eth_dst);
    f[6..12].copy_from_slice(&eth_src);
    f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    let a = &mut f[ETH_HLEN..];
    a[0..2].copy_from_slice(&HTYPE_ETHERNET.to_be_bytes());
    a[2..4].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    a[4] = 6;
    a[5] = 4;
    a[6..8].copy_from_slice(&op.code().to_be_bytes());
    a[8..14].copy_from_slice(&sha);
    a[14..18].copy_from_slice(&spa.octets());
    a[18..24].copy_from_slice(&tha);
    a[24..28].copy_from_slice(&tpa.octets());
    f
}

/// The reply to `req` for `ip` (the address asked for) from a device with `device_mac`:
/// unicast to the requester's hardware address, sender = (`device_mac`, `ip`), target =
/// the requester (its SHA and SPA; SPA 0.0.0.0 for a probe, as the kernel answers).
pub fn reply(req: &ArpFrame, device_mac: Mac, ip: Ipv4Addr) -> [u8; FRAME_LEN] {
    write(
        req.sender_mac,
        device_mac,
        Op::Reply,
        device_mac,
        ip,
        req.sender_mac,
        req.sender_ip,
    )
}

/// The gratuitous ARP frames announcing `ip` at `device_mac`, both broadcast, in the
/// order sent:
///
/// 1. request-style, an RFC 5227 "ARP Announcement": op request, SPA = TPA = `ip`,
///    THA zero;
/// 2. reply-style: op reply, SPA = TPA = `ip`, THA = SHA = `device_mac` (what
///    `arping -A` sends).
///
/// Why both (MetalLB sends both too): neighbour caches differ in which form they honour.
/// Linux updates an existing entry from either form when it counts as gratuitous
/// (`arp_is_garp`: SPA == TPA, and for a reply also THA == SHA, which is why THA is not
/// the broadcast address MetalLB puts there), and then overrides even an entry updated
/// less than `locktime` ago; some routers and older stacks act only on replies, others
/// only on requests. Two 42-byte broadcasts per round cost nothing. Neither form creates
/// an entry in a Linux host with the default `arp_accept=0`; they only update entries
/// that exist, which is what failover needs.
pub fn gratuitous(device_mac: Mac, ip: Ipv4Addr) -> [[u8; FRAME_LEN]; 2] {
    [
        write(
            BROADCAST,
            device_mac,
            Op::Request,
            device_mac,
            ip,
            ZERO_MAC,
            ip,
        ),
        write(
            BROADCAST,
            device_mac,
            Op::Reply,
            device_mac,
            ip,
            device_mac,
            ip,
        ),
    ]
}

/// A broadcast ARP request from `sender` asking for `target`: what a host sends to
/// resolve an address (for tests and tools).
pub fn request(sender_mac: Mac, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> [u8; FRAME_LEN] {
    write(
        BROADCAST,
        sender_mac,
        Op::Request,
        sender_mac,
        sender_ip,
        ZERO_MAC,
        target_ip,
    )
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(m: &Mac) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: Mac = [0x02, 0, 0, 0, 0x02, 0x02];
    const NODE: Mac = [0x02, 0, 0, 0, 0x01, 0x01];
    const HOST_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
    const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);

    /// A request as captured from Linux (`arping`/the kernel), byte by byte, padded to 60.
    fn captured_request() -> Vec<u8> {
        let mut f = vec![
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst
            0x02, 0x00, 0x00, 0x00, 0x02, 0x02, // src
            0x08, 0x06, // ARP
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // eth/ipv4, request
            0x02, 0x00, 0x00, 0x00, 0x02, 0x02, 192, 0, 2, 100, // sender
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 192, 0, 2, 200, // target
        ];
        f.resize(60, 0);
        f
    }

    #[test]
    fn parses_a_captured_request() {
        let f = parse_request(&captured_request()).unwrap();
        assert_eq!(
            f,
            ArpFrame {
                eth_dst: BROADCAST,
                eth_src: HOST,
                op: Op::Request,
                sender_mac: HOST,
                sender_ip: HOST_IP,
                target_mac: ZERO_MAC,
                target_ip: VIP,
            }
        );
        // The builder writes the same bytes (without the padding).
        assert_eq!(
            request(HOST, HOST_IP, VIP)[..],
            captured_request()[..FRAME_LEN]
        );
    }

    #[test]
    fn every_truncation_and_garbage_is_none_without_panic() {
        let full = captured_request();
        for len in 0..FRAME_LEN {
            assert_eq!(parse(&full[..len]), None, "truncated to {len}");
        }
        // From 42 bytes on, padding is optional.
        for len in FRAME_LEN..=full.len() {
            assert!(parse(&full[..len]).is_some(), "length {len}");
        }
        // Every single-byte change of a header field that must match is refused.
        for (at, v) in [
            (12, 0x86),
            (13, 0x00),
            (14, 0x01),
            (15, 0x06),
            (16, 0x86),
            (18, 0x10),
            (19, 0x10),
            (21, 0x03),
            (20, 0x01),
        ] {
            let mut f = full.clone();
            f[at] = v;
            assert_eq!(parse(&f), None, "byte {at} = {v:#x}");
        }
        // An 802.1Q-tagged request is not parsed.
        let mut tagged = full[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
        tagged.extend_from_slice(&full[12..]);
        assert_eq!(parse(&tagged), None);
        // Deterministic garbage of every length up to 128, and all-0xff / all-zero frames.
        let mut x: u32 = 0x1234_5678;
        for len in 0..128 {
            let g: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = parse(&g);
            let _ = parse_request(&g);
            assert_eq!(parse(&vec![0u8; len]), None);
            assert_eq!(parse(&vec![0xffu8; len]), None);
        }
        // Garbage with a valid ARP header prefix parses only if the op is 1 or 2.
        for op in 0..=255u8 {
            let mut f = full.clone();
            f[21] = op;
            assert_eq!(parse(&f).is_some(), op == 1 || op == 2, "op {op}");
            assert_eq!(parse_request(&f).is_some(), op == 1, "op {op}");
        }
    }

    #[test]
    fn a_reply_is_not_a_request() {
        let r = reply(&parse(&captured_request()).unwrap(), NODE, VIP);
        assert_eq!(parse(&r).unwrap().op, Op::Reply);
        assert_eq!(parse_request(&r), None);
    }

    #[test]
    fn reply_goes_to_the_requester_from_the_device() {
        let req = parse(&captured_request()).unwrap();
        let r = reply(&req, NODE, VIP);
        assert_eq!(
            r[..],
            [
                0x02, 0x00, 0x00, 0x00, 0x02, 0x02, // to the requester
                0x02, 0x00, 0x00, 0x00, 0x01, 0x01, // from the device
                0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02, // reply
                0x02, 0x00, 0x00, 0x00, 0x01, 0x01, 192, 0, 2, 200, // sender: device, VIP
                0x02, 0x00, 0x00, 0x00, 0x02, 0x02, 192, 0, 2, 100, // target: requester
            ][..]
        );
        let p = parse(&r).unwrap();
        assert_eq!((p.eth_dst, p.eth_src), (HOST, NODE));
        assert_eq!((p.sender_mac, p.sender_ip), (NODE, VIP));
        assert_eq!((p.target_mac, p.target_ip), (HOST, HOST_IP));
    }

    #[test]
    fn a_probe_is_answered_to_its_mac_with_target_ip_zero() {
        let probe = request(HOST, Ipv4Addr::UNSPECIFIED, VIP);
        let req = parse_request(&probe).unwrap();
        assert!(is_answerable(&req, NODE));
        let p = parse(&reply(&req, NODE, VIP)).unwrap();
        assert_eq!(p.eth_dst, HOST);
        assert_eq!((p.target_mac, p.target_ip), (HOST, Ipv4Addr::UNSPECIFIED));
    }

    #[test]
    fn answerable_requests() {
        let req = parse_request(&request(HOST, HOST_IP, VIP)).unwrap();
        assert!(is_answerable(&req, NODE));
        // Unicast to the device (a cache refresh): answered.
        assert!(is_answerable(
            &ArpFrame {
                eth_dst: NODE,
                ..req
            },
            NODE
        ));
        // Unicast to some other host (seen in promiscuous mode): not ours.
        assert!(!is_answerable(
            &ArpFrame {
                eth_dst: HOST,
                ..req
            },
            NODE
        ));
        // Our own frames (looped back, or another socket of this node): never.
        assert!(!is_answerable(
            &ArpFrame {
                sender_mac: NODE,
                ..req
            },
            NODE
        ));
        assert!(!is_answerable(
            &ArpFrame {
                eth_src: NODE,
                ..req
            },
            NODE
        ));
        // Replies: never.
        assert!(!is_answerable(
            &ArpFrame {
                op: Op::Reply,
                ..req
            },
            NODE
        ));
    }

    #[test]
    fn gratuitous_frames() {
        let [req, rep] = gratuitous(NODE, VIP);
        let q = parse(&req).unwrap();
        assert_eq!(
            q,
            ArpFrame {
                eth_dst: BROADCAST,
                eth_src: NODE,
                op: Op::Request,
                sender_mac: NODE,
                sender_ip: VIP,
                target_mac: ZERO_MAC,
                target_ip: VIP,
            }
        );
        let r = parse(&rep).unwrap();
        assert_eq!(
            r,
            ArpFrame {
                eth_dst: BROADCAST,
                eth_src: NODE,
                op: Op::Reply,
                sender_mac: NODE,
                sender_ip: VIP,
                target_mac: NODE,
                target_ip: VIP,
            }
        );
        // A gratuitous request is not answerable by its own sender.
        assert!(!is_answerable(&q, NODE));
    }

    #[test]
    fn mac_format() {
        assert_eq!(
            format_mac(&[0x02, 0xab, 0, 1, 0x10, 0xff]),
            "02:ab:00:01:10:ff"
        );
    }
}
