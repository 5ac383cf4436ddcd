//! svcctl trace at the program level: the real programs, the two-node lab's Services
//! (examples/two-node/services.yaml) programmed into pinned maps through the real
//! reconciler as node1's agent would, and one trace per verdict kind. Every trace must leave
//! the live maps as they were: conntrack, affinity and counters are compared before and
//! after. Needs root and bpffs.
mod support;
use support::*;

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
};

use svc_agent::{
    dataplane::Maps,
    desired::{self, NodeContext},
    manifest,
    model::Protocol,
    packet::{PacketBuilder, SYN},
    trace::{Entry, Trace, Trace6Request, TraceError, TraceRequest, trace, trace6},
};

/// Node 1's datapath with the two-node lab's Services, as node1's agent programs them.
fn program() -> Harness {
    let mut h = Harness::load("trace", &node1_config());
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/two-node/services.yaml"),
    )
    .unwrap();
    let set = manifest::load_str(&text, "services.yaml");
    assert!(set.problems.is_empty(), "{:?}", set.problems);
    let node = NodeContext {
        node_name: Some("node1".into()),
        node_ips: vec![ip(NODE_IP).into()],
        node_port_addresses: vec![],
        ..Default::default()
    };
    let (state, problems) = desired::compute(&set.cluster, &node);
    assert!(problems.is_empty(), "{problems:?}");
    h.sync(&state);
    h
}

/// The live state trace must not touch.
#[derive(Debug, PartialEq)]
struct LiveState {
    conntrack: Vec<String>,
    affinity: usize,
    stats: Vec<(svc_common::Verdict, u64)>,
}

fn live_state(maps: &Maps) -> LiveState {
    let mut conntrack: Vec<String> = maps
        .read_conntrack()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k:?}{v:?}"))
        .collect();
    conntrack.sort();
    LiveState {
        conntrack,
        affinity: maps.affinity.iter().filter_map(Result::ok).count(),
        stats: maps.verdict_totals().unwrap(),
    }
}

fn req(src: &str, dst: &str, protocol: Protocol) -> TraceRequest {
    let (src, src_port) = match src.parse::<SocketAddrV4>() {
        Ok(s) => (*s.ip(), Some(s.port())),
        Err(_) => (src.parse::<Ipv4Addr>().unwrap(), None),
    };
    TraceRequest {
        src,
        src_port,
        dst: dst.parse().unwrap(),
        protocol,
        entry: None,
    }
}

fn run(dir: &Path, maps: &Maps, r: TraceRequest) -> Trace {
    let before = live_state(maps);
    let t = trace(dir, maps, &r).unwrap_or_else(|e| panic!("trace {r:?}: {e}"));
    assert_eq!(
        live_state(maps),
        before,
        "trace {r:?} changed the live maps"
    );
    t
}

#[test]
fn trace_explains_every_verdict_and_leaves_the_live_maps_alone() {
    let mut h = program();
    let dir = h.pin_dir().to_path_buf();
    let maps = &h.maps;
    use Protocol::{Tcp, Udp};

    // A new flow from a pod: a random one of the two ready backends, client address kept.
    let t = run(&dir, maps, req("10.244.1.20", "10.96.1.10:80", Tcp));
    assert_eq!(
        (t.verdict, t.action, t.flow),
        ("dnat_new", "translated", Some("new"))
    );
    assert_eq!(t.entry, Entry::Pod);
    assert_eq!(t.candidates, ["10.244.1.11:8080", "10.244.2.11:8080"]);
    assert!(t.candidates.contains(t.backend.as_ref().unwrap()), "{t:?}");
    assert_eq!(t.masquerade, None);
    assert_eq!(t.output.as_ref().unwrap().dst, *t.backend.as_ref().unwrap());
    assert_eq!(t.output.as_ref().unwrap().src, "10.244.1.20:40000");
    let svc = t.frontend.as_ref().unwrap().service.as_ref().unwrap();
    assert_eq!(svc.to_string(), "default/web:http");
    assert!(t.rule.contains("a random ready backend"), "{}", t.rule);

    // From outside to a NodePort (externalTrafficPolicy Cluster): XDP translates and
    // masquerades to the node.
    let t = run(&dir, maps, req("192.0.2.100:5555", "192.0.2.1:30080", Tcp));
    assert_eq!((t.verdict, t.entry), ("dnat_new", Entry::External));
    assert_eq!(t.steps[0].hook, "xdp");
    assert_eq!(t.steps[0].verdict, Some("dnat_new"));
    assert!(
        t.masquerade.as_ref().unwrap().starts_with("192.0.2.1:"),
        "{t:?}"
    );
    assert!(
        t.rule.contains("externalTrafficPolicy Cluster"),
        "{}",
        t.rule
    );

    // externalTrafficPolicy Local from outside: this node's endpoint, client IP kept.
    let t = run(&dir, maps, req("192.0.2.100", "192.0.2.1:30081", Tcp));
    assert_eq!(t.verdict, "dnat_new");
    assert_eq!(t.backend.as_deref(), Some("10.244.1.11:8080"));
    assert_eq!(t.candidates, ["10.244.1.11:8080"]);
    assert_eq!(t.masquerade, None);

    // Hairpin: the pod reaches its own Service and is its backend: masqueraded.
    let t = run(&dir, maps, req("10.244.1.11", "10.96.1.16:80", Tcp));
    assert_eq!(t.backend.as_deref(), Some("10.244.1.11:8080"));
    assert!(
        t.masquerade.is_some() && t.rule.contains("hairpin"),
        "{t:?}"
    );

    // internalTrafficPolicy Local with the only endpoint on node2.
    let t = run(&dir, maps, req("10.244.1.20", "10.96.1.13:80", Tcp));
    assert_eq!((t.verdict, t.action), ("drop_no_local_backend", "dropped"));
    assert_eq!(t.output, None);

    // loadBalancerSourceRanges.
    let t = run(&dir, maps, req("192.0.2.100", "203.0.113.11:80", Tcp));
    assert_eq!((t.verdict, t.action), ("drop_source_range", "dropped"));
    assert!(t.rule.contains("192.0.2.100 is outside"), "{}", t.rule);

    // No endpoints: TCP RST back to the client (from a pod: TC; from outside: XDP hands
    // it to TC, which answers).
    let t = run(&dir, maps, req("10.244.1.20:40001", "10.96.1.17:80", Tcp));
    assert_eq!((t.verdict, t.action), ("reject_tcp_rst", "rejected"));
    let out = t.output.as_ref().unwrap();
    assert_eq!(
        (out.src.as_str(), out.dst.as_str()),
        ("10.96.1.17:80", "10.244.1.20:40001")
    );
    assert!(out.tcp_flags.as_deref().unwrap().contains('R'), "{out:?}");
    let t = run(&dir, maps, req("192.0.2.100", "192.0.2.1:30087", Tcp));
    assert_eq!(t.verdict, "reject_tcp_rst");
    assert_eq!(
        t.steps
            .iter()
            .map(|s| s.verdict.unwrap())
            .collect::<Vec<_>>(),
        ["xdp_pass_to_tc", "reject_tcp_rst"]
    );
    // The empty Service has TCP only: UDP to its ClusterIP is a port/protocol no Service
    // has (kube-proxy's "TCP-only port does not match UDP traffic"): ICMP port unreachable.
    let t = run(&dir, maps, req("10.244.1.20", "10.96.1.17:80", Udp));
    assert_eq!((t.verdict, t.action), ("reject_icmp", "rejected"));
    assert_eq!(t.frontend, None);
    assert_eq!(t.output.as_ref().unwrap().icmp, Some((3, 3)));
    assert!(
        t.rule
            .contains("10.96.1.17 is an allocated ClusterIP, but no Service has port 80/UDP"),
        "{}",
        t.rule
    );
    // A port of web's ClusterIP no Service has: a RST, from a pod and from outside (XDP
    // hands it to TC).
    let t = run(&dir, maps, req("10.244.1.20", "10.96.1.10:81", Tcp));
    assert_eq!((t.verdict, t.action), ("reject_tcp_rst", "rejected"));
    assert!(t.rule.contains("with a TCP RST"), "{}", t.rule);
    let t = run(&dir, maps, req("192.0.2.100", "10.96.1.10:81", Tcp));
    assert_eq!(
        t.steps
            .iter()
            .map(|s| s.verdict.unwrap())
            .collect::<Vec<_>>(),
        ["xdp_pass_to_tc", "reject_tcp_rst"]
    );

    // An unallocated address of the service CIDR (10.96.0.0/16): dropped; from outside
    // XDP drops it.
    let t = run(&dir, maps, req("10.244.1.20", "10.96.9.9:80", Tcp));
    assert_eq!((t.verdict, t.action), ("drop_unallocated", "dropped"));
    assert!(
        t.rule
            .contains("10.96.9.9 is inside service CIDR 10.96.0.0/16 but no Service has it"),
        "{}",
        t.rule
    );
    assert_eq!(t.output, None);
    let t = run(&dir, maps, req("192.0.2.100", "10.96.9.9:80", Udp));
    assert_eq!(t.verdict, "drop_unallocated");
    assert_eq!((t.steps.len(), t.steps[0].result.as_str()), (1, "XDP_DROP"));

    // A ClusterIP of a Service another proxy owns: left alone.
    let t = run(&dir, maps, req("10.244.1.20", "10.96.1.21:80", Tcp));
    assert_eq!(t.verdict, "pass_not_service");
    assert!(t.rule.contains("another proxy owns"), "{}", t.rule);

    // Not a Service, outside the service CIDR.
    let t = run(&dir, maps, req("10.244.1.20", "10.97.9.9:80", Tcp));
    assert_eq!(t.verdict, "pass_not_service");
    assert!(t.rule.contains("not a Service address"), "{}", t.rule);

    // An established flow: make one in the live maps with a real test run, then trace its
    // next packet and its reply.
    let syn = PacketBuilder::tcp(sa("10.244.1.20:41000"), sa("10.96.1.10:80"))
        .flags(SYN)
        .build();
    let real = h.run(Prog::Tc, &syn);
    assert_eq!(real.ret, TC_ACT_OK);
    let real_backend = svc_agent::packet::parse_summary(&real.out)
        .unwrap()
        .dst_socket()
        .unwrap()
        .to_string();
    let maps = &h.maps;
    let t = run(&dir, maps, req("10.244.1.20:41000", "10.96.1.10:80", Tcp));
    assert_eq!(
        (t.verdict, t.flow),
        ("dnat_established", Some("established"))
    );
    assert_eq!(t.backend.as_deref(), Some(real_backend.as_str()));
    assert_eq!(
        t.input.tcp_flags.as_deref(),
        Some("."),
        "the flow's next packet"
    );
    let t = run(&dir, maps, req(&real_backend, "10.244.1.20:41000", Tcp));
    assert_eq!((t.verdict, t.action), ("rev_nat", "reverse-translated"));
    assert_eq!(t.output.as_ref().unwrap().src, "10.96.1.10:80");

    // Session affinity: the client's backend is reused (sticky, 4 replicas).
    let t1 = run(&dir, maps, req("10.244.1.20:42000", "10.96.1.14:80", Tcp));
    assert_eq!(t1.verdict, "dnat_new");
    assert_eq!(t1.candidates.len(), 4);

    // The node's own address: refused with the reason.
    match trace(&dir, maps, &req("192.0.2.1", "10.96.1.10:80", Tcp)) {
        Err(e @ TraceError::NodeSource(_)) => assert!(e.to_string().contains("cgroup")),
        other => panic!("{other:?}"),
    }

    // IPv6 to an address no IPv6 Service has: the trace shows it passing XDP and TC
    // untouched; the live maps are left alone here too.
    let before = live_state(maps);
    let r6 = Trace6Request {
        src: "fd00:10:244:1::20".parse().unwrap(),
        src_port: None,
        dst: "[fd00:10:96::10]:80".parse().unwrap(),
        protocol: Tcp,
        entry: None,
    };
    let t = trace6(&dir, maps, &r6).unwrap();
    assert_eq!(live_state(maps), before);
    assert_eq!(
        (t.verdict, t.action, t.entry),
        ("pass_not_service", "passed", Entry::External)
    );
    assert_eq!(
        t.steps
            .iter()
            .map(|s| (s.hook, s.verdict))
            .collect::<Vec<_>>(),
        // XDP counts nothing for a packet it passes on untouched (TC counts it): its step
        // says it handed the packet to TC.
        [
            ("xdp", Some("xdp_pass_to_tc")),
            ("tc", Some("pass_not_service"))
        ]
    );
    assert_eq!(t.input.src, "[fd00:10:244:1::20]:40000");
    assert_eq!(t.output.as_ref(), Some(&t.input), "untouched");
    assert!(t.rule.contains("no IPv6 Service address"), "{}", t.rule);
    let via_pod = trace6(
        &dir,
        maps,
        &Trace6Request {
            entry: Some(Entry::Pod),
            protocol: Udp,
            ..r6.clone()
        },
    )
    .unwrap();
    assert_eq!(via_pod.steps.len(), 1);
    assert_eq!(via_pod.verdict, "pass_not_service");
    assert!(matches!(
        trace6(
            &dir,
            maps,
            &Trace6Request {
                protocol: Protocol::Sctp,
                ..r6
            }
        ),
        Err(TraceError::Ipv6Sctp)
    ));

    // Nothing of the scratch instance is left on the bpffs.
    let leftovers: Vec<_> = std::fs::read_dir("/sys/fs/bpf")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("svcctl-trace-{}", std::process::id()))
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    drop(h);
}

/// `svcctl trace --proto sctp`: an SCTP INIT through the programs, translated by address
/// only (from a pod: the client's address and port kept; from outside: masqueraded with
/// the client's port kept), and detect-local by interface: a pod address enters from
/// outside unless `--via pod`.
#[test]
fn trace_sctp_and_detect_local_by_interface() {
    use std::collections::BTreeMap;
    use svc_agent::dataplane::{DatapathConfig, DetectLocal};
    let services = desired::DesiredState {
        frontends: BTreeMap::from([fe(
            "10.96.0.40:5000",
            Protocol::Sctp,
            CIP,
            "sctp",
            &["10.244.1.11:5000"],
            no_edit,
        )]),
        ..Default::default()
    };
    let mut h = Harness::load("trace-sctp", &node1_config());
    h.sync(&services);
    let dir = h.pin_dir().to_path_buf();
    let t = run(
        &dir,
        &h.maps,
        req("10.244.1.20:40000", "10.96.0.40:5000", Protocol::Sctp),
    );
    assert_eq!((t.verdict, t.entry), ("dnat_new", Entry::Pod), "{t:?}");
    let out = t.output.as_ref().unwrap();
    assert_eq!(
        (out.src.as_str(), out.dst.as_str()),
        ("10.244.1.20:40000", "10.244.1.11:5000")
    );
    let t = run(
        &dir,
        &h.maps,
        req("192.0.2.100:20000", "10.96.0.40:5000", Protocol::Sctp),
    );
    assert_eq!((t.verdict, t.entry), ("dnat_new", Entry::External), "{t:?}");
    assert_eq!(t.masquerade.as_deref(), Some("192.0.2.1:20000"), "{t:?}");
    drop(h);

    let config = DatapathConfig {
        detect_local: DetectLocal::Interface,
        pod_cidrs: vec![],
        ..node1_config()
    };
    let mut h = Harness::load("trace-iface", &config);
    h.sync(&services);
    let dir = h.pin_dir().to_path_buf();
    let r = req("10.244.1.20:40001", "10.96.0.40:5000", Protocol::Sctp);
    let t = run(&dir, &h.maps, r.clone());
    assert_eq!(
        t.entry,
        Entry::External,
        "by interface, an address says nothing"
    );
    assert_eq!(t.masquerade.as_deref(), Some("192.0.2.1:40001"), "{t:?}");
    assert!(
        t.rule.contains("did not enter through a pod interface"),
        "{}",
        t.rule
    );
    let via_pod = TraceRequest {
        entry: Some(Entry::Pod),
        src_port: Some(40002),
        ..r
    };
    let t = run(&dir, &h.maps, via_pod);
    assert_eq!((t.verdict, t.entry), ("dnat_new", Entry::Pod), "{t:?}");
    assert_eq!(t.masquerade, None, "through a pod interface: a pod, {t:?}");
}
