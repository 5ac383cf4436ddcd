//! Addresses no frontend takes: the allocated ClusterIPs and the service CIDRs (kube-proxy
//! nftables' `cluster-ips` set and `service-cidrs` rule; its TestClusterIPGeneral rows are
//! e2e rows in tests/tests/service_cidrs.rs).
use super::*;

const TCP: Protocol = Protocol::Tcp;

fn cidr(s: &str) -> IpCidr {
    s.parse().unwrap()
}

fn texts(problems: &[ComputeProblem]) -> Vec<String> {
    problems.iter().map(ToString::to_string).collect()
}

/// kube-proxy's TestClusterIPGeneral Services: svc1 (172.30.0.41, 80/TCP) and svc2
/// (172.30.0.42, 80/TCP, 443/TCP, 53/UDP, 53/TCP; its 53/SCTP port is skipped by the
/// model).
fn general() -> Cluster {
    let svc1 = service("ns1", "svc1", &["172.30.0.41"], vec![port("http", 80, TCP)]);
    let svc2 = service(
        "ns2",
        "svc2",
        &["172.30.0.42"],
        vec![
            port("http", 80, TCP),
            port("https", 443, TCP),
            port("dns-udp", 53, Protocol::Udp),
            port("dns-tcp", 53, TCP),
        ],
    );
    cluster(vec![svc1, svc2], vec![])
}

#[test]
fn every_cluster_ip_is_allocated_served_or_not() {
    let mut c = general();
    // Headless and ExternalName Services have no ClusterIP; a Service with only SCTP
    // ports (none left in the model) and one whose ClusterIP:port another Service keeps
    // still have theirs allocated.
    let mut headless = service("ns3", "headless", &[], vec![]);
    headless.kind = ServiceKind::Headless;
    let mut external = service("ns3", "db", &[], vec![]);
    external.kind = ServiceKind::ExternalName;
    let sctp_only = service("ns3", "sctp", &["172.30.0.43"], vec![]);
    let clash = service(
        "ns3",
        "clash",
        &["172.30.0.41"],
        vec![port("http", 80, TCP)],
    );
    for s in [headless, external, sctp_only, clash] {
        c.services.insert(s.id.clone(), s);
    }
    let (state, _) = compute(&c, &node());
    assert_eq!(
        state.cluster_ips,
        BTreeMap::from([
            (ip("172.30.0.41"), ClusterIpUse::Reject),
            (ip("172.30.0.42"), ClusterIpUse::Reject),
            (ip("172.30.0.43"), ClusterIpUse::Reject),
        ])
    );
    assert!(
        !state
            .frontends
            .keys()
            .any(|f| f.vip == ip::<IpAddr>("172.30.0.43")),
        "the SCTP-only Service has no frontend"
    );
}

#[test]
fn another_proxys_cluster_ip_is_left_alone_even_when_shared() {
    let mut c = general();
    let mut other = service(
        "ns3",
        "other",
        &["172.30.0.44"],
        vec![port("http", 80, TCP)],
    );
    other.proxy_name_label = Some("other-proxy".into());
    // Ours and another proxy's on one ClusterIP: the other proxy's use wins (it may take
    // the packet after us).
    let mut shared = other.clone();
    shared.id = ObjectRef::new("ns3", "shared");
    shared.cluster_ips = vec![ip("172.30.0.41")];
    c.services.insert(other.id.clone(), other);
    c.services.insert(shared.id.clone(), shared);
    let (state, _) = compute(&c, &node());
    assert_eq!(
        state.cluster_ips[&ip("172.30.0.44")],
        ClusterIpUse::OtherProxy
    );
    assert_eq!(
        state.cluster_ips[&ip("172.30.0.41")],
        ClusterIpUse::OtherProxy
    );
    assert_eq!(state.cluster_ips[&ip("172.30.0.42")], ClusterIpUse::Reject);
}

#[test]
fn service_cidr_objects_come_before_the_flag() {
    let mut c = general();
    let mut n = node();
    // Neither: nothing is dropped.
    let (state, problems) = compute(&c, &n);
    assert_eq!(state.service_cidrs, ServiceCidrs::default());
    assert_eq!(state.service_cidrs.to_string(), "none");
    assert!(problems.is_empty());

    // The flag alone.
    n.service_cluster_ip_range = vec![cidr("172.30.0.0/16"), cidr("10.96.0.0/12")];
    let (state, _) = compute(&c, &n);
    assert_eq!(
        state.service_cidrs,
        ServiceCidrs {
            cidrs: vec![cidr("10.96.0.0/12"), cidr("172.30.0.0/16")],
            from: CidrSource::Flag,
        }
    );
    assert_eq!(
        state.service_cidrs.to_string(),
        "10.96.0.0/12,172.30.0.0/16 (--service-cluster-ip-range)"
    );

    // ServiceCIDR objects replace the flag, all of them together.
    c.service_cidrs.insert(
        ObjectRef::new("", "kubernetes"),
        vec![cidr("172.30.0.0/24")],
    );
    c.service_cidrs
        .insert(ObjectRef::new("", "extra"), vec![cidr("172.31.0.0/24")]);
    let (state, _) = compute(&c, &n);
    assert_eq!(
        state.service_cidrs,
        ServiceCidrs {
            cidrs: vec![cidr("172.30.0.0/24"), cidr("172.31.0.0/24")],
            from: CidrSource::Objects(vec!["extra".into(), "kubernetes".into()]),
        }
    );
    assert_eq!(
        state.service_cidrs.to_string(),
        "172.30.0.0/24,172.31.0.0/24 (ServiceCIDR extra, kubernetes)"
    );

    // An object with IPv6 CIDRs only: the flag's IPv4 CIDRs are not used.
    c.service_cidrs.clear();
    c.service_cidrs
        .insert(ObjectRef::new("", "v6"), vec![cidr("fd00:10:96::/112")]);
    let (state, _) = compute(&c, &n);
    assert_eq!(state.service_cidrs.cidrs, [cidr("fd00:10:96::/112")]);
    assert_eq!(
        state.service_cidrs.to_string(),
        "fd00:10:96::/112 (ServiceCIDR v6)"
    );
    // An object without CIDRs still exists: the flag is not used, nothing dropped.
    c.service_cidrs.clear();
    c.service_cidrs.insert(ObjectRef::new("", "empty"), vec![]);
    let (state, _) = compute(&c, &n);
    assert!(state.service_cidrs.cidrs.is_empty());
    assert_eq!(
        state.service_cidrs.to_string(),
        "no CIDR (ServiceCIDR empty)"
    );
}

#[test]
fn the_nodes_own_addresses_are_never_rejected_or_dropped() {
    // node(): 192.168.1.10 and 10.0.0.10.
    let mut c = general();
    let odd = service("ns3", "odd", &["10.0.0.10"], vec![port("http", 80, TCP)]);
    c.services.insert(odd.id.clone(), odd);
    c.service_cidrs.insert(
        ObjectRef::new("", "kubernetes"),
        vec![cidr("172.30.0.0/16"), cidr("10.0.0.0/8")],
    );
    let (state, problems) = compute(&c, &node());
    assert!(!state.cluster_ips.contains_key(&ip("10.0.0.10")));
    assert_eq!(state.service_cidrs.cidrs, [cidr("172.30.0.0/16")]);
    assert_eq!(
        texts(&problems),
        [
            "Service ns3/odd: ClusterIP 10.0.0.10 is an address of this node: ports no Service has are not rejected on it",
            "ServiceCIDR kubernetes: service CIDR 10.0.0.0/8 skipped: it holds 10.0.0.10, an address of this node (its own traffic would be dropped)",
        ]
    );
    // The flag, likewise.
    c.service_cidrs.clear();
    let n = NodeContext {
        service_cluster_ip_range: vec![cidr("192.168.0.0/16")],
        ..node()
    };
    let (state, problems) = compute(&c, &n);
    assert!(state.service_cidrs.cidrs.is_empty());
    assert_eq!(state.service_cidrs.from, CidrSource::Flag);
    assert_eq!(
        texts(&problems).last().map(String::as_str),
        Some(
            "flag --service-cluster-ip-range: service CIDR 192.168.0.0/16 skipped: it holds 192.168.1.10, an address of this node (its own traffic would be dropped)"
        )
    );
}

/// IPv6 takes the same rules: every IPv6 ClusterIP is allocated (other-proxy ones too),
/// the IPv6 CIDRs of ServiceCIDR objects and of the flag are used, and this node's IPv6
/// addresses are kept out of both.
#[test]
fn ipv6_cluster_ips_and_cidrs_follow_the_same_rules() {
    let mut c = general();
    let dual = service(
        "ns4",
        "dual",
        &["172.30.0.50", "fd00:10:96::a"],
        vec![port("http", 80, TCP)],
    );
    let v6 = service("ns4", "v6", &["fd00:10:96::b"], vec![port("http", 80, TCP)]);
    let mut other = service(
        "ns4",
        "other",
        &["fd00:10:96::c"],
        vec![port("http", 80, TCP)],
    );
    other.proxy_name_label = Some("foo-bar".into());
    // The node's own IPv6 address as a ClusterIP: left out, with a problem.
    let odd = service(
        "ns4",
        "odd",
        &["fd00:192:168:1::10"],
        vec![port("http", 80, TCP)],
    );
    for s in [dual, v6, other, odd] {
        c.services.insert(s.id.clone(), s);
    }
    let n = NodeContext {
        node_ips: vec![ip("192.168.1.10"), ip("fd00:192:168:1::10")],
        service_cluster_ip_range: vec![cidr("172.30.0.0/16"), cidr("fd00:10:96::/112")],
        ..node()
    };
    let (state, problems) = compute(&c, &n);
    let v6_ips: Vec<(IpAddr, ClusterIpUse)> = state
        .cluster_ips
        .iter()
        .filter(|(ip, _)| ip.is_ipv6())
        .map(|(ip, u)| (*ip, *u))
        .collect();
    assert_eq!(
        v6_ips,
        [
            (ip("fd00:10:96::a"), ClusterIpUse::Reject),
            (ip("fd00:10:96::b"), ClusterIpUse::Reject),
            (ip("fd00:10:96::c"), ClusterIpUse::OtherProxy),
        ]
    );
    assert!(state.cluster_ips.contains_key(&ip("172.30.0.50")));
    assert_eq!(
        state.service_cidrs,
        ServiceCidrs {
            cidrs: vec![cidr("172.30.0.0/16"), cidr("fd00:10:96::/112")],
            from: CidrSource::Flag,
        }
    );
    assert_eq!(
        state.service_cidrs.to_string(),
        "172.30.0.0/16,fd00:10:96::/112 (--service-cluster-ip-range)"
    );
    assert_eq!(
        texts(&problems),
        [
            "Service ns4/odd: ClusterIP fd00:192:168:1::10 is an address of this node: ports no Service has are not rejected on it",
        ]
    );

    // A ServiceCIDR object's IPv6 CIDR holding a node address is not used; its IPv4 one is.
    c.service_cidrs.insert(
        ObjectRef::new("", "kubernetes"),
        vec![cidr("172.30.0.0/16"), cidr("fd00:192:168::/48")],
    );
    let (state, problems) = compute(&c, &n);
    assert_eq!(state.service_cidrs.cidrs, [cidr("172.30.0.0/16")]);
    assert_eq!(
        texts(&problems).last().map(String::as_str),
        Some(
            "ServiceCIDR kubernetes: service CIDR fd00:192:168::/48 skipped: it holds fd00:192:168:1::10, an address of this node (its own traffic would be dropped)"
        )
    );
}
