//! Dual-stack and IPv6 Services: each family's frontends get only that family's endpoints,
//! node addresses, nodePortAddresses, externalIP CIDRs and source ranges (kube-proxy's
//! one proxier per family).
use super::*;

/// A dual-stack ClusterIP Service `default/web` (IPv6 first, as `ipFamilies: [IPv6,
/// IPv4]` orders it) with one IPv4 and one IPv6 endpoint slice.
fn dual_stack() -> Cluster {
    let svc = service(
        "default",
        "web",
        &["fd00:10:96::10", "10.96.0.10"],
        vec![port("http", 80, Protocol::Tcp)],
    );
    cluster(
        vec![svc],
        vec![(
            ObjectRef::new("default", "web"),
            vec![
                group(
                    &[("http", 8080, Protocol::Tcp)],
                    vec![ep("10.1.0.3", true, true, false)],
                ),
                group(
                    &[("http", 8080, Protocol::Tcp)],
                    vec![
                        ep("fd00:10:1::3", true, true, false),
                        ep("fd00:10:1::4", true, true, false),
                    ],
                ),
            ],
        )],
    )
}

#[test]
fn each_family_gets_only_its_own_endpoints() {
    let tcp = Protocol::Tcp;
    let (state, problems) = compute(&dual_stack(), &node());
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        state.frontends.keys().copied().collect::<Vec<_>>(),
        // IPv4 before IPv6 (IpAddr's order), whatever the Service lists first.
        vec![fe("10.96.0.10", 80, tcp), fe("fd00:10:96::10", 80, tcp)]
    );
    assert_eq!(
        backends(&state, fe("10.96.0.10", 80, tcp)),
        vec![be("10.1.0.3", 8080, tcp)]
    );
    assert_eq!(
        backends(&state, fe("fd00:10:96::10", 80, tcp)),
        vec![be("fd00:10:1::3", 8080, tcp), be("fd00:10:1::4", 8080, tcp)]
    );
    // Both ClusterIPs are allocated, each for its family's map.
    assert_eq!(
        state.cluster_ips.keys().copied().collect::<Vec<_>>(),
        vec![ip::<IpAddr>("10.96.0.10"), ip("fd00:10:96::10")]
    );
}

#[test]
fn a_family_without_endpoints_rejects_even_when_the_other_has_some() {
    let tcp = Protocol::Tcp;
    let mut c = dual_stack();
    c.endpoints
        .get_mut(&ObjectRef::new("default", "web"))
        .unwrap()
        .remove(1);
    let (state, _) = compute(&c, &node());
    assert_eq!(
        backends(&state, fe("10.96.0.10", 80, tcp)),
        vec![be("10.1.0.3", 8080, tcp)]
    );
    assert!(backends(&state, fe("fd00:10:96::10", 80, tcp)).is_empty());
}

#[test]
fn an_ipv6_only_service_is_served() {
    let tcp = Protocol::Tcp;
    let svc = service(
        "default",
        "v6",
        &["fd00:10:96::20"],
        vec![port("http", 80, tcp)],
    );
    let c = cluster(
        vec![svc],
        vec![(
            ObjectRef::new("default", "v6"),
            http_group(vec![ep("fd00:10:1::5", true, true, false)]),
        )],
    );
    let (state, problems) = compute(&c, &node());
    assert!(problems.is_empty(), "{problems:?}");
    assert!(state.unserved.is_empty(), "{:?}", state.unserved);
    assert_eq!(
        backends(&state, fe("fd00:10:96::20", 80, tcp)),
        vec![be("fd00:10:1::5", 8080, tcp)]
    );
    assert_eq!(
        state.cluster_ips,
        BTreeMap::from([(ip("fd00:10:96::20"), ClusterIpUse::Reject)])
    );
}

/// endpoints_for's partial update keeps the families apart too.
#[test]
fn update_endpoints_keeps_the_families_apart() {
    let (mut state, _) = compute(&dual_stack(), &node());
    let mut c = dual_stack();
    c.endpoints
        .get_mut(&ObjectRef::new("default", "web"))
        .unwrap()[1] = std::sync::Arc::new(group(
        &[("http", 8080, Protocol::Tcp)],
        vec![ep("fd00:10:1::9", true, true, false)],
    ));
    let changed = update_endpoints(
        &mut state,
        &c,
        &node(),
        &[ObjectRef::new("default", "web")].into(),
    );
    assert_eq!(changed, vec![fe("fd00:10:96::10", 80, Protocol::Tcp)]);
    assert_eq!(state, compute(&c, &node()).0);
}

fn dual_stack_node() -> NodeContext {
    NodeContext {
        node_ips: vec![
            ip("192.168.0.2"),
            ip("2001:db8::1"),
            ip("192.168.1.2"),
            ip("2001:db8:1::2"),
        ],
        ..node()
    }
}

fn node_port_service() -> Cluster {
    let mut svc = service(
        "default",
        "np",
        &["172.30.0.41", "fd00:172:30::41"],
        vec![port("p80", 80, Protocol::Tcp)],
    );
    svc.kind = ServiceKind::NodePort;
    svc.ports[0].node_port = Some(3001);
    cluster(
        vec![svc],
        vec![(
            ObjectRef::new("default", "np"),
            vec![group(
                &[("p80", 80, Protocol::Tcp)],
                vec![
                    ep("10.180.0.1", true, true, false),
                    ep("fd00:10:180::1", true, true, false),
                ],
            )],
        )],
    )
}

fn node_port_vips(state: &DesiredState) -> Vec<String> {
    state
        .frontends
        .iter()
        .filter(|(_, s)| s.kind == FrontendKind::NodePort)
        .map(|(f, _)| f.to_string())
        .collect()
}

/// kube-proxy's TestNodePorts, its IPv6 rows (nftables proxier_test.go) as this agent's
/// one computation for both families: the node's IPv6 addresses are 2001:db8::1 (primary)
/// and 2001:db8:1::2 (alternate).
#[test]
fn kube_proxy_node_ports_ipv6_rows() {
    // "ipv6": the default nodePortAddresses (the primary node IPs: a /32 and a /128).
    let mut n = dual_stack_node();
    n.node_port_addresses = vec![
        "192.168.0.2/32".parse().unwrap(),
        "2001:db8::1/128".parse().unwrap(),
    ];
    let (state, problems) = compute(&node_port_service(), &n);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        node_port_vips(&state),
        vec!["192.168.0.2:3001/TCP", "[2001:db8::1]:3001/TCP"]
    );
    // Each family's NodePort goes to its family's endpoints.
    let f6 = fe("2001:db8::1", 3001, Protocol::Tcp);
    assert_eq!(
        backends(&state, f6),
        vec![be("fd00:10:180::1", 80, Protocol::Tcp)]
    );
    let f4 = fe("192.168.0.2", 3001, Protocol::Tcp);
    assert_eq!(
        backends(&state, f4),
        vec![be("10.180.0.1", 80, Protocol::Tcp)]
    );

    // "ipv6, multiple nodeport-addresses": both families' CIDRs; the alternate IPv6 node
    // IP answers too.
    n.node_port_addresses = [
        "192.168.0.0/24",
        "192.168.1.0/24",
        "2001:db8::/64",
        "2001:db8:1::2/128",
    ]
    .iter()
    .map(|c| c.parse().unwrap())
    .collect();
    let (state, _) = compute(&node_port_service(), &n);
    assert_eq!(
        node_port_vips(&state),
        vec![
            "192.168.0.2:3001/TCP",
            "192.168.1.2:3001/TCP",
            "[2001:db8::1]:3001/TCP",
            "[2001:db8:1::2]:3001/TCP"
        ]
    );
}

/// nodePortAddresses is per family, as each kube-proxy proxier keeps its family's CIDRs: a
/// family without a CIDR answers on all its node addresses; localhost NodePorts are IPv4
/// only.
#[test]
fn node_port_addresses_select_per_family() {
    let mut n = dual_stack_node();
    n.localhost_node_ports = true;
    // IPv6 CIDRs only: every IPv4 node address (and 127.0.0.1), the selected IPv6 one.
    n.node_port_addresses = vec!["2001:db8:1::/64".parse().unwrap()];
    assert_eq!(
        n.node_port_ips(),
        vec![
            ip::<IpAddr>("192.168.0.2"),
            ip("192.168.1.2"),
            ip("2001:db8:1::2")
        ]
    );
    assert_eq!(n.localhost_node_port_ip(), Some(ip("127.0.0.1")));
    // IPv4 CIDRs only: every IPv6 node address.
    n.node_port_addresses = vec!["192.168.1.0/24".parse().unwrap()];
    assert_eq!(
        n.node_port_ips(),
        vec![
            ip::<IpAddr>("2001:db8::1"),
            ip("192.168.1.2"),
            ip("2001:db8:1::2")
        ]
    );
    assert_eq!(n.localhost_node_port_ip(), None);
    // No CIDR: every address; ::1 never (no IPv6 localhost NodePorts).
    n.node_port_addresses.clear();
    assert_eq!(n.node_port_ips(), n.node_ips);
    let (state, _) = compute(&node_port_service(), &n);
    assert!(
        node_port_vips(&state)
            .iter()
            .all(|v| !v.starts_with("[::1]"))
    );
}

#[test]
fn external_ips_and_their_cidrs_per_family() {
    let tcp = Protocol::Tcp;
    let mut c = dual_stack();
    c.services
        .get_mut(&ObjectRef::new("default", "web"))
        .unwrap()
        .external_ips = vec![ip("203.0.113.7"), ip("2001:db8:7::7"), ip("2001:db8:8::8")];
    let (state, _) = compute(&c, &node());
    let ext6 = fe("2001:db8:7::7", 80, tcp);
    assert_eq!(state.frontends[&ext6].kind, FrontendKind::ExternalIp);
    assert_eq!(
        backends(&state, ext6),
        vec![be("fd00:10:1::3", 8080, tcp), be("fd00:10:1::4", 8080, tcp)]
    );
    // An IPv6 CIDR allows that family's externalIPs only; an IPv4 externalIP needs an IPv4
    // CIDR.
    let mut n = node();
    n.external_ips = ExternalIpPolicy::AllowIn(vec!["2001:db8:7::/48".parse().unwrap()]);
    let (state, problems) = compute(&c, &n);
    assert!(state.frontends.contains_key(&ext6));
    assert!(!state.frontends.contains_key(&fe("2001:db8:8::8", 80, tcp)));
    assert!(!state.frontends.contains_key(&fe("203.0.113.7", 80, tcp)));
    let reasons: Vec<&str> = problems.iter().map(|p| p.reason.as_str()).collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[1].contains("2001:db8:8::8"), "{reasons:?}");
}

#[test]
fn source_ranges_and_load_balancer_ips_per_family() {
    let tcp = Protocol::Tcp;
    let mut svc = lb_service();
    svc.cluster_ips.push(ip("fd00:10:96::10"));
    svc.load_balancer_ingress.push(LoadBalancerIngress {
        ip: Some(ip("2001:db8:5::1")),
        hostname: None,
        ip_mode: IpMode::Vip,
    });
    // An IPv4 range only: the IPv6 LoadBalancer IP accepts every source.
    let c = |svc: Service| {
        cluster(
            vec![svc],
            vec![(
                ObjectRef::new("default", "lb"),
                vec![group(
                    &[("http", 8080, tcp)],
                    vec![
                        ep("10.1.0.3", true, true, false),
                        ep("fd00:10:1::3", true, true, false),
                    ],
                )],
            )],
        )
    };
    let (state, _) = compute(&c(svc.clone()), &dual_stack_node());
    let lb6 = fe("2001:db8:5::1", 80, tcp);
    assert_eq!(state.frontends[&lb6].kind, FrontendKind::LoadBalancer);
    assert!(state.frontends[&lb6].source_ranges.is_empty());
    assert_eq!(backends(&state, lb6), vec![be("fd00:10:1::3", 8080, tcp)]);
    assert_eq!(
        state.frontends[&fe("198.51.100.1", 80, tcp)].source_ranges,
        vec!["10.0.0.0/8".parse::<IpCidr>().unwrap()]
    );
    // An IPv6 range holding the node's primary IPv6 address: the IPv6 LoadBalancer IPs
    // are allowed as sources (as /128s), on the IPv6 frontends only.
    svc.load_balancer_source_ranges
        .push("2001:db8::/64".parse().unwrap());
    let (state, _) = compute(&c(svc), &dual_stack_node());
    assert_eq!(
        state.frontends[&lb6].source_ranges,
        vec![
            "2001:db8::/64".parse::<IpCidr>().unwrap(),
            "2001:db8:5::1/128".parse().unwrap()
        ]
    );
    assert_eq!(
        state.frontends[&fe("198.51.100.1", 80, tcp)].source_ranges,
        vec!["10.0.0.0/8".parse::<IpCidr>().unwrap()]
    );
}

/// A dual-stack pod is one endpoint for the health check, not one per address.
#[test]
fn health_checks_count_dual_stack_pods_once() {
    let mut svc = lb_service();
    svc.cluster_ips.push(ip("fd00:10:96::10"));
    svc.external_traffic_policy = TrafficPolicy::Local;
    svc.health_check_node_port = Some(32000);
    let c = cluster(
        vec![svc],
        vec![(
            ObjectRef::new("default", "lb"),
            vec![group(
                &[("http", 8080, Protocol::Tcp)],
                vec![
                    on(NODE_A, ep("10.1.0.3", true, true, false)),
                    on(NODE_A, ep("fd00:10:1::3", true, true, false)),
                    on(NODE_A, ep("10.1.0.4", true, true, false)),
                ],
            )],
        )],
    );
    let (state, _) = compute(&c, &node());
    assert_eq!(state.health_checks[0].local_endpoints, 2);
}
