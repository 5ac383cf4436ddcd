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
//! | `svc_datapath_packets_total{verdict}` | counter | program exits by verdict (the per-CPU SVC_STATS map summed), read at scrape time |
//! | `svc_lb_pool_addresses{pool,family}` | gauge | addresses of a LoadBalancer pool (an IPv6 pool larger than 2^63 shows 2^63-1) |
//! | `svc_lb_pool_used_addresses{pool}` | gauge | its addresses Services hold |
//! | `svc_lb_ipam_writer` | gauge | 1 while this agent holds the IPAM Lease and writes LoadBalancer status (Kubernetes mode) |
//! | `svc_l2_announced_addresses` | gauge | LoadBalancer addresses this node answers ARP for |
//! | `svc_l2_arp_replies_total` / `svc_l2_gratuitous_arps_total` | counter | ARP replies and gratuitous ARP frames this node sent |
//!
//! The datapath figures are read from the pinned maps when scraped, not from the agent's
//! memory, so they are right even just after a restart.
use std::{
    path::PathBuf,
    sync::atomic::AtomicU64,
    time::{Duration, SystemTime},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use svc_common::Verdict;
use tracing::debug;

use crate::dataplane::{self, Maps, StoreError};

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
            registry: Registry::default(),
        };
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

    /// Records one reconcile pass.
    pub fn record_sync(&self, took: Duration, errors: &[StoreError]) {
        self.syncs.inc();
        self.sync_duration.observe(took.as_secs_f64());
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
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            self.last_sync.set(now.as_secs_f64());
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_metrics_are_exposed_with_their_names() {
        let m = Metrics::new(PathBuf::from("/nonexistent"));
        m.record_sync(
            Duration::from_millis(3),
            &[StoreError::Full {
                map: "SVC4_SERVICES",
            }],
        );
        m.record_sync(Duration::from_millis(1), &[]);
        m.invalid_objects.set(2);
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
        ] {
            assert!(text.contains(want), "{want:?} missing in:\n{text}");
        }
        // Nothing pinned: no datapath series, and the scrape still succeeds.
        assert!(!text.contains("svc_map_entries"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
