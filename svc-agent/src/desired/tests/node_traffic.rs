//! The node's own traffic: localhost NodePorts (the flag and nodePortAddresses decide
//! whether 127.0.0.1 gets NodePort frontends) and LoadBalancer IPs as allowed sources when
//! the node's primary IP is inside loadBalancerSourceRanges.
use super::*;

fn node_with_localhost() -> NodeContext {
    NodeContext {
        localhost_node_ports: true,
        ..node()
    }
}

fn node_ports(state: &DesiredState) -> Vec<Frontend> {
    state
        .frontends
        .iter()
        .filter(|(_, s)| s.kind == FrontendKind::NodePort)
        .map(|(f, _)| *f)
        .collect()
}

fn lb_cluster(svc: Service) -> Cluster {
    cluster(
        vec![svc],
        vec![(
            ObjectRef::new("default", "lb"),
            http_group(vec![on(NODE_A, ep("10.1.0.3", true, true, false))]),
        )],
    )
}

#[test]
fn localhost_node_ports_on_127_0_0_1_with_the_flag() {
    let tcp = Protocol::Tcp;
    let (state, problems) = compute(&lb_cluster(lb_service()), &node_with_localhost());
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        node_ports(&state),
        vec![
            fe("10.0.0.10", 30080, tcp),
            fe("127.0.0.1", 30080, tcp),
            fe("192.168.1.10", 30080, tcp),
        ]
    );
    // The same frontend as on the node addresses: kind, policy, backends.
    let lo = &state.frontends[&fe("127.0.0.1", 30080, tcp)];
    let on_node = &state.frontends[&fe("192.168.1.10", 30080, tcp)];
    assert_eq!(lo, on_node);
    assert!(
        lo.source_ranges.is_empty(),
        "source ranges are not a NodePort's"
    );

    // externalTrafficPolicy Local: the localhost frontend is Local too (the socket
    // programs then use every endpoint for the node, as for its other NodePorts).
    let mut local = lb_service();
    local.external_traffic_policy = TrafficPolicy::Local;
    let (state, _) = compute(&lb_cluster(local), &node_with_localhost());
    assert!(state.frontends[&fe("127.0.0.1", 30080, tcp)].local_policy);

    // The flag off (or NodeContext's default): node addresses only.
    let (state, _) = compute(&lb_cluster(lb_service()), &node());
    assert!(!state.frontends.keys().any(|f| f.vip.is_loopback()));

    // A ClusterIP Service has no NodePort, hence nothing on 127.0.0.1.
    let svc = service(
        "default",
        "lb",
        &["10.96.0.10"],
        vec![port("http", 80, tcp)],
    );
    let (state, _) = compute(&lb_cluster(svc), &node_with_localhost());
    assert_eq!(state.frontends.len(), 1);
}

#[test]
fn localhost_node_ports_follow_node_port_addresses() {
    let tcp = Protocol::Tcp;
    let with = |cidrs: &[&str]| {
        let n = NodeContext {
            node_port_addresses: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
            ..node_with_localhost()
        };
        let (state, _) = compute(&lb_cluster(lb_service()), &n);
        (node_ports(&state), n)
    };
    // Given, without loopback: no localhost NodePorts (kube-proxy: only when
    // nodePortAddresses is unset or includes loopback).
    let (ports, n) = with(&["192.168.0.0/16"]);
    assert_eq!(ports, vec![fe("192.168.1.10", 30080, tcp)]);
    assert_eq!(n.localhost_node_port_ip(), None);
    assert!(!n.loopback_node_ports_disabled());
    // Loopback only: 127.0.0.1 and no node address.
    let (ports, n) = with(&["127.0.0.0/8"]);
    assert_eq!(ports, vec![fe("127.0.0.1", 30080, tcp)]);
    assert_eq!(
        n.localhost_node_port_ip(),
        Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
    );
    // Both.
    let (ports, _) = with(&["127.0.0.1/32", "10.0.0.0/8"]);
    assert_eq!(
        ports,
        vec![fe("10.0.0.10", 30080, tcp), fe("127.0.0.1", 30080, tcp)]
    );
    // A loopback CIDR without 127.0.0.1 (one address served per node: 127.0.0.1).
    let (ports, _) = with(&["127.0.0.2/32"]);
    assert!(ports.is_empty(), "{ports:?}");
    // Loopback asked for with the flag off: nothing there, and the agent warns.
    let n = NodeContext {
        node_port_addresses: vec!["127.0.0.0/8".parse().unwrap()],
        ..node()
    };
    assert!(n.loopback_node_ports_disabled());
    let (state, _) = compute(&lb_cluster(lb_service()), &n);
    assert!(node_ports(&state).is_empty());
}

#[test]
fn load_balancer_ips_are_sources_when_the_node_ip_is_inside_the_ranges() {
    let tcp = Protocol::Tcp;
    let lb_ip = fe("198.51.100.1", 80, tcp);
    let ranges = |cidrs: &[&str], n: &NodeContext| {
        let mut svc = lb_service();
        svc.load_balancer_source_ranges = cidrs.iter().map(|c| c.parse().unwrap()).collect();
        let (state, problems) = compute(&lb_cluster(svc), n);
        assert!(problems.is_empty(), "{problems:?}");
        // Only LoadBalancer frontends have ranges.
        for (f, s) in &state.frontends {
            if s.kind != FrontendKind::LoadBalancer {
                assert!(s.source_ranges.is_empty(), "{f}: {:?}", s.source_ranges);
            }
        }
        state.frontends[&lb_ip]
            .source_ranges
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
    };
    // The primary node IP 192.168.1.10 inside: the VIP-mode LoadBalancer IP is allowed
    // as a source too (not the Proxy-mode one, which gets no frontend).
    assert_eq!(
        ranges(&["192.168.0.0/16"], &node()),
        vec!["192.168.0.0/16", "198.51.100.1/32"]
    );
    // Outside: the ranges as they are.
    assert_eq!(ranges(&["172.16.0.0/12"], &node()), vec!["172.16.0.0/12"]);
    // Only the primary IP counts (kube-proxy's nodeIP): node()'s second address
    // 10.0.0.10 is inside 10.0.0.0/8, its first is not.
    assert_eq!(ranges(&["10.0.0.0/8"], &node()), vec!["10.0.0.0/8"]);
    // No ranges: every source, nothing added.
    assert!(ranges(&[], &node()).is_empty());
    // The LoadBalancer IP already inside a range: listed once.
    assert_eq!(
        ranges(&["192.168.0.0/16", "198.51.100.1/32"], &node()),
        vec!["192.168.0.0/16", "198.51.100.1/32"]
    );
    // No node IP known: nothing added.
    let n = NodeContext {
        node_ips: vec![],
        ..node()
    };
    assert_eq!(ranges(&["192.168.0.0/16"], &n), vec!["192.168.0.0/16"]);
}

#[test]
fn every_load_balancer_ip_of_the_service_is_a_source_on_each_of_them() {
    let tcp = Protocol::Tcp;
    let mut svc = lb_service();
    svc.load_balancer_source_ranges = vec!["192.168.1.0/24".parse().unwrap()];
    svc.load_balancer_ingress.push(LoadBalancerIngress {
        ip: Some(ip("198.51.100.3")),
        hostname: None,
        ip_mode: IpMode::Vip,
    });
    let (state, _) = compute(&lb_cluster(svc), &node());
    let want: Vec<IpCidr> = ["192.168.1.0/24", "198.51.100.1/32", "198.51.100.3/32"]
        .iter()
        .map(|c| c.parse().unwrap())
        .collect();
    for vip in ["198.51.100.1", "198.51.100.3"] {
        assert_eq!(
            state.frontends[&fe(vip, 80, tcp)].source_ranges,
            want,
            "{vip}"
        );
    }
}
