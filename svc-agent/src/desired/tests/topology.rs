//! Topology-aware routing: kube-proxy's `TestCategorizeEndpoints` table
//! (pkg/proxy/topology_test.go) ported row by row, then the `forNodes` rules of its
//! `topologyModeFromHints` (PreferSameNode, Kubernetes 1.33+), each as {endpoints with
//! hints and locality, this node's name and zone, traffic policies} → {cluster set, local
//! set}. Every row is checked under every `trafficDistribution` (unset, PreferClose,
//! PreferSameZone, PreferSameNode): the hints alone decide, as in kube-proxy.
use super::*;
use crate::model::TrafficDistribution;

/// One endpoint of a row: address (port 80), conditions, whether it is on this node, hints.
#[derive(Clone)]
struct Ep {
    addr: &'static str,
    ready: bool,
    serving: bool,
    terminating: bool,
    local: bool,
    zones: &'static [&'static str],
    nodes: &'static [&'static str],
}

/// A ready remote endpoint without hints.
const fn e(addr: &'static str) -> Ep {
    Ep {
        addr,
        ready: true,
        serving: true,
        terminating: false,
        local: false,
        zones: &[],
        nodes: &[],
    }
}

impl Ep {
    const fn zones(mut self, zones: &'static [&'static str]) -> Ep {
        self.zones = zones;
        self
    }
    const fn nodes(mut self, nodes: &'static [&'static str]) -> Ep {
        self.nodes = nodes;
        self
    }
    const fn local(mut self) -> Ep {
        self.local = true;
        self
    }
    /// Not ready, not serving, not terminating (kube-proxy's `ready: false`).
    const fn unready(mut self) -> Ep {
        self.ready = false;
        self.serving = false;
        self
    }
    /// Serving and terminating, not ready.
    const fn serving_terminating(mut self) -> Ep {
        self.ready = false;
        self.serving = true;
        self.terminating = true;
        self
    }
}

struct Case {
    name: &'static str,
    /// This node's name (the Endpoint's nodeName of local endpoints).
    node: Option<&'static str>,
    /// This node's zone (kube-proxy: the node's topology.kubernetes.io/zone label).
    zone: Option<&'static str>,
    itp_local: bool,
    etp_local: bool,
    /// The Service has a nodePort (kube-proxy: externally accessible, so ETP applies).
    node_port: bool,
    endpoints: Vec<Ep>,
    /// Expected `backends`. Where kube-proxy's clusterEndpoints is nil (an
    /// internalTrafficPolicy Local Service with no external address never uses them), ours
    /// is still computed: it is what tells DROP (endpoints elsewhere) from REJECT (none
    /// anywhere), kube-proxy's hasAnyEndpoints.
    cluster: &'static [&'static str],
    /// Expected `local_backends` where a frontend has a Local policy; `None` where kube-proxy's
    /// localEndpoints is nil, which here means no frontend has `local_policy`.
    local: Option<&'static [&'static str]>,
}

const A: &[&str] = &["zone-a"];
const B: &[&str] = &["zone-b"];
const C: &[&str] = &["zone-c"];

/// A row with node "node-a" in `zone`, Cluster policies, no nodePort.
fn case(
    name: &'static str,
    zone: Option<&'static str>,
    endpoints: Vec<Ep>,
    cluster: &'static [&'static str],
) -> Case {
    Case {
        name,
        node: Some(NODE_A),
        zone,
        itp_local: false,
        etp_local: false,
        node_port: false,
        endpoints,
        cluster,
        local: None,
    }
}

impl Case {
    fn itp(mut self) -> Case {
        self.itp_local = true;
        self
    }
    /// externalTrafficPolicy Local, with a nodePort (externally accessible).
    fn etp(mut self) -> Case {
        self.etp_local = true;
        self.node_port = true;
        self
    }
    fn node_port(mut self) -> Case {
        self.node_port = true;
        self
    }
    fn node(mut self, node: Option<&'static str>) -> Case {
        self.node = node;
        self
    }
    fn local(mut self, local: &'static [&'static str]) -> Case {
        self.local = Some(local);
        self
    }
}

const VIP: &str = "10.96.0.1";

fn build(c: &Case, td: Option<TrafficDistribution>) -> (Cluster, NodeContext) {
    let mut svc = service("default", "svc", &[VIP], vec![port("", 80, Protocol::Tcp)]);
    svc.traffic_distribution = td;
    if c.node_port {
        svc.kind = ServiceKind::NodePort;
        svc.ports[0].node_port = Some(30080);
    }
    if c.itp_local {
        svc.internal_traffic_policy = TrafficPolicy::Local;
    }
    if c.etp_local {
        svc.external_traffic_policy = TrafficPolicy::Local;
    }
    let endpoints = c
        .endpoints
        .iter()
        .map(|x| {
            let mut ep = ep(x.addr, x.ready, x.serving, x.terminating);
            ep.node_name = Some(if x.local { NODE_A } else { "node-remote" }.into());
            ep.hints.for_zones = x.zones.iter().map(|z| z.to_string()).collect();
            ep.hints.for_nodes = x.nodes.iter().map(|n| n.to_string()).collect();
            ep
        })
        .collect();
    let node = NodeContext {
        node_name: c.node.map(Into::into),
        zone: c.zone.map(Into::into),
        ..node()
    };
    let cluster = cluster(
        vec![svc],
        vec![(
            ObjectRef::new("default", "svc"),
            vec![group(&[("", 80, Protocol::Tcp)], endpoints)],
        )],
    );
    (cluster, node)
}

fn addrs(list: &[BackendAddr]) -> Vec<String> {
    list.iter().map(|b| b.addr.to_string()).collect()
}

fn strings(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

const DISTRIBUTIONS: [Option<TrafficDistribution>; 4] = [
    None,
    Some(TrafficDistribution::PreferClose),
    Some(TrafficDistribution::PreferSameZone),
    Some(TrafficDistribution::PreferSameNode),
];

/// What a row gets wrong under `td`, if anything.
fn check(c: &Case, td: Option<TrafficDistribution>) -> Option<String> {
    let (cluster, node) = build(c, td);
    let (state, problems) = compute(&cluster, &node);
    if !problems.is_empty() {
        return Some(format!("problems {problems:?}"));
    }
    let Some(fs) = state.frontends.get(&fe(VIP, 80, Protocol::Tcp)) else {
        return Some("no ClusterIP frontend".into());
    };
    let mut wrong = Vec::new();
    if addrs(&fs.backends) != strings(c.cluster) {
        wrong.push(format!(
            "cluster set {:?}, want {:?}",
            addrs(&fs.backends),
            strings(c.cluster)
        ));
    }
    let local_policy = state.frontends.values().any(|f| f.local_policy);
    match c.local {
        Some(want) if addrs(&fs.local_backends) != strings(want) || !local_policy => {
            wrong.push(format!(
                "local set {:?} (a Local frontend: {local_policy}), want {:?}",
                addrs(&fs.local_backends),
                strings(want)
            ))
        }
        None if local_policy => wrong.push("a frontend has a Local policy, want none".into()),
        _ => {}
    }
    // Every frontend of the port has the same sets.
    if state
        .frontends
        .values()
        .any(|f| f.backends != fs.backends || f.local_backends != fs.local_backends)
    {
        wrong.push("frontends of one port differ".into());
    }
    (!wrong.is_empty()).then(|| wrong.join("; "))
}

fn run(cases: &[Case]) {
    let mut failures = Vec::new();
    for c in cases {
        for td in DISTRIBUTIONS {
            if let Some(w) = check(c, td) {
                failures.push(format!("{} (trafficDistribution {td:?}): {w}", c.name));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// kube-proxy's TestCategorizeEndpoints, row for row (zone hints; their addresses, port 80).
#[test]
fn kube_proxy_categorize_endpoints_table() {
    let four = || {
        vec![
            e("10.1.2.3").zones(A),
            e("10.1.2.4").zones(B),
            e("10.1.2.5").zones(C),
            e("10.1.2.6").zones(A),
        ]
    };
    let two_local_two_remote = || {
        vec![
            e("10.1.2.3").zones(A).local(),
            e("10.1.2.4").zones(B).local(),
            e("10.1.2.5").zones(C),
            e("10.1.2.6").zones(A),
        ]
    };
    let one_local_one_remote = || vec![e("10.0.0.0").local(), e("10.0.0.1")];
    run(&[
        case(
            "should use topology since all endpoints have hints, node has a zone label and there are endpoints for the node's zone",
            Some("zone-a"),
            four(),
            &["10.1.2.3", "10.1.2.6"],
        ),
        case(
            "externalTrafficPolicy: Local, topology ignored for Local endpoints",
            Some("zone-a"),
            two_local_two_remote(),
            &["10.1.2.3", "10.1.2.6"],
        )
        .etp()
        .local(&["10.1.2.3", "10.1.2.4"]),
        case(
            "internalTrafficPolicy: Local, topology ignored for Local endpoints",
            Some("zone-a"),
            two_local_two_remote(),
            &["10.1.2.3", "10.1.2.6"],
        )
        .itp()
        .node_port()
        .local(&["10.1.2.3", "10.1.2.4"]),
        case(
            "empty node labels",
            None,
            vec![e("10.1.2.3").zones(A)],
            &["10.1.2.3"],
        ),
        case(
            "empty zone label",
            Some(""),
            vec![e("10.1.2.3").zones(A)],
            &["10.1.2.3"],
        ),
        case(
            "node in different zone, no endpoint filtering",
            Some("zone-b"),
            vec![e("10.1.2.3").zones(A)],
            &["10.1.2.3"],
        ),
        case(
            "unready endpoint",
            Some("zone-a"),
            vec![
                e("10.1.2.3").zones(A),
                e("10.1.2.4").zones(B),
                e("10.1.2.5").zones(C),
                e("10.1.2.6").zones(A).unready(),
            ],
            &["10.1.2.3"],
        ),
        case(
            "only unready endpoints in same zone (should not filter)",
            Some("zone-a"),
            vec![
                e("10.1.2.3").zones(A).unready(),
                e("10.1.2.4").zones(B),
                e("10.1.2.5").zones(C),
                e("10.1.2.6").zones(A).unready(),
            ],
            &["10.1.2.4", "10.1.2.5"],
        ),
        case(
            "missing hints, no filtering applied",
            Some("zone-a"),
            vec![
                e("10.1.2.3").zones(A),
                e("10.1.2.4").zones(B),
                e("10.1.2.5"),
                e("10.1.2.6").zones(A),
            ],
            &["10.1.2.3", "10.1.2.4", "10.1.2.5", "10.1.2.6"],
        ),
        case(
            "multiple hints per endpoint, filtering includes any endpoint with zone included",
            Some("zone-c"),
            vec![
                e("10.1.2.3").zones(&["zone-a", "zone-b", "zone-c"]),
                e("10.1.2.4").zones(&["zone-b", "zone-c"]),
                e("10.1.2.5").zones(&["zone-b", "zone-d"]),
                e("10.1.2.6").zones(C),
            ],
            &["10.1.2.3", "10.1.2.4", "10.1.2.6"],
        ),
        case(
            "conflicting topology and localness require merging allEndpoints",
            Some("zone-a"),
            vec![
                e("10.0.0.0").zones(A).local(),
                e("10.0.0.1").zones(B).local(),
                e("10.0.0.2").zones(A),
                e("10.0.0.3").zones(B),
            ],
            &["10.0.0.0", "10.0.0.2"],
        )
        .etp()
        .local(&["10.0.0.0", "10.0.0.1"]),
        case(
            "internalTrafficPolicy: Local, with empty endpoints",
            None,
            vec![],
            &[],
        )
        .itp()
        .local(&[]),
        case(
            "internalTrafficPolicy: Local, but all endpoints are remote",
            None,
            vec![e("10.0.0.0"), e("10.0.0.1")],
            &["10.0.0.0", "10.0.0.1"],
        )
        .itp()
        .local(&[]),
        case(
            "internalTrafficPolicy: Local, all endpoints are local",
            None,
            vec![e("10.0.0.0").local(), e("10.0.0.1").local()],
            &["10.0.0.0", "10.0.0.1"],
        )
        .itp()
        .local(&["10.0.0.0", "10.0.0.1"]),
        case(
            "internalTrafficPolicy: Local, some endpoints are local",
            None,
            one_local_one_remote(),
            &["10.0.0.0", "10.0.0.1"],
        )
        .itp()
        .local(&["10.0.0.0"]),
        case(
            "Cluster traffic policy, endpoints not Ready",
            None,
            vec![e("10.0.0.0").unready(), e("10.0.0.1").unready()],
            &[],
        ),
        case(
            "Cluster traffic policy, some endpoints are Ready",
            None,
            vec![e("10.0.0.0").unready(), e("10.0.0.1")],
            &["10.0.0.1"],
        ),
        case(
            "Cluster traffic policy, all endpoints are terminating",
            None,
            vec![
                e("10.0.0.0").serving_terminating().local(),
                e("10.0.0.1").serving_terminating(),
            ],
            &["10.0.0.0", "10.0.0.1"],
        ),
        case(
            "iTP: Local, eTP: Cluster, some endpoints local",
            None,
            one_local_one_remote(),
            &["10.0.0.0", "10.0.0.1"],
        )
        .itp()
        .node_port()
        .local(&["10.0.0.0"]),
        case(
            "iTP: Cluster, eTP: Local, some endpoints local",
            None,
            one_local_one_remote(),
            &["10.0.0.0", "10.0.0.1"],
        )
        .etp()
        .local(&["10.0.0.0"]),
        case(
            "iTP: Local, eTP: Local, some endpoints local",
            None,
            one_local_one_remote(),
            &["10.0.0.0", "10.0.0.1"],
        )
        .itp()
        .etp()
        .local(&["10.0.0.0"]),
        case(
            "iTP: Local, eTP: Local, all endpoints remote",
            None,
            vec![e("10.0.0.0"), e("10.0.0.1")],
            &["10.0.0.0", "10.0.0.1"],
        )
        .itp()
        .etp()
        .local(&[]),
        case(
            "iTP: Local, eTP: Local, all endpoints remote and terminating",
            None,
            vec![
                e("10.0.0.0").serving_terminating(),
                e("10.0.0.1").serving_terminating(),
            ],
            &["10.0.0.0", "10.0.0.1"],
        )
        .itp()
        .etp()
        .local(&[]),
        case(
            "iTP: Cluster, eTP: Local, with terminating endpoints",
            None,
            vec![
                e("10.0.0.0"),
                e("10.0.0.1").unready().local(),
                e("10.0.0.2").serving_terminating().local(),
                e("10.0.0.3").serving_terminating(),
            ],
            &["10.0.0.0"],
        )
        .etp()
        .local(&["10.0.0.2"]),
        {
            // No nodePort: not externally accessible, so no frontend uses ETP.
            let mut c = case(
                "externalTrafficPolicy ignored if not externally accessible",
                None,
                vec![e("10.0.0.0"), e("10.0.0.1").local()],
                &["10.0.0.0", "10.0.0.1"],
            );
            c.etp_local = true;
            c
        },
        case(
            "no cluster endpoints for iTP:Local internal-only service",
            None,
            vec![e("10.0.0.0"), e("10.0.0.1").local()],
            &["10.0.0.0", "10.0.0.1"],
        )
        .itp()
        .local(&["10.0.0.1"]),
    ]);
}

/// forNodes hints (PreferSameNode), from kube-proxy's topologyModeFromHints: node hints
/// first, then zone hints, then everything.
#[test]
fn node_hints_then_zone_hints_then_all() {
    // What the EndpointSlice controller writes for PreferSameNode: each endpoint's node
    // and zone. 10.1.0.1 runs on node-a, 10.1.0.2 on node-b (both zone-a), 10.1.0.3 on
    // node-c (zone-b).
    let same_node = || {
        vec![
            e("10.1.0.1").nodes(&["node-a"]).zones(A),
            e("10.1.0.2").nodes(&["node-b"]).zones(A),
            e("10.1.0.3").nodes(&["node-c"]).zones(B),
        ]
    };
    run(&[
        case(
            "every ready endpoint has a node hint and one is for this node: only it",
            Some("zone-a"),
            same_node(),
            &["10.1.0.1"],
        ),
        case(
            "node hints for other nodes only: this node's zone",
            Some("zone-a"),
            same_node(),
            &["10.1.0.1", "10.1.0.2"],
        )
        .node(Some("node-x")),
        case(
            "node hints for other nodes only, zone hints for other zones only: all",
            Some("zone-x"),
            same_node(),
            &["10.1.0.1", "10.1.0.2", "10.1.0.3"],
        )
        .node(Some("node-x")),
        case(
            "node hints for other nodes only, this node has no zone: all",
            None,
            same_node(),
            &["10.1.0.1", "10.1.0.2", "10.1.0.3"],
        )
        .node(Some("node-x")),
        case(
            "node name unknown: node hints never match; the zone does",
            Some("zone-a"),
            same_node(),
            &["10.1.0.1", "10.1.0.2"],
        )
        .node(None),
        case(
            "a ready endpoint without a node hint: zone hints",
            Some("zone-a"),
            vec![
                e("10.1.0.1").nodes(&["node-a"]).zones(A),
                e("10.1.0.2").zones(A),
                e("10.1.0.3").nodes(&["node-c"]).zones(B),
            ],
            &["10.1.0.1", "10.1.0.2"],
        ),
        case(
            "a ready endpoint without any hint: all",
            Some("zone-a"),
            vec![e("10.1.0.1").nodes(&["node-a"]).zones(A), e("10.1.0.2")],
            &["10.1.0.1", "10.1.0.2"],
        ),
        case(
            "node hints only (no zone hints), none for this node: all",
            Some("zone-a"),
            vec![
                e("10.1.0.1").nodes(&["node-b"]),
                e("10.1.0.2").nodes(&["node-c"]),
            ],
            &["10.1.0.1", "10.1.0.2"],
        ),
        case(
            "node hints only, one for this node: it",
            None,
            vec![
                e("10.1.0.1").nodes(&["node-a"]),
                e("10.1.0.2").nodes(&["node-c"]),
            ],
            &["10.1.0.1"],
        ),
        case(
            "an endpoint hinted for several nodes",
            None,
            vec![
                e("10.1.0.1").nodes(&["node-b", "node-a"]),
                e("10.1.0.2").nodes(&["node-a"]),
                e("10.1.0.3").nodes(&["node-c"]),
            ],
            &["10.1.0.1", "10.1.0.2"],
        ),
        case(
            "an unready endpoint without hints does not turn node topology off",
            Some("zone-a"),
            vec![
                e("10.1.0.1").nodes(&["node-a"]).zones(A),
                e("10.1.0.2").nodes(&["node-b"]).zones(A),
                e("10.1.0.9").unready(),
                e("10.1.0.8").serving_terminating(),
            ],
            &["10.1.0.1"],
        ),
        case(
            "no ready endpoint: the serving-terminating ones, hints ignored",
            Some("zone-a"),
            vec![
                e("10.1.0.1")
                    .nodes(&["node-a"])
                    .zones(A)
                    .serving_terminating(),
                e("10.1.0.2")
                    .nodes(&["node-b"])
                    .zones(B)
                    .serving_terminating(),
            ],
            &["10.1.0.1", "10.1.0.2"],
        ),
        case(
            "hinted for this node, not ready: other nodes' ready endpoints' hints decide",
            Some("zone-a"),
            vec![
                e("10.1.0.1").nodes(&["node-a"]).zones(A).unready(),
                e("10.1.0.2").nodes(&["node-b"]).zones(A),
                e("10.1.0.3").nodes(&["node-c"]).zones(B),
            ],
            &["10.1.0.2"],
        ),
        case(
            "ETP Local: the local set ignores node hints",
            Some("zone-a"),
            vec![
                e("10.1.0.1").nodes(&["node-b"]).zones(A).local(),
                e("10.1.0.2").nodes(&["node-a"]).zones(A),
            ],
            &["10.1.0.2"],
        )
        .etp()
        .local(&["10.1.0.1"]),
        case(
            "ITP Local: the local set ignores node hints",
            Some("zone-a"),
            vec![
                e("10.1.0.1").nodes(&["node-b"]).zones(B).local(),
                e("10.1.0.2").nodes(&["node-a"]).zones(A),
            ],
            &["10.1.0.2"],
        )
        .itp()
        .local(&["10.1.0.1"]),
    ]);
}

/// The ready endpoints topology leaves out stay in the maps for the flows they have
/// (`terminating`), as kube-proxy's conntrack entries outlive a change of hints; an
/// unready endpoint that is not terminating is not kept.
#[test]
fn endpoints_left_out_by_topology_keep_their_flows() {
    let c = case(
        "zone-a",
        Some("zone-a"),
        vec![
            e("10.1.2.3").zones(A),
            e("10.1.2.4").zones(B),
            e("10.1.2.5").zones(C).serving_terminating(),
            e("10.1.2.6").zones(A).unready(),
            e("10.1.2.7").zones(B).unready(),
        ],
        &["10.1.2.3"],
    );
    let (cluster, node) = build(&c, Some(TrafficDistribution::PreferClose));
    let (state, _) = compute(&cluster, &node);
    let fs = &state.frontends[&fe(VIP, 80, Protocol::Tcp)];
    assert_eq!(addrs(&fs.backends), ["10.1.2.3"]);
    assert_eq!(addrs(&fs.terminating), ["10.1.2.4", "10.1.2.5"]);

    // Without topology (no zone here): every ready one is a backend, only the terminating
    // one is kept.
    let (state, _) = compute(&cluster, &NodeContext { zone: None, ..node });
    let fs = &state.frontends[&fe(VIP, 80, Protocol::Tcp)];
    assert_eq!(addrs(&fs.backends), ["10.1.2.3", "10.1.2.4"]);
    assert_eq!(addrs(&fs.terminating), ["10.1.2.5"]);
}

/// An EndpointSlice change that adds or drops a hint goes through update_endpoints (the
/// agent's path for endpoint changes) with the result of a full compute.
#[test]
fn a_hint_change_updates_like_a_full_compute() {
    let hinted = case(
        "hinted",
        Some("zone-a"),
        vec![e("10.1.2.3").zones(A), e("10.1.2.4").zones(B)],
        &["10.1.2.3"],
    );
    let one_missing = case(
        "one hint missing",
        Some("zone-a"),
        vec![e("10.1.2.3").zones(A), e("10.1.2.4")],
        &["10.1.2.3", "10.1.2.4"],
    );
    let svc: BTreeSet<ObjectRef> = [ObjectRef::new("default", "svc")].into();
    for (from, to) in [(&hinted, &one_missing), (&one_missing, &hinted)] {
        let td = Some(TrafficDistribution::PreferSameZone);
        let (before, node) = build(from, td);
        let (after, _) = build(to, td);
        let (mut state, _) = compute(&before, &node);
        let changed = update_endpoints(&mut state, &after, &node, &svc);
        assert_eq!(
            state,
            compute(&after, &node).0,
            "{} -> {}",
            from.name,
            to.name
        );
        assert_eq!(changed, [fe(VIP, 80, Protocol::Tcp)]);
        assert_eq!(
            addrs(&state.frontends[&fe(VIP, 80, Protocol::Tcp)].backends),
            strings(to.cluster)
        );
    }
}

/// Hints are per service port: a port whose candidates all carry hints filters, another
/// port of the same Service whose slice has none does not.
#[test]
fn hints_are_decided_per_service_port() {
    let mut svc = service(
        "default",
        "svc",
        &[VIP],
        vec![
            port("http", 80, Protocol::Tcp),
            port("dns", 53, Protocol::Udp),
        ],
    );
    svc.traffic_distribution = Some(TrafficDistribution::PreferClose);
    let hinted = |addr: &str, zone: &str| {
        let mut ep = ep(addr, true, true, false);
        ep.hints.for_zones = [zone.to_string()].into();
        ep
    };
    let c = cluster(
        vec![svc],
        vec![(
            ObjectRef::new("default", "svc"),
            vec![
                group(
                    &[("http", 8080, Protocol::Tcp)],
                    vec![hinted("10.1.0.1", "zone-a"), hinted("10.1.0.2", "zone-b")],
                ),
                group(
                    &[("dns", 5353, Protocol::Udp)],
                    vec![
                        hinted("10.1.0.1", "zone-a"),
                        ep("10.1.0.2", true, true, false),
                    ],
                ),
            ],
        )],
    );
    let node = NodeContext {
        zone: Some("zone-a".into()),
        ..node()
    };
    let (state, _) = compute(&c, &node);
    assert_eq!(
        addrs(&state.frontends[&fe(VIP, 80, Protocol::Tcp)].backends),
        ["10.1.0.1"]
    );
    assert_eq!(
        addrs(&state.frontends[&fe(VIP, 53, Protocol::Udp)].backends),
        ["10.1.0.1", "10.1.0.2"]
    );
}
