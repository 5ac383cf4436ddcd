//! Detect-local (kube-proxy's `--detect-local-mode`): how the programs tell that a new
//! flow comes from a pod (ClusterIP traffic from elsewhere is masqueraded; pods reaching
//! an externalTrafficPolicy Local address short-circuit to every endpoint), and keeping
//! the maps behind that test current. kube-proxy's four modes
//! (pkg/proxy/util/localdetector.go) come down to the two tests the datapath can make
//! (svc-ebpf/src/local.rs):
//!
//! | mode | kube-proxy matches | here: a new flow is from a pod when |
//! |---|---|---|
//! | `ClusterCIDR` (default) | `ip saddr` in `--cluster-cidr` | its source is in one of the `--cluster-cidr`s (SVC4_POD_CIDRS); none given: no source is a pod (and ClusterIP traffic is never masqueraded) |
//! | `NodeCIDR` | `ip saddr` in the Node's `spec.podCIDRs` | its source is in this Node's podCIDRs (Kubernetes mode; followed as they change) |
//! | `InterfaceNamePrefix` | `iifname PREFIX*` | it entered through a pod interface |
//! | `BridgeInterface` | `iifname BRIDGE` | it entered through a pod interface |
//!
//! A *pod interface* is one the agent attaches to as pod-facing: a name matching
//! `--pod-device`, starting with `--pod-interface-name-prefix` (InterfaceNamePrefix), or the
//! `--pod-bridge-interface` (BridgeInterface), never a `--device`. Their ifindexes go to
//! SVC_POD_IFACES. On a bridge, the TC program on a pod's bridge port sees the pod's packets
//! before the bridge does (and must: a reply bridged between two pods never reaches the
//! bridge device), so `--pod-device` should match the bridge's ports (the default `veth*`
//! does for the bridge CNIs); the bridge itself catches what enters through ports without
//! the program.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    str::FromStr,
};

use crate::{
    addr::{Family, IpCidr},
    dataplane::DetectLocal,
};

/// kube-proxy's `--detect-local-mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DetectLocalMode {
    #[default]
    ClusterCidr,
    NodeCidr,
    BridgeInterface,
    InterfaceNamePrefix,
}

impl DetectLocalMode {
    pub const ALL: [DetectLocalMode; 4] = [
        DetectLocalMode::ClusterCidr,
        DetectLocalMode::NodeCidr,
        DetectLocalMode::BridgeInterface,
        DetectLocalMode::InterfaceNamePrefix,
    ];

    /// As kube-proxy spells it.
    pub const fn name(self) -> &'static str {
        match self {
            DetectLocalMode::ClusterCidr => "ClusterCIDR",
            DetectLocalMode::NodeCidr => "NodeCIDR",
            DetectLocalMode::BridgeInterface => "BridgeInterface",
            DetectLocalMode::InterfaceNamePrefix => "InterfaceNamePrefix",
        }
    }
}

impl fmt::Display for DetectLocalMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DetectLocalMode {
    type Err = String;

    /// kube-proxy's spelling; the empty string is its default, ClusterCIDR.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Ok(DetectLocalMode::ClusterCidr);
        }
        DetectLocalMode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                format!(
                    "{s:?} is not a detect-local mode (ClusterCIDR, NodeCIDR, BridgeInterface, \
                     InterfaceNamePrefix)"
                )
            })
    }
}

/// The detect-local flags, checked ([`LocalDetection::new`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocalDetection {
    pub mode: DetectLocalMode,
    /// `--cluster-cidr` (ClusterCIDR mode), both families (each to its family's pod-CIDR
    /// map; the mode is one for both).
    pub cluster_cidrs: Vec<IpCidr>,
    /// `--pod-interface-name-prefix` (InterfaceNamePrefix mode).
    pub interface_prefix: Option<String>,
    /// `--pod-bridge-interface` (BridgeInterface mode).
    pub bridge: Option<String>,
}

impl LocalDetection {
    /// The flags of `mode`, refused where kube-proxy refuses them: the interface modes need
    /// their interface.
    pub fn new(
        mode: DetectLocalMode,
        cluster_cidrs: Vec<IpCidr>,
        interface_prefix: Option<String>,
        bridge: Option<String>,
    ) -> Result<LocalDetection, String> {
        let blank = |v: &Option<String>| v.as_deref().is_none_or(|s| s.trim().is_empty());
        match mode {
            DetectLocalMode::InterfaceNamePrefix if blank(&interface_prefix) => {
                return Err(
                    "--detect-local-mode InterfaceNamePrefix needs --pod-interface-name-prefix"
                        .into(),
                );
            }
            DetectLocalMode::BridgeInterface if blank(&bridge) => {
                return Err(
                    "--detect-local-mode BridgeInterface needs --pod-bridge-interface".into(),
                );
            }
            _ => {}
        }
        let mut cidrs: Vec<IpCidr> = Vec::new();
        for c in cluster_cidrs {
            if !cidrs.contains(&c) {
                cidrs.push(c);
            }
        }
        for (family, room) in [
            (Family::V4, svc_common::POD_CIDRS4_MAP_SIZE),
            (Family::V6, svc_common::POD_CIDRS6_MAP_SIZE),
        ] {
            let n = cidrs.iter().filter(|c| c.family() == family).count();
            if n > room as usize {
                return Err(format!("{n} {family} pod CIDRs: at most {room} fit"));
            }
        }
        Ok(LocalDetection {
            mode,
            cluster_cidrs: cidrs,
            interface_prefix,
            bridge,
        })
    }

    /// The test the programs are loaded with.
    pub fn datapath_test(&self) -> DetectLocal {
        match self.mode {
            DetectLocalMode::ClusterCidr if self.cluster_cidrs.is_empty() => DetectLocal::None,
            DetectLocalMode::ClusterCidr | DetectLocalMode::NodeCidr => DetectLocal::Cidr,
            DetectLocalMode::BridgeInterface | DetectLocalMode::InterfaceNamePrefix => {
                DetectLocal::Interface
            }
        }
    }

    /// Interface patterns this mode adds to `--pod-device` (`PREFIX*`, or the bridge).
    pub fn extra_pod_patterns(&self) -> Vec<String> {
        match self.mode {
            DetectLocalMode::InterfaceNamePrefix => self
                .interface_prefix
                .iter()
                .map(|p| format!("{}*", p.trim()))
                .collect(),
            DetectLocalMode::BridgeInterface => {
                self.bridge.iter().map(|b| b.trim().to_string()).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Whether the programs test interfaces (SVC_POD_IFACES must follow the pod
    /// interfaces).
    pub fn by_interface(&self) -> bool {
        self.datapath_test() == DetectLocal::Interface
    }
}

/// The ifindexes of the pod interfaces among `present` (name -> ifindex): those matching
/// `patterns`, except the external `devices`.
pub fn pod_ifindexes(
    present: &BTreeMap<String, u32>,
    patterns: &[String],
    devices: &[String],
) -> BTreeSet<u32> {
    present
        .iter()
        .filter(|(name, _)| {
            super::node::matches_pattern(patterns, name) && !devices.iter().any(|d| d == *name)
        })
        .map(|(_, index)| *index)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_as_kube_proxy_spells_them() {
        for m in DetectLocalMode::ALL {
            assert_eq!(m.name().parse::<DetectLocalMode>(), Ok(m));
        }
        assert_eq!(
            "".parse::<DetectLocalMode>(),
            Ok(DetectLocalMode::ClusterCidr)
        );
        assert!("clustercidr".parse::<DetectLocalMode>().is_err());
    }

    #[test]
    fn each_mode_maps_to_a_datapath_test() {
        let cidr: IpCidr = "10.244.0.0/16".parse().unwrap();
        let ok = |m, c: Vec<IpCidr>, p: Option<&str>, b: Option<&str>| {
            LocalDetection::new(m, c, p.map(String::from), b.map(String::from))
        };
        let d = ok(DetectLocalMode::ClusterCidr, vec![], None, None).unwrap();
        assert_eq!(d.datapath_test(), DetectLocal::None);
        let d = ok(DetectLocalMode::ClusterCidr, vec![cidr, cidr], None, None).unwrap();
        assert_eq!(d.datapath_test(), DetectLocal::Cidr);
        assert_eq!(d.cluster_cidrs, vec![cidr], "duplicates go");
        let d = ok(DetectLocalMode::NodeCidr, vec![], None, None).unwrap();
        assert_eq!(d.datapath_test(), DetectLocal::Cidr);
        let d = ok(
            DetectLocalMode::InterfaceNamePrefix,
            vec![],
            Some("cali"),
            None,
        )
        .unwrap();
        assert_eq!(d.datapath_test(), DetectLocal::Interface);
        assert_eq!(d.extra_pod_patterns(), vec!["cali*"]);
        let d = ok(DetectLocalMode::BridgeInterface, vec![], None, Some("cbr0")).unwrap();
        assert_eq!(d.extra_pod_patterns(), vec!["cbr0"]);
        assert!(d.by_interface());
        assert!(ok(DetectLocalMode::InterfaceNamePrefix, vec![], None, None).is_err());
        assert!(
            ok(
                DetectLocalMode::InterfaceNamePrefix,
                vec![],
                Some(" "),
                None
            )
            .is_err()
        );
        assert!(ok(DetectLocalMode::BridgeInterface, vec![], Some("x"), None).is_err());
    }

    #[test]
    fn pod_interfaces_exclude_the_devices() {
        let present: BTreeMap<String, u32> = [("eth0", 2), ("veth1", 3), ("cali1", 4), ("lo", 1)]
            .into_iter()
            .map(|(n, i)| (n.to_string(), i))
            .collect();
        let patterns = vec!["veth*".to_string(), "cali*".to_string(), "eth0".to_string()];
        assert_eq!(
            pod_ifindexes(&present, &patterns, &["eth0".to_string()]),
            BTreeSet::from([3, 4])
        );
    }
}
