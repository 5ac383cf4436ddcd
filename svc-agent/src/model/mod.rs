//! The typed, validated model of the cluster objects the dataplane cares about.
//!
//! Every source (the manifest directory and the Kubernetes watches) converts the
//! k8s-openapi objects it receives with [`Service::from_k8s`], [`endpoint_group_from_slice`]
//! and [`endpoint_groups_from_endpoints`], and assembles them with [`Cluster::assemble`] (the
//! watches keep theirs up to date object by object), reporting what it skipped as
//! [`Problem`]s.
//! [`crate::desired::compute`] then works on this model only; nothing here knows about BPF
//! maps.
//!
//! Conversions reject an object that the API server would reject (or that cannot be
//! interpreted) with an [`InvalidObject`] whose message names the offending field, and return
//! non-fatal warnings (e.g. an SCTP port whose targetPort differs from its port, which the
//! datapath cannot translate, is dropped while the Service's other ports are kept)
//! alongside the converted object.
//!
//! What each Service field means for the dataplane is described in
//! `/work/shared/notes/service-semantics.md` (the behaviour of kube-proxy); the field
//! documentation of [`Service`] says which part of that note it implements and which
//! choices were made where the note is silent.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::discovery::v1 as discoveryv1;
use k8s_openapi::api::networking::v1 as networkingv1;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub use crate::addr::{CidrError, Family, IpCidr, Ipv4Cidr};
pub use topology::{EndpointHints, TrafficDistribution};

mod topology;

/// Label that hands a Service to another proxy; such Services get no dataplane state.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// Label linking an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Something in a source's input that was skipped (or partly skipped), and why: what
/// every source reports for an object it could not use (the object itself, or part of
/// it), by name, so the rest is served.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Problem {
    /// Where: `dir/file.yaml#3` (3rd document), `dir/file.yaml#1.items[2]` inside a List,
    /// just the file name for a file-level problem, or `api` for an object of the
    /// Kubernetes API.
    pub source: String,
    /// What: `Service default/foo`, or just the kind when the object has no name.
    pub object: Option<String>,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)?;
        if let Some(object) = &self.object {
            write!(f, " {object}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// Why an object cannot be used. The Display text is the precise reason shown to users.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidObject {
    #[error("missing metadata.name")]
    MissingName,
    /// A required field is absent, e.g. `spec` or `spec.ports`.
    #[error("missing {0}")]
    Missing(String),
    #[error("{field} {value} is out of range 1-65535")]
    PortOutOfRange { field: String, value: i64 },
    #[error("{field} {value:?} is not an IP address")]
    NotAnIp { field: String, value: String },
    #[error("{field} {value:?} is not an IPv4 address")]
    NotAnIpv4 { field: String, value: String },
    #[error("{field} {value:?} is not an IPv6 address")]
    NotAnIpv6 { field: String, value: String },
    /// A number outside the range the API server accepts, e.g. a session affinity timeout.
    #[error("{field} {value} is out of range {min}-{max}")]
    OutOfRange {
        field: String,
        value: i64,
        min: i64,
        max: i64,
    },
    #[error("{field} {value:?} is not a CIDR")]
    NotACidr { field: String, value: String },
    /// An enumerated field with a value the API server does not accept; `allowed` lists the
    /// accepted values, e.g. `Cluster or Local`.
    #[error("{field} {value:?} is not {allowed}")]
    NotOneOf {
        field: String,
        value: String,
        allowed: &'static str,
    },
    #[error("{field} {value:?} is not TCP, UDP or SCTP")]
    BadProtocol { field: String, value: String },
    #[error("spec.type {0:?} is not ClusterIP, NodePort, LoadBalancer or ExternalName")]
    BadServiceType(String),
    #[error("addressType {0:?} is not IPv4, IPv6 or FQDN")]
    BadAddressType(String),
    #[error("EndpointSlice has no kubernetes.io/service-name label")]
    NoServiceNameLabel,
    /// Any other rule the API server enforces: `field: reason`.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> InvalidObject {
    InvalidObject::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Transport protocol of a service port (svc-common's word). SCTP is translated by address
/// only (its CRC32c covers no IP header): a Service's SCTP port is served only when its
/// targetPort is its port (a number that differs drops the port with a warning; a named
/// one is resolved per endpoint, and endpoints on another port are left out, see
/// [`crate::desired`]), and never on a NodePort.
pub use crate::addr::Protocol;
pub use crate::lbipam::object::LbRequest;

/// `protocol` defaults to TCP when unset, as in Kubernetes.
fn parse_protocol(value: Option<&str>, field: &str) -> Result<Protocol, InvalidObject> {
    match value {
        None | Some("TCP") => Ok(Protocol::Tcp),
        Some("UDP") => Ok(Protocol::Udp),
        Some("SCTP") => Ok(Protocol::Sctp),
        Some(other) => Err(InvalidObject::BadProtocol {
            field: field.into(),
            value: other.into(),
        }),
    }
}

fn parse_port(value: i64, field: &str) -> Result<u16, InvalidObject> {
    match u16::try_from(value) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(InvalidObject::PortOutOfRange {
            field: field.into(),
            value,
        }),
    }
}

/// Namespace and name of an object. Ordered by namespace, then name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectRef {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The object's namespace/name; the namespace defaults to `default` when absent or
    /// empty (as kubectl does). Fails when `metadata.name` is absent or empty.
    pub fn from_meta(meta: &ObjectMeta) -> Result<Self, InvalidObject> {
        let name = meta
            .name
            .as_deref()
            .filter(|n| !n.is_empty())
            .ok_or(InvalidObject::MissingName)?;
        Ok(ObjectRef::new(namespace_of(meta), name))
    }
}

/// `metadata.namespace`, or `default` when absent or empty.
pub fn namespace_of(meta: &ObjectMeta) -> &str {
    meta.namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or("default")
}

impl fmt::Display for ObjectRef {
    /// `namespace/name`; a cluster-scoped object (an empty namespace, e.g. a ServiceCIDR)
    /// is just `name`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// What a Service is, as far as the dataplane is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServiceKind {
    ClusterIp,
    NodePort,
    LoadBalancer,
    /// A DNS CNAME: no dataplane state.
    ExternalName,
    /// `clusterIP: None`: no dataplane state.
    Headless,
}

impl fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServiceKind::ClusterIp => "ClusterIP",
            ServiceKind::NodePort => "NodePort",
            ServiceKind::LoadBalancer => "LoadBalancer",
            ServiceKind::ExternalName => "ExternalName",
            ServiceKind::Headless => "Headless",
        })
    }
}

/// `targetPort` of a service port. Informational: the EndpointSlice controller resolves it
/// per pod into the slice's port, which is what backends use.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

impl fmt::Display for TargetPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetPort::Number(n) => write!(f, "{n}"),
            TargetPort::Name(s) => f.write_str(s),
        }
    }
}

/// `spec.externalTrafficPolicy` / `spec.internalTrafficPolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TrafficPolicy {
    /// All of the Service's endpoints (the Kubernetes default for both policies).
    #[default]
    Cluster,
    /// Only the endpoints on the node that received the traffic.
    Local,
}

impl TrafficPolicy {
    pub fn is_local(self) -> bool {
        self == TrafficPolicy::Local
    }
}

impl fmt::Display for TrafficPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrafficPolicy::Cluster => "Cluster",
            TrafficPolicy::Local => "Local",
        })
    }
}

/// Reads a traffic policy field. Unset (or `""`, which is what an unset Go string
/// serializes to in some tools) is Cluster, the API default. `legacy_global` accepts
/// `Global`, the pre-1.23 spelling of Cluster for externalTrafficPolicy, as Cluster.
fn parse_traffic_policy(
    value: Option<&str>,
    field: &str,
    legacy_global: bool,
) -> Result<TrafficPolicy, InvalidObject> {
    match value {
        None | Some("") | Some("Cluster") => Ok(TrafficPolicy::Cluster),
        Some("Global") if legacy_global => Ok(TrafficPolicy::Cluster),
        Some("Local") => Ok(TrafficPolicy::Local),
        Some(other) => Err(InvalidObject::NotOneOf {
            field: field.into(),
            value: other.into(),
            allowed: "Cluster or Local",
        }),
    }
}

/// `status.loadBalancer.ingress[].ipMode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum IpMode {
    /// Traffic arrives with the load balancer IP as destination: the node must answer on it
    /// (the default when unset).
    #[default]
    Vip,
    /// The load balancer proxies to the node (destination rewritten): the node must NOT
    /// capture the IP, or in-cluster clients would bypass the load balancer.
    Proxy,
}

/// One `status.loadBalancer.ingress[]` entry with an IP address (either family) or a
/// hostname only.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LoadBalancerIngress {
    /// `None` for a hostname-only entry (e.g. AWS ELB), which gets no dataplane entry.
    pub ip: Option<IpAddr>,
    pub hostname: Option<String>,
    pub ip_mode: IpMode,
}

/// `spec.sessionAffinity` with its `sessionAffinityConfig`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SessionAffinity {
    #[default]
    None,
    /// Keep a client IP on one backend for `timeout_seconds` after its last packet.
    ClientIp { timeout_seconds: u32 },
}

impl SessionAffinity {
    /// Default of `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
    pub const DEFAULT_TIMEOUT_SECONDS: u32 = 10800;
    /// Largest timeout the API server accepts (1 day).
    pub const MAX_TIMEOUT_SECONDS: u32 = 86400;

    /// The ClientIP timeout, `None` without affinity.
    pub fn timeout(self) -> Option<u32> {
        match self {
            SessionAffinity::None => None,
            SessionAffinity::ClientIp { timeout_seconds } => Some(timeout_seconds),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServicePort {
    /// `""` when unset (only allowed on single-port Services).
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
    pub target_port: TargetPort,
    /// `None` when unset or 0 (0 asks the API server to allocate one). Any 1-65535 is
    /// accepted: the 30000-32767 default range is an API server flag, not an API rule.
    /// Used for NodePort and LoadBalancer Services only; a value present in the manifest is
    /// used even with `allocateLoadBalancerNodePorts: false` (that flag only stops the API
    /// server from allocating one, an explicit nodePort is still honoured by kube-proxy).
    pub node_port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub id: ObjectRef,
    /// `metadata.creationTimestamp`: set by the API server, usually absent in manifests.
    /// Decides who keeps an address two Services claim at the same rank (the older one;
    /// see [`crate::desired::compute_with_incumbents`], "Conflicts").
    pub created: Option<jiff::Timestamp>,
    /// `metadata.uid` (set by the API server; the tie-break after `created`).
    pub uid: Option<String>,
    /// The addresses of `spec.clusterIPs` (or `spec.clusterIP` when clusterIPs is unset),
    /// of both families, in their order (the API server lists them in `spec.ipFamilies`
    /// order and allocated them: the agent never allocates one). Empty for headless and
    /// ExternalName Services. Each family's addresses get that family's endpoints only.
    pub cluster_ips: Vec<IpAddr>,
    pub kind: ServiceKind,
    /// Ports the datapath can serve (an SCTP port whose targetPort is another number is
    /// dropped with a warning).
    pub ports: Vec<ServicePort>,
    /// Value of the `service.kubernetes.io/service-proxy-name` label: another proxy owns
    /// this Service, it is kept for display but gets no dataplane state.
    pub proxy_name_label: Option<String>,
    /// `spec.externalTrafficPolicy` (legacy `Global` = Cluster). Applies to NodePort,
    /// externalIP and LoadBalancer addresses (semantics note, "Traffic policies").
    /// Accepted on any type (the API server only allows it on externally reachable
    /// Services): it has no effect where there is no external address.
    pub external_traffic_policy: TrafficPolicy,
    /// `spec.internalTrafficPolicy`. Applies to ClusterIP addresses only.
    pub internal_traffic_policy: TrafficPolicy,
    /// The addresses of `spec.externalIPs` (both families), deduplicated, in manifest
    /// order. Served for every proxied type, as kube-proxy does.
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress` entries with an IP (either family) or only a hostname,
    /// deduplicated. Only type LoadBalancer uses them, and only the entries with an IP and
    /// `ipMode` VIP.
    pub load_balancer_ingress: Vec<LoadBalancerIngress>,
    /// The CIDRs of `spec.loadBalancerSourceRanges` (both families; whitespace around
    /// entries tolerated), deduplicated. Empty: every source. Applies to LoadBalancer
    /// addresses only (not NodePort, not externalIPs), per family as kube-proxy's
    /// proxiers filter them: a family without a range of its own accepts every source.
    pub load_balancer_source_ranges: Vec<IpCidr>,
    /// `spec.sessionAffinity` with its timeout (default 10800 s, valid 1-86400).
    pub session_affinity: SessionAffinity,
    /// `spec.healthCheckNodePort` (`None` when unset or 0). kube-proxy serves it only for a
    /// LoadBalancer Service with externalTrafficPolicy Local (a warning says so otherwise).
    pub health_check_node_port: Option<u16>,
    /// `spec.allocateLoadBalancerNodePorts` (default true). Informational: it only tells the
    /// API server whether to allocate node ports; explicit `nodePort`s are used either way.
    pub allocate_load_balancer_node_ports: bool,
    /// `spec.trafficDistribution` (an unknown value: `None`, with a warning). Informational,
    /// as in kube-proxy: the EndpointSlice controller turns it into the endpoints' hints,
    /// and the dataplane follows the hints ([`crate::desired::compute_with_incumbents`], "Topology").
    pub traffic_distribution: Option<TrafficDistribution>,
    /// What the Service asks of the LoadBalancer address pools ([`crate::lbipam`]).
    pub lb_request: LbRequest,
}

/// Checks an IANA service name as Kubernetes does for a named targetPort: 1-15 lowercase
/// alphanumerics or '-', at least one letter, no leading/trailing or double '-'.
fn is_iana_svc_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

impl Service {
    /// Converts and validates a k8s Service. Returns the Service and warnings about parts
    /// that were dropped (SCTP ports with another targetPort, a missing cluster IP).
    pub fn from_k8s(svc: &corev1::Service) -> Result<(Service, Vec<String>), InvalidObject> {
        let id = ObjectRef::from_meta(&svc.metadata)?;
        let mut warnings = Vec::new();
        let spec = svc
            .spec
            .as_ref()
            .ok_or_else(|| InvalidObject::Missing("spec".into()))?;
        let proxy_name_label = svc
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_PROXY_NAME_LABEL))
            .cloned();

        let mut kind = match spec.type_.as_deref() {
            None | Some("ClusterIP") => ServiceKind::ClusterIp,
            Some("NodePort") => ServiceKind::NodePort,
            Some("LoadBalancer") => ServiceKind::LoadBalancer,
            Some("ExternalName") => ServiceKind::ExternalName,
            Some(other) => return Err(InvalidObject::BadServiceType(other.into())),
        };

        // clusterIPs, when set, is authoritative (its first entry equals clusterIP).
        let (field, ips): (&str, Vec<&str>) = match &spec.cluster_ips {
            Some(list) if !list.is_empty() => {
                if let Some(single) = spec
                    .cluster_ip
                    .as_deref()
                    .filter(|s| !s.is_empty() && *s != list[0])
                {
                    return Err(invalid(
                        "spec.clusterIPs[0]",
                        format!("{:?} must equal spec.clusterIP {single:?}", list[0]),
                    ));
                }
                ("spec.clusterIPs", list.iter().map(String::as_str).collect())
            }
            _ => (
                "spec.clusterIP",
                spec.cluster_ip
                    .iter()
                    .map(String::as_str)
                    .filter(|s| !s.is_empty())
                    .collect(),
            ),
        };
        let mut cluster_ips = Vec::new();
        if ips.contains(&"None") {
            if ips.len() != 1 {
                return Err(invalid(field, "\"None\" must be the only value"));
            }
            match kind {
                ServiceKind::ClusterIp => kind = ServiceKind::Headless,
                ServiceKind::ExternalName => {}
                other => {
                    return Err(invalid(
                        "spec.clusterIP",
                        format!("\"None\" (headless) is not allowed for type {other}"),
                    ));
                }
            }
        } else if kind != ServiceKind::ExternalName {
            for (i, s) in ips.iter().enumerate() {
                let f = if field == "spec.clusterIPs" {
                    format!("{field}[{i}]")
                } else {
                    field.to_string()
                };
                match s.parse::<IpAddr>() {
                    Ok(ip) => {
                        if !cluster_ips.contains(&ip) {
                            cluster_ips.push(ip)
                        }
                    }
                    Err(_) => {
                        return Err(InvalidObject::NotAnIp {
                            field: f,
                            value: s.to_string(),
                        });
                    }
                }
            }
            if cluster_ips.is_empty() {
                warnings.push(
                    "spec.clusterIP is not set (nothing allocates one outside a cluster): no ClusterIP frontends"
                        .to_string(),
                );
            }
        }

        let k8s_ports = spec.ports.as_deref().unwrap_or_default();
        if k8s_ports.is_empty()
            && !matches!(kind, ServiceKind::ExternalName | ServiceKind::Headless)
        {
            return Err(InvalidObject::Missing("spec.ports".into()));
        }
        let mut ports = Vec::new();
        let mut names = BTreeSet::new();
        let mut port_protos = BTreeSet::new();
        for (i, p) in k8s_ports.iter().enumerate() {
            let name = p.name.clone().unwrap_or_default();
            if name.is_empty() && k8s_ports.len() > 1 {
                return Err(invalid(
                    format!("spec.ports[{i}].name"),
                    "required when a Service has more than one port",
                ));
            }
            if !names.insert(name.clone()) {
                return Err(invalid(
                    format!("spec.ports[{i}].name"),
                    format!("{name:?} is duplicated"),
                ));
            }
            let port = parse_port(p.port.into(), &format!("spec.ports[{i}].port"))?;
            let protocol =
                parse_protocol(p.protocol.as_deref(), &format!("spec.ports[{i}].protocol"))?;
            let target_port = match &p.target_port {
                None => TargetPort::Number(port),
                Some(IntOrString::Int(n)) => TargetPort::Number(parse_port(
                    (*n).into(),
                    &format!("spec.ports[{i}].targetPort"),
                )?),
                Some(IntOrString::String(s)) => {
                    if !is_iana_svc_name(s) {
                        return Err(invalid(
                            format!("spec.ports[{i}].targetPort"),
                            format!("{s:?} is neither a port number nor a valid port name"),
                        ));
                    }
                    TargetPort::Name(s.clone())
                }
            };
            let node_port = match p.node_port {
                None | Some(0) => None,
                Some(n) => Some(parse_port(n.into(), &format!("spec.ports[{i}].nodePort"))?),
            };
            if protocol == Protocol::Sctp
                && let TargetPort::Number(target) = &target_port
                && *target != port
            {
                warnings.push(format!(
                    "spec.ports[{i}] ({}{port}/SCTP) skipped: targetPort {target} differs from \
                     port, and SCTP is translated by address only (its CRC32c would need \
                     recomputing for a port change)",
                    if name.is_empty() {
                        String::new()
                    } else {
                        format!("{name:?} ")
                    }
                ));
                continue;
            }
            if !port_protos.insert((port, protocol)) {
                return Err(invalid(
                    format!("spec.ports[{i}]"),
                    format!("duplicate port {port}/{protocol}"),
                ));
            }
            ports.push(ServicePort {
                name,
                port,
                protocol,
                target_port,
                node_port,
            });
        }

        let external_traffic_policy = parse_traffic_policy(
            spec.external_traffic_policy.as_deref(),
            "spec.externalTrafficPolicy",
            true,
        )?;
        let internal_traffic_policy = parse_traffic_policy(
            spec.internal_traffic_policy.as_deref(),
            "spec.internalTrafficPolicy",
            false,
        )?;
        let external_ips = parse_external_ips(spec)?;
        let load_balancer_ingress = parse_lb_ingress(svc.status.as_ref())?;
        let lb_request = LbRequest::from_k8s(svc, &cluster_ips, &mut warnings);
        // The families the Service's load balancer addresses may have (its ClusterIPs say
        // which families it has, its ingress IPs which ones it got).
        let families: BTreeSet<Family> = cluster_ips
            .iter()
            .copied()
            .chain(load_balancer_ingress.iter().filter_map(|i| i.ip))
            .map(Family::of)
            .collect();
        let load_balancer_source_ranges =
            parse_source_ranges(spec, kind, &families, &mut warnings)?;
        let session_affinity = parse_session_affinity(spec, &mut warnings)?;
        let traffic_distribution = topology::parse_traffic_distribution(spec, &mut warnings);
        let health_check_node_port = match spec.health_check_node_port {
            None | Some(0) => None,
            Some(n) => Some(parse_port(n.into(), "spec.healthCheckNodePort")?),
        };
        let needs_health_check =
            kind == ServiceKind::LoadBalancer && external_traffic_policy.is_local();
        if health_check_node_port.is_some() && !needs_health_check {
            warnings.push(
                "spec.healthCheckNodePort ignored: it is only served for type LoadBalancer with externalTrafficPolicy Local"
                    .to_string(),
            );
        }
        if needs_health_check && health_check_node_port.is_none() {
            warnings.push(
                "spec.healthCheckNodePort is not set (the API server allocates it): no health check is served for externalTrafficPolicy Local"
                    .to_string(),
            );
        }

        Ok((
            Service {
                id,
                created: svc.metadata.creation_timestamp.as_ref().map(|t| t.0),
                uid: svc.metadata.uid.clone().filter(|u| !u.is_empty()),
                cluster_ips,
                kind,
                ports,
                proxy_name_label,
                external_traffic_policy,
                internal_traffic_policy,
                external_ips,
                load_balancer_ingress,
                load_balancer_source_ranges,
                session_affinity,
                health_check_node_port,
                allocate_load_balancer_node_ports: spec
                    .allocate_load_balancer_node_ports
                    .unwrap_or(true),
                traffic_distribution,
                lb_request,
            },
            warnings,
        ))
    }

    /// The ClientIP affinity timeout, `None` without session affinity.
    pub fn affinity_timeout(&self) -> Option<u32> {
        self.session_affinity.timeout()
    }

    /// Whether this Service gets dataplane state (ClusterIP, NodePort or LoadBalancer, not
    /// owned by another proxy).
    pub fn is_proxied(&self) -> bool {
        self.proxy_name_label.is_none()
            && matches!(
                self.kind,
                ServiceKind::ClusterIp | ServiceKind::NodePort | ServiceKind::LoadBalancer
            )
    }
}

/// `spec.externalIPs`: addresses of both families kept (deduplicated), anything else
/// rejected. No whitespace tolerance: the API server validates these strictly.
fn parse_external_ips(spec: &corev1::ServiceSpec) -> Result<Vec<IpAddr>, InvalidObject> {
    let mut ips = Vec::new();
    for (i, s) in spec
        .external_ips
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let field = format!("spec.externalIPs[{i}]");
        match s.parse::<IpAddr>() {
            Ok(ip) => {
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
            Err(_) => {
                return Err(InvalidObject::NotAnIp {
                    field,
                    value: s.clone(),
                });
            }
        }
    }
    Ok(ips)
}

/// `status.loadBalancer.ingress`. `ipMode` must be VIP or Proxy (unset = VIP); an IP must be
/// an IP address (either family); an entry with neither IP nor
/// hostname is dropped silently (nothing to serve nor to show).
fn parse_lb_ingress(
    status: Option<&corev1::ServiceStatus>,
) -> Result<Vec<LoadBalancerIngress>, InvalidObject> {
    let entries = status
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or_default();
    let mut out: Vec<LoadBalancerIngress> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let ip_mode = match e.ip_mode.as_deref() {
            None | Some("") | Some("VIP") => IpMode::Vip,
            Some("Proxy") => IpMode::Proxy,
            Some(other) => {
                return Err(InvalidObject::NotOneOf {
                    field: format!("status.loadBalancer.ingress[{i}].ipMode"),
                    value: other.into(),
                    allowed: "VIP or Proxy",
                });
            }
        };
        let hostname = e.hostname.clone().filter(|h| !h.is_empty());
        let ip = match e.ip.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => match s.parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    return Err(InvalidObject::NotAnIp {
                        field: format!("status.loadBalancer.ingress[{i}].ip"),
                        value: s.into(),
                    });
                }
            },
        };
        if ip.is_none() && hostname.is_none() {
            continue;
        }
        let entry = LoadBalancerIngress {
            ip,
            hostname,
            ip_mode,
        };
        if !out.contains(&entry) {
            out.push(entry);
        }
    }
    Ok(out)
}

/// `spec.loadBalancerSourceRanges`: each entry is trimmed (the API server and kube-proxy
/// both `TrimSpace` it; the semantics note asks to tolerate whitespace), then must be a
/// CIDR of either family. As in kube-proxy, whose proxiers filter the ranges by IP family,
/// a list without a range of one family leaves that family's load balancer addresses
/// unrestricted (see [`crate::desired`]); a warning says so for a dual-stack Service. On a type other than LoadBalancer the ranges have no effect (the API
/// server forbids them there): they are validated, kept, and a warning says they are unused.
/// `families`: those of the Service's addresses, for the warning.
fn parse_source_ranges(
    spec: &corev1::ServiceSpec,
    kind: ServiceKind,
    families: &BTreeSet<Family>,
    warnings: &mut Vec<String>,
) -> Result<Vec<IpCidr>, InvalidObject> {
    let raw = spec
        .load_balancer_source_ranges
        .as_deref()
        .unwrap_or_default();
    let mut ranges = Vec::new();
    for (i, s) in raw.iter().enumerate() {
        let field = format!("spec.loadBalancerSourceRanges[{i}]");
        match s.trim().parse::<IpCidr>() {
            Ok(c) => {
                if !ranges.contains(&c) {
                    ranges.push(c);
                }
            }
            Err(_) => {
                return Err(InvalidObject::NotACidr {
                    field,
                    value: s.clone(),
                });
            }
        }
    }
    if !raw.is_empty() && kind != ServiceKind::LoadBalancer {
        warnings.push(format!(
            "spec.loadBalancerSourceRanges has no effect on a {kind} Service (LoadBalancer addresses only)"
        ));
    } else if !raw.is_empty() {
        for family in families {
            if !ranges.iter().any(|r| r.family() == *family) {
                warnings.push(format!(
                    "spec.loadBalancerSourceRanges has no {family} range: {family} load balancer addresses accept every source (as with kube-proxy)"
                ));
            }
        }
    }
    Ok(ranges)
}

/// `spec.sessionAffinity` (`None` | `ClientIP`, unset = None) and, for ClientIP,
/// `spec.sessionAffinityConfig.clientIP.timeoutSeconds` (unset = 10800, valid 1-86400, as
/// the API server validates). A config given with affinity None is ignored with a warning.
fn parse_session_affinity(
    spec: &corev1::ServiceSpec,
    warnings: &mut Vec<String>,
) -> Result<SessionAffinity, InvalidObject> {
    let timeout = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds);
    match spec.session_affinity.as_deref() {
        None | Some("") | Some("None") => {
            if timeout.is_some() {
                warnings.push(
                    "spec.sessionAffinityConfig ignored: spec.sessionAffinity is not ClientIP"
                        .to_string(),
                );
            }
            Ok(SessionAffinity::None)
        }
        Some("ClientIP") => {
            let timeout_seconds = match timeout {
                None => SessionAffinity::DEFAULT_TIMEOUT_SECONDS,
                Some(t) => u32::try_from(t)
                    .ok()
                    .filter(|t| (1..=SessionAffinity::MAX_TIMEOUT_SECONDS).contains(t))
                    .ok_or(InvalidObject::OutOfRange {
                        field: "spec.sessionAffinityConfig.clientIP.timeoutSeconds".into(),
                        value: t.into(),
                        min: 1,
                        max: SessionAffinity::MAX_TIMEOUT_SECONDS.into(),
                    })?,
            };
            Ok(SessionAffinity::ClientIp { timeout_seconds })
        }
        Some(other) => Err(InvalidObject::NotOneOf {
            field: "spec.sessionAffinity".into(),
            value: other.into(),
            allowed: "None or ClientIP",
        }),
    }
}

/// A port of an endpoint group: the port the backends listen on, already resolved from the
/// Service's targetPort by the EndpointSlice controller. `name` matches the service port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EndpointPort {
    /// `""` when unset.
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The endpoint's address: an EndpointSlice endpoint's first `addresses` entry, as
    /// kube-proxy takes (the API calls them fungible; the others are checked, not used).
    /// Of the slice's addressType's family.
    pub address: IpAddr,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// The node the endpoint runs on (EndpointSlice `nodeName`, legacy Endpoints
    /// `addresses[].nodeName`). An endpoint is local when this equals the agent's node name;
    /// `None` is never local.
    pub node_name: Option<String>,
    /// The endpoint's zone (EndpointSlice `zone`; `None` when unset or empty, and for
    /// legacy Endpoints). Informational: the EndpointSlice controller derives the hints
    /// from it; the dataplane reads the hints, as kube-proxy does.
    pub zone: Option<String>,
    /// EndpointSlice `hints` (forZones, forNodes); empty for legacy Endpoints.
    pub hints: EndpointHints,
}

/// One EndpointSlice (addressType IPv4 or IPv6) or one subset of a legacy Endpoints object: a set
/// of endpoints that all expose the same ports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointGroup {
    pub ports: Vec<EndpointPort>,
    pub endpoints: Vec<Endpoint>,
}

/// The Service an EndpointSlice belongs to (its `kubernetes.io/service-name` label, in the
/// slice's namespace).
pub fn slice_service(slice: &discoveryv1::EndpointSlice) -> Result<ObjectRef, InvalidObject> {
    let name = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .filter(|n| !n.is_empty())
        .ok_or(InvalidObject::NoServiceNameLabel)?;
    Ok(ObjectRef::new(namespace_of(&slice.metadata), name.clone()))
}

/// Converts an EndpointSlice. Returns the Service it belongs to, the group (`None` for the
/// FQDN address type, which no proxy uses) and warnings. An IPv4 slice's group holds IPv4
/// endpoints, an IPv6 slice's IPv6 ones (every address of a slice has its addressType).
///
/// Unset conditions follow the API definition: `ready` unset counts as ready, `serving`
/// unset equals `ready`, `terminating` unset is false.
pub fn endpoint_group_from_slice(
    slice: &discoveryv1::EndpointSlice,
) -> Result<(ObjectRef, Option<EndpointGroup>, Vec<String>), InvalidObject> {
    ObjectRef::from_meta(&slice.metadata)?;
    let service = slice_service(slice)?;
    let mut warnings = Vec::new();
    let family = match slice.address_type.as_str() {
        "IPv4" => Family::V4,
        "IPv6" => Family::V6,
        "FQDN" => return Ok((service, None, warnings)),
        other => return Err(InvalidObject::BadAddressType(other.into())),
    };
    // Exact capacities: the model keeps these vectors for the slice's lifetime (doubling
    // growth left 10 endpoints in room for 16, about 80 MB at 100k Services).
    let mut ports = Vec::with_capacity(slice.ports.as_ref().map_or(0, Vec::len));
    for (i, p) in slice
        .ports
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let name = p.name.clone().unwrap_or_default();
        let protocol = parse_protocol(p.protocol.as_deref(), &format!("ports[{i}].protocol"))?;
        let Some(port) = p.port else {
            warnings.push(format!("ports[{i}] has no port number: skipped"));
            continue;
        };
        let port = parse_port(port.into(), &format!("ports[{i}].port"))?;
        ports.push(EndpointPort {
            name,
            port,
            protocol,
        });
    }
    let mut endpoints = Vec::with_capacity(slice.endpoints.as_ref().map_or(0, Vec::len));
    for (i, ep) in slice
        .endpoints
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let mut first = None;
        for (j, a) in ep.addresses.iter().enumerate() {
            let field = || format!("endpoints[{i}].addresses[{j}]");
            let addr =
                match family {
                    Family::V4 => a.parse::<Ipv4Addr>().map(IpAddr::V4).map_err(|_| {
                        InvalidObject::NotAnIpv4 {
                            field: field(),
                            value: a.clone(),
                        }
                    }),
                    Family::V6 => a.parse::<Ipv6Addr>().map(IpAddr::V6).map_err(|_| {
                        InvalidObject::NotAnIpv6 {
                            field: field(),
                            value: a.clone(),
                        }
                    }),
                }?;
            first.get_or_insert(addr);
        }
        let Some(address) = first else {
            warnings.push(format!("endpoints[{i}] has no address: skipped"));
            continue;
        };
        let cond = ep.conditions.as_ref();
        let ready = cond.and_then(|c| c.ready).unwrap_or(true);
        let serving = cond.and_then(|c| c.serving).unwrap_or(ready);
        let terminating = cond.and_then(|c| c.terminating).unwrap_or(false);
        endpoints.push(Endpoint {
            address,
            ready,
            serving,
            terminating,
            node_name: ep.node_name.clone(),
            zone: ep.zone.clone().filter(|z| !z.is_empty()),
            hints: topology::endpoint_hints(ep),
        });
    }
    Ok((service, Some(EndpointGroup { ports, endpoints }), warnings))
}

/// Converts a legacy (core/v1) Endpoints object: one group per subset. `addresses` are ready
/// (and serving); `notReadyAddresses` are neither ready nor serving. Addresses of both
/// families are kept (a subset may mix them; the desired state gives each frontend its
/// own family's). Returns the Service (same namespace/name), groups and warnings.
pub fn endpoint_groups_from_endpoints(
    ep: &corev1::Endpoints,
) -> Result<(ObjectRef, Vec<EndpointGroup>, Vec<String>), InvalidObject> {
    let service = ObjectRef::from_meta(&ep.metadata)?;
    let warnings = Vec::new();
    let mut groups = Vec::new();
    for (s, subset) in ep.subsets.as_deref().unwrap_or_default().iter().enumerate() {
        let mut ports = Vec::new();
        for (i, p) in subset
            .ports
            .as_deref()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let name = p.name.clone().unwrap_or_default();
            let port = parse_port(p.port.into(), &format!("subsets[{s}].ports[{i}].port"))?;
            let protocol = parse_protocol(
                p.protocol.as_deref(),
                &format!("subsets[{s}].ports[{i}].protocol"),
            )?;
            ports.push(EndpointPort {
                name,
                port,
                protocol,
            });
        }
        let mut endpoints = Vec::new();
        let lists = [
            ("addresses", &subset.addresses, true),
            ("notReadyAddresses", &subset.not_ready_addresses, false),
        ];
        for (list_name, list, ready) in lists {
            for (i, a) in list.as_deref().unwrap_or_default().iter().enumerate() {
                let field = format!("subsets[{s}].{list_name}[{i}].ip");
                match a.ip.parse::<IpAddr>() {
                    Ok(address) => endpoints.push(Endpoint {
                        address,
                        ready,
                        serving: ready,
                        terminating: false,
                        node_name: a.node_name.clone(),
                        zone: None,
                        hints: EndpointHints::default(),
                    }),
                    Err(_) => {
                        return Err(InvalidObject::NotAnIp {
                            field,
                            value: a.ip.clone(),
                        });
                    }
                }
            }
        }
        groups.push(EndpointGroup { ports, endpoints });
    }
    Ok((service, groups, warnings))
}

/// Everything the dataplane is computed from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cluster {
    pub services: BTreeMap<ObjectRef, Service>,
    /// Endpoint groups by the Service they belong to (which may be absent from `services`).
    /// Shared with the watch cache that holds each slice's group: rebuilding a Service's
    /// list after a slice change copies pointers, not endpoints (at 100k Services the deep
    /// copies were 9 % of the install's CPU and a second copy of every endpoint in memory).
    pub endpoints: BTreeMap<ObjectRef, Vec<Arc<EndpointGroup>>>,
    /// The CIDRs (both families) of every `networking.k8s.io/v1` ServiceCIDR object, by
    /// object (a cluster-scoped name: the namespace is empty). An object with an empty
    /// `spec.cidrs` is here with an empty list: it still counts as a ServiceCIDR object that
    /// exists (see [`crate::desired::compute_with_incumbents`], "Service CIDRs").
    pub service_cidrs: BTreeMap<ObjectRef, Vec<IpCidr>>,
    /// The LoadBalancer address pools (`LoadBalancerIPPool` objects that could be used), by
    /// name.
    pub lb_pools: BTreeMap<ObjectRef, crate::lbipam::Pool>,
}

/// Converts a `networking.k8s.io/v1` ServiceCIDR: its name (cluster-scoped: an empty
/// namespace), the CIDRs of `spec.cidrs` (both families; host bits cleared) and the
/// warnings. kube-proxy takes every
/// object's `spec.cidrs`, whatever its status conditions say, and so does this.
pub fn service_cidr_from_k8s(
    object: &networkingv1::ServiceCIDR,
) -> Result<(ObjectRef, Vec<IpCidr>, Vec<String>), InvalidObject> {
    let name = object
        .metadata
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or(InvalidObject::MissingName)?;
    let id = ObjectRef::new("", name);
    let mut warnings = Vec::new();
    let mut cidrs = Vec::new();
    let list = object
        .spec
        .as_ref()
        .and_then(|s| s.cidrs.as_deref())
        .unwrap_or_default();
    for (i, s) in list.iter().enumerate() {
        let field = format!("spec.cidrs[{i}]");
        match s.parse::<IpCidr>() {
            Ok(c) => {
                if !cidrs.contains(&c) {
                    cidrs.push(c);
                }
            }
            Err(_) => {
                return Err(InvalidObject::NotACidr {
                    field,
                    value: s.clone(),
                });
            }
        }
    }
    if list.is_empty() {
        warnings.push("spec.cidrs is empty: no service CIDR".to_string());
    }
    Ok((id, cidrs, warnings))
}

impl Cluster {
    /// Builds a cluster from converted objects.
    ///
    /// `slices` are `(service, group)` pairs from [`endpoint_group_from_slice`], in a stable
    /// order (e.g. by slice name); `legacy` are `(service, groups)` from
    /// [`endpoint_groups_from_endpoints`]. As kube-proxy does, a Service that has at least
    /// one EndpointSlice (of any address type) takes its endpoints from its slices only, and
    /// its legacy Endpoints are ignored; a Service without slices uses its legacy Endpoints
    /// (this is how hand-written Endpoints work in manifest mode). A later Service with the
    /// same id replaces an earlier one: callers deduplicate.
    pub fn assemble(
        services: impl IntoIterator<Item = Service>,
        slices: impl IntoIterator<Item = (ObjectRef, Option<EndpointGroup>)>,
        legacy: impl IntoIterator<Item = (ObjectRef, Vec<EndpointGroup>)>,
    ) -> Cluster {
        let services = services.into_iter().map(|s| (s.id.clone(), s)).collect();
        let mut endpoints: BTreeMap<ObjectRef, Vec<Arc<EndpointGroup>>> = BTreeMap::new();
        for (svc, group) in slices {
            let groups = endpoints.entry(svc).or_default();
            groups.extend(group.map(Arc::new));
        }
        for (svc, groups) in legacy {
            if let std::collections::btree_map::Entry::Vacant(e) = endpoints.entry(svc) {
                e.insert(groups.into_iter().map(Arc::new).collect());
            } else {
                tracing::debug!("legacy Endpoints ignored: the Service has EndpointSlices");
            }
        }
        Cluster {
            services,
            endpoints,
            service_cidrs: BTreeMap::new(),
            lb_pools: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests;
