//! Topology-aware routing: which ready endpoints of a service port this node's cluster set
//! keeps, decided from the EndpointSlice hints alone, as kube-proxy's
//! `topologyModeFromHints` and `availableForTopology` decide (pkg/proxy/topology.go). The
//! rules, and how they meet the traffic policies, are documented at
//! [`super::compute_with_incumbents`] ("Topology").

use super::NodeContext;
use crate::model::Endpoint;

/// Which hints the cluster set of a service port follows on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Topology {
    /// No filtering: every usable endpoint. `ignored` says why, when some ready endpoint
    /// has hints (for the debug log; kube-proxy logs the same at V(2)/V(7)).
    All { ignored: Option<&'static str> },
    /// The ready endpoints whose `forNodes` names this node.
    SameNode,
    /// The ready endpoints whose `forZones` names this node's zone.
    SameZone,
}

/// Decides from the hints of the ready endpoints of a service port (the only ones that
/// count: the controller hints ready endpoints, and a not-ready one without hints must not
/// turn topology off):
/// 1. every ready endpoint has a `forNodes` hint and one names this node: [`Topology::SameNode`];
/// 2. else every ready endpoint has a `forZones` hint and one names this node's zone:
///    [`Topology::SameZone`] (so PreferSameNode falls back to the zone on a node that no
///    endpoint is hinted for);
/// 3. else (also without any ready endpoint) [`Topology::All`].
///
/// An unknown node name or zone matches no hint.
pub(super) fn decide<'a>(
    ready: impl IntoIterator<Item = &'a Endpoint>,
    node: &NodeContext,
) -> Topology {
    let (mut any_ready, mut any_hint) = (false, false);
    let (mut all_node_hints, mut for_this_node) = (true, false);
    let (mut all_zone_hints, mut for_this_zone) = (true, false);
    for e in ready {
        any_ready = true;
        any_hint |= !e.hints.is_empty();
        if e.hints.for_nodes.is_empty() {
            all_node_hints = false;
        } else if node
            .node_name
            .as_ref()
            .is_some_and(|n| e.hints.for_nodes.contains(n))
        {
            for_this_node = true;
        }
        if e.hints.for_zones.is_empty() {
            all_zone_hints = false;
        } else if node
            .zone
            .as_ref()
            .is_some_and(|z| e.hints.for_zones.contains(z))
        {
            for_this_zone = true;
        }
    }
    if !any_ready {
        return Topology::All { ignored: None };
    }
    if all_node_hints && for_this_node {
        return Topology::SameNode;
    }
    if all_zone_hints && for_this_zone {
        return Topology::SameZone;
    }
    let ignored = if !any_hint {
        None
    } else if !all_zone_hints {
        Some("an endpoint has no forZones hint")
    } else if node.zone.is_none() {
        Some("this node has no zone (--node-zone, or the Node's topology.kubernetes.io/zone label)")
    } else {
        Some("no endpoint is hinted for this node's zone")
    };
    Topology::All { ignored }
}

/// Whether a ready endpoint is in the cluster set under `topology` (no fallback here: it
/// was decided by [`decide`]).
pub(super) fn available(e: &Endpoint, topology: Topology, node: &NodeContext) -> bool {
    match topology {
        Topology::All { .. } => true,
        Topology::SameNode => node
            .node_name
            .as_ref()
            .is_some_and(|n| e.hints.for_nodes.contains(n)),
        Topology::SameZone => node
            .zone
            .as_ref()
            .is_some_and(|z| e.hints.for_zones.contains(z)),
    }
}
