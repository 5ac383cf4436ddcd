//! Reply-tuple collisions (lb.rs `reply_port`): two Services that share a backend
//! ip:targetPort, reached from one client port, must each get their own reply tuple, so
//! each flow's replies come back from its own Service; a flow never takes a reply tuple a
//! live flow holds, masqueraded or not; the same flow's own entry is reused; the port
//! search fills a small masquerade range completely and then fails visibly
//! (`drop_nat_failed`), and a dead entry's port is taken again.
use std::collections::{BTreeMap, BTreeSet};

use svc_agent::dataplane::DatapathConfig;
use svc_agent::desired::DesiredState;
use svc_agent::packet::{ACK, PROTO_TCP, PSH, SYN};
use svc_common::{CT_F_SNAT, CT_KIND_REPLY, CT_KIND_SERVICE, MASQUERADE_PORTS, Verdict};

use crate::conntrack;
use crate::support::*;

/// The backend both Services send to.
const SHARED_BE: &str = "10.244.1.41:8080";
const SVC_A: &str = "10.96.0.40:80";
const SVC_B: &str = "10.96.0.41:80";

/// Two ClusterIP Services, TCP and UDP, with one backend ip:targetPort in common.
fn shared_backend_services() -> DesiredState {
    DesiredState {
        frontends: BTreeMap::from([
            fe(SVC_A, TCP, CIP, "shared-a", &[SHARED_BE], no_edit),
            fe(SVC_B, TCP, CIP, "shared-b", &[SHARED_BE], no_edit),
            fe(SVC_A, UDP, CIP, "shared-a", &[SHARED_BE], no_edit),
            fe(SVC_B, UDP, CIP, "shared-b", &[SHARED_BE], no_edit),
        ]),
        ..Default::default()
    }
}

fn load(tag: &str, config: &DatapathConfig) -> Harness {
    let mut h = Harness::load(tag, config);
    h.sync(&shared_backend_services());
    h
}

/// A pod (no masquerade) uses port 45000 for Service A, then for Service B: the second
/// flow's reply tuple {backend -> 10.244.1.20:45000} is held by the first, so its source
/// port is remapped (port-only SNAT, address kept), and the replies of each flow come
/// back from its own Service to the client's real port. Before the rule the second flow's
/// reply entry overwrote the first one's, and flow A's replies came back from B.
#[test]
fn one_pod_port_two_services_sharing_a_backend() {
    use Prog::Tc;
    let mut h = load("collide-pod", &node1_fixture_config(false));
    let client = "10.244.1.20:45000";
    let (lo, hi) = node1_fixture_config(false).masquerade_ports;

    let out = h.expect(
        "flow A: SYN",
        Tc,
        &segment(client, SVC_A, SYN, 100),
        TC_ACT_OK,
        Verdict::DnatNew,
    );
    bytes_eq(
        "flow A: DNAT only",
        &segment(client, SHARED_BE, SYN, 100),
        &out,
    );

    let out = h.expect(
        "flow B: SYN, same client port",
        Tc,
        &segment(client, SVC_B, SYN, 200),
        TC_ACT_OK,
        Verdict::DnatNew,
    );
    let remapped = src_of(&out);
    assert_eq!(
        *remapped.ip(),
        ip("10.244.1.20"),
        "port-only SNAT keeps the client address: {remapped}"
    );
    assert_ne!(
        remapped.port(),
        45000,
        "flow B kept the port whose reply tuple flow A holds"
    );
    assert!(
        (lo..=hi).contains(&remapped.port()),
        "remapped port {} outside {lo}..={hi}",
        remapped.port()
    );
    let remapped = remapped.to_string();
    bytes_eq(
        "flow B: DNAT + port remap",
        &segment(&remapped, SHARED_BE, SYN, 200),
        &out,
    );

    h.run_table(&[
        case(
            "reply of flow A comes from Service A",
            Tc,
            synack(SHARED_BE, client, 9000, 101),
            TC_ACT_OK,
            Output::Exact(synack(SVC_A, client, 9000, 101)),
            Verdict::RevNat,
        ),
        case(
            "reply of flow B comes from Service B, to the client's real port",
            Tc,
            synack(SHARED_BE, &remapped, 9500, 201),
            TC_ACT_OK,
            Output::Exact(synack(SVC_B, client, 9500, 201)),
            Verdict::RevNat,
        ),
        case(
            "flow A's next packet: DNAT only",
            Tc,
            tcp_data(client, SVC_A, 101, 9001),
            TC_ACT_OK,
            Output::Exact(tcp_data(client, SHARED_BE, 101, 9001)),
            Verdict::DnatEstablished,
        ),
        case(
            "flow B's next packet keeps its remapped port",
            Tc,
            tcp_data(client, SVC_B, 201, 9501),
            TC_ACT_OK,
            Output::Exact(tcp_data(&remapped, SHARED_BE, 201, 9501)),
            Verdict::DnatEstablished,
        ),
        case(
            "flow A's reply again: still Service A",
            Tc,
            tcp_reply(SHARED_BE, client)
                .flags(PSH | ACK)
                .seq(9001)
                .ack(131)
                .payload(b"a")
                .build(),
            TC_ACT_OK,
            Output::Exact(
                tcp_reply(SVC_A, client)
                    .flags(PSH | ACK)
                    .seq(9001)
                    .ack(131)
                    .payload(b"a")
                    .build(),
            ),
            Verdict::RevNat,
        ),
    ]);
    let fwd = conntrack::entry(&h, client, SVC_B, PROTO_TCP, CT_KIND_SERVICE);
    assert!(
        fwd.flags & CT_F_SNAT != 0,
        "flow B's service entry is CT_F_SNAT: {fwd:?}"
    );
    assert_eq!(
        fwd.nat_addr_be,
        u32::from(ip("10.244.1.20")).to_be(),
        "{fwd:?}"
    );
    let fwd_a = conntrack::entry(&h, client, SVC_A, PROTO_TCP, CT_KIND_SERVICE);
    assert_eq!(
        fwd_a.flags & CT_F_SNAT,
        0,
        "flow A is not translated at the source: {fwd_a:?}"
    );
    let rev_a = conntrack::entry(&h, SHARED_BE, client, PROTO_TCP, CT_KIND_REPLY);
    assert_eq!(
        rev_a.rev_nat_id, fwd_a.rev_nat_id,
        "flow A's reply entry is still flow A's: {rev_a:?}"
    );
    println!("ok   one client port, two Services, one backend: flow B remapped to {remapped}");
}

/// The same over UDP from a pod of node 2 through XDP on eth0 (not masqueraded: it is in
/// the pod CIDR); the backend's replies leave through TC.
#[test]
fn one_udp_port_two_services_through_xdp() {
    use Prog::{Tc, Xdp};
    let mut h = load("collide-udp", &node1_fixture_config(false));
    let client = "10.244.2.20:45001";
    let out = h.expect(
        "UDP flow A",
        Xdp,
        &datagram(client, SVC_A, b"to a", false),
        XDP_PASS,
        Verdict::DnatNew,
    );
    bytes_eq(
        "UDP flow A: DNAT only",
        &datagram(client, SHARED_BE, b"to a", false),
        &out,
    );
    let out = h.expect(
        "UDP flow B",
        Xdp,
        &datagram(client, SVC_B, b"to b", false),
        XDP_PASS,
        Verdict::DnatNew,
    );
    let remapped = src_of(&out);
    assert_eq!(*remapped.ip(), ip("10.244.2.20"), "{remapped}");
    assert_ne!(
        remapped.port(),
        45001,
        "UDP flow B kept the port flow A's replies use"
    );
    let remapped = remapped.to_string();
    bytes_eq(
        "UDP flow B: DNAT + port remap",
        &datagram(&remapped, SHARED_BE, b"to b", false),
        &out,
    );
    h.run_table(&[
        case(
            "UDP reply of flow A from Service A",
            Tc,
            datagram(SHARED_BE, client, b"from a", false),
            TC_ACT_OK,
            Output::Exact(datagram(SVC_A, client, b"from a", false)),
            Verdict::RevNat,
        ),
        case(
            "UDP reply of flow B from Service B",
            Tc,
            datagram(SHARED_BE, &remapped, b"from b", true),
            TC_ACT_OK,
            Output::Exact(datagram(SVC_B, client, b"from b", true)),
            Verdict::RevNat,
        ),
    ]);
}

/// Masqueraded: an outside client's port 51000 (in the fixture's masquerade range, so
/// kept) to Service A, then to Service B. Before the rule, flow B found flow A's reply
/// entry "from the same client address and port" and took it as its own earlier flow:
/// both got 192.0.2.1:51000, and A's replies came back from B.
#[test]
fn masqueraded_one_client_port_two_services() {
    use Prog::{Tc, Xdp};
    let mut h = load("collide-masq", &node1_fixture_config(false));
    let client = "192.0.2.100:51000";
    let out = h.expect(
        "masq flow A",
        Xdp,
        &segment(client, SVC_A, SYN, 100),
        XDP_PASS,
        Verdict::DnatNew,
    );
    bytes_eq(
        "masq flow A keeps port 51000",
        &segment(&node(51000), SHARED_BE, SYN, 100),
        &out,
    );
    let out = h.expect(
        "masq flow B",
        Xdp,
        &segment(client, SVC_B, SYN, 200),
        XDP_PASS,
        Verdict::DnatNew,
    );
    let nat = src_of(&out);
    assert_eq!(*nat.ip(), ip(NODE_IP), "{nat}");
    assert_ne!(
        nat.port(),
        51000,
        "flow B was given flow A's masquerade port"
    );
    let nat = nat.to_string();
    bytes_eq("masq flow B", &segment(&nat, SHARED_BE, SYN, 200), &out);
    h.run_table(&[
        case(
            "masq reply of flow A from Service A",
            Tc,
            synack(SHARED_BE, &node(51000), 700, 101),
            TC_ACT_OK,
            Output::Exact(synack(SVC_A, client, 700, 101)),
            Verdict::RevNat,
        ),
        case(
            "masq reply of flow B from Service B",
            Xdp,
            synack(SHARED_BE, &nat, 800, 201),
            XDP_PASS,
            Output::Exact(synack(SVC_B, client, 800, 201)),
            Verdict::RevNat,
        ),
    ]);
}

/// The same flow finding its own reply entry (its service entry was evicted, as an LRU
/// map may do) keeps its tuple: no remap, and the entry is taken over, not duplicated.
#[test]
fn the_same_flow_reuses_its_own_reply_entry() {
    use Prog::{Tc, Xdp};
    let mut h = load("collide-self", &node1_fixture_config(false));
    for (prog, client, nat, ret) in [
        (Tc, "10.244.1.20:45100", "10.244.1.20:45100", TC_ACT_OK),
        (Xdp, "192.0.2.100:51100", "192.0.2.1:51100", XDP_PASS),
    ] {
        let syn = segment(client, SVC_A, SYN, 1);
        let expected = segment(nat, SHARED_BE, SYN, 1);
        let out = h.expect("first SYN", prog, &syn, ret, Verdict::DnatNew);
        bytes_eq("first SYN", &expected, &out);
        h.maps
            .ct
            .remove(&conntrack::key(client, SVC_A, PROTO_TCP, CT_KIND_SERVICE))
            .expect("removing the service entry");
        let out = h.expect(
            "SYN again, service entry gone",
            prog,
            &syn,
            ret,
            Verdict::DnatNew,
        );
        bytes_eq("SYN again: same tuple, no remap", &expected, &out);
    }
    conntrack::assert_translated_flows(
        &h,
        &[
            ("10.244.1.20:45100", PROTO_TCP),
            ("192.0.2.100:51100", PROTO_TCP),
        ],
    );
}

/// The port search on a masquerade range of 8 ports: 8 clients whose own ports are outside
/// it get the 8 ports, all different (runs of 8 consecutive ports cover the range; the 6
/// random probes before this missed the last free ports most of the time); a 9th is
/// dropped and counted as `drop_nat_failed`; a flow whose replies stopped but whose client
/// still sends keeps its port; once both of a flow's entries are dead, its port is given
/// to the next client, and once all are dead the range is given out again.
#[test]
fn port_search_fills_a_small_range_then_fails_visibly() {
    use Prog::{Tc, Xdp};
    let config = DatapathConfig {
        masquerade_ports: (61000, 61007),
        ..node1_fixture_config(false)
    };
    let mut h = load("collide-range", &config);
    let mut ports = BTreeMap::new();
    for i in 0..8u8 {
        let client = format!("192.0.2.{}:50000", 100 + i);
        let out = h.expect(
            "fill the range",
            Xdp,
            &segment(&client, SVC_A, SYN, 1),
            XDP_PASS,
            Verdict::DnatNew,
        );
        let nat = src_of(&out);
        assert!((61000..=61007).contains(&nat.port()), "{client} got {nat}");
        ports.insert(nat.port(), client);
    }
    assert_eq!(ports.len(), 8, "8 flows, 8 different ports: {ports:?}");
    let full = segment("192.0.2.120:50000", SVC_A, SYN, 1);
    h.check(&case(
        "range full: the 9th flow is dropped",
        Xdp,
        full.clone(),
        XDP_DROP,
        Output::Unchanged,
        Verdict::DropNatFailed,
    ));
    // Every flow's replies still go to its own client.
    for (port, client) in &ports {
        let out = h.expect(
            "reply",
            Tc,
            &synack(SHARED_BE, &node(*port), 5, 2),
            TC_ACT_OK,
            Verdict::RevNat,
        );
        bytes_eq(
            "reply to its own client",
            &synack(SVC_A, client, 5, 2),
            &out,
        );
    }
    // The flow on 61003 goes quiet towards its client (its reply entry last seen at
    // boot) but its client still sends: it lives through its service entry, and its port
    // is not given away.
    let age = |h: &mut Harness, key| {
        let mut v = h.maps.ct.get(&key, 0).expect("the entry to age");
        v.last_seen_ns = 0;
        h.maps.ct.insert(key, v, 0).expect("ageing the entry");
    };
    age(
        &mut h,
        conntrack::key(SHARED_BE, &node(61003), PROTO_TCP, CT_KIND_REPLY),
    );
    h.check(&case(
        "a flow alive in one direction keeps its port",
        Xdp,
        full.clone(),
        XDP_DROP,
        Output::Unchanged,
        Verdict::DropNatFailed,
    ));
    // Now it dies in both directions: its port is free again.
    age(
        &mut h,
        conntrack::key(&ports[&61003], SVC_A, PROTO_TCP, CT_KIND_SERVICE),
    );
    let out = h.expect(
        "a dead flow's port is reused",
        Xdp,
        &full,
        XDP_PASS,
        Verdict::DnatNew,
    );
    bytes_eq(
        "the 9th client gets port 61003",
        &segment(&node(61003), SHARED_BE, SYN, 1),
        &out,
    );
    // Every flow dies: the whole range is given out again, to 8 new clients.
    for (k, mut v) in h.maps.read_conntrack().unwrap() {
        v.last_seen_ns = 0;
        h.maps.ct.insert(k, v, 0).expect("ageing the entries");
    }
    let mut again = BTreeSet::new();
    for i in 0..8u8 {
        let client = format!("192.0.2.{}:50000", 200 + i);
        let out = h.expect(
            "refill the range",
            Xdp,
            &segment(&client, SVC_A, SYN, 1),
            XDP_PASS,
            Verdict::DnatNew,
        );
        again.insert(src_of(&out).port());
    }
    assert_eq!(
        again.len(),
        8,
        "the range refilled with 8 different ports: {again:?}"
    );
    let mut seen = BTreeSet::new();
    for (k, _) in h.maps.read_conntrack().unwrap() {
        if k.kind == CT_KIND_REPLY && k.proto == PROTO_TCP {
            assert!(
                seen.insert(u16::from_be(k.dport_be)),
                "two reply entries on one port"
            );
        }
    }
    println!(
        "ok   port search: 8 of 8 ports used, 9th dropped as drop_nat_failed, a dead port reused"
    );
}

/// The whole default masquerade range (61000-65535: 4,536 ports for one backend ip:port)
/// filled by new flows from outside whose own ports are outside it, so every one is
/// placed by the port search: the first `drop_nat_failed` comes only when the range is
/// nearly full (at least 80 % here; about 95 % on average in simulation, 36 % with the 6
/// random probes before), and by then the range keeps filling to the last ports.
#[test]
fn the_default_range_is_used_before_nat_fails() {
    let mut h = load("collide-fill", &node1_config());
    let (lo, hi) = MASQUERADE_PORTS;
    let span = usize::from(hi - lo) + 1;
    let (mut used, mut failed, mut first_failure) = (BTreeSet::new(), 0usize, None);
    let mut attempt = 0u32;
    while failed < 200 && attempt < span as u32 + 2_000 {
        let client = format!(
            "192.0.2.{}:{}",
            100 + attempt / 40_000,
            20_000 + attempt % 40_000
        );
        attempt += 1;
        let r = h.run(Prog::Xdp, &segment(&client, SVC_A, SYN, 1));
        match r.delta.as_slice() {
            [(Verdict::DnatNew, 1)] => {
                let nat = src_of(&r.out);
                assert!(used.insert(nat.port()), "port {} given twice", nat.port());
            }
            [(Verdict::DropNatFailed, 1)] => {
                failed += 1;
                first_failure.get_or_insert(used.len());
            }
            other => panic!("{client}: {other:?}"),
        }
    }
    let first = first_failure.unwrap_or(used.len());
    println!(
        "ok   port search: first drop_nat_failed with {first} of {span} ports in use ({:.1} %); \
         {} of {span} in use after {attempt} new flows ({failed} dropped)",
        100.0 * first as f64 / span as f64,
        used.len()
    );
    assert!(
        first * 100 >= span * 80,
        "the first flow dropped for want of a port came with only {first} of {span} ports in use"
    );
    assert!(
        used.len() * 100 >= span * 99,
        "{} of {span} ports in use after {attempt} new flows",
        used.len()
    );
}
