//! What the BPF service maps should hold, computed from the [`Cluster`] model alone.
//!
//! Datapath v1 serves ClusterIP addresses only: a NodePort or LoadBalancer Service gets its
//! ClusterIP frontends (its node ports and external addresses come later). Headless,
//! ExternalName and Services labelled `service.kubernetes.io/service-proxy-name` get nothing.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fmt;
use std::net::Ipv4Addr;

use crate::model::{Cluster, Endpoint, ObjectRef, Protocol, Service, ServicePort};

/// An address a Service answers on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frontend {
    pub vip: Ipv4Addr,
    pub port: u16,
    pub proto: Protocol,
}

impl fmt::Display for Frontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.vip, self.port, self.proto)
    }
}

/// A backend a frontend translates to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendAddr {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub proto: Protocol,
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.addr, self.port, self.proto)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontendState {
    pub service: ObjectRef,
    pub port_name: String,
    /// Sorted and deduplicated. Empty when the Service has no usable endpoint: the datapath
    /// then rejects (TCP RST / ICMP port unreachable).
    pub backends: Vec<BackendAddr>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredState {
    pub frontends: BTreeMap<Frontend, FrontendState>,
}

/// Something in the model that could not be turned into dataplane state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComputeProblem {
    pub service: ObjectRef,
    pub reason: String,
}

impl fmt::Display for ComputeProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Service {}: {}", self.service, self.reason)
    }
}

/// Computes the desired dataplane state.
///
/// - One frontend per (IPv4 cluster IP, service port, protocol).
/// - Backends of a service port come from the endpoint group ports with the same name (both
///   empty counts as equal) and protocol, as kube-proxy resolves them; the slice port is the
///   already resolved targetPort.
/// - Endpoints used (across all of the Service's groups): the ready ones; if none is ready,
///   the serving and terminating ones; an endpoint that is not serving is never used.
/// - Two Services claiming the same frontend: the first in [`ObjectRef`] order keeps it, the
///   other's port is reported.
pub fn compute(cluster: &Cluster) -> (DesiredState, Vec<ComputeProblem>) {
    let mut state = DesiredState::default();
    let mut problems = Vec::new();
    for svc in cluster.services.values() {
        if !svc.is_proxied() {
            continue;
        }
        let groups = cluster
            .endpoints
            .get(&svc.id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for sp in &svc.ports {
            let backends = backends_for(svc, sp, groups);
            for &vip in &svc.cluster_ips {
                let fe = Frontend {
                    vip,
                    port: sp.port,
                    proto: sp.protocol,
                };
                match state.frontends.entry(fe) {
                    Entry::Vacant(e) => {
                        e.insert(FrontendState {
                            service: svc.id.clone(),
                            port_name: sp.name.clone(),
                            backends: backends.clone(),
                        });
                    }
                    Entry::Occupied(e) => problems.push(ComputeProblem {
                        service: svc.id.clone(),
                        reason: format!(
                            "port {} ({fe}) skipped: already used by Service {}",
                            port_label(sp),
                            e.get().service
                        ),
                    }),
                }
            }
        }
    }
    (state, problems)
}

fn port_label(sp: &ServicePort) -> String {
    if sp.name.is_empty() {
        format!("{}/{}", sp.port, sp.protocol)
    } else {
        format!("{:?}", sp.name)
    }
}

fn backends_for(
    svc: &Service,
    sp: &ServicePort,
    groups: &[crate::model::EndpointGroup],
) -> Vec<BackendAddr> {
    // (endpoint, resolved backend port) over every group that has the service port.
    let candidates: Vec<(&Endpoint, u16)> = groups
        .iter()
        .filter_map(|g| {
            g.ports
                .iter()
                .find(|p| p.name == sp.name && p.protocol == sp.protocol)
                .map(|p| (g, p.port))
        })
        .flat_map(|(g, port)| g.endpoints.iter().map(move |e| (e, port)))
        .collect();
    let ready: Vec<_> = candidates
        .iter()
        .filter(|(e, _)| e.ready && e.serving)
        .collect();
    let chosen = if ready.is_empty() {
        candidates
            .iter()
            .filter(|(e, _)| e.serving && e.terminating)
            .collect()
    } else {
        ready
    };
    let mut backends: Vec<BackendAddr> = chosen
        .iter()
        .flat_map(|(e, port)| {
            e.addresses.iter().map(|&addr| BackendAddr {
                addr,
                port: *port,
                proto: sp.protocol,
            })
        })
        .collect();
    backends.sort();
    backends.dedup();
    if backends.is_empty() {
        tracing::debug!(service = %svc.id, port = %port_label(sp), "no usable endpoints");
    }
    backends
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EndpointGroup, EndpointPort, ServiceKind, TargetPort};

    fn ip(s: &str) -> Ipv4Addr {
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
            cluster_ips: vips.iter().map(|v| ip(v)).collect(),
            kind: ServiceKind::ClusterIp,
            ports,
            proxy_name_label: None,
        }
    }

    fn ep(addr: &str, ready: bool, serving: bool, terminating: bool) -> Endpoint {
        Endpoint {
            addresses: vec![ip(addr)],
            ready,
            serving,
            terminating,
            node_name: None,
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
            endpoints: endpoints.into_iter().collect(),
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

    #[test]
    fn ready_endpoints_win_over_terminating_ones() {
        let svc = service(
            "default",
            "web",
            &["10.96.0.10"],
            vec![port("", 80, Protocol::Tcp)],
        );
        let c = cluster(
            vec![svc],
            vec![(
                ObjectRef::new("default", "web"),
                vec![
                    group(
                        &[("", 8080, Protocol::Tcp)],
                        vec![
                            ep("10.1.0.3", true, true, false),
                            ep("10.1.0.4", false, true, true),
                        ],
                    ),
                    group(
                        &[("", 8080, Protocol::Tcp)],
                        vec![
                            ep("10.1.0.2", true, true, false),
                            ep("10.1.0.2", true, true, false),
                        ],
                    ),
                ],
            )],
        );
        let (state, problems) = compute(&c);
        assert!(problems.is_empty());
        assert_eq!(
            backends(&state, fe("10.96.0.10", 80, Protocol::Tcp)),
            vec![
                be("10.1.0.2", 8080, Protocol::Tcp),
                be("10.1.0.3", 8080, Protocol::Tcp)
            ]
        );
        let f = &state.frontends[&fe("10.96.0.10", 80, Protocol::Tcp)];
        assert_eq!(f.service, ObjectRef::new("default", "web"));
    }

    #[test]
    fn serving_terminating_used_only_when_none_ready_and_never_not_serving() {
        let svc = service(
            "default",
            "web",
            &["10.96.0.10"],
            vec![port("", 80, Protocol::Tcp)],
        );
        let c = cluster(
            vec![svc],
            vec![(
                ObjectRef::new("default", "web"),
                vec![group(
                    &[("", 8080, Protocol::Tcp)],
                    vec![
                        ep("10.1.0.4", false, true, true),
                        ep("10.1.0.5", false, false, true),
                        ep("10.1.0.6", false, false, false),
                    ],
                )],
            )],
        );
        let (state, _) = compute(&c);
        assert_eq!(
            backends(&state, fe("10.96.0.10", 80, Protocol::Tcp)),
            vec![be("10.1.0.4", 8080, Protocol::Tcp)]
        );

        // Only not-serving endpoints: frontend present with no backends.
        let svc = service(
            "default",
            "web",
            &["10.96.0.10"],
            vec![port("", 80, Protocol::Tcp)],
        );
        let c = cluster(
            vec![svc],
            vec![(
                ObjectRef::new("default", "web"),
                vec![group(
                    &[("", 8080, Protocol::Tcp)],
                    vec![ep("10.1.0.5", false, false, true)],
                )],
            )],
        );
        let (state, _) = compute(&c);
        assert_eq!(
            backends(&state, fe("10.96.0.10", 80, Protocol::Tcp)),
            vec![]
        );
    }

    #[test]
    fn named_ports_resolve_through_slice_port_names_multi_port() {
        let svc = service(
            "shop",
            "api",
            &["10.96.1.1"],
            vec![
                port("http", 80, Protocol::Tcp),
                port("metrics", 9090, Protocol::Tcp),
            ],
        );
        // Two slices (e.g. two pod templates) resolve the named targetPort differently.
        let c = cluster(
            vec![svc],
            vec![(
                ObjectRef::new("shop", "api"),
                vec![
                    group(
                        &[
                            ("metrics", 9100, Protocol::Tcp),
                            ("http", 8080, Protocol::Tcp),
                        ],
                        vec![ep("10.1.0.10", true, true, false)],
                    ),
                    group(
                        &[("http", 8081, Protocol::Tcp)],
                        vec![ep("10.1.0.11", true, true, false)],
                    ),
                ],
            )],
        );
        let (state, _) = compute(&c);
        assert_eq!(state.frontends.len(), 2);
        assert_eq!(
            backends(&state, fe("10.96.1.1", 80, Protocol::Tcp)),
            vec![
                be("10.1.0.10", 8080, Protocol::Tcp),
                be("10.1.0.11", 8081, Protocol::Tcp)
            ]
        );
        assert_eq!(
            backends(&state, fe("10.96.1.1", 9090, Protocol::Tcp)),
            vec![be("10.1.0.10", 9100, Protocol::Tcp)]
        );
        assert_eq!(
            state.frontends[&fe("10.96.1.1", 9090, Protocol::Tcp)].port_name,
            "metrics"
        );
    }

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
        let (state, problems) = compute(&c);
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
        let (state, problems) = compute(&cluster(
            vec![headless, external, foreign, nodeport],
            vec![],
        ));
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

    #[test]
    fn conflicting_vips_first_by_object_ref_wins() {
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
        let (state, problems) = compute(&cluster(vec![b, a], vec![]));
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
            "Service beta/web: port \"http\" (10.96.0.50:80/TCP) skipped: already used by Service alpha/web"
        );
    }

    #[test]
    fn port_without_matching_slice_port_has_no_backends() {
        let svc = service(
            "default",
            "web",
            &["10.96.0.10"],
            vec![
                port("http", 80, Protocol::Tcp),
                port("udp", 80, Protocol::Udp),
            ],
        );
        let c = cluster(
            vec![svc],
            vec![(
                ObjectRef::new("default", "web"),
                vec![group(
                    &[("http", 8080, Protocol::Udp)],
                    vec![ep("10.1.0.3", true, true, false)],
                )],
            )],
        );
        let (state, _) = compute(&c);
        assert_eq!(
            backends(&state, fe("10.96.0.10", 80, Protocol::Tcp)),
            vec![]
        );
        assert_eq!(
            backends(&state, fe("10.96.0.10", 80, Protocol::Udp)),
            vec![]
        );
    }
}
