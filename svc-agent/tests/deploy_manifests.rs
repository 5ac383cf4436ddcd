//! The manifests in `deploy/` parse, and say what they mean to say: the files of
//! `deploy/base/` as `kubectl apply -f` takes them (the `files::` tests), and what
//! `kubectl kustomize` renders from `deploy/base` and from every `deploy/overlays/*` (the
//! `kustomize::` tests, which need kubectl: `cargo xtask setup` installs Debian's
//! kubernetes-client). Every check below runs on each.
//!
//! Kubernetes drops fields it does not know (kubectl only warns), so a misspelt key in a
//! manifest (`mountPropogation`, `capabilites`) silently loses a setting. k8s-openapi
//! ignores unknown fields too; so every document is deserialized into its k8s-openapi type,
//! serialized back, and must come out equal to what the file says: a key k8s-openapi
//! dropped, or a required one it had to default, shows up as a difference, with its path.
//!
//! Then the settings that matter are checked: the ClusterRole is read-only on exactly what
//! the agent watches, plus the one write it makes (Services' status); a Role in the agent's
//! namespace grants the Leases; the pool CustomResourceDefinition is the kind the agent
//! watches; the DaemonSet's pod is host-network and unprivileged, with the
//! capability set deploy/README.md explains; its probes, ports and volume paths agree with its
//! own arguments and its --config file; that file, a ConfigMap mounted where --config points,
//! is a KubeProxyConfiguration the agent reads with no unknown or ignored field; and every
//! flag in those arguments is one `svc-agent --help` lists.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
};

use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{ConfigMap, Container, Namespace, PodSpec, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject},
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

/// The capabilities the agent's container adds (deploy/README.md says why each). Changing
/// the set means changing it here too, on purpose.
const CAPABILITIES: &[&str] = &["BPF", "NET_ADMIN", "PERFMON"];

const READ: &[&str] = &["get", "list", "watch"];

/// What the ClusterRole grants: exactly these (API group, resource) pairs, each with exactly
/// these verbs. The one write: LoadBalancer addresses into Services' status.
const RBAC_RESOURCES: &[(&str, &str, &[&str])] = &[
    ("", "nodes", READ),
    ("", "services", READ),
    ("", "services/status", &["patch"]),
    ("discovery.k8s.io", "endpointslices", READ),
    ("networking.k8s.io", "servicecidrs", READ),
    ("svc-ebpf.dev", "loadbalancerippools", READ),
];

/// What the Role in the agent's namespace grants: the Leases (kube-lease-manager gets,
/// creates and patches them; svcctl lb's report lists them).
const LEASE_RESOURCES: &[(&str, &str, &[&str])] = &[(
    "coordination.k8s.io",
    "leases",
    &["create", "get", "list", "patch"],
)];

/// Flags whose value is a path inside the container: each must lie on a volume mount.
const PATH_FLAGS: &[&str] = &["--bpffs", "--cgroup", "--proc-sys-net", "--config"];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// One object of a manifest file, as its k8s-openapi type.
enum Object {
    // Parsed and round-tripped; there is nothing more to check in a Namespace.
    #[allow(dead_code)]
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    Role(Role),
    RoleBinding(RoleBinding),
    Crd(Box<CustomResourceDefinition>),
    ConfigMap(ConfigMap),
    DaemonSet(Box<DaemonSet>),
}

struct Document {
    /// `file.yaml#N` (N counts documents from 1), for messages.
    source: String,
    /// The document as the file has it, as JSON.
    json: Value,
    /// The document through k8s-openapi and back.
    round_trip: Value,
    object: Object,
}

/// Every `*.yaml` (and `*.yml`) in deploy/base/ but its kustomization.yaml, sorted by name:
/// the manifests `kubectl apply -f` takes as they are.
fn manifest_files() -> Vec<PathBuf> {
    let dir = deploy_dir().join("base");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("reading deploy/base/").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .filter(|p| p.file_stem().is_some_and(|s| s != "kustomization"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.yaml in {}", dir.display());
    files
}

/// The kustomizations `kubectl kustomize` must render: deploy/base and every overlay, as
/// paths relative to the repository.
fn kustomizations() -> Vec<String> {
    let mut dirs = vec!["deploy/base".to_string()];
    let overlays = deploy_dir().join("overlays");
    let mut names: Vec<String> = std::fs::read_dir(&overlays)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", overlays.display()))
        .map(|e| e.expect("reading deploy/overlays/").path())
        .filter(|p| p.join("kustomization.yaml").is_file())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no overlay in {}", overlays.display());
    dirs.extend(names.into_iter().map(|n| format!("deploy/overlays/{n}")));
    dirs
}

/// `kubectl kustomize DIR`'s output (DIR relative to the repository). Panics when kubectl
/// is missing (saying how to get it) or the rendering fails (with kubectl's message).
fn kustomize(dir: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = match Command::new("kubectl")
        .args(["kustomize", dir])
        .current_dir(&root)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "kubectl is not installed (needed to render deploy/'s kustomize layout): run \
             `cargo xtask setup`, which installs Debian's kubernetes-client"
        ),
        Err(e) => panic!("cannot run kubectl kustomize {dir}: {e}"),
    };
    assert!(
        out.status.success(),
        "kubectl kustomize {dir} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("kubectl kustomize printed UTF-8")
}

/// Every kustomization rendered and parsed as [`load`] parses the files (rendered once per
/// test binary): (the directory, its documents).
fn rendered() -> &'static [(String, Vec<Document>)] {
    static RENDERED: std::sync::OnceLock<Vec<(String, Vec<Document>)>> = std::sync::OnceLock::new();
    RENDERED.get_or_init(|| {
        kustomizations()
            .into_iter()
            .map(|dir| {
                let mut docs = Vec::new();
                parse_documents(&format!("kustomize {dir}"), &kustomize(&dir), &mut docs);
                assert!(!docs.is_empty(), "kubectl kustomize {dir} rendered nothing");
                (dir, docs)
            })
            .collect()
    })
}

/// `json` as a `T`, and `T` serialized back to JSON.
fn typed<T: DeserializeOwned + Serialize>(source: &str, json: &Value) -> (T, Value) {
    let object: T = serde_json::from_value(json.clone())
        .unwrap_or_else(|e| panic!("{source}: does not deserialize: {e}"));
    let back = serde_json::to_value(&object)
        .unwrap_or_else(|e| panic!("{source}: does not serialize back: {e}"));
    (object, back)
}

/// Parses every document of every manifest into its k8s-openapi type. Panics, naming the
/// document, on YAML that does not parse, an apiVersion/kind this test does not know, or a
/// document that does not deserialize.
fn load() -> Vec<Document> {
    let mut docs = Vec::new();
    for path in manifest_files() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        parse_documents(&name, &text, &mut docs);
    }
    docs
}

/// Parses every document of `text` (named `name` in messages) into `docs`, as [`load`]
/// says.
fn parse_documents(name: &str, text: &str, docs: &mut Vec<Document>) {
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let source = format!("{name}#{}", i + 1);
        let yaml = serde_yaml::Value::deserialize(de)
            .unwrap_or_else(|e| panic!("{source}: not YAML: {e}"));
        // An empty document (a `---` with nothing after it), as kubectl skips it.
        if yaml.is_null() {
            continue;
        }
        let json = serde_json::to_value(&yaml)
            .unwrap_or_else(|e| panic!("{source}: not representable as JSON: {e}"));
        let api_version = json["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = json["kind"].as_str().unwrap_or_default().to_string();
        let (object, round_trip) = match (api_version.as_str(), kind.as_str()) {
            ("v1", "Namespace") => {
                let (o, v) = typed(&source, &json);
                (Object::Namespace(o), v)
            }
            ("v1", "ServiceAccount") => {
                let (o, v) = typed(&source, &json);
                (Object::ServiceAccount(o), v)
            }
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                let (o, v) = typed(&source, &json);
                (Object::ClusterRole(o), v)
            }
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                let (o, v) = typed(&source, &json);
                (Object::ClusterRoleBinding(o), v)
            }
            ("rbac.authorization.k8s.io/v1", "Role") => {
                let (o, v) = typed(&source, &json);
                (Object::Role(o), v)
            }
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                let (o, v) = typed(&source, &json);
                (Object::RoleBinding(o), v)
            }
            ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
                let (o, v) = typed(&source, &json);
                (Object::Crd(Box::new(o)), v)
            }
            ("v1", "ConfigMap") => {
                let (o, v) = typed(&source, &json);
                (Object::ConfigMap(o), v)
            }
            ("apps/v1", "DaemonSet") => {
                let (o, v) = typed(&source, &json);
                (Object::DaemonSet(Box::new(o)), v)
            }
            _ => panic!(
                "{source}: apiVersion {api_version:?} kind {kind:?} is not one this test \
                     knows (Namespace, ServiceAccount, ClusterRole, ClusterRoleBinding, Role, \
                     RoleBinding, CustomResourceDefinition, ConfigMap, DaemonSet): add it to load() so its fields are checked too"
            ),
        };
        docs.push(Document {
            source,
            json,
            round_trip,
            object,
        });
    }
}

/// Where `file` and `typed` differ, as `path: what` lines. Objects compare key by key (so
/// key order does not matter), arrays element by element, scalars by value (YAML and
/// k8s-openapi numbers compare as numbers).
fn differences(path: &str, file: &Value, typed: &Value, out: &mut Vec<String>) {
    match (file, typed) {
        (Value::Object(f), Value::Object(t)) => {
            for (k, fv) in f {
                let p = format!("{path}.{k}");
                match t.get(k) {
                    Some(tv) => differences(&p, fv, tv, out),
                    None => out.push(format!(
                        "{p}: not a field k8s-openapi knows here (misspelt? wrong level?)"
                    )),
                }
            }
            for (k, tv) in t {
                if !f.contains_key(k) {
                    out.push(format!(
                        "{path}.{k}: missing from the file, k8s-openapi defaulted it to {tv} \
                         (a required field that is misspelt or absent?)"
                    ));
                }
            }
        }
        (Value::Array(f), Value::Array(t)) if f.len() == t.len() => {
            for (i, (fv, tv)) in f.iter().zip(t).enumerate() {
                differences(&format!("{path}[{i}]"), fv, tv, out);
            }
        }
        _ if file == typed => {}
        _ => out.push(format!(
            "{path}: the file has {file}, k8s-openapi reads it as {typed}"
        )),
    }
}

fn every_document_round_trips_through_k8s_openapi(docs: &[Document]) {
    let mut problems = Vec::new();
    for doc in docs {
        // No normalisation is needed: k8s-openapi serializes exactly the fields it read
        // (absent optional fields stay absent), IntOrString and Quantity keep the form they
        // were written in (1 stays 1, "100m" stays "100m"), and numbers compare as numbers.
        let mut diffs = Vec::new();
        differences("", &doc.json, &doc.round_trip, &mut diffs);
        problems.extend(diffs.into_iter().map(|d| format!("{}: {d}", doc.source)));
    }
    assert!(
        problems.is_empty(),
        "manifests in deploy/ with fields Kubernetes would not read as written:\n  {}",
        problems.join("\n  ")
    );
}

fn daemonset(docs: &[Document]) -> (&str, &DaemonSet) {
    let sets: Vec<(&str, &DaemonSet)> = docs
        .iter()
        .filter_map(|d| match &d.object {
            Object::DaemonSet(ds) => Some((d.source.as_str(), &**ds)),
            _ => None,
        })
        .collect();
    assert_eq!(sets.len(), 1, "expected exactly one DaemonSet in deploy/");
    sets[0]
}

fn pod_spec(ds: &DaemonSet) -> &PodSpec {
    ds.spec
        .template
        .spec
        .as_ref()
        .expect("DaemonSet without spec.template.spec")
}

fn agent_container(ds: &DaemonSet) -> &Container {
    let spec = pod_spec(ds);
    assert_eq!(
        spec.containers.len(),
        1,
        "expected one container in the DaemonSet"
    );
    &spec.containers[0]
}

/// The container's arguments as flag -> values, from both `--flag=value` and
/// `--flag value`; a bare `--flag` (a switch) has no value.
fn parse_args(c: &Container) -> BTreeMap<String, Vec<String>> {
    let words: Vec<&String> = c
        .command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .collect();
    let mut flags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        i += 1;
        let Some(rest) = w.strip_prefix("--") else {
            // The command's program name, or a stray value: neither is a flag.
            continue;
        };
        match rest.split_once('=') {
            Some((flag, value)) => flags
                .entry(format!("--{flag}"))
                .or_default()
                .push(value.to_string()),
            None => {
                let values = flags.entry(w.clone()).or_default();
                if let Some(next) = words.get(i).filter(|n| !n.starts_with('-')) {
                    values.push((*next).clone());
                    i += 1;
                }
            }
        }
    }
    flags
}

/// The single value of `flag`, which must be given exactly once.
fn arg<'a>(flags: &'a BTreeMap<String, Vec<String>>, flag: &str) -> &'a str {
    match flags.get(flag).map(Vec::as_slice) {
        Some([v]) => v,
        other => panic!("expected {flag} exactly once with a value in the args, got {other:?}"),
    }
}

/// The config file the DaemonSet's --config names: its path, the ConfigMap mounted there
/// and the key it is, and the key's text.
struct ConfigFile<'a> {
    path: PathBuf,
    config_map: &'a str,
    key: String,
    text: &'a str,
}

/// The ConfigMap behind the agent's --config: the volume mounted over the path must be a
/// ConfigMap of deploy/, with the path's file name as a key (or an item's path).
fn config_file(docs: &[Document]) -> Option<ConfigFile<'_>> {
    let (source, ds) = daemonset(docs);
    let c = agent_container(ds);
    let flags = parse_args(c);
    flags.get("--config")?;
    let path = PathBuf::from(arg(&flags, "--config"));
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| path.starts_with(&m.mount_path))
        .unwrap_or_else(|| panic!("{source}: --config {} is on no mount", path.display()));
    let volume = pod_spec(ds)
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap_or_else(|| panic!("{source}: no volume {}", mount.name));
    let cm_ref = volume.config_map.as_ref().unwrap_or_else(|| {
        panic!(
            "{source}: volume {} (where --config lies) is not a configMap",
            volume.name
        )
    });
    let within = path
        .strip_prefix(&mount.mount_path)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    // Without items every key is a file of its name; with items, only those, at their path.
    let key = match &cm_ref.items {
        None => within.clone(),
        Some(items) => items
            .iter()
            .find(|i| i.path == within)
            .map(|i| i.key.clone())
            .unwrap_or_else(|| panic!("{source}: no item of volume {} at {within}", volume.name)),
    };
    assert!(
        mount.sub_path.is_none(),
        "{source}: a subPath mount is not updated when the ConfigMap changes"
    );
    let ns = ds.metadata.namespace.as_deref();
    let cm = docs
        .iter()
        .find_map(|d| match &d.object {
            Object::ConfigMap(cm)
                if cm.metadata.name.as_deref() == Some(cm_ref.name.as_str())
                    && cm.metadata.namespace.as_deref() == ns =>
            {
                Some(cm)
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("{source}: no ConfigMap {ns:?}/{} in deploy/", cm_ref.name));
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(&key))
        .unwrap_or_else(|| {
            panic!(
                "ConfigMap {}: no key {key} (--config {})",
                cm_ref.name,
                path.display()
            )
        });
    Some(ConfigFile {
        path,
        config_map: &cm_ref.name,
        key,
        text,
    })
}

/// The agent's /healthz and /metrics addresses: the flag, else the --config file's, else
/// the default (kube-proxy's).
fn status_addresses(docs: &[Document]) -> (SocketAddr, SocketAddr) {
    let (_, ds) = daemonset(docs);
    let flags = parse_args(agent_container(ds));
    let file = config_file(docs).map(|f| {
        svc_agent::kubeproxy_config::parse(f.text)
            .unwrap_or_else(|e| panic!("--config {}: {e}", f.path.display()))
            .0
    });
    let flag = |name: &str| {
        flags.get(name).map(|_| {
            arg(&flags, name)
                .parse::<SocketAddr>()
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        })
    };
    let healthz = flag("--healthz-bind-address")
        .or(file.as_ref().and_then(|f| f.healthz_bind_address))
        .unwrap_or_else(|| "0.0.0.0:10256".parse().unwrap());
    let metrics = flag("--metrics-bind-address")
        .or(file.as_ref().and_then(|f| f.metrics_bind_address))
        .unwrap_or_else(|| "127.0.0.1:10249".parse().unwrap());
    (healthz, metrics)
}

fn the_config_map_is_a_kube_proxy_configuration_the_agent_reads_whole(docs: &[Document]) {
    use svc_agent::kubeproxy_config::{self, NoticeKind};
    let file = config_file(docs).expect("the DaemonSet passes --config");
    let (settings, report) = kubeproxy_config::parse(file.text)
        .unwrap_or_else(|e| panic!("ConfigMap {} key {}: {e}", file.config_map, file.key));
    // Every field is one svc-agent acts on: nothing unknown, nothing it would only log.
    let ignored: Vec<String> = report
        .notices
        .iter()
        .filter(|n| n.kind != NoticeKind::Info)
        .map(ToString::to_string)
        .collect();
    assert!(
        ignored.is_empty(),
        "ConfigMap {} key {}: {ignored:?}",
        file.config_map,
        file.key
    );
    assert!(
        !settings.cluster_cidrs.is_empty(),
        "ConfigMap {}: no clusterCIDR",
        file.config_map
    );
    // Metrics on the loopback, as kube-proxy's default.
    let (_, metrics) = status_addresses(docs);
    assert!(metrics.ip().is_loopback(), "metrics on {metrics}");
}

fn cluster_role_reads_what_the_agent_watches_and_writes_only_service_status(docs: &[Document]) {
    let roles: Vec<(&str, &ClusterRole)> = docs
        .iter()
        .filter_map(|d| match &d.object {
            Object::ClusterRole(r) => Some((d.source.as_str(), r)),
            _ => None,
        })
        .collect();
    assert_eq!(
        roles.len(),
        1,
        "expected exactly one ClusterRole in deploy/"
    );
    let (source, role) = roles[0];
    assert!(
        role.aggregation_rule.is_none(),
        "{source}: an aggregated ClusterRole grants whatever other roles add"
    );
    assert_grants(source, role.rules.iter().flatten(), RBAC_RESOURCES);

    // The binding gives that role to the DaemonSet's ServiceAccount.
    let (ds_source, ds) = daemonset(docs);
    let sa_name = pod_spec(ds)
        .service_account_name
        .as_deref()
        .unwrap_or_else(|| panic!("{ds_source}: no serviceAccountName"));
    let ds_ns = ds
        .metadata
        .namespace
        .as_deref()
        .expect("DaemonSet namespace");
    assert!(
        docs.iter()
            .any(|d| matches!(&d.object, Object::ServiceAccount(sa)
            if sa.metadata.name.as_deref() == Some(sa_name)
                && sa.metadata.namespace.as_deref() == Some(ds_ns))),
        "no ServiceAccount {ds_ns}/{sa_name} in deploy/"
    );
    let is_agent = |s: &Subject| {
        s.kind == "ServiceAccount" && s.name == sa_name && s.namespace.as_deref() == Some(ds_ns)
    };
    let bound = docs.iter().any(|d| match &d.object {
        Object::ClusterRoleBinding(b) => {
            b.role_ref.api_group.as_deref() == Some("rbac.authorization.k8s.io")
                && b.role_ref.kind == "ClusterRole"
                && Some(b.role_ref.name.as_str()) == role.metadata.name.as_deref()
                && b.subjects.iter().flatten().any(is_agent)
        }
        _ => false,
    });
    assert!(
        bound,
        "no ClusterRoleBinding gives ClusterRole {:?} to ServiceAccount {ds_ns}/{sa_name}",
        role.metadata.name
    );
}

/// The rules grant exactly `want`: each (group, resource) with exactly its verbs.
fn assert_grants<'a>(
    source: &str,
    rules: impl Iterator<Item = &'a PolicyRule>,
    want: &[(&str, &str, &[&str])],
) {
    let mut granted: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (i, rule) in rules.enumerate() {
        assert!(
            rule.resource_names.is_none() && rule.non_resource_urls.is_none(),
            "{source}: rules[{i}] has resourceNames or nonResourceURLs"
        );
        let groups = rule.api_groups.as_deref().unwrap_or_default();
        let resources = rule.resources.as_deref().unwrap_or_default();
        assert!(
            !groups.is_empty() && !resources.is_empty(),
            "{source}: rules[{i}] without apiGroups or resources"
        );
        for g in groups {
            for r in resources {
                granted
                    .entry((g.clone(), r.clone()))
                    .or_default()
                    .extend(rule.verbs.iter().cloned());
            }
        }
    }
    let want: BTreeMap<(String, String), BTreeSet<String>> = want
        .iter()
        .map(|(g, r, verbs)| {
            (
                (g.to_string(), r.to_string()),
                verbs.iter().map(|v| v.to_string()).collect(),
            )
        })
        .collect();
    assert_eq!(
        granted, want,
        "{source}: (apiGroup, resource) → verbs granted vs wanted"
    );
}

fn the_lease_role_grants_leases_in_the_agents_namespace_only(docs: &[Document]) {
    let (_, ds) = daemonset(docs);
    let ds_ns = ds
        .metadata
        .namespace
        .as_deref()
        .expect("DaemonSet namespace");
    let roles: Vec<(&str, &Role)> = docs
        .iter()
        .filter_map(|d| match &d.object {
            Object::Role(r) => Some((d.source.as_str(), r)),
            _ => None,
        })
        .collect();
    assert_eq!(
        roles.len(),
        1,
        "expected exactly one Role (the Leases) in deploy/"
    );
    let (source, role) = roles[0];
    assert_eq!(
        role.metadata.namespace.as_deref(),
        Some(ds_ns),
        "{source}: namespace"
    );
    assert_grants(source, role.rules.iter().flatten(), LEASE_RESOURCES);
    let sa = pod_spec(ds)
        .service_account_name
        .clone()
        .unwrap_or_default();
    assert!(
        docs.iter().any(|d| matches!(&d.object, Object::RoleBinding(b)
            if b.metadata.namespace.as_deref() == Some(ds_ns)
                && b.role_ref.kind == "Role"
                && Some(b.role_ref.name.as_str()) == role.metadata.name.as_deref()
                && b.subjects.iter().flatten().any(|s| s.kind == "ServiceAccount" && s.name == sa))),
        "no RoleBinding gives the Lease Role to the agent's ServiceAccount"
    );
    // The agent puts its Leases in POD_NAMESPACE: the pod's own namespace.
    let env = agent_container(ds).env.clone().unwrap_or_default();
    let pod_ns = env
        .iter()
        .find(|e| e.name == "POD_NAMESPACE")
        .expect("POD_NAMESPACE env");
    let field = pod_ns
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.as_str());
    assert_eq!(field, Some("metadata.namespace"));
}

fn the_pool_crd_is_the_kind_the_agent_watches(docs: &[Document]) {
    use svc_agent::lbipam::object::{GROUP, KIND, PLURAL, VERSION};
    let crds: Vec<&CustomResourceDefinition> = docs
        .iter()
        .filter_map(|d| match &d.object {
            Object::Crd(c) => Some(c.as_ref()),
            _ => None,
        })
        .collect();
    assert_eq!(crds.len(), 1);
    let crd = crds[0];
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some(format!("{PLURAL}.{GROUP}").as_str())
    );
    assert_eq!(crd.spec.group, GROUP);
    assert_eq!(crd.spec.scope, "Cluster");
    assert_eq!(crd.spec.names.kind, KIND);
    assert_eq!(crd.spec.names.plural, PLURAL);
    let version = crd
        .spec
        .versions
        .iter()
        .find(|v| v.name == VERSION)
        .expect("the agent's version");
    assert!(version.served && version.storage);
    // Every field of the schema's spec is one the agent reads (it refuses unknown ones).
    let schema = version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("schema");
    let spec = &schema.properties.as_ref().expect("properties")["spec"];
    let fields: BTreeSet<&str> = spec
        .properties
        .as_ref()
        .expect("spec properties")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        BTreeSet::from(["blocks", "serviceSelector", "disabled"])
    );
    // And a pool written to that schema is one the agent takes.
    let pool: svc_agent::lbipam::object::LoadBalancerIPPool = serde_yaml::from_str(
        "metadata: {name: lan}\nspec: {blocks: [{cidr: 192.0.2.0/28}, {start: 192.0.2.20, stop: 192.0.2.29}], serviceSelector: {matchExpressions: [{key: a, operator: Exists}]}, disabled: false}",
    )
    .unwrap();
    svc_agent::lbipam::object::to_pool(&pool).expect("a schema-shaped pool converts");
}

fn daemonset_is_host_network_and_unprivileged_with_the_listed_capabilities(docs: &[Document]) {
    let (source, ds) = daemonset(docs);
    let spec = &ds.spec;
    let pod = pod_spec(ds);

    // The selector selects the template (the API server refuses the DaemonSet otherwise).
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref());
    for (k, v) in spec.selector.match_labels.iter().flatten() {
        assert_eq!(
            labels.and_then(|l| l.get(k)),
            Some(v),
            "{source}: selector {k}={v} does not match the pod template's labels"
        );
    }

    assert_eq!(pod.host_network, Some(true), "{source}: hostNetwork");
    assert_eq!(
        pod.dns_policy.as_deref(),
        Some("ClusterFirstWithHostNet"),
        "{source}: dnsPolicy"
    );
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical"),
        "{source}: priorityClassName"
    );
    assert!(
        pod.tolerations
            .iter()
            .flatten()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.key.is_none()
                && t.effect.is_none()),
        "{source}: no toleration of every taint (operator: Exists, no key, no effect)"
    );
    assert!(
        pod.host_pid.is_none_or(|p| !p) && pod.host_ipc.is_none_or(|p| !p),
        "{source}: hostPID / hostIPC"
    );
    let strategy = spec.update_strategy.as_ref().expect("updateStrategy");
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    assert_eq!(
        strategy
            .rolling_update
            .as_ref()
            .and_then(|r| r.max_unavailable.as_ref()),
        Some(&IntOrString::Int(1)),
        "{source}: maxUnavailable"
    );

    let c = agent_container(ds);
    let node_name = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "NODE_NAME")
        .unwrap_or_else(|| panic!("{source}: no NODE_NAME env"));
    assert_eq!(
        node_name
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str()),
        Some("spec.nodeName"),
        "{source}: NODE_NAME must come from the downward API's spec.nodeName"
    );
    assert!(
        node_name.value.is_none(),
        "{source}: NODE_NAME has a fixed value too"
    );

    let sc = c
        .security_context
        .as_ref()
        .unwrap_or_else(|| panic!("{source}: no container securityContext"));
    assert_eq!(
        sc.privileged,
        Some(false),
        "{source}: privileged must be false"
    );
    assert_eq!(
        sc.allow_privilege_escalation,
        Some(false),
        "{source}: allowPrivilegeEscalation"
    );
    assert_eq!(
        sc.read_only_root_filesystem,
        Some(true),
        "{source}: readOnlyRootFilesystem"
    );
    let caps = sc
        .capabilities
        .as_ref()
        .unwrap_or_else(|| panic!("{source}: no capabilities"));
    assert_eq!(
        caps.drop.as_deref(),
        Some(&["ALL".to_string()][..]),
        "{source}: capabilities.drop must be exactly [ALL]"
    );
    let added: BTreeSet<&str> = caps.add.iter().flatten().map(String::as_str).collect();
    let want: BTreeSet<&str> = CAPABILITIES.iter().copied().collect();
    assert_eq!(
        added, want,
        "{source}: capabilities.add (change CAPABILITIES in this test, and the README, on purpose)"
    );
    assert_eq!(
        caps.add.as_ref().map(Vec::len),
        Some(want.len()),
        "{source}: a capability is added twice"
    );
    for profile in [
        sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        sc.app_armor_profile.as_ref().map(|p| p.type_.as_str()),
    ]
    .into_iter()
    .flatten()
    {
        assert!(
            ["RuntimeDefault", "Unconfined", "Localhost"].contains(&profile),
            "{source}: unknown profile type {profile:?}"
        );
    }

    // Values Kubernetes would reject or misread, which the round trip cannot see (they are
    // plain strings to k8s-openapi).
    let volumes: BTreeMap<&str, _> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| (v.name.as_str(), v))
        .collect();
    for v in volumes.values() {
        if let Some(t) = v.host_path.as_ref().and_then(|h| h.type_.as_deref()) {
            assert!(
                [
                    "",
                    "DirectoryOrCreate",
                    "Directory",
                    "FileOrCreate",
                    "File",
                    "Socket",
                    "CharDevice",
                    "BlockDevice"
                ]
                .contains(&t),
                "{source}: volume {}: unknown hostPath type {t:?}",
                v.name
            );
        }
    }
    for m in c.volume_mounts.iter().flatten() {
        assert!(
            volumes.contains_key(m.name.as_str()),
            "{source}: volumeMount {} names no volume",
            m.name
        );
        if let Some(p) = m.mount_propagation.as_deref() {
            assert!(
                ["None", "HostToContainer", "Bidirectional"].contains(&p),
                "{source}: volumeMount {}: unknown mountPropagation {p:?}",
                m.name
            );
        }
    }
}

fn probes_ports_and_paths_follow_the_agents_arguments(docs: &[Document]) {
    let (source, ds) = daemonset(docs);
    let c = agent_container(ds);
    let flags = parse_args(c);

    let (healthz_addr, metrics_addr) = status_addresses(docs);
    let healthz = i32::from(healthz_addr.port());
    let metrics = i32::from(metrics_addr.port());
    for (what, probe, path) in [
        ("readinessProbe", c.readiness_probe.as_ref(), "/healthz"),
        ("livenessProbe", c.liveness_probe.as_ref(), "/livez"),
    ] {
        let get = probe
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("{source}: no {what}.httpGet"));
        assert_eq!(get.path.as_deref(), Some(path), "{source}: {what} path");
        assert_eq!(
            get.port,
            IntOrString::Int(healthz),
            "{source}: {what} port must be --healthz-bind-address's"
        );
    }

    let ports: BTreeMap<&str, i32> = c
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.as_deref().unwrap_or_default(), p.container_port))
        .collect();
    assert_eq!(
        ports.get("healthz"),
        Some(&healthz),
        "{source}: port healthz"
    );
    assert_eq!(
        ports.get("metrics"),
        Some(&metrics),
        "{source}: port metrics"
    );

    let annotations = ds
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default();
    if metrics_addr.ip().is_loopback() {
        // A scraper reaches the pod's address, never its loopback.
        assert_eq!(
            annotations.get("prometheus.io/scrape").map(String::as_str),
            None,
            "{source}: prometheus.io/scrape, with the metrics on {metrics_addr}"
        );
    } else {
        assert_eq!(
            annotations.get("prometheus.io/scrape").map(String::as_str),
            Some("true"),
            "{source}: prometheus.io/scrape"
        );
        assert_eq!(
            annotations.get("prometheus.io/port"),
            Some(&metrics.to_string()),
            "{source}: prometheus.io/port must be the metrics port"
        );
    }

    // Every path the agent is pointed at lies on one of the container's volume mounts.
    let mounts: Vec<&str> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    for flag in PATH_FLAGS {
        let path = Path::new(arg(&flags, flag));
        assert!(
            mounts.iter().any(|m| path.starts_with(m)),
            "{source}: {flag}={} is on none of the volume mounts {mounts:?}",
            path.display()
        );
    }
}

fn every_flag_in_the_args_is_one_svc_agent_knows(docs: &[Document]) {
    let (source, ds) = daemonset(docs);
    let flags = parse_args(agent_container(ds));
    assert!(
        !flags.is_empty(),
        "{source}: no --flags in the container's args"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_svc-agent"))
        .arg("--help")
        .output()
        .expect("running svc-agent --help");
    assert!(
        out.status.success(),
        "svc-agent --help failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let help = String::from_utf8_lossy(&out.stdout);
    // `--flag` words of the help text (clap lists each as `--flag <VALUE>` or `--flag`).
    let known: BTreeSet<String> = help
        .split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(str::to_string)
        .collect();
    let unknown: Vec<&String> = flags.keys().filter(|f| !known.contains(*f)).collect();
    assert!(
        unknown.is_empty(),
        "{source}: flags svc-agent --help does not list: {unknown:?}\n(it lists {known:?})"
    );
}

/// Every check, as a test on the files of deploy/base (`files::`) and as a test on what
/// `kubectl kustomize` renders from deploy/base and from each overlay (`kustomize::`): an
/// overlay's patches must leave the manifests as right as the base is.
macro_rules! checks {
    ($($name:ident),* $(,)?) => {
        mod files {
            $(
                #[test]
                fn $name() {
                    super::$name(&super::load());
                }
            )*
        }
        mod kustomize {
            $(
                #[test]
                fn $name() {
                    for (_, docs) in super::rendered() {
                        super::$name(docs);
                    }
                }
            )*
        }
    };
}

checks!(
    every_document_round_trips_through_k8s_openapi,
    the_config_map_is_a_kube_proxy_configuration_the_agent_reads_whole,
    cluster_role_reads_what_the_agent_watches_and_writes_only_service_status,
    the_lease_role_grants_leases_in_the_agents_namespace_only,
    the_pool_crd_is_the_kind_the_agent_watches,
    daemonset_is_host_network_and_unprivileged_with_the_listed_capabilities,
    probes_ports_and_paths_follow_the_agents_arguments,
    every_flag_in_the_args_is_one_svc_agent_knows,
);
