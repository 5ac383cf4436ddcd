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
mod tests;
