//! Manifest mode: the cluster model read from a directory of Kubernetes manifests, as
//! `kubectl apply -f DIR` would take them.
//!
//! - Every `*.yaml`, `*.yml` and `*.json` file directly in the directory (not recursive),
//!   in file-name order. YAML files may hold several documents separated by `---` lines;
//!   JSON files may hold several concatenated objects. `kind: List` (and typed lists such as
//!   `ServiceList`) are flattened through their `items`.
//! - Services (`v1`), EndpointSlices (`discovery.k8s.io/v1`) and legacy Endpoints (`v1`) are
//!   used; every other kind (Deployment, ConfigMap, Namespace...) is ignored silently.
//! - A malformed document, an invalid object or a duplicate (same kind and namespace/name
//!   as an earlier valid object in file order: the first one wins) becomes a [`Problem`] and
//!   is skipped; everything else still loads. Only an unreadable directory is an error.
//! - Endpoints: a Service that has EndpointSlices takes its endpoints from them only and its
//!   legacy Endpoints are ignored (kube-proxy uses slices only); a Service without slices
//!   uses its legacy Endpoints, so hand-written Endpoints work (see [`Cluster::assemble`]).
//! - The namespace defaults to `default` when absent.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::discovery::v1 as discoveryv1;
use serde_json::Value;

use crate::model::{self, Cluster, ObjectRef, Problem};

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest directory {}: {source}", path.display())]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A k8s object of one of the kinds the dataplane uses, as found in a manifest.
#[derive(Clone, Debug, PartialEq)]
pub enum K8sObject {
    Service(Box<corev1::Service>),
    EndpointSlice(Box<discoveryv1::EndpointSlice>),
    Endpoints(Box<corev1::Endpoints>),
}

impl K8sObject {
    pub fn kind(&self) -> &'static str {
        match self {
            K8sObject::Service(_) => "Service",
            K8sObject::EndpointSlice(_) => "EndpointSlice",
            K8sObject::Endpoints(_) => "Endpoints",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParsedObject {
    /// Same format as [`Problem::source`].
    pub source: String,
    pub object: K8sObject,
}

/// The result of loading manifests: the model and everything that was skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ManifestSet {
    pub cluster: Cluster,
    pub problems: Vec<Problem>,
}

/// Loads every manifest file of `dir` (see the module documentation).
pub fn load_dir(dir: &Path) -> Result<ManifestSet, ManifestError> {
    let err = |source| ManifestError::ReadDir {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        let name = entry.file_name();
        let Some(ext) = Path::new(&name).extension().and_then(|e| e.to_str()) else {
            continue;
        };
        let ext = ext.to_ascii_lowercase();
        if !matches!(ext.as_str(), "yaml" | "yml" | "json") {
            continue;
        }
        // Follows symlinks, like kubectl; directories are not descended into.
        if std::fs::metadata(entry.path())
            .map(|m| m.is_dir())
            .unwrap_or(false)
        {
            continue;
        }
        files.push((name, ext == "json"));
    }
    files.sort();

    let mut items = Vec::new();
    for (name, is_json) in files {
        let path = dir.join(&name);
        let source = path.display().to_string();
        let text = match std::fs::read(&path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(t) => t,
                Err(_) => {
                    items.push(Err(Problem {
                        source,
                        object: None,
                        reason: "file is not UTF-8 text".into(),
                    }));
                    continue;
                }
            },
            Err(e) => {
                items.push(Err(Problem {
                    source,
                    object: None,
                    reason: format!("cannot read file: {e}"),
                }));
                continue;
            }
        };
        if is_json {
            parse_json_items(&text, &source, &mut items)
        } else {
            parse_yaml_items(&text, &source, &mut items)
        }
    }
    Ok(build(items))
}

/// Parses and assembles one YAML text (tests, or a single file).
pub fn load_str(text: &str, source: &str) -> ManifestSet {
    let mut items = Vec::new();
    parse_yaml_items(text, source, &mut items);
    build(items)
}

/// Splits YAML text into documents the way kubectl does: a line starting with `---`
/// followed by nothing but whitespace or a comment separates documents. Returns the
/// documents that contain more than blank lines and comments, numbered from 1.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut flush = |current: &mut String| {
        let meaningful = current.lines().any(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        });
        if meaningful {
            docs.push((docs.len() + 1, std::mem::take(current)));
        } else {
            current.clear();
        }
    };
    for line in text.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix("---") {
            let rest = rest.trim();
            if rest.is_empty() || rest.starts_with('#') {
                flush(&mut current);
                continue;
            }
        }
        current.push_str(line);
    }
    flush(&mut current);
    docs
}

/// Parses YAML text (possibly several `---`-separated documents; JSON is valid YAML too).
/// `source` names the text in problems (`source#N` for document N). A malformed document
/// is a problem; the other documents are still parsed.
pub fn parse_str(text: &str, source: &str) -> (Vec<ParsedObject>, Vec<Problem>) {
    let mut items = Vec::new();
    parse_yaml_items(text, source, &mut items);
    partition(items)
}

/// Parsed objects and problems, in document order.
pub type Items = Vec<Result<ParsedObject, Problem>>;

fn partition(items: Items) -> (Vec<ParsedObject>, Vec<Problem>) {
    let mut objects = Vec::new();
    let mut problems = Vec::new();
    for item in items {
        match item {
            Ok(o) => objects.push(o),
            Err(p) => problems.push(p),
        }
    }
    (objects, problems)
}

fn parse_yaml_items(text: &str, source: &str, items: &mut Items) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (n, doc) in split_documents(text) {
        let doc_source = format!("{source}#{n}");
        let value = serde_yaml::from_str::<serde_yaml::Value>(&doc)
            .map_err(|e| format!("invalid YAML: {e}"))
            .and_then(|v| serde_json::to_value(v).map_err(|e| format!("unsupported YAML: {e}")));
        match value {
            Ok(value) => collect(value, &doc_source, items),
            Err(reason) => items.push(Err(Problem {
                source: doc_source,
                object: None,
                reason,
            })),
        }
    }
}

/// Parses JSON text: one or more concatenated JSON objects. A syntax error ends the file
/// (JSON cannot be resynchronised); objects before it are kept.
pub fn parse_json_str(text: &str, source: &str) -> (Vec<ParsedObject>, Vec<Problem>) {
    let mut items = Vec::new();
    parse_json_items(text, source, &mut items);
    partition(items)
}

fn parse_json_items(text: &str, source: &str, items: &mut Items) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (i, value) in serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .enumerate()
    {
        let doc_source = format!("{source}#{}", i + 1);
        match value {
            Ok(value) => collect(value, &doc_source, items),
            Err(e) => {
                items.push(Err(Problem {
                    source: doc_source,
                    object: None,
                    reason: format!("invalid JSON: {e}"),
                }));
                break;
            }
        }
    }
}

/// "Service default/foo" (or "Service" without a usable name), read from the raw value so
/// it is available even when the object does not deserialize.
fn object_label(kind: &str, value: &Value) -> String {
    let meta = value.get("metadata");
    match meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        Some(name) => {
            let ns = meta
                .and_then(|m| m.get("namespace"))
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .unwrap_or("default");
            format!("{kind} {ns}/{name}")
        }
        None => kind.to_string(),
    }
}

fn collect(value: Value, source: &str, items: &mut Items) {
    let problem = |object: Option<String>, reason: String| {
        Err(Problem {
            source: source.to_string(),
            object,
            reason,
        })
    };
    let Value::Object(map) = &value else {
        if !value.is_null() {
            items.push(problem(
                None,
                "not a Kubernetes object (expected a mapping)".into(),
            ));
        }
        return;
    };
    let Some(kind) = map
        .get("kind")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
    else {
        items.push(problem(None, "missing kind".into()));
        return;
    };
    let kind = kind.to_string();
    let Some(api_version) = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
    else {
        items.push(problem(
            Some(object_label(&kind, &value)),
            "missing apiVersion".into(),
        ));
        return;
    };
    let api_version = api_version.to_string();

    if let Some(list) = map.get("items").filter(|_| kind.ends_with("List")) {
        let Value::Array(list) = list else {
            items.push(problem(Some(kind), "items is not a list".into()));
            return;
        };
        for (i, item) in list.iter().enumerate() {
            collect(item.clone(), &format!("{source}.items[{i}]"), items);
        }
        return;
    }

    let label = object_label(&kind, &value);
    let parsed = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Service") => serde_json::from_value(value).map(|s| K8sObject::Service(Box::new(s))),
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            serde_json::from_value(value).map(|s| K8sObject::EndpointSlice(Box::new(s)))
        }
        ("v1", "Endpoints") => {
            serde_json::from_value(value).map(|e| K8sObject::Endpoints(Box::new(e)))
        }
        (_, "Service" | "EndpointSlice" | "Endpoints") => {
            items.push(problem(
                Some(label),
                format!("unsupported apiVersion {api_version:?} for {kind}"),
            ));
            return;
        }
        _ => {
            tracing::debug!(%source, %api_version, %kind, "ignoring object of an unused kind");
            return;
        }
    };
    match parsed {
        Ok(object) => items.push(Ok(ParsedObject {
            source: source.to_string(),
            object,
        })),
        Err(e) => items.push(problem(Some(label), format!("invalid {kind}: {e}"))),
    }
}

/// A converted object, before the duplicate check.
enum Converted {
    Service(model::Service),
    Slice(ObjectRef, Option<model::EndpointGroup>),
    Legacy(ObjectRef, Vec<model::EndpointGroup>),
}

/// Converts one parsed object: its own namespace/name, the model value and warnings.
fn convert(
    object: &K8sObject,
) -> Result<(ObjectRef, Converted, Vec<String>), model::InvalidObject> {
    match object {
        K8sObject::Service(s) => {
            let (svc, w) = model::Service::from_k8s(s)?;
            Ok((svc.id.clone(), Converted::Service(svc), w))
        }
        K8sObject::EndpointSlice(s) => {
            let (svc, group, w) = model::endpoint_group_from_slice(s)?;
            Ok((
                ObjectRef::from_meta(&s.metadata)?,
                Converted::Slice(svc, group),
                w,
            ))
        }
        K8sObject::Endpoints(e) => {
            let (svc, groups, w) = model::endpoint_groups_from_endpoints(e)?;
            Ok((svc.clone(), Converted::Legacy(svc, groups), w))
        }
    }
}

/// Converts parsed objects into the model, in order (a duplicate of an earlier valid object
/// is a problem and ignored), and assembles the cluster. Problems stay in document order.
/// Every source goes through here: the manifest directory and the Kubernetes watches.
pub fn build(items: Items) -> ManifestSet {
    let mut problems = Vec::new();
    let mut seen: HashMap<(&'static str, ObjectRef), String> = HashMap::new();
    let mut services = Vec::new();
    let mut slices = BTreeMap::new();
    let mut legacy = Vec::new();
    for item in items {
        let ParsedObject { source, object } = match item {
            Ok(o) => o,
            Err(p) => {
                problems.push(p);
                continue;
            }
        };
        let kind = object.kind();
        let (id, converted, warnings) = match convert(&object) {
            Ok(c) => c,
            Err(e) => {
                let meta = match &object {
                    K8sObject::Service(s) => &s.metadata,
                    K8sObject::EndpointSlice(s) => &s.metadata,
                    K8sObject::Endpoints(e) => &e.metadata,
                };
                let object = Some(match ObjectRef::from_meta(meta) {
                    Ok(id) => format!("{kind} {id}"),
                    Err(_) => kind.to_string(),
                });
                problems.push(Problem {
                    source,
                    object,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let object_label = Some(format!("{kind} {id}"));
        if let Some(first) = seen.get(&(kind, id.clone())) {
            problems.push(Problem {
                source,
                object: object_label,
                reason: format!("duplicate of the one defined at {first}; ignored"),
            });
            continue;
        }
        for reason in warnings {
            problems.push(Problem {
                source: source.clone(),
                object: object_label.clone(),
                reason,
            });
        }
        match converted {
            Converted::Service(svc) => services.push(svc),
            Converted::Slice(svc, group) => {
                slices.insert(id.clone(), (svc, group));
            }
            Converted::Legacy(svc, groups) => legacy.push((svc, groups)),
        }
        seen.insert((kind, id), source);
    }
    // Slices in namespace/name order, as a watch cache would list them.
    ManifestSet {
        cluster: Cluster::assemble(services, slices.into_values(), legacy),
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{self, BackendAddr, Frontend};
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
        // The only problem: the SCTP port, skipped with the rest of the Service kept.
        assert_eq!(
            reasons(&set),
            vec![
                "app.yaml#3 Service shop/api: spec.ports[3] (\"sig\" 2905/SCTP) skipped: SCTP is not supported by datapath v1"
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
            vip,
            port: 80,
            proto: Protocol::Tcp,
        }];
        assert_eq!(
            http.backends,
            vec![
                BackendAddr {
                    addr: Ipv4Addr::new(10, 244, 0, 11),
                    port: 8080,
                    proto: Protocol::Tcp
                },
                BackendAddr {
                    addr: Ipv4Addr::new(10, 244, 0, 12),
                    port: 8080,
                    proto: Protocol::Tcp
                },
            ]
        );
        let dns = &state.frontends[&Frontend {
            vip,
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
            vec![
                "dup.yaml#2 Service default/web: duplicate of the one defined at dup.yaml#1; ignored"
            ]
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
            vip: Ipv4Addr::new(10, 96, 5, 5),
            port: 5432,
            proto: Protocol::Tcp,
        };
        let set = load_str(EXTERNAL_DB, "db.yaml");
        assert!(set.problems.is_empty(), "{:?}", reasons(&set));
        let (state, _) = desired::compute(&set.cluster, &desired::NodeContext::default());
        assert_eq!(
            state.frontends[&vip].backends,
            vec![BackendAddr {
                addr: Ipv4Addr::new(192, 0, 2, 42),
                port: 9376,
                proto: Protocol::Tcp
            }]
        );

        let set = load_str(&format!("{EXTERNAL_DB}{DB_SLICE}"), "db.yaml");
        let (state, _) = desired::compute(&set.cluster, &desired::NodeContext::default());
        assert_eq!(
            state.frontends[&vip].backends,
            vec![BackendAddr {
                addr: Ipv4Addr::new(192, 0, 2, 50),
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
        // The IPv6 slice is accepted (and counts as "has slices") but contributes no group.
        assert_eq!(
            set.cluster.endpoints[&ObjectRef::new("default", "x")],
            vec![]
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
            vip: Ipv4Addr::new(10, 96, 10, 10),
            port: 80,
            proto: Protocol::Tcp,
        }];
        // Only the ready endpoint; the terminating one is a fallback only.
        assert_eq!(
            web.backends,
            vec![BackendAddr {
                addr: Ipv4Addr::new(10, 244, 1, 5),
                port: 8080,
                proto: Protocol::Tcp
            }]
        );
        let db = &state.frontends[&Frontend {
            vip: Ipv4Addr::new(10, 96, 20, 20),
            port: 5432,
            proto: Protocol::Tcp,
        }];
        assert_eq!(
            db.backends,
            vec![BackendAddr {
                addr: Ipv4Addr::new(192, 0, 2, 42),
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
            node_ips: vec![Ipv4Addr::new(192, 168, 1, 10)],
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
            addr: Ipv4Addr::from(a),
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
                Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, 0), 8),
                Ipv4Cidr::new(Ipv4Addr::new(192, 0, 2, 0), 24)
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
}
