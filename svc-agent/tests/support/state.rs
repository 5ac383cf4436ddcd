//! Desired state by hand: frontends with their backends and policies, as the reconciler
//! takes them (what `desired::compute` would make of Services and EndpointSlices).
use svc_agent::desired::{BackendAddr, Frontend, FrontendKind, FrontendState};
use svc_agent::model::{ObjectRef, Protocol};

use super::sa;

pub const TCP: Protocol = Protocol::Tcp;
pub const UDP: Protocol = Protocol::Udp;
pub const CIP: FrontendKind = FrontendKind::ClusterIp;
pub const NP: FrontendKind = FrontendKind::NodePort;
pub const LB: FrontendKind = FrontendKind::LoadBalancer;

pub fn backend(s: &str, proto: Protocol) -> BackendAddr {
    let s = sa(s);
    BackendAddr {
        addr: (*s.ip()).into(),
        port: s.port(),
        proto,
    }
}

/// Sorted and deduplicated, as `FrontendState` wants its backend lists.
pub fn backends(list: &[&str], proto: Protocol) -> Vec<BackendAddr> {
    let mut v: Vec<BackendAddr> = list.iter().map(|b| backend(b, proto)).collect();
    v.sort();
    v.dedup();
    v
}

/// One frontend `vip:port/proto` of kind `kind` of Service default/`name` with `list` as
/// its backends; `edit` sets the rest (policies, affinity, source ranges, ...).
pub fn fe(
    vip_port: &str,
    proto: Protocol,
    kind: FrontendKind,
    name: &str,
    list: &[&str],
    edit: impl FnOnce(&mut FrontendState),
) -> (Frontend, FrontendState) {
    let s = sa(vip_port);
    let mut state = FrontendState {
        service: ObjectRef::new("default", name),
        kind,
        backends: backends(list, proto),
        ..Default::default()
    };
    edit(&mut state);
    (
        Frontend {
            vip: (*s.ip()).into(),
            port: s.port(),
            proto,
        },
        state,
    )
}

pub fn no_edit(_: &mut FrontendState) {}
