//! The topology fields: spec.trafficDistribution, and the zone and hints of slice endpoints.
use super::*;

#[test]
fn traffic_distribution_values_and_unknown_ones() {
    let with = |v: Option<&str>| {
        let mut s = k8s_service(vec![kport("a", 80, "TCP")]);
        spec_mut(&mut s).traffic_distribution = v.map(Into::into);
        Service::from_k8s(&s).unwrap()
    };
    for (value, want) in [
        (None, None),
        (Some(""), None),
        (Some("PreferClose"), Some(TrafficDistribution::PreferClose)),
        (
            Some("PreferSameZone"),
            Some(TrafficDistribution::PreferSameZone),
        ),
        (
            Some("PreferSameNode"),
            Some(TrafficDistribution::PreferSameNode),
        ),
    ] {
        let (svc, w) = with(value);
        assert_eq!(svc.traffic_distribution, want, "{value:?}");
        assert!(w.is_empty(), "{value:?}: {w:?}");
    }
    // A value this build does not know (or a wrong case) is only a preference: the Service
    // is served, without it, and a warning says so.
    for value in ["PreferSameRegion", "preferclose"] {
        let (svc, w) = with(Some(value));
        assert_eq!(svc.traffic_distribution, None);
        assert_eq!(
            w,
            [format!(
                "spec.trafficDistribution {value:?} ignored: not PreferClose, PreferSameZone or PreferSameNode"
            )]
        );
    }
    assert_eq!(
        TrafficDistribution::PreferSameNode.to_string(),
        "PreferSameNode"
    );
}

#[test]
fn slice_endpoints_keep_zone_and_hints() {
    let endpoint =
        |zone: Option<&str>, hints: Option<discoveryv1::EndpointHints>| discoveryv1::Endpoint {
            addresses: vec!["10.1.0.5".into()],
            node_name: Some("node-a".into()),
            zone: zone.map(Into::into),
            hints,
            ..Default::default()
        };
    let slice = discoveryv1::EndpointSlice {
        metadata: ObjectMeta {
            name: Some("web-abc".into()),
            labels: Some([(SERVICE_NAME_LABEL.to_string(), "web".to_string())].into()),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: Some(vec![
            endpoint(
                Some("zone-a"),
                Some(discoveryv1::EndpointHints {
                    for_zones: Some(vec![
                        discoveryv1::ForZone {
                            name: "zone-a".into(),
                        },
                        discoveryv1::ForZone {
                            name: "zone-b".into(),
                        },
                    ]),
                    for_nodes: Some(vec![discoveryv1::ForNode {
                        name: "node-a".into(),
                    }]),
                }),
            ),
            endpoint(Some(""), Some(discoveryv1::EndpointHints::default())),
            endpoint(None, None),
        ]),
        ports: Some(vec![discoveryv1::EndpointPort {
            port: Some(8080),
            ..Default::default()
        }]),
    };
    let (_, group, w) = endpoint_group_from_slice(&slice).unwrap();
    assert!(w.is_empty());
    let e = group.unwrap().endpoints;
    assert_eq!(e[0].zone.as_deref(), Some("zone-a"));
    assert_eq!(
        e[0].hints,
        EndpointHints {
            for_zones: ["zone-a".to_string(), "zone-b".to_string()].into(),
            for_nodes: ["node-a".to_string()].into(),
        }
    );
    // An empty zone is no zone; empty hints are no hints.
    assert_eq!(e[1].zone, None);
    assert!(e[1].hints.is_empty());
    assert_eq!(e[2].zone, None);
    assert!(e[2].hints.is_empty());
}

/// The YAML a user writes in manifest mode reaches the model the same way.
#[test]
fn slice_hints_from_yaml() {
    let slice: discoveryv1::EndpointSlice = serde_yaml::from_str(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}\n\
         addressType: IPv4\nports: [{port: 8080}]\nendpoints:\n\
         - addresses: [10.244.1.11]\n  nodeName: node1\n  zone: zone-a\n\
         \x20 hints: {forZones: [{name: zone-a}], forNodes: [{name: node1}]}\n",
    )
    .unwrap();
    let (_, group, _) = endpoint_group_from_slice(&slice).unwrap();
    let e = &group.unwrap().endpoints[0];
    assert_eq!(e.zone.as_deref(), Some("zone-a"));
    assert!(e.hints.for_zones.contains("zone-a") && e.hints.for_nodes.contains("node1"));
}
