//! The typed, validated model of the cluster objects the dataplane cares about.
//!
//! Every source (the manifest directory today, Kubernetes watches later) converts the
//! k8s-openapi objects it receives with [`Service::from_k8s`], [`endpoint_group_from_slice`]
//! and [`endpoint_groups_from_endpoints`], and assembles them with [`Cluster::assemble`].
//! [`crate::desired::compute`] then works on this model only; nothing here knows about BPF
//! maps.
//!
//! Conversions reject an object that the API server would reject (or that cannot be
//! interpreted) with an [`InvalidObject`] whose message names the offending field, and return
//! non-fatal warnings (e.g. an SCTP port, which datapath v1 cannot serve, is dropped while
//! the Service's other ports are kept) alongside the converted object.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::discovery::v1 as discoveryv1;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Label that hands a Service to another proxy; such Services get no dataplane state.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// Label linking an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

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

/// Transport protocol of a service port. SCTP is valid in Kubernetes but not supported by
/// datapath v1, so it has no variant: conversions drop SCTP ports with a warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The IP protocol number (IPPROTO_TCP = 6, IPPROTO_UDP = 17).
    pub fn as_u8(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        })
    }
}

/// Result of reading a Kubernetes `protocol` field.
enum ParsedProtocol {
    Supported(Protocol),
    Sctp,
}

/// `protocol` defaults to TCP when unset, as in Kubernetes.
fn parse_protocol(value: Option<&str>, field: &str) -> Result<ParsedProtocol, InvalidObject> {
    match value {
        None | Some("TCP") => Ok(ParsedProtocol::Supported(Protocol::Tcp)),
        Some("UDP") => Ok(ParsedProtocol::Supported(Protocol::Udp)),
        Some("SCTP") => Ok(ParsedProtocol::Sctp),
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
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
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

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServicePort {
    /// `""` when unset (only allowed on single-port Services).
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
    pub target_port: TargetPort,
    /// `None` when unset or 0 (0 asks the API server to allocate one).
    pub node_port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub id: ObjectRef,
    /// The IPv4 addresses among `spec.clusterIPs` (or `spec.clusterIP` when clusterIPs is
    /// unset). Empty for headless and ExternalName Services.
    pub cluster_ips: Vec<Ipv4Addr>,
    pub kind: ServiceKind,
    /// Ports datapath v1 can serve (SCTP ports are dropped with a warning).
    pub ports: Vec<ServicePort>,
    /// Value of the `service.kubernetes.io/service-proxy-name` label: another proxy owns
    /// this Service, it is kept for display but gets no dataplane state.
    pub proxy_name_label: Option<String>,
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
    /// that were dropped (SCTP ports, IPv6-only cluster IPs, a missing cluster IP).
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
        let mut saw_v6 = false;
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
                    Ok(IpAddr::V4(v4)) => {
                        if !cluster_ips.contains(&v4) {
                            cluster_ips.push(v4)
                        }
                    }
                    Ok(IpAddr::V6(_)) => saw_v6 = true,
                    Err(_) => {
                        return Err(InvalidObject::NotAnIp {
                            field: f,
                            value: s.to_string(),
                        });
                    }
                }
            }
            if cluster_ips.is_empty() {
                warnings.push(if saw_v6 {
                    "no IPv4 cluster IP (IPv6 is not supported by datapath v1): no ClusterIP frontends".to_string()
                } else {
                    "spec.clusterIP is not set (nothing allocates one outside a cluster): no ClusterIP frontends"
                        .to_string()
                });
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
            let protocol = match protocol {
                ParsedProtocol::Supported(proto) => proto,
                ParsedProtocol::Sctp => {
                    warnings.push(format!(
                        "spec.ports[{i}] ({}{port}/SCTP) skipped: SCTP is not supported by datapath v1",
                        if name.is_empty() { String::new() } else { format!("{name:?} ") }
                    ));
                    continue;
                }
            };
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

        Ok((
            Service {
                id,
                cluster_ips,
                kind,
                ports,
                proxy_name_label,
            },
            warnings,
        ))
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
    pub addresses: Vec<Ipv4Addr>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub node_name: Option<String>,
}

/// One EndpointSlice (addressType IPv4) or one subset of a legacy Endpoints object: a set
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
/// IPv6 and FQDN address types, which datapath v1 does not use) and warnings.
///
/// Unset conditions follow the API definition: `ready` unset counts as ready, `serving`
/// unset equals `ready`, `terminating` unset is false.
pub fn endpoint_group_from_slice(
    slice: &discoveryv1::EndpointSlice,
) -> Result<(ObjectRef, Option<EndpointGroup>, Vec<String>), InvalidObject> {
    ObjectRef::from_meta(&slice.metadata)?;
    let service = slice_service(slice)?;
    let mut warnings = Vec::new();
    match slice.address_type.as_str() {
        "IPv4" => {}
        "IPv6" | "FQDN" => return Ok((service, None, warnings)),
        other => return Err(InvalidObject::BadAddressType(other.into())),
    }
    let mut ports = Vec::new();
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
        match protocol {
            ParsedProtocol::Supported(protocol) => ports.push(EndpointPort {
                name,
                port,
                protocol,
            }),
            ParsedProtocol::Sctp => warnings.push(format!(
                "ports[{i}] ({port}/SCTP) skipped: SCTP is not supported by datapath v1"
            )),
        }
    }
    let mut endpoints = Vec::new();
    for (i, ep) in slice
        .endpoints
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let mut addresses = Vec::with_capacity(ep.addresses.len());
        for (j, a) in ep.addresses.iter().enumerate() {
            let addr = a
                .parse::<Ipv4Addr>()
                .map_err(|_| InvalidObject::NotAnIpv4 {
                    field: format!("endpoints[{i}].addresses[{j}]"),
                    value: a.clone(),
                })?;
            addresses.push(addr);
        }
        let cond = ep.conditions.as_ref();
        let ready = cond.and_then(|c| c.ready).unwrap_or(true);
        let serving = cond.and_then(|c| c.serving).unwrap_or(ready);
        let terminating = cond.and_then(|c| c.terminating).unwrap_or(false);
        endpoints.push(Endpoint {
            addresses,
            ready,
            serving,
            terminating,
            node_name: ep.node_name.clone(),
        });
    }
    Ok((service, Some(EndpointGroup { ports, endpoints }), warnings))
}

/// Converts a legacy (core/v1) Endpoints object: one group per subset. `addresses` are ready
/// (and serving); `notReadyAddresses` are neither ready nor serving. IPv6 addresses are
/// skipped with a warning. Returns the Service (same namespace/name), groups and warnings.
pub fn endpoint_groups_from_endpoints(
    ep: &corev1::Endpoints,
) -> Result<(ObjectRef, Vec<EndpointGroup>, Vec<String>), InvalidObject> {
    let service = ObjectRef::from_meta(&ep.metadata)?;
    let mut warnings = Vec::new();
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
            match parse_protocol(p.protocol.as_deref(), &format!("subsets[{s}].ports[{i}].protocol"))? {
                ParsedProtocol::Supported(protocol) => ports.push(EndpointPort { name, port, protocol }),
                ParsedProtocol::Sctp => warnings.push(format!(
                    "subsets[{s}].ports[{i}] ({port}/SCTP) skipped: SCTP is not supported by datapath v1"
                )),
            }
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
                    Ok(IpAddr::V4(addr)) => endpoints.push(Endpoint {
                        addresses: vec![addr],
                        ready,
                        serving: ready,
                        terminating: false,
                        node_name: a.node_name.clone(),
                    }),
                    Ok(IpAddr::V6(_)) => warnings.push(format!(
                        "{field} {:?} skipped: IPv6 is not supported by datapath v1",
                        a.ip
                    )),
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
    pub endpoints: BTreeMap<ObjectRef, Vec<EndpointGroup>>,
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
        let mut endpoints: BTreeMap<ObjectRef, Vec<EndpointGroup>> = BTreeMap::new();
        for (svc, group) in slices {
            let groups = endpoints.entry(svc).or_default();
            groups.extend(group);
        }
        for (svc, groups) in legacy {
            if let std::collections::btree_map::Entry::Vacant(e) = endpoints.entry(svc) {
                e.insert(groups);
            } else {
                tracing::debug!("legacy Endpoints ignored: the Service has EndpointSlices");
            }
        }
        Cluster {
            services,
            endpoints,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort as KPort, ServiceSpec};

    fn k8s_service(ports: Vec<KPort>) -> corev1::Service {
        corev1::Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some("10.96.0.10".into()),
                ports: Some(ports),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn kport(name: &str, port: i32, proto: &str) -> KPort {
        KPort {
            name: Some(name.into()),
            port,
            protocol: Some(proto.into()),
            ..Default::default()
        }
    }

    #[test]
    fn protocol_numbers_and_names() {
        assert_eq!(Protocol::Tcp.as_u8(), 6);
        assert_eq!(Protocol::Udp.as_u8(), 17);
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
    fn sctp_port_is_dropped_with_a_warning() {
        let (svc, warnings) = Service::from_k8s(&k8s_service(vec![
            kport("a", 80, "TCP"),
            kport("b", 5000, "SCTP"),
        ]))
        .unwrap();
        assert_eq!(svc.ports.len(), 1);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("SCTP"), "{warnings:?}");
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
    fn dual_stack_keeps_ipv4_and_headless_needs_no_ports() {
        let mut s = k8s_service(vec![kport("a", 53, "UDP")]);
        let spec = s.spec.as_mut().unwrap();
        spec.cluster_ip = Some("fd00::10".into());
        spec.cluster_ips = Some(vec!["fd00::10".into(), "10.96.0.10".into()]);
        let (svc, w) = Service::from_k8s(&s).unwrap();
        assert!(w.is_empty());
        assert_eq!(svc.cluster_ips, vec![Ipv4Addr::new(10, 96, 0, 10)]);

        let mut s = k8s_service(vec![]);
        s.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        let (svc, _) = Service::from_k8s(&s).unwrap();
        assert_eq!(svc.kind, ServiceKind::Headless);
        assert!(svc.cluster_ips.is_empty());
        assert!(!svc.is_proxied());
    }

    #[test]
    fn unset_slice_conditions_count_as_ready() {
        let slice = discoveryv1::EndpointSlice {
            metadata: ObjectMeta {
                name: Some("web-abc".into()),
                namespace: Some("shop".into()),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: Some(vec![
                discoveryv1::Endpoint {
                    addresses: vec!["10.1.0.5".into()],
                    ..Default::default()
                },
                discoveryv1::Endpoint {
                    addresses: vec!["10.1.0.6".into()],
                    conditions: Some(discoveryv1::EndpointConditions {
                        ready: Some(false),
                        serving: None,
                        terminating: Some(true),
                    }),
                    ..Default::default()
                },
            ]),
            ports: Some(vec![discoveryv1::EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                ..Default::default()
            }]),
        };
        let (svc, group, w) = endpoint_group_from_slice(&slice).unwrap();
        assert!(w.is_empty());
        assert_eq!(svc, ObjectRef::new("shop", "web"));
        let group = group.unwrap();
        assert_eq!(
            group.ports,
            vec![EndpointPort {
                name: "http".into(),
                port: 8080,
                protocol: Protocol::Tcp
            }]
        );
        let e = &group.endpoints;
        assert!(e[0].ready && e[0].serving && !e[0].terminating);
        assert!(!e[1].ready && !e[1].serving && e[1].terminating);

        let mut v6 = slice.clone();
        v6.address_type = "IPv6".into();
        assert_eq!(endpoint_group_from_slice(&v6).unwrap().1, None);
        let mut unlabelled = slice;
        unlabelled.metadata.labels = None;
        assert_eq!(
            endpoint_group_from_slice(&unlabelled)
                .unwrap_err()
                .to_string(),
            "EndpointSlice has no kubernetes.io/service-name label"
        );
    }
}
