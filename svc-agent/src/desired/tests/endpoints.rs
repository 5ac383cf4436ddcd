//! Which endpoints a frontend gets: ready / terminating choice, ports, local sets, health checks, partial updates.
use super::*;

/// update_endpoints on a state computed for an earlier cluster equals compute on the
/// new one, for endpoint changes (added, removed, terminating, local, no endpoints,
/// slice gone) of some Services, with others untouched.
#[test]
fn update_endpoints_matches_a_full_compute() {
    let p = || {
        vec![
            port("http", 80, Protocol::Tcp),
            port("dns", 53, Protocol::Udp),
        ]
    };
    let mut lb = lb_service();
    lb.external_traffic_policy = TrafficPolicy::Local;
    lb.health_check_node_port = Some(32000);
    let services = vec![
        service("default", "a", &["10.96.0.1"], p()),
        service("default", "b", &["10.96.0.2"], p()),
        service("shop", "c", &["10.96.0.3"], p()),
        lb,
    ];
    let groups = |addrs: &[(&str, Option<&str>, bool)]| {
        vec![group(
            &[("http", 8080, Protocol::Tcp), ("dns", 5353, Protocol::Udp)],
            addrs
                .iter()
                .map(|(a, n, term)| {
                    let e = ep(a, !term, true, *term);
                    match n {
                        Some(n) => on(n, e),
                        None => e,
                    }
                })
                .collect(),
        )]
    };
    let http = |addrs: &[(&str, Option<&str>)]| {
        vec![group(
            &[("http", 8080, Protocol::Tcp)],
            addrs
                .iter()
                .map(|(a, n)| match n {
                    Some(n) => on(n, ep(a, true, true, false)),
                    None => ep(a, true, true, false),
                })
                .collect(),
        )]
    };
    let before = cluster(
        services.clone(),
        vec![
            (
                ObjectRef::new("default", "a"),
                groups(&[("10.244.1.1", None, false)]),
            ),
            (
                ObjectRef::new("default", "b"),
                groups(&[("10.244.1.2", None, false)]),
            ),
            (
                ObjectRef::new("shop", "c"),
                groups(&[("10.244.1.3", None, false)]),
            ),
            (
                ObjectRef::new("default", "lb"),
                http(&[("10.244.2.1", Some("other"))]),
            ),
        ],
    );
    let after = cluster(
        services,
        vec![
            (
                ObjectRef::new("default", "a"),
                groups(&[
                    ("10.244.1.1", None, true),
                    ("10.244.1.9", Some(NODE_A), false),
                ]),
            ),
            // b's slice is gone: no endpoints, rejects.
            (
                ObjectRef::new("shop", "c"),
                groups(&[("10.244.1.3", None, false)]),
            ),
            (
                ObjectRef::new("default", "lb"),
                http(&[("10.244.2.1", Some("other")), ("10.244.2.2", Some(NODE_A))]),
            ),
        ],
    );
    let node = node();
    let (mut state, _) = compute(&before, &node);
    let changed: BTreeSet<ObjectRef> = ["a", "b", "lb"]
        .into_iter()
        .map(|n| ObjectRef::new("default", n))
        .collect();
    let frontends = update_endpoints(&mut state, &after, &node, &changed);
    let (want, _) = compute(&after, &node);
    assert_eq!(state, want);
    // Every frontend of a, b and lb changed; none of c's.
    assert!(
        frontends
            .iter()
            .all(|f| state.frontends[f].service.name != "c")
    );
    assert!(frontends.contains(&fe("10.96.0.2", 80, Protocol::Tcp)));
    assert_eq!(
        state.health_checks[0].local_endpoints, 1,
        "the health check counts the new local endpoint"
    );
    // Nothing changed: nothing reported.
    assert!(update_endpoints(&mut state, &after, &node, &changed).is_empty());
}

#[test]
fn ready_endpoints_win_over_terminating_ones() {
    let svc = service(
        "default",
        "web",
        &["10.96.0.10"],
        vec![port("", 80, Protocol::Tcp)],
    );
    let c = cluster(
        vec![svc],
        vec![(
            ObjectRef::new("default", "web"),
            vec![
                group(
                    &[("", 8080, Protocol::Tcp)],
                    vec![
                        ep("10.1.0.3", true, true, false),
                        ep("10.1.0.4", false, true, true),
                    ],
                ),
                group(
                    &[("", 8080, Protocol::Tcp)],
                    vec![
                        ep("10.1.0.2", true, true, false),
                        ep("10.1.0.2", true, true, false),
                    ],
                ),
            ],
        )],
    );
    let (state, problems) = compute(&c, &NodeContext::default());
    assert!(problems.is_empty());
    assert_eq!(
        backends(&state, fe("10.96.0.10", 80, Protocol::Tcp)),
        vec![
            be("10.1.0.2", 8080, Protocol::Tcp),
            be("10.1.0.3", 8080, Protocol::Tcp)
        ]
    );
    let f = &state.frontends[&fe("10.96.0.10", 80, Protocol::Tcp)];
    assert_eq!(f.service, ObjectRef::new("default", "web"));
}

#[test]
fn serving_terminating_used_only_when_none_ready_and_never_not_serving() {
    let svc = service(
        "default",
        "web",
        &["10.96.0.10"],
        vec![port("", 80, Protocol::Tcp)],
    );
    let c = cluster(
        vec![svc],
        vec![(
            ObjectRef::new("default", "web"),
            vec![group(
                &[("", 8080, Protocol::Tcp)],
                vec![
                    ep("10.1.0.4", false, true, true),
                    ep("10.1.0.5", false, false, true),
                    ep("10.1.0.6", false, false, false),
                ],
            )],
        )],
    );
    let (state, _) = compute(&c, &NodeContext::default());
    assert_eq!(
        backends(&state, fe("10.96.0.10", 80, Protocol::Tcp)),
        vec![be("10.1.0.4", 8080, Protocol::Tcp)]
    );

    // Only not-serving endpoints: frontend present with no backends.
    let svc = service(
        "default",
        "web",
        &["10.96.0.10"],
        vec![port("", 80, Protocol::Tcp)],
    );
    let c = cluster(
        vec![svc],
        vec![(
            ObjectRef::new("default", "web"),
            vec![group(
                &[("", 8080, Protocol::Tcp)],
                vec![ep("10.1.0.5", false, false, true)],
            )],
        )],
    );
    let (state, _) = compute(&c, &NodeContext::default());
    assert_eq!(
        backends(&state, fe("10.96.0.10", 80, Protocol::Tcp)),
        vec![]
    );
}

#[test]
fn named_ports_resolve_through_slice_port_names_multi_port() {
    let svc = service(
        "shop",
        "api",
        &["10.96.1.1"],
        vec![
            port("http", 80, Protocol::Tcp),
            port("metrics", 9090, Protocol::Tcp),
        ],
    );
    // Two slices (e.g. two pod templates) resolve the named targetPort differently.
    let c = cluster(
        vec![svc],
        vec![(
            ObjectRef::new("shop", "api"),
            vec![
                group(
                    &[
                        ("metrics", 9100, Protocol::Tcp),
                        ("http", 8080, Protocol::Tcp),
                    ],
                    vec![ep("10.1.0.10", true, true, false)],
                ),
                group(
                    &[("http", 8081, Protocol::Tcp)],
                    vec![ep("10.1.0.11", true, true, false)],
                ),
            ],
        )],
    );
    let (state, _) = compute(&c, &NodeContext::default());
    assert_eq!(state.frontends.len(), 2);
    assert_eq!(
        backends(&state, fe("10.96.1.1", 80, Protocol::Tcp)),
        vec![
            be("10.1.0.10", 8080, Protocol::Tcp),
            be("10.1.0.11", 8081, Protocol::Tcp)
        ]
    );
    assert_eq!(
        backends(&state, fe("10.96.1.1", 9090, Protocol::Tcp)),
        vec![be("10.1.0.10", 9100, Protocol::Tcp)]
    );
    assert_eq!(
        state.frontends[&fe("10.96.1.1", 9090, Protocol::Tcp)].port_name,
        "metrics"
    );
}

#[test]
fn port_without_matching_slice_port_has_no_backends() {
    let svc = service(
        "default",
        "web",
        &["10.96.0.10"],
        vec![
            port("http", 80, Protocol::Tcp),
            port("udp", 80, Protocol::Udp),
        ],
    );
    let c = cluster(
        vec![svc],
        vec![(
            ObjectRef::new("default", "web"),
            vec![group(
                &[("http", 8080, Protocol::Udp)],
                vec![ep("10.1.0.3", true, true, false)],
            )],
        )],
    );
    let (state, _) = compute(&c, &NodeContext::default());
    assert_eq!(
        backends(&state, fe("10.96.0.10", 80, Protocol::Tcp)),
        vec![]
    );
    assert_eq!(
        backends(&state, fe("10.96.0.10", 80, Protocol::Udp)),
        vec![]
    );
}

#[test]
fn local_set_vs_cluster_set() {
    let mut svc = lb_service();
    svc.external_traffic_policy = TrafficPolicy::Local;
    let groups = http_group(vec![
        on("node-b", ep("10.1.1.1", true, true, false)),
        on(NODE_A, ep("10.1.0.1", true, true, false)),
        on(NODE_A, ep("10.1.0.2", false, true, true)),
        ep("10.1.2.1", true, true, false), // no nodeName: never local
    ]);
    let c = cluster(vec![svc], vec![(ObjectRef::new("default", "lb"), groups)]);
    let (state, _) = compute(&c, &node());
    let s = &state.frontends[&fe("198.51.100.1", 80, Protocol::Tcp)];
    let tcp = Protocol::Tcp;
    assert_eq!(
        s.backends,
        vec![
            be("10.1.0.1", 8080, tcp),
            be("10.1.1.1", 8080, tcp),
            be("10.1.2.1", 8080, tcp)
        ]
    );
    assert_eq!(s.local_backends, vec![be("10.1.0.1", 8080, tcp)]);
    assert_eq!(s.terminating, vec![be("10.1.0.2", 8080, tcp)]);
    // The ClusterIP frontend gets the same sets (its policy is Cluster).
    let cip = &state.frontends[&fe("10.96.0.10", 80, tcp)];
    assert!(!cip.local_policy);
    assert_eq!(cip.local_backends, s.local_backends);
}

#[test]
fn no_ready_local_endpoint_falls_back_to_local_serving_terminating() {
    let mut svc = lb_service();
    svc.external_traffic_policy = TrafficPolicy::Local;
    let groups = http_group(vec![
        on("node-b", ep("10.1.1.1", true, true, false)),
        on(NODE_A, ep("10.1.0.2", false, true, true)),
        on(NODE_A, ep("10.1.0.3", false, false, true)), // not serving: never used
        on(NODE_A, ep("10.1.0.4", false, false, false)), // not ready, not terminating
    ]);
    let c = cluster(vec![svc], vec![(ObjectRef::new("default", "lb"), groups)]);
    let (state, _) = compute(&c, &node());
    let tcp = Protocol::Tcp;
    let s = &state.frontends[&fe("203.0.113.7", 80, tcp)];
    assert!(s.local_policy);
    // Cluster-wide a ready endpoint exists, so the terminating one is not a backend...
    assert_eq!(s.backends, vec![be("10.1.1.1", 8080, tcp)]);
    // ...but locally there is no ready one: the serving-terminating local one is used.
    assert_eq!(s.local_backends, vec![be("10.1.0.2", 8080, tcp)]);
    // Terminating (serving or not) and not a backend: kept for established flows.
    assert_eq!(
        s.terminating,
        vec![be("10.1.0.2", 8080, tcp), be("10.1.0.3", 8080, tcp)]
    );
}

#[test]
fn node_without_a_name_has_no_local_endpoints() {
    let mut svc = lb_service();
    svc.external_traffic_policy = TrafficPolicy::Local;
    svc.health_check_node_port = Some(31000);
    let groups = http_group(vec![on(NODE_A, ep("10.1.0.1", true, true, false))]);
    let c = cluster(vec![svc], vec![(ObjectRef::new("default", "lb"), groups)]);
    let mut n = node();
    n.node_name = None;
    let (state, _) = compute(&c, &n);
    let s = &state.frontends[&fe("198.51.100.1", 80, Protocol::Tcp)];
    assert_eq!(s.backends, vec![be("10.1.0.1", 8080, Protocol::Tcp)]);
    assert_eq!(s.local_backends, vec![]);
    assert_eq!(state.health_checks[0].local_endpoints, 0);
}

#[test]
fn all_terminating_cluster_set_and_terminating_list() {
    let svc = service(
        "default",
        "web",
        &["10.96.0.10"],
        vec![port("http", 80, Protocol::Tcp)],
    );
    let groups = http_group(vec![
        on(NODE_A, ep("10.1.0.1", false, true, true)),
        ep("10.1.0.2", false, false, true),
        ep("10.1.0.3", false, false, false),
    ]);
    let c = cluster(vec![svc], vec![(ObjectRef::new("default", "web"), groups)]);
    let (state, _) = compute(&c, &node());
    let s = &state.frontends[&fe("10.96.0.10", 80, Protocol::Tcp)];
    let tcp = Protocol::Tcp;
    assert_eq!(s.backends, vec![be("10.1.0.1", 8080, tcp)]);
    assert_eq!(s.local_backends, vec![be("10.1.0.1", 8080, tcp)]);
    // The serving-terminating one is a backend, so only the not-serving one is listed.
    assert_eq!(s.terminating, vec![be("10.1.0.2", 8080, tcp)]);
}

#[test]
fn health_checks_count_distinct_local_ready_endpoints() {
    let mut a = lb_service();
    a.id = ObjectRef::new("default", "a");
    a.external_traffic_policy = TrafficPolicy::Local;
    a.health_check_node_port = Some(31000);
    a.ports = vec![
        port("http", 80, Protocol::Tcp),
        port("dns", 53, Protocol::Udp),
    ];
    a.external_ips.clear();
    a.load_balancer_ingress.clear();
    // ETP Cluster: no health check even with a port.
    let mut b = a.clone();
    b.id = ObjectRef::new("default", "b");
    b.external_traffic_policy = TrafficPolicy::Cluster;
    b.health_check_node_port = Some(31001);
    // NodePort type with ETP Local: kube-proxy serves no health check.
    let mut n = a.clone();
    n.id = ObjectRef::new("default", "n");
    n.kind = ServiceKind::NodePort;
    n.health_check_node_port = Some(31002);
    // Same health check port as `a`: reported.
    let mut z = a.clone();
    z.id = ObjectRef::new("zz", "a");
    z.cluster_ips = vec![ip("10.96.9.9")];
    let groups = vec![
        group(
            &[("http", 8080, Protocol::Tcp), ("dns", 5353, Protocol::Udp)],
            vec![
                on(NODE_A, ep("10.1.0.1", true, true, false)),
                on(NODE_A, ep("10.1.0.2", true, true, false)),
                on(NODE_A, ep("10.1.0.3", false, true, true)), // serving-terminating
                on("node-b", ep("10.1.1.1", true, true, false)),
            ],
        ),
        // The same pod listed again in a second slice counts once.
        group(
            &[("http", 8080, Protocol::Tcp)],
            vec![on(NODE_A, ep("10.1.0.1", true, true, false))],
        ),
        // A slice without ports contributes nothing.
        group(&[], vec![on(NODE_A, ep("10.1.0.9", true, true, false))]),
    ];
    let c = cluster(
        vec![z, n, b, a],
        vec![
            (ObjectRef::new("default", "a"), groups.clone()),
            (ObjectRef::new("zz", "a"), groups),
        ],
    );
    let (state, problems) = compute(&c, &node());
    // Two local ready endpoints, with two ports each: 2.
    assert_eq!(
        state.health_checks,
        vec![HealthCheck {
            service: ObjectRef::new("default", "a"),
            port: 31000,
            local_endpoints: 2
        }]
    );
    let reasons: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert!(
        reasons.contains(
            &"Service zz/a: healthCheckNodePort 31000 skipped: already used by Service default/a"
                .to_string()
        ),
        "{reasons:?}"
    );

    // No local ready endpoint: 0 (the server answers 503), even with a terminating one.
    let mut only = lb_service();
    only.external_traffic_policy = TrafficPolicy::Local;
    only.health_check_node_port = Some(31005);
    let c = cluster(
        vec![only],
        vec![(
            ObjectRef::new("default", "lb"),
            http_group(vec![
                on(NODE_A, ep("10.1.0.3", false, true, true)),
                on("node-b", ep("10.1.1.1", true, true, false)),
            ]),
        )],
    );
    let (state, _) = compute(&c, &node());
    assert_eq!(state.health_checks.len(), 1);
    assert_eq!(state.health_checks[0].local_endpoints, 0);
}
