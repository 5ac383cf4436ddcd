//! Prometheus metrics of the agent and of the datapath, in the text exposition format.
//!
//! | metric | type | what |
//! |---|---|---|
//! | `svc_agent_sync_duration_seconds` | histogram | one reconcile pass (desired state computed, delta written) |
//! | `svc_agent_last_sync_timestamp_seconds` | gauge | Unix time the last pass finished without a map error |
//! | `svc_agent_syncs_total` | counter | reconcile passes |
//! | `svc_agent_map_full_errors_total{map}` | counter | writes a full map refused (the frontend keeps its previous state) |
//! | `svc_agent_map_write_errors_total{map}` | counter | other failed map writes |
//! | `svc_agent_invalid_objects` | gauge | objects (or parts) skipped as invalid in the last pass, with the reason in the log |
//! | `svc_agent_address_conflicts` | gauge | addresses a Service claimed that another Service keeps (both named in the log and in `svcctl dump`'s problems) |
//! | `svc_agent_services` / `svc_agent_frontends` | gauge | Services in the model / frontends in the desired state |
//! | `svc_agent_watch_errors_total` | counter | Kubernetes watch errors (connection lost, 410 Gone...) |
//! | `svc_map_entries{map}` / `svc_map_capacity{map}` | gauge | entries and max_entries of every pinned map, read at scrape time |
//! | `svc_datapath_packets_total{verdict}` | counter | packets by verdict (the per-CPU SVC_STATS map summed), read at scrape time: each packet once, with the verdict of the program that decided it (XDP's translations and drops, TC's everything else; svc-common's `Verdict`) |
//! | `svc_service_packets_total{namespace,name,port,kind}` | counter | packets to a Service port translated towards a backend (SVC_SVC_STATS summed over CPUs and over the port's frontends of that kind: both families, every NodePort address), read at scrape time |
//! | `svc_service_bytes_total{namespace,name,port,kind}` | counter | their bytes (whole frames as they arrived, Ethernet header included) |
//! | `svc_service_new_flows_total{namespace,name,port,kind}` | counter | new flows given a backend |
//! | `svc_service_reply_packets_total` / `svc_service_reply_bytes_total{namespace,name,port,kind}` | counter | replies from a backend translated back to the Service address, and their bytes |
//! | `svc_service_drops_total{namespace,name,port,kind,reason}` | counter | new flows dropped or rejected: `no_endpoints` (rejected with TCP RST / ICMP port unreachable), `no_local_backend`, `source_range`, `no_backend`, `nat_failed`, `ct_failed`, `rewrite_failed` (svc-common's `ServiceDrop`) |
//! | `svc_lb_pool_addresses{pool,family}` | gauge | addresses of a LoadBalancer pool (an IPv6 pool larger than 2^63 shows 2^63-1) |
//! | `svc_lb_pool_used_addresses{pool}` | gauge | its addresses Services hold |
//! | `svc_lb_ipam_writer` | gauge | 1 while this agent holds the IPAM Lease and writes LoadBalancer status (Kubernetes mode) |
//! | `svc_l2_announced_addresses` | gauge | LoadBalancer addresses this node answers ARP for |
//! | `svc_l2_arp_replies_total` / `svc_l2_gratuitous_arps_total` | counter | ARP replies and gratuitous ARP frames this node sent |
//!
//! The datapath figures are read from the pinned maps when scraped, not from the agent's
//! memory, so they are right even just after a restart. A Service's series go when its
//! frontends go (the agent deletes their counter entries); `port` is the Service port's
//! name (empty for a Service's one unnamed port), `kind` the frontend kind (`clusterip`,
//! `nodeport`, `externalip`, `loadbalancer`). Frontends without a name entry (SVC_NAMES
//! full) are not exported per Service.
//!
//! ## kube-proxy's names
//!
//! Beside ours, the metrics of kube-proxy (`pkg/proxy/metrics`) whose meaning we share, with
//! kube-proxy's names, types, labels, help texts and buckets, so that dashboards and alerts
//! written for kube-proxy keep working. A reconcile step (the delta written to the maps) is
//! kube-proxy's "sync of proxy rules"; a full one (everything compared and rewritten: a
//! Service, ServiceCIDR, pool or node change, a resync, a retry after a failed write) its
//! full sync, one that writes only the frontends of Services whose endpoints changed its
//! partial sync.
//!
//! | metric | type | what |
//! |---|---|---|
//! | `kubeproxy_sync_proxy_rules_duration_seconds` | histogram | every reconcile step (as `svc_agent_sync_duration_seconds`, with kube-proxy's buckets: 1 ms .. 16 s) |
//! | `kubeproxy_sync_full_proxy_rules_duration_seconds` | histogram | the full ones |
//! | `kubeproxy_sync_partial_proxy_rules_duration_seconds` | histogram | the partial ones (also a step that only rewrites the problems svcctl shows) |
//! | `kubeproxy_sync_proxy_rules_last_timestamp_seconds` | gauge | Unix time the last step finished without a map error (= `svc_agent_last_sync_timestamp_seconds`) |
//! | `kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds` | gauge | Unix time work for a step was last queued (news from the source, a resync, a retry); much later than the last sync means the agent is stuck |
//! | `kubeproxy_sync_proxy_rules_service_changes_total` | counter | Service objects added, updated or deleted, as the watch delivered them after its first list (Kubernetes mode; ServiceCIDRs, pools and relists are not counted; 0 with --manifests) |
//! | `kubeproxy_sync_proxy_rules_service_changes_pending` | gauge | those of them taken from the watch and not yet written to the maps (0 after a step without errors) |
//! | `kubeproxy_sync_proxy_rules_endpoint_changes_total` | counter | EndpointSlices added, updated or deleted, likewise (an update whose slice is unusable and keeps its last good version changes nothing and is not counted) |
//! | `kubeproxy_sync_proxy_rules_endpoint_changes_pending` | gauge | those of them not yet written to the maps |
//! | `kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy}` | gauge (as in kube-proxy, despite `_total`) | Service ports with a Local policy, endpoints, and none on this node: `internal` (internalTrafficPolicy, their cluster IPs), `external` (externalTrafficPolicy, their node ports, external and LoadBalancer IPs) |
//! | `kubeproxy_network_programming_duration_seconds` | histogram | for each EndpointSlice update carrying the `endpoints.kubernetes.io/last-change-trigger-time` annotation (set by the EndpointSlice controller to when the Pod or Service changed), from that time to the end of the step that wrote it without errors. Based on the control plane's clock: skewed by the difference between the clocks. Deletions carry no time (the watch gives the agent only the name), and slices of a (re)list are not counted, as in kube-proxy, which only counts changes after its start |
//!
//! Not applicable (no iptables, ipvs or nftables rules here), so not exported:
//! `kubeproxy_sync_proxy_rules_iptables_total{table}`, `..._iptables_last{table}`,
//! `..._iptables_restore_failures_total`, `..._iptables_partial_restore_failures_total`,
//! `kubeproxy_iptables_ct_invalid_dropped_packets_total`,
//! `kubeproxy_iptables_localhost_nodeports_accepted_packets_total`, the
//! `kubeproxy_sync_proxy_rules_nftables_*` ones, and the deprecated
//! `kubeproxy_sync_proxy_rules_latency_microseconds`. Map write failures are
//! `svc_agent_map_full_errors_total` and `svc_agent_map_write_errors_total` instead.
//! `kubeproxy_proxy_healthz_total{code}` and `kubeproxy_proxy_livez_total{code}` count the
//! answers of `/healthz` and `/livez` by status code, as kube-proxy's.
use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Mutex, atomic::AtomicU64},
    time::{Duration, SystemTime},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::{Histogram, exponential_buckets, linear_buckets},
    },
    registry::Registry,
};
use svc_common::{FrontendKind, NAME_SERVED, ServiceDrop, ServiceStats, SvcName, Verdict};
use tracing::debug;

use crate::dataplane::{self, MapStore as _, Maps, StoreError};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MapLabel {
    pub map: String,
}

/// The agent's own metrics (updated by the agent loop) and the registry that also reads
/// the datapath's maps at scrape time.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub sync_duration: Histogram,
    pub last_sync: Gauge<f64, AtomicU64>,
    pub syncs: Counter,
    pub map_full_errors: Family<MapLabel, Counter>,
    pub map_write_errors: Family<MapLabel, Counter>,
    pub invalid_objects: Gauge,
    pub address_conflicts: Gauge,
    pub services: Gauge,
    pub frontends: Gauge,
    pub watch_errors: Counter,
    lb_pool_addresses: Family<PoolFamilyLabel, Gauge>,
    lb_pool_used: Family<PoolLabel, Gauge>,
    lb_ipam_writer: Gauge,
    l2_announced: Gauge,
    l2_replies: Counter,
    l2_gratuitous: Counter,
    /// The pools that have series now.
    lb_pools_known: std::sync::Mutex<Vec<String>>,
    kp: KubeProxyMetrics,
}

/// kube-proxy's metrics (the module doc's second table).
#[derive(Debug)]
struct KubeProxyMetrics {
    sync_duration: Histogram,
    full_sync_duration: Histogram,
    partial_sync_duration: Histogram,
    last_sync: Gauge<f64, AtomicU64>,
    last_queued: Gauge<f64, AtomicU64>,
    service_changes: Counter,
    service_changes_pending: Gauge,
    endpoint_changes: Counter,
    endpoint_changes_pending: Gauge,
    no_local_endpoints: Family<TrafficPolicyLabel, Gauge>,
    network_programming: Histogram,
    /// The trigger times of the changes not yet written: observed into
    /// `network_programming` by the next step without errors.
    pending_trigger_times: Mutex<Vec<SystemTime>>,
    /// `/healthz` and `/livez` answers by status code.
    healthz: Family<CodeLabel, Counter>,
    livez: Family<CodeLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrafficPolicyLabel {
    traffic_policy: &'static str,
}

/// Which reconcile step ran (kube-proxy's full or partial sync).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    /// Everything compared and rewritten.
    Full,
    /// Only some frontends (the Services whose endpoints changed), or only the problems.
    Partial,
}

/// What the source took from the API in one pass (Kubernetes mode), for kube-proxy's change
/// counters and network programming latency.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SourceChanges {
    /// Service objects added, updated or deleted (not counting (re)lists).
    pub services: u64,
    /// EndpointSlices added, updated or deleted that changed the model.
    pub endpoints: u64,
    /// Their `endpoints.kubernetes.io/last-change-trigger-time` annotations.
    pub trigger_times: Vec<SystemTime>,
}

/// Service ports with a Local traffic policy, endpoints, and none on this node (kube-proxy's
/// `sync_proxy_rules_no_local_endpoints_total`), by policy.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NoLocalEndpoints {
    pub internal: usize,
    pub external: usize,
}

/// Trigger times kept for changes not yet written.
const MAX_PENDING_TRIGGER_TIMES: usize = 100_000;

/// kube-proxy's network programming latency buckets: 0.25 s, 0.5 s, 1..59 s, 60..115 s by
/// 5 s, 2..5 min by 30 s.
fn network_programming_buckets() -> Vec<f64> {
    linear_buckets(0.25, 0.25, 2)
        .chain(linear_buckets(1.0, 1.0, 59))
        .chain(linear_buckets(60.0, 5.0, 12))
        .chain(linear_buckets(120.0, 30.0, 7))
        .collect()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl KubeProxyMetrics {
    fn new() -> KubeProxyMetrics {
        // kube-proxy's: 1 ms .. ~16 s.
        let sync = || Histogram::new(exponential_buckets(0.001, 2.0, 15));
        KubeProxyMetrics {
            sync_duration: sync(),
            full_sync_duration: sync(),
            partial_sync_duration: sync(),
            last_sync: Gauge::default(),
            last_queued: Gauge::default(),
            service_changes: Counter::default(),
            service_changes_pending: Gauge::default(),
            endpoint_changes: Counter::default(),
            endpoint_changes_pending: Gauge::default(),
            no_local_endpoints: Family::default(),
            network_programming: Histogram::new(network_programming_buckets()),
            pending_trigger_times: Mutex::default(),
            healthz: Family::default(),
            livez: Family::default(),
        }
    }

    fn register(&self, r: &mut Registry) {
        use prometheus_client::registry::Unit;
        for (name, help, h) in [
            (
                "kubeproxy_sync_proxy_rules_duration",
                "SyncProxyRules latency in seconds",
                &self.sync_duration,
            ),
            (
                "kubeproxy_sync_full_proxy_rules_duration",
                "SyncProxyRules latency in seconds for full resyncs",
                &self.full_sync_duration,
            ),
            (
                "kubeproxy_sync_partial_proxy_rules_duration",
                "SyncProxyRules latency in seconds for partial resyncs",
                &self.partial_sync_duration,
            ),
            (
                "kubeproxy_network_programming_duration",
                "In Cluster Network Programming Latency in seconds",
                &self.network_programming,
            ),
        ] {
            r.register_with_unit(name, help, Unit::Seconds, h.clone());
        }
        r.register(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            self.last_sync.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            self.last_queued.clone(),
        );
        r.register(
            "kubeproxy_proxy_healthz",
            "Cumulative proxy healthz HTTP status",
            self.healthz.clone(),
        );
        r.register(
            "kubeproxy_proxy_livez",
            "Cumulative proxy livez HTTP status",
            self.livez.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_service_changes",
            "Cumulative proxy rules Service changes",
            self.service_changes.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_service_changes_pending",
            "Pending proxy rules Service changes",
            self.service_changes_pending.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes",
            "Cumulative proxy rules Endpoint changes",
            self.endpoint_changes.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
            "Pending proxy rules Endpoint changes",
            self.endpoint_changes_pending.clone(),
        );
        // A gauge despite the name, as in kube-proxy.
        r.register(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
            "Number of services with a Local traffic policy and no endpoints",
            self.no_local_endpoints.clone(),
        );
        // Both series exist from the start, at 0.
        for traffic_policy in ["internal", "external"] {
            drop(
                self.no_local_endpoints
                    .get_or_create(&TrafficPolicyLabel { traffic_policy }),
            );
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolFamilyLabel {
    pool: String,
    family: &'static str,
}

impl Metrics {
    /// `bpffs`: where the maps are pinned, read at every scrape.
    pub fn new(bpffs: PathBuf) -> Metrics {
        let mut m = Metrics {
            // 100 µs .. ~6.5 s
            sync_duration: Histogram::new(exponential_buckets(0.0001, 2.0, 17)),
            last_sync: Gauge::default(),
            syncs: Counter::default(),
            map_full_errors: Family::default(),
            map_write_errors: Family::default(),
            invalid_objects: Gauge::default(),
            address_conflicts: Gauge::default(),
            services: Gauge::default(),
            frontends: Gauge::default(),
            watch_errors: Counter::default(),
            lb_pool_addresses: Family::default(),
            lb_pool_used: Family::default(),
            lb_ipam_writer: Gauge::default(),
            l2_announced: Gauge::default(),
            l2_replies: Counter::default(),
            l2_gratuitous: Counter::default(),
            lb_pools_known: Default::default(),
            kp: KubeProxyMetrics::new(),
            registry: Registry::default(),
        };
        m.kp.register(&mut m.registry);
        m.registry.register_with_unit(
            "svc_agent_sync_duration",
            "Duration of one reconcile pass",
            prometheus_client::registry::Unit::Seconds,
            m.sync_duration.clone(),
        );
        m.registry.register(
            "svc_agent_last_sync_timestamp_seconds",
            "Unix time of the last reconcile pass without map errors",
            m.last_sync.clone(),
        );
        m.registry
            .register("svc_agent_syncs", "Reconcile passes", m.syncs.clone());
        m.registry.register(
            "svc_agent_map_full_errors",
            "Map writes refused because the map is full",
            m.map_full_errors.clone(),
        );
        m.registry.register(
            "svc_agent_map_write_errors",
            "Map writes that failed for another reason",
            m.map_write_errors.clone(),
        );
        m.registry.register(
            "svc_agent_invalid_objects",
            "Objects or parts of objects skipped as invalid in the last pass",
            m.invalid_objects.clone(),
        );
        m.registry.register(
            "svc_agent_address_conflicts",
            "Addresses a Service claimed that another Service keeps, in the last pass",
            m.address_conflicts.clone(),
        );
        m.registry.register(
            "svc_agent_services",
            "Services in the model",
            m.services.clone(),
        );
        m.registry.register(
            "svc_agent_frontends",
            "Frontends (address, port, protocol) in the desired state",
            m.frontends.clone(),
        );
        m.registry.register(
            "svc_agent_watch_errors",
            "Kubernetes watch errors",
            m.watch_errors.clone(),
        );
        m.registry.register(
            "svc_lb_pool_addresses",
            "Addresses of a LoadBalancer address pool",
            m.lb_pool_addresses.clone(),
        );
        m.registry.register(
            "svc_lb_pool_used_addresses",
            "Addresses of a LoadBalancer address pool that Services hold",
            m.lb_pool_used.clone(),
        );
        m.registry.register(
            "svc_lb_ipam_writer",
            "1 while this agent holds the IPAM Lease and writes LoadBalancer status",
            m.lb_ipam_writer.clone(),
        );
        m.registry.register(
            "svc_l2_announced_addresses",
            "LoadBalancer addresses this node answers ARP for",
            m.l2_announced.clone(),
        );
        m.registry.register(
            "svc_l2_arp_replies",
            "ARP replies sent for LoadBalancer addresses",
            m.l2_replies.clone(),
        );
        m.registry.register(
            "svc_l2_gratuitous_arps",
            "Gratuitous ARP frames sent for LoadBalancer addresses",
            m.l2_gratuitous.clone(),
        );
        m.registry
            .register_collector(Box::new(DatapathCollector { bpffs }));
        // Every map's error series exists from the start, at 0, so alerts and rate() see
        // the first error.
        for spec in dataplane::MAP_SPECS {
            let label = MapLabel {
                map: spec.name.to_string(),
            };
            drop(m.map_full_errors.get_or_create(&label));
            drop(m.map_write_errors.get_or_create(&label));
        }
        m
    }

    /// Records one reconcile step. One without errors wrote every change taken from the
    /// source: nothing is pending any more, and their network programming latency is known.
    pub fn record_sync(&self, took: Duration, kind: SyncKind, errors: &[StoreError]) {
        self.syncs.inc();
        self.sync_duration.observe(took.as_secs_f64());
        self.kp.sync_duration.observe(took.as_secs_f64());
        match kind {
            SyncKind::Full => &self.kp.full_sync_duration,
            SyncKind::Partial => &self.kp.partial_sync_duration,
        }
        .observe(took.as_secs_f64());
        for e in errors {
            let (family, map) = match e {
                StoreError::Full { map } => (&self.map_full_errors, map),
                StoreError::Other { map, .. } => (&self.map_write_errors, map),
            };
            family
                .get_or_create(&MapLabel {
                    map: map.to_string(),
                })
                .inc();
        }
        if errors.is_empty() {
            let now = unix_now();
            self.last_sync.set(now);
            self.kp.last_sync.set(now);
            self.changes_programmed();
        }
    }

    /// The changes taken from the source, queued for the next step.
    pub fn changes_taken(&self, changes: &SourceChanges) {
        self.kp.service_changes.inc_by(changes.services);
        self.kp.endpoint_changes.inc_by(changes.endpoints);
        self.kp
            .service_changes_pending
            .inc_by(changes.services as i64);
        self.kp
            .endpoint_changes_pending
            .inc_by(changes.endpoints as i64);
        if !changes.trigger_times.is_empty() {
            let mut pending = self
                .kp
                .pending_trigger_times
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            // Bounded while writes keep failing: the latencies beyond it go unobserved.
            let room = MAX_PENDING_TRIGGER_TIMES.saturating_sub(pending.len());
            pending.extend(changes.trigger_times.iter().take(room));
        }
    }

    /// Work for a reconcile step was queued (news, a resync, a retry).
    pub fn sync_queued(&self) {
        self.kp.last_queued.set(unix_now());
    }

    /// Every change taken from the source is in the maps (written by a step without errors,
    /// or needing no write at all).
    pub fn changes_programmed(&self) {
        self.kp.service_changes_pending.set(0);
        self.kp.endpoint_changes_pending.set(0);
        let times = std::mem::take(
            &mut *self
                .kp
                .pending_trigger_times
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let now = SystemTime::now();
        for t in times {
            // A trigger time ahead of this node's clock (skew) counts as 0.
            let latency = now.duration_since(t).unwrap_or_default();
            self.kp.network_programming.observe(latency.as_secs_f64());
        }
    }

    /// Service ports with a Local policy, endpoints, and none on this node.
    pub fn set_no_local_endpoints(&self, n: NoLocalEndpoints) {
        for (traffic_policy, count) in [("internal", n.internal), ("external", n.external)] {
            self.kp
                .no_local_endpoints
                .get_or_create(&TrafficPolicyLabel { traffic_policy })
                .set(count as i64);
        }
    }

    /// Brings the watch error counter up to `total` (the source counts them).
    pub fn set_watch_errors(&self, total: u64) {
        let seen = self.watch_errors.get();
        if total > seen {
            self.watch_errors.inc_by(total - seen);
        }
    }

    /// The LoadBalancer pools' usage, whether this agent writes status, and what it
    /// announces.
    pub fn set_lb(
        &self,
        pools: &[crate::lbipam::plan::PoolUsage],
        writer: Option<bool>,
        l2: Option<&crate::lbipam::plan::L2Report>,
    ) {
        // Pools come and go: only the current ones have series (cleared only when the set
        // changes, so a scrape never sees a pool's series missing).
        let names: std::collections::BTreeSet<&str> =
            pools.iter().map(|p| p.name.as_str()).collect();
        let mut known = self
            .lb_pools_known
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if known
            .iter()
            .map(String::as_str)
            .collect::<std::collections::BTreeSet<_>>()
            != names
        {
            self.lb_pool_addresses.clear();
            self.lb_pool_used.clear();
            *known = names.iter().map(|n| n.to_string()).collect();
        }
        drop(known);
        for p in pools {
            for (family, size) in [("IPv4", p.size_v4), ("IPv6", p.size_v6)] {
                if size > 0 {
                    let label = PoolFamilyLabel {
                        pool: p.name.clone(),
                        family,
                    };
                    let size = i64::try_from(size).unwrap_or(i64::MAX);
                    self.lb_pool_addresses.get_or_create(&label).set(size);
                }
            }
            let used = i64::try_from(p.used).unwrap_or(i64::MAX);
            self.lb_pool_used
                .get_or_create(&PoolLabel {
                    pool: p.name.clone(),
                })
                .set(used);
        }
        self.lb_ipam_writer.set(i64::from(writer == Some(true)));
        if let Some(l2) = l2 {
            let here: usize = l2
                .announcements
                .iter()
                .filter(|a| a.here)
                .map(|a| a.ips.len())
                .sum();
            self.l2_announced.set(here as i64);
            for (counter, total) in [
                (&self.l2_replies, l2.arp_replies),
                (&self.l2_gratuitous, l2.gratuitous_arps),
            ] {
                let seen = counter.get();
                if total > seen {
                    counter.inc_by(total - seen);
                }
            }
        }
    }

    /// One answer of `/healthz` (`readiness`) or `/livez`, with its status code.
    pub fn record_health_answer(&self, readiness: bool, code: u16) {
        let family = if readiness {
            &self.kp.healthz
        } else {
            &self.kp.livez
        };
        family
            .get_or_create(&CodeLabel {
                code: code.to_string(),
            })
            .inc();
    }

    /// The whole exposition, as `/metrics` serves it.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            debug!(error = %e, "encoding metrics");
        }
        out
    }
}

/// Reads the pinned maps at scrape time.
#[derive(Debug)]
struct DatapathCollector {
    bpffs: PathBuf,
}

impl Collector for DatapathCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // A scrape before the maps exist (or after `svc-agent cleanup`) shows no datapath
        // series rather than failing the whole scrape.
        if let Ok(usage) = dataplane::map_usage(&self.bpffs) {
            for (name, help, pick) in [
                (
                    "svc_map_entries",
                    "Entries in a pinned map",
                    (|u: &dataplane::MapUsage| u.entries) as fn(&dataplane::MapUsage) -> u64,
                ),
                (
                    "svc_map_capacity",
                    "max_entries of a pinned map",
                    |u: &dataplane::MapUsage| u.capacity,
                ),
            ] {
                let gauge = ConstGauge::new(0i64);
                let mut family =
                    encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
                for u in &usage {
                    let labels = [("map", u.name)];
                    let value = i64::try_from(pick(u)).unwrap_or(i64::MAX);
                    ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        if let Ok(maps) = Maps::open_pinned(&self.bpffs)
            && let Ok(totals) = maps.verdict_totals()
        {
            let counter = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(
                "svc_datapath_packets",
                "Program runs by verdict (every run ends in exactly one)",
                None,
                counter.metric_type(),
            )?;
            for (verdict, n) in totals {
                let labels = [("verdict", Verdict::label(verdict))];
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        if let Ok(maps) = Maps::open_pinned(&self.bpffs)
            && let Ok(stats) = maps.service_stats_totals()
            && let Ok(names) = maps.read_names()
        {
            encode_service_stats(&mut encoder, &service_series(&stats, &names))?;
        }
        Ok(())
    }
}

/// The labels of one Service port's series: namespace, name, port name, frontend kind.
type ServiceLabels = (String, String, String, &'static str);

/// The per-Service counters summed per Service port and frontend kind (the port's
/// frontends of both families and on every NodePort address are one series). Frontends
/// without a served name entry are left out.
fn service_series(
    stats: &[(u32, ServiceStats)],
    names: &[(u32, SvcName)],
) -> BTreeMap<ServiceLabels, ServiceStats> {
    let names: BTreeMap<u32, &SvcName> = names
        .iter()
        .filter(|(_, n)| n.status == NAME_SERVED)
        .map(|(k, n)| (*k, n))
        .collect();
    let mut out: BTreeMap<ServiceLabels, ServiceStats> = BTreeMap::new();
    for (id, s) in stats {
        let Some(n) = names.get(id) else {
            continue;
        };
        let kind = FrontendKind::from_raw(n.kind).map_or("unknown", FrontendKind::label);
        let key = (
            n.namespace().to_string(),
            n.name().to_string(),
            n.port_name().to_string(),
            kind,
        );
        out.entry(key).or_default().add(s);
    }
    out
}

fn encode_service_stats(
    encoder: &mut DescriptorEncoder,
    series: &BTreeMap<ServiceLabels, ServiceStats>,
) -> Result<(), std::fmt::Error> {
    type Pick = fn(&ServiceStats) -> u64;
    let families: [(&str, &str, Pick); 5] = [
        (
            "svc_service_packets",
            "Packets to a Service port translated towards a backend (each packet once)",
            |s| s.packets,
        ),
        (
            "svc_service_bytes",
            "Bytes of those packets (whole frames as they arrived)",
            |s| s.bytes,
        ),
        (
            "svc_service_new_flows",
            "New flows to a Service port given a backend",
            |s| s.new_flows,
        ),
        (
            "svc_service_reply_packets",
            "Replies from a backend translated back to the Service address",
            |s| s.reply_packets,
        ),
        (
            "svc_service_reply_bytes",
            "Bytes of those replies (whole frames as they arrived)",
            |s| s.reply_bytes,
        ),
    ];
    for (name, help, pick) in families {
        let counter = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
        for ((ns, svc, port, kind), s) in series {
            let labels = [
                ("namespace", ns.as_str()),
                ("name", svc.as_str()),
                ("port", port.as_str()),
                ("kind", *kind),
            ];
            ConstCounter::new(pick(s)).encode(family.encode_family(&labels)?)?;
        }
    }
    let counter = ConstCounter::new(0u64);
    let mut family = encoder.encode_descriptor(
        "svc_service_drops",
        "New flows to a Service port dropped or rejected, by reason",
        None,
        counter.metric_type(),
    )?;
    for ((ns, svc, port, kind), s) in series {
        for reason in ServiceDrop::ALL {
            let labels = [
                ("namespace", ns.as_str()),
                ("name", svc.as_str()),
                ("port", port.as_str()),
                ("kind", *kind),
                ("reason", reason.label()),
            ];
            let n = s.drops[reason.raw() as usize];
            ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_metrics_are_exposed_with_their_names() {
        let m = Metrics::new(PathBuf::from("/nonexistent"));
        m.record_sync(
            Duration::from_millis(3),
            SyncKind::Full,
            &[StoreError::Full {
                map: "SVC4_SERVICES",
            }],
        );
        m.record_sync(Duration::from_millis(1), SyncKind::Partial, &[]);
        m.invalid_objects.set(2);
        m.record_health_answer(true, 503);
        m.record_health_answer(true, 200);
        m.record_health_answer(true, 200);
        m.record_health_answer(false, 200);
        m.set_watch_errors(3);
        m.set_watch_errors(2);
        let text = m.encode();
        for want in [
            "svc_agent_sync_duration_seconds_count 2",
            "svc_agent_syncs_total 2",
            "svc_agent_map_full_errors_total{map=\"SVC4_SERVICES\"} 1",
            "svc_agent_map_full_errors_total{map=\"SVC4_CT\"} 0",
            "svc_agent_invalid_objects 2",
            "svc_agent_watch_errors_total 3",
            "svc_agent_last_sync_timestamp_seconds ",
            "kubeproxy_proxy_healthz_total{code=\"200\"} 2",
            "kubeproxy_proxy_healthz_total{code=\"503\"} 1",
            "kubeproxy_proxy_livez_total{code=\"200\"} 1",
        ] {
            assert!(text.contains(want), "{want:?} missing in:\n{text}");
        }
        // Nothing pinned: no datapath series, and the scrape still succeeds.
        assert!(!text.contains("svc_map_entries"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn service_series_sum_a_ports_frontends_of_a_kind_and_skip_unnamed_ones() {
        use svc_common::UnservedReason;
        let named = |port: &str, kind: FrontendKind| {
            SvcName::new("shop", "cart", port, kind.raw(), NAME_SERVED)
        };
        let names = [
            (1, named("http", FrontendKind::ClusterIp)),
            // The IPv6 ClusterIP of the same port, and a NodePort on two node addresses.
            (2, named("http", FrontendKind::ClusterIp)),
            (3, named("http", FrontendKind::NodePort)),
            (4, named("http", FrontendKind::NodePort)),
            (5, named("", FrontendKind::ClusterIp)),
            (
                svc_common::NAME_KEY_UNSERVED,
                SvcName::new("shop", "dns", "", 255, UnservedReason::Headless.raw()),
            ),
        ];
        let stats = |packets: u64, no_endpoints: u64| {
            let mut s = ServiceStats {
                packets,
                bytes: packets * 100,
                ..Default::default()
            };
            s.drops[ServiceDrop::NoEndpoints.raw() as usize] = no_endpoints;
            s
        };
        // 6 has no name entry (SVC_NAMES full): left out.
        let counters = [
            (1, stats(1, 0)),
            (2, stats(2, 0)),
            (3, stats(3, 1)),
            (4, stats(4, 1)),
            (5, stats(5, 0)),
            (6, stats(6, 0)),
        ];
        let series = service_series(&counters, &names);
        let key = |port: &str, kind| {
            (
                "shop".to_string(),
                "cart".to_string(),
                port.to_string(),
                kind,
            )
        };
        assert_eq!(series.len(), 3, "{series:?}");
        assert_eq!(series[&key("http", "clusterip")].packets, 3);
        assert_eq!(series[&key("http", "nodeport")].bytes, 700);
        assert_eq!(series[&key("", "clusterip")].packets, 5);

        #[derive(Debug)]
        struct Fixed(BTreeMap<ServiceLabels, ServiceStats>);
        impl Collector for Fixed {
            fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
                encode_service_stats(&mut encoder, &self.0)
            }
        }
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Fixed(series)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let labels = "namespace=\"shop\",name=\"cart\",port=\"http\",kind=\"nodeport\"";
        for (series, value) in [
            (format!("svc_service_packets_total{{{labels}}}"), 7.0),
            (format!("svc_service_bytes_total{{{labels}}}"), 700.0),
            (format!("svc_service_new_flows_total{{{labels}}}"), 0.0),
            (format!("svc_service_reply_packets_total{{{labels}}}"), 0.0),
            (format!("svc_service_reply_bytes_total{{{labels}}}"), 0.0),
            (
                format!("svc_service_drops_total{{{labels},reason=\"no_endpoints\"}}"),
                2.0,
            ),
            (
                format!("svc_service_drops_total{{{labels},reason=\"nat_failed\"}}"),
                0.0,
            ),
        ] {
            assert_eq!(sample(&text, &series), value, "{series}");
        }
        assert!(text.contains("# TYPE svc_service_drops counter"), "{text}");
        assert!(!text.contains("name=\"dns\""), "{text}");
    }

    /// The value of the one sample named `series` (name and labels, exactly).
    fn sample(text: &str, series: &str) -> f64 {
        let values: Vec<f64> = text
            .lines()
            .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
            .collect();
        assert_eq!(values.len(), 1, "{series:?} in:\n{text}");
        values[0]
    }

    #[test]
    fn kube_proxy_names_types_and_buckets() {
        let m = Metrics::new(PathBuf::from("/nonexistent"));
        let text = m.encode();
        for (name, kind) in [
            ("kubeproxy_sync_proxy_rules_duration_seconds", "histogram"),
            (
                "kubeproxy_sync_full_proxy_rules_duration_seconds",
                "histogram",
            ),
            (
                "kubeproxy_sync_partial_proxy_rules_duration_seconds",
                "histogram",
            ),
            (
                "kubeproxy_network_programming_duration_seconds",
                "histogram",
            ),
            ("kubeproxy_sync_proxy_rules_last_timestamp_seconds", "gauge"),
            (
                "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
                "gauge",
            ),
            ("kubeproxy_sync_proxy_rules_service_changes", "counter"),
            (
                "kubeproxy_sync_proxy_rules_service_changes_pending",
                "gauge",
            ),
            ("kubeproxy_sync_proxy_rules_endpoint_changes", "counter"),
            (
                "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
                "gauge",
            ),
            (
                "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
                "gauge",
            ),
        ] {
            let want = format!("# TYPE {name} {kind}\n");
            assert!(text.contains(&want), "{want:?} missing in:\n{text}");
        }
        // kube-proxy's buckets: 1 ms doubling to 16.384 s; 0.25 s .. 5 min.
        for series in [
            "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.001\"}",
            "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"16.384\"}",
            "kubeproxy_network_programming_duration_seconds_bucket{le=\"0.25\"}",
            "kubeproxy_network_programming_duration_seconds_bucket{le=\"59.0\"}",
            "kubeproxy_network_programming_duration_seconds_bucket{le=\"115.0\"}",
            "kubeproxy_network_programming_duration_seconds_bucket{le=\"300.0\"}",
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"internal\"}",
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"external\"}",
        ] {
            assert_eq!(sample(&text, series), 0.0, "{series}");
        }
        let buckets = |name: &str| text.matches(&format!("{name}_bucket{{")).count();
        // 15 and 2 + 59 + 12 + 7, each plus +Inf.
        assert_eq!(buckets("kubeproxy_sync_proxy_rules_duration_seconds"), 16);
        assert_eq!(
            buckets("kubeproxy_network_programming_duration_seconds"),
            81
        );
    }

    #[test]
    fn kube_proxy_sync_and_change_metrics_follow_the_agent() {
        let m = Metrics::new(PathBuf::from("/nonexistent"));
        let before = unix_now();
        m.sync_queued();
        m.record_sync(Duration::from_millis(2), SyncKind::Full, &[]);
        m.record_sync(Duration::from_millis(1), SyncKind::Partial, &[]);
        m.record_sync(Duration::from_millis(1), SyncKind::Partial, &[]);
        // Two Service changes and three slice changes, two of them with a trigger time
        // 2 s ago (one from a clock ahead of this one, which counts as 0).
        m.changes_taken(&SourceChanges {
            services: 2,
            endpoints: 3,
            trigger_times: vec![
                SystemTime::now() - Duration::from_secs(2),
                SystemTime::now() + Duration::from_secs(60),
            ],
        });
        let text = m.encode();
        for (series, want) in [
            ("kubeproxy_sync_proxy_rules_duration_seconds_count", 3.0),
            (
                "kubeproxy_sync_full_proxy_rules_duration_seconds_count",
                1.0,
            ),
            (
                "kubeproxy_sync_partial_proxy_rules_duration_seconds_count",
                2.0,
            ),
            ("kubeproxy_sync_proxy_rules_service_changes_total", 2.0),
            ("kubeproxy_sync_proxy_rules_service_changes_pending", 2.0),
            ("kubeproxy_sync_proxy_rules_endpoint_changes_total", 3.0),
            ("kubeproxy_sync_proxy_rules_endpoint_changes_pending", 3.0),
            ("kubeproxy_network_programming_duration_seconds_count", 0.0),
        ] {
            assert_eq!(sample(&text, series), want, "{series}");
        }
        for series in [
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
        ] {
            assert!(sample(&text, series) >= before.floor(), "{series}");
        }
        // A failed step leaves them pending; the next good one programs them.
        m.record_sync(
            Duration::from_millis(1),
            SyncKind::Full,
            &[StoreError::Full {
                map: "SVC4_SERVICES",
            }],
        );
        let text = m.encode();
        assert_eq!(
            sample(&text, "kubeproxy_sync_proxy_rules_endpoint_changes_pending"),
            3.0
        );
        m.record_sync(Duration::from_millis(1), SyncKind::Full, &[]);
        let text = m.encode();
        for (series, want) in [
            ("kubeproxy_sync_proxy_rules_service_changes_total", 2.0),
            ("kubeproxy_sync_proxy_rules_service_changes_pending", 0.0),
            ("kubeproxy_sync_proxy_rules_endpoint_changes_pending", 0.0),
            ("kubeproxy_network_programming_duration_seconds_count", 2.0),
            (
                "kubeproxy_network_programming_duration_seconds_bucket{le=\"0.25\"}",
                1.0,
            ),
            (
                "kubeproxy_network_programming_duration_seconds_bucket{le=\"1.0\"}",
                1.0,
            ),
            (
                "kubeproxy_network_programming_duration_seconds_bucket{le=\"3.0\"}",
                2.0,
            ),
            (
                "kubeproxy_sync_full_proxy_rules_duration_seconds_count",
                3.0,
            ),
        ] {
            assert_eq!(sample(&text, series), want, "{series}");
        }
        m.set_no_local_endpoints(NoLocalEndpoints {
            internal: 1,
            external: 4,
        });
        let text = m.encode();
        assert_eq!(
            sample(
                &text,
                "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"external\"}"
            ),
            4.0
        );
    }
}
