//! Kubernetes mode on the lab: the agents watch a [`FakeApiServer`] instead of a manifest
//! directory. Helpers shared by the e2e tests and `cargo xtask run`: the server on the
//! outside host, a kubeconfig for it, Node objects, manifests loaded into it, and what the
//! agents write back (a LoadBalancer Service's status, Lease holders).
use std::{
    fmt,
    net::{Ipv4Addr, TcpListener},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde::Deserialize as _;
use serde_json::{Value, json};

use crate::{EXT_IP, Lab, fake_apiserver::FakeApiServer, netns::try_in_netns};

/// The agents' default `--lease-namespace`: where the IPAM Lease and the L2 announcement
/// Leases live.
pub const LEASE_NAMESPACE: &str = "kube-system";
/// The Lease electing the one agent that writes LoadBalancer statuses.
pub const IPAM_LEASE: &str = "svc-agent-lbipam";

/// Starts a fake API server in the outside host's namespace, on ext's LAN address
/// (192.0.2.100, a free port), as a control plane off the nodes: every node reaches it
/// over the LAN.
pub fn apiserver_on_ext(lab: &Lab) -> anyhow::Result<FakeApiServer> {
    try_in_netns(lab.ext_ns(), || {
        FakeApiServer::start(TcpListener::bind((EXT_IP, 0))?)
    })?
    .context("fake API server on ext")
}

/// Writes `dir/kubeconfig`, pointing at `url` (plain HTTP, no credentials).
pub fn kubeconfig(dir: &Path, url: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters: [{{name: fake, cluster: {{server: \"{url}\"}}}}]\n\
             users: [{{name: fake, user: {{}}}}]\n\
             contexts: [{{name: fake, context: {{cluster: fake, user: fake}}}}]\n\
             current-context: fake\n"
        ),
    )
    .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// A Node object as the kubelet registers it: its hostname label and InternalIP (an
/// agent started without `--node-ip` learns its addresses from it).
pub fn node_object(name: &str, ip: Ipv4Addr) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"addresses": [{"type": "InternalIP", "address": ip.to_string()}]},
    })
}

/// Registers every node of the lab (node1, node2, ...) with its eth0 address.
pub fn apply_nodes(server: &FakeApiServer, lab: &Lab) {
    for n in 1..=lab.nodes().len() {
        server.apply(node_object(&format!("node{n}"), lab.node_ip(n)));
    }
}

/// What [`load_manifest`] did with a file's objects, each as `Kind namespace/name`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// Stored in the server.
    pub applied: Vec<String>,
    /// Of a kind the fake does not serve (Deployments and the like).
    pub skipped: Vec<String>,
}

impl Loaded {
    /// Appends what `other` applied and skipped.
    pub fn merge(&mut self, other: Loaded) {
        self.applied.extend(other.applied);
        self.skipped.extend(other.skipped);
    }
}

impl fmt::Display for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.applied.join(", "))?;
        if !self.skipped.is_empty() {
            write!(f, " (skipped: {})", self.skipped.join(", "))?;
        }
        Ok(())
    }
}

/// `Kind namespace/name`, or `Kind name` for a cluster-scoped object.
fn describe(object: &Value) -> String {
    let kind = object["kind"].as_str().unwrap_or("?");
    let name = object["metadata"]["name"].as_str().unwrap_or("?");
    match object["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// Applies every object of a multi-document YAML file the server serves (Services,
/// EndpointSlices, Nodes, LoadBalancerIPPools, ...: see [`FakeApiServer::serves`]), as
/// `kubectl apply -f` would (an object written without a status keeps the stored one),
/// and skips the others.
pub fn load_manifest(server: &FakeApiServer, path: &Path) -> anyhow::Result<Loaded> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut loaded = Loaded::default();
    for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let mut object = Value::deserialize(doc)
            .with_context(|| format!("{}: document {}", path.display(), i + 1))?;
        if object.is_null() {
            continue; // an empty document (comments only)
        }
        let what = describe(&object);
        if FakeApiServer::serves(&object) {
            keep_status(server, &mut object);
            server.apply(object);
            loaded.applied.push(what);
        } else {
            loaded.skipped.push(what);
        }
    }
    Ok(loaded)
}

/// An object written without a status keeps the one stored (as a spec write to a real
/// API server does: the status is its controller's, e.g. an agent's LoadBalancer address).
fn keep_status(server: &FakeApiServer, object: &mut Value) {
    if object.get("status").is_some() {
        return;
    }
    let (Some(kind), Some(name)) = (object["kind"].as_str(), object["metadata"]["name"].as_str())
    else {
        return;
    };
    let namespace = object["metadata"]["namespace"].as_str();
    if let Some(status) = server
        .get(kind, namespace, name)
        .and_then(|stored| stored.get("status").cloned())
    {
        object["status"] = status;
    }
}

/// [`load_manifest`] for each `*.yaml` directly in `dir`, in name order.
pub fn load_manifests(server: &FakeApiServer, dir: &Path) -> anyhow::Result<Loaded> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    anyhow::ensure!(
        !files.is_empty(),
        "no *.yaml manifests in {}",
        dir.display()
    );
    let mut loaded = Loaded::default();
    for f in files {
        loaded.merge(load_manifest(server, &f)?);
    }
    Ok(loaded)
}

/// The IPv4 and IPv6 addresses in a Service's `status.loadBalancer.ingress` (none when
/// the Service or its status is missing).
pub fn status_ips(server: &FakeApiServer, namespace: &str, name: &str) -> Vec<String> {
    server
        .get("Service", Some(namespace), name)
        .and_then(|s| {
            s["status"]["loadBalancer"]["ingress"].as_array().map(|a| {
                a.iter()
                    .filter_map(|i| i["ip"].as_str().map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// The holder of Lease `name` in [`LEASE_NAMESPACE`] (`spec.holderIdentity`: a node name).
pub fn lease_holder(server: &FakeApiServer, name: &str) -> Option<String> {
    let lease = server.get("Lease", Some(LEASE_NAMESPACE), name)?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_string)
}

/// The node announcing Service `namespace/name` on the LAN: the holder of its L2 Lease
/// `svc-l2.<namespace>.<name>`.
pub fn announcer(server: &FakeApiServer, namespace: &str, name: &str) -> Option<String> {
    lease_holder(server, &format!("svc-l2.{namespace}.{name}"))
}

/// The lab node number of a node name: "node2" -> 2.
pub fn node_number(name: &str) -> Option<usize> {
    name.strip_prefix("node")?.parse().ok()
}
