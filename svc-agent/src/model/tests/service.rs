//! Services: fields, defaults, precise rejections.
use super::*;
use std::net::IpAddr;

#[test]
fn protocol_numbers_and_names() {
    assert_eq!(Protocol::Tcp.raw(), 6);
    assert_eq!(Protocol::Udp.raw(), 17);
    assert_eq!(Protocol::Tcp.to_string(), "TCP");
    assert_eq!(Protocol::Udp.to_string(), "UDP");
    assert_eq!(
        ObjectRef::new("kube-system", "dns").to_string(),
        "kube-system/dns"
    );
}

#[test]
fn defaults_namespace_protocol_and_target_port() {
    let mut p = kport("", 80, "TCP");
    p.name = None;
    p.protocol = None;
    let (svc, warnings) = Service::from_k8s(&k8s_service(vec![p])).unwrap();
    assert!(warnings.is_empty());
    assert_eq!(svc.id, ObjectRef::new("default", "web"));
    assert_eq!(svc.kind, ServiceKind::ClusterIp);
    assert_eq!(svc.cluster_ips, vec![Ipv4Addr::new(10, 96, 0, 10)]);
    assert_eq!(
        svc.ports,
        vec![ServicePort {
            name: String::new(),
            port: 80,
            protocol: Protocol::Tcp,
            target_port: TargetPort::Number(80),
            node_port: None
        }]
    );
}

#[test]
fn sctp_ports_are_kept_only_where_the_target_port_is_the_port() {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let target = |p: KPort, t: IntOrString| KPort {
        target_port: Some(t),
        ..p
    };
    let (svc, warnings) = Service::from_k8s(&k8s_service(vec![
        kport("a", 80, "TCP"),
        // No targetPort: the port itself.
        kport("b", 5000, "SCTP"),
        target(kport("c", 5001, "SCTP"), IntOrString::Int(5001)),
        // Another number: would need the CRC32c recomputed.
        target(kport("d", 5002, "SCTP"), IntOrString::Int(6000)),
        // A name: resolved per endpoint (desired keeps the endpoints on port 5003 only).
        target(kport("e", 5003, "SCTP"), IntOrString::String("sig".into())),
    ]))
    .unwrap();
    let kept: Vec<(&str, Protocol)> = svc
        .ports
        .iter()
        .map(|p| (p.name.as_str(), p.protocol))
        .collect();
    assert_eq!(
        kept,
        vec![
            ("a", Protocol::Tcp),
            ("b", Protocol::Sctp),
            ("c", Protocol::Sctp),
            ("e", Protocol::Sctp)
        ]
    );
    assert_eq!(
        warnings,
        vec![
            "spec.ports[3] (\"d\" 5002/SCTP) skipped: targetPort 6000 differs from port, and \
             SCTP is translated by address only (its CRC32c would need recomputing for a port \
             change)"
        ]
    );
}

#[test]
fn rejections_have_precise_reasons() {
    let err = |s: corev1::Service| Service::from_k8s(&s).unwrap_err().to_string();
    assert_eq!(
        err(k8s_service(vec![
            kport("a", 80, "TCP"),
            kport("b", 70000, "TCP")
        ])),
        "spec.ports[1].port 70000 is out of range 1-65535"
    );
    assert_eq!(
        err(k8s_service(vec![kport("a", 80, "ICMP")])),
        "spec.ports[0].protocol \"ICMP\" is not TCP, UDP or SCTP"
    );
    let mut s = k8s_service(vec![kport("a", 80, "TCP")]);
    s.spec.as_mut().unwrap().cluster_ip = Some("10.0.0.300".into());
    assert_eq!(err(s), "spec.clusterIP \"10.0.0.300\" is not an IP address");
    let mut s = k8s_service(vec![kport("a", 80, "TCP")]);
    s.metadata.name = None;
    assert_eq!(err(s), "missing metadata.name");
    assert_eq!(
        err(k8s_service(vec![
            kport("a", 80, "TCP"),
            kport("", 81, "TCP")
        ])),
        "spec.ports[1].name: required when a Service has more than one port"
    );
    assert_eq!(
        err(k8s_service(vec![
            kport("a", 80, "TCP"),
            kport("b", 80, "TCP")
        ])),
        "spec.ports[1]: duplicate port 80/TCP"
    );
}

#[test]
fn dual_stack_keeps_both_families_in_order_and_headless_needs_no_ports() {
    let mut s = k8s_service(vec![kport("a", 53, "UDP")]);
    let spec = s.spec.as_mut().unwrap();
    spec.cluster_ip = Some("fd00::10".into());
    spec.cluster_ips = Some(vec!["fd00::10".into(), "10.96.0.10".into()]);
    let (svc, w) = Service::from_k8s(&s).unwrap();
    assert!(w.is_empty());
    // Both families, in spec.clusterIPs order (the ipFamilies order).
    assert_eq!(
        svc.cluster_ips,
        vec![
            "fd00::10".parse::<IpAddr>().unwrap(),
            IpAddr::from([10, 96, 0, 10])
        ]
    );

    let mut s = k8s_service(vec![]);
    s.spec.as_mut().unwrap().cluster_ip = Some("None".into());
    let (svc, _) = Service::from_k8s(&s).unwrap();
    assert_eq!(svc.kind, ServiceKind::Headless);
    assert!(svc.cluster_ips.is_empty());
    assert!(!svc.is_proxied());
}

#[test]
fn defaults_of_the_semantics_fields() {
    let (svc, w) = Service::from_k8s(&k8s_service(vec![kport("a", 80, "TCP")])).unwrap();
    assert!(w.is_empty());
    assert_eq!(svc.external_traffic_policy, TrafficPolicy::Cluster);
    assert_eq!(svc.internal_traffic_policy, TrafficPolicy::Cluster);
    assert!(svc.external_ips.is_empty());
    assert!(svc.load_balancer_ingress.is_empty());
    assert!(svc.load_balancer_source_ranges.is_empty());
    assert_eq!(svc.session_affinity, SessionAffinity::None);
    assert_eq!(svc.affinity_timeout(), None);
    assert_eq!(svc.health_check_node_port, None);
    assert!(svc.allocate_load_balancer_node_ports);
    assert_eq!((svc.created, svc.uid), (None, None));
}

#[test]
fn creation_timestamp_and_uid_are_kept() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    let mut s = k8s_service(vec![kport("a", 80, "TCP")]);
    let t: jiff::Timestamp = "2024-05-01T10:00:00Z".parse().unwrap();
    s.metadata.creation_timestamp = Some(Time(t));
    s.metadata.uid = Some("0b9e-uid".into());
    let (svc, _) = Service::from_k8s(&s).unwrap();
    assert_eq!(svc.created, Some(t));
    assert_eq!(svc.uid.as_deref(), Some("0b9e-uid"));
    // An empty uid is no uid.
    s.metadata.uid = Some(String::new());
    assert_eq!(Service::from_k8s(&s).unwrap().0.uid, None);
}

#[test]
fn traffic_policies_parse_and_reject_unknown_values() {
    let parse = |etp: Option<&str>, itp: Option<&str>| {
        let mut s = lb_service();
        spec_mut(&mut s).external_traffic_policy = etp.map(Into::into);
        spec_mut(&mut s).internal_traffic_policy = itp.map(Into::into);
        spec_mut(&mut s).health_check_node_port = Some(32000);
        Service::from_k8s(&s)
    };
    let (svc, w) = parse(Some("Local"), Some("Local")).unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(svc.external_traffic_policy, TrafficPolicy::Local);
    assert_eq!(svc.internal_traffic_policy, TrafficPolicy::Local);
    assert_eq!(svc.health_check_node_port, Some(32000));
    let (svc, _) = parse(Some("Global"), Some("Cluster")).unwrap();
    assert_eq!(svc.external_traffic_policy, TrafficPolicy::Cluster);
    assert_eq!(svc.internal_traffic_policy, TrafficPolicy::Cluster);
    let (svc, _) = parse(Some("Cluster"), None).unwrap();
    assert_eq!(svc.external_traffic_policy, TrafficPolicy::Cluster);
    assert_eq!(
        parse(Some("local"), None).unwrap_err().to_string(),
        "spec.externalTrafficPolicy \"local\" is not Cluster or Local"
    );
    // Global is a legacy spelling of externalTrafficPolicy only.
    assert_eq!(
        parse(None, Some("Global")).unwrap_err().to_string(),
        "spec.internalTrafficPolicy \"Global\" is not Cluster or Local"
    );
    assert_eq!(TrafficPolicy::Local.to_string(), "Local");
}

#[test]
fn health_check_node_port_rules() {
    let mut s = lb_service();
    spec_mut(&mut s).external_traffic_policy = Some("Local".into());
    let (svc, w) = Service::from_k8s(&s).unwrap();
    assert_eq!(svc.health_check_node_port, None);
    assert_eq!(w.len(), 1);
    assert!(w[0].contains("no health check is served"), "{w:?}");

    spec_mut(&mut s).health_check_node_port = Some(70000);
    assert_eq!(
        err(&s),
        "spec.healthCheckNodePort 70000 is out of range 1-65535"
    );

    // Set where kube-proxy does not serve it: kept but a warning says it is unused.
    let mut s = lb_service();
    spec_mut(&mut s).health_check_node_port = Some(32000);
    let (svc, w) = Service::from_k8s(&s).unwrap();
    assert_eq!(svc.health_check_node_port, Some(32000));
    assert_eq!(
        w,
        vec![
            "spec.healthCheckNodePort ignored: it is only served for type LoadBalancer with externalTrafficPolicy Local"
        ]
    );
}

#[test]
fn external_ips_keep_both_families_and_reject_garbage() {
    let mut s = k8s_service(vec![kport("a", 80, "TCP")]);
    spec_mut(&mut s).external_ips = Some(vec![
        "203.0.113.7".into(),
        "2001:db8::7".into(),
        "203.0.113.8".into(),
        "203.0.113.7".into(),
    ]);
    let (svc, w) = Service::from_k8s(&s).unwrap();
    assert_eq!(
        svc.external_ips,
        vec![
            IpAddr::from([203, 0, 113, 7]),
            "2001:db8::7".parse::<IpAddr>().unwrap(),
            IpAddr::from([203, 0, 113, 8])
        ]
    );
    assert!(w.is_empty(), "{w:?}");
    spec_mut(&mut s).external_ips = Some(vec!["203.0.113.7".into(), "example.com".into()]);
    assert_eq!(
        err(&s),
        "spec.externalIPs[1] \"example.com\" is not an IP address"
    );
}

#[test]
fn load_balancer_ingress_ip_mode_and_hostnames() {
    let s = with_ingress(
        lb_service(),
        vec![
            ingress(Some("198.51.100.1"), None, None),
            ingress(Some("198.51.100.2"), None, Some("Proxy")),
            ingress(Some("198.51.100.3"), None, Some("VIP")),
            ingress(None, Some("lb.example.com"), None),
            ingress(Some("2001:db8::1"), None, None),
            ingress(None, None, None),
            ingress(Some("198.51.100.1"), None, None),
        ],
    );
    let (svc, w) = Service::from_k8s(&s).unwrap();
    let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    assert_eq!(
        svc.load_balancer_ingress,
        vec![
            LoadBalancerIngress {
                ip: ip("198.51.100.1"),
                hostname: None,
                ip_mode: IpMode::Vip
            },
            LoadBalancerIngress {
                ip: ip("198.51.100.2"),
                hostname: None,
                ip_mode: IpMode::Proxy
            },
            LoadBalancerIngress {
                ip: ip("198.51.100.3"),
                hostname: None,
                ip_mode: IpMode::Vip
            },
            LoadBalancerIngress {
                ip: None,
                hostname: Some("lb.example.com".into()),
                ip_mode: IpMode::Vip
            },
            // IPv6 ingress IPs are kept: they get the Service's IPv6 endpoints.
            LoadBalancerIngress {
                ip: ip("2001:db8::1"),
                hostname: None,
                ip_mode: IpMode::Vip
            },
        ]
    );
    assert_eq!(w, Vec::<String>::new());
    let bad_mode = with_ingress(
        lb_service(),
        vec![ingress(Some("198.51.100.1"), None, Some("Direct"))],
    );
    assert_eq!(
        err(&bad_mode),
        "status.loadBalancer.ingress[0].ipMode \"Direct\" is not VIP or Proxy"
    );
    let bad_ip = with_ingress(
        lb_service(),
        vec![ingress(Some("198.51.100.300"), None, None)],
    );
    assert_eq!(
        err(&bad_ip),
        "status.loadBalancer.ingress[0].ip \"198.51.100.300\" is not an IP address"
    );
}

#[test]
fn source_ranges_tolerate_whitespace_and_name_bad_entries() {
    let mut s = lb_service();
    spec_mut(&mut s).load_balancer_source_ranges = Some(vec![
        " 10.0.0.0/8 ".into(),
        "192.168.1.77/24".into(),
        "\t2001:db8::/32".into(),
        "10.0.0.0/8".into(),
    ]);
    let (svc, w) = Service::from_k8s(&s).unwrap();
    // Both families are kept (each applies to its family's load balancer addresses).
    assert_eq!(
        svc.load_balancer_source_ranges,
        vec![
            IpCidr::V4(Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, 0), 8)),
            IpCidr::V4(Ipv4Cidr::new(Ipv4Addr::new(192, 168, 1, 0), 24)),
            "2001:db8::/32".parse().unwrap(),
        ]
    );
    assert_eq!(
        svc.load_balancer_source_ranges[1].to_string(),
        "192.168.1.0/24"
    );
    assert_eq!(w, Vec::<String>::new());
    for bad in [
        "10.0.0.0/33",
        "10.0.0.0",
        "10.0.0/8",
        "10.0.0.0/ 8",
        "",
        "10.0.0.0/+8",
        "fd00::/129",
    ] {
        spec_mut(&mut s).load_balancer_source_ranges = Some(vec!["10.0.0.0/8".into(), bad.into()]);
        assert_eq!(
            err(&s),
            format!("spec.loadBalancerSourceRanges[1] {bad:?} is not a CIDR")
        );
    }
    // Only IPv6 ranges: IPv4 addresses stay open, as with kube-proxy; a warning says so.
    spec_mut(&mut s).load_balancer_source_ranges = Some(vec!["fd00::/8".into()]);
    let (svc, w) = Service::from_k8s(&s).unwrap();
    assert_eq!(svc.load_balancer_source_ranges.len(), 1);
    assert_eq!(
        w,
        vec![
            "spec.loadBalancerSourceRanges has no IPv4 range: IPv4 load balancer addresses accept every source (as with kube-proxy)"
        ]
    );
    // On a ClusterIP Service: validated, kept, warned about.
    let mut s = k8s_service(vec![kport("a", 80, "TCP")]);
    spec_mut(&mut s).load_balancer_source_ranges = Some(vec!["10.0.0.0/8".into()]);
    let (_, w) = Service::from_k8s(&s).unwrap();
    assert_eq!(
        w,
        vec![
            "spec.loadBalancerSourceRanges has no effect on a ClusterIP Service (LoadBalancer addresses only)"
        ]
    );
}

#[test]
fn cidr_parsing_and_matching() {
    let c: Ipv4Cidr = "10.1.2.3/16".parse().unwrap();
    assert_eq!(c, Ipv4Cidr::new(Ipv4Addr::new(10, 1, 0, 0), 16));
    assert!(c.contains(Ipv4Addr::new(10, 1, 255, 1)));
    assert!(!c.contains(Ipv4Addr::new(10, 2, 0, 1)));
    let all: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains(Ipv4Addr::new(203, 0, 113, 1)));
    let host: Ipv4Cidr = "192.0.2.1/32".parse().unwrap();
    assert!(host.contains(Ipv4Addr::new(192, 0, 2, 1)));
    assert!(!host.contains(Ipv4Addr::new(192, 0, 2, 2)));
    assert_eq!("fd00::/64".parse::<Ipv4Cidr>(), Err(CidrError::Ipv6));
    assert_eq!(" 10.0.0.0/8".parse::<Ipv4Cidr>(), Err(CidrError::Invalid));
}

#[test]
fn session_affinity_default_explicit_and_out_of_range() {
    let affinity = |kind: Option<&str>, timeout: Option<i32>| {
        let mut s = k8s_service(vec![kport("a", 80, "TCP")]);
        spec_mut(&mut s).session_affinity = kind.map(Into::into);
        spec_mut(&mut s).session_affinity_config = timeout.map(|t| corev1::SessionAffinityConfig {
            client_ip: Some(corev1::ClientIPConfig {
                timeout_seconds: Some(t),
            }),
        });
        Service::from_k8s(&s)
    };
    let (svc, w) = affinity(Some("ClientIP"), None).unwrap();
    assert!(w.is_empty());
    assert_eq!(
        svc.session_affinity,
        SessionAffinity::ClientIp {
            timeout_seconds: 10800
        }
    );
    assert_eq!(svc.affinity_timeout(), Some(10800));
    let (svc, _) = affinity(Some("ClientIP"), Some(60)).unwrap();
    assert_eq!(svc.affinity_timeout(), Some(60));
    let (svc, _) = affinity(Some("ClientIP"), Some(86400)).unwrap();
    assert_eq!(svc.affinity_timeout(), Some(86400));
    for bad in [0, -5, 86401] {
        assert_eq!(
            affinity(Some("ClientIP"), Some(bad))
                .unwrap_err()
                .to_string(),
            format!(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds {bad} is out of range 1-86400"
            )
        );
    }
    let (svc, w) = affinity(Some("None"), Some(60)).unwrap();
    assert_eq!(svc.affinity_timeout(), None);
    assert_eq!(
        w,
        vec!["spec.sessionAffinityConfig ignored: spec.sessionAffinity is not ClientIP"]
    );
    assert_eq!(
        affinity(Some("Cookie"), None).unwrap_err().to_string(),
        "spec.sessionAffinity \"Cookie\" is not None or ClientIP"
    );
}

#[test]
fn node_ports_any_range_and_allocate_flag() {
    let mut s = lb_service();
    spec_mut(&mut s).ports.as_mut().unwrap()[0].node_port = Some(80);
    spec_mut(&mut s).allocate_load_balancer_node_ports = Some(false);
    let (svc, w) = Service::from_k8s(&s).unwrap();
    assert!(w.is_empty());
    assert_eq!(svc.ports[0].node_port, Some(80));
    assert!(!svc.allocate_load_balancer_node_ports);
    spec_mut(&mut s).ports.as_mut().unwrap()[0].node_port = Some(65536);
    assert_eq!(
        err(&s),
        "spec.ports[0].nodePort 65536 is out of range 1-65535"
    );
}

/// An IPv6-only Service (`ipFamilies: [IPv6]`): its ClusterIP, IPv6 externalIPs, ingress
/// IPs and source ranges are kept, and the source-range warning speaks of IPv6.
#[test]
fn ipv6_only_services_keep_every_address() {
    let mut s = lb_service();
    let spec = spec_mut(&mut s);
    spec.cluster_ip = Some("fd00:10:96::10".into());
    spec.cluster_ips = Some(vec!["fd00:10:96::10".into()]);
    spec.ip_families = Some(vec!["IPv6".into()]);
    spec.external_ips = Some(vec!["2001:db8:7::7".into()]);
    spec.load_balancer_source_ranges = Some(vec!["192.0.2.0/24".into()]);
    s.status = Some(corev1::ServiceStatus {
        load_balancer: Some(corev1::LoadBalancerStatus {
            ingress: Some(vec![corev1::LoadBalancerIngress {
                ip: Some("2001:db8:5::1".into()),
                ..Default::default()
            }]),
        }),
        ..Default::default()
    });
    let (svc, w) = Service::from_k8s(&s).unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(svc.cluster_ips, vec![ip("fd00:10:96::10")]);
    assert_eq!(svc.external_ips, vec![ip("2001:db8:7::7")]);
    assert_eq!(svc.load_balancer_ingress[0].ip, Some(ip("2001:db8:5::1")));
    assert_eq!(
        w,
        vec![
            "spec.loadBalancerSourceRanges has no IPv6 range: IPv6 load balancer addresses accept every source (as with kube-proxy)"
        ]
    );
    // A dual-stack Service with ranges of both families: no warning.
    let spec = spec_mut(&mut s);
    spec.cluster_ips = Some(vec!["fd00:10:96::10".into(), "10.96.0.10".into()]);
    spec.load_balancer_source_ranges = Some(vec!["192.0.2.0/24".into(), "2001:db8::/64".into()]);
    let (svc, w) = Service::from_k8s(&s).unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(svc.load_balancer_source_ranges.len(), 2);
}
