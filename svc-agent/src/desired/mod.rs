//! What the BPF service maps should hold, computed from the [`Cluster`] model and the facts
//! of this node ([`NodeContext`]) alone.
//!
//! The rules are those of `/work/shared/notes/service-semantics.md` (kube-proxy's
//! behaviour); [`compute_with_incumbents`] documents each of them and the choices made
//! where the note is silent. In short:
//!
//! - Families (docs/ipv6.md): a dual-stack Service is two Services to the datapath, as
//!   kube-proxy runs one proxier per family. Every address below is taken in both
//!   families; a frontend gets only the endpoints of its own family (an IPv6 ClusterIP
//!   never gets an IPv4 backend), the node addresses of its family and the
//!   loadBalancerSourceRanges of its family.
//! - Addresses ("Addresses a Service answers on"): every cluster IP, every node
//!   address selected by nodePortAddresses at each nodePort (and 127.0.0.1 for the node's
//!   own processes: localhost NodePorts), every externalIP and every load balancer
//!   ingress IP (not `ipMode: Proxy`), each with every service port.
//! - The node's own traffic (`node_traffic`): localhost NodePorts, and a Service's
//!   LoadBalancer IPs allowed as sources when the node's IP is inside its
//!   loadBalancerSourceRanges.
//! - Endpoints ("Endpoints"): ready ones, else serving-and-terminating ones, never
//!   not-serving ones; computed for the whole cluster and for this node.
//! - Traffic policies: each frontend says whether its policy is Local; the datapath then
//!   uses `local_backends` for outside traffic (ETP) or all ClusterIP traffic (ITP).
//! - Topology (the note's "Topology", kube-proxy's pkg/proxy/topology.go): the cluster set
//!   keeps only the ready endpoints hinted for this node (`forNodes`) or, failing that, for
//!   its zone (`forZones`), when every ready endpoint has that kind of hint and one matches;
//!   otherwise every endpoint. See [`compute_with_incumbents`], "Topology".
//! - Headless, ExternalName and Services labelled `service.kubernetes.io/service-proxy-name`
//!   get nothing; they, and proxied Services that end up with no frontend, are listed in
//!   [`DesiredState::unserved`] with the reason (svcctl shows them).
//! - Address ownership (issue 11; the note is silent): an address:port/protocol two
//!   Services claim goes to the higher kind (ClusterIP, then externalIP / LoadBalancer IP,
//!   then NodePort), then to the Service that serves it now ([`Incumbents`]), then to the
//!   older Service; the other is reported with both names. externalIPs can be restricted
//!   to CIDRs ([`ExternalIpPolicy`]). See [`compute_with_incumbents`], "Conflicts".
//! - Addresses no frontend takes (the note's "No usable endpoints anywhere", kube-proxy's
//!   nftables mode): the allocated ClusterIPs (a port no Service has: REJECT) and the
//!   service CIDRs (an address no Service has: DROP), from ServiceCIDR objects or
//!   `--service-cluster-ip-range` (`service_cidrs`). See [`compute_with_incumbents`],
//!   "Service CIDRs".

use std::cmp::Ordering;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use crate::model::{
    Cluster, Endpoint, EndpointGroup, IpMode, ObjectRef, Protocol, Service, ServiceKind,
    ServicePort, TargetPort,
};

mod node_traffic;
mod service_cidrs;
mod topology;
use topology::Topology;

pub use service_cidrs::{CidrSource, FLAG as SERVICE_CIDR_FLAG, ServiceCidrs};
/// What a packet to an allocated ClusterIP on a port no frontend has gets (svc-common's
/// word: SVC4_CLUSTERIPS records it).
pub use svc_common::ClusterIpUse;

pub use crate::addr::{BackendAddr, CidrError, Family, Frontend, IpCidr, Ipv4Cidr};
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
    /// serving-and-terminating ones when none is ready), narrowed by the topology hints
    /// when they apply on this node ([`compute_with_incumbents`], "Topology"). Sorted and
    /// deduplicated. Empty when the Service has no usable endpoint: the datapath then
    /// rejects (TCP RST / ICMP port unreachable). With `local_policy` it is still what pod
    /// and node sources of an external address use (semantics note: ETP Local
    /// short-circuits them to all endpoints).
    pub backends: Vec<BackendAddr>,
    /// This node's endpoint set (endpoint nodeName == the agent's node name), chosen by the
    /// same rule applied to the local endpoints only: ready local ones, else local
    /// serving-and-terminating ones; topology hints do not apply to it. Hence NOT always a
    /// subset of `backends`: a node whose only local endpoint is terminating uses it while
    /// remote ready ones exist, and a local endpoint hinted for another zone is here but not
    /// there. Always filled (empty when the node name is unknown); used only when
    /// `local_policy`. Sorted and deduplicated.
    pub local_backends: Vec<BackendAddr>,
    /// Endpoints kept only for the flows they already have, never chosen for a new
    /// cluster-wide flow: those with terminating=true (serving or not) and the ready ones
    /// the topology hints leave out of `backends` (an established connection keeps its
    /// backend while it exists, as with kube-proxy, whose conntrack entries outlive a
    /// change of hints); none of them in `backends`. The maps mark them "terminating". A
    /// local endpoint may be both here and in `local_backends`. Sorted and deduplicated.
    pub terminating: Vec<BackendAddr>,
    /// sessionAffinity: ClientIP: the timeout in seconds (default 10800). Set on every
    /// frontend of the Service.
    pub affinity_timeout: Option<u32>,
    /// loadBalancerSourceRanges, for LoadBalancer frontends only (empty: every source),
    /// and the Service's LoadBalancer IPs when the node's primary IP is inside them (see
    /// `node_traffic`); only those of the frontend's family.
    pub source_ranges: Vec<IpCidr>,
}

/// Facts about the node the agent runs on, which decide NodePort addresses and locality.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeContext {
    /// This node's name; endpoints with this nodeName are local. `None`: no endpoint is
    /// local (local sets are empty, Local-policy frontends drop outside traffic).
    pub node_name: Option<String>,
    /// This node's addresses, of both families; the first of each family is that family's
    /// primary address (kube-proxy's per-family node IP).
    pub node_ips: Vec<IpAddr>,
    /// This node's zone (`--node-zone`, else in Kubernetes mode the Node's
    /// `topology.kubernetes.io/zone` label), matched against `forZones` hints. `None`:
    /// zone hints never apply here (kube-proxy: "node is missing label").
    pub zone: Option<String>,
    /// kube-proxy's nodePortAddresses: NodePorts answer on the node addresses inside these
    /// CIDRs. Per family, as each kube-proxy proxier keeps its family's CIDRs: a family
    /// with no CIDR here answers on every node address of that family.
    pub node_port_addresses: Vec<IpCidr>,
    /// Which `spec.externalIPs` this node serves (default: all, as kube-proxy).
    pub external_ips: ExternalIpPolicy,
    /// Localhost NodePorts (kube-proxy's `--iptables-localhost-nodeports`): NodePorts also
    /// answer the node's own processes on 127.0.0.1 when nodePortAddresses allows it
    /// ([`NodeContext::localhost_node_port_ip`]). svc-agent's flag defaults to on, as
    /// kube-proxy's; `NodeContext::default()` leaves it off.
    pub localhost_node_ports: bool,
    /// `--service-cluster-ip-range` (kube-apiserver's flag): the service CIDRs when no
    /// ServiceCIDR object exists.
    pub service_cluster_ip_range: Vec<IpCidr>,
}

/// Which `spec.externalIPs` the node serves: the idea of the DenyServiceExternalIPs
/// admission plugin (and of restricting externalIPs to known ranges), applied at the node.
/// Anyone who may create a Service can otherwise claim any address with an externalIP
/// (CVE-2020-8554); kube-proxy has no such switch, the API server's admission does it.
/// LoadBalancer ingress IPs are not affected: they are written to the status by a
/// controller, not by whoever creates the Service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ExternalIpPolicy {
    /// Every externalIP is served (kube-proxy's behaviour).
    #[default]
    AllowAll,
    /// Only externalIPs inside these CIDRs (both families; an address is allowed by a
    /// CIDR of its own family only); an empty list: none at all.
    AllowIn(Vec<IpCidr>),
}

impl ExternalIpPolicy {
    /// No externalIP at all.
    pub fn deny_all() -> ExternalIpPolicy {
        ExternalIpPolicy::AllowIn(Vec::new())
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        match self {
            ExternalIpPolicy::AllowAll => true,
            ExternalIpPolicy::AllowIn(cidrs) => cidrs.iter().any(|c| c.contains(ip)),
        }
    }
}

/// `all`, `none`, or the CIDRs separated by commas (the value of `--external-ip-cidrs`).
impl fmt::Display for ExternalIpPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExternalIpPolicy::AllowAll => f.write_str("all"),
            ExternalIpPolicy::AllowIn(cidrs) if cidrs.is_empty() => f.write_str("none"),
            ExternalIpPolicy::AllowIn(cidrs) => {
                for (i, c) in cidrs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{c}")?;
                }
                Ok(())
            }
        }
    }
}

/// Who serves each frontend now: within a rank, the incumbent keeps its address (see
/// [`compute_with_incumbents`], "Conflicts"). The agent passes the owners of its previous
/// desired state ([`Incumbents::of`]) and, at start, those the pinned maps name, so that a
/// new Service, a restart or the order of names never moves an address that is served.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Incumbents(BTreeMap<Frontend, ObjectRef>);

impl Incumbents {
    /// The owners of every frontend of `state`.
    pub fn of(state: &DesiredState) -> Incumbents {
        state
            .frontends
            .iter()
            .map(|(f, s)| (*f, s.service.clone()))
            .collect()
    }

    pub fn get(&self, frontend: &Frontend) -> Option<&ObjectRef> {
        self.0.get(frontend)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(Frontend, ObjectRef)> for Incumbents {
    fn from_iter<I: IntoIterator<Item = (Frontend, ObjectRef)>>(iter: I) -> Self {
        Incumbents(iter.into_iter().collect())
    }
}

impl NodeContext {
    /// The addresses NodePorts answer on: `node_ips` inside `node_port_addresses` (every
    /// node IP of a family that list has no CIDR of), deduplicated, in `node_ips` order.
    pub fn node_port_ips(&self) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = Vec::new();
        for &ip in &self.node_ips {
            let family = Family::of(ip);
            let mut cidrs = self
                .node_port_addresses
                .iter()
                .filter(|c| c.family() == family)
                .peekable();
            let selected = cidrs.peek().is_none() || cidrs.any(|c| c.contains(ip));
            if selected && !out.contains(&ip) {
                out.push(ip);
            }
        }
        out
    }

    /// The first node address of `family`: that family's primary address (kube-proxy's
    /// node IP of that family's proxier).
    pub fn primary_ip(&self, family: Family) -> Option<IpAddr> {
        self.node_ips
            .iter()
            .copied()
            .find(|ip| Family::of(*ip) == family)
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
    /// Every allocated ClusterIP (both families; each goes to its family's map) and what a
    /// packet to it on a port no frontend has gets (see [`compute_with_incumbents`],
    /// "Service CIDRs").
    pub cluster_ips: BTreeMap<IpAddr, ClusterIpUse>,
    /// The service CIDRs: a packet no frontend takes, to an address inside them that is
    /// no ClusterIP, is dropped.
    pub service_cidrs: ServiceCidrs,
}

/// Something in the model that could not be turned into dataplane state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComputeProblem {
    /// What `service` is: `Service` (almost always), `ServiceCIDR`, or `flag` (a flag of
    /// the agent, named in `service`).
    pub kind: &'static str,
    pub service: ObjectRef,
    pub reason: String,
    /// For an address another Service (or another kind of the same Service) keeps: who,
    /// and why. Counted in `svc_agent_address_conflicts`.
    pub conflict: Option<AddressConflict>,
}

/// An address:port/protocol `service` claimed and lost: `owner` keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressConflict {
    pub frontend: Frontend,
    /// How the losing Service claimed it.
    pub kind: FrontendKind,
    pub owner: ObjectRef,
    /// How the owner serves it.
    pub owner_kind: FrontendKind,
    pub why: Precedence,
}

/// The rule that decided a conflict, in the order the rules apply (see
/// [`compute_with_incumbents`], "Conflicts").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precedence {
    /// The owner's kind ranks higher (ClusterIP > externalIP, LoadBalancer IP > NodePort).
    Rank,
    /// Both claims are the same Service's, with two kinds of one rank: the kind listed
    /// first (externalIP before LoadBalancer IP).
    ListedFirst,
    /// The owner serves it now.
    Incumbent,
    /// The owner's creationTimestamp is older (or the other has none).
    Older,
    /// Same age: the owner's uid is smaller (or the other has none).
    SmallerUid,
    /// Nothing else differs (manifests without timestamps): namespace/name order.
    Name,
}

impl Precedence {
    /// Why the owner keeps the address, for the problem text.
    fn describe(self, owner_kind: FrontendKind, kind: FrontendKind) -> String {
        match self {
            Precedence::Rank => format!("{} outranks {}", owner_kind.title(), kind.title()),
            Precedence::ListedFirst => format!("{} comes first", owner_kind.title()),
            Precedence::Incumbent => "it serves it already".into(),
            Precedence::Older => "it is older".into(),
            Precedence::SmallerUid => "same age, smaller uid".into(),
            Precedence::Name => "first by namespace/name".into(),
        }
    }
}

impl ComputeProblem {
    /// A problem of `id` (a `kind`: see [`ComputeProblem::kind`]) that is no address
    /// conflict.
    pub fn about(kind: &'static str, id: ObjectRef, reason: String) -> ComputeProblem {
        ComputeProblem {
            kind,
            service: id,
            reason,
            conflict: None,
        }
    }
}

impl fmt::Display for ComputeProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.kind, self.service, self.reason)
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
    /// Position in the list of claims: the order a Service lists its own addresses in.
    order: usize,
    svc: &'a Service,
    /// Index of `sp` in `svc.ports`.
    index: usize,
    sp: &'a ServicePort,
    fe: Frontend,
    kind: FrontendKind,
}

/// [`compute_with_incumbents`] for a node that serves nothing yet (no incumbents).
pub fn compute(cluster: &Cluster, node: &NodeContext) -> (DesiredState, Vec<ComputeProblem>) {
    compute_with_incumbents(cluster, node, &Incumbents::default())
}

/// Computes the desired dataplane state for the node described by `node`, the frontends
/// `incumbents` names staying with their owner where the conflict rule lets them.
///
/// Only proxied Services ([`Service::is_proxied`]: ClusterIP, NodePort and LoadBalancer
/// without the service-proxy-name label) get state. For each of their service ports:
///
/// **Frontends** (semantics note, "Addresses a Service answers on"), each a (address, port,
/// protocol) triple; TCP and UDP on the same port are distinct:
/// - [`FrontendKind::ClusterIp`]: each cluster IP (both families) at `port`; `local_policy` =
///   internalTrafficPolicy Local (ITP applies to ClusterIP traffic only).
/// - [`FrontendKind::NodePort`]: types NodePort and LoadBalancer, when the port has a
///   `nodePort`: each of [`NodeContext::node_port_ips`] at `nodePort`, and 127.0.0.1 for
///   the node's own processes when [`NodeContext::localhost_node_port_ip`] says so
///   (localhost NodePorts; only the socket programs use it); `local_policy` =
///   externalTrafficPolicy Local. A nodePort on a ClusterIP Service (the API server rejects
///   it) is ignored. `allocateLoadBalancerNodePorts: false` does not matter: a nodePort in
///   the manifest is used, as kube-proxy does.
/// - [`FrontendKind::ExternalIp`]: each `spec.externalIPs` entry at `port`, for every
///   proxied type (kube-proxy serves externalIPs on ClusterIP Services too);
///   `local_policy` = ETP Local. Not filtered by loadBalancerSourceRanges (the note: "LoadBalancer
///   IP destinations only").
/// - [`FrontendKind::LoadBalancer`]: type LoadBalancer only, each ingress IP at
///   `port`, skipping `ipMode: Proxy` entries (the external load balancer must see the
///   traffic) and hostname-only entries (nothing to match); `local_policy` = ETP Local;
///   `source_ranges` = the loadBalancerSourceRanges of the frontend's family (none of it:
///   every source, as kube-proxy's per-family proxiers), plus the Service's LoadBalancer
///   IPs of that family as /32s (/128s) when the node's primary IP of that family is
///   inside them, as
///   kube-proxy allows a node that has the VIP locally (its traffic to the VIP loops back
///   with the VIP as source; see `node_traffic`). Ingress status on another type is
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
/// **Topology** (note, "Topology"; kube-proxy's `CategorizeEndpoints` with
/// `topologyModeFromHints` and `availableForTopology`, Kubernetes 1.33+ with
/// PreferSameTrafficDistribution on, as it is by default since 1.34), per service port:
/// - Only the EndpointSlice hints decide, never the Service's `trafficDistribution`: that
///   field is the EndpointSlice controller's input (PreferClose / PreferSameZone: it writes
///   `forZones`; PreferSameNode: `forNodes` and `forZones`; the `topology-mode: Auto`
///   annotation also writes `forZones`), and kube-proxy reads the hints whatever the
///   Service says. In manifest mode the hints are what the slices say.
/// - Only ready endpoints count. If every one of them has a `forNodes` hint and one names
///   this node (`node.node_name`), `backends` = the ready endpoints whose `forNodes` names
///   it. Otherwise, if every ready endpoint has a `forZones` hint and one names this node's
///   zone (`node.zone`), `backends` = the ready endpoints whose `forZones` names it (so
///   PreferSameNode falls back to the zone where no endpoint is hinted for this node).
///   Otherwise the hints are ignored: `backends` as above (every usable endpoint). A
///   node without a zone, or a Service without ready endpoints, never filters.
/// - The ready endpoints the hints leave out go to `terminating`: established flows keep
///   them; new ones do not get them.
/// - Topology narrows the cluster set only: `local_backends` (internalTrafficPolicy /
///   externalTrafficPolicy Local) ignores the hints, and the pod and node sources of an
///   externalTrafficPolicy Local address, which use `backends`, get the narrowed set (as
///   kube-proxy's cluster chain does).
/// - When hints are there but ignored, a debug log line says why (kube-proxy logs at
///   V(2)/V(7)); no problem is reported.
///
/// **externalIPs the node does not allow** ([`NodeContext::external_ips`], the
/// DenyServiceExternalIPs idea at the node): skipped, one [`ComputeProblem`] per Service and
/// address; the Service's other addresses are served.
///
/// **Conflicts** (issue 11; the note is silent): one address:port/protocol has one owner,
/// and a served one stays with it. Before, the first Service by namespace/name won, so a
/// Service named to sort early (`aaa/evil` with `externalIPs: [<kube-dns's ClusterIP>]`)
/// took the address from the Service serving it (the CVE-2020-8554 pattern, made
/// deterministic). Among the claims on one frontend, the owner is decided by, in order:
/// 1. the kind's rank: ClusterIP (allocated by the API server, unique there), then the
///    explicit external addresses (externalIP, LoadBalancer IP; one rank), then NodePort.
///    Explicit addresses before node ports is what kube-proxy does in effect: its
///    per-address rules (`KUBE-SERVICES`, the nftables `service-ips` map) are matched
///    before the NodePort catch-all (`KUBE-NODEPORTS`, `service-nodeports`), so an
///    externalIP or LoadBalancer IP equal to a node IP wins over a nodePort of that number;
/// 2. within a rank, the incumbent: the Service `incumbents` names for the frontend (the
///    one serving it now) keeps it, whatever its name or age. So in manifest mode the
///    Service served first keeps it, also across restarts (the agent learns the incumbents
///    from the pinned maps at start);
/// 3. the older `metadata.creationTimestamp` (a Service without one counts as newest),
///    then the smaller `metadata.uid` (without one: last): in Kubernetes mode the API server
///    never lets two Services have one ClusterIP, but a buggy controller could write
///    clashing objects, and the older one has been serving longer;
/// 4. [`ObjectRef`] order, the last tie-break (manifests have no timestamps).
///
/// Claims of one Service of one rank (an externalIP equal to its LoadBalancer IP) go by
/// listing order: ClusterIP, externalIP, LoadBalancer IP (kube-proxy's rule order per
/// Service). A Service claiming one address twice through the same kind (e.g. two ingress
/// entries with one IP) is not a problem. Every other losing (Service, port, address) is a
/// [`ComputeProblem`] with an [`AddressConflict`] naming both Services, both kinds and the
/// rule that decided; the loser keeps its other addresses.
///
/// **Unserved** ([`DesiredState::unserved`]): every Service with no frontend, with the
/// first reason that applies: type ExternalName, headless, the service-proxy-name label
/// (the type comes first: no proxy would serve those), then for proxied Services: no
/// port left ([`UnservedReason::NoPorts`], e.g. only SCTP ports with another targetPort), every address it claimed kept
/// by another Service ([`UnservedReason::AddressTaken`]; the conflicts are the problems),
/// no IPv4 cluster IP (nor an address it may serve), else `NoPorts`.
///
/// **Health checks** (note, "healthCheckNodePort"): one per proxied Service of type
/// LoadBalancer with externalTrafficPolicy Local and a healthCheckNodePort, like
/// kube-proxy's `NeedsHealthCheck`; `local_endpoints` counts distinct addresses of ready
/// local endpoints (see [`HealthCheck`]). Two Services with the same healthCheckNodePort:
/// the first in ObjectRef order keeps it, the other is reported. Sorted by Service.
///
/// **Service CIDRs** (note, "No usable endpoints anywhere"; kube-proxy nftables'
/// `cluster-ips` set and `service-cidrs` rule, proxier.go's `cluster-ips-check` chain):
/// what a packet no frontend takes gets, when it is no reply of a translated flow.
/// - [`DesiredState::cluster_ips`]: every ClusterIP (both families) of every Service in the model,
///   served or not (a Service whose addresses another Service keeps, or whose every port is
///   SCTP, still has its ClusterIP allocated): a packet to it on a port/protocol no
///   frontend has is rejected (TCP RST / ICMP port unreachable). Headless and ExternalName
///   Services have none. A ClusterIP that only Services labelled
///   `service.kubernetes.io/service-proxy-name` have is [`ClusterIpUse::OtherProxy`]: left
///   alone, neither rejected nor dropped, because the other proxy may take the packet
///   after this datapath (TC ingress runs before netfilter); with a Service of ours on the
///   same ClusterIP the other proxy's use wins too.
/// - [`DesiredState::service_cidrs`]: the CIDRs (both families) of every ServiceCIDR object
///   (`networking.k8s.io/v1`, read from the API or as manifests); only when none exists,
///   `node.service_cluster_ip_range` (`--service-cluster-ip-range`); else none, and
///   nothing is dropped. A packet to an address inside them that is no ClusterIP is
///   dropped.
/// - This node's own addresses are never in either: kube-proxy's rules run in the forward
///   and output paths, so traffic to the node itself is never rejected or dropped by them,
///   while TC ingress sees it. A ClusterIP equal to a node address is left out, and a
///   service CIDR holding one is not used; each is a [`ComputeProblem`].
pub fn compute_with_incumbents(
    cluster: &Cluster,
    node: &NodeContext,
    incumbents: &Incumbents,
) -> (DesiredState, Vec<ComputeProblem>) {
    let mut state = DesiredState::default();
    let mut problems = Vec::new();
    let mut node_port_ips = node.node_port_ips();
    node_port_ips.extend(node.localhost_node_port_ip());

    // Endpoint sets per proxied Service, port and family, computed once for every kind,
    // when the first frontend of that family is kept (a family without a frontend costs
    // nothing: an IPv4-only cluster computes what it did before IPv6).
    let mut port_sets: BTreeMap<(&ObjectRef, usize, Family), PortEndpoints> = BTreeMap::new();
    let proxied: Vec<&Service> = cluster
        .services
        .values()
        .filter(|s| s.is_proxied())
        .collect();

    // Every claim, explicit addresses first, then node ports (the order only matters
    // between claims of one Service; see the conflict rule above).
    let mut claims: Vec<Claim> = Vec::new();
    for svc in &proxied {
        let external_ips: Vec<IpAddr> = svc
            .external_ips
            .iter()
            .copied()
            .filter(|&ip| {
                let allowed = node.external_ips.allows(ip);
                if !allowed {
                    problems.push(ComputeProblem {
                        kind: "Service",
                        service: svc.id.clone(),
                        reason: format!(
                            "externalIP {ip} skipped: not allowed on this node (--external-ip-cidrs {})",
                            node.external_ips
                        ),
                        conflict: None,
                    });
                }
                allowed
            })
            .collect();
        for (index, sp) in svc.ports.iter().enumerate() {
            let mut add = |vip: IpAddr, port: u16, kind: FrontendKind| {
                claims.push(Claim {
                    order: claims.len(),
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
            for &vip in &external_ips {
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
            if let Some(reason) = sctp_node_port_refused(sp, node_port) {
                problems.push(ComputeProblem {
                    kind: "Service",
                    service: svc.id.clone(),
                    reason,
                    conflict: None,
                });
                continue;
            }
            for &vip in &node_port_ips {
                claims.push(Claim {
                    order: claims.len(),
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

    // The owner of each frontend: the claim that precedes every other one on it.
    let mut owners: BTreeMap<Frontend, usize> = BTreeMap::new();
    for claim in &claims {
        match owners.entry(claim.fe) {
            Entry::Vacant(e) => {
                e.insert(claim.order);
            }
            Entry::Occupied(mut e) => {
                if precedence(claim, &claims[*e.get()], incumbents).0 == Ordering::Less {
                    e.insert(claim.order);
                }
            }
        }
    }

    // Services that lost an address to another Service (for the unserved reason).
    let mut lost: BTreeSet<&ObjectRef> = BTreeSet::new();
    for claim in &claims {
        let owner = &claims[owners[&claim.fe]];
        if owner.order == claim.order {
            let Claim {
                svc,
                index,
                sp,
                fe,
                kind,
                ..
            } = *claim;
            let sets = port_sets
                .entry((&svc.id, index, fe.family()))
                .or_insert_with(|| {
                    endpoints_for(svc, sp, groups_of(cluster, &svc.id), node, fe.family())
                });
            let local_policy = if kind.is_external() {
                svc.external_traffic_policy.is_local()
            } else {
                svc.internal_traffic_policy.is_local()
            };
            state.frontends.insert(
                fe,
                FrontendState {
                    service: svc.id.clone(),
                    port_name: sp.name.clone(),
                    kind,
                    local_policy,
                    backends: sets.backends.clone(),
                    local_backends: sets.local_backends.clone(),
                    terminating: sets.terminating.clone(),
                    affinity_timeout: svc.affinity_timeout(),
                    source_ranges: if kind == FrontendKind::LoadBalancer {
                        node_traffic::source_ranges(svc, node, fe.family())
                    } else {
                        Vec::new()
                    },
                },
            );
            continue;
        }
        if owner.svc.id == claim.svc.id && owner.kind == claim.kind {
            // The same address listed twice by one Service: nothing is lost.
            continue;
        }
        if owner.svc.id != claim.svc.id {
            lost.insert(&claim.svc.id);
        }
        let conflict = AddressConflict {
            frontend: claim.fe,
            kind: claim.kind,
            owner: owner.svc.id.clone(),
            owner_kind: owner.kind,
            why: precedence(owner, claim, incumbents).1,
        };
        problems.push(ComputeProblem {
            kind: "Service",
            service: claim.svc.id.clone(),
            reason: conflict_reason(claim.sp, &conflict),
            conflict: Some(conflict),
        });
    }

    let served: BTreeSet<&ObjectRef> = state.frontends.values().map(|f| &f.service).collect();
    for svc in cluster.services.values() {
        let reason = match svc.kind {
            ServiceKind::ExternalName => UnservedReason::ExternalName,
            ServiceKind::Headless => UnservedReason::Headless,
            _ if svc.proxy_name_label.is_some() => UnservedReason::OtherProxy,
            _ if served.contains(&svc.id) => continue,
            _ if svc.ports.is_empty() => UnservedReason::NoPorts,
            _ if lost.contains(&svc.id) => UnservedReason::AddressTaken,
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
                    kind: "Service",
                    service: svc.id.clone(),
                    reason: format!(
                        "healthCheckNodePort {port} skipped: already used by Service {}",
                        e.get()
                    ),
                    conflict: None,
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
    state.cluster_ips = service_cidrs::cluster_ips(cluster, node, &mut problems);
    state.service_cidrs = service_cidrs::service_cidrs(cluster, node, &mut problems);
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
        let sets = endpoints_for(
            svc,
            sp,
            groups_of(cluster, &svc.id),
            node,
            frontend.family(),
        );
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

fn groups_of<'a>(cluster: &'a Cluster, id: &ObjectRef) -> &'a [Arc<EndpointGroup>] {
    cluster
        .endpoints
        .get(id)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The precedence of two claims on one frontend: `Less` when `a` keeps it, and the rule
/// that decided (see [`compute_with_incumbents`], "Conflicts"). A total order: the
/// Service-level keys are compared lexicographically, and claims of one Service by their
/// listing order.
fn precedence(a: &Claim, b: &Claim, incumbents: &Incumbents) -> (Ordering, Precedence) {
    let rank = |k: FrontendKind| match k {
        FrontendKind::ClusterIp => 0,
        FrontendKind::ExternalIp | FrontendKind::LoadBalancer => 1,
        FrontendKind::NodePort => 2,
    };
    let by_rank = rank(a.kind).cmp(&rank(b.kind));
    if by_rank != Ordering::Equal {
        return (by_rank, Precedence::Rank);
    }
    if a.svc.id == b.svc.id {
        return (a.order.cmp(&b.order), Precedence::ListedFirst);
    }
    let incumbent = incumbents.get(&a.fe);
    let is_incumbent = |c: &Claim| incumbent == Some(&c.svc.id);
    // `true` sorts after `false`: the incumbent first.
    let by_incumbent = (!is_incumbent(a)).cmp(&!is_incumbent(b));
    if by_incumbent != Ordering::Equal {
        return (by_incumbent, Precedence::Incumbent);
    }
    // A missing timestamp or uid sorts last (unknown age: newest).
    let by_age =
        (a.svc.created.is_none(), a.svc.created).cmp(&(b.svc.created.is_none(), b.svc.created));
    if by_age != Ordering::Equal {
        return (by_age, Precedence::Older);
    }
    let by_uid = (a.svc.uid.is_none(), &a.svc.uid).cmp(&(b.svc.uid.is_none(), &b.svc.uid));
    if by_uid != Ordering::Equal {
        return (by_uid, Precedence::SmallerUid);
    }
    (a.svc.id.cmp(&b.svc.id), Precedence::Name)
}

/// `port "http" (ClusterIP 10.96.0.10:80/TCP) skipped: Service default/echo (ClusterIP)
/// keeps it: it serves it already`: the loser's port, kind and address, the owner and its
/// kind, and the rule that decided.
fn conflict_reason(sp: &ServicePort, c: &AddressConflict) -> String {
    format!(
        "port {} ({} {}) skipped: Service {} ({}) keeps it: {}",
        port_label(sp),
        c.kind.title(),
        c.frontend,
        c.owner,
        c.owner_kind.title(),
        c.why.describe(c.owner_kind, c.kind)
    )
}

fn port_label(sp: &ServicePort) -> String {
    if sp.name.is_empty() {
        format!("{}/{}", sp.port, sp.protocol)
    } else {
        format!("{:?}", sp.name)
    }
}

/// Ready (and serving, which ready implies in the API).
fn is_ready(e: &Endpoint) -> bool {
    e.ready && e.serving
}

/// kube-proxy's endpoint choice for a set of candidates: the ready ones; if there is none,
/// the serving and terminating ones; never a not-serving one.
fn usable<'a>(candidates: &[&'a (&'a Endpoint, u16)]) -> Vec<&'a (&'a Endpoint, u16)> {
    let ready: Vec<_> = candidates
        .iter()
        .copied()
        .filter(|(e, _)| is_ready(e))
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
        .map(|(e, port)| BackendAddr {
            addr: e.address,
            port: *port,
            proto,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The cluster, local and terminating endpoint sets of one service port (see [`compute_with_incumbents`]).
/// Why an SCTP service port gets no NodePort (None: it gets one). SCTP is translated by
/// address only (svc-ebpf/src/sctp.rs), and a NodePort frontend at `nodePort` needs its
/// port changed to the targetPort, except where the two are the same number.
fn sctp_node_port_refused(sp: &ServicePort, node_port: u16) -> Option<String> {
    if sp.protocol != Protocol::Sctp || sp.target_port == TargetPort::Number(node_port) {
        return None;
    }
    Some(format!(
        "port {}: NodePort {node_port}/SCTP skipped: SCTP is translated by address only, and \
         the nodePort differs from the targetPort ({}); the ClusterIP, externalIPs and \
         LoadBalancer IPs are served",
        port_label(sp),
        sp.target_port
    ))
}

/// `family`: the frontends' family; only its endpoints are candidates (kube-proxy's proxier
/// of a family sees only that family's EndpointSlices). Topology is decided on them alone.
fn endpoints_for(
    svc: &Service,
    sp: &ServicePort,
    groups: &[Arc<EndpointGroup>],
    node: &NodeContext,
    family: Family,
) -> PortEndpoints {
    // (endpoint, resolved backend port) over every group that has the service port. SCTP
    // is translated by address only: an endpoint whose (named) targetPort resolves to
    // another port than the Service port cannot be reached, and is left out.
    let candidates: Vec<(&Endpoint, u16)> = groups
        .iter()
        .filter_map(|g| {
            g.ports
                .iter()
                .find(|p| p.name == sp.name && p.protocol == sp.protocol)
                .map(|p| (g, p.port))
        })
        .filter(|(_, port)| {
            let kept = sp.protocol != Protocol::Sctp || *port == sp.port;
            if !kept {
                tracing::debug!(
                    service = %svc.id,
                    port = %port_label(sp),
                    endpoint_port = port,
                    "SCTP endpoints on another port than the Service's left out (translated by address only)"
                );
            }
            kept
        })
        .flat_map(|(g, port)| g.endpoints.iter().map(move |e| (e, port)))
        .filter(|(e, _)| Family::of(e.address) == family)
        .collect();
    let all: Vec<&(&Endpoint, u16)> = candidates.iter().collect();
    let local: Vec<&(&Endpoint, u16)> = candidates
        .iter()
        .filter(|(e, _)| node.is_local(e))
        .collect();
    let topology = topology::decide(
        candidates.iter().map(|(e, _)| *e).filter(|e| is_ready(e)),
        node,
    );
    let cluster = match topology {
        Topology::All { ignored } => {
            if let Some(why) = ignored {
                tracing::debug!(
                    service = %svc.id,
                    port = %port_label(sp),
                    traffic_distribution = ?svc.traffic_distribution,
                    why,
                    "topology hints ignored: all endpoints"
                );
            }
            usable(&all)
        }
        // At least one ready endpoint is available (decide says so): no fallback needed.
        _ => all
            .iter()
            .copied()
            .filter(|(e, _)| is_ready(e) && topology::available(e, topology, node))
            .collect(),
    };
    let backends = to_backends(&cluster, sp.protocol);
    let local_backends = to_backends(&usable(&local), sp.protocol);
    // Terminating ones, and the ready ones topology left out (without topology, every
    // ready one is in `backends` already).
    let kept_eps: Vec<&(&Endpoint, u16)> = candidates
        .iter()
        .filter(|(e, _)| e.terminating || is_ready(e))
        .collect();
    let terminating = to_backends(&kept_eps, sp.protocol)
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
/// endpoints by slice port, so a port-less slice contributes nothing). Counted per family
/// and the larger count taken: a dual-stack pod has an address in each family and is one
/// endpoint (kube-proxy's proxiers share one health server, each reporting its family's
/// count; either family's count of a dual-stack Service is the number of pods).
fn local_ready_endpoints(groups: &[Arc<EndpointGroup>], node: &NodeContext) -> usize {
    let local: BTreeSet<IpAddr> = groups
        .iter()
        .filter(|g| !g.ports.is_empty())
        .flat_map(|g| g.endpoints.iter())
        .filter(|e| e.ready && node.is_local(e))
        .map(|e| e.address)
        .collect();
    Family::ALL
        .iter()
        .map(|f| local.iter().filter(|a| Family::of(**a) == *f).count())
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
