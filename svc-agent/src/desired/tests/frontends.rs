//! Which frontends a Service gets: kinds, policies, addresses, clashes, unserved Services.
use super::*;

#[test]
fn tcp_and_udp_on_same_port_are_distinct_frontends() {
    let svc = service(
        "kube-system",
        "kube-dns",
        &["10.96.0.10"],
        vec![
            port("dns", 53, Protocol::Udp),
            port("dns-tcp", 53, Protocol::Tcp),
        ],
    );
    let c = cluster(
        vec![svc],
        vec![(
            ObjectRef::new("kube-system", "kube-dns"),
            vec![group(
                &[("dns-tcp", 53, Protocol::Tcp), ("dns", 53, Protocol::Udp)],
                vec![ep("10.1.0.20", true, true, false)],
            )],
        )],
    );
    let (state, problems) = compute(&c, &NodeContext::default());
    assert!(problems.is_empty());
    assert_eq!(
        backends(&state, fe("10.96.0.10", 53, Protocol::Udp)),
        vec![be("10.1.0.20", 53, Protocol::Udp)]
    );
    assert_eq!(
        backends(&state, fe("10.96.0.10", 53, Protocol::Tcp)),
        vec![be("10.1.0.20", 53, Protocol::Tcp)]
    );
}

#[test]
fn headless_external_name_and_foreign_proxy_produce_nothing() {
    let mut headless = service("default", "a", &[], vec![port("", 80, Protocol::Tcp)]);
    headless.kind = ServiceKind::Headless;
    let mut external = service("default", "b", &[], vec![]);
    external.kind = ServiceKind::ExternalName;
    let mut foreign = service(
        "default",
        "c",
        &["10.96.0.30"],
        vec![port("", 80, Protocol::Tcp)],
    );
    foreign.proxy_name_label = Some("other-proxy".into());
    let mut nodeport = service(
        "default",
        "d",
        &["10.96.0.40"],
        vec![port("", 80, Protocol::Tcp)],
    );
    nodeport.kind = ServiceKind::NodePort;
    nodeport.ports[0].node_port = Some(30080);
    let (state, problems) = compute(
        &cluster(vec![headless, external, foreign, nodeport], vec![]),
        &NodeContext::default(),
    );
    assert!(problems.is_empty());
    // Only the NodePort Service's ClusterIP frontend, with no endpoints: empty backends.
    assert_eq!(
        state.frontends.keys().copied().collect::<Vec<_>>(),
        vec![fe("10.96.0.40", 80, Protocol::Tcp)]
    );
    assert_eq!(
        backends(&state, fe("10.96.0.40", 80, Protocol::Tcp)),
        vec![]
    );
}

/// Two ClusterIPs, no incumbent, no timestamps (manifests on a fresh node): the last
/// tie-break, namespace/name order, decides. (Before issue 11 this was the only rule.)
#[test]
fn conflicting_vips_without_incumbent_or_age_go_by_object_ref() {
    let a = service(
        "alpha",
        "web",
        &["10.96.0.50"],
        vec![port("", 80, Protocol::Tcp)],
    );
    let b = service(
        "beta",
        "web",
        &["10.96.0.50"],
        vec![
            port("http", 80, Protocol::Tcp),
            port("x", 81, Protocol::Tcp),
        ],
    );
    let (state, problems) = compute(&cluster(vec![b, a], vec![]), &NodeContext::default());
    assert_eq!(
        state.frontends[&fe("10.96.0.50", 80, Protocol::Tcp)].service,
        ObjectRef::new("alpha", "web")
    );
    assert_eq!(
        state.frontends[&fe("10.96.0.50", 81, Protocol::Tcp)].service,
        ObjectRef::new("beta", "web")
    );
    assert_eq!(problems.len(), 1);
    assert_eq!(
        problems[0].to_string(),
        "Service beta/web: port \"http\" (ClusterIP 10.96.0.50:80/TCP) skipped: Service alpha/web (ClusterIP) keeps it: first by namespace/name"
    );
    let c = problems[0].conflict.as_ref().expect("a conflict");
    assert_eq!(
        (&c.owner, c.owner_kind, c.kind, c.why),
        (
            &ObjectRef::new("alpha", "web"),
            FrontendKind::ClusterIp,
            FrontendKind::ClusterIp,
            Precedence::Name
        )
    );
}

#[test]
fn every_frontend_kind_with_cluster_policies() {
    let svc = lb_service();
    let c = cluster(
        vec![svc],
        vec![(
            ObjectRef::new("default", "lb"),
            http_group(vec![ep("10.1.0.3", true, true, false)]),
        )],
    );
    let (state, problems) = compute(&c, &node());
    assert!(problems.is_empty(), "{problems:?}");
    let tcp = Protocol::Tcp;
    assert_eq!(
        kinds(&state),
        vec![
            (fe("10.0.0.10", 30080, tcp), FrontendKind::NodePort, false),
            (fe("10.96.0.10", 80, tcp), FrontendKind::ClusterIp, false),
            (
                fe("192.168.1.10", 30080, tcp),
                FrontendKind::NodePort,
                false
            ),
            (
                fe("198.51.100.1", 80, tcp),
                FrontendKind::LoadBalancer,
                false
            ),
            (fe("203.0.113.7", 80, tcp), FrontendKind::ExternalIp, false),
        ]
    );
    for (f, s) in &state.frontends {
        assert_eq!(s.backends, vec![be("10.1.0.3", 8080, tcp)], "{f}");
        assert_eq!(s.port_name, "http");
        assert_eq!(s.affinity_timeout, None);
        // Source ranges only on the LoadBalancer address (not NodePort, not externalIP).
        let expected: Vec<IpCidr> = if s.kind == FrontendKind::LoadBalancer {
            vec!["10.0.0.0/8".parse().unwrap()]
        } else {
            vec![]
        };
        assert_eq!(s.source_ranges, expected, "{f}");
    }
    assert!(state.health_checks.is_empty());
}

#[test]
fn etp_local_marks_external_kinds_and_itp_local_marks_cluster_ip() {
    let mut svc = lb_service();
    svc.external_traffic_policy = TrafficPolicy::Local;
    let (state, _) = compute(&cluster(vec![svc.clone()], vec![]), &node());
    for s in state.frontends.values() {
        assert_eq!(s.local_policy, s.kind.is_external(), "{:?}", s.kind);
    }
    svc.external_traffic_policy = TrafficPolicy::Cluster;
    svc.internal_traffic_policy = TrafficPolicy::Local;
    let (state, _) = compute(&cluster(vec![svc], vec![]), &node());
    for s in state.frontends.values() {
        assert_eq!(
            s.local_policy,
            s.kind == FrontendKind::ClusterIp,
            "{:?}",
            s.kind
        );
    }
    assert_eq!(FrontendKind::ClusterIp.title(), "ClusterIP");
    assert!(!FrontendKind::ClusterIp.is_external());
    assert!(FrontendKind::NodePort.is_external());
    assert!(FrontendKind::ExternalIp.is_external());
    assert!(FrontendKind::LoadBalancer.is_external());
}

#[test]
fn node_port_addresses_filter_node_ips() {
    let mut n = node();
    n.node_ips.push(ip("192.168.1.10")); // duplicates are ignored
    n.node_port_addresses = vec!["192.168.0.0/16".parse().unwrap()];
    assert_eq!(n.node_port_ips(), vec![ip::<IpAddr>("192.168.1.10")]);
    let mut svc = lb_service();
    svc.kind = ServiceKind::NodePort;
    let (state, problems) = compute(&cluster(vec![svc.clone()], vec![]), &n);
    assert!(problems.is_empty());
    let node_ports: Vec<Frontend> = state
        .frontends
        .iter()
        .filter(|(_, s)| s.kind == FrontendKind::NodePort)
        .map(|(f, _)| *f)
        .collect();
    assert_eq!(node_ports, vec![fe("192.168.1.10", 30080, Protocol::Tcp)]);
    // Type NodePort: ingress status is ignored, externalIPs are still served.
    assert!(
        state
            .frontends
            .values()
            .all(|s| s.kind != FrontendKind::LoadBalancer)
    );
    assert!(
        state
            .frontends
            .contains_key(&fe("203.0.113.7", 80, Protocol::Tcp))
    );

    // A CIDR matching no node address: no NodePort frontend at all; no node IPs either.
    n.node_port_addresses = vec!["172.16.0.0/12".parse().unwrap()];
    let (state, _) = compute(&cluster(vec![svc.clone()], vec![]), &n);
    assert!(
        state
            .frontends
            .values()
            .all(|s| s.kind != FrontendKind::NodePort)
    );
    let (state, _) = compute(&cluster(vec![svc], vec![]), &NodeContext::default());
    assert!(
        state
            .frontends
            .values()
            .all(|s| s.kind != FrontendKind::NodePort)
    );
}

#[test]
fn node_ports_only_for_node_port_and_load_balancer_types_with_a_node_port() {
    // A nodePort on a ClusterIP Service (rejected by the API server) is not served.
    let mut svc = service(
        "default",
        "c",
        &["10.96.0.20"],
        vec![port("a", 80, Protocol::Tcp), port("b", 81, Protocol::Udp)],
    );
    svc.ports[0].node_port = Some(30001);
    let (state, _) = compute(&cluster(vec![svc.clone()], vec![]), &node());
    assert_eq!(state.frontends.len(), 2);
    // LoadBalancer with allocateLoadBalancerNodePorts false: an explicit nodePort is
    // served, a port without one is not.
    svc.kind = ServiceKind::LoadBalancer;
    svc.allocate_load_balancer_node_ports = false;
    let (state, _) = compute(&cluster(vec![svc], vec![]), &node());
    assert_eq!(
        kinds(&state),
        vec![
            (
                fe("10.0.0.10", 30001, Protocol::Tcp),
                FrontendKind::NodePort,
                false
            ),
            (
                fe("10.96.0.20", 80, Protocol::Tcp),
                FrontendKind::ClusterIp,
                false
            ),
            (
                fe("10.96.0.20", 81, Protocol::Udp),
                FrontendKind::ClusterIp,
                false
            ),
            (
                fe("192.168.1.10", 30001, Protocol::Tcp),
                FrontendKind::NodePort,
                false
            ),
        ]
    );
}

#[test]
fn external_ips_served_for_cluster_ip_services_too() {
    let mut svc = service(
        "default",
        "e",
        &["10.96.0.30"],
        vec![port("", 53, Protocol::Udp)],
    );
    svc.external_ips = vec![ip("203.0.113.8"), ip("203.0.113.9")];
    svc.external_traffic_policy = TrafficPolicy::Local;
    let (state, _) = compute(&cluster(vec![svc], vec![]), &node());
    assert_eq!(
        kinds(&state),
        vec![
            (
                fe("10.96.0.30", 53, Protocol::Udp),
                FrontendKind::ClusterIp,
                false
            ),
            (
                fe("203.0.113.8", 53, Protocol::Udp),
                FrontendKind::ExternalIp,
                true
            ),
            (
                fe("203.0.113.9", 53, Protocol::Udp),
                FrontendKind::ExternalIp,
                true
            ),
        ]
    );
}

#[test]
fn lb_ingress_proxy_mode_and_hostname_only_entries_are_skipped() {
    let mut svc = lb_service();
    svc.external_ips.clear();
    svc.ports[0].node_port = None;
    // A second entry with the same IP (another hostname) is not a conflict.
    svc.load_balancer_ingress.push(LoadBalancerIngress {
        ip: Some(ip("198.51.100.1")),
        hostname: Some("again.example.com".into()),
        ip_mode: IpMode::Vip,
    });
    let (state, problems) = compute(&cluster(vec![svc.clone()], vec![]), &node());
    assert!(problems.is_empty(), "{problems:?}");
    let lbs: Vec<Frontend> = state
        .frontends
        .iter()
        .filter(|(_, s)| s.kind == FrontendKind::LoadBalancer)
        .map(|(f, _)| *f)
        .collect();
    assert_eq!(lbs, vec![fe("198.51.100.1", 80, Protocol::Tcp)]);
    assert!(
        !state
            .frontends
            .contains_key(&fe("198.51.100.2", 80, Protocol::Tcp))
    );
    // A ClusterIP Service with a stale ingress status gets no LoadBalancer frontend.
    svc.kind = ServiceKind::ClusterIp;
    let (state, _) = compute(&cluster(vec![svc], vec![]), &node());
    assert_eq!(state.frontends.len(), 1);
}

#[test]
fn affinity_timeout_on_every_frontend() {
    let mut svc = lb_service();
    svc.session_affinity = SessionAffinity::ClientIp {
        timeout_seconds: 600,
    };
    let (state, _) = compute(&cluster(vec![svc], vec![]), &node());
    assert_eq!(state.frontends.len(), 5);
    assert!(
        state
            .frontends
            .values()
            .all(|s| s.affinity_timeout == Some(600))
    );
}

#[test]
fn conflicts_across_kinds() {
    let tcp = Protocol::Tcp;
    // Same Service: externalIP equal to a node IP, port equal to the nodePort. The
    // externalIP wins (explicit addresses before node ports) and the NodePort is reported.
    let mut svc = service(
        "default",
        "self",
        &["10.96.0.10"],
        vec![port("http", 30080, tcp)],
    );
    svc.kind = ServiceKind::NodePort;
    svc.ports[0].node_port = Some(30080);
    svc.external_ips = vec![ip("192.168.1.10")];
    let (state, problems) = compute(&cluster(vec![svc], vec![]), &node());
    assert_eq!(
        state.frontends[&fe("192.168.1.10", 30080, tcp)].kind,
        FrontendKind::ExternalIp
    );
    assert_eq!(
        state.frontends[&fe("10.0.0.10", 30080, tcp)].kind,
        FrontendKind::NodePort
    );
    assert_eq!(
        problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec![
            "Service default/self: port \"http\" (NodePort 192.168.1.10:30080/TCP) skipped: Service default/self (externalIP) keeps it: externalIP outranks NodePort"
        ]
    );

    // Across Services: a's NodePort vs b's LoadBalancer IP equal to a node IP. b's
    // explicit address wins although a comes first in ObjectRef order.
    let mut a = service("default", "a", &["10.96.0.1"], vec![port("", 80, tcp)]);
    a.kind = ServiceKind::NodePort;
    a.ports[0].node_port = Some(30080);
    let mut b = lb_service();
    b.id = ObjectRef::new("default", "b");
    b.cluster_ips = vec![ip("10.96.0.2")];
    b.external_ips.clear();
    b.ports = vec![port("", 30080, tcp)];
    b.load_balancer_ingress = vec![LoadBalancerIngress {
        ip: Some(ip("10.0.0.10")),
        hostname: None,
        ip_mode: IpMode::Vip,
    }];
    // c's ClusterIP equals b's ClusterIP: b comes first.
    let mut c = service("default", "c", &["10.96.0.2"], vec![port("", 30080, tcp)]);
    c.external_ips = vec![ip("10.0.0.10")];
    let (state, problems) = compute(&cluster(vec![c, b, a], vec![]), &node());
    let owner = |f: Frontend| {
        let s = &state.frontends[&f];
        (s.service.name.clone(), s.kind)
    };
    assert_eq!(
        owner(fe("10.0.0.10", 30080, tcp)),
        ("b".into(), FrontendKind::LoadBalancer)
    );
    assert_eq!(
        owner(fe("192.168.1.10", 30080, tcp)),
        ("a".into(), FrontendKind::NodePort)
    );
    assert_eq!(
        owner(fe("10.96.0.2", 30080, tcp)),
        ("b".into(), FrontendKind::ClusterIp)
    );
    assert_eq!(
        problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec![
            "Service default/c: port 30080/TCP (ClusterIP 10.96.0.2:30080/TCP) skipped: Service default/b (ClusterIP) keeps it: first by namespace/name",
            "Service default/c: port 30080/TCP (externalIP 10.0.0.10:30080/TCP) skipped: Service default/b (LoadBalancer IP) keeps it: first by namespace/name",
            "Service default/a: port 80/TCP (NodePort 10.0.0.10:30080/TCP) skipped: Service default/b (LoadBalancer IP) keeps it: LoadBalancer IP outranks NodePort",
        ]
    );
}

#[test]
fn foreign_proxy_and_headless_get_no_external_frontends_or_health_checks() {
    let mut foreign = lb_service();
    foreign.proxy_name_label = Some("other".into());
    foreign.external_traffic_policy = TrafficPolicy::Local;
    foreign.health_check_node_port = Some(31000);
    let mut headless = lb_service();
    headless.id = ObjectRef::new("default", "h");
    headless.kind = ServiceKind::Headless;
    headless.cluster_ips.clear();
    let (state, problems) = compute(&cluster(vec![foreign, headless], vec![]), &node());
    assert!(state.frontends.is_empty());
    assert!(state.health_checks.is_empty());
    assert!(problems.is_empty());
}

#[test]
fn services_without_frontends_are_listed_with_the_reason() {
    let tcp80 = || vec![port("http", 80, Protocol::Tcp)];
    let mut headless = service("default", "headless", &[], tcp80());
    headless.kind = ServiceKind::Headless;
    let mut alias = service("default", "alias", &[], vec![]);
    alias.kind = ServiceKind::ExternalName;
    let mut foreign = service("default", "foreign", &["10.96.0.30"], tcp80());
    foreign.proxy_name_label = Some("someone-else".into());
    // Labelled and headless: the type is the reason.
    let mut both = service("default", "both", &[], tcp80());
    both.kind = ServiceKind::Headless;
    both.proxy_name_label = Some("someone-else".into());
    // Only SCTP ports with another targetPort: the model dropped every port.
    let sctp = service("default", "sctp", &["10.96.0.31"], vec![]);
    let v6only = service("default", "v6only", &[], tcp80());
    // IPv6-only cluster IP but an externalIP: served (no entry here).
    let mut v6_external = service("default", "v6ext", &[], tcp80());
    v6_external.external_ips = vec![ip("198.51.100.7")];
    // Loses its only address to an earlier Service (no incumbent, no timestamps): unserved,
    // the address is taken.
    let winner = service("alpha", "web", &["10.96.0.50"], tcp80());
    let loser = service("beta", "web", &["10.96.0.50"], tcp80());
    let served = service("default", "served", &["10.96.0.40"], tcp80());
    let (state, problems) = compute(
        &cluster(
            vec![
                headless,
                alias,
                foreign,
                both,
                sctp,
                v6only,
                v6_external,
                winner,
                loser,
                served,
            ],
            vec![],
        ),
        &NodeContext::default(),
    );
    assert_eq!(problems.len(), 1, "{problems:?}");
    let r = |ns: &str, n: &str, why| (ObjectRef::new(ns, n), why);
    use UnservedReason::*;
    assert_eq!(
        state.unserved,
        vec![
            r("beta", "web", AddressTaken),
            r("default", "alias", ExternalName),
            r("default", "both", Headless),
            r("default", "foreign", OtherProxy),
            r("default", "headless", Headless),
            r("default", "sctp", NoPorts),
            r("default", "v6only", NoIpv4ClusterIp),
        ]
    );
    let words: Vec<&str> = state.unserved.iter().map(|(_, w)| w.label()).collect();
    assert_eq!(
        words,
        [
            "address-taken",
            "externalname",
            "headless",
            "other-proxy",
            "headless",
            "no-ports",
            "no-ipv4-clusterip"
        ]
    );
    // The rules for the served ones are unchanged.
    assert_eq!(
        state.frontends.keys().copied().collect::<Vec<_>>(),
        vec![
            fe("10.96.0.40", 80, Protocol::Tcp),
            fe("10.96.0.50", 80, Protocol::Tcp),
            fe("198.51.100.7", 80, Protocol::Tcp),
        ]
    );
}

#[test]
fn a_service_with_only_node_ports_is_served() {
    // No IPv4 cluster IP, but a NodePort on this node: not unserved.
    let mut svc = service("default", "np", &[], vec![port("http", 80, Protocol::Tcp)]);
    svc.kind = ServiceKind::NodePort;
    svc.ports[0].node_port = Some(30080);
    let (state, _) = compute(&cluster(vec![svc.clone()], vec![]), &node());
    assert!(state.unserved.is_empty(), "{:?}", state.unserved);
    assert_eq!(state.frontends.len(), 2, "one per node address");
    // A node without addresses: nothing to serve, and the reason is the cluster IP.
    let (state, _) = compute(&cluster(vec![svc], vec![]), &NodeContext::default());
    assert_eq!(
        state.unserved,
        vec![(
            ObjectRef::new("default", "np"),
            UnservedReason::NoIpv4ClusterIp
        )]
    );
}

/// SCTP is translated by address only: a LoadBalancer Service's SCTP port is served on its
/// ClusterIP, externalIP and LoadBalancer IP (all at `port`) but not on its NodePort (at
/// `nodePort`, which differs from the targetPort), which is a problem naming the reason;
/// endpoints whose named targetPort resolves to another port are left out.
#[test]
fn sctp_is_served_where_no_port_changes() {
    let mut svc = lb_service();
    svc.ports = vec![
        ServicePort {
            node_port: Some(30090),
            ..port("sig", 2905, Protocol::Sctp)
        },
        ServicePort {
            target_port: TargetPort::Name("named".into()),
            ..port("named", 2906, Protocol::Sctp)
        },
    ];
    let eps = group(
        &[
            ("sig", 2905, Protocol::Sctp),
            ("named", 2906, Protocol::Sctp),
        ],
        vec![ep("10.244.1.11", true, true, false)],
    );
    // A second slice where "named" resolves to another port: left out.
    let moved = group(
        &[("named", 7000, Protocol::Sctp)],
        vec![ep("10.244.1.12", true, true, false)],
    );
    let c = cluster(
        vec![svc],
        vec![(ObjectRef::new("default", "lb"), vec![eps, moved])],
    );
    let (state, problems) = compute(&c, &node());
    for vip in ["10.96.0.10", "203.0.113.7", "198.51.100.1"] {
        assert_eq!(
            backends(&state, fe(vip, 2905, Protocol::Sctp)),
            vec![be("10.244.1.11", 2905, Protocol::Sctp)],
            "{vip}"
        );
        assert_eq!(
            backends(&state, fe(vip, 2906, Protocol::Sctp)),
            vec![be("10.244.1.11", 2906, Protocol::Sctp)],
            "{vip}: the endpoint on 7000 is left out"
        );
    }
    assert!(
        !state.frontends.keys().any(|f| f.port == 30090),
        "no SCTP NodePort: {:?}",
        state.frontends.keys()
    );
    let reasons: Vec<String> = problems.iter().map(|p| p.reason.clone()).collect();
    assert_eq!(
        reasons,
        vec![
            "port \"sig\": NodePort 30090/SCTP skipped: SCTP is translated by address only, \
             and the nodePort differs from the targetPort (2905); the ClusterIP, externalIPs \
             and LoadBalancer IPs are served"
        ]
    );
}
