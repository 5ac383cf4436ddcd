//! EndpointSlices and legacy Endpoints.
use super::*;

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

    // An IPv6 slice's addresses must be IPv6 (the API server validates them so); an FQDN
    // slice is no proxy's.
    let mut v6 = slice.clone();
    v6.address_type = "IPv6".into();
    assert_eq!(
        endpoint_group_from_slice(&v6).unwrap_err().to_string(),
        "endpoints[0].addresses[0] \"10.1.0.5\" is not an IPv6 address"
    );
    let mut fqdn = slice.clone();
    fqdn.address_type = "FQDN".into();
    assert_eq!(endpoint_group_from_slice(&fqdn).unwrap().1, None);
    let mut unlabelled = slice;
    unlabelled.metadata.labels = None;
    assert_eq!(
        endpoint_group_from_slice(&unlabelled)
            .unwrap_err()
            .to_string(),
        "EndpointSlice has no kubernetes.io/service-name label"
    );
}

#[test]
fn legacy_endpoints_keep_node_name() {
    let ep = corev1::Endpoints {
        metadata: ObjectMeta {
            name: Some("web".into()),
            ..Default::default()
        },
        subsets: Some(vec![corev1::EndpointSubset {
            addresses: Some(vec![corev1::EndpointAddress {
                ip: "10.1.0.5".into(),
                node_name: Some("node-a".into()),
                ..Default::default()
            }]),
            not_ready_addresses: Some(vec![corev1::EndpointAddress {
                ip: "10.1.0.6".into(),
                ..Default::default()
            }]),
            ports: Some(vec![corev1::EndpointPort {
                port: 8080,
                ..Default::default()
            }]),
        }]),
    };
    let (_, groups, w) = endpoint_groups_from_endpoints(&ep).unwrap();
    assert!(w.is_empty());
    let e = &groups[0].endpoints;
    assert_eq!(e[0].node_name.as_deref(), Some("node-a"));
    assert!(e[0].ready);
    assert_eq!(e[1].node_name, None);
    assert!(!e[1].ready && !e[1].serving);
}

/// An endpoint's addresses are fungible (the API says so): the first is its address, as
/// kube-proxy takes it, the others are checked and not used; one without any is skipped
/// with a warning (the API requires one).
#[test]
fn an_endpoint_is_its_first_address() {
    let slice = |addresses: Vec<&str>| discoveryv1::EndpointSlice {
        metadata: ObjectMeta {
            name: Some("web-abc".into()),
            namespace: Some("shop".into()),
            labels: Some([(SERVICE_NAME_LABEL.to_string(), "web".to_string())].into()),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: Some(vec![
            discoveryv1::Endpoint {
                addresses: addresses.into_iter().map(String::from).collect(),
                ..Default::default()
            },
            discoveryv1::Endpoint {
                addresses: vec!["10.1.0.9".into()],
                ..Default::default()
            },
        ]),
        ports: None,
    };
    let (_, group, w) = endpoint_group_from_slice(&slice(vec!["10.1.0.5", "10.1.0.6"])).unwrap();
    assert!(w.is_empty(), "{w:?}");
    let addresses: Vec<IpAddr> = group.unwrap().endpoints.iter().map(|e| e.address).collect();
    assert_eq!(
        addresses,
        vec![IpAddr::from([10, 1, 0, 5]), IpAddr::from([10, 1, 0, 9])]
    );

    let (_, group, w) = endpoint_group_from_slice(&slice(vec![])).unwrap();
    assert_eq!(w, vec!["endpoints[0] has no address: skipped".to_string()]);
    assert_eq!(group.unwrap().endpoints.len(), 1);

    let err = endpoint_group_from_slice(&slice(vec!["10.1.0.5", "fd00::1"])).unwrap_err();
    assert!(
        err.to_string().contains("endpoints[0].addresses[1]"),
        "{err}"
    );
}

/// An IPv6 EndpointSlice is a group of IPv6 endpoints, with its conditions and node.
#[test]
fn ipv6_slices_are_groups_of_ipv6_endpoints() {
    let slice = discoveryv1::EndpointSlice {
        metadata: ObjectMeta {
            name: Some("web-v6".into()),
            namespace: Some("shop".into()),
            labels: Some([(SERVICE_NAME_LABEL.to_string(), "web".to_string())].into()),
            ..Default::default()
        },
        address_type: "IPv6".into(),
        endpoints: Some(vec![
            discoveryv1::Endpoint {
                addresses: vec!["fd00:10:1::5".into()],
                node_name: Some("node-a".into()),
                ..Default::default()
            },
            discoveryv1::Endpoint {
                addresses: vec!["fd00:10:1::6".into()],
                conditions: Some(discoveryv1::EndpointConditions {
                    ready: Some(false),
                    serving: Some(true),
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
    assert_eq!(svc, ObjectRef::new("shop", "web"));
    assert!(w.is_empty(), "{w:?}");
    let group = group.expect("an IPv6 slice is used");
    let addresses: Vec<IpAddr> = group.endpoints.iter().map(|e| e.address).collect();
    assert_eq!(
        addresses,
        vec![
            "fd00:10:1::5".parse::<IpAddr>().unwrap(),
            "fd00:10:1::6".parse().unwrap()
        ]
    );
    assert_eq!(group.endpoints[0].node_name.as_deref(), Some("node-a"));
    assert!(group.endpoints[1].serving && group.endpoints[1].terminating);
    // An IPv4 address in an IPv6 slice is refused, naming it.
    let mut bad = slice;
    bad.endpoints.as_mut().unwrap()[1].addresses = vec!["10.1.0.6".into()];
    assert_eq!(
        endpoint_group_from_slice(&bad).unwrap_err().to_string(),
        "endpoints[1].addresses[0] \"10.1.0.6\" is not an IPv6 address"
    );
}

/// Legacy Endpoints keep the addresses of both families (a dual-stack Service's
/// Endpoints object lists its primary family's only, but nothing forbids both).
#[test]
fn legacy_endpoints_keep_ipv6_addresses() {
    let ep = corev1::Endpoints {
        metadata: ObjectMeta {
            name: Some("web".into()),
            ..Default::default()
        },
        subsets: Some(vec![corev1::EndpointSubset {
            addresses: Some(vec![
                corev1::EndpointAddress {
                    ip: "fd00:10:1::5".into(),
                    ..Default::default()
                },
                corev1::EndpointAddress {
                    ip: "10.1.0.5".into(),
                    ..Default::default()
                },
            ]),
            ports: Some(vec![corev1::EndpointPort {
                port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        }]),
    };
    let (_, groups, w) = endpoint_groups_from_endpoints(&ep).unwrap();
    assert!(w.is_empty(), "{w:?}");
    let addresses: Vec<IpAddr> = groups[0].endpoints.iter().map(|e| e.address).collect();
    assert_eq!(
        addresses,
        vec![
            "fd00:10:1::5".parse::<IpAddr>().unwrap(),
            "10.1.0.5".parse().unwrap()
        ]
    );
}
