//! deploy/grafana/svc-agent.json, the Grafana dashboard, asks only for metrics the agent
//! exports, with the labels they have: a renamed metric must fail here, not leave a panel
//! empty on someone's wall.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;
use svc_agent::metrics::Metrics;

fn dashboard() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/svc-agent.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

/// Every PromQL expression of the dashboard's panels (rows included), and the queries of
/// its variables (`label_values(metric{...}, label)`).
fn expressions(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(e)) = m.get("expr") {
                out.push(e.clone());
            }
            if let Some(Value::String(e)) = m.get("definition") {
                out.push(e.clone());
            }
            for x in m.values() {
                expressions(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| expressions(x, out)),
        _ => {}
    }
}

/// The metric families the agent exports and their label names: the agent's own (from an
/// exposition of a fresh registry) and the datapath's, read from the maps at scrape time
/// (their names and labels are in the metrics module's table).
fn exported() -> BTreeMap<String, BTreeSet<String>> {
    let m = Metrics::new(PathBuf::from("/nonexistent"));
    // A few samples so that the labelled families show their labels.
    m.record_health_answer(true, 200);
    m.record_health_answer(false, 200);
    let text = m.encode();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split_whitespace().next().unwrap();
            out.entry(name.to_string()).or_default();
        } else if !line.starts_with('#') {
            let series = line.split_whitespace().next().unwrap_or_default();
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            let family = out
                .keys()
                .filter(|f| name.starts_with(f.as_str()))
                .max_by_key(|f| f.len())
                .cloned();
            if let Some(f) = family {
                for l in labels
                    .trim_end_matches('}')
                    .split(',')
                    .filter(|l| !l.is_empty())
                {
                    let key = l.split('=').next().unwrap().to_string();
                    out.get_mut(&f).unwrap().insert(key);
                }
            }
        }
    }
    for (name, labels) in [
        ("svc_map_entries", &["map"][..]),
        ("svc_map_capacity", &["map"]),
        ("svc_datapath_packets", &["verdict"]),
        (
            "svc_service_packets",
            &["namespace", "name", "port", "kind"],
        ),
        ("svc_service_bytes", &["namespace", "name", "port", "kind"]),
        (
            "svc_service_new_flows",
            &["namespace", "name", "port", "kind"],
        ),
        (
            "svc_service_reply_packets",
            &["namespace", "name", "port", "kind"],
        ),
        (
            "svc_service_reply_bytes",
            &["namespace", "name", "port", "kind"],
        ),
        (
            "svc_service_drops",
            &["namespace", "name", "port", "kind", "reason"],
        ),
        // Families with no sample in a fresh registry: their labels from metrics.rs.
        ("svc_lb_pool_addresses", &["pool", "family"]),
        ("svc_lb_pool_used_addresses", &["pool"]),
        ("svc_agent_map_full_errors", &["map"]),
        ("svc_agent_map_write_errors", &["map"]),
        (
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
            &["traffic_policy"],
        ),
    ] {
        out.entry(name.to_string())
            .or_default()
            .extend(labels.iter().map(|l| l.to_string()));
    }
    out
}

/// `name` as exported: a family name, or one with a sample suffix.
fn family_of<'a>(name: &str, exported: &'a BTreeMap<String, BTreeSet<String>>) -> Option<&'a str> {
    if let Some((f, _)) = exported.get_key_value(name) {
        return Some(f);
    }
    ["_bucket", "_sum", "_count", "_total", "_created"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .and_then(|base| exported.get_key_value(base).map(|(f, _)| f.as_str()))
}

#[test]
fn the_dashboard_asks_only_for_exported_metrics_and_labels() {
    let exported = exported();
    let mut exprs = Vec::new();
    expressions(&dashboard(), &mut exprs);
    assert!(exprs.len() >= 15, "too few expressions: {exprs:?}");
    // Metric names are our prefixes; label names are what follows `{` or `,` up to `=`,
    // and the `by (...)` lists.
    let word = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let mut used_families = BTreeSet::new();
    for e in &exprs {
        let tokens: Vec<&str> = e
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|t| !t.is_empty())
            .collect();
        let mut families_here = Vec::new();
        for t in tokens
            .iter()
            .filter(|t| t.starts_with("svc_") || t.starts_with("kubeproxy_"))
        {
            let f = family_of(t, &exported)
                .unwrap_or_else(|| panic!("{t} in {e:?} is not a metric the agent exports"));
            families_here.push(f);
            used_families.insert(f);
        }
        // Labels in selectors and in `by (...)`.
        let mut labels = BTreeSet::new();
        for part in e.split(['{', ',']).skip(1) {
            if let Some((l, _)) = part.split_once("=~").or_else(|| part.split_once('=')) {
                let l = l.trim();
                if word(l) && !l.is_empty() {
                    labels.insert(l.to_string());
                }
            }
        }
        for part in e.split("by (").skip(1) {
            for l in part.split(')').next().unwrap().split(',') {
                labels.insert(l.trim().to_string());
            }
        }
        for l in labels.iter().filter(|l| *l != "instance" && *l != "le") {
            assert!(
                families_here.iter().any(|f| exported[*f].contains(l)),
                "label {l:?} in {e:?}: none of {families_here:?} has it"
            );
        }
    }
    // The dashboard covers each part: syncs, the datapath (verdicts and per Service), the
    // maps, pools and ARP.
    for f in [
        "kubeproxy_sync_proxy_rules_duration_seconds",
        "svc_datapath_packets",
        "svc_service_packets",
        "svc_service_drops",
        "svc_map_entries",
        "svc_lb_pool_used_addresses",
        "svc_l2_announced_addresses",
    ] {
        assert!(used_families.contains(f), "no panel shows {f}");
    }
}
