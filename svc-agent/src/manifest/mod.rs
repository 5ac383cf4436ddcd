//! Manifest mode: the cluster model read from a directory of Kubernetes manifests, as
//! `kubectl apply -f DIR` would take them.
//!
//! - Every `*.yaml`, `*.yml` and `*.json` file directly in the directory (not recursive),
//!   in file-name order. YAML files may hold several documents separated by `---` lines;
//!   JSON files may hold several concatenated objects. `kind: List` (and typed lists such as
//!   `ServiceList`) are flattened through their `items`.
//! - Services (`v1`), EndpointSlices (`discovery.k8s.io/v1`), legacy Endpoints (`v1`) and
//!   ServiceCIDRs (`networking.k8s.io/v1`, cluster-scoped: the service CIDRs, see
//!   [`crate::desired`]) and LoadBalancerIPPools (`svc-ebpf.dev/v1alpha1`, cluster-scoped:
//!   the LoadBalancer address pools, see [`crate::lbipam`]) are used; every other kind (Deployment, ConfigMap, Namespace...)
//!   is ignored silently.
//! - A malformed document or an invalid object becomes a [`Problem`] and is skipped;
//!   everything else still loads. Only an unreadable directory is an error (the agent then
//!   keeps serving what it served).
//! - Endpoints: a Service that has EndpointSlices takes its endpoints from them only and its
//!   legacy Endpoints are ignored (kube-proxy uses slices only); a Service without slices
//!   uses its legacy Endpoints, so hand-written Endpoints work (see [`Cluster::assemble`]).
//! - The namespace defaults to `default` when absent.
//!
//! # Last known good
//!
//! A file that goes bad never takes a live Service down. The agent reads the directory again
//! on every change and keeps, between reads, a [`LastGood`]: per file, the objects of its
//! last reads that were usable. The whole rule lives in [`LastGood::update`]:
//!
//! - An object is one Service, EndpointSlice, Endpoints, ServiceCIDR or LoadBalancerIPPool:
//!   kind and namespace/name
//!   ([`ObjectKey`]).
//! - **A file that does not parse completely** (a YAML or JSON syntax error in any of its
//!   documents, a document without `kind` or name, an unreadable or non-UTF-8 file) keeps
//!   serving, for every object of its last good read that the parts that do parse no longer
//!   show, that last good version. The syntax error's [`Problem`] names the file and
//!   document, the error, and says "still serving the last good version of this file (read
//!   at T)"; each object kept that way has its own Problem too. The parts that do parse are
//!   taken as they are now (an update in another document of the file is applied).
//! - **An object that was served and is now invalid** (a typo in its clusterIP, a port out
//!   of range, a field of the wrong type) keeps its last good version, with a Problem
//!   giving the reason and "still serving the last good version (read at T)".
//! - **An object removed from a file that parses completely is removed**; a deleted file
//!   removes all of its objects; a file (or object) that was never good serves nothing.
//! - **Duplicates** (same kind and namespace/name in two places): the incumbent, the
//!   object served after the previous read, stays wherever it comes from, and the newcomer
//!   is ignored with a Problem that names the newcomer's document. Without an incumbent
//!   (the agent's first read, or the incumbent's file lost the object) the first in file
//!   order wins and the later ones are named. Within one file the first document wins.
//!
//! What is kept lives in the agent's memory only: a restarted agent starts from its first
//! read, in which a file that is broken, or an object that is invalid, serves nothing and
//! duplicates are decided by file order. So that a restart never takes down what an
//! earlier agent served from such a file, a read with something unusable and no last good
//! version for it is [`ManifestSet::withheld`], and the agent removes nothing from the
//! maps until it has had a read that is not (the pinned state keeps serving meanwhile).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::discovery::v1 as discoveryv1;
use k8s_openapi::api::networking::v1 as networkingv1;
use serde_json::Value;

use crate::lbipam::{self, Pool, object::LoadBalancerIPPool};
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
    ServiceCidr(Box<networkingv1::ServiceCIDR>),
    LbPool(Box<LoadBalancerIPPool>),
}

impl K8sObject {
    pub fn kind(&self) -> &'static str {
        match self {
            K8sObject::Service(_) => "Service",
            K8sObject::EndpointSlice(_) => "EndpointSlice",
            K8sObject::Endpoints(_) => "Endpoints",
            K8sObject::ServiceCidr(_) => SERVICE_CIDR_KIND,
            K8sObject::LbPool(_) => POOL_KIND,
        }
    }

    fn metadata(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            K8sObject::Service(s) => &s.metadata,
            K8sObject::EndpointSlice(s) => &s.metadata,
            K8sObject::Endpoints(e) => &e.metadata,
            K8sObject::ServiceCidr(c) => &c.metadata,
            K8sObject::LbPool(p) => &p.metadata,
        }
    }

    /// The object's namespace/name; a ServiceCIDR is cluster-scoped (no namespace).
    fn object_ref(&self) -> Result<ObjectRef, model::InvalidObject> {
        let id = ObjectRef::from_meta(self.metadata())?;
        Ok(match self {
            K8sObject::ServiceCidr(_) | K8sObject::LbPool(_) => ObjectRef::new("", id.name),
            _ => id,
        })
    }
}

/// The kind of the cluster-scoped ServiceCIDR objects.
const SERVICE_CIDR_KIND: &str = "ServiceCIDR";
/// The kind of the cluster-scoped LoadBalancer address pools.
const POOL_KIND: &str = lbipam::object::KIND;

/// The kinds the dataplane uses, as `&'static str` (the kind of an [`ObjectKey`]).
fn used_kind(kind: &str) -> Option<&'static str> {
    match kind {
        "Service" => Some("Service"),
        "EndpointSlice" => Some("EndpointSlice"),
        "Endpoints" => Some("Endpoints"),
        SERVICE_CIDR_KIND => Some(SERVICE_CIDR_KIND),
        POOL_KIND => Some(POOL_KIND),
        _ => None,
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
    /// Some object of this read could not be used and has no last good version in memory
    /// (a part of a file that never parsed for this agent, an object never valid for it):
    /// an earlier agent may have served it, so the agent must not remove from the maps
    /// what this read lacks until a read has none of these (see the agent).
    pub withheld: bool,
}

/// What makes two manifests the same object: kind and namespace/name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub kind: &'static str,
    pub id: ObjectRef,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.id)
    }
}

/// What one part of a file turned out to be, before conversion.
enum Item {
    /// An object of a kind the dataplane uses, deserialized.
    Object(ParsedObject),
    /// An object of such a kind, with a name, that cannot be used.
    Invalid(ObjectKey, Problem),
    /// A part that could have held any object: a syntax error, a document without kind or
    /// name, an unreadable file. The read of the file is incomplete.
    Unreadable(Problem),
    /// A problem that loses no object the dataplane uses (e.g. a Deployment without
    /// apiVersion).
    Other(Problem),
}

type Items = Vec<Item>;

/// One file of the directory as read now, converted object by object: what
/// [`LastGood::update`] takes.
#[derive(Clone, Debug)]
pub struct FileRead {
    /// The file, as problems name it (its path).
    pub source: String,
    parts: Vec<Part>,
}

/// A part of a file after conversion into the model.
#[derive(Clone, Debug)]
enum Part {
    Good(Box<GoodObject>),
    Invalid(ObjectKey, Problem),
    Unreadable(Problem),
    Other(Problem),
}

/// A converted object, before the duplicate check.
#[derive(Clone, Debug, PartialEq)]
enum Converted {
    Service(Box<model::Service>),
    Slice(ObjectRef, Option<model::EndpointGroup>),
    Legacy(ObjectRef, Vec<model::EndpointGroup>),
    ServiceCidr(Vec<model::IpCidr>),
    LbPool(Pool),
}

/// A usable object of one read of a file.
#[derive(Clone, Debug, PartialEq)]
struct GoodObject {
    key: ObjectKey,
    /// The document it was read from (`dir/file.yaml#2`).
    source: String,
    value: Converted,
    warnings: Vec<String>,
    /// When the read it comes from took place (set by [`LastGood::update`]).
    read_at: SystemTime,
}

impl FileRead {
    /// A YAML file's text (several `---`-separated documents; JSON is valid YAML too).
    pub fn yaml(source: &str, text: &str) -> FileRead {
        let mut items = Vec::new();
        parse_yaml_items(text, source, &mut items);
        FileRead::convert(source, items)
    }

    /// A JSON file's text (one or more concatenated objects).
    pub fn json(source: &str, text: &str) -> FileRead {
        let mut items = Vec::new();
        parse_json_items(text, source, &mut items);
        FileRead::convert(source, items)
    }

    /// A file whose content cannot be had (`reason`): nothing of it is known.
    pub fn unreadable(source: &str, reason: String) -> FileRead {
        FileRead::convert(
            source,
            vec![Item::Unreadable(Problem {
                source: source.to_string(),
                object: None,
                reason,
            })],
        )
    }

    fn convert(source: &str, items: Items) -> FileRead {
        let parts = items
            .into_iter()
            .map(|item| match item {
                Item::Object(o) => convert_object(o),
                Item::Invalid(k, p) => Part::Invalid(k, p),
                Item::Unreadable(p) => Part::Unreadable(p),
                Item::Other(p) => Part::Other(p),
            })
            .collect();
        FileRead {
            source: source.to_string(),
            parts,
        }
    }
}

/// Converts one parsed object into the model, or says why it cannot be used.
fn convert_object(ParsedObject { source, object }: ParsedObject) -> Part {
    let kind = object.kind();
    let converted = match &object {
        K8sObject::Service(s) => model::Service::from_k8s(s)
            .map(|(svc, w)| (svc.id.clone(), Converted::Service(Box::new(svc)), w)),
        K8sObject::EndpointSlice(s) => {
            model::endpoint_group_from_slice(s).and_then(|(svc, group, w)| {
                Ok((
                    ObjectRef::from_meta(&s.metadata)?,
                    Converted::Slice(svc, group),
                    w,
                ))
            })
        }
        K8sObject::Endpoints(e) => model::endpoint_groups_from_endpoints(e)
            .map(|(svc, groups, w)| (svc.clone(), Converted::Legacy(svc, groups), w)),
        K8sObject::ServiceCidr(c) => model::service_cidr_from_k8s(c)
            .map(|(id, cidrs, w)| (id, Converted::ServiceCidr(cidrs), w)),
        K8sObject::LbPool(p) => lbipam::object::to_pool(p)
            .map(|(pool, w)| (ObjectRef::new("", &pool.name), Converted::LbPool(pool), w)),
    };
    match converted {
        Ok((id, value, warnings)) => Part::Good(Box::new(GoodObject {
            key: ObjectKey { kind, id },
            source,
            value,
            warnings,
            read_at: SystemTime::UNIX_EPOCH,
        })),
        Err(e) => match object.object_ref() {
            Ok(id) => {
                let key = ObjectKey { kind, id };
                let problem = Problem {
                    source,
                    object: Some(key.to_string()),
                    reason: e.to_string(),
                };
                Part::Invalid(key, problem)
            }
            // Without a name it could be any object of the file.
            Err(_) => Part::Unreadable(Problem {
                source,
                object: Some(kind.to_string()),
                reason: e.to_string(),
            }),
        },
    }
}

/// Reads every manifest file of `dir` (see the module documentation), in file-name order.
/// Only an unreadable directory is an error; a file that cannot be read is a
/// [`FileRead::unreadable`].
pub fn read_dir(dir: &Path) -> Result<Vec<FileRead>, ManifestError> {
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

    let mut reads = Vec::new();
    for (name, is_json) in files {
        let path = dir.join(&name);
        let source = path.display().to_string();
        let read = match std::fs::read(&path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) if is_json => FileRead::json(&source, &text),
                Ok(text) => FileRead::yaml(&source, &text),
                Err(_) => FileRead::unreadable(&source, "file is not UTF-8 text".into()),
            },
            Err(e) => FileRead::unreadable(&source, format!("cannot read file: {e}")),
        };
        reads.push(read);
    }
    Ok(reads)
}

/// Loads every manifest file of `dir` once, with nothing remembered (a first read; the
/// agent keeps a [`LastGood`] between reads instead).
pub fn load_dir(dir: &Path) -> Result<ManifestSet, ManifestError> {
    Ok(LastGood::default().update(read_dir(dir)?, SystemTime::now()))
}

/// Parses and assembles one YAML text (tests, or a single file).
pub fn load_str(text: &str, source: &str) -> ManifestSet {
    LastGood::default().update(vec![FileRead::yaml(source, text)], SystemTime::now())
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

fn partition(items: Items) -> (Vec<ParsedObject>, Vec<Problem>) {
    let mut objects = Vec::new();
    let mut problems = Vec::new();
    for item in items {
        match item {
            Item::Object(o) => objects.push(o),
            Item::Invalid(_, p) | Item::Unreadable(p) | Item::Other(p) => problems.push(p),
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
            Err(reason) => items.push(Item::Unreadable(Problem {
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
                items.push(Item::Unreadable(Problem {
                    source: doc_source,
                    object: None,
                    reason: format!("invalid JSON: {e}"),
                }));
                break;
            }
        }
    }
}

/// The object's namespace/name, read from the raw value so it is available even when the
/// object does not deserialize; None without a usable name.
fn raw_ref(value: &Value) -> Option<ObjectRef> {
    let meta = value.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())?;
    let ns = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or("default");
    Some(ObjectRef::new(ns, name))
}

fn collect(value: Value, source: &str, items: &mut Items) {
    let problem = |object: Option<String>, reason: String| Problem {
        source: source.to_string(),
        object,
        reason,
    };
    let Value::Object(map) = &value else {
        if !value.is_null() {
            items.push(Item::Unreadable(problem(
                None,
                "not a Kubernetes object (expected a mapping)".into(),
            )));
        }
        return;
    };
    let Some(kind) = map
        .get("kind")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
    else {
        items.push(Item::Unreadable(problem(None, "missing kind".into())));
        return;
    };
    let kind = kind.to_string();
    // A ServiceCIDR is cluster-scoped: known by its name alone.
    let raw = raw_ref(&value).map(|id| {
        if kind == SERVICE_CIDR_KIND || kind == POOL_KIND {
            ObjectRef::new("", id.name)
        } else {
            id
        }
    });
    let label = match &raw {
        Some(id) => format!("{kind} {id}"),
        None => kind.clone(),
    };
    // A problem with an object of a used kind: invalid if it has a name (it is known
    // which object it is), else unreadable (it could be any).
    let bad = |reason: String| {
        let p = problem(Some(label.clone()), reason);
        match (used_kind(&kind), &raw) {
            (Some(kind), Some(id)) => Item::Invalid(
                ObjectKey {
                    kind,
                    id: id.clone(),
                },
                p,
            ),
            (Some(_), None) => Item::Unreadable(p),
            (None, _) if kind.ends_with("List") => Item::Unreadable(p),
            (None, _) => Item::Other(p),
        }
    };
    let Some(api_version) = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
    else {
        items.push(bad("missing apiVersion".into()));
        return;
    };
    let api_version = api_version.to_string();

    if let Some(list) = map.get("items").filter(|_| kind.ends_with("List")) {
        let Value::Array(list) = list else {
            items.push(Item::Unreadable(problem(
                Some(kind.clone()),
                "items is not a list".into(),
            )));
            return;
        };
        for (i, item) in list.iter().enumerate() {
            collect(item.clone(), &format!("{source}.items[{i}]"), items);
        }
        return;
    }

    let parsed = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Service") => serde_json::from_value(value).map(|s| K8sObject::Service(Box::new(s))),
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            serde_json::from_value(value).map(|s| K8sObject::EndpointSlice(Box::new(s)))
        }
        ("v1", "Endpoints") => {
            serde_json::from_value(value).map(|e| K8sObject::Endpoints(Box::new(e)))
        }
        ("networking.k8s.io/v1", SERVICE_CIDR_KIND) => {
            serde_json::from_value(value).map(|c| K8sObject::ServiceCidr(Box::new(c)))
        }
        (lbipam::object::API_VERSION, POOL_KIND) => {
            serde_json::from_value(value).map(|p| K8sObject::LbPool(Box::new(p)))
        }
        (_, "Service" | "EndpointSlice" | "Endpoints" | SERVICE_CIDR_KIND | POOL_KIND) => {
            items.push(bad(format!(
                "unsupported apiVersion {api_version:?} for {kind}"
            )));
            return;
        }
        _ => {
            tracing::debug!(%source, %api_version, %kind, "ignoring object of an unused kind");
            return;
        }
    };
    match parsed {
        Ok(object) => items.push(Item::Object(ParsedObject {
            source: source.to_string(),
            object,
        })),
        Err(e) => items.push(bad(format!("invalid {kind}: {e}"))),
    }
}

/// Converts parsed objects into the model, in order (a duplicate of an earlier valid
/// object is a problem and ignored), and assembles the cluster, as a first read of one
/// file holding them would.
pub fn build(objects: impl IntoIterator<Item = ParsedObject>) -> ManifestSet {
    let read = FileRead {
        source: String::new(),
        parts: objects.into_iter().map(convert_object).collect(),
    };
    LastGood::default().update(vec![read], SystemTime::now())
}

/// "2026-12-02T21:05:04Z".
fn timestamp(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The manifest directory's memory between reads, behind "last known good" (see the
/// module documentation): per file, the usable objects of its last good reads, and which
/// file each served object came from.
#[derive(Debug, Default)]
pub struct LastGood {
    /// Per file (by [`FileRead::source`]), what it serves from: the objects of its last
    /// read and, where that read was bad, the last good versions kept.
    files: HashMap<String, Vec<GoodObject>>,
    /// The objects served after the last update (the incumbents), and their file.
    served: HashMap<ObjectKey, String>,
}

/// Why an object of a file serves its last good version instead of this read's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kept {
    /// It is this read's version.
    Fresh,
    /// This read's version is invalid.
    Invalid,
    /// This read did not show it, and part of the file did not parse.
    Unread,
}

/// A problem of one file whose text depends on what ends up served.
enum Pending {
    Plain(Problem),
    /// Object `index` of the file: its warnings, a duplicate problem, or why its last good
    /// version is kept (`problem`: the reason this read's version is not used).
    Object {
        index: usize,
        problem: Option<Problem>,
    },
    /// A part of the file that did not parse.
    Unreadable(Problem),
}

/// One file after [`file_step`].
struct FileStep {
    source: String,
    /// Something of the file could not be used and has no last good version.
    withheld: bool,
    /// What the file serves from, fresh and kept, with why; unique keys.
    objects: Vec<(GoodObject, Kept)>,
    problems: Vec<Pending>,
}

/// The per-file rule: this read's usable objects, plus the last good versions of what
/// this read could not use (an invalid object that was good last time; everything the
/// read did not show when part of the file did not parse).
fn file_step(read: FileRead, last: Vec<GoodObject>, now: SystemTime) -> FileStep {
    let incomplete = read.parts.iter().any(|p| matches!(p, Part::Unreadable(_)));
    let remembered = !last.is_empty();
    // The last good objects, in their document order, taken out as this read accounts for
    // them.
    let index: HashMap<ObjectKey, usize> = last
        .iter()
        .enumerate()
        .map(|(i, o)| (o.key.clone(), i))
        .collect();
    let mut last: Vec<Option<GoodObject>> = last.into_iter().map(Some).collect();
    let mut take_last = |key: &ObjectKey| index.get(key).and_then(|i| last[*i].take());
    // The first usable version of each object in the file wins over later ones and over
    // invalid ones (as before the last good rule: an invalid document is skipped).
    let mut first_good: HashMap<ObjectKey, String> = HashMap::new();
    for part in &read.parts {
        if let Part::Good(o) = part {
            first_good
                .entry(o.key.clone())
                .or_insert_with(|| o.source.clone());
        }
    }
    let mut seen: HashSet<ObjectKey> = HashSet::new();
    let mut step = FileStep {
        source: read.source,
        withheld: incomplete && !remembered,
        objects: Vec::new(),
        problems: Vec::new(),
    };
    for part in read.parts {
        match part {
            Part::Good(mut o) => {
                if seen.insert(o.key.clone()) {
                    o.read_at = now;
                    take_last(&o.key);
                    step.problems.push(Pending::Object {
                        index: step.objects.len(),
                        problem: None,
                    });
                    step.objects.push((*o, Kept::Fresh));
                } else {
                    step.problems.push(Pending::Plain(Problem {
                        object: Some(o.key.to_string()),
                        reason: format!(
                            "duplicate of the one defined at {}; ignored",
                            first_good[&o.key]
                        ),
                        source: o.source,
                    }));
                }
            }
            Part::Invalid(key, problem) => {
                let kept = (!first_good.contains_key(&key) && seen.insert(key.clone()))
                    .then(|| take_last(&key))
                    .flatten();
                match kept {
                    Some(o) => {
                        step.problems.push(Pending::Object {
                            index: step.objects.len(),
                            problem: Some(problem),
                        });
                        step.objects.push((o, Kept::Invalid));
                    }
                    None => {
                        step.withheld |= !first_good.contains_key(&key);
                        step.problems.push(Pending::Plain(problem))
                    }
                }
            }
            Part::Unreadable(p) => step.problems.push(Pending::Unreadable(p)),
            Part::Other(p) => step.problems.push(Pending::Plain(p)),
        }
    }
    if incomplete {
        // Whatever the last good read had and this one did not show may be in the part that
        // did not parse: keep it, in its old document order.
        for o in last.into_iter().flatten() {
            step.problems.push(Pending::Object {
                index: step.objects.len(),
                problem: None,
            });
            step.objects.push((o, Kept::Unread));
        }
    }
    step
}

impl LastGood {
    /// Takes a new read of the directory (every file it holds now, in file-name order;
    /// files not in `reads` are gone) and returns what to serve and its problems, in file
    /// and document order. `now` is the time of the read (shown in problems).
    pub fn update(&mut self, reads: Vec<FileRead>, now: SystemTime) -> ManifestSet {
        let mut last = std::mem::take(&mut self.files);
        let files: Vec<FileStep> = reads
            .into_iter()
            .map(|read| {
                let before = last.remove(&read.source).unwrap_or_default();
                file_step(read, before, now)
            })
            .collect();

        // Across files: the incumbent stays; else the first in file order.
        let mut winners: HashMap<&ObjectKey, (usize, usize)> = HashMap::new();
        for (f, file) in files.iter().enumerate() {
            for (i, (o, _)) in file.objects.iter().enumerate() {
                let incumbent = self.served.get(&o.key);
                winners
                    .entry(&o.key)
                    .and_modify(|w| {
                        let current = &files[w.0].source;
                        if incumbent != Some(current) && incumbent == Some(&file.source) {
                            *w = (f, i);
                        }
                    })
                    .or_insert((f, i));
            }
        }

        let mut problems = Vec::new();
        let mut served = HashMap::new();
        let mut services = Vec::new();
        let mut slices = BTreeMap::new();
        let mut legacy = Vec::new();
        let mut service_cidrs = BTreeMap::new();
        let mut lb_pools = BTreeMap::new();
        for (f, file) in files.iter().enumerate() {
            let wins = |i: usize| winners[&file.objects[i].0.key] == (f, i);
            // The oldest last good version this file serves for lack of a complete read.
            let unread_since = file
                .objects
                .iter()
                .enumerate()
                .filter(|(i, (_, kept))| *kept == Kept::Unread && wins(*i))
                .map(|(_, (o, _))| o.read_at)
                .min();
            for pending in &file.problems {
                match pending {
                    Pending::Plain(p) => problems.push(p.clone()),
                    Pending::Unreadable(p) => problems.push(match unread_since {
                        Some(t) => Problem {
                            reason: format!(
                                "still serving the last good version of this file (read at {}): {}",
                                timestamp(t),
                                p.reason
                            ),
                            ..p.clone()
                        },
                        None => p.clone(),
                    }),
                    Pending::Object { index, problem } => {
                        let (o, kept) = &file.objects[*index];
                        let label = Some(o.key.to_string());
                        if !wins(*index) {
                            match kept {
                                Kept::Fresh => {
                                    let (wf, wi) = winners[&o.key];
                                    problems.push(Problem {
                                        source: o.source.clone(),
                                        object: label,
                                        reason: format!(
                                            "duplicate of the one defined at {}; ignored",
                                            files[wf].objects[wi].0.source
                                        ),
                                    });
                                }
                                // Not served either way: only the reason this read's
                                // version is not used.
                                Kept::Invalid => problems.extend(problem.clone()),
                                Kept::Unread => {}
                            }
                            continue;
                        }
                        let held = |reason: &str| {
                            format!(
                                "still serving the last good version (read at {}): {reason}",
                                timestamp(o.read_at)
                            )
                        };
                        match kept {
                            Kept::Fresh => {}
                            Kept::Invalid => problems.extend(problem.as_ref().map(|p| Problem {
                                reason: held(&p.reason),
                                ..p.clone()
                            })),
                            Kept::Unread => problems.push(Problem {
                                source: file.source.clone(),
                                object: label.clone(),
                                reason: held("not found in what could be read of the file"),
                            }),
                        }
                        for reason in &o.warnings {
                            problems.push(Problem {
                                source: o.source.clone(),
                                object: label.clone(),
                                reason: reason.clone(),
                            });
                        }
                        served.insert(o.key.clone(), file.source.clone());
                        match &o.value {
                            Converted::Service(svc) => services.push(model::Service::clone(svc)),
                            Converted::Slice(svc, group) => {
                                slices.insert(o.key.id.clone(), (svc.clone(), group.clone()));
                            }
                            Converted::Legacy(svc, groups) => {
                                legacy.push((svc.clone(), groups.clone()))
                            }
                            Converted::LbPool(pool) => {
                                lb_pools.insert(o.key.id.clone(), pool.clone());
                            }
                            Converted::ServiceCidr(cidrs) => {
                                service_cidrs.insert(o.key.id.clone(), cidrs.clone());
                            }
                        }
                    }
                }
            }
        }
        self.served = served;
        let withheld = files.iter().any(|f| f.withheld);
        self.files = files
            .into_iter()
            .map(|f| (f.source, f.objects.into_iter().map(|(o, _)| o).collect()))
            .collect();
        // Slices in namespace/name order, as a watch cache would list them.
        let mut cluster = Cluster::assemble(services, slices.into_values(), legacy);
        cluster.service_cidrs = service_cidrs;
        cluster.lb_pools = lb_pools;
        ManifestSet {
            cluster,
            problems,
            withheld,
        }
    }
}

#[cfg(test)]
mod tests;
