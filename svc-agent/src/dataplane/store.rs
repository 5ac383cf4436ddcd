//! The reads and writes the reconciler needs, as a small trait ([`MapStore`]) over raw map
//! entries: implemented by the pinned maps ([`Maps`]) and, for unit tests, by an in-memory
//! fake with the kernel's capacity behaviour (Katran's `testing` mode). Also the raw
//! contents of the maps in one value ([`RawMaps`]), which svcctl decodes and the
//! consistency checks read.
//!
//! Each family has its own maps and its own methods (`put_service` writes SVC4_SERVICES,
//! `put_service6` SVC6_SERVICES, ...); the `*_entries` methods take a key or value of
//! either family ([`ServiceKey`], [`BackendValue`], ...) and write it to its family's map,
//! so the reconciler is written once for both.
use std::os::fd::AsFd as _;

use aya::maps::{HashMap, MapData, MapError, lpm_trie::Key as LpmKey};
use svc_common::{
    AddrRange4, AddrRange6, Affinity4Key, Affinity4Value, Affinity6Key, Backend4, Backend6, Ct4Key,
    Ct4Value, Ct6Key, Ct6Value, Ip6, ProblemText, RevNat4, RevNat6, ServiceStats, Svc4Key,
    Svc4Value, Svc6Key, SvcName, Verdict, map_names,
};

use super::{
    Maps, batch,
    layout::{
        BackendValue, ClusterIpKey, RevNatValue, ServiceCidr6Key, ServiceCidrEntry, ServiceCidrKey,
        ServiceKey, SrcRange6Key, SrcRangeEntry, SrcRangeKey,
    },
};
use crate::addr::Family;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("map {map} is full")]
    Full { map: &'static str },
    #[error("map {map}: {message}")]
    Other { map: &'static str, message: String },
}

impl StoreError {
    /// The map the failed write was for.
    pub fn map(&self) -> &'static str {
        match self {
            StoreError::Full { map } | StoreError::Other { map, .. } => map,
        }
    }
}

/// The writes and reads the reconciler needs.
pub trait MapStore {
    fn put_service(&mut self, key: &Svc4Key, value: &Svc4Value) -> Result<(), StoreError>;
    /// Writes `keys[i] -> values[i]` in order, as `put_service` one after another would;
    /// on failure, how many of them (a prefix) were written and why the next was not.
    fn put_services(
        &mut self,
        keys: &[Svc4Key],
        values: &[Svc4Value],
    ) -> Result<(), (usize, StoreError)> {
        for (i, (k, v)) in keys.iter().zip(values).enumerate() {
            self.put_service(k, v).map_err(|e| (i, e))?;
        }
        Ok(())
    }
    fn del_service(&mut self, key: &Svc4Key) -> Result<(), StoreError>;
    fn put_backend(&mut self, id: u32, value: &Backend4) -> Result<(), StoreError>;
    /// Writes `ids[i] -> values[i]` in order, as `put_backend` one after another would; on
    /// failure, how many of them (a prefix) were written and why the next was not.
    fn put_backends(
        &mut self,
        ids: &[u32],
        values: &[Backend4],
    ) -> Result<(), (usize, StoreError)> {
        for (i, (k, v)) in ids.iter().zip(values).enumerate() {
            self.put_backend(*k, v).map_err(|e| (i, e))?;
        }
        Ok(())
    }
    fn del_backend(&mut self, id: u32) -> Result<(), StoreError>;
    fn put_revnat(&mut self, id: u32, value: &RevNat4) -> Result<(), StoreError>;
    fn del_revnat(&mut self, id: u32) -> Result<(), StoreError>;
    fn put_src_range(&mut self, key: &SrcRangeKey) -> Result<(), StoreError>;
    fn del_src_range(&mut self, key: &SrcRangeKey) -> Result<(), StoreError>;
    fn read_services(&self) -> Result<Vec<(Svc4Key, Svc4Value)>, StoreError>;
    fn read_backends(&self) -> Result<Vec<(u32, Backend4)>, StoreError>;
    fn read_revnats(&self) -> Result<Vec<(u32, RevNat4)>, StoreError>;
    fn read_src_ranges(&self) -> Result<Vec<SrcRangeKey>, StoreError>;
    /// SVC6_SERVICES, SVC6_BACKENDS, SVC6_REVNAT and SVC6_SRC_RANGE, as their IPv4
    /// counterparts above.
    fn put_service6(&mut self, key: &Svc6Key, value: &Svc4Value) -> Result<(), StoreError>;
    fn put_services6(
        &mut self,
        keys: &[Svc6Key],
        values: &[Svc4Value],
    ) -> Result<(), (usize, StoreError)> {
        for (i, (k, v)) in keys.iter().zip(values).enumerate() {
            self.put_service6(k, v).map_err(|e| (i, e))?;
        }
        Ok(())
    }
    fn del_service6(&mut self, key: &Svc6Key) -> Result<(), StoreError>;
    fn put_backend6(&mut self, id: u32, value: &Backend6) -> Result<(), StoreError>;
    fn put_backends6(
        &mut self,
        ids: &[u32],
        values: &[Backend6],
    ) -> Result<(), (usize, StoreError)> {
        for (i, (k, v)) in ids.iter().zip(values).enumerate() {
            self.put_backend6(*k, v).map_err(|e| (i, e))?;
        }
        Ok(())
    }
    fn del_backend6(&mut self, id: u32) -> Result<(), StoreError>;
    fn put_revnat6(&mut self, id: u32, value: &RevNat6) -> Result<(), StoreError>;
    fn del_revnat6(&mut self, id: u32) -> Result<(), StoreError>;
    fn put_src_range6(&mut self, key: &SrcRange6Key) -> Result<(), StoreError>;
    fn del_src_range6(&mut self, key: &SrcRange6Key) -> Result<(), StoreError>;
    fn read_services6(&self) -> Result<Vec<(Svc6Key, Svc4Value)>, StoreError>;
    fn read_backends6(&self) -> Result<Vec<(u32, Backend6)>, StoreError>;
    fn read_revnats6(&self) -> Result<Vec<(u32, RevNat6)>, StoreError>;
    fn read_src_ranges6(&self) -> Result<Vec<SrcRange6Key>, StoreError>;

    /// Writes `keys[i] -> values[i]` in order, each to its family's services map: one
    /// batch per run of one family (a frontend's entries are all of one).
    fn put_service_entries(
        &mut self,
        keys: &[ServiceKey],
        values: &[Svc4Value],
    ) -> Result<(), (usize, StoreError)> {
        let mut start = 0;
        while start < keys.len() {
            let family = keys[start].family();
            let len = keys[start..]
                .iter()
                .take_while(|k| k.family() == family)
                .count();
            let run = &keys[start..start + len];
            let vals = &values[start..start + len];
            let result = match family {
                Family::V4 => {
                    let k: Vec<Svc4Key> = run
                        .iter()
                        .filter_map(|k| match k {
                            ServiceKey::V4(k) => Some(*k),
                            ServiceKey::V6(_) => None,
                        })
                        .collect();
                    self.put_services(&k, vals)
                }
                Family::V6 => {
                    let k: Vec<Svc6Key> = run
                        .iter()
                        .filter_map(|k| match k {
                            ServiceKey::V6(k) => Some(*k),
                            ServiceKey::V4(_) => None,
                        })
                        .collect();
                    self.put_services6(&k, vals)
                }
            };
            result.map_err(|(n, e)| (start + n, e))?;
            start += len;
        }
        Ok(())
    }
    fn del_service_entry(&mut self, key: &ServiceKey) -> Result<(), StoreError> {
        match key {
            ServiceKey::V4(k) => self.del_service(k),
            ServiceKey::V6(k) => self.del_service6(k),
        }
    }
    /// Writes `ids[i] -> values[i]` in order, each to its family's backends map, as
    /// [`put_service_entries`](Self::put_service_entries).
    fn put_backend_entries(
        &mut self,
        ids: &[u32],
        values: &[BackendValue],
    ) -> Result<(), (usize, StoreError)> {
        let mut start = 0;
        while start < ids.len() {
            let family = values[start].family();
            let len = values[start..]
                .iter()
                .take_while(|v| v.family() == family)
                .count();
            let run_ids = &ids[start..start + len];
            let run = &values[start..start + len];
            let result = match family {
                Family::V4 => {
                    let v: Vec<Backend4> = run
                        .iter()
                        .filter_map(|v| match v {
                            BackendValue::V4(v) => Some(*v),
                            BackendValue::V6(_) => None,
                        })
                        .collect();
                    self.put_backends(run_ids, &v)
                }
                Family::V6 => {
                    let v: Vec<Backend6> = run
                        .iter()
                        .filter_map(|v| match v {
                            BackendValue::V6(v) => Some(*v),
                            BackendValue::V4(_) => None,
                        })
                        .collect();
                    self.put_backends6(run_ids, &v)
                }
            };
            result.map_err(|(n, e)| (start + n, e))?;
            start += len;
        }
        Ok(())
    }
    fn del_backend_entry(&mut self, id: u32, family: Family) -> Result<(), StoreError> {
        match family {
            Family::V4 => self.del_backend(id),
            Family::V6 => self.del_backend6(id),
        }
    }
    fn put_revnat_entry(&mut self, id: u32, value: &RevNatValue) -> Result<(), StoreError> {
        match value {
            RevNatValue::V4(v) => self.put_revnat(id, v),
            RevNatValue::V6(v) => self.put_revnat6(id, v),
        }
    }
    fn del_revnat_entry(&mut self, id: u32, family: Family) -> Result<(), StoreError> {
        match family {
            Family::V4 => self.del_revnat(id),
            Family::V6 => self.del_revnat6(id),
        }
    }
    fn put_src_range_entry(&mut self, key: &SrcRangeEntry) -> Result<(), StoreError> {
        match key {
            SrcRangeEntry::V4(k) => self.put_src_range(k),
            SrcRangeEntry::V6(k) => self.put_src_range6(k),
        }
    }
    fn del_src_range_entry(&mut self, key: &SrcRangeEntry) -> Result<(), StoreError> {
        match key {
            SrcRangeEntry::V4(k) => self.del_src_range(k),
            SrcRangeEntry::V6(k) => self.del_src_range6(k),
        }
    }

    /// SVC_NAMES: svcctl's names (key: rev_nat_id, or NAME_KEY_UNSERVED + n).
    fn put_name(&mut self, key: u32, value: &SvcName) -> Result<(), StoreError>;
    fn del_name(&mut self, key: u32) -> Result<(), StoreError>;
    fn read_names(&self) -> Result<Vec<(u32, SvcName)>, StoreError>;
    /// SVC_SVC_STATS: a zeroed per-Service counter entry for `rev_nat_id`, created if
    /// none exists (an existing one keeps its counts: an adopted frontend's, after a
    /// restart). The programs only add to entries, never create them.
    fn put_service_stats(&mut self, rev_nat_id: u32) -> Result<(), StoreError>;
    fn del_service_stats(&mut self, rev_nat_id: u32) -> Result<(), StoreError>;
    /// The rev_nat_ids SVC_SVC_STATS has entries for.
    fn read_service_stats_ids(&self) -> Result<Vec<u32>, StoreError>;
    /// SVC_PROBLEMS: svcctl's list of the input's problems (key: index).
    fn put_problem(&mut self, key: u32, value: &ProblemText) -> Result<(), StoreError>;
    fn del_problem(&mut self, key: u32) -> Result<(), StoreError>;
    fn read_problems(&self) -> Result<Vec<(u32, ProblemText)>, StoreError>;
    /// SVC4_CLUSTERIPS: ClusterIP (network order) -> a ClusterIpUse number.
    fn put_cluster_ip(&mut self, key: u32, value: u8) -> Result<(), StoreError>;
    fn del_cluster_ip(&mut self, key: u32) -> Result<(), StoreError>;
    fn read_cluster_ips(&self) -> Result<Vec<(u32, u8)>, StoreError>;
    /// SVC4_SVC_CIDR: the service CIDRs.
    fn put_service_cidr(&mut self, key: &ServiceCidrKey) -> Result<(), StoreError>;
    fn del_service_cidr(&mut self, key: &ServiceCidrKey) -> Result<(), StoreError>;
    fn read_service_cidrs(&self) -> Result<Vec<ServiceCidrKey>, StoreError>;
    /// SVC4_SVC_RANGE: the range SVC4_CLUSTERIPS and SVC4_SVC_CIDR cover.
    fn put_unserved_range(&mut self, value: &AddrRange4) -> Result<(), StoreError>;
    fn read_unserved_range(&self) -> Result<AddrRange4, StoreError>;
    /// SVC6_CLUSTERIPS, SVC6_SVC_CIDR and SVC6_SVC_RANGE, as their IPv4 counterparts above.
    fn put_cluster_ip6(&mut self, key: Ip6, value: u8) -> Result<(), StoreError>;
    fn del_cluster_ip6(&mut self, key: Ip6) -> Result<(), StoreError>;
    fn read_cluster_ips6(&self) -> Result<Vec<(Ip6, u8)>, StoreError>;
    fn put_service_cidr6(&mut self, key: &ServiceCidr6Key) -> Result<(), StoreError>;
    fn del_service_cidr6(&mut self, key: &ServiceCidr6Key) -> Result<(), StoreError>;
    fn read_service_cidrs6(&self) -> Result<Vec<ServiceCidr6Key>, StoreError>;
    fn put_unserved_range6(&mut self, value: &AddrRange6) -> Result<(), StoreError>;
    fn read_unserved_range6(&self) -> Result<AddrRange6, StoreError>;

    /// Writes a ClusterIP to its family's map.
    fn put_cluster_ip_entry(&mut self, key: &ClusterIpKey, value: u8) -> Result<(), StoreError> {
        match key {
            ClusterIpKey::V4(k) => self.put_cluster_ip(*k, value),
            ClusterIpKey::V6(k) => self.put_cluster_ip6(*k, value),
        }
    }
    fn del_cluster_ip_entry(&mut self, key: &ClusterIpKey) -> Result<(), StoreError> {
        match key {
            ClusterIpKey::V4(k) => self.del_cluster_ip(*k),
            ClusterIpKey::V6(k) => self.del_cluster_ip6(*k),
        }
    }
    /// Both ClusterIP maps, IPv4 first.
    fn read_cluster_ip_entries(&self) -> Result<Vec<(ClusterIpKey, u8)>, StoreError> {
        let v4 = self.read_cluster_ips()?.into_iter();
        let v6 = self.read_cluster_ips6()?.into_iter();
        Ok(v4
            .map(|(k, v)| (ClusterIpKey::V4(k), v))
            .chain(v6.map(|(k, v)| (ClusterIpKey::V6(k), v)))
            .collect())
    }
    /// Writes a service CIDR to its family's trie.
    fn put_service_cidr_entry(&mut self, key: &ServiceCidrEntry) -> Result<(), StoreError> {
        match key {
            ServiceCidrEntry::V4(k) => self.put_service_cidr(k),
            ServiceCidrEntry::V6(k) => self.put_service_cidr6(k),
        }
    }
    fn del_service_cidr_entry(&mut self, key: &ServiceCidrEntry) -> Result<(), StoreError> {
        match key {
            ServiceCidrEntry::V4(k) => self.del_service_cidr(k),
            ServiceCidrEntry::V6(k) => self.del_service_cidr6(k),
        }
    }
    /// Both service CIDR tries, IPv4 first.
    fn read_service_cidr_entries(&self) -> Result<Vec<ServiceCidrEntry>, StoreError> {
        let v4 = self.read_service_cidrs()?.into_iter();
        let v6 = self.read_service_cidrs6()?.into_iter();
        Ok(v4
            .map(ServiceCidrEntry::V4)
            .chain(v6.map(ServiceCidrEntry::V6))
            .collect())
    }
}

/// The raw contents of the maps, as read at one moment (each map on its own: a map that
/// changes while it is read may show an entry twice or not at all).
#[derive(Clone, Debug, Default)]
pub struct RawMaps {
    pub services: Vec<(Svc4Key, Svc4Value)>,
    pub backends: Vec<(u32, Backend4)>,
    pub revnats: Vec<(u32, RevNat4)>,
    pub conntrack: Vec<(Ct4Key, Ct4Value)>,
    pub src_ranges: Vec<SrcRangeKey>,
    pub affinity: Vec<(Affinity4Key, Affinity4Value)>,
    pub stats: Vec<(Verdict, u64)>,
    pub names: Vec<(u32, SvcName)>,
    pub problems: Vec<(u32, ProblemText)>,
    pub cluster_ips: Vec<(u32, u8)>,
    pub service_cidrs: Vec<ServiceCidrKey>,
    pub unserved_range: AddrRange4,
    /// The IPv6 maps (SVC6_*), as their IPv4 counterparts above.
    pub cluster_ips6: Vec<(Ip6, u8)>,
    pub service_cidrs6: Vec<ServiceCidr6Key>,
    pub unserved_range6: AddrRange6,
    pub services6: Vec<(Svc6Key, Svc4Value)>,
    pub backends6: Vec<(u32, Backend6)>,
    pub revnats6: Vec<(u32, RevNat6)>,
    pub conntrack6: Vec<(Ct6Key, Ct6Value)>,
    pub src_ranges6: Vec<SrcRange6Key>,
    pub affinity6: Vec<(Affinity6Key, Affinity4Value)>,
}

/// Which of the larger maps a read of [`RawMaps`] includes. The small ones (services,
/// backends, rev-NAT, source ranges, names, ClusterIPs, service CIDRs) are always read:
/// everything that shows the maps needs them to name and filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parts {
    /// SVC4_CT and SVC6_CT.
    pub conntrack: bool,
    /// SVC4_AFFINITY and SVC6_AFFINITY.
    pub affinity: bool,
    /// SVC_STATS.
    pub stats: bool,
}

impl Parts {
    pub const ALL: Parts = Parts {
        conntrack: true,
        affinity: true,
        stats: true,
    };
    pub const NONE: Parts = Parts {
        conntrack: false,
        affinity: false,
        stats: false,
    };
}

/// A failed map call as the reconciler reports it: a full hash map refuses new keys with
/// E2BIG, which is worth its own error (and metric).
pub(super) fn store_err(map: &'static str) -> impl Fn(MapError) -> StoreError {
    move |e| {
        if let MapError::SyscallError(aya::sys::SyscallError { io_error, .. }) = &e
            && io_error.raw_os_error() == Some(libc::E2BIG)
        {
            return StoreError::Full { map };
        }
        StoreError::Other {
            map,
            message: e.to_string(),
        }
    }
}

/// Every entry of a hash map (a snapshot; the map may change under us).
pub(super) fn read_all<K: aya::Pod, V: aya::Pod>(
    map: &HashMap<MapData, K, V>,
    name: &'static str,
) -> Result<Vec<(K, V)>, StoreError> {
    // Keys deleted while we iterate show up as errors of single lookups; skip them.
    let mut out = Vec::new();
    for item in map.iter() {
        match item {
            Ok(kv) => out.push(kv),
            Err(MapError::KeyNotFound) => continue,
            Err(e) => return Err(store_err(name)(e)),
        }
    }
    Ok(out)
}

/// Writes `keys[i] -> values[i]` in order: one `BPF_MAP_UPDATE_BATCH` call, or one call
/// each on a kernel without batch operations. On failure, the prefix written and why the
/// next entry was not.
fn put_batch<K: aya::Pod + bytemuck::Pod, V: aya::Pod + bytemuck::Pod>(
    map: &mut HashMap<MapData, K, V>,
    name: &'static str,
    keys: &[K],
    values: &[V],
) -> Result<(), (usize, StoreError)> {
    if keys.len() > 1 && batch::supported() {
        let fd = aya::maps::IterableMap::map(map).fd().as_fd();
        match batch::update_batch(fd, keys, values) {
            Ok(()) => return Ok(()),
            // A kernel before 5.6 (no batch operations): one call each from now on.
            Err(f) if f.written == 0 && f.error.raw_os_error() == Some(libc::EINVAL) => {
                tracing::info!(
                    "the kernel refused a batched map update (EINVAL): writing entries one at a time"
                );
                batch::mark_unsupported();
            }
            Err(f) => {
                let error = if f.error.raw_os_error() == Some(libc::E2BIG) {
                    StoreError::Full { map: name }
                } else {
                    StoreError::Other {
                        map: name,
                        message: format!("batched update: {}", f.error),
                    }
                };
                return Err((f.written, error));
            }
        }
    }
    for (i, (k, v)) in keys.iter().zip(values).enumerate() {
        map.insert(k, v, 0).map_err(|e| (i, store_err(name)(e)))?;
    }
    Ok(())
}

/// Deleting a key that is already gone is success: the map is as we want it.
fn ignore_missing(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        other => other,
    }
}

impl MapStore for Maps {
    fn put_service(&mut self, key: &Svc4Key, value: &Svc4Value) -> Result<(), StoreError> {
        self.services
            .insert(key, value, 0)
            .map_err(store_err(map_names::SVC4_SERVICES))
    }
    fn put_services(
        &mut self,
        keys: &[Svc4Key],
        values: &[Svc4Value],
    ) -> Result<(), (usize, StoreError)> {
        put_batch(&mut self.services, map_names::SVC4_SERVICES, keys, values)
    }
    fn del_service(&mut self, key: &Svc4Key) -> Result<(), StoreError> {
        ignore_missing(self.services.remove(key)).map_err(store_err(map_names::SVC4_SERVICES))
    }
    fn put_backend(&mut self, id: u32, value: &Backend4) -> Result<(), StoreError> {
        self.backends
            .insert(id, value, 0)
            .map_err(store_err(map_names::SVC4_BACKENDS))
    }
    fn put_backends(
        &mut self,
        ids: &[u32],
        values: &[Backend4],
    ) -> Result<(), (usize, StoreError)> {
        put_batch(&mut self.backends, map_names::SVC4_BACKENDS, ids, values)
    }
    fn del_backend(&mut self, id: u32) -> Result<(), StoreError> {
        ignore_missing(self.backends.remove(&id)).map_err(store_err(map_names::SVC4_BACKENDS))
    }
    fn put_revnat(&mut self, id: u32, value: &RevNat4) -> Result<(), StoreError> {
        self.revnat
            .insert(id, value, 0)
            .map_err(store_err(map_names::SVC4_REVNAT))
    }
    fn del_revnat(&mut self, id: u32) -> Result<(), StoreError> {
        ignore_missing(self.revnat.remove(&id)).map_err(store_err(map_names::SVC4_REVNAT))
    }
    fn put_src_range(&mut self, key: &SrcRangeKey) -> Result<(), StoreError> {
        self.src_ranges
            .insert(&LpmKey::new(key.0, key.1), 1, 0)
            .map_err(store_err(map_names::SVC4_SRC_RANGE))
    }
    fn del_src_range(&mut self, key: &SrcRangeKey) -> Result<(), StoreError> {
        ignore_missing(self.src_ranges.remove(&LpmKey::new(key.0, key.1)))
            .map_err(store_err(map_names::SVC4_SRC_RANGE))
    }
    fn read_src_ranges(&self) -> Result<Vec<SrcRangeKey>, StoreError> {
        let mut out = Vec::new();
        for key in self.src_ranges.keys() {
            match key {
                Ok(k) => out.push((k.prefix_len(), k.data())),
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(store_err(map_names::SVC4_SRC_RANGE)(e)),
            }
        }
        Ok(out)
    }
    fn read_services(&self) -> Result<Vec<(Svc4Key, Svc4Value)>, StoreError> {
        read_all(&self.services, map_names::SVC4_SERVICES)
    }
    fn put_service6(&mut self, key: &Svc6Key, value: &Svc4Value) -> Result<(), StoreError> {
        self.services6
            .insert(key, value, 0)
            .map_err(store_err(map_names::SVC6_SERVICES))
    }
    fn put_services6(
        &mut self,
        keys: &[Svc6Key],
        values: &[Svc4Value],
    ) -> Result<(), (usize, StoreError)> {
        put_batch(&mut self.services6, map_names::SVC6_SERVICES, keys, values)
    }
    fn del_service6(&mut self, key: &Svc6Key) -> Result<(), StoreError> {
        ignore_missing(self.services6.remove(key)).map_err(store_err(map_names::SVC6_SERVICES))
    }
    fn put_backend6(&mut self, id: u32, value: &Backend6) -> Result<(), StoreError> {
        self.backends6
            .insert(id, value, 0)
            .map_err(store_err(map_names::SVC6_BACKENDS))
    }
    fn put_backends6(
        &mut self,
        ids: &[u32],
        values: &[Backend6],
    ) -> Result<(), (usize, StoreError)> {
        put_batch(&mut self.backends6, map_names::SVC6_BACKENDS, ids, values)
    }
    fn del_backend6(&mut self, id: u32) -> Result<(), StoreError> {
        ignore_missing(self.backends6.remove(&id)).map_err(store_err(map_names::SVC6_BACKENDS))
    }
    fn put_revnat6(&mut self, id: u32, value: &RevNat6) -> Result<(), StoreError> {
        self.revnat6
            .insert(id, value, 0)
            .map_err(store_err(map_names::SVC6_REVNAT))
    }
    fn del_revnat6(&mut self, id: u32) -> Result<(), StoreError> {
        ignore_missing(self.revnat6.remove(&id)).map_err(store_err(map_names::SVC6_REVNAT))
    }
    fn put_src_range6(&mut self, key: &SrcRange6Key) -> Result<(), StoreError> {
        self.src_ranges6
            .insert(&LpmKey::new(key.0, key.1), 1, 0)
            .map_err(store_err(map_names::SVC6_SRC_RANGE))
    }
    fn del_src_range6(&mut self, key: &SrcRange6Key) -> Result<(), StoreError> {
        ignore_missing(self.src_ranges6.remove(&LpmKey::new(key.0, key.1)))
            .map_err(store_err(map_names::SVC6_SRC_RANGE))
    }
    fn read_services6(&self) -> Result<Vec<(Svc6Key, Svc4Value)>, StoreError> {
        read_all(&self.services6, map_names::SVC6_SERVICES)
    }
    fn read_backends6(&self) -> Result<Vec<(u32, Backend6)>, StoreError> {
        read_all(&self.backends6, map_names::SVC6_BACKENDS)
    }
    fn read_revnats6(&self) -> Result<Vec<(u32, RevNat6)>, StoreError> {
        read_all(&self.revnat6, map_names::SVC6_REVNAT)
    }
    fn read_src_ranges6(&self) -> Result<Vec<SrcRange6Key>, StoreError> {
        let mut out = Vec::new();
        for key in self.src_ranges6.keys() {
            match key {
                Ok(k) => out.push((k.prefix_len(), k.data())),
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(store_err(map_names::SVC6_SRC_RANGE)(e)),
            }
        }
        Ok(out)
    }
    fn read_backends(&self) -> Result<Vec<(u32, Backend4)>, StoreError> {
        read_all(&self.backends, map_names::SVC4_BACKENDS)
    }
    fn read_revnats(&self) -> Result<Vec<(u32, RevNat4)>, StoreError> {
        read_all(&self.revnat, map_names::SVC4_REVNAT)
    }
    fn put_name(&mut self, key: u32, value: &SvcName) -> Result<(), StoreError> {
        self.names
            .insert(key, value, 0)
            .map_err(store_err(map_names::SVC_NAMES))
    }
    fn del_name(&mut self, key: u32) -> Result<(), StoreError> {
        ignore_missing(self.names.remove(&key)).map_err(store_err(map_names::SVC_NAMES))
    }
    fn read_names(&self) -> Result<Vec<(u32, SvcName)>, StoreError> {
        read_all(&self.names, map_names::SVC_NAMES)
    }
    fn put_service_stats(&mut self, rev_nat_id: u32) -> Result<(), StoreError> {
        const NAME: &str = map_names::SVC_SVC_STATS;
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| StoreError::Other {
            map: NAME,
            message: format!("{what}: {e}"),
        })?;
        let zeros = aya::maps::PerCpuValues::try_from(vec![ServiceStats::default(); cpus])
            .map_err(|e| StoreError::Other {
                map: NAME,
                message: e.to_string(),
            })?;
        // BPF_NOEXIST (include/uapi/linux/bpf.h): an entry that exists keeps its counts.
        const BPF_NOEXIST: u64 = 1;
        match self.service_stats.insert(rev_nat_id, zeros, BPF_NOEXIST) {
            Err(MapError::SyscallError(aya::sys::SyscallError { io_error, .. }))
                if io_error.raw_os_error() == Some(libc::EEXIST) =>
            {
                Ok(())
            }
            other => other.map_err(store_err(NAME)),
        }
    }
    fn del_service_stats(&mut self, rev_nat_id: u32) -> Result<(), StoreError> {
        ignore_missing(self.service_stats.remove(&rev_nat_id))
            .map_err(store_err(map_names::SVC_SVC_STATS))
    }
    fn read_service_stats_ids(&self) -> Result<Vec<u32>, StoreError> {
        let mut out = Vec::new();
        for key in self.service_stats.keys() {
            match key {
                Ok(k) => out.push(k),
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(store_err(map_names::SVC_SVC_STATS)(e)),
            }
        }
        Ok(out)
    }
    fn put_problem(&mut self, key: u32, value: &ProblemText) -> Result<(), StoreError> {
        self.problems
            .insert(key, value, 0)
            .map_err(store_err(map_names::SVC_PROBLEMS))
    }
    fn del_problem(&mut self, key: u32) -> Result<(), StoreError> {
        ignore_missing(self.problems.remove(&key)).map_err(store_err(map_names::SVC_PROBLEMS))
    }
    fn read_problems(&self) -> Result<Vec<(u32, ProblemText)>, StoreError> {
        read_all(&self.problems, map_names::SVC_PROBLEMS)
    }
    fn put_cluster_ip(&mut self, key: u32, value: u8) -> Result<(), StoreError> {
        self.cluster_ips
            .insert(key, value, 0)
            .map_err(store_err(map_names::SVC4_CLUSTERIPS))
    }
    fn del_cluster_ip(&mut self, key: u32) -> Result<(), StoreError> {
        ignore_missing(self.cluster_ips.remove(&key)).map_err(store_err(map_names::SVC4_CLUSTERIPS))
    }
    fn read_cluster_ips(&self) -> Result<Vec<(u32, u8)>, StoreError> {
        read_all(&self.cluster_ips, map_names::SVC4_CLUSTERIPS)
    }
    fn put_service_cidr(&mut self, key: &ServiceCidrKey) -> Result<(), StoreError> {
        self.service_cidrs
            .insert(&LpmKey::new(key.0, key.1), svc_common::SVC_CIDR_DROP, 0)
            .map_err(store_err(map_names::SVC4_SVC_CIDR))
    }
    fn del_service_cidr(&mut self, key: &ServiceCidrKey) -> Result<(), StoreError> {
        ignore_missing(self.service_cidrs.remove(&LpmKey::new(key.0, key.1)))
            .map_err(store_err(map_names::SVC4_SVC_CIDR))
    }
    fn read_service_cidrs(&self) -> Result<Vec<ServiceCidrKey>, StoreError> {
        let mut out = Vec::new();
        for key in self.service_cidrs.keys() {
            match key {
                Ok(k) => out.push((k.prefix_len(), k.data())),
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(store_err(map_names::SVC4_SVC_CIDR)(e)),
            }
        }
        Ok(out)
    }
    fn put_unserved_range(&mut self, value: &AddrRange4) -> Result<(), StoreError> {
        self.unserved_range
            .set(0, value, 0)
            .map_err(store_err(map_names::SVC4_SVC_RANGE))
    }
    fn read_unserved_range(&self) -> Result<AddrRange4, StoreError> {
        self.unserved_range
            .get(&0, 0)
            .map_err(store_err(map_names::SVC4_SVC_RANGE))
    }
    fn put_cluster_ip6(&mut self, key: Ip6, value: u8) -> Result<(), StoreError> {
        self.cluster_ips6
            .insert(key, value, 0)
            .map_err(store_err(map_names::SVC6_CLUSTERIPS))
    }
    fn del_cluster_ip6(&mut self, key: Ip6) -> Result<(), StoreError> {
        ignore_missing(self.cluster_ips6.remove(&key))
            .map_err(store_err(map_names::SVC6_CLUSTERIPS))
    }
    fn read_cluster_ips6(&self) -> Result<Vec<(Ip6, u8)>, StoreError> {
        read_all(&self.cluster_ips6, map_names::SVC6_CLUSTERIPS)
    }
    fn put_service_cidr6(&mut self, key: &ServiceCidr6Key) -> Result<(), StoreError> {
        self.service_cidrs6
            .insert(&LpmKey::new(key.0, key.1), svc_common::SVC_CIDR_DROP, 0)
            .map_err(store_err(map_names::SVC6_SVC_CIDR))
    }
    fn del_service_cidr6(&mut self, key: &ServiceCidr6Key) -> Result<(), StoreError> {
        ignore_missing(self.service_cidrs6.remove(&LpmKey::new(key.0, key.1)))
            .map_err(store_err(map_names::SVC6_SVC_CIDR))
    }
    fn read_service_cidrs6(&self) -> Result<Vec<ServiceCidr6Key>, StoreError> {
        let mut out = Vec::new();
        for key in self.service_cidrs6.keys() {
            match key {
                Ok(k) => out.push((k.prefix_len(), k.data())),
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(store_err(map_names::SVC6_SVC_CIDR)(e)),
            }
        }
        Ok(out)
    }
    fn put_unserved_range6(&mut self, value: &AddrRange6) -> Result<(), StoreError> {
        self.unserved_range6
            .set(0, value, 0)
            .map_err(store_err(map_names::SVC6_SVC_RANGE))
    }
    fn read_unserved_range6(&self) -> Result<AddrRange6, StoreError> {
        self.unserved_range6
            .get(&0, 0)
            .map_err(store_err(map_names::SVC6_SVC_RANGE))
    }
}

#[cfg(test)]
pub use fake::FakeMaps;

#[cfg(test)]
mod fake {
    use std::collections::{BTreeMap, BTreeSet};

    use svc_common::{
        AddrRange4, AddrRange6, Backend4, Backend6, Ip6, ProblemText, RevNat4, RevNat6,
        SCOPE_LOCAL, Svc4Key, Svc4Value, Svc6Key, SvcName, map_names,
    };

    use super::{MapStore, RawMaps, StoreError};
    use crate::dataplane::layout::{
        self, ServiceCidr6Key, ServiceCidrKey, SrcRange6Key, SrcRangeKey,
    };

    /// An in-memory MapStore with the kernel's capacity behaviour, for unit tests.
    #[derive(Debug, Default, Clone)]
    pub struct FakeMaps {
        pub services: BTreeMap<Svc4Key, Svc4Value>,
        pub backends: BTreeMap<u32, Backend4>,
        pub revnats: BTreeMap<u32, RevNat4>,
        pub src_ranges: BTreeSet<SrcRangeKey>,
        pub names: BTreeMap<u32, SvcName>,
        pub problems: BTreeMap<u32, ProblemText>,
        pub cluster_ips: BTreeMap<u32, u8>,
        pub service_cidrs: BTreeSet<ServiceCidrKey>,
        /// SVC4_SVC_RANGE's entry (zeroed, as the kernel's array starts).
        pub unserved_range: AddrRange4,
        /// The IPv6 maps. Their writes are logged as the IPv4 ones with a `6` after the
        /// map's word (`put svc6 slot 1 ...`).
        pub services6: BTreeMap<Svc6Key, Svc4Value>,
        pub backends6: BTreeMap<u32, Backend6>,
        pub revnats6: BTreeMap<u32, RevNat6>,
        pub src_ranges6: BTreeSet<SrcRange6Key>,
        pub cluster_ips6: BTreeMap<Ip6, u8>,
        pub service_cidrs6: BTreeSet<ServiceCidr6Key>,
        /// SVC6_SVC_RANGE's entry (zeroed, as the kernel's array starts).
        pub unserved_range6: AddrRange6,
        /// SVC_SVC_STATS's keys (the counts live in the kernel only). Their writes are
        /// not logged: a counter entry is no packet hazard, and the write-order tests
        /// compare the datapath's writes.
        pub service_stats: BTreeSet<u32>,
        /// Capacity of the names map (None: unlimited).
        pub names_capacity: Option<usize>,
        /// Capacity of the services map (None: unlimited).
        pub services_capacity: Option<usize>,
        /// Every write, in order, for checking the write order.
        pub log: Vec<String>,
        /// Run after every write on what the fake then holds; what it returns is recorded
        /// in `violations` with the write that caused it. Tests of the reconciler set it to
        /// the packet-hazard check, so the write order is checked write by write.
        pub after_every_write: Option<fn(&RawMaps) -> Vec<String>>,
        /// What `after_every_write` found, as `after <write>: <problem>`.
        pub violations: Vec<String>,
    }

    impl FakeMaps {
        /// Records a write and checks the state it left.
        fn wrote(&mut self, what: String) {
            if let Some(check) = self.after_every_write {
                for problem in check(&self.raw()) {
                    self.violations.push(format!("after {what:?}: {problem}"));
                }
            }
            self.log.push(what);
        }

        /// What the fake holds, as a read of the real maps returns it.
        pub fn raw(&self) -> RawMaps {
            RawMaps {
                services: self.services.iter().map(|(k, v)| (*k, *v)).collect(),
                backends: self.backends.iter().map(|(k, v)| (*k, *v)).collect(),
                revnats: self.revnats.iter().map(|(k, v)| (*k, *v)).collect(),
                src_ranges: self.src_ranges.iter().copied().collect(),
                names: self.names.iter().map(|(k, v)| (*k, *v)).collect(),
                problems: self.problems.iter().map(|(k, v)| (*k, *v)).collect(),
                cluster_ips: self.cluster_ips.iter().map(|(k, v)| (*k, *v)).collect(),
                service_cidrs: self.service_cidrs.iter().copied().collect(),
                unserved_range: self.unserved_range,
                services6: self.services6.iter().map(|(k, v)| (*k, *v)).collect(),
                backends6: self.backends6.iter().map(|(k, v)| (*k, *v)).collect(),
                revnats6: self.revnats6.iter().map(|(k, v)| (*k, *v)).collect(),
                src_ranges6: self.src_ranges6.iter().copied().collect(),
                cluster_ips6: self.cluster_ips6.iter().map(|(k, v)| (*k, *v)).collect(),
                service_cidrs6: self.service_cidrs6.iter().copied().collect(),
                unserved_range6: self.unserved_range6,
                ..Default::default()
            }
        }
    }

    impl MapStore for FakeMaps {
        fn put_service(&mut self, key: &Svc4Key, value: &Svc4Value) -> Result<(), StoreError> {
            if let Some(cap) = self.services_capacity
                && !self.services.contains_key(key)
                && self.services.len() >= cap
            {
                return Err(StoreError::Full {
                    map: map_names::SVC4_SERVICES,
                });
            }
            let scope = if key.scope == SCOPE_LOCAL {
                " local"
            } else {
                ""
            };
            self.services.insert(*key, *value);
            self.wrote(format!(
                "put svc{scope} slot {} count {} backend {}",
                key.slot, value.count, value.backend_id
            ));
            Ok(())
        }
        fn del_service(&mut self, key: &Svc4Key) -> Result<(), StoreError> {
            let scope = if key.scope == SCOPE_LOCAL {
                " local"
            } else {
                ""
            };
            self.services.remove(key);
            self.wrote(format!("del svc{scope} slot {}", key.slot));
            Ok(())
        }
        fn put_backend(&mut self, id: u32, value: &Backend4) -> Result<(), StoreError> {
            self.backends.insert(id, *value);
            self.wrote(format!("put backend {id}"));
            Ok(())
        }
        fn del_backend(&mut self, id: u32) -> Result<(), StoreError> {
            self.backends.remove(&id);
            self.wrote(format!("del backend {id}"));
            Ok(())
        }
        fn put_revnat(&mut self, id: u32, value: &RevNat4) -> Result<(), StoreError> {
            self.revnats.insert(id, *value);
            self.wrote(format!("put revnat {id}"));
            Ok(())
        }
        fn del_revnat(&mut self, id: u32) -> Result<(), StoreError> {
            self.revnats.remove(&id);
            self.wrote(format!("del revnat {id}"));
            Ok(())
        }
        fn put_src_range(&mut self, key: &SrcRangeKey) -> Result<(), StoreError> {
            self.src_ranges.insert(*key);
            self.wrote(format!("put range /{}", key.0));
            Ok(())
        }
        fn del_src_range(&mut self, key: &SrcRangeKey) -> Result<(), StoreError> {
            self.src_ranges.remove(key);
            self.wrote(format!("del range /{}", key.0));
            Ok(())
        }
        fn read_services(&self) -> Result<Vec<(Svc4Key, Svc4Value)>, StoreError> {
            Ok(self.services.iter().map(|(k, v)| (*k, *v)).collect())
        }
        fn read_src_ranges(&self) -> Result<Vec<SrcRangeKey>, StoreError> {
            Ok(self.src_ranges.iter().copied().collect())
        }
        fn read_backends(&self) -> Result<Vec<(u32, Backend4)>, StoreError> {
            Ok(self.backends.iter().map(|(k, v)| (*k, *v)).collect())
        }
        fn read_revnats(&self) -> Result<Vec<(u32, RevNat4)>, StoreError> {
            Ok(self.revnats.iter().map(|(k, v)| (*k, *v)).collect())
        }
        fn put_name(&mut self, key: u32, value: &SvcName) -> Result<(), StoreError> {
            if let Some(cap) = self.names_capacity
                && !self.names.contains_key(&key)
                && self.names.len() >= cap
            {
                return Err(StoreError::Full {
                    map: map_names::SVC_NAMES,
                });
            }
            self.names.insert(key, *value);
            self.wrote(format!("put name {key:#x}"));
            Ok(())
        }
        fn put_service_stats(&mut self, rev_nat_id: u32) -> Result<(), StoreError> {
            self.service_stats.insert(rev_nat_id);
            Ok(())
        }
        fn del_service_stats(&mut self, rev_nat_id: u32) -> Result<(), StoreError> {
            self.service_stats.remove(&rev_nat_id);
            Ok(())
        }
        fn read_service_stats_ids(&self) -> Result<Vec<u32>, StoreError> {
            Ok(self.service_stats.iter().copied().collect())
        }
        fn del_name(&mut self, key: u32) -> Result<(), StoreError> {
            self.names.remove(&key);
            self.wrote(format!("del name {key:#x}"));
            Ok(())
        }
        fn read_names(&self) -> Result<Vec<(u32, SvcName)>, StoreError> {
            Ok(self.names.iter().map(|(k, v)| (*k, *v)).collect())
        }
        fn put_problem(&mut self, key: u32, value: &ProblemText) -> Result<(), StoreError> {
            self.problems.insert(key, *value);
            self.wrote(format!("put problem {key}"));
            Ok(())
        }
        fn del_problem(&mut self, key: u32) -> Result<(), StoreError> {
            self.problems.remove(&key);
            self.wrote(format!("del problem {key}"));
            Ok(())
        }
        fn read_problems(&self) -> Result<Vec<(u32, ProblemText)>, StoreError> {
            Ok(self.problems.iter().map(|(k, v)| (*k, *v)).collect())
        }
        fn put_cluster_ip(&mut self, key: u32, value: u8) -> Result<(), StoreError> {
            self.cluster_ips.insert(key, value);
            self.wrote(format!("put clusterip {}", layout::cluster_ip_of(key)));
            Ok(())
        }
        fn del_cluster_ip(&mut self, key: u32) -> Result<(), StoreError> {
            self.cluster_ips.remove(&key);
            self.wrote(format!("del clusterip {}", layout::cluster_ip_of(key)));
            Ok(())
        }
        fn read_cluster_ips(&self) -> Result<Vec<(u32, u8)>, StoreError> {
            Ok(self.cluster_ips.iter().map(|(k, v)| (*k, *v)).collect())
        }
        fn put_service_cidr(&mut self, key: &ServiceCidrKey) -> Result<(), StoreError> {
            self.service_cidrs.insert(*key);
            self.wrote(format!("put cidr {}", cidr_text(key)));
            Ok(())
        }
        fn del_service_cidr(&mut self, key: &ServiceCidrKey) -> Result<(), StoreError> {
            self.service_cidrs.remove(key);
            self.wrote(format!("del cidr {}", cidr_text(key)));
            Ok(())
        }
        fn read_service_cidrs(&self) -> Result<Vec<ServiceCidrKey>, StoreError> {
            Ok(self.service_cidrs.iter().copied().collect())
        }
        fn put_unserved_range(&mut self, value: &AddrRange4) -> Result<(), StoreError> {
            self.unserved_range = *value;
            self.wrote(format!(
                "put range {}-{}",
                std::net::Ipv4Addr::from(value.lo),
                std::net::Ipv4Addr::from(value.hi)
            ));
            Ok(())
        }
        fn read_unserved_range(&self) -> Result<AddrRange4, StoreError> {
            Ok(self.unserved_range)
        }
        fn put_service6(&mut self, key: &Svc6Key, value: &Svc4Value) -> Result<(), StoreError> {
            let scope = if key.scope == SCOPE_LOCAL {
                " local"
            } else {
                ""
            };
            self.services6.insert(*key, *value);
            self.wrote(format!(
                "put svc6{scope} slot {} count {} backend {}",
                key.slot, value.count, value.backend_id
            ));
            Ok(())
        }
        fn del_service6(&mut self, key: &Svc6Key) -> Result<(), StoreError> {
            let scope = if key.scope == SCOPE_LOCAL {
                " local"
            } else {
                ""
            };
            self.services6.remove(key);
            self.wrote(format!("del svc6{scope} slot {}", key.slot));
            Ok(())
        }
        fn put_backend6(&mut self, id: u32, value: &Backend6) -> Result<(), StoreError> {
            self.backends6.insert(id, *value);
            self.wrote(format!("put backend6 {id}"));
            Ok(())
        }
        fn del_backend6(&mut self, id: u32) -> Result<(), StoreError> {
            self.backends6.remove(&id);
            self.wrote(format!("del backend6 {id}"));
            Ok(())
        }
        fn put_revnat6(&mut self, id: u32, value: &RevNat6) -> Result<(), StoreError> {
            self.revnats6.insert(id, *value);
            self.wrote(format!("put revnat6 {id}"));
            Ok(())
        }
        fn del_revnat6(&mut self, id: u32) -> Result<(), StoreError> {
            self.revnats6.remove(&id);
            self.wrote(format!("del revnat6 {id}"));
            Ok(())
        }
        fn put_src_range6(&mut self, key: &SrcRange6Key) -> Result<(), StoreError> {
            self.src_ranges6.insert(*key);
            self.wrote(format!("put range6 /{}", key.0));
            Ok(())
        }
        fn del_src_range6(&mut self, key: &SrcRange6Key) -> Result<(), StoreError> {
            self.src_ranges6.remove(key);
            self.wrote(format!("del range6 /{}", key.0));
            Ok(())
        }
        fn read_services6(&self) -> Result<Vec<(Svc6Key, Svc4Value)>, StoreError> {
            Ok(self.services6.iter().map(|(k, v)| (*k, *v)).collect())
        }
        fn read_backends6(&self) -> Result<Vec<(u32, Backend6)>, StoreError> {
            Ok(self.backends6.iter().map(|(k, v)| (*k, *v)).collect())
        }
        fn read_revnats6(&self) -> Result<Vec<(u32, RevNat6)>, StoreError> {
            Ok(self.revnats6.iter().map(|(k, v)| (*k, *v)).collect())
        }
        fn read_src_ranges6(&self) -> Result<Vec<SrcRange6Key>, StoreError> {
            Ok(self.src_ranges6.iter().copied().collect())
        }
        fn put_cluster_ip6(&mut self, key: Ip6, value: u8) -> Result<(), StoreError> {
            self.cluster_ips6.insert(key, value);
            self.wrote(format!("put clusterip6 {}", layout::cluster_ip6_of(key)));
            Ok(())
        }
        fn del_cluster_ip6(&mut self, key: Ip6) -> Result<(), StoreError> {
            self.cluster_ips6.remove(&key);
            self.wrote(format!("del clusterip6 {}", layout::cluster_ip6_of(key)));
            Ok(())
        }
        fn read_cluster_ips6(&self) -> Result<Vec<(Ip6, u8)>, StoreError> {
            Ok(self.cluster_ips6.iter().map(|(k, v)| (*k, *v)).collect())
        }
        fn put_service_cidr6(&mut self, key: &ServiceCidr6Key) -> Result<(), StoreError> {
            self.service_cidrs6.insert(*key);
            self.wrote(format!("put cidr6 {}", cidr6_text(key)));
            Ok(())
        }
        fn del_service_cidr6(&mut self, key: &ServiceCidr6Key) -> Result<(), StoreError> {
            self.service_cidrs6.remove(key);
            self.wrote(format!("del cidr6 {}", cidr6_text(key)));
            Ok(())
        }
        fn read_service_cidrs6(&self) -> Result<Vec<ServiceCidr6Key>, StoreError> {
            Ok(self.service_cidrs6.iter().copied().collect())
        }
        fn put_unserved_range6(&mut self, value: &AddrRange6) -> Result<(), StoreError> {
            self.unserved_range6 = *value;
            self.wrote(format!("put range6 {}", range6_text(value)));
            Ok(())
        }
        fn read_unserved_range6(&self) -> Result<AddrRange6, StoreError> {
            Ok(self.unserved_range6)
        }
    }

    fn cidr6_text(key: &ServiceCidr6Key) -> String {
        layout::service_cidr6_of(key).map_or_else(|| format!("{key:?}"), |c| c.to_string())
    }

    /// `fd00::1-fd00::ffff`, or `empty`.
    fn range6_text(r: &AddrRange6) -> String {
        if *r == AddrRange6::EMPTY {
            return "empty".to_string();
        }
        let ip =
            |h: [u64; 2]| std::net::Ipv6Addr::from((u128::from(h[0]) << 64) | u128::from(h[1]));
        format!("{}-{}", ip(r.lo), ip(r.hi))
    }

    fn cidr_text(key: &ServiceCidrKey) -> String {
        layout::service_cidr_of(key).map_or_else(|| format!("{key:?}"), |c| c.to_string())
    }
}
