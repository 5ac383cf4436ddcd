//! What the BPF service maps should hold, computed from the [`Cluster`] model and the facts
//! of this node ([`NodeContext`]) alone.
//!
//! The rules are those of `/work/shared/notes/service-semantics.md` (kube-proxy's
//! behaviour); [`compute`] documents each of them and the choices made where the note is
//! silent. In short:
//!
//! - Addresses ("Addresses a Service answers on"): every IPv4 cluster IP, every node
//!   address selected by nodePortAddresses at each nodePort, every externalIP and every
//!   load balancer ingress IP (not `ipMode: Proxy`), each with every service port.
//! - Endpoints ("Endpoints"): ready ones, else serving-and-terminating ones, never
//!   not-serving ones; computed for the whole cluster and for this node.
//! - Traffic policies: each frontend says whether its policy is Local; the datapath then
//!   uses `local_backends` for outside traffic (ETP) or all ClusterIP traffic (ITP).
//! - Headless, ExternalName and Services labelled `service.kubernetes.io/service-proxy-name`
//!   get nothing; they, and proxied Services that end up with no frontend, are listed in
//!   [`DesiredState::unserved`] with the reason (svcctl shows them).

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use crate::model::{
    Cluster, Endpoint, EndpointGroup, IpMode, ObjectRef, Protocol, Service, ServiceKind,
    ServicePort,
};

pub use crate::addr::{BackendAddr, Frontend, Ipv4Cidr};
/// How a frontend address came to be (svc-common's word: the maps record it).
pub use svc_common::FrontendKind;
/// Why a Service gets no datapath entries (svc-common's word: the names map records it).
pub use svc_common::UnservedReason;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FrontendState {
    pub service: ObjectRef,
    pub port_name: String,
    pub kind: FrontendKind,
    /// The traffic policy that applies to this frontend is Local: internalTrafficPolicy for
    /// a ClusterIP, externalTrafficPolicy for the other kinds.
    pub local_policy: bool,
    /// Backends new flows may get: the cluster-wide endpoint set (ready endpoints, or the
    /// serving-and-terminating ones when none is ready). Sorted and deduplicated. Empty when
    /// the Service has no usable endpoint: the datapath then rejects (TCP RST / ICMP port
    /// unreachable). With `local_policy` it is still what pod and node sources of an
    /// external address use (semantics note: ETP Local short-circuits them to all
    /// endpoints).
    pub backends: Vec<BackendAddr>,
    /// This node's endpoint set (endpoint nodeName == the agent's node name), chosen by the
    /// same rule applied to the local endpoints only: ready local ones, else local
    /// serving-and-terminating ones. Hence NOT always a subset of `backends`: a node whose
    /// only local endpoint is terminating uses it while remote ready ones exist. Always
    /// filled (empty when the node name is unknown); used only when `local_policy`. Sorted
    /// and deduplicated.
    pub local_backends: Vec<BackendAddr>,
    /// Endpoints with terminating=true (serving or not) that are not in `backends`: never
    /// chosen for a new cluster-wide flow, but kept so established flows stay on them. A
    /// local serving-terminating endpoint may be both here and in `local_backends`. Sorted
    /// and deduplicated.
    pub terminating: Vec<BackendAddr>,
    /// sessionAffinity: ClientIP: the timeout in seconds (default 10800). Set on every
    /// frontend of the Service.
    pub affinity_timeout: Option<u32>,
    /// loadBalancerSourceRanges, for LoadBalancer frontends only (empty: every source).
    pub source_ranges: Vec<Ipv4Cidr>,
}

/// Facts about the node the agent runs on, which decide NodePort addresses and locality.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeContext {
    /// This node's name; endpoints with this nodeName are local. `None`: no endpoint is
    /// local (local sets are empty, Local-policy frontends drop outside traffic).
    pub node_name: Option<String>,
    /// This node's addresses.
    pub node_ips: Vec<Ipv4Addr>,
    /// kube-proxy's nodePortAddresses: NodePorts answer on the node addresses inside these
    /// CIDRs; empty = on every node address.
    pub node_port_addresses: Vec<Ipv4Cidr>,
}

impl NodeContext {
    /// The addresses NodePorts answer on: `node_ips` inside `node_port_addresses` (every
    /// node IP when that list is empty), deduplicated, in `node_ips` order.
    pub fn node_port_ips(&self) -> Vec<Ipv4Addr> {
        let mut out: Vec<Ipv4Addr> = Vec::new();
        for &ip in &self.node_ips {
            let selected = self.node_port_addresses.is_empty()
                || self.node_port_addresses.iter().any(|c| c.contains(ip));
            if selected && !out.contains(&ip) {
                out.push(ip);
            }
        }
        out
    }

    fn is_local(&self, ep: &Endpoint) -> bool {
        matches!((&self.node_name, &ep.node_name), (Some(a), Some(b)) if a == b)
    }
}

/// A Service with externalTrafficPolicy: Local and a healthCheckNodePort: the agent serves
/// it with the number of this node's endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub service: ObjectRef,
    pub port: u16,
    /// Distinct addresses of this node's *ready* endpoints over all the Service's endpoint
    /// groups (kube-proxy's `LocalReadyEndpoints`): 0 means answer 503. Serving-terminating
    /// endpoints do not count, so a node draining its last pod fails the check and the load
    /// balancer stops sending new traffic.
    pub local_endpoints: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredState {
    pub frontends: BTreeMap<Frontend, FrontendState>,
    /// Sorted by service.
    pub health_checks: Vec<HealthCheck>,
    /// Services that get no frontend at all, with why; sorted by service. Only for display
    /// (the agent names them in a map svcctl reads); the datapath has nothing for them.
    pub unserved: Vec<(ObjectRef, UnservedReason)>,
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

/// The endpoint sets of one service port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct PortEndpoints {
    backends: Vec<BackendAddr>,
    local_backends: Vec<BackendAddr>,
    terminating: Vec<BackendAddr>,
}

/// A frontend one Service wants, before conflicts are resolved.
struct Claim<'a> {
    svc: &'a Service,
    /// Index of `sp` in `svc.ports`.
    index: usize,
    sp: &'a ServicePort,
    fe: Frontend,
    kind: FrontendKind,
}

/// Computes the desired dataplane state for the node described by `node`.
///
/// Only proxied Services ([`Service::is_proxied`]: ClusterIP, NodePort and LoadBalancer
/// without the service-proxy-name label) get state. For each of their service ports:
///
/// **Frontends** (semantics note, "Addresses a Service answers on"), each a (address, port,
/// protocol) triple; TCP and UDP on the same port are distinct:
/// - [`FrontendKind::ClusterIp`]: each IPv4 cluster IP at `port`; `local_policy` =
///   internalTrafficPolicy Local (ITP applies to ClusterIP traffic only).
/// - [`FrontendKind::NodePort`]: types NodePort and LoadBalancer, when the port has a
///   `nodePort`: each of [`NodeContext::node_port_ips`] at `nodePort`; `local_policy` =
///   externalTrafficPolicy Local. A nodePort on a ClusterIP Service (the API server rejects
///   it) is ignored. `allocateLoadBalancerNodePorts: false` does not matter: a nodePort in
///   the manifest is used, as kube-proxy does.
/// - [`FrontendKind::ExternalIp`]: each IPv4 `spec.externalIPs` entry at `port`, for every
///   proxied type (kube-proxy serves externalIPs on ClusterIP Services too);
///   `local_policy` = ETP Local. Not filtered by loadBalancerSourceRanges (the note: "LoadBalancer
///   IP destinations only").
/// - [`FrontendKind::LoadBalancer`]: type LoadBalancer only, each IPv4 ingress IP at
///   `port`, skipping `ipMode: Proxy` entries (the external load balancer must see the
///   traffic) and hostname-only entries (nothing to match); `local_policy` = ETP Local;
///   `source_ranges` = the IPv4 loadBalancerSourceRanges. Ingress status on another type is
///   ignored, as is the deprecated `spec.loadBalancerIP` (kube-proxy reads the status only).
/// - Every frontend of a ClientIP-affinity Service gets `affinity_timeout`.
///
/// **Endpoints** (kube-proxy's `CategorizeEndpoints`; note, "Endpoints"): the candidates of
/// a service port are the endpoints of the Service's groups that have a port with the same
/// name (both empty counts as equal) and protocol; the backend port is that group port (the
/// already resolved targetPort). From the candidates:
/// - `backends` (cluster set) = the ready ones; if none is ready, the serving and
///   terminating ones; a not-serving endpoint is never used.
/// - `local_backends` = the same rule applied to the candidates whose nodeName equals
///   `node.node_name` (none when it is `None`). So a node with no ready local endpoint but a
///   serving-terminating one keeps using it for Local-policy traffic, even while remote
///   ready endpoints exist (kube-proxy's local fallback is decided per node).
/// - `terminating` = terminating candidates not in `backends`, serving or not: the
///   datapath keeps established flows on them (note: "Established connections keep their
///   backend while it still exists").
/// - An address listed by several endpoints/groups counts once (lists are sorted and
///   deduplicated). A Service with no usable endpoint still gets its frontends, with empty
///   backends: the datapath rejects.
///
/// **Conflicts** (the note is silent; two owners of one address cannot both be served):
/// explicit addresses (ClusterIP, externalIP, LoadBalancer IP) of all Services are claimed
/// first, then node ports. This is what kube-proxy does in effect: its per-address rules
/// (`KUBE-SERVICES` rules, the nftables `service-ips` map) are matched before the NodePort
/// catch-all (`KUBE-NODEPORTS`, `service-nodeports`), so an externalIP or LoadBalancer IP
/// equal to a node IP wins over a nodePort with the same number. Within each of the two
/// rounds, the first Service in [`ObjectRef`] order wins, and within one Service the kinds
/// are taken in the order ClusterIP, externalIP, LoadBalancer IP (kube-proxy's rule order
/// per Service). The losing (Service, port, address) is reported as a [`ComputeProblem`].
/// The same Service claiming the same address twice through the same kind (e.g. two
/// ingress entries with one IP) is not a problem.
///
/// **Unserved** ([`DesiredState::unserved`]): every Service with no frontend, with the
/// first reason that applies: type ExternalName, headless, the service-proxy-name label
/// (the type comes first: no proxy would serve those), then for proxied Services: no
/// port left ([`UnservedReason::NoPorts`], e.g. SCTP only), no IPv4 cluster IP, or else
/// every address lost a conflict (also `NoPorts`; the conflicts are reported as problems).
///
/// **Health checks** (note, "healthCheckNodePort"): one per proxied Service of type
/// LoadBalancer with externalTrafficPolicy Local and a healthCheckNodePort, like
/// kube-proxy's `NeedsHealthCheck`; `local_endpoints` counts distinct addresses of ready
/// local endpoints (see [`HealthCheck`]). Two Services with the same healthCheckNodePort:
/// the first in ObjectRef order keeps it, the other is reported. Sorted by Service.
pub fn compute(cluster: &Cluster, node: &NodeContext) -> (DesiredState, Vec<ComputeProblem>) {
    let mut state = DesiredState::default();
    let mut problems = Vec::new();
    let node_port_ips = node.node_port_ips();

    // Endpoint sets per proxied Service and port, computed once for every kind.
    let mut port_sets: BTreeMap<(&ObjectRef, usize), PortEndpoints> = BTreeMap::new();
    let proxied: Vec<&Service> = cluster
        .services
        .values()
        .filter(|s| s.is_proxied())
        .collect();
    for svc in &proxied {
        let groups = groups_of(cluster, &svc.id);
        for (i, sp) in svc.ports.iter().enumerate() {
            port_sets.insert((&svc.id, i), endpoints_for(svc, sp, groups, node));
        }
    }

    // Round 1: explicit addresses; round 2: node ports (see the conflict rule above).
    let mut claims: Vec<Claim> = Vec::new();
    for svc in &proxied {
        for (index, sp) in svc.ports.iter().enumerate() {
            let mut add = |vip: Ipv4Addr, port: u16, kind: FrontendKind| {
                claims.push(Claim {
                    svc,
                    index,
                    sp,
                    fe: Frontend {
                        vip,
                        port,
                        proto: sp.protocol,
                    },
                    kind,
                })
            };
            for &vip in &svc.cluster_ips {
                add(vip, sp.port, FrontendKind::ClusterIp);
            }
            for &vip in &svc.external_ips {
                add(vip, sp.port, FrontendKind::ExternalIp);
            }
            if svc.kind == ServiceKind::LoadBalancer {
                for ingress in &svc.load_balancer_ingress {
                    if let (Some(vip), IpMode::Vip) = (ingress.ip, ingress.ip_mode) {
                        add(vip, sp.port, FrontendKind::LoadBalancer);
                    }
                }
            }
        }
    }
    for svc in &proxied {
        if !matches!(svc.kind, ServiceKind::NodePort | ServiceKind::LoadBalancer) {
            continue;
        }
        for (index, sp) in svc.ports.iter().enumerate() {
            let Some(node_port) = sp.node_port else {
                continue;
            };
            for &vip in &node_port_ips {
                claims.push(Claim {
                    svc,
                    index,
                    sp,
                    fe: Frontend {
                        vip,
                        port: node_port,
                        proto: sp.protocol,
                    },
                    kind: FrontendKind::NodePort,
                });
            }
        }
    }

    for Claim {
        svc,
        index,
        sp,
        fe,
        kind,
    } in claims
    {
        match state.frontends.entry(fe) {
            Entry::Vacant(e) => {
                let sets = &port_sets[&(&svc.id, index)];
                let local_policy = if kind.is_external() {
                    svc.external_traffic_policy.is_local()
                } else {
                    svc.internal_traffic_policy.is_local()
                };
                e.insert(FrontendState {
                    service: svc.id.clone(),
                    port_name: sp.name.clone(),
                    kind,
                    local_policy,
                    backends: sets.backends.clone(),
                    local_backends: sets.local_backends.clone(),
                    terminating: sets.terminating.clone(),
                    affinity_timeout: svc.affinity_timeout(),
                    source_ranges: if kind == FrontendKind::LoadBalancer {
                        svc.load_balancer_source_ranges.clone()
                    } else {
                        Vec::new()
                    },
                });
            }
            Entry::Occupied(e) => {
                let owner = e.get();
                if owner.service == svc.id && owner.kind == kind {
                    // The same address listed twice by one Service: nothing is lost.
                    continue;
                }
                problems.push(ComputeProblem {
                    service: svc.id.clone(),
                    reason: conflict_reason(sp, fe, kind, owner),
                });
            }
        }
    }

    let served: BTreeSet<&ObjectRef> = state.frontends.values().map(|f| &f.service).collect();
    for svc in cluster.services.values() {
        let reason = match svc.kind {
            ServiceKind::ExternalName => UnservedReason::ExternalName,
            ServiceKind::Headless => UnservedReason::Headless,
            _ if svc.proxy_name_label.is_some() => UnservedReason::OtherProxy,
            _ if served.contains(&svc.id) => continue,
            _ if svc.ports.is_empty() => UnservedReason::NoPorts,
            _ if svc.cluster_ips.is_empty() => UnservedReason::NoIpv4ClusterIp,
            _ => UnservedReason::NoPorts,
        };
        state.unserved.push((svc.id.clone(), reason));
    }
    state.unserved.sort();

    let mut health_ports: BTreeMap<u16, &ObjectRef> = BTreeMap::new();
    for svc in &proxied {
        let Some(port) = svc.health_check_node_port else {
            continue;
        };
        if svc.kind != ServiceKind::LoadBalancer || !svc.external_traffic_policy.is_local() {
            continue;
        }
        match health_ports.entry(port) {
            Entry::Occupied(e) => {
                problems.push(ComputeProblem {
                    service: svc.id.clone(),
                    reason: format!(
                        "healthCheckNodePort {port} skipped: already used by Service {}",
                        e.get()
                    ),
                });
                continue;
            }
            Entry::Vacant(e) => {
                e.insert(&svc.id);
            }
        }
        state.health_checks.push(HealthCheck {
            service: svc.id.clone(),
            port,
            local_endpoints: local_ready_endpoints(groups_of(cluster, &svc.id), node),
        });
    }
    // `proxied` is in ObjectRef order already; sort anyway so the contract does not depend
    // on it.
    state
        .health_checks
        .sort_by(|a, b| a.service.cmp(&b.service));
    (state, problems)
}

/// Brings `state` (what [`compute`] returned for an earlier `cluster`) up to date after a
/// change of the endpoints of `services` only (their EndpointSlices; not the Service
/// objects, and not the node): their frontends' endpoint sets and their health-check
/// counts are recomputed, nothing else. Endpoints never decide which frontends exist or
/// who wins a conflict, so the result is what [`compute`] would return, at the cost of the
/// changed Services alone. Returns the frontends whose state changed.
pub fn update_endpoints(
    state: &mut DesiredState,
    cluster: &Cluster,
    node: &NodeContext,
    services: &BTreeSet<ObjectRef>,
) -> Vec<Frontend> {
    let mut changed = Vec::new();
    if services.is_empty() {
        return changed;
    }
    for (frontend, fs) in state.frontends.iter_mut() {
        if !services.contains(&fs.service) {
            continue;
        }
        let Some(svc) = cluster.services.get(&fs.service) else {
            continue;
        };
        let Some(sp) = svc
            .ports
            .iter()
            .find(|p| p.name == fs.port_name && p.protocol == frontend.proto)
        else {
            continue;
        };
        let sets = endpoints_for(svc, sp, groups_of(cluster, &svc.id), node);
        if fs.backends != sets.backends
            || fs.local_backends != sets.local_backends
            || fs.terminating != sets.terminating
        {
            fs.backends = sets.backends;
            fs.local_backends = sets.local_backends;
            fs.terminating = sets.terminating;
            changed.push(*frontend);
        }
    }
    for hc in state.health_checks.iter_mut() {
        if services.contains(&hc.service) {
            hc.local_endpoints = local_ready_endpoints(groups_of(cluster, &hc.service), node);
        }
    }
    changed
}

fn groups_of<'a>(cluster: &'a Cluster, id: &ObjectRef) -> &'a [EndpointGroup] {
    cluster
        .endpoints
        .get(id)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// `port "http" (10.96.0.1:80/TCP) skipped: already used by Service ns/name` for two
/// ClusterIPs (the historical text); other kinds are named on the side they apply to, e.g.
/// `port "http" (NodePort 192.168.1.10:30080/TCP) skipped: already used by Service ns/name
/// (externalIP)`.
fn conflict_reason(
    sp: &ServicePort,
    fe: Frontend,
    kind: FrontendKind,
    owner: &FrontendState,
) -> String {
    let both_cluster_ip = kind == FrontendKind::ClusterIp && owner.kind == FrontendKind::ClusterIp;
    let (mine, theirs) = if both_cluster_ip {
        (String::new(), String::new())
    } else {
        (
            format!("{} ", kind.title()),
            format!(" ({})", owner.kind.title()),
        )
    };
    format!(
        "port {} ({mine}{fe}) skipped: already used by Service {}{theirs}",
        port_label(sp),
        owner.service
    )
}

fn port_label(sp: &ServicePort) -> String {
    if sp.name.is_empty() {
        format!("{}/{}", sp.port, sp.protocol)
    } else {
        format!("{:?}", sp.name)
    }
}

/// kube-proxy's endpoint choice for a set of candidates: the ready ones; if there is none,
/// the serving and terminating ones; never a not-serving one.
fn usable<'a>(candidates: &[&'a (&'a Endpoint, u16)]) -> Vec<&'a (&'a Endpoint, u16)> {
    let ready: Vec<_> = candidates
        .iter()
        .copied()
        .filter(|(e, _)| e.ready && e.serving)
        .collect();
    if !ready.is_empty() {
        return ready;
    }
    candidates
        .iter()
        .copied()
        .filter(|(e, _)| e.serving && e.terminating)
        .collect()
}

fn to_backends(chosen: &[&(&Endpoint, u16)], proto: Protocol) -> Vec<BackendAddr> {
    let mut out: Vec<BackendAddr> = chosen
        .iter()
        .flat_map(|(e, port)| {
            e.addresses.iter().map(move |&addr| BackendAddr {
                addr,
                port: *port,
                proto,
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The cluster, local and terminating endpoint sets of one service port (see [`compute`]).
fn endpoints_for(
    svc: &Service,
    sp: &ServicePort,
    groups: &[EndpointGroup],
    node: &NodeContext,
) -> PortEndpoints {
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
    let all: Vec<&(&Endpoint, u16)> = candidates.iter().collect();
    let local: Vec<&(&Endpoint, u16)> = candidates
        .iter()
        .filter(|(e, _)| node.is_local(e))
        .collect();
    let backends = to_backends(&usable(&all), sp.protocol);
    let local_backends = to_backends(&usable(&local), sp.protocol);
    let terminating_eps: Vec<&(&Endpoint, u16)> =
        candidates.iter().filter(|(e, _)| e.terminating).collect();
    let terminating = to_backends(&terminating_eps, sp.protocol)
        .into_iter()
        .filter(|b| backends.binary_search(b).is_err())
        .collect();
    if backends.is_empty() {
        tracing::debug!(service = %svc.id, port = %port_label(sp), "no usable endpoints");
    }
    PortEndpoints {
        backends,
        local_backends,
        terminating,
    }
}

/// kube-proxy's `LocalReadyEndpoints` for one Service: distinct addresses of ready endpoints
/// on this node, over the groups that expose at least one port (kube-proxy indexes
/// endpoints by slice port, so a port-less slice contributes nothing).
fn local_ready_endpoints(groups: &[EndpointGroup], node: &NodeContext) -> usize {
    groups
        .iter()
        .filter(|g| !g.ports.is_empty())
        .flat_map(|g| g.endpoints.iter())
        .filter(|e| e.ready && node.is_local(e))
        .flat_map(|e| e.addresses.iter().copied())
        .collect::<BTreeSet<Ipv4Addr>>()
        .len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        EndpointPort, IpMode, LoadBalancerIngress, SessionAffinity, TargetPort, TrafficPolicy,
    };

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
            external_traffic_policy: TrafficPolicy::Cluster,
            internal_traffic_policy: TrafficPolicy::Cluster,
            external_ips: vec![],
            load_balancer_ingress: vec![],
            load_balancer_source_ranges: vec![],
            session_affinity: SessionAffinity::None,
            health_check_node_port: None,
            allocate_load_balancer_node_ports: true,
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

    /// update_endpoints on a state computed for an earlier cluster equals compute on the
    /// new one, for endpoint changes (added, removed, terminating, local, no endpoints,
    /// slice gone) of some Services, with others untouched.
    #[test]
    fn update_endpoints_matches_a_full_compute() {
        let p = || {
            vec![
                port("http", 80, Protocol::Tcp),
                port("dns", 53, Protocol::Udp),
            ]
        };
        let mut lb = lb_service();
        lb.external_traffic_policy = TrafficPolicy::Local;
        lb.health_check_node_port = Some(32000);
        let services = vec![
            service("default", "a", &["10.96.0.1"], p()),
            service("default", "b", &["10.96.0.2"], p()),
            service("shop", "c", &["10.96.0.3"], p()),
            lb,
        ];
        let groups = |addrs: &[(&str, Option<&str>, bool)]| {
            vec![group(
                &[("http", 8080, Protocol::Tcp), ("dns", 5353, Protocol::Udp)],
                addrs
                    .iter()
                    .map(|(a, n, term)| {
                        let e = ep(a, !term, true, *term);
                        match n {
                            Some(n) => on(n, e),
                            None => e,
                        }
                    })
                    .collect(),
            )]
        };
        let http = |addrs: &[(&str, Option<&str>)]| {
            vec![group(
                &[("http", 8080, Protocol::Tcp)],
                addrs
                    .iter()
                    .map(|(a, n)| match n {
                        Some(n) => on(n, ep(a, true, true, false)),
                        None => ep(a, true, true, false),
                    })
                    .collect(),
            )]
        };
        let before = cluster(
            services.clone(),
            vec![
                (
                    ObjectRef::new("default", "a"),
                    groups(&[("10.244.1.1", None, false)]),
                ),
                (
                    ObjectRef::new("default", "b"),
                    groups(&[("10.244.1.2", None, false)]),
                ),
                (
                    ObjectRef::new("shop", "c"),
                    groups(&[("10.244.1.3", None, false)]),
                ),
                (
                    ObjectRef::new("default", "lb"),
                    http(&[("10.244.2.1", Some("other"))]),
                ),
            ],
        );
        let after = cluster(
            services,
            vec![
                (
                    ObjectRef::new("default", "a"),
                    groups(&[
                        ("10.244.1.1", None, true),
                        ("10.244.1.9", Some(NODE_A), false),
                    ]),
                ),
                // b's slice is gone: no endpoints, rejects.
                (
                    ObjectRef::new("shop", "c"),
                    groups(&[("10.244.1.3", None, false)]),
                ),
                (
                    ObjectRef::new("default", "lb"),
                    http(&[("10.244.2.1", Some("other")), ("10.244.2.2", Some(NODE_A))]),
                ),
            ],
        );
        let node = node();
        let (mut state, _) = compute(&before, &node);
        let changed: BTreeSet<ObjectRef> = ["a", "b", "lb"]
            .into_iter()
            .map(|n| ObjectRef::new("default", n))
            .collect();
        let frontends = update_endpoints(&mut state, &after, &node, &changed);
        let (want, _) = compute(&after, &node);
        assert_eq!(state, want);
        // Every frontend of a, b and lb changed; none of c's.
        assert!(
            frontends
                .iter()
                .all(|f| state.frontends[f].service.name != "c")
        );
        assert!(frontends.contains(&fe("10.96.0.2", 80, Protocol::Tcp)));
        assert_eq!(
            state.health_checks[0].local_endpoints, 1,
            "the health check counts the new local endpoint"
        );
        // Nothing changed: nothing reported.
        assert!(update_endpoints(&mut state, &after, &node, &changed).is_empty());
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
        let (state, problems) = compute(&c, &NodeContext::default());
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
        let (state, _) = compute(&c, &NodeContext::default());
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
        let (state, _) = compute(&c, &NodeContext::default());
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
        let (state, _) = compute(&c, &NodeContext::default());
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
        let (state, _) = compute(&c, &NodeContext::default());
        assert_eq!(
            backends(&state, fe("10.96.0.10", 80, Protocol::Tcp)),
            vec![]
        );
        assert_eq!(
            backends(&state, fe("10.96.0.10", 80, Protocol::Udp)),
            vec![]
        );
    }

    // ---- Kubernetes Service semantics: frontend kinds, policies, endpoint sets ----

    const NODE_A: &str = "node-a";

    fn node() -> NodeContext {
        NodeContext {
            node_name: Some(NODE_A.into()),
            node_ips: vec![ip("192.168.1.10"), ip("10.0.0.10")],
            node_port_addresses: vec![],
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
            let expected: Vec<Ipv4Cidr> = if s.kind == FrontendKind::LoadBalancer {
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
        assert_eq!(n.node_port_ips(), vec![ip("192.168.1.10")]);
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
    fn local_set_vs_cluster_set() {
        let mut svc = lb_service();
        svc.external_traffic_policy = TrafficPolicy::Local;
        let groups = http_group(vec![
            on("node-b", ep("10.1.1.1", true, true, false)),
            on(NODE_A, ep("10.1.0.1", true, true, false)),
            on(NODE_A, ep("10.1.0.2", false, true, true)),
            ep("10.1.2.1", true, true, false), // no nodeName: never local
        ]);
        let c = cluster(vec![svc], vec![(ObjectRef::new("default", "lb"), groups)]);
        let (state, _) = compute(&c, &node());
        let s = &state.frontends[&fe("198.51.100.1", 80, Protocol::Tcp)];
        let tcp = Protocol::Tcp;
        assert_eq!(
            s.backends,
            vec![
                be("10.1.0.1", 8080, tcp),
                be("10.1.1.1", 8080, tcp),
                be("10.1.2.1", 8080, tcp)
            ]
        );
        assert_eq!(s.local_backends, vec![be("10.1.0.1", 8080, tcp)]);
        assert_eq!(s.terminating, vec![be("10.1.0.2", 8080, tcp)]);
        // The ClusterIP frontend gets the same sets (its policy is Cluster).
        let cip = &state.frontends[&fe("10.96.0.10", 80, tcp)];
        assert!(!cip.local_policy);
        assert_eq!(cip.local_backends, s.local_backends);
    }

    #[test]
    fn no_ready_local_endpoint_falls_back_to_local_serving_terminating() {
        let mut svc = lb_service();
        svc.external_traffic_policy = TrafficPolicy::Local;
        let groups = http_group(vec![
            on("node-b", ep("10.1.1.1", true, true, false)),
            on(NODE_A, ep("10.1.0.2", false, true, true)),
            on(NODE_A, ep("10.1.0.3", false, false, true)), // not serving: never used
            on(NODE_A, ep("10.1.0.4", false, false, false)), // not ready, not terminating
        ]);
        let c = cluster(vec![svc], vec![(ObjectRef::new("default", "lb"), groups)]);
        let (state, _) = compute(&c, &node());
        let tcp = Protocol::Tcp;
        let s = &state.frontends[&fe("203.0.113.7", 80, tcp)];
        assert!(s.local_policy);
        // Cluster-wide a ready endpoint exists, so the terminating one is not a backend...
        assert_eq!(s.backends, vec![be("10.1.1.1", 8080, tcp)]);
        // ...but locally there is no ready one: the serving-terminating local one is used.
        assert_eq!(s.local_backends, vec![be("10.1.0.2", 8080, tcp)]);
        // Terminating (serving or not) and not a backend: kept for established flows.
        assert_eq!(
            s.terminating,
            vec![be("10.1.0.2", 8080, tcp), be("10.1.0.3", 8080, tcp)]
        );
    }

    #[test]
    fn node_without_a_name_has_no_local_endpoints() {
        let mut svc = lb_service();
        svc.external_traffic_policy = TrafficPolicy::Local;
        svc.health_check_node_port = Some(31000);
        let groups = http_group(vec![on(NODE_A, ep("10.1.0.1", true, true, false))]);
        let c = cluster(vec![svc], vec![(ObjectRef::new("default", "lb"), groups)]);
        let mut n = node();
        n.node_name = None;
        let (state, _) = compute(&c, &n);
        let s = &state.frontends[&fe("198.51.100.1", 80, Protocol::Tcp)];
        assert_eq!(s.backends, vec![be("10.1.0.1", 8080, Protocol::Tcp)]);
        assert_eq!(s.local_backends, vec![]);
        assert_eq!(state.health_checks[0].local_endpoints, 0);
    }

    #[test]
    fn all_terminating_cluster_set_and_terminating_list() {
        let svc = service(
            "default",
            "web",
            &["10.96.0.10"],
            vec![port("http", 80, Protocol::Tcp)],
        );
        let groups = http_group(vec![
            on(NODE_A, ep("10.1.0.1", false, true, true)),
            ep("10.1.0.2", false, false, true),
            ep("10.1.0.3", false, false, false),
        ]);
        let c = cluster(vec![svc], vec![(ObjectRef::new("default", "web"), groups)]);
        let (state, _) = compute(&c, &node());
        let s = &state.frontends[&fe("10.96.0.10", 80, Protocol::Tcp)];
        let tcp = Protocol::Tcp;
        assert_eq!(s.backends, vec![be("10.1.0.1", 8080, tcp)]);
        assert_eq!(s.local_backends, vec![be("10.1.0.1", 8080, tcp)]);
        // The serving-terminating one is a backend, so only the not-serving one is listed.
        assert_eq!(s.terminating, vec![be("10.1.0.2", 8080, tcp)]);
    }

    #[test]
    fn health_checks_count_distinct_local_ready_endpoints() {
        let mut a = lb_service();
        a.id = ObjectRef::new("default", "a");
        a.external_traffic_policy = TrafficPolicy::Local;
        a.health_check_node_port = Some(31000);
        a.ports = vec![
            port("http", 80, Protocol::Tcp),
            port("dns", 53, Protocol::Udp),
        ];
        a.external_ips.clear();
        a.load_balancer_ingress.clear();
        // ETP Cluster: no health check even with a port.
        let mut b = a.clone();
        b.id = ObjectRef::new("default", "b");
        b.external_traffic_policy = TrafficPolicy::Cluster;
        b.health_check_node_port = Some(31001);
        // NodePort type with ETP Local: kube-proxy serves no health check.
        let mut n = a.clone();
        n.id = ObjectRef::new("default", "n");
        n.kind = ServiceKind::NodePort;
        n.health_check_node_port = Some(31002);
        // Same health check port as `a`: reported.
        let mut z = a.clone();
        z.id = ObjectRef::new("zz", "a");
        z.cluster_ips = vec![ip("10.96.9.9")];
        let groups = vec![
            group(
                &[("http", 8080, Protocol::Tcp), ("dns", 5353, Protocol::Udp)],
                vec![
                    on(NODE_A, ep("10.1.0.1", true, true, false)),
                    on(NODE_A, ep("10.1.0.2", true, true, false)),
                    on(NODE_A, ep("10.1.0.3", false, true, true)), // serving-terminating
                    on("node-b", ep("10.1.1.1", true, true, false)),
                ],
            ),
            // The same pod listed again in a second slice counts once.
            group(
                &[("http", 8080, Protocol::Tcp)],
                vec![on(NODE_A, ep("10.1.0.1", true, true, false))],
            ),
            // A slice without ports contributes nothing.
            group(&[], vec![on(NODE_A, ep("10.1.0.9", true, true, false))]),
        ];
        let c = cluster(
            vec![z, n, b, a],
            vec![
                (ObjectRef::new("default", "a"), groups.clone()),
                (ObjectRef::new("zz", "a"), groups),
            ],
        );
        let (state, problems) = compute(&c, &node());
        // Two local ready endpoints, with two ports each: 2.
        assert_eq!(
            state.health_checks,
            vec![HealthCheck {
                service: ObjectRef::new("default", "a"),
                port: 31000,
                local_endpoints: 2
            }]
        );
        let reasons: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(
            reasons.contains(
                &"Service zz/a: healthCheckNodePort 31000 skipped: already used by Service default/a"
                    .to_string()
            ),
            "{reasons:?}"
        );

        // No local ready endpoint: 0 (the server answers 503), even with a terminating one.
        let mut only = lb_service();
        only.external_traffic_policy = TrafficPolicy::Local;
        only.health_check_node_port = Some(31005);
        let c = cluster(
            vec![only],
            vec![(
                ObjectRef::new("default", "lb"),
                http_group(vec![
                    on(NODE_A, ep("10.1.0.3", false, true, true)),
                    on("node-b", ep("10.1.1.1", true, true, false)),
                ]),
            )],
        );
        let (state, _) = compute(&c, &node());
        assert_eq!(state.health_checks.len(), 1);
        assert_eq!(state.health_checks[0].local_endpoints, 0);
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
                "Service default/self: port \"http\" (NodePort 192.168.1.10:30080/TCP) skipped: already used by Service default/self (externalIP)"
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
                "Service default/c: port 30080/TCP (10.96.0.2:30080/TCP) skipped: already used by Service default/b",
                "Service default/c: port 30080/TCP (externalIP 10.0.0.10:30080/TCP) skipped: already used by Service default/b (LoadBalancer IP)",
                "Service default/a: port 80/TCP (NodePort 10.0.0.10:30080/TCP) skipped: already used by Service default/b (LoadBalancer IP)",
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
        // SCTP only: the model dropped every port.
        let sctp = service("default", "sctp", &["10.96.0.31"], vec![]);
        let v6only = service("default", "v6only", &[], tcp80());
        // IPv6-only cluster IP but an externalIP: served (no entry here).
        let mut v6_external = service("default", "v6ext", &[], tcp80());
        v6_external.external_ips = vec![ip("198.51.100.7")];
        // Loses its only address to an earlier Service: every port skipped.
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
                r("beta", "web", NoPorts),
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
                "no-ports",
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
}
