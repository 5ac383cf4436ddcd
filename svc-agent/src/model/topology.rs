//! The topology fields of the model: a Service's `spec.trafficDistribution` and an
//! EndpointSlice endpoint's `zone` and `hints` (forZones, forNodes). What the dataplane makes
//! of them is [`crate::desired`]'s business
//! ([`crate::desired::compute_with_incumbents`], "Topology").
//!
//! Who writes what, in a cluster: the user sets `trafficDistribution` on the Service; the
//! EndpointSlice controller turns it into hints on every ready endpoint (PreferClose and
//! PreferSameZone: `forZones` = the endpoint's zone; PreferSameNode: also `forNodes` = its
//! node), and the `service.kubernetes.io/topology-mode: Auto` annotation makes it write zone
//! hints too. kube-proxy then reads the hints only, never the Service's field. In manifest
//! mode there is no controller: the hints are whatever the EndpointSlice manifest says.

use std::collections::BTreeSet;
use std::fmt;

use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::discovery::v1 as discoveryv1;

/// `spec.trafficDistribution`: a preference for where traffic goes, which Kubernetes
/// implements through EndpointSlice hints (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TrafficDistribution {
    /// The deprecated spelling of [`PreferSameZone`](Self::PreferSameZone), same meaning.
    PreferClose,
    /// Endpoints in the client's zone: the controller writes `forZones` hints.
    PreferSameZone,
    /// Endpoints on the client's node, else its zone: the controller writes `forNodes` and
    /// `forZones` hints.
    PreferSameNode,
}

impl TrafficDistribution {
    pub fn as_str(self) -> &'static str {
        match self {
            TrafficDistribution::PreferClose => "PreferClose",
            TrafficDistribution::PreferSameZone => "PreferSameZone",
            TrafficDistribution::PreferSameNode => "PreferSameNode",
        }
    }
}

impl fmt::Display for TrafficDistribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `spec.trafficDistribution`: unset or `""` is `None`. A value this build does not know
/// is `None` with a warning, not an invalid Service: it is only a preference (the API
/// documents that implementations may ignore it), a newer API server may accept values
/// this build has never heard of, and the dataplane follows the hints anyway.
pub(super) fn parse_traffic_distribution(
    spec: &corev1::ServiceSpec,
    warnings: &mut Vec<String>,
) -> Option<TrafficDistribution> {
    match spec.traffic_distribution.as_deref() {
        None | Some("") => None,
        Some("PreferClose") => Some(TrafficDistribution::PreferClose),
        Some("PreferSameZone") => Some(TrafficDistribution::PreferSameZone),
        Some("PreferSameNode") => Some(TrafficDistribution::PreferSameNode),
        Some(other) => {
            warnings.push(format!(
                "spec.trafficDistribution {other:?} ignored: not PreferClose, PreferSameZone or PreferSameNode"
            ));
            None
        }
    }
}

/// An EndpointSlice endpoint's `hints`: the zones and nodes it should be used from.
/// Empty sets: no hint of that kind. Legacy Endpoints have none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointHints {
    /// `hints.forZones[].name`.
    pub for_zones: BTreeSet<String>,
    /// `hints.forNodes[].name`.
    pub for_nodes: BTreeSet<String>,
}

impl EndpointHints {
    pub fn is_empty(&self) -> bool {
        self.for_zones.is_empty() && self.for_nodes.is_empty()
    }
}

/// The hints of a slice endpoint, names as written (the API server validates them).
pub(super) fn endpoint_hints(ep: &discoveryv1::Endpoint) -> EndpointHints {
    let Some(hints) = &ep.hints else {
        return EndpointHints::default();
    };
    EndpointHints {
        for_zones: hints
            .for_zones
            .iter()
            .flatten()
            .map(|z| z.name.clone())
            .collect(),
        for_nodes: hints
            .for_nodes
            .iter()
            .flatten()
            .map(|n| n.name.clone())
            .collect(),
    }
}
