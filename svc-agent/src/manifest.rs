//! Manifest mode: the cluster model read from a directory of Kubernetes manifests, as
//! `kubectl apply -f DIR` would take them.
//!
//! - Every `*.yaml`, `*.yml` and `*.json` file directly in the directory (not recursive),
//!   in file-name order. YAML files may hold several documents separated by `---` lines;
//!   JSON files may hold several concatenated objects. `kind: List` (and typed lists such as
//!   `ServiceList`) are flattened through their `items`.
//! - Services (`v1`), EndpointSlices (`discovery.k8s.io/v1`), legacy Endpoints (`v1`) and
//!   ServiceCIDRs (`networking.k8s.io/v1`, cluster-scoped: the service CIDRs, see
//!   [`crate::desired`]) are used; every other kind (Deployment, ConfigMap, Namespace...)
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
//! - An object is one Service, EndpointSlice, Endpoints or ServiceCIDR: kind and namespace/name
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
}

impl K8sObject {
    pub fn kind(&self) -> &'static str {
        match self {
            K8sObject::Service(_) => "Service",
            K8sObject::EndpointSlice(_) => "EndpointSlice",
            K8sObject::Endpoints(_) => "Endpoints",
            K8sObject::ServiceCidr(_) => SERVICE_CIDR_KIND,
        }
    }

    fn metadata(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            K8sObject::Service(s) => &s.metadata,
            K8sObject::EndpointSlice(s) => &s.metadata,
            K8sObject::Endpoints(e) => &e.metadata,
            K8sObject::ServiceCidr(c) => &c.metadata,
        }
    }

    /// The object's namespace/name; a ServiceCIDR is cluster-scoped (no namespace).
    fn object_ref(&self) -> Result<ObjectRef, model::InvalidObject> {
        let id = ObjectRef::from_meta(self.metadata())?;
        Ok(match self {
            K8sObject::ServiceCidr(_) => ObjectRef::new("", id.name),
            _ => id,
        })
    }
}

/// The kind of the cluster-scoped ServiceCIDR objects.
const SERVICE_CIDR_KIND: &str = "ServiceCIDR";

/// The kinds the dataplane uses, as `&'static str` (the kind of an [`ObjectKey`]).
fn used_kind(kind: &str) -> Option<&'static str> {
    match kind {
        "Service" => Some("Service"),
        "EndpointSlice" => Some("EndpointSlice"),
        "Endpoints" => Some("Endpoints"),
        SERVICE_CIDR_KIND => Some(SERVICE_CIDR_KIND),
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
    Service(model::Service),
    Slice(ObjectRef, Option<model::EndpointGroup>),
    Legacy(ObjectRef, Vec<model::EndpointGroup>),
    ServiceCidr(Vec<model::Ipv4Cidr>),
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
        K8sObject::Service(s) => {
            model::Service::from_k8s(s).map(|(svc, w)| (svc.id.clone(), Converted::Service(svc), w))
        }
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
        if kind == SERVICE_CIDR_KIND {
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
        (_, "Service" | "EndpointSlice" | "Endpoints" | SERVICE_CIDR_KIND) => {
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
                            Converted::Service(svc) => services.push(svc.clone()),
                            Converted::Slice(svc, group) => {
                                slices.insert(o.key.id.clone(), (svc.clone(), group.clone()));
                            }
                            Converted::Legacy(svc, groups) => {
                                legacy.push((svc.clone(), groups.clone()))
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
        ManifestSet {
            cluster,
            problems,
            withheld,
        }
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
                "cidrs.yaml#1 ServiceCIDR kubernetes: spec.cidrs[1] \"fd00::/108\" skipped: IPv6 is not supported by datapath v1",
                "cidrs.yaml#3 ServiceCIDR old: unsupported apiVersion \"networking.k8s.io/v1alpha1\" for ServiceCIDR",
                "cidrs.yaml#4 ServiceCIDR bad: spec.cidrs[0] \"10.1.0.0\" is not a CIDR",
            ]
        );
        let cidr = |s: &str| s.parse::<model::Ipv4Cidr>().unwrap();
        assert_eq!(
            set.cluster.service_cidrs,
            BTreeMap::from([
                (ObjectRef::new("", "extra"), vec![cidr("172.30.0.0/16")]),
                (ObjectRef::new("", "kubernetes"), vec![cidr("10.96.0.0/12")]),
            ])
        );
        let (state, _) = desired::compute(&set.cluster, &desired::NodeContext::default());
        assert_eq!(
            state.service_cidrs.to_string(),
            "10.96.0.0/12,172.30.0.0/16 (ServiceCIDR extra, kubernetes)"
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
            .map(|s| s.cluster_ips[0])
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
            reasons(&set)[0]
                .starts_with("a.yaml#2: still serving the last good version of this file")
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
            [
                "00-copy.yaml#1 Service default/web: duplicate of the one defined at web.yaml#1; ignored"
            ]
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
            [
                "web.yaml#1 Service default/web: duplicate of the one defined at 00-copy.yaml#1; ignored"
            ]
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
            [
                "web.yaml#1 Service default/web: duplicate of the one defined at 00-copy.yaml#1; ignored"
            ]
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
}
