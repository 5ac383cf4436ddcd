//! Who keeps an address two Services claim (issue 11): kind rank, incumbent, age, uid,
//! name; and the node's externalIP policy.
use super::*;

const TCP: Protocol = Protocol::Tcp;

/// `default/echo`: ClusterIP 10.96.0.10, port 80 "http", with its three pods.
fn echo() -> (Service, (ObjectRef, Vec<EndpointGroup>)) {
    let svc = service(
        "default",
        "echo",
        &["10.96.0.10"],
        vec![port("http", 80, TCP)],
    );
    let eps = (
        svc.id.clone(),
        http_group(vec![
            ep("10.244.1.11", true, true, false),
            ep("10.244.1.12", true, true, false),
            ep("10.244.1.13", true, true, false),
        ]),
    );
    (svc, eps)
}

fn owner(state: &DesiredState, f: Frontend) -> (String, FrontendKind) {
    let s = &state.frontends[&f];
    (s.service.to_string(), s.kind)
}

fn texts(problems: &[ComputeProblem]) -> Vec<String> {
    problems.iter().map(ToString::to_string).collect()
}

fn at(rfc3339: &str) -> Option<jiff::Timestamp> {
    Some(rfc3339.parse().unwrap())
}

/// The first case: `aaa/evil` sorts before `default/echo` and lists echo's
/// ClusterIP as an externalIP. A ClusterIP outranks an externalIP: echo keeps it with or
/// without incumbents, evil keeps its own ClusterIP and the loss is reported with both
/// names.
#[test]
fn cluster_ip_outranks_an_external_ip_of_an_earlier_name() {
    let (echo, eps) = echo();
    let mut evil = service("aaa", "evil", &["10.96.0.99"], vec![port("", 80, TCP)]);
    evil.external_ips = vec![ip("10.96.0.10")];
    let c = cluster(vec![evil, echo], vec![eps]);
    for incumbents in [
        Incumbents::default(),
        [(fe("10.96.0.10", 80, TCP), ObjectRef::new("default", "echo"))]
            .into_iter()
            .collect(),
    ] {
        let (state, problems) = compute_with_incumbents(&c, &node(), &incumbents);
        assert_eq!(
            owner(&state, fe("10.96.0.10", 80, TCP)),
            ("default/echo".into(), FrontendKind::ClusterIp)
        );
        assert_eq!(
            backends(&state, fe("10.96.0.10", 80, TCP)).len(),
            3,
            "echo's pods answer"
        );
        assert_eq!(
            owner(&state, fe("10.96.0.99", 80, TCP)),
            ("aaa/evil".into(), FrontendKind::ClusterIp),
            "the loser keeps its other addresses"
        );
        assert!(state.unserved.is_empty(), "{:?}", state.unserved);
        assert_eq!(
            texts(&problems),
            vec![
                "Service aaa/evil: port 80/TCP (externalIP 10.96.0.10:80/TCP) skipped: Service default/echo (ClusterIP) keeps it: ClusterIP outranks externalIP"
            ]
        );
        assert_eq!(problems[0].conflict.as_ref().unwrap().why, Precedence::Rank);
    }
}

/// The second case: a new `default/clash` (sorts before echo) on echo's
/// ClusterIP:port without endpoints. Without an incumbent the name decides (clash); with
/// echo serving it, echo keeps it and clash is unserved: its only address is taken.
#[test]
fn the_incumbent_keeps_its_address_whatever_the_name() {
    let (echo, eps) = echo();
    let clash = service("default", "clash", &["10.96.0.10"], vec![port("", 80, TCP)]);
    let c = cluster(vec![echo.clone(), clash.clone()], vec![eps.clone()]);
    let f = fe("10.96.0.10", 80, TCP);

    let (fresh, _) = compute(&c, &node());
    assert_eq!(owner(&fresh, f).0, "default/clash", "no incumbent: by name");

    // echo was served first (the state before clash existed).
    let (before, problems) = compute(&cluster(vec![echo], vec![eps]), &node());
    assert!(problems.is_empty());
    let (state, problems) = compute_with_incumbents(&c, &node(), &Incumbents::of(&before));
    assert_eq!(owner(&state, f).0, "default/echo");
    assert_eq!(backends(&state, f).len(), 3);
    assert_eq!(
        texts(&problems),
        vec![
            "Service default/clash: port 80/TCP (ClusterIP 10.96.0.10:80/TCP) skipped: Service default/echo (ClusterIP) keeps it: it serves it already"
        ]
    );
    assert_eq!(
        state.unserved,
        vec![(clash.id.clone(), UnservedReason::AddressTaken)]
    );
    // Stable: the next pass, with this state as the incumbents, decides the same.
    let (again, problems_again) = compute_with_incumbents(&c, &node(), &Incumbents::of(&state));
    assert_eq!(again, state);
    assert_eq!(problems_again, problems);
}

/// Within a rank, the incumbent wins even against an older Service; the older one wins
/// when neither serves it; with equal ages the smaller uid; a Service without a
/// timestamp (or uid) counts as the newest; names only when nothing else differs.
#[test]
fn incumbent_then_older_then_uid_then_name() {
    let f = fe("10.96.0.10", 80, TCP);
    // "zzz" sorts last but is older.
    let mut old = service("zzz", "old", &["10.96.0.10"], vec![port("", 80, TCP)]);
    old.created = at("2024-01-01T00:00:00Z");
    old.uid = Some("ffff".into());
    let mut young = service("aaa", "young", &["10.96.0.10"], vec![port("", 80, TCP)]);
    young.created = at("2025-06-01T00:00:00Z");
    young.uid = Some("0000".into());
    let decide = |a: &Service, b: &Service, incumbents: &Incumbents| {
        let (state, problems) = compute_with_incumbents(
            &cluster(vec![a.clone(), b.clone()], vec![]),
            &node(),
            incumbents,
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        let c = problems[0].conflict.clone().unwrap();
        assert_eq!(c.owner, state.frontends[&f].service);
        (state.frontends[&f].service.name.clone(), c.why)
    };
    let none = Incumbents::default();
    assert_eq!(
        decide(&old, &young, &none),
        ("old".into(), Precedence::Older)
    );
    let young_serves: Incumbents = [(f, young.id.clone())].into_iter().collect();
    assert_eq!(
        decide(&old, &young, &young_serves),
        ("young".into(), Precedence::Incumbent)
    );
    // An incumbent that no longer claims the address does not count.
    let gone_serves: Incumbents = [(f, ObjectRef::new("x", "gone"))].into_iter().collect();
    assert_eq!(
        decide(&old, &young, &gone_serves),
        ("old".into(), Precedence::Older)
    );
    // Same age: the smaller uid.
    young.created = old.created;
    assert_eq!(
        decide(&old, &young, &none),
        ("young".into(), Precedence::SmallerUid)
    );
    // No timestamp: newest, whatever the name or uid.
    young.created = None;
    assert_eq!(
        decide(&old, &young, &none),
        ("old".into(), Precedence::Older)
    );
    // Same age, one without uid: the one with a uid.
    young.created = old.created;
    young.uid = None;
    assert_eq!(
        decide(&old, &young, &none),
        ("old".into(), Precedence::SmallerUid)
    );
    // Nothing differs but the name.
    old.uid = None;
    assert_eq!(
        decide(&old, &young, &none),
        ("young".into(), Precedence::Name)
    );
    let text = {
        let (_, problems) = compute(&cluster(vec![old.clone(), young.clone()], vec![]), &node());
        problems[0].to_string()
    };
    assert_eq!(
        text,
        "Service zzz/old: port 80/TCP (ClusterIP 10.96.0.10:80/TCP) skipped: Service aaa/young (ClusterIP) keeps it: first by namespace/name"
    );
}

/// Rank comes before incumbency: a ClusterIP takes an address an externalIP serves (the
/// API server allocated the ClusterIP, nobody allocates externalIPs), and an explicit
/// address takes a NodePort's address (kube-proxy's rule order).
#[test]
fn rank_comes_before_the_incumbent() {
    let f = fe("10.96.0.10", 80, TCP);
    let mut ext = service("default", "ext", &["10.96.0.20"], vec![port("", 80, TCP)]);
    ext.external_ips = vec![ip("10.96.0.10")];
    let ext_serves: Incumbents = [(f, ext.id.clone())].into_iter().collect();
    let (echo, eps) = echo();
    let (state, problems) =
        compute_with_incumbents(&cluster(vec![ext, echo], vec![eps]), &node(), &ext_serves);
    assert_eq!(
        owner(&state, f),
        ("default/echo".into(), FrontendKind::ClusterIp)
    );
    assert_eq!(problems[0].conflict.as_ref().unwrap().why, Precedence::Rank);

    // A NodePort on a node IP that serves it loses to a new externalIP on that node IP.
    let np_fe = fe("192.168.1.10", 30080, TCP);
    let mut np = service("default", "np", &["10.96.0.30"], vec![port("", 80, TCP)]);
    np.kind = ServiceKind::NodePort;
    np.ports[0].node_port = Some(30080);
    let mut ext2 = service(
        "default",
        "ext2",
        &["10.96.0.31"],
        vec![port("", 30080, TCP)],
    );
    ext2.external_ips = vec![ip("192.168.1.10")];
    let np_serves: Incumbents = [(np_fe, np.id.clone())].into_iter().collect();
    let (state, problems) =
        compute_with_incumbents(&cluster(vec![np, ext2], vec![]), &node(), &np_serves);
    assert_eq!(
        owner(&state, np_fe),
        ("default/ext2".into(), FrontendKind::ExternalIp)
    );
    assert_eq!(
        texts(&problems),
        vec![
            "Service default/np: port 80/TCP (NodePort 192.168.1.10:30080/TCP) skipped: Service default/ext2 (externalIP) keeps it: externalIP outranks NodePort"
        ]
    );
}

/// externalIP and LoadBalancer IP are one rank: between two Services the incumbent (or
/// age, or name) decides; within one Service the externalIP, listed first.
#[test]
fn external_ip_and_load_balancer_ip_are_one_rank() {
    let lb_ip = fe("198.51.100.1", 80, TCP);
    let mut lb = lb_service(); // default/lb: ingress 198.51.100.1
    lb.external_ips.clear();
    let mut ext = service("aaa", "ext", &["10.96.0.40"], vec![port("", 80, TCP)]);
    ext.external_ips = vec![ip("198.51.100.1")];
    let c = cluster(vec![lb.clone(), ext.clone()], vec![]);
    let (state, _) = compute(&c, &node());
    assert_eq!(owner(&state, lb_ip).0, "aaa/ext", "no incumbent: by name");
    let lb_serves: Incumbents = [(lb_ip, lb.id.clone())].into_iter().collect();
    let (state, problems) = compute_with_incumbents(&c, &node(), &lb_serves);
    assert_eq!(
        owner(&state, lb_ip),
        ("default/lb".into(), FrontendKind::LoadBalancer)
    );
    assert_eq!(
        texts(&problems),
        vec![
            "Service aaa/ext: port 80/TCP (externalIP 198.51.100.1:80/TCP) skipped: Service default/lb (LoadBalancer IP) keeps it: it serves it already"
        ]
    );

    // One Service, its externalIP equal to its LoadBalancer IP: the externalIP.
    lb.external_ips = vec![ip("198.51.100.1")];
    let (state, problems) = compute(&cluster(vec![lb], vec![]), &node());
    assert_eq!(
        owner(&state, lb_ip),
        ("default/lb".into(), FrontendKind::ExternalIp)
    );
    assert_eq!(
        texts(&problems),
        vec![
            "Service default/lb: port \"http\" (LoadBalancer IP 198.51.100.1:80/TCP) skipped: Service default/lb (externalIP) keeps it: externalIP comes first"
        ]
    );
    assert!(state.unserved.is_empty());
}

/// `--external-ip-cidrs`: externalIPs outside are skipped with a problem (once per
/// address, not per port), the Service's other addresses are served; `none` skips every
/// externalIP; LoadBalancer IPs are never affected.
#[test]
fn external_ips_outside_the_allowed_cidrs_are_skipped() {
    let mut svc = lb_service(); // externalIP 203.0.113.7, ingress 198.51.100.1
    svc.external_ips = vec![ip("203.0.113.7"), ip("192.0.2.50")];
    svc.ports.push(port("https", 443, TCP));
    let mut n = node();
    n.external_ips = ExternalIpPolicy::AllowIn(vec!["192.0.2.0/24".parse().unwrap()]);
    let (state, problems) = compute(&cluster(vec![svc.clone()], vec![]), &n);
    assert_eq!(
        texts(&problems),
        vec![
            "Service default/lb: externalIP 203.0.113.7 skipped: not allowed on this node (--external-ip-cidrs 192.0.2.0/24)"
        ]
    );
    assert!(problems[0].conflict.is_none());
    let externals: Vec<Frontend> = state
        .frontends
        .iter()
        .filter(|(_, s)| s.kind == FrontendKind::ExternalIp)
        .map(|(f, _)| *f)
        .collect();
    assert_eq!(
        externals,
        vec![fe("192.0.2.50", 80, TCP), fe("192.0.2.50", 443, TCP)]
    );
    assert!(state.frontends.contains_key(&fe("198.51.100.1", 80, TCP)));
    assert!(state.frontends.contains_key(&fe("10.96.0.10", 443, TCP)));

    n.external_ips = ExternalIpPolicy::deny_all();
    let (state, problems) = compute(&cluster(vec![svc.clone()], vec![]), &n);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[1]
            .to_string()
            .ends_with("(--external-ip-cidrs none)")
    );
    assert!(
        state
            .frontends
            .values()
            .all(|s| s.kind != FrontendKind::ExternalIp)
    );
    assert!(state.frontends.contains_key(&fe("198.51.100.1", 443, TCP)));

    // A Service whose only address is a denied externalIP is unserved (no cluster IP).
    let mut only_ext = service("default", "only-ext", &[], vec![port("", 80, TCP)]);
    only_ext.external_ips = vec![ip("203.0.113.9")];
    let (state, _) = compute(&cluster(vec![only_ext.clone()], vec![]), &n);
    assert_eq!(
        state.unserved,
        vec![(only_ext.id, UnservedReason::NoIpv4ClusterIp)]
    );

    assert!(ExternalIpPolicy::AllowAll.allows(ip("203.0.113.7")));
    assert_eq!(ExternalIpPolicy::AllowAll.to_string(), "all");
    assert_eq!(
        ExternalIpPolicy::AllowIn(vec![
            "10.0.0.0/8".parse().unwrap(),
            "192.0.2.0/24".parse().unwrap()
        ])
        .to_string(),
        "10.0.0.0/8,192.0.2.0/24"
    );
}

/// Three claims on one address: the ClusterIPs outrank the externalIP, the older
/// ClusterIP wins although its name sorts last; each loser is reported with its own rule.
#[test]
fn three_claims_on_one_address() {
    let f = fe("10.96.0.10", 80, TCP);
    let mut a = service("a", "x", &["10.96.0.10"], vec![port("", 80, TCP)]);
    a.created = at("2025-01-01T00:00:00Z");
    let mut b = service("b", "x", &["10.96.0.11"], vec![port("", 80, TCP)]);
    b.external_ips = vec![ip("10.96.0.10")];
    let mut c = service("c", "x", &["10.96.0.10"], vec![port("", 80, TCP)]);
    c.created = at("2024-01-01T00:00:00Z");
    let (state, problems) = compute(&cluster(vec![a, b, c], vec![]), &node());
    assert_eq!(owner(&state, f), ("c/x".into(), FrontendKind::ClusterIp));
    assert_eq!(
        texts(&problems),
        vec![
            "Service a/x: port 80/TCP (ClusterIP 10.96.0.10:80/TCP) skipped: Service c/x (ClusterIP) keeps it: it is older",
            "Service b/x: port 80/TCP (externalIP 10.96.0.10:80/TCP) skipped: Service c/x (ClusterIP) keeps it: ClusterIP outranks externalIP",
        ]
    );
    assert_eq!(
        state.unserved,
        vec![(ObjectRef::new("a", "x"), UnservedReason::AddressTaken)]
    );
}
