//! Unit tests of `manifest`.
use super::*;
use crate::desired::{self, BackendAddr, Frontend, IpCidr};
use crate::model::{Protocol, ServiceKind, TargetPort};
use std::net::Ipv4Addr;

fn reasons(set: &ManifestSet) -> Vec<String> {
    set.problems.iter().map(ToString::to_string).collect()
}

fn svc_yaml(name: &str, cluster_ip: &str, ports: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  clusterIP: {cluster_ip}\n  ports:\n{ports}"
    )
}

const MULTI_DOC: &str = r#"
# Deployment and ConfigMap are ignored; the Service and its slice are loaded.
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec: {containers: [{name: api, image: "api:1"}]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: api-config, namespace: shop}
data: {LOG_LEVEL: debug}
---
apiVersion: v1
kind: Service
metadata:
  name: api
  namespace: shop
  labels: {app: api}
spec:
  type: NodePort
  clusterIP: 10.96.1.1
  selector: {app: api}
  ports:
  - name: http
    port: 80
    targetPort: http
    nodePort: 30080
  - name: dns
    port: 53
    protocol: UDP
    targetPort: 5353
  - name: dns-tcp
    port: 53
    protocol: TCP
    targetPort: 5353
  - name: sig
    port: 2905
    protocol: SCTP
    targetPort: 2906
--- # the slice
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: api-abcde
  namespace: shop
  labels: {kubernetes.io/service-name: api}
addressType: IPv4
ports:
- {name: http, port: 8080, protocol: TCP}
- {name: dns, port: 5353, protocol: UDP}
- {name: dns-tcp, port: 5353, protocol: TCP}
endpoints:
- addresses: [10.244.0.11]
- addresses: [10.244.0.12]
  conditions: {ready: true}
...
"#;

#[test]
fn multi_document_file_with_ignored_kinds() {
    let set = load_str(MULTI_DOC, "app.yaml");
    // The only problem: the SCTP port that would need a port change, skipped with the
    // rest of the Service kept.
    assert_eq!(
        reasons(&set),
        vec![
            "app.yaml#3 Service shop/api: spec.ports[3] (\"sig\" 2905/SCTP) skipped: targetPort 2906 differs from port, and SCTP is translated by address only (its CRC32c would need recomputing for a port change)"
        ]
    );
    let id = ObjectRef::new("shop", "api");
    let svc = &set.cluster.services[&id];
    assert_eq!(svc.kind, ServiceKind::NodePort);
    assert_eq!(svc.ports.len(), 3);
    assert_eq!(svc.ports[0].target_port, TargetPort::Name("http".into()));
    assert_eq!(svc.ports[0].node_port, Some(30080));
    assert_eq!(set.cluster.services.len(), 1);
    assert_eq!(set.cluster.endpoints[&id].len(), 1);

    let (state, problems) = desired::compute(&set.cluster, &desired::NodeContext::default());
    assert!(problems.is_empty());
    let vip = Ipv4Addr::new(10, 96, 1, 1);
    assert_eq!(state.frontends.len(), 3);
    let http = &state.frontends[&Frontend {
        vip: vip.into(),
        port: 80,
        proto: Protocol::Tcp,
    }];
    assert_eq!(
        http.backends,
        vec![
            BackendAddr {
                addr: Ipv4Addr::new(10, 244, 0, 11).into(),
                port: 8080,
                proto: Protocol::Tcp
            },
            BackendAddr {
                addr: Ipv4Addr::new(10, 244, 0, 12).into(),
                port: 8080,
                proto: Protocol::Tcp
            },
        ]
    );
    let dns = &state.frontends[&Frontend {
        vip: vip.into(),
        port: 53,
        proto: Protocol::Udp,
    }];
    assert_eq!(dns.port_name, "dns");
    assert_eq!(dns.backends[0].port, 5353);
    assert_eq!(dns.backends[0].proto, Protocol::Udp);
}

#[test]
fn bad_services_are_problems_and_the_rest_loads() {
    let docs = [
            svc_yaml("bad-ip", "10.0.0.300", "  - port: 80\n"),
            svc_yaml("zero", "10.96.0.2", "  - port: 0\n"),
            svc_yaml("huge", "10.96.0.3", "  - {name: a, port: 80}\n  - {name: b, port: 70000}\n"),
            svc_yaml("icmp", "10.96.0.4", "  - {port: 80, protocol: ICMP}\n"),
            "apiVersion: v1\nkind: Service\nmetadata: {namespace: x}\nspec: {clusterIP: 10.96.0.5, ports: [{port: 80}]}\n"
                .to_string(),
            "apiVersion: v1\nkind: Service\nmetadata: {name: noports}\nspec: {clusterIP: 10.96.0.6}\n".to_string(),
            svc_yaml("good", "10.96.0.7", "  - port: 80\n"),
            "apiVersion: v1\nkind: Service\nmetadata: {name: typo}\nspec: {ports: [{port: eighty}]}\n".to_string(),
        ];
    let set = load_str(&docs.join("---\n"), "examples/bad.yaml");
    assert_eq!(
        reasons(&set),
        vec![
            "examples/bad.yaml#1 Service default/bad-ip: spec.clusterIP \"10.0.0.300\" is not an IP address",
            "examples/bad.yaml#2 Service default/zero: spec.ports[0].port 0 is out of range 1-65535",
            "examples/bad.yaml#3 Service default/huge: spec.ports[1].port 70000 is out of range 1-65535",
            "examples/bad.yaml#4 Service default/icmp: spec.ports[0].protocol \"ICMP\" is not TCP, UDP or SCTP",
            "examples/bad.yaml#5 Service: missing metadata.name",
            "examples/bad.yaml#6 Service default/noports: missing spec.ports",
            "examples/bad.yaml#8 Service default/typo: invalid Service: invalid type: string \"eighty\", expected i32",
        ]
    );
    assert_eq!(
        set.cluster.services.keys().cloned().collect::<Vec<_>>(),
        vec![ObjectRef::new("default", "good")]
    );
}

#[test]
fn malformed_document_in_the_middle_does_not_stop_the_others() {
    let text = format!(
        "{}---\nkind: Service\n  metadata: [unclosed\n---\n{}---\n- just\n- a list\n---\nfoo: bar\n---\napiVersion: v1\n",
        svc_yaml("first", "10.96.0.1", "  - port: 80\n"),
        svc_yaml("third", "10.96.0.3", "  - port: 80\n"),
    );
    let set = load_str(&text, "mixed.yaml");
    assert_eq!(set.cluster.services.len(), 2, "{:?}", reasons(&set));
    let problems = reasons(&set);
    assert_eq!(problems.len(), 4, "{problems:?}");
    assert!(
        problems[0].starts_with("mixed.yaml#2: invalid YAML: "),
        "{problems:?}"
    );
    assert_eq!(
        problems[1],
        "mixed.yaml#4: not a Kubernetes object (expected a mapping)"
    );
    assert_eq!(problems[2], "mixed.yaml#5: missing kind");
    assert_eq!(problems[3], "mixed.yaml#6: missing kind");
}

#[test]
fn garbage_never_panics() {
    for text in [
        "",
        "---",
        "--- \n---\n",
        "\u{feff}apiVersion: v1",
        "[",
        "{",
        "- - -",
        "kind: 5\napiVersion: v1",
        "kind: List\napiVersion: v1\nitems: 3",
        "kind: List\napiVersion: v1\nitems: [1, null, {kind: Service}]",
        "a: &a [*a]",
        "? [a]\n: b",
        "kind: Service\napiVersion: v1\nmetadata: 7",
        "\t\tkind: x",
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {clusterIPs: [], ports: [{port: -1}]}",
        "apiVersion: v1\nkind: Endpoints\nmetadata: {name: x}\nsubsets: [{addresses: [{ip: nope}]}]",
    ] {
        let _ = load_str(text, "fuzz.yaml");
        let _ = parse_json_str(text, "fuzz.json");
    }
}

#[test]
fn duplicates_first_in_file_order_wins() {
    let text = [
        svc_yaml("web", "10.96.0.1", "  - port: 80\n"),
        svc_yaml("web", "10.96.0.2", "  - port: 80\n"),
        // Same name in another namespace is not a duplicate.
        svc_yaml("web", "10.96.0.3", "  - port: 80\n")
            .replace("name: web", "name: web\n  namespace: other"),
        // Same name, different kind is not a duplicate either.
        "apiVersion: v1\nkind: Endpoints\nmetadata: {name: web}\n".to_string(),
    ]
    .join("---\n");
    let set = load_str(&text, "dup.yaml");
    assert_eq!(
        reasons(&set),
        vec!["dup.yaml#2 Service default/web: duplicate of the one defined at dup.yaml#1; ignored"]
    );
    assert_eq!(set.cluster.services.len(), 2);
    assert_eq!(
        set.cluster.services[&ObjectRef::new("default", "web")].cluster_ips,
        vec![Ipv4Addr::new(10, 96, 0, 1)]
    );
}

const EXTERNAL_DB: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: db, namespace: data}
spec:
  clusterIP: 10.96.5.5
  ports: [{port: 5432, targetPort: 9376}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: db, namespace: data}
subsets:
- addresses: [{ip: 192.0.2.42}]
  notReadyAddresses: [{ip: 192.0.2.43}]
  ports: [{port: 9376}]
"#;

const DB_SLICE: &str = r#"
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-1
  namespace: data
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
ports: [{port: 9999}]
endpoints: [{addresses: [192.0.2.50]}]
"#;

#[test]
fn legacy_endpoints_only_when_no_slices_exist() {
    let vip = Frontend {
        vip: Ipv4Addr::new(10, 96, 5, 5).into(),
        port: 5432,
        proto: Protocol::Tcp,
    };
    let set = load_str(EXTERNAL_DB, "db.yaml");
    assert!(set.problems.is_empty(), "{:?}", reasons(&set));
    let (state, _) = desired::compute(&set.cluster, &desired::NodeContext::default());
    assert_eq!(
        state.frontends[&vip].backends,
        vec![BackendAddr {
            addr: Ipv4Addr::new(192, 0, 2, 42).into(),
            port: 9376,
            proto: Protocol::Tcp
        }]
    );

    let set = load_str(&format!("{EXTERNAL_DB}{DB_SLICE}"), "db.yaml");
    let (state, _) = desired::compute(&set.cluster, &desired::NodeContext::default());
    assert_eq!(
        state.frontends[&vip].backends,
        vec![BackendAddr {
            addr: Ipv4Addr::new(192, 0, 2, 50).into(),
            port: 9999,
            proto: Protocol::Tcp
        }]
    );
}

#[test]
fn kind_list_and_typed_list_are_flattened() {
    let text = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: a}
  spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: a}
- apiVersion: v1
  kind: Service
  metadata: {name: bad}
  spec: {clusterIP: 10.96.0.2, ports: [{port: 80, protocol: ICMP}]}
---
apiVersion: v1
kind: ServiceList
items:
- apiVersion: v1
  kind: Service
  metadata: {name: b}
  spec: {clusterIP: 10.96.0.3, ports: [{port: 80}]}
"#;
    let set = load_str(text, "list.yaml");
    assert_eq!(
        reasons(&set),
        vec![
            "list.yaml#1.items[2] Service default/bad: spec.ports[0].protocol \"ICMP\" is not TCP, UDP or SCTP"
        ]
    );
    let names: Vec<_> = set
        .cluster
        .services
        .keys()
        .map(|k| k.name.as_str())
        .collect();
    assert_eq!(names, vec!["a", "b"]);
}

#[test]
fn endpoint_slice_problems() {
    let text = r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: orphan}
addressType: IPv4
endpoints: []
---
apiVersion: discovery.k8s.io/v1beta1
kind: EndpointSlice
metadata: {name: old, labels: {kubernetes.io/service-name: x}}
addressType: IPv4
endpoints: []
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: v6, labels: {kubernetes.io/service-name: x}}
addressType: IPv6
endpoints: [{addresses: ["fd00::1"]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: bad, labels: {kubernetes.io/service-name: x}}
addressType: IPv4
endpoints: [{addresses: ["fd00::1"]}]
"#;
    let set = load_str(text, "s.yaml");
    assert_eq!(
        reasons(&set),
        vec![
            "s.yaml#1 EndpointSlice default/orphan: EndpointSlice has no kubernetes.io/service-name label",
            "s.yaml#2 EndpointSlice default/old: unsupported apiVersion \"discovery.k8s.io/v1beta1\" for EndpointSlice",
            "s.yaml#4 EndpointSlice default/bad: endpoints[0].addresses[0] \"fd00::1\" is not an IPv4 address",
        ]
    );
    // The IPv6 slice is a group of IPv6 endpoints (the Service's IPv6 frontends get them).
    let groups = &set.cluster.endpoints[&ObjectRef::new("default", "x")];
    assert_eq!(groups.len(), 1);
    assert_eq!(
        groups[0].endpoints[0].address,
        "fd00::1".parse::<std::net::IpAddr>().unwrap()
    );
}

#[test]
fn load_dir_reads_sorted_manifest_files_only() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/manifests");
    let set = load_dir(&dir).unwrap();
    let names: Vec<_> = set
        .cluster
        .services
        .keys()
        .map(ToString::to_string)
        .collect();
    assert_eq!(names, vec!["default/db", "shop/web"]);
    let problems: Vec<_> = set
        .problems
        .iter()
        .map(|p| {
            (
                Path::new(&p.source)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                p.object.clone(),
            )
        })
        .collect();
    assert_eq!(
        problems,
        vec![
            (
                "30-broken.yml#1".to_string(),
                Some("Service default/broken".to_string())
            ),
            ("40-garbage.yaml#1".to_string(), None),
        ]
    );
    let (state, problems) = desired::compute(&set.cluster, &desired::NodeContext::default());
    assert!(problems.is_empty());
    let web = &state.frontends[&Frontend {
        vip: Ipv4Addr::new(10, 96, 10, 10).into(),
        port: 80,
        proto: Protocol::Tcp,
    }];
    // Only the ready endpoint; the terminating one is a fallback only.
    assert_eq!(
        web.backends,
        vec![BackendAddr {
            addr: Ipv4Addr::new(10, 244, 1, 5).into(),
            port: 8080,
            proto: Protocol::Tcp
        }]
    );
    let db = &state.frontends[&Frontend {
        vip: Ipv4Addr::new(10, 96, 20, 20).into(),
        port: 5432,
        proto: Protocol::Tcp,
    }];
    assert_eq!(
        db.backends,
        vec![BackendAddr {
            addr: Ipv4Addr::new(192, 0, 2, 42).into(),
            port: 9376,
            proto: Protocol::Tcp
        }]
    );

    let missing = load_dir(&dir.join("does-not-exist")).unwrap_err();
    assert!(
        missing
            .to_string()
            .starts_with("cannot read manifest directory "),
        "{missing}"
    );
}

#[test]
fn examples_load_without_problems() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let set = load_dir(&dir).unwrap();
    assert!(set.problems.is_empty(), "{:?}", reasons(&set));
    assert!(!set.cluster.services.is_empty());
    let (state, problems) = desired::compute(&set.cluster, &desired::NodeContext::default());
    assert!(problems.is_empty(), "{problems:?}");
    // Every proxied Service port of the examples has a frontend per cluster IP.
    let expected: usize = set
        .cluster
        .services
        .values()
        .filter(|s| s.is_proxied())
        .map(|s| s.ports.len() * s.cluster_ips.len())
        .sum();
    assert_eq!(state.frontends.len(), expected);
    // Each file on its own, too (the examples are meant to be applied one by one).
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let set = load_str(&text, &path.display().to_string());
            assert!(set.problems.is_empty(), "{:?}", reasons(&set));
        }
    }
}

const LOAD_BALANCER: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: shop, namespace: web}
spec:
  type: LoadBalancer
  clusterIP: 10.96.3.3
  externalIPs: [203.0.113.7]
  externalTrafficPolicy: Local
  internalTrafficPolicy: Cluster
  healthCheckNodePort: 32001
  allocateLoadBalancerNodePorts: true
  loadBalancerSourceRanges: [" 10.0.0.0/8 ", 192.0.2.0/24]
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 300}}
  ports: [{name: https, port: 443, targetPort: 8443, nodePort: 30443}]
status:
  loadBalancer:
    ingress:
    - {ip: 198.51.100.1}
    - {ip: 198.51.100.2, ipMode: Proxy}
    - {hostname: shop.example.com}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: shop-1
  namespace: web
  labels: {kubernetes.io/service-name: shop}
addressType: IPv4
ports: [{name: https, port: 8443}]
endpoints:
- {addresses: [10.244.1.5], nodeName: node-a}
- {addresses: [10.244.2.5], nodeName: node-b}
- {addresses: [10.244.1.6], nodeName: node-a, conditions: {ready: false, serving: true, terminating: true}}
"#;

#[test]
fn load_balancer_manifest_end_to_end() {
    use crate::desired::{FrontendKind, HealthCheck, Ipv4Cidr, NodeContext};
    let set = load_str(LOAD_BALANCER, "lb.yaml");
    assert!(set.problems.is_empty(), "{:?}", reasons(&set));
    let node = NodeContext {
        node_name: Some("node-a".into()),
        node_ips: vec![Ipv4Addr::new(192, 168, 1, 10).into()],
        node_port_addresses: vec![],
        ..Default::default()
    };
    let (state, problems) = desired::compute(&set.cluster, &node);
    assert!(problems.is_empty(), "{problems:?}");
    let got: Vec<(String, FrontendKind, bool)> = state
        .frontends
        .iter()
        .map(|(f, s)| (f.to_string(), s.kind, s.local_policy))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "10.96.3.3:443/TCP".to_string(),
                FrontendKind::ClusterIp,
                false
            ),
            (
                "192.168.1.10:30443/TCP".to_string(),
                FrontendKind::NodePort,
                true
            ),
            (
                "198.51.100.1:443/TCP".to_string(),
                FrontendKind::LoadBalancer,
                true
            ),
            (
                "203.0.113.7:443/TCP".to_string(),
                FrontendKind::ExternalIp,
                true
            ),
        ]
    );
    let be = |a: [u8; 4]| BackendAddr {
        addr: Ipv4Addr::from(a).into(),
        port: 8443,
        proto: Protocol::Tcp,
    };
    for s in state.frontends.values() {
        assert_eq!(s.backends, vec![be([10, 244, 1, 5]), be([10, 244, 2, 5])]);
        assert_eq!(s.local_backends, vec![be([10, 244, 1, 5])]);
        assert_eq!(s.terminating, vec![be([10, 244, 1, 6])]);
        assert_eq!(s.affinity_timeout, Some(300));
    }
    let lb = state
        .frontends
        .values()
        .find(|s| s.kind == FrontendKind::LoadBalancer)
        .unwrap();
    assert_eq!(
        lb.source_ranges,
        vec![
            IpCidr::V4(Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, 0), 8)),
            IpCidr::V4(Ipv4Cidr::new(Ipv4Addr::new(192, 0, 2, 0), 24))
        ]
    );
    assert_eq!(
        state.health_checks,
        vec![HealthCheck {
            service: ObjectRef::new("web", "shop"),
            port: 32001,
            local_endpoints: 1
        }]
    );
}

#[test]
fn invalid_semantics_fields_are_problems_naming_the_field() {
    let text = LOAD_BALANCER
        .replace("192.0.2.0/24", "192.0.2.0/40")
        .replace("name: shop,", "name: shop2,");
    let bad_policy = svc_yaml("p", "10.96.0.9", "  - port: 80\n")
        .replace("spec:\n", "spec:\n  internalTrafficPolicy: Nearest\n");
    let set = load_str(&format!("{text}---\n{bad_policy}"), "bad.yaml");
    assert_eq!(
        reasons(&set),
        vec![
            "bad.yaml#1 Service web/shop2: spec.loadBalancerSourceRanges[1] \"192.0.2.0/40\" is not a CIDR",
            "bad.yaml#3 Service default/p: spec.internalTrafficPolicy \"Nearest\" is not Cluster or Local",
        ]
    );
}

fn service_cidr_yaml(name: &str, cidrs: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata: {{name: {name}}}\nspec: {{cidrs: [{cidrs}]}}\n"
    )
}

#[test]
fn service_cidrs_are_read_as_cluster_scoped_objects_with_last_good_versions() {
    let text = [
        service_cidr_yaml("kubernetes", "\"10.96.0.0/12\", \"fd00::/108\""),
        // The namespace of a cluster-scoped object means nothing.
        service_cidr_yaml("extra", "\"172.30.0.0/16\"")
            .replace("{name: extra}", "{name: extra, namespace: kube-system}"),
        service_cidr_yaml("old", "\"10.0.0.0/16\"")
            .replace("networking.k8s.io/v1", "networking.k8s.io/v1alpha1"),
        service_cidr_yaml("bad", "\"10.1.0.0\""),
    ]
    .join("---\n");
    let set = load_str(&text, "cidrs.yaml");
    assert_eq!(
        reasons(&set),
        vec![
            "cidrs.yaml#3 ServiceCIDR old: unsupported apiVersion \"networking.k8s.io/v1alpha1\" for ServiceCIDR",
            "cidrs.yaml#4 ServiceCIDR bad: spec.cidrs[0] \"10.1.0.0\" is not a CIDR",
        ]
    );
    let cidr = |s: &str| s.parse::<model::IpCidr>().unwrap();
    assert_eq!(
        set.cluster.service_cidrs,
        BTreeMap::from([
            (ObjectRef::new("", "extra"), vec![cidr("172.30.0.0/16")]),
            (
                ObjectRef::new("", "kubernetes"),
                vec![cidr("10.96.0.0/12"), cidr("fd00::/108")]
            ),
        ])
    );
    let (state, _) = desired::compute(&set.cluster, &desired::NodeContext::default());
    assert_eq!(
        state.service_cidrs.to_string(),
        "10.96.0.0/12,172.30.0.0/16,fd00::/108 (ServiceCIDR extra, kubernetes)"
    );

    // A ServiceCIDR that was good and turns bad keeps its last good version; one
    // removed from a file that parses is gone.
    let mut lg = LastGood::default();
    let good = service_cidr_yaml("kubernetes", "\"10.96.0.0/12\"");
    read_at(&mut lg, &[("c.yaml", &good)], 1000);
    let broken = service_cidr_yaml("kubernetes", "\"10.96.0.0/33\"");
    let set = read_at(&mut lg, &[("c.yaml", &broken)], 2000);
    assert_eq!(
        set.cluster.service_cidrs[&ObjectRef::new("", "kubernetes")],
        [cidr("10.96.0.0/12")]
    );
    assert_eq!(
        reasons(&set),
        [format!(
            "c.yaml#1 ServiceCIDR kubernetes: still serving the last good version (read at {T1000}): spec.cidrs[0] \"10.96.0.0/33\" is not a CIDR"
        )]
    );
    let set = read_at(&mut lg, &[("c.yaml", "")], 3000);
    assert!(set.cluster.service_cidrs.is_empty());
}

// ---- Last known good ----

/// One read of a directory of YAML files (name, text) at `secs` after the epoch.
fn read_at(lg: &mut LastGood, files: &[(&str, &str)], secs: u64) -> ManifestSet {
    let reads = files
        .iter()
        .map(|(name, text)| FileRead::yaml(name, text))
        .collect();
    lg.update(
        reads,
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs),
    )
}

fn cluster_ip(set: &ManifestSet, name: &str) -> Option<Ipv4Addr> {
    set.cluster
        .services
        .get(&ObjectRef::new("default", name))
        .and_then(|s| match s.cluster_ips[0] {
            std::net::IpAddr::V4(v4) => Some(v4),
            std::net::IpAddr::V6(_) => None,
        })
}

fn endpoint_count(set: &ManifestSet, name: &str) -> Option<usize> {
    set.cluster
        .endpoints
        .get(&ObjectRef::new("default", name))
        .map(|g| g.iter().map(|g| g.endpoints.len()).sum())
}

fn slice_yaml(service: &str, addresses: &[&str]) -> String {
    let mut out = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {service}-1\n  labels: {{kubernetes.io/service-name: {service}}}\naddressType: IPv4\nports: [{{port: 8080}}]\nendpoints:\n"
    );
    for a in addresses {
        out += &format!("  - addresses: [\"{a}\"]\n");
    }
    out
}

/// 1000 s after the epoch, as problems show it.
const T1000: &str = "1970-01-01T00:16:40Z";

#[test]
fn a_file_that_stops_parsing_keeps_serving_its_last_good_objects() {
    let mut lg = LastGood::default();
    let web = svc_yaml("web", "10.96.0.1", "  - port: 80\n");
    let good = format!("{web}---\n{}", slice_yaml("web", &["10.244.0.1"]));
    let other = svc_yaml("other", "10.96.0.2", "  - port: 80\n");
    let set = read_at(&mut lg, &[("a.yaml", &good), ("b.yaml", &other)], 1000);
    assert!(set.problems.is_empty(), "{:?}", reasons(&set));
    let served = set.cluster.clone();

    // One unclosed `{` in the Service's document: the Service keeps its last good
    // version; the slice's document parses and its change is taken.
    let broken_web = web.replace("spec:\n", "spec: {\n");
    let broken = format!(
        "{broken_web}---\n{}",
        slice_yaml("web", &["10.244.0.1", "10.244.0.2"])
    );
    let set = read_at(&mut lg, &[("a.yaml", &broken), ("b.yaml", &other)], 2000);
    assert_eq!(cluster_ip(&set, "web"), Some(Ipv4Addr::new(10, 96, 0, 1)));
    assert_eq!(set.cluster.services, served.services);
    assert_eq!(endpoint_count(&set, "web"), Some(2));
    let problems = reasons(&set);
    assert_eq!(problems.len(), 2, "{problems:?}");
    let prefix = format!(
        "a.yaml#1: still serving the last good version of this file (read at {T1000}): invalid YAML: "
    );
    assert!(problems[0].starts_with(&prefix), "{problems:?}");
    assert_eq!(
        problems[1],
        format!(
            "a.yaml Service default/web: still serving the last good version (read at {T1000}): not found in what could be read of the file"
        )
    );

    // Nothing of the file parses any more: both objects keep the versions last read
    // good (the Service from the first read, the slice from the second).
    let set = read_at(
        &mut lg,
        &[("a.yaml", "{ unclosed: [\n"), ("b.yaml", &other)],
        3000,
    );
    assert_eq!(cluster_ip(&set, "web"), Some(Ipv4Addr::new(10, 96, 0, 1)));
    assert_eq!(endpoint_count(&set, "web"), Some(2));
    assert_eq!(cluster_ip(&set, "other"), Some(Ipv4Addr::new(10, 96, 0, 2)));
    let problems = reasons(&set);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].starts_with(&prefix), "{problems:?}");
    assert!(
        problems.iter().any(|p| p.starts_with(&format!(
            "a.yaml Service default/web: still serving the last good version (read at {T1000})"
        ))),
        "{problems:?}"
    );
    assert!(
            problems.iter().any(|p| p.starts_with(
                "a.yaml EndpointSlice default/web-1: still serving the last good version (read at 1970-01-01T00:33:20Z)"
            )),
            "{problems:?}"
        );

    // Fixed, with a change: served as written, no problem left.
    let fixed = format!(
        "{}---\n{}",
        svc_yaml("web", "10.96.0.3", "  - port: 80\n"),
        slice_yaml("web", &["10.244.0.1"])
    );
    let set = read_at(&mut lg, &[("a.yaml", &fixed), ("b.yaml", &other)], 4000);
    assert!(set.problems.is_empty(), "{:?}", reasons(&set));
    assert_eq!(cluster_ip(&set, "web"), Some(Ipv4Addr::new(10, 96, 0, 3)));
    assert_eq!(endpoint_count(&set, "web"), Some(1));

    // An object removed from a file that parses is removed.
    let without_slice = svc_yaml("web", "10.96.0.3", "  - port: 80\n");
    let set = read_at(
        &mut lg,
        &[("a.yaml", &without_slice), ("b.yaml", &other)],
        5000,
    );
    assert!(set.problems.is_empty(), "{:?}", reasons(&set));
    assert_eq!(endpoint_count(&set, "web"), None);

    // Broken again, then deleted: a deleted file removes its objects.
    let set = read_at(&mut lg, &[("a.yaml", "{"), ("b.yaml", &other)], 6000);
    assert_eq!(cluster_ip(&set, "web"), Some(Ipv4Addr::new(10, 96, 0, 3)));
    let set = read_at(&mut lg, &[("b.yaml", &other)], 7000);
    assert!(set.problems.is_empty(), "{:?}", reasons(&set));
    assert_eq!(
        set.cluster.services.keys().cloned().collect::<Vec<_>>(),
        vec![ObjectRef::new("default", "other")]
    );
    // Back with a syntax error: a file that was never good (since it came back) serves
    // nothing.
    let set = read_at(&mut lg, &[("a.yaml", "{"), ("b.yaml", &other)], 8000);
    assert_eq!(cluster_ip(&set, "web"), None);
    assert_eq!(reasons(&set).len(), 1);
    assert!(
        reasons(&set)[0].starts_with("a.yaml#1: invalid YAML: "),
        "{:?}",
        reasons(&set)
    );
}

#[test]
fn a_file_that_was_never_good_serves_nothing() {
    let mut lg = LastGood::default();
    let web = svc_yaml("web", "10.96.0.1", "  - port: 80\n");
    let set = read_at(
        &mut lg,
        &[("a.yaml", &web.replace("spec:\n", "spec: {\n"))],
        1,
    );
    assert!(set.cluster.services.is_empty());
    assert_eq!(reasons(&set).len(), 1);
    assert!(reasons(&set)[0].starts_with("a.yaml#1: invalid YAML: "));
    // The same holds for an object that was never valid.
    let set = read_at(
        &mut lg,
        &[("a.yaml", &web.replace("10.96.0.1", "10.96.0.1O"))],
        2,
    );
    assert!(set.cluster.services.is_empty());
    assert_eq!(
        reasons(&set),
        ["a.yaml#1 Service default/web: spec.clusterIP \"10.96.0.1O\" is not an IP address"]
    );
    // Both reads lack something that has no last good version here: an earlier agent
    // may have served it (the agent removes nothing while that holds).
    assert!(set.withheld);
}

#[test]
fn a_read_is_withheld_only_while_something_unusable_has_no_last_good_version() {
    let mut lg = LastGood::default();
    let web = svc_yaml("web", "10.96.0.1", "  - port: 80\n");
    let broken = web.replace("spec:\n", "spec: {\n");
    // First read (a restarted agent): a broken file; then it parses.
    assert!(read_at(&mut lg, &[("a.yaml", &broken)], 1).withheld);
    assert!(!read_at(&mut lg, &[("a.yaml", &web)], 2).withheld);
    // Broken again: its last good version is served, nothing is withheld.
    assert!(!read_at(&mut lg, &[("a.yaml", &broken)], 3).withheld);
    // A new file that never parsed, or an invalid object never valid here: withheld.
    assert!(read_at(&mut lg, &[("a.yaml", &web), ("b.yaml", "x: [")], 4).withheld);
    let typo = svc_yaml("db", "10.96.0.2O", "  - port: 80\n");
    assert!(read_at(&mut lg, &[("a.yaml", &web), ("c.yaml", &typo)], 5).withheld);
    // A duplicate of a usable object withholds nothing.
    assert!(!read_at(&mut lg, &[("a.yaml", &web), ("d.yaml", &web)], 6).withheld);
}

#[test]
fn an_object_that_becomes_invalid_keeps_its_last_good_version() {
    let mut lg = LastGood::default();
    let web = svc_yaml("web", "10.96.0.1", "  - port: 80\n");
    let gone = svc_yaml("gone", "10.96.0.2", "  - port: 80\n");
    let set = read_at(&mut lg, &[("a.yaml", &format!("{web}---\n{gone}"))], 1000);
    assert_eq!(set.cluster.services.len(), 2);

    // A clusterIP typo in one object, the other object removed: the first keeps its
    // last good version (the file parses, so the second is really gone).
    let typo = web.replace("10.96.0.1", "10.96.0.1O");
    let set = read_at(&mut lg, &[("a.yaml", &typo)], 2000);
    assert_eq!(
        reasons(&set),
        [format!(
            "a.yaml#1 Service default/web: still serving the last good version (read at {T1000}): spec.clusterIP \"10.96.0.1O\" is not an IP address"
        )]
    );
    assert_eq!(
        set.cluster.services.keys().cloned().collect::<Vec<_>>(),
        vec![ObjectRef::new("default", "web")]
    );
    assert_eq!(cluster_ip(&set, "web"), Some(Ipv4Addr::new(10, 96, 0, 1)));
    // A field of the wrong type (the object does not even deserialize) is the same.
    let wrong_type = web.replace("port: 80", "port: eighty");
    let set = read_at(&mut lg, &[("a.yaml", &wrong_type)], 3000);
    assert_eq!(cluster_ip(&set, "web"), Some(Ipv4Addr::new(10, 96, 0, 1)));
    assert!(
            reasons(&set)[0].starts_with(&format!(
                "a.yaml#1 Service default/web: still serving the last good version (read at {T1000}): invalid Service: "
            )),
            "{:?}",
            reasons(&set)
        );

    // Fixed with another address: taken.
    let set = read_at(
        &mut lg,
        &[("a.yaml", &web.replace("10.96.0.1", "10.96.0.9"))],
        4000,
    );
    assert!(set.problems.is_empty());
    assert_eq!(cluster_ip(&set, "web"), Some(Ipv4Addr::new(10, 96, 0, 9)));
}

#[test]
fn a_part_that_does_not_parse_keeps_objects_it_may_have_held() {
    // A document without kind may be an object whose kind line was lost: what the file
    // no longer shows is kept until the file reads completely.
    let mut lg = LastGood::default();
    let web = svc_yaml("web", "10.96.0.1", "  - port: 80\n");
    let db = svc_yaml("db", "10.96.0.2", "  - port: 5432\n");
    read_at(&mut lg, &[("a.yaml", &format!("{web}---\n{db}"))], 1);
    let no_kind = db.replace("kind: Service\n", "");
    let set = read_at(&mut lg, &[("a.yaml", &format!("{web}---\n{no_kind}"))], 2);
    assert_eq!(cluster_ip(&set, "db"), Some(Ipv4Addr::new(10, 96, 0, 2)));
    assert!(
        reasons(&set)[0].starts_with("a.yaml#2: still serving the last good version of this file")
    );
    // An object without a name, likewise.
    let no_name = db.replace("  name: db\n", "");
    let set = read_at(&mut lg, &[("a.yaml", &format!("{web}---\n{no_name}"))], 3);
    assert_eq!(cluster_ip(&set, "db"), Some(Ipv4Addr::new(10, 96, 0, 2)));
    // Deployments and other kinds lose nothing: the file reads completely.
    let set = read_at(
        &mut lg,
        &[(
            "a.yaml",
            &format!("{web}---\nkind: Deployment\nmetadata: {{name: x}}\n"),
        )],
        4,
    );
    assert_eq!(cluster_ip(&set, "db"), None);
    assert_eq!(
        reasons(&set),
        ["a.yaml#2 Deployment default/x: missing apiVersion"]
    );

    // JSON: a syntax error ends the stream; what followed it is kept.
    let mut lg = LastGood::default();
    let json = |ip: &str| {
        format!(
            r#"{{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "a"}}, "spec": {{"clusterIP": "{ip}", "ports": [{{"port": 80}}]}}}}"#
        )
    };
    let b = json("10.96.0.2").replace("\"a\"", "\"b\"");
    let set = lg.update(
        vec![FileRead::json(
            "s.json",
            &format!("{}\n{b}", json("10.96.0.1")),
        )],
        SystemTime::UNIX_EPOCH,
    );
    assert_eq!(set.cluster.services.len(), 2);
    let set = lg.update(
        vec![FileRead::json(
            "s.json",
            &format!("{}\n{{\n{b}", json("10.96.0.3")),
        )],
        SystemTime::UNIX_EPOCH,
    );
    assert_eq!(cluster_ip(&set, "a"), Some(Ipv4Addr::new(10, 96, 0, 3)));
    assert_eq!(cluster_ip(&set, "b"), Some(Ipv4Addr::new(10, 96, 0, 2)));
}

#[test]
fn a_duplicate_never_moves_the_served_object() {
    let mut lg = LastGood::default();
    let web = svc_yaml("web", "10.96.0.10", "  - port: 80\n");
    let copy = svc_yaml("web", "10.96.0.99", "  - port: 80\n");
    let set = read_at(&mut lg, &[("web.yaml", &web)], 1);
    assert_eq!(cluster_ip(&set, "web"), Some(Ipv4Addr::new(10, 96, 0, 10)));

    // A new file, first in file order, defines the same Service: the incumbent stays
    // and the newcomer is named.
    let set = read_at(&mut lg, &[("00-copy.yaml", &copy), ("web.yaml", &web)], 2);
    assert_eq!(cluster_ip(&set, "web"), Some(Ipv4Addr::new(10, 96, 0, 10)));
    assert_eq!(
        reasons(&set),
        ["00-copy.yaml#1 Service default/web: duplicate of the one defined at web.yaml#1; ignored"]
    );
    // Still so on the next reads, and while the incumbent's file is broken.
    let set = read_at(&mut lg, &[("00-copy.yaml", &copy), ("web.yaml", &web)], 3);
    assert_eq!(cluster_ip(&set, "web"), Some(Ipv4Addr::new(10, 96, 0, 10)));
    let set = read_at(&mut lg, &[("00-copy.yaml", &copy), ("web.yaml", "{")], 4);
    assert_eq!(cluster_ip(&set, "web"), Some(Ipv4Addr::new(10, 96, 0, 10)));
    let problems = reasons(&set);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert_eq!(
        problems[0],
        "00-copy.yaml#1 Service default/web: duplicate of the one defined at web.yaml#1; ignored"
    );
    assert!(problems[1].starts_with("web.yaml#1: still serving the last good version"));
    // ... and while it is invalid.
    let typo = web.replace("10.96.0.10", "10.96.0.1O");
    let set = read_at(&mut lg, &[("00-copy.yaml", &copy), ("web.yaml", &typo)], 5);
    assert_eq!(cluster_ip(&set, "web"), Some(Ipv4Addr::new(10, 96, 0, 10)));

    // The incumbent's file drops it: the other definition takes over.
    let set = read_at(&mut lg, &[("00-copy.yaml", &copy), ("web.yaml", "")], 6);
    assert!(set.problems.is_empty(), "{:?}", reasons(&set));
    assert_eq!(cluster_ip(&set, "web"), Some(Ipv4Addr::new(10, 96, 0, 99)));
    // Now that one is the incumbent.
    let set = read_at(&mut lg, &[("00-copy.yaml", &copy), ("web.yaml", &web)], 7);
    assert_eq!(cluster_ip(&set, "web"), Some(Ipv4Addr::new(10, 96, 0, 99)));
    assert_eq!(
        reasons(&set),
        ["web.yaml#1 Service default/web: duplicate of the one defined at 00-copy.yaml#1; ignored"]
    );

    // Without an incumbent (a first read), the first in file order wins.
    let set = read_at(
        &mut LastGood::default(),
        &[("00-copy.yaml", &copy), ("web.yaml", &web)],
        1,
    );
    assert_eq!(cluster_ip(&set, "web"), Some(Ipv4Addr::new(10, 96, 0, 99)));
    assert_eq!(
        reasons(&set),
        ["web.yaml#1 Service default/web: duplicate of the one defined at 00-copy.yaml#1; ignored"]
    );
}

#[test]
fn a_kept_duplicate_that_is_not_served_says_nothing_of_serving() {
    // The newcomer's file breaks: its last good version is kept but not served, so no
    // problem claims it is.
    let mut lg = LastGood::default();
    let web = svc_yaml("web", "10.96.0.10", "  - port: 80\n");
    let copy = svc_yaml("web", "10.96.0.99", "  - port: 80\n");
    read_at(&mut lg, &[("web.yaml", &web)], 1);
    read_at(&mut lg, &[("00-copy.yaml", &copy), ("web.yaml", &web)], 2);
    let set = read_at(&mut lg, &[("00-copy.yaml", "{"), ("web.yaml", &web)], 3);
    assert_eq!(cluster_ip(&set, "web"), Some(Ipv4Addr::new(10, 96, 0, 10)));
    let problems = reasons(&set);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("00-copy.yaml#1: invalid YAML: "),
        "{problems:?}"
    );
    let set = read_at(
        &mut lg,
        &[
            ("00-copy.yaml", &copy.replace("10.96.0.99", "x")),
            ("web.yaml", &web),
        ],
        4,
    );
    assert_eq!(
        reasons(&set),
        ["00-copy.yaml#1 Service default/web: spec.clusterIP \"x\" is not an IP address"]
    );
}

/// A dual-stack Service as the API server stores it (ipFamilies, clusterIPs, one
/// EndpointSlice per family), read from manifests: one frontend per family, each with its
/// family's endpoints, NodePorts on the node addresses of each family.
#[test]
fn a_dual_stack_service_from_manifests() {
    let text = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: NodePort
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv6, IPv4]
  clusterIP: fd00:10:96::10
  clusterIPs: [fd00:10:96::10, 10.96.0.10]
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-v4, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints: [{addresses: [10.244.1.11]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-v6, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv6
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints: [{addresses: ["fd00:10:244:1::11"]}]
"#;
    let set = load_str(text, "web.yaml");
    assert!(set.problems.is_empty(), "{:?}", reasons(&set));
    let node = desired::NodeContext {
        node_ips: vec![
            "192.0.2.1".parse().unwrap(),
            "fd00:192:0:2::1".parse().unwrap(),
        ],
        ..Default::default()
    };
    let (state, problems) = desired::compute(&set.cluster, &node);
    assert!(problems.is_empty(), "{problems:?}");
    let frontends: Vec<(String, Vec<String>)> = state
        .frontends
        .iter()
        .map(|(f, s)| {
            (
                f.to_string(),
                s.backends.iter().map(ToString::to_string).collect(),
            )
        })
        .collect();
    let v4 = vec!["10.244.1.11:8080/TCP".to_string()];
    let v6 = vec!["[fd00:10:244:1::11]:8080/TCP".to_string()];
    assert_eq!(
        frontends,
        vec![
            ("10.96.0.10:80/TCP".to_string(), v4.clone()),
            ("192.0.2.1:30080/TCP".to_string(), v4),
            ("[fd00:10:96::10]:80/TCP".to_string(), v6.clone()),
            ("[fd00:192:0:2::1]:30080/TCP".to_string(), v6),
        ]
    );
}
