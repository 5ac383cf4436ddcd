//! The desired-state computation's unit tests; the fixtures are shared here.
use std::net::Ipv4Addr;

use super::*;
use crate::model::{
    EndpointPort, IpMode, LoadBalancerIngress, SessionAffinity, TargetPort, TrafficPolicy,
};

/// An address of the type the place it goes to wants (`Ipv4Addr` or `IpAddr`).
fn ip<A: std::str::FromStr>(s: &str) -> A
where
    A::Err: std::fmt::Debug,
{
    s.parse().unwrap()
}

fn port(name: &str, port: u16, protocol: Protocol) -> ServicePort {
    ServicePort {
        name: name.into(),
        port,
        protocol,
        target_port: TargetPort::Number(port),
        node_port: None,
    }
}

fn service(ns: &str, name: &str, vips: &[&str], ports: Vec<ServicePort>) -> Service {
    Service {
        id: ObjectRef::new(ns, name),
        created: None,
        uid: None,
        cluster_ips: vips.iter().map(|v| ip(v)).collect(),
        kind: ServiceKind::ClusterIp,
        ports,
        proxy_name_label: None,
        external_traffic_policy: TrafficPolicy::Cluster,
        internal_traffic_policy: TrafficPolicy::Cluster,
        external_ips: vec![],
        load_balancer_ingress: vec![],
        load_balancer_source_ranges: vec![],
        session_affinity: SessionAffinity::None,
        health_check_node_port: None,
        allocate_load_balancer_node_ports: true,
        traffic_distribution: None,
        lb_request: Default::default(),
    }
}

fn ep(addr: &str, ready: bool, serving: bool, terminating: bool) -> Endpoint {
    Endpoint {
        address: ip(addr),
        ready,
        serving,
        terminating,
        node_name: None,
        zone: None,
        hints: Default::default(),
    }
}

fn group(ports: &[(&str, u16, Protocol)], endpoints: Vec<Endpoint>) -> EndpointGroup {
    EndpointGroup {
        ports: ports
            .iter()
            .map(|&(n, p, pr)| EndpointPort {
                name: n.into(),
                port: p,
                protocol: pr,
            })
            .collect(),
        endpoints,
    }
}

fn cluster(services: Vec<Service>, endpoints: Vec<(ObjectRef, Vec<EndpointGroup>)>) -> Cluster {
    Cluster {
        services: services.into_iter().map(|s| (s.id.clone(), s)).collect(),
        endpoints: endpoints
            .into_iter()
            .map(|(svc, groups)| (svc, groups.into_iter().map(std::sync::Arc::new).collect()))
            .collect(),
        service_cidrs: Default::default(),
        lb_pools: Default::default(),
    }
}

fn fe(vip: &str, port: u16, proto: Protocol) -> Frontend {
    Frontend {
        vip: ip(vip),
        port,
        proto,
    }
}

fn be(addr: &str, port: u16, proto: Protocol) -> BackendAddr {
    BackendAddr {
        addr: ip(addr),
        port,
        proto,
    }
}

fn backends(state: &DesiredState, f: Frontend) -> Vec<BackendAddr> {
    state.frontends[&f].backends.clone()
}

// ---- Kubernetes Service semantics: frontend kinds, policies, endpoint sets ----

const NODE_A: &str = "node-a";

fn node() -> NodeContext {
    NodeContext {
        node_name: Some(NODE_A.into()),
        node_ips: vec![ip("192.168.1.10"), ip("10.0.0.10")],
        zone: None,
        node_port_addresses: vec![],
        external_ips: ExternalIpPolicy::AllowAll,
        // Off here so the other tests list node addresses only; node_traffic.rs turns it on.
        localhost_node_ports: false,
        service_cluster_ip_range: vec![],
    }
}

fn on(node: &str, mut e: Endpoint) -> Endpoint {
    e.node_name = Some(node.into());
    e
}

/// A LoadBalancer Service `default/lb` with every kind of address: cluster IP
/// 10.96.0.10, nodePort 30080, externalIP 203.0.113.7, ingress 198.51.100.1 (VIP),
/// 198.51.100.2 (Proxy) and a hostname-only entry.
fn lb_service() -> Service {
    let mut s = service(
        "default",
        "lb",
        &["10.96.0.10"],
        vec![port("http", 80, Protocol::Tcp)],
    );
    s.kind = ServiceKind::LoadBalancer;
    s.ports[0].node_port = Some(30080);
    s.external_ips = vec![ip("203.0.113.7")];
    s.load_balancer_ingress = vec![
        LoadBalancerIngress {
            ip: Some(ip("198.51.100.1")),
            hostname: None,
            ip_mode: IpMode::Vip,
        },
        LoadBalancerIngress {
            ip: Some(ip("198.51.100.2")),
            hostname: None,
            ip_mode: IpMode::Proxy,
        },
        LoadBalancerIngress {
            ip: None,
            hostname: Some("lb.example.com".into()),
            ip_mode: IpMode::Vip,
        },
    ];
    s.load_balancer_source_ranges = vec!["10.0.0.0/8".parse().unwrap()];
    s
}

fn http_group(endpoints: Vec<Endpoint>) -> Vec<EndpointGroup> {
    vec![group(&[("http", 8080, Protocol::Tcp)], endpoints)]
}

fn kinds(state: &DesiredState) -> Vec<(Frontend, FrontendKind, bool)> {
    state
        .frontends
        .iter()
        .map(|(f, s)| (*f, s.kind, s.local_policy))
        .collect()
}

mod dual_stack;
mod endpoints;
mod frontends;
mod node_traffic;
mod ownership;
mod service_cidrs;
mod topology;
