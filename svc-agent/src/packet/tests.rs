//! Unit tests of `packet`.
use super::*;

fn sa(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn crc32c_matches_the_check_values() {
    // The CRC catalogue's check value for CRC-32C, and RFC 3720 B.4's 32 zero bytes.
    assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    assert_eq!(crc32c(&[0; 32]), 0x8a91_36aa);
    assert_eq!(crc32c(&[0xff; 32]), 0x62a8_ab43);
}

#[test]
fn sctp_packets_carry_a_valid_crc_that_ignores_the_addresses() {
    let frame = PacketBuilder::sctp(sa("10.244.1.20:5000"), sa("10.96.0.40:5000"), 7, SCTP_INIT)
        .payload(b"init!")
        .build();
    // 12-byte common header + a 9-byte chunk padded to 12.
    assert_eq!(frame.len(), 14 + 20 + 12 + 12);
    verify_checksums(&frame).unwrap();
    let s = parse_summary(&frame).unwrap();
    assert_eq!(
        (s.proto, s.sport, s.dport),
        (PROTO_SCTP, Some(5000), Some(5000))
    );
    // The same packet between other addresses has the same SCTP bytes: the CRC covers
    // no pseudo-header, so DNAT by address alone keeps it valid.
    let other = PacketBuilder::sctp(sa("192.0.2.1:5000"), sa("10.244.1.11:5000"), 7, SCTP_INIT)
        .payload(b"init!")
        .build();
    assert_eq!(frame[34..], other[34..]);
    // A port change does not.
    let moved = PacketBuilder::sctp(sa("10.244.1.20:5000"), sa("10.96.0.40:5001"), 7, SCTP_INIT)
        .payload(b"init!")
        .build();
    assert_ne!(frame[42..46], moved[42..46]);
    let mut broken = frame.clone();
    broken[34 + 2] ^= 1;
    let err = verify_checksums(&broken).unwrap_err();
    assert!(err.starts_with("SCTP CRC32c"), "{err}");
    let bad = PacketBuilder::sctp(sa("10.244.1.20:5000"), sa("10.96.0.40:5000"), 7, SCTP_DATA)
        .sctp_bad_checksum()
        .build();
    assert!(verify_checksums(&bad).is_err());
}

#[test]
fn ipv4_header_checksum_matches_the_textbook_example() {
    // 4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7: the worked example of the
    // IPv4 header checksum (total length 0x73 = 20 + 8 + 87, DF, TTL 64, UDP).
    let frame = PacketBuilder::udp(sa("192.168.0.1:1"), sa("192.168.0.199:2"))
        .dont_fragment(true)
        .payload(&[0; 87])
        .build();
    assert_eq!(
        &frame[14..34],
        &[
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7
        ]
    );
    verify_checksums(&frame).unwrap();
}

#[test]
fn udp_checksum_matches_a_hand_computed_value() {
    // Pseudo-header 0a00+0001 + 0a00+0002 + 0011 + 0008 = 0x141c; header
    // 0001+0002+0008+0000 = 0x000b; sum 0x1427; checksum !0x1427 = 0xebd8.
    let frame = PacketBuilder::udp(sa("10.0.0.1:1"), sa("10.0.0.2:2")).build();
    assert_eq!(
        &frame[34..42],
        &[0x00, 0x01, 0x00, 0x02, 0x00, 0x08, 0xeb, 0xd8]
    );
    verify_checksums(&frame).unwrap();
}

#[test]
fn icmp_echo_checksum_matches_a_hand_computed_value() {
    // 0800 + 0000 + 0001 + 0001 = 0x0802; checksum 0xf7fd.
    let frame = PacketBuilder::icmp_echo(ip("10.0.0.1"), ip("10.0.0.2"), 1, 1).build();
    assert_eq!(
        &frame[34..42],
        &[0x08, 0x00, 0xf7, 0xfd, 0x00, 0x01, 0x00, 0x01]
    );
    verify_checksums(&frame).unwrap();
}

#[test]
fn length_overrides_are_written_as_asked() {
    let tcp = PacketBuilder::tcp(sa("10.0.0.1:1"), sa("10.0.0.2:2"))
        .total_length(100)
        .tcp_data_offset(4)
        .build();
    assert_eq!(tcp.len(), 14 + 20 + 20, "the frame keeps its real length");
    assert_eq!(u16::from_be_bytes([tcp[16], tcp[17]]), 100);
    assert_eq!(tcp[14 + 20 + 12] >> 4, 4);
    // The IPv4 header checksum covers the written total length.
    assert_eq!(fold(sum_be_words(&tcp[14..34])), 0xffff);
    let udp = PacketBuilder::udp(sa("10.0.0.1:1"), sa("10.0.0.2:2"))
        .payload(b"abcd")
        .udp_length(4)
        .build();
    assert_eq!(u16::from_be_bytes([udp[38], udp[39]]), 4);
    verify_checksums(&udp).unwrap();
}

#[test]
fn tcp_layout_and_checksum() {
    let frame = PacketBuilder::tcp(sa("10.244.1.20:40000"), sa("10.96.0.10:80"))
        .macs([1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12])
        .flags(SYN | ACK)
        .seq(0x01020304)
        .ack(0x0a0b0c0d)
        .window(1024)
        .payload(b"hello")
        .build();
    assert_eq!(frame.len(), 14 + 20 + 20 + 5);
    assert_eq!(&frame[0..6], &[7, 8, 9, 10, 11, 12]);
    assert_eq!(&frame[6..12], &[1, 2, 3, 4, 5, 6]);
    assert_eq!(&frame[12..14], &[0x08, 0x00]);
    assert_eq!(frame[14], 0x45);
    assert_eq!(u16::from_be_bytes([frame[16], frame[17]]), 45);
    assert_eq!(frame[23], PROTO_TCP);
    assert_eq!(&frame[34..38], &[0x9c, 0x40, 0x00, 0x50]);
    assert_eq!(&frame[38..42], &[1, 2, 3, 4]);
    assert_eq!(&frame[42..46], &[0x0a, 0x0b, 0x0c, 0x0d]);
    assert_eq!(frame[46], 0x50);
    assert_eq!(frame[47], SYN | ACK);
    assert_eq!(&frame[48..50], &[0x04, 0x00]);
    assert_eq!(&frame[54..], b"hello");
    verify_checksums(&frame).unwrap();

    let s = parse_summary(&frame).unwrap();
    assert_eq!(s.src_socket(), Some(sa("10.244.1.20:40000")));
    assert_eq!(s.dst_socket(), Some(sa("10.96.0.10:80")));
    assert_eq!(s.tcp_flags, Some(SYN | ACK));
    assert_eq!((s.seq, s.ack), (Some(0x01020304), Some(0x0a0b0c0d)));
    assert_eq!(
        s.to_string(),
        "TCP 10.244.1.20:40000 > 10.96.0.10:80 [S.] seq 16909060 ack 168496141"
    );
}

#[test]
fn odd_lengths_and_options_checksum_correctly() {
    for len in 0..40 {
        let payload: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(37)).collect();
        let tcp = PacketBuilder::tcp(sa("1.2.3.4:5"), sa("6.7.8.9:10"))
            .ip_options(&[1, 1, 1, 1])
            .tcp_options(&[2, 4, 5, 0xb4])
            .payload(&payload)
            .build();
        verify_checksums(&tcp).unwrap_or_else(|e| panic!("tcp len {len}: {e}"));
        let udp = PacketBuilder::udp(sa("1.2.3.4:5"), sa("6.7.8.9:10"))
            .payload(&payload)
            .build();
        verify_checksums(&udp).unwrap_or_else(|e| panic!("udp len {len}: {e}"));
        let icmp = PacketBuilder::icmp_echo(ip("1.2.3.4"), ip("6.7.8.9"), 7, len)
            .payload(&payload)
            .build();
        verify_checksums(&icmp).unwrap_or_else(|e| panic!("icmp len {len}: {e}"));
    }
}

#[test]
fn ip_options_set_ihl_and_move_l4() {
    let frame = PacketBuilder::tcp(sa("1.2.3.4:5"), sa("6.7.8.9:10"))
        .ip_options(&[1, 1, 1, 1])
        .build();
    assert_eq!(frame[14], 0x46);
    assert_eq!(&frame[34..38], &[1, 1, 1, 1]);
    assert_eq!(&frame[38..42], &[0, 5, 0, 10]);
    assert_eq!(u16::from_be_bytes([frame[16], frame[17]]), 44);
    // Padded to a multiple of 4 with end-of-options.
    let frame = PacketBuilder::udp(sa("1.2.3.4:5"), sa("6.7.8.9:10"))
        .ip_options(&[1])
        .build();
    assert_eq!(frame[14], 0x46);
    assert_eq!(&frame[34..38], &[1, 0, 0, 0]);
    let s = parse_summary(&frame).unwrap();
    assert_eq!((s.ip_header_len, s.sport, s.dport), (24, Some(5), Some(10)));
}

#[test]
fn fragments_are_linux_sized_and_reassemble_to_the_datagram() {
    let datagram = PacketBuilder::udp(sa("10.244.1.20:40000"), sa("10.96.0.10:80"))
        .ip_id(0x1234)
        .payload(&(0..4000u32).map(|i| i as u8).collect::<Vec<_>>())
        .build();
    let frags = fragment(&datagram, 1500).unwrap();
    // 8 + 4000 UDP bytes: 1480 + 1480 + 1048.
    let sizes: Vec<usize> = frags.iter().map(|f| f.len() - 14 - 20).collect();
    assert_eq!(sizes, [1480, 1480, 1048]);
    let fields: Vec<[u8; 2]> = frags.iter().map(|f| [f[20], f[21]]).collect();
    // MF with offsets 0, 185 (1480 / 8), 370; the last without MF.
    assert_eq!(fields, [[0x20, 0], [0x20, 185], [0x01, 0x72]]);
    for f in &frags {
        assert_eq!(&f[18..20], &[0x12, 0x34]);
        verify_checksums(f).unwrap();
        assert!(parse_summary(f).unwrap().fragment);
    }
    assert_eq!(parse_summary(&frags[0]).unwrap().dport, Some(80));
    assert_eq!(parse_summary(&frags[1]).unwrap().dport, None);
    let mut shuffled = frags.clone();
    shuffled.reverse();
    assert_eq!(reassemble(&shuffled).unwrap(), datagram);
    verify_checksums(&reassemble(&frags).unwrap()).unwrap();
    // A frame that fits is its own only fragment.
    assert_eq!(fragment(&datagram, 9000).unwrap(), vec![datagram.clone()]);
}

#[test]
fn fragmenting_refuses_df_and_tiny_mtus_and_reassembly_finds_gaps() {
    let b = PacketBuilder::udp(sa("1.2.3.4:5"), sa("6.7.8.9:10")).payload(&[7; 100]);
    assert!(fragment(&b.clone().dont_fragment(true).build(), 60).is_err());
    assert!(fragment(&b.build(), 27).is_err());
    let frags = fragment(&b.build(), 60).unwrap();
    assert_eq!(frags.len(), 3); // 40 + 40 + 28 of 108
    assert!(reassemble(&frags[..2]).unwrap_err().contains("incomplete"));
    assert!(reassemble(&[frags[0].clone(), frags[2].clone()]).is_err());
    assert!(reassemble(&frags[1..]).unwrap_err().contains("offset 0"));
    let other = fragment(&b.ip_id(9).build(), 60).unwrap();
    assert!(
        reassemble(&[frags[0].clone(), other[1].clone(), frags[2].clone()])
            .unwrap_err()
            .contains("another datagram")
    );
    // Options: the copied one (0x83, loose source route) stays, NOPs replace the rest.
    let opts = PacketBuilder::udp(sa("1.2.3.4:5"), sa("6.7.8.9:10"))
        .ip_options(&[0x07, 3, 4, 0x83, 3, 4])
        .payload(&[1; 64])
        .build();
    let frags = fragment(&opts, 64).unwrap();
    assert_eq!(&frags[0][34..42], &[0x07, 3, 4, 0x83, 3, 4, 0, 0]);
    assert_eq!(&frags[1][34..42], &[1, 1, 1, 0x83, 3, 4, 0, 0]);
    for f in &frags {
        verify_checksums(f).unwrap();
    }
}

#[test]
fn fragment_bits() {
    let first = PacketBuilder::udp(sa("1.2.3.4:5"), sa("6.7.8.9:10"))
        .fragment(true, 0)
        .build();
    assert_eq!(&first[20..22], &[0x20, 0x00]);
    let later = PacketBuilder::ipv4_raw(ip("1.2.3.4"), ip("6.7.8.9"), PROTO_UDP)
        .dont_fragment(false)
        .fragment(false, 185)
        .payload(&[0xab; 16])
        .build();
    assert_eq!(&later[20..22], &[0x00, 185]);
    assert_eq!(later.len(), 14 + 20 + 16);
    verify_checksums(&first).unwrap();
    verify_checksums(&later).unwrap();
    let s = parse_summary(&later).unwrap();
    assert!(s.fragment);
    assert_eq!(s.sport, None);
    let df = PacketBuilder::udp(sa("1.2.3.4:5"), sa("6.7.8.9:10"))
        .dont_fragment(true)
        .build();
    assert_eq!(&df[20..22], &[0x40, 0x00]);
    assert!(!parse_summary(&df).unwrap().fragment);
}

#[test]
fn padding_is_not_part_of_the_ipv4_packet() {
    let frame = PacketBuilder::tcp(sa("1.2.3.4:5"), sa("6.7.8.9:10"))
        .flags(RST)
        .pad_to(60)
        .build();
    assert_eq!(frame.len(), 60);
    assert_eq!(u16::from_be_bytes([frame[16], frame[17]]), 40);
    assert_eq!(&frame[54..], &[0; 6]);
    verify_checksums(&frame).unwrap();
    // Longer frames are not cut.
    assert_eq!(
        PacketBuilder::tcp(sa("1.2.3.4:5"), sa("6.7.8.9:10"))
            .payload(&[1; 20])
            .pad_to(60)
            .build()
            .len(),
        74
    );
}

#[test]
fn udp_checksum_zero_stays_zero_and_verifies() {
    let frame = PacketBuilder::udp(sa("1.2.3.4:5"), sa("6.7.8.9:10"))
        .payload(b"x")
        .udp_checksum_zero()
        .build();
    assert_eq!(&frame[40..42], &[0, 0]);
    verify_checksums(&frame).unwrap();
}

#[test]
fn truncation_keeps_header_lengths() {
    let full = PacketBuilder::tcp(sa("1.2.3.4:5"), sa("6.7.8.9:10")).build();
    let cut = PacketBuilder::tcp(sa("1.2.3.4:5"), sa("6.7.8.9:10"))
        .truncate(40)
        .build();
    assert_eq!(cut.len(), 40);
    assert_eq!(&cut[..], &full[..40]);
    assert!(verify_checksums(&cut).unwrap_err().contains("cut short"));
    let ip_cut = PacketBuilder::tcp(sa("1.2.3.4:5"), sa("6.7.8.9:10"))
        .truncate(24)
        .build();
    assert!(
        verify_checksums(&ip_cut)
            .unwrap_err()
            .contains("IPv4 header cut short")
    );
    assert_eq!(parse_summary(&ip_cut), None);
    // An L4 header cut short still parses at L3.
    let s = parse_summary(&cut).unwrap();
    assert_eq!((s.proto, s.sport), (PROTO_TCP, None));
}

#[test]
fn verify_reports_corruption() {
    let mut frame = PacketBuilder::tcp(sa("10.0.0.1:1000"), sa("10.0.0.2:80"))
        .flags(SYN)
        .build();
    frame[30] ^= 0x01; // destination address: both checksums cover it
    let err = verify_checksums(&frame).unwrap_err();
    assert!(err.starts_with("IPv4 header checksum"), "{err}");
    let mut frame = PacketBuilder::tcp(sa("10.0.0.1:1000"), sa("10.0.0.2:80"))
        .flags(SYN)
        .build();
    let good = frame.clone();
    frame[36] ^= 0x01; // destination port: only the TCP checksum
    let err = verify_checksums(&frame).unwrap_err();
    let stored = u16::from_be_bytes([good[50], good[51]]);
    assert_eq!(
        err,
        format!("TCP checksum {stored:#06x}, expected {:#06x}", {
            let mut fixed = frame.clone();
            fixed[50] = 0;
            fixed[51] = 0;
            l4_checksum(ip("10.0.0.1"), ip("10.0.0.2"), PROTO_TCP, &fixed[34..])
        })
    );
    let mut udp = PacketBuilder::udp(sa("10.0.0.1:1000"), sa("10.0.0.2:53"))
        .payload(b"q")
        .build();
    udp[42] ^= 0xff;
    assert!(
        verify_checksums(&udp)
            .unwrap_err()
            .starts_with("UDP checksum")
    );
    let mut icmp = PacketBuilder::icmp_echo(ip("10.0.0.1"), ip("10.0.0.2"), 1, 2).build();
    icmp[40] ^= 0xff;
    assert!(
        verify_checksums(&icmp)
            .unwrap_err()
            .starts_with("ICMP checksum")
    );
}

#[test]
fn verify_and_parse_never_panic_on_odd_input() {
    let arp = arp_request([2, 0, 0, 0, 0, 1], ip("10.0.0.1"), ip("10.0.0.2"));
    assert_eq!(arp.len(), 42);
    assert!(
        verify_checksums(&arp)
            .unwrap_err()
            .contains("neither IPv4 nor IPv6")
    );
    assert_eq!(parse_summary(&arp), None);
    let base = PacketBuilder::tcp(sa("10.0.0.1:1000"), sa("10.0.0.2:80"))
        .ip_options(&[1, 1, 1, 1])
        .payload(&[9; 7])
        .build();
    for len in 0..=base.len() {
        let _ = verify_checksums(&base[..len]);
        let _ = parse_summary(&base[..len]);
    }
    // Every IHL/version nibble combination and a garbage total length.
    for vihl in 0..=255u8 {
        let mut f = base.clone();
        f[14] = vihl;
        let _ = verify_checksums(&f);
        let _ = parse_summary(&f);
        f[16] = 0xff;
        let _ = verify_checksums(&f);
        f[16] = 0;
        f[17] = 3;
        let _ = verify_checksums(&f);
    }
    let v6 = PacketBuilder::udp(sa("1.2.3.4:5"), sa("6.7.8.9:10"))
        .ip_version(6)
        .build();
    assert!(verify_checksums(&v6).unwrap_err().contains("version 6"));
    assert_eq!(parse_summary(&v6), None);
}

#[test]
fn icmp_errors_quote_the_offending_packet() {
    let offending = PacketBuilder::tcp(sa("10.244.1.20:40000"), sa("10.244.2.11:8080"))
        .dont_fragment(true)
        .flags(ACK | PSH)
        .seq(0x01020304)
        .payload(&[0x61; 1400])
        .build();
    let minimal = PacketBuilder::frag_needed(
        ip("192.0.2.2"),
        ip("10.244.1.20"),
        1280,
        &offending,
        Quote::Minimal,
    )
    .build();
    // Type 3 code 4, unused 0, next-hop MTU 1280; the IPv4 header and 8 bytes of TCP.
    assert_eq!(&minimal[34..36], &[3, 4]);
    assert_eq!(&minimal[38..42], &[0, 0, 0x05, 0x00]);
    assert_eq!(&minimal[42..], &offending[14..14 + 28]);
    assert_eq!(minimal.len(), 14 + 20 + 8 + 28);
    verify_checksums(&minimal).unwrap();
    let linux = PacketBuilder::icmp_error(
        ip("192.0.2.2"),
        ip("10.244.1.20"),
        ICMP_TIME_EXCEEDED,
        0,
        [0; 4],
        &offending,
        Quote::Linux,
    )
    .build();
    // A 576-byte IPv4 packet, as Linux sends it.
    assert_eq!(linux.len(), 14 + 576);
    assert_eq!(&linux[42..], &offending[14..14 + 548]);
    verify_checksums(&linux).unwrap();
    // A short packet is quoted whole.
    let udp = PacketBuilder::udp(sa("10.244.1.20:5353"), sa("10.96.0.10:53"))
        .payload(b"q")
        .build();
    assert_eq!(quote_of(&udp, Quote::Linux), udp[14..].to_vec());
    assert_eq!(quote_of(&udp, Quote::Minimal), udp[14..14 + 28].to_vec());
    // Options move the quoted L4 bytes.
    let opts = PacketBuilder::udp(sa("10.244.1.20:5353"), sa("10.96.0.10:53"))
        .ip_options(&[1, 1, 1, 1])
        .build();
    assert_eq!(quote_of(&opts, Quote::Minimal).len(), 24 + 8);

    let q = parse_icmp_quote(&minimal).unwrap();
    assert_eq!(q.src_socket(), Some(sa("10.244.1.20:40000")));
    assert_eq!(q.dst_socket(), Some(sa("10.244.2.11:8080")));
    assert_eq!((q.proto, q.total_len), (PROTO_TCP, 20 + 20 + 1400));
    let q = parse_icmp_quote(&linux).unwrap();
    assert_eq!(q.dst_socket(), Some(sa("10.244.2.11:8080")));
    // Not an error: no quote.
    let echo = PacketBuilder::icmp_echo(ip("1.2.3.4"), ip("5.6.7.8"), 1, 1)
        .payload(&offending[14..62])
        .build();
    assert_eq!(parse_icmp_quote(&echo), None);
    assert_eq!(parse_icmp_quote(&offending), None);
    // Cut quotes never panic.
    for len in 0..minimal.len() {
        let _ = parse_icmp_quote(&minimal[..len]);
    }
}

#[test]
fn hex_diff_marks_differences() {
    let d = hex_diff(&[1, 2, 3], &[1, 9, 3, 4]);
    assert!(d.starts_with("expected 3 bytes, got 4 bytes\n"));
    assert!(d.contains("[09]"), "{d}");
    assert!(d.contains("[04]"), "{d}");
    assert!(d.lines().nth(1).unwrap().starts_with('*'));
}
