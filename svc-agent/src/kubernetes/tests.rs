//! Unit tests of `kubernetes`.
use super::*;
use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus, Taint};

fn node(addresses: &[(&str, &str)], taints: &[&str]) -> Node {
    Node {
        spec: Some(NodeSpec {
            taints: Some(
                taints
                    .iter()
                    .map(|k| Taint {
                        key: k.to_string(),
                        effect: "NoSchedule".into(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(
                addresses
                    .iter()
                    .map(|(t, a)| NodeAddress {
                        type_: t.to_string(),
                        address: a.to_string(),
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn example_parsed() -> Vec<crate::manifest::ParsedObject> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/two-node/services.yaml"),
    )
    .unwrap();
    let (objects, problems) = crate::manifest::parse_str(&text, "services.yaml");
    assert!(problems.is_empty(), "{problems:?}");
    objects
}

/// The ServiceCIDRs of the two-node example, as the API would hold them; [`list`]
/// lists them with the Services and slices it is given.
fn example_cidrs() -> Vec<ServiceCIDR> {
    example_parsed()
        .into_iter()
        .filter_map(|o| match o.object {
            crate::manifest::K8sObject::ServiceCidr(mut c) => {
                c.metadata.uid = c.metadata.name.as_ref().map(|n| format!("uid-cidr-{n}"));
                Some(*c)
            }
            _ => None,
        })
        .collect()
}

/// The objects of the two-node example as the API would hold them: Services and
/// EndpointSlices (legacy Endpoints are not watched), each with a resourceVersion.
fn example_objects() -> (Vec<Arc<Service>>, Vec<Arc<EndpointSlice>>) {
    let (mut services, mut slices) = (Vec::new(), Vec::new());
    for o in example_parsed() {
        match o.object {
            crate::manifest::K8sObject::Service(mut s) => {
                s.metadata.resource_version = Some("1".into());
                s.metadata.uid = s.metadata.name.as_ref().map(|n| format!("uid-svc-{n}"));
                services.push(Arc::new(*s));
            }
            crate::manifest::K8sObject::EndpointSlice(mut s) => {
                s.metadata.resource_version = Some("1".into());
                s.metadata.uid = s.metadata.name.as_ref().map(|n| format!("uid-slice-{n}"));
                slices.push(Arc::new(*s));
            }
            crate::manifest::K8sObject::Endpoints(_)
            | crate::manifest::K8sObject::ServiceCidr(_)
            | crate::manifest::K8sObject::LbPool(_) => {}
        }
    }
    (services, slices)
}

/// The manifest path's model of the same objects (and the example's ServiceCIDRs).
fn manifest_model(services: &[Arc<Service>], slices: &[Arc<EndpointSlice>]) -> Cluster {
    let items =
        services
            .iter()
            .map(|s| crate::manifest::K8sObject::Service(Box::new(Service::clone(s))))
            .chain(slices.iter().map(|s| {
                crate::manifest::K8sObject::EndpointSlice(Box::new(EndpointSlice::clone(s)))
            }))
            .chain(
                example_cidrs()
                    .into_iter()
                    .map(|c| crate::manifest::K8sObject::ServiceCidr(Box::new(c))),
            )
            .map(|object| crate::manifest::ParsedObject {
                source: "x".into(),
                object,
            });
    crate::manifest::build(items).cluster
}

fn list(
    m: &mut WatchedCluster,
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
) -> Refresh {
    let mut r = Refresh::default();
    m.apply(ModelEvent::Service(Op::Init), &mut r);
    for s in services {
        m.apply(
            ModelEvent::Service(Op::InitApply(object_ref(s.as_ref()), convert_service(s))),
            &mut r,
        );
    }
    m.apply(ModelEvent::Service(Op::InitDone), &mut r);
    m.apply(ModelEvent::Slice(Op::Init), &mut r);
    for s in slices {
        m.apply(
            ModelEvent::Slice(Op::InitApply(object_ref(s.as_ref()), convert_slice(s))),
            &mut r,
        );
    }
    m.apply(ModelEvent::Slice(Op::InitDone), &mut r);
    list_cidrs(m, &example_cidrs(), &mut r);
    r
}

fn list_cidrs(m: &mut WatchedCluster, cidrs: &[ServiceCIDR], r: &mut Refresh) {
    m.apply(ModelEvent::ServiceCidr(Op::Init), r);
    for c in cidrs {
        m.apply(
            ModelEvent::ServiceCidr(Op::InitApply(cluster_ref(c), convert_service_cidr(c))),
            r,
        );
    }
    m.apply(ModelEvent::ServiceCidr(Op::InitDone), r);
    // No pools (as without the CustomResourceDefinition).
    m.apply(ModelEvent::LbPool(Op::Init), r);
    m.apply(ModelEvent::LbPool(Op::InitDone), r);
}

#[test]
fn service_cidrs_follow_events_and_keep_their_last_good_version() {
    let (services, slices) = example_objects();
    let mut m = WatchedCluster::default();
    let mut r = Refresh::default();
    // Services and slices alone are not a complete view: the ServiceCIDR list is
    // missing.
    m.apply(ModelEvent::Service(Op::Init), &mut r);
    m.apply(ModelEvent::Service(Op::InitDone), &mut r);
    m.apply(ModelEvent::Slice(Op::Init), &mut r);
    m.apply(ModelEvent::Slice(Op::InitDone), &mut r);
    assert!(!m.listed());
    list(&mut m, &services, &slices);
    assert!(m.listed());
    let kubernetes = ObjectRef::new("", "kubernetes");
    let cidr = |s: &str| s.parse::<model::IpCidr>().unwrap();
    assert_eq!(
        m.cluster().service_cidrs[&kubernetes],
        [cidr("10.96.0.0/16")],
        "the example's ServiceCIDR"
    );

    // A second one is added: everything is recomputed.
    let mut extra = example_cidrs()[0].clone();
    extra.metadata.name = Some("extra".into());
    extra.metadata.uid = Some("uid-extra".into());
    extra.spec.as_mut().unwrap().cidrs = Some(vec!["172.30.0.0/16".into(), "fd00::/108".into()]);
    let mut r = Refresh::default();
    m.apply(
        ModelEvent::ServiceCidr(Op::Apply(cluster_ref(&extra), convert_service_cidr(&extra))),
        &mut r,
    );
    assert!(r.services_changed);
    let extra_id = ObjectRef::new("", "extra");
    assert_eq!(
        m.cluster().service_cidrs[&extra_id],
        [cidr("172.30.0.0/16"), cidr("fd00::/108")]
    );
    assert!(problem_texts(&m).is_empty(), "{:?}", problem_texts(&m));

    // A bad update (a buggy writer: the API server makes spec.cidrs immutable) keeps
    // the last good version.
    let mut bad = extra.clone();
    bad.spec.as_mut().unwrap().cidrs = Some(vec!["172.30.0.0".into()]);
    let mut r = Refresh::default();
    m.apply(
        ModelEvent::ServiceCidr(Op::Apply(cluster_ref(&bad), convert_service_cidr(&bad))),
        &mut r,
    );
    assert_eq!(
        m.cluster().service_cidrs[&extra_id],
        [cidr("172.30.0.0/16"), cidr("fd00::/108")]
    );
    assert!(!m.withheld());
    assert_eq!(
        problem_texts(&m),
        [
            "api ServiceCIDR extra: still serving the last good version: spec.cidrs[0] \"172.30.0.0\" is not a CIDR"
        ]
    );
    // So through a relist.
    let mut r = Refresh::default();
    list_cidrs(&mut m, &[example_cidrs()[0].clone(), bad.clone()], &mut r);
    assert!(r.services_changed);
    assert_eq!(
        m.cluster().service_cidrs[&extra_id],
        [cidr("172.30.0.0/16"), cidr("fd00::/108")]
    );

    // Deleted: gone; a relist without it: gone too.
    let mut r = Refresh::default();
    m.apply(
        ModelEvent::ServiceCidr(Op::Delete(extra_id.clone())),
        &mut r,
    );
    assert!(r.services_changed && !m.cluster().service_cidrs.contains_key(&extra_id));
    assert!(m.problems().is_empty());
    let mut r = Refresh::default();
    list_cidrs(&mut m, &[], &mut r);
    assert!(m.cluster().service_cidrs.is_empty());

    // One that was never valid serves nothing and withholds (an earlier agent may
    // have served it).
    let mut r = Refresh::default();
    m.apply(
        ModelEvent::ServiceCidr(Op::Apply(cluster_ref(&bad), convert_service_cidr(&bad))),
        &mut r,
    );
    assert!(m.cluster().service_cidrs.is_empty());
    assert!(m.withheld());
}

#[test]
fn the_model_follows_events_as_the_manifest_path_builds_it() {
    let (mut services, mut slices) = example_objects();
    let mut m = WatchedCluster::default();
    assert!(!m.listed());
    let r = list(&mut m, &services, &slices);
    assert!(m.listed() && r.services_changed);
    assert_eq!(*m.cluster(), manifest_model(&services, &slices));

    // One slice changes (one endpoint fewer): only its Service's endpoints.
    let i = slices
        .iter()
        .position(|s| s.metadata.name.as_deref() == Some("web-1"))
        .unwrap();
    let mut web = EndpointSlice::clone(&slices[i]);
    web.endpoints.as_mut().unwrap().pop();
    slices[i] = Arc::new(web);
    let mut r = Refresh::default();
    m.apply(
        ModelEvent::Slice(Op::Apply(
            object_ref(slices[i].as_ref()),
            convert_slice(&slices[i]),
        )),
        &mut r,
    );
    assert!(!r.services_changed);
    assert_eq!(
        r.endpoints_changed.iter().cloned().collect::<Vec<_>>(),
        [ObjectRef::new("default", "web")]
    );
    assert_eq!(*m.cluster(), manifest_model(&services, &slices));

    // A slice is deleted; then a Service.
    let gone = slices.remove(0);
    let mut r = Refresh::default();
    m.apply(
        ModelEvent::Slice(Op::Delete(object_ref(gone.as_ref()))),
        &mut r,
    );
    assert_eq!(r.endpoints_changed.len(), 1);
    assert_eq!(*m.cluster(), manifest_model(&services, &slices));
    let gone = services.remove(0);
    let mut r = Refresh::default();
    m.apply(
        ModelEvent::Service(Op::Delete(object_ref(gone.as_ref()))),
        &mut r,
    );
    assert!(r.services_changed);
    assert_eq!(*m.cluster(), manifest_model(&services, &slices));

    // A relist after 410 Gone: while it is being read the old state stays; when it is
    // complete, what it lacks is gone.
    let before = m.cluster().clone();
    let mut r = Refresh::default();
    m.apply(ModelEvent::Service(Op::Init), &mut r);
    m.apply(
        ModelEvent::Service(Op::InitApply(
            object_ref(services[0].as_ref()),
            convert_service(&services[0]),
        )),
        &mut r,
    );
    assert_eq!(*m.cluster(), before, "a half-read list is never served");
    m.apply(ModelEvent::Service(Op::InitDone), &mut r);
    assert!(r.services_changed);
    assert_eq!(*m.cluster(), manifest_model(&services[..1], &slices));
}

/// kube-proxy's change counters: Service and EndpointSlice events after the list, each
/// slice update with its trigger time; a list counts nothing.
#[test]
fn changes_are_counted_per_event_with_the_slices_trigger_times() {
    let (services, mut slices) = example_objects();
    let mut m = WatchedCluster::default();
    let r = list(&mut m, &services, &slices);
    assert_eq!(r.changes, crate::metrics::SourceChanges::default());

    let mut web = EndpointSlice::clone(&slices[0]);
    web.metadata.annotations = Some(
        [(
            LAST_CHANGE_TRIGGER_TIME.to_string(),
            "2026-03-01T10:00:00Z".to_string(),
        )]
        .into(),
    );
    let r = apply_slice(&mut m, &web);
    assert_eq!(r.changes.endpoints, 1);
    assert_eq!(r.changes.services, 0);
    let t: jiff::Timestamp = "2026-03-01T10:00:00Z".parse().unwrap();
    assert_eq!(r.changes.trigger_times, [std::time::SystemTime::from(t)]);

    // No annotation, or not a timestamp: counted, with no time.
    web.metadata.annotations = Some(
        [(
            LAST_CHANGE_TRIGGER_TIME.to_string(),
            "yesterday".to_string(),
        )]
        .into(),
    );
    let r = apply_slice(&mut m, &web);
    assert_eq!(r.changes.endpoints, 1);
    assert!(r.changes.trigger_times.is_empty());

    let r = apply_service(&mut m, &services[0]);
    assert_eq!(r.changes.services, 1);
    let gone = slices.remove(0);
    let mut r = Refresh::default();
    m.apply(
        ModelEvent::Slice(Op::Delete(object_ref(gone.as_ref()))),
        &mut r,
    );
    // Deleting a slice that is already gone changes nothing.
    m.apply(
        ModelEvent::Slice(Op::Delete(object_ref(gone.as_ref()))),
        &mut r,
    );
    assert_eq!(r.changes.endpoints, 1);
}

fn apply_service(m: &mut WatchedCluster, svc: &Service) -> Refresh {
    let mut r = Refresh::default();
    m.apply(
        ModelEvent::Service(Op::Apply(object_ref(svc), convert_service(svc))),
        &mut r,
    );
    r
}

fn apply_slice(m: &mut WatchedCluster, slice: &EndpointSlice) -> Refresh {
    let mut r = Refresh::default();
    m.apply(
        ModelEvent::Slice(Op::Apply(object_ref(slice), convert_slice(slice))),
        &mut r,
    );
    r
}

fn named<T: Resource + Clone>(list: &[Arc<T>], name: &str) -> T {
    T::clone(
        list.iter()
            .find(|o| o.meta().name.as_deref() == Some(name))
            .unwrap(),
    )
}

fn problem_texts(m: &WatchedCluster) -> Vec<String> {
    m.problems().iter().map(ToString::to_string).collect()
}

#[test]
fn a_service_update_the_model_rejects_keeps_the_last_good_version() {
    let (services, slices) = example_objects();
    let mut m = WatchedCluster::default();
    list(&mut m, &services, &slices);
    let good = m.cluster().clone();
    let web_id = ObjectRef::new("default", "web");

    // A buggy writer's update: the Service stays as it was served.
    let mut bad = named(&services, "web");
    bad.spec.as_mut().unwrap().cluster_ip = Some("10.96.1.1O".into());
    let r = apply_service(&mut m, &bad);
    assert!(r.services_changed);
    assert_eq!(*m.cluster(), good);
    assert_eq!(
        problem_texts(&m),
        [
            "api Service default/web: still serving the last good version: spec.clusterIP \"10.96.1.1O\" is not an IP address"
        ]
    );
    // So through a relist too.
    let listed: Vec<_> = services
        .iter()
        .map(|s| {
            if s.metadata.name.as_deref() == Some("web") {
                Arc::new(bad.clone())
            } else {
                s.clone()
            }
        })
        .collect();
    list(&mut m, &listed, &slices);
    assert_eq!(*m.cluster(), good);
    assert_eq!(problem_texts(&m).len(), 1);

    // A valid update is taken; the problem is gone.
    let mut changed = named(&services, "web");
    changed.spec.as_mut().unwrap().cluster_ip = Some("10.96.1.99".into());
    apply_service(&mut m, &changed);
    assert_eq!(
        m.cluster().services[&web_id].cluster_ips,
        [IpAddr::from([10, 96, 1, 99])]
    );
    assert!(m.problems().is_empty());

    // Invalid again, then deleted: gone.
    apply_service(&mut m, &bad);
    assert_eq!(
        m.cluster().services[&web_id].cluster_ips,
        [IpAddr::from([10, 96, 1, 99])]
    );
    let mut r = Refresh::default();
    m.apply(ModelEvent::Service(Op::Delete(web_id.clone())), &mut r);
    assert!(!m.cluster().services.contains_key(&web_id));
    assert!(m.problems().is_empty());

    // A Service that was never valid is not served.
    apply_service(&mut m, &bad);
    assert!(!m.cluster().services.contains_key(&web_id));
    assert_eq!(
        problem_texts(&m),
        ["api Service default/web: spec.clusterIP \"10.96.1.1O\" is not an IP address"]
    );

    // A relist that finds an invalid object of the same name but another uid (deleted
    // and created again while the watch was down): a new object, never valid.
    let mut m = WatchedCluster::default();
    list(&mut m, &services, &slices);
    let mut recreated = bad.clone();
    recreated.metadata.uid = Some("uid-other".into());
    let listed: Vec<_> = services
        .iter()
        .map(|s| {
            if s.metadata.name.as_deref() == Some("web") {
                Arc::new(recreated.clone())
            } else {
                s.clone()
            }
        })
        .collect();
    list(&mut m, &listed, &slices);
    assert!(!m.cluster().services.contains_key(&web_id));
}

#[test]
fn a_slice_that_goes_bad_or_moves_keeps_its_last_good_version() {
    let (services, slices) = example_objects();
    let mut m = WatchedCluster::default();
    list(&mut m, &services, &slices);
    let good = m.cluster().clone();
    let web = ObjectRef::new("default", "web");

    // An address the model rejects: the endpoints stay, the problem says so (and
    // reaches the agent although no endpoint changed).
    let mut bad = named(&slices, "web-1");
    bad.endpoints.as_mut().unwrap()[0].addresses[0] = "10.244.1.300".into();
    let r = apply_slice(&mut m, &bad);
    assert!(r.problems_changed && r.endpoints_changed.is_empty() && !r.services_changed);
    assert_eq!(*m.cluster(), good);
    assert_eq!(
        problem_texts(&m),
        [
            "api EndpointSlice default/web-1: still serving the last good version: endpoints[0].addresses[0] \"10.244.1.300\" is not an IPv4 address"
        ]
    );

    // The same slice now claims to belong to another Service: not followed.
    let mut moved = named(&slices, "web-1");
    moved
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert(model::SERVICE_NAME_LABEL.into(), "db".into());
    let r = apply_slice(&mut m, &moved);
    assert!(r.endpoints_changed.is_empty());
    assert_eq!(*m.cluster(), good);
    assert_eq!(
        problem_texts(&m),
        [
            "api EndpointSlice default/web-1: still serving the last good version: its kubernetes.io/service-name label changed from \"web\" to \"db\"; a slice does not move to another Service (delete it and create a new one)"
        ]
    );
    // Through a relist, likewise, for both kinds of bad version.
    for bad_version in [&bad, &moved] {
        let listed: Vec<_> = slices
            .iter()
            .map(|s| {
                if s.metadata.name.as_deref() == Some("web-1") {
                    Arc::new(bad_version.clone())
                } else {
                    s.clone()
                }
            })
            .collect();
        list(&mut m, &services, &listed);
        assert_eq!(*m.cluster(), good);
        assert_eq!(problem_texts(&m).len(), 1);
    }

    // A valid update (one endpoint fewer) is taken.
    let mut fewer = named(&slices, "web-1");
    let before = fewer.endpoints.as_ref().unwrap().len();
    fewer.endpoints.as_mut().unwrap().pop();
    let r = apply_slice(&mut m, &fewer);
    assert_eq!(r.endpoints_changed.iter().collect::<Vec<_>>(), [&web]);
    assert!(m.problems().is_empty());
    let count = |m: &WatchedCluster| -> usize {
        m.cluster().endpoints[&web]
            .iter()
            .map(|g| g.endpoints.len())
            .sum()
    };
    assert_eq!(count(&m), before - 1);

    // Bad again, then deleted: gone.
    apply_slice(&mut m, &bad);
    assert_eq!(count(&m), before - 1);
    let mut r = Refresh::default();
    m.apply(
        ModelEvent::Slice(Op::Delete(ObjectRef::new("default", "web-1"))),
        &mut r,
    );
    assert!(!m.cluster().endpoints.contains_key(&web));
    assert!(m.problems().is_empty());

    // A new slice (another uid) for another Service under the same name is followed.
    let mut m = WatchedCluster::default();
    list(&mut m, &services, &slices);
    let mut other = moved.clone();
    other.metadata.uid = Some("uid-other".into());
    let listed: Vec<_> = slices
        .iter()
        .map(|s| {
            if s.metadata.name.as_deref() == Some("web-1") {
                Arc::new(other.clone())
            } else {
                s.clone()
            }
        })
        .collect();
    list(&mut m, &services, &listed);
    assert!(!m.cluster().endpoints.contains_key(&web));
    assert!(m.problems().is_empty(), "{:?}", problem_texts(&m));
}

#[test]
fn node_facts_take_internal_addresses_of_both_families_in_order() {
    let n = node(
        &[
            ("Hostname", "node1"),
            ("ExternalIP", "203.0.113.7"),
            ("InternalIP", "fd00::1"),
            ("InternalIP", "192.0.2.1"),
            ("InternalIP", "10.0.0.1"),
        ],
        &[],
    );
    let facts = node_facts(&n);
    assert_eq!(
        facts.addresses,
        vec![
            "fd00::1".parse::<IpAddr>().unwrap(),
            IpAddr::from([192, 0, 2, 1]),
            IpAddr::from([10, 0, 0, 1])
        ]
    );
    assert!(facts.eligible);
}

#[test]
fn node_facts_take_the_zone_label() {
    let mut n = node(&[("InternalIP", "192.0.2.1")], &[]);
    assert_eq!(node_facts(&n).zone, None);
    let mut labels = std::collections::BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), "node1".to_string()),
        (
            "failure-domain.beta.kubernetes.io/zone".to_string(),
            "old".to_string(),
        ),
    ]);
    n.metadata.labels = Some(labels.clone());
    assert_eq!(node_facts(&n).zone, None, "only the GA label counts");
    labels.insert(ZONE_LABEL.into(), String::new());
    n.metadata.labels = Some(labels.clone());
    assert_eq!(node_facts(&n).zone, None, "an empty label is no zone");
    labels.insert(ZONE_LABEL.into(), "zone-a".into());
    n.metadata.labels = Some(labels);
    assert_eq!(node_facts(&n).zone.as_deref(), Some("zone-a"));
}

#[test]
fn a_node_being_removed_is_not_eligible() {
    assert!(!node_facts(&node(&[], &[TO_BE_DELETED_TAINT])).eligible);
    let mut n = node(&[], &[]);
    n.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        Default::default(),
    ));
    assert!(!node_facts(&n).eligible);
}

#[test]
fn pools_follow_events_and_keep_their_last_good_version() {
    let (services, slices) = example_objects();
    let mut m = WatchedCluster::default();
    list(&mut m, &services, &slices);
    let pool = |blocks: &str, uid: &str| -> LoadBalancerIPPool {
        let mut p: LoadBalancerIPPool = serde_yaml::from_str(&format!(
            "metadata: {{name: lan}}\nspec: {{blocks: {blocks}}}"
        ))
        .unwrap();
        p.metadata.uid = Some(uid.into());
        p
    };
    let id = ObjectRef::new("", "lan");
    let mut r = Refresh::default();
    let good = pool("[{cidr: 192.0.2.200/30}]", "uid-1");
    m.apply(
        ModelEvent::LbPool(Op::Apply(cluster_ref(&good), convert_pool(&good))),
        &mut r,
    );
    assert!(r.services_changed, "a pool change recomputes everything");
    assert_eq!(m.cluster().lb_pools[&id].size(crate::addr::Family::V4), 2);
    // A broken edit of the same object: its last good version stays, with the reason.
    let bad = pool("[{cidr: 192.0.2.200/33}]", "uid-1");
    m.apply(
        ModelEvent::LbPool(Op::Apply(cluster_ref(&bad), convert_pool(&bad))),
        &mut r,
    );
    assert_eq!(m.cluster().lb_pools[&id].size(crate::addr::Family::V4), 2);
    let texts = problem_texts(&m);
    assert!(
        texts.iter().any(|t| t.contains("LoadBalancerIPPool lan")
            && t.contains("still serving the last good version")
            && t.contains("spec.blocks[0]")),
        "{texts:?}"
    );
    // A new object of that name that was never good serves nothing.
    let other = pool("[{cidr: nonsense}]", "uid-2");
    m.apply(
        ModelEvent::LbPool(Op::Apply(cluster_ref(&other), convert_pool(&other))),
        &mut r,
    );
    assert!(m.cluster().lb_pools.is_empty());
    m.apply(ModelEvent::LbPool(Op::Delete(id)), &mut r);
    assert!(problem_texts(&m).is_empty());
}
