//! The pool object, `LoadBalancerIPPool` (`svc-ebpf.dev/v1alpha1`, cluster-scoped; its
//! CustomResourceDefinition is in deploy/), and what a Service asks of the pools.
//!
//! ```yaml
//! apiVersion: svc-ebpf.dev/v1alpha1
//! kind: LoadBalancerIPPool
//! metadata: {name: lan}
//! spec:
//!   blocks:                       # CIDRs and ranges, IPv4 and IPv6
//!     - cidr: 192.0.2.200/29      # an IPv4 CIDR of 4+ leaves out its first and last, IPv6 its first
//!     - start: 192.0.2.240
//!       stop: 192.0.2.244
//!   serviceSelector:              # optional: only Services with these labels
//!     matchLabels: {tier: web}
//!   disabled: false               # true: hands out no new address (held ones stay)
//! ```
//!
//! The field names are Cilium's `CiliumLoadBalancerIPPool`'s, so a pool written for Cilium
//! reads the same here. Unknown fields are refused by name (a typo such as `blcoks` is
//! reported, not silently ignored), and a malformed pool is reported and skipped: the
//! addresses Services hold from it stay theirs (see [`super`]).
//!
//! A Service of type LoadBalancer asks for addresses when its `spec.loadBalancerClass` is
//! [`LB_CLASS`], or is unset and the agent serves class-less Services
//! (`--lb-ipam-classless`, the default, as MetalLB and Cilium do). It may name the
//! addresses it wants in `spec.loadBalancerIP` (deprecated upstream, still common) or in
//! the annotation [`IPS_ANNOTATION`], a comma-separated list of both families (MetalLB's
//! `metallb.io/loadBalancerIPs`); it gets one address per family of `spec.ipFamilies`.
use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use k8s_openapi::{
    ClusterResourceScope,
    api::core::v1 as corev1,
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta},
};
use serde::{Deserialize, Serialize};

use super::{Block, Expression, Pool, Selector};
use crate::{addr::Family, model::InvalidObject};

pub const GROUP: &str = "svc-ebpf.dev";
pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "svc-ebpf.dev/v1alpha1";
pub const KIND: &str = "LoadBalancerIPPool";
pub const PLURAL: &str = "loadbalancerippools";
/// `spec.loadBalancerClass` of the Services this agent gives addresses to.
pub const LB_CLASS: &str = "svc-ebpf.dev/lb";
/// Annotation listing the addresses a Service asks for (comma-separated, both families).
pub const IPS_ANNOTATION: &str = "svc-ebpf.dev/loadbalancer-ips";

/// The custom resource, as read from the API or a manifest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadBalancerIPPool {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(
        default,
        rename = "apiVersion",
        skip_serializing_if = "Option::is_none"
    )]
    pub api_version: Option<String>,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PoolSpec,
    /// Not used (the agent writes none); accepted so an object read back from the API
    /// parses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolSpec {
    #[serde(default)]
    pub blocks: Vec<PoolBlock>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_selector: Option<LabelSelector>,
    #[serde(default)]
    pub disabled: bool,
}

/// `{cidr}` or `{start, stop}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolBlock {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<String>,
}

impl kube::Resource for LoadBalancerIPPool {
    type DynamicType = ();
    type Scope = ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        KIND.into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        GROUP.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        VERSION.into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        PLURAL.into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

fn invalid(field: String, reason: impl Into<String>) -> InvalidObject {
    InvalidObject::Invalid {
        field,
        reason: reason.into(),
    }
}

/// The pool the object describes, and warnings about it; or why it cannot be used.
pub fn to_pool(object: &LoadBalancerIPPool) -> Result<(Pool, Vec<String>), InvalidObject> {
    let name = object
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or(InvalidObject::MissingName)?;
    let mut warnings = Vec::new();
    let mut blocks = Vec::new();
    for (i, b) in object.spec.blocks.iter().enumerate() {
        let field = format!("spec.blocks[{i}]");
        let text = match (&b.cidr, &b.start, &b.stop) {
            (Some(cidr), None, None) => cidr.clone(),
            (None, Some(start), Some(stop)) => format!("{start}-{stop}"),
            (None, Some(start), None) => start.clone(),
            _ => return Err(invalid(field, "give either cidr, or start and stop")),
        };
        let block = Block::parse(&text).map_err(|e| invalid(field, e.to_string()))?;
        blocks.push(block);
    }
    if blocks.is_empty() {
        warnings.push("spec.blocks is empty: the pool hands out no address".to_string());
    }
    let selector = match &object.spec.service_selector {
        None => Selector::default(),
        Some(s) => selector(s)?,
    };
    Ok((
        Pool {
            name,
            blocks,
            selector,
            disabled: object.spec.disabled,
        },
        warnings,
    ))
}

fn selector(s: &LabelSelector) -> Result<Selector, InvalidObject> {
    let mut out = Selector {
        match_labels: s.match_labels.clone().unwrap_or_default(),
        expressions: Vec::new(),
    };
    for (i, e) in s.match_expressions.iter().flatten().enumerate() {
        let field = format!("spec.serviceSelector.matchExpressions[{i}]");
        let values: BTreeSet<String> = e.values.iter().flatten().cloned().collect();
        let key = e.key.clone();
        let expr = match e.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(invalid(field, format!("{} needs values", e.operator)));
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(invalid(field, format!("{} takes no values", e.operator)));
            }
            "In" => Expression::In(key, values),
            "NotIn" => Expression::NotIn(key, values),
            "Exists" => Expression::Exists(key),
            "DoesNotExist" => Expression::DoesNotExist(key),
            other => {
                return Err(InvalidObject::NotOneOf {
                    field: format!("{field}.operator"),
                    value: other.to_string(),
                    allowed: "In, NotIn, Exists or DoesNotExist",
                });
            }
        };
        out.expressions.push(expr);
    }
    Ok(out)
}

/// What a Service asks of the pools (kept in the model for every Service; only type
/// LoadBalancer Services of our class are given addresses).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LbRequest {
    /// `spec.loadBalancerClass`.
    pub class: Option<String>,
    /// `spec.loadBalancerIP` and the [`IPS_ANNOTATION`] addresses, deduplicated, in that
    /// order.
    pub requested: Vec<IpAddr>,
    /// `spec.ipFamilies`, else the families of the ClusterIPs, else IPv4.
    pub families: Vec<Family>,
    /// `metadata.labels`, for the pools' selectors.
    pub labels: BTreeMap<String, String>,
}

impl LbRequest {
    /// Reads a Service's request; entries that are not addresses are left out with a
    /// warning (a typo in the annotation must not take the Service down).
    pub fn from_k8s(
        svc: &corev1::Service,
        cluster_ips: &[IpAddr],
        warnings: &mut Vec<String>,
    ) -> LbRequest {
        let spec = svc.spec.as_ref();
        let mut requested = Vec::new();
        let mut add = |field: &str, s: &str, warnings: &mut Vec<String>| {
            let s = s.trim();
            if s.is_empty() {
                return;
            }
            match s.parse::<IpAddr>() {
                Ok(ip) if !requested.contains(&ip) => requested.push(ip),
                Ok(_) => {}
                Err(_) => warnings.push(format!("{field} {s:?} is not an IP address; ignored")),
            }
        };
        if let Some(ip) = spec.and_then(|s| s.load_balancer_ip.as_deref()) {
            add("spec.loadBalancerIP", ip, warnings);
        }
        if let Some(list) = svc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(IPS_ANNOTATION))
        {
            for ip in list.split(',') {
                add(&format!("annotation {IPS_ANNOTATION}"), ip, warnings);
            }
        }
        let mut families: Vec<Family> = Vec::new();
        for f in spec
            .and_then(|s| s.ip_families.as_ref())
            .into_iter()
            .flatten()
        {
            let family = match f.as_str() {
                "IPv4" => Family::V4,
                "IPv6" => Family::V6,
                other => {
                    warnings.push(format!(
                        "spec.ipFamilies {other:?} is not IPv4 or IPv6; ignored"
                    ));
                    continue;
                }
            };
            if !families.contains(&family) {
                families.push(family);
            }
        }
        if families.is_empty() {
            for ip in cluster_ips {
                if !families.contains(&Family::of(*ip)) {
                    families.push(Family::of(*ip));
                }
            }
        }
        if families.is_empty() {
            families.push(Family::V4);
        }
        LbRequest {
            class: spec.and_then(|s| s.load_balancer_class.clone()),
            requested,
            families,
            labels: svc.metadata.labels.clone().unwrap_or_default(),
        }
    }

    /// Whether the pools serve this Service's class (`classless`: also Services without
    /// one).
    pub fn is_ours(&self, classless: bool) -> bool {
        match &self.class {
            Some(c) => c == LB_CLASS,
            None => classless,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(yaml: &str) -> Result<(Pool, Vec<String>), String> {
        let object: LoadBalancerIPPool = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        to_pool(&object).map_err(|e| e.to_string())
    }

    #[test]
    fn a_pool_object_reads_as_cilium_writes_it() {
        let (p, warnings) = pool(
            "metadata: {name: lan}\n\
             spec:\n  blocks: [{cidr: 192.0.2.200/29}, {start: 192.0.2.240, stop: 192.0.2.244}, {cidr: 'fd00::/120'}]\n  \
             serviceSelector:\n    matchLabels: {tier: web}\n    matchExpressions: [{key: env, operator: NotIn, values: [dev]}]\n",
        )
        .unwrap();
        assert!(warnings.is_empty());
        assert_eq!(p.name, "lan");
        assert_eq!(p.size(Family::V4), 6 + 5);
        assert_eq!(p.size(Family::V6), 255);
        let labels = |l: &[(&str, &str)]| {
            l.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert!(p.selector.matches(&labels(&[("tier", "web")])));
        assert!(
            !p.selector
                .matches(&labels(&[("tier", "web"), ("env", "dev")]))
        );
        assert!(!p.disabled);
    }

    #[test]
    fn malformed_pools_are_refused_by_field() {
        for (yaml, want) in [
            (
                "metadata: {name: p}\nspec: {blcoks: []}",
                "unknown field `blcoks`",
            ),
            (
                "metadata: {name: p}\nspec: {blocks: [{cidr: 10.0.0.0/33}]}",
                "spec.blocks[0]",
            ),
            (
                "metadata: {name: p}\nspec: {blocks: [{cidr: 10.0.0.0/24, start: 10.0.0.1}]}",
                "give either cidr, or start and stop",
            ),
            (
                "metadata: {name: p}\nspec: {blocks: [{start: 10.0.0.9, stop: 10.0.0.1}]}",
                "ends before it starts",
            ),
            (
                "metadata: {name: p}\nspec: {serviceSelector: {matchExpressions: [{key: a, operator: Has}]}}",
                "In, NotIn, Exists or DoesNotExist",
            ),
            ("spec: {blocks: []}", "missing metadata.name"),
        ] {
            let err = pool(yaml).expect_err(yaml);
            assert!(err.contains(want), "{yaml}: {err}");
        }
        let (_, warnings) = pool("metadata: {name: p}\nspec: {}").unwrap();
        assert_eq!(warnings.len(), 1, "an empty pool is said to be empty");
    }

    #[test]
    fn a_service_request_reads_class_addresses_and_families() {
        let svc: corev1::Service = serde_yaml::from_str(
            "metadata:\n  name: web\n  labels: {tier: web}\n  annotations: {svc-ebpf.dev/loadbalancer-ips: '192.0.2.210, fd00::5,nonsense'}\n\
             spec:\n  type: LoadBalancer\n  loadBalancerIP: 192.0.2.210\n  ipFamilies: [IPv6, IPv4]\n",
        )
        .unwrap();
        let mut warnings = Vec::new();
        let r = LbRequest::from_k8s(&svc, &[], &mut warnings);
        assert_eq!(
            r.requested,
            [
                "192.0.2.210".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
        assert_eq!(r.families, [Family::V6, Family::V4]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(r.is_ours(true) && !r.is_ours(false));
        let mut other = r.clone();
        other.class = Some("example.com/cloud".into());
        assert!(!other.is_ours(true));
        other.class = Some(LB_CLASS.into());
        assert!(other.is_ours(false));
        // No ipFamilies: the ClusterIPs' families; none either: IPv4.
        let plain: corev1::Service = serde_yaml::from_str("metadata: {name: p}\nspec: {}").unwrap();
        let v6: IpAddr = "fd00:10:96::1".parse().unwrap();
        assert_eq!(
            LbRequest::from_k8s(&plain, &[v6], &mut warnings).families,
            [Family::V6]
        );
        assert_eq!(
            LbRequest::from_k8s(&plain, &[], &mut warnings).families,
            [Family::V4]
        );
    }
}
