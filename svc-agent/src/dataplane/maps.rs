//! Typed handles on every map ([`Maps`]) and what each map must look like ([`MAP_SPECS`]),
//! both derived from svc-common's list of maps (`for_each_map!`), so the list is written
//! once for the kernel side and for userspace. Also: the checks that refuse pins of
//! another layout, opening the pins for svcctl, reading every map ([`RawMaps`]) and how
//! full each map is ([`map_usage`]).
use std::{mem::size_of, os::fd::AsFd as _, path::Path};

use aya::maps::{
    Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, PerCpuHashMap, RingBuf,
};
use svc_common::{
    Affinity4Key, Affinity4Value, Affinity6Key, Ct4Key, Ct4Value, Ct6Key, Ct6Value,
    DatapathConfig4, ServiceStats, Verdict, map_names,
};

use super::{
    DataplaneError, NotPinnedWhy, links, map_err,
    store::{MapStore as _, Parts, RawMaps, StoreError, read_all, store_err},
};
use crate::dataplane::DatapathConfig;

/// How the agent sizes a map at load time (see `for_each_map!`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sizing {
    /// --lb-map-max.
    Lb,
    /// --lb-map-max plus room for the Services that get no entries.
    Names,
    /// --ct-map-max.
    Ct,
    /// The default of the object file.
    Fixed,
}

/// What a map must look like; checked against existing pins before they are reused,
/// because aya reuses a pin without comparing its attributes (aya #837). `max_entries` is
/// the default; [`MapSizes`] sets the sizable ones.
#[derive(Debug)]
pub struct MapSpec {
    pub name: &'static str,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub sizing: Sizing,
}

macro_rules! agent_maps {
    ($($(#[doc = $doc:literal])* $field:ident: $name:ident = $kind:ident<$($t:ty),*>,
        size $size:expr, sized by $sizing:ident;)*) => {
        /// Typed handles on every map.
        pub struct Maps {
            $($(#[doc = $doc])* pub $field: agent_maps!(@type $kind<$($t),*>),)*
        }

        /// Every map, in svc-common's order.
        pub const MAP_SPECS: &[MapSpec] = &[$(
            MapSpec {
                name: map_names::$name,
                key_size: agent_maps!(@key_size $kind<$($t),*>),
                value_size: agent_maps!(@value_size $kind<$($t),*>),
                max_entries: $size,
                sizing: agent_maps!(@sizing $sizing),
            },
        )*];

        impl Maps {
            /// The handles, from the maps `take` hands out by name.
            pub(super) fn from_maps(
                mut take: impl FnMut(&'static str) -> Result<Map, DataplaneError>,
            ) -> Result<Maps, DataplaneError> {
                Ok(Maps {
                    $($field: take(map_names::$name)?
                        .try_into()
                        .map_err(map_err(map_names::$name))?,)*
                })
            }
        }
    };
    // aya's userspace HashMap also opens LRU hash maps.
    (@type hash<$k:ty, $v:ty>) => { HashMap<MapData, $k, $v> };
    (@type lru<$k:ty, $v:ty>) => { HashMap<MapData, $k, $v> };
    (@type lpm<$k:ty, $v:ty>) => { LpmTrie<MapData, $k, $v> };
    (@type array<$v:ty>) => { Array<MapData, $v> };
    (@type percpu_array<$v:ty>) => { PerCpuArray<MapData, $v> };
    // Opening it maps the ring's pages (svcctl monitor reads them); the agent never reads.
    (@type ringbuf<>) => { RingBuf<MapData> };
    (@type percpu_hash<$k:ty, $v:ty>) => { PerCpuHashMap<MapData, $k, $v> };
    (@key_size hash<$k:ty, $v:ty>) => { size_of::<$k>() as u32 };
    (@key_size lru<$k:ty, $v:ty>) => { size_of::<$k>() as u32 };
    // An LPM trie key starts with its 32-bit prefix length.
    (@key_size lpm<$k:ty, $v:ty>) => { 4 + size_of::<$k>() as u32 };
    (@key_size array<$v:ty>) => { 4 };
    (@key_size percpu_array<$v:ty>) => { 4 };
    // A ring buffer has neither keys nor values; its max_entries is its size in bytes.
    (@key_size ringbuf<>) => { 0 };
    (@value_size ringbuf<>) => { 0 };
    (@key_size percpu_hash<$k:ty, $v:ty>) => { size_of::<$k>() as u32 };
    (@value_size $kind:ident<$k:ty, $v:ty>) => { size_of::<$v>() as u32 };
    (@value_size $kind:ident<$v:ty>) => { size_of::<$v>() as u32 };
    (@sizing lb) => { Sizing::Lb };
    (@sizing names) => { Sizing::Names };
    (@sizing ct) => { Sizing::Ct };
    (@sizing fixed) => { Sizing::Fixed };
}

svc_common::for_each_map!(agent_maps);

/// How many entries the sizable maps hold (the agent's --lb-map-max and --ct-map-max).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapSizes {
    /// SVC4_SERVICES, SVC4_BACKENDS, SVC4_REVNAT, their SVC6_* counterparts (and
    /// SVC_NAMES, plus room for the unserved Services).
    pub lb: u32,
    /// SVC4_CT and SVC6_CT (two entries per flow).
    pub ct: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        MapSizes {
            lb: svc_common::DEFAULT_LB_MAP_MAX,
            ct: svc_common::CT4_MAP_SIZE,
        }
    }
}

impl MapSizes {
    /// The max_entries `spec`'s map gets.
    pub fn max_entries(&self, spec: &MapSpec) -> u32 {
        match spec.sizing {
            Sizing::Lb => self.lb,
            Sizing::Names => self.lb.saturating_add(svc_common::NAMES_UNSERVED_MAX),
            Sizing::Ct => self.ct,
            Sizing::Fixed => spec.max_entries,
        }
    }
}

/// Checks a pin against `spec`; `max_entries`: what it must hold (None: any size, for
/// readers such as svcctl).
pub(super) fn check_pin(
    dir: &Path,
    spec: &MapSpec,
    max_entries: Option<u32>,
) -> Result<(), DataplaneError> {
    let path = dir.join(spec.name);
    if !path.exists() {
        return Ok(());
    }
    let data = MapData::from_pin(&path).map_err(map_err(spec.name))?;
    let info = data.info().map_err(map_err(spec.name))?;
    let mut checks = vec![
        ("key size", info.key_size(), spec.key_size),
        ("value size", info.value_size(), spec.value_size),
    ];
    if let Some(max) = max_entries {
        checks.push(("max entries", info.max_entries(), max));
    }
    for (what, pinned, expected) in checks {
        if pinned != expected {
            return Err(DataplaneError::IncompatiblePin {
                path,
                what,
                pinned,
                expected,
            });
        }
    }
    Ok(())
}

/// The maps of this build missing in `dir`; an error if none is pinned at all, with the
/// likely reason (no directory, no bpffs here, an empty directory). A pin that cannot be
/// looked at (EACCES) is that error, never "nothing is pinned".
pub(super) fn pinned_maps(dir: &Path) -> Result<Vec<&'static str>, DataplaneError> {
    let mut missing = Vec::new();
    for spec in MAP_SPECS {
        let path = dir.join(spec.name);
        match std::fs::symlink_metadata(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing.push(spec.name),
            Err(source) => return Err(DataplaneError::Open { path, source }),
        }
    }
    if missing.len() < MAP_SPECS.len() {
        return Ok(missing);
    }
    let (found, on_bpffs) = super::loader::bpffs_of(dir)?;
    let why = if !on_bpffs {
        NotPinnedWhy::NoBpffs { mount: found }
    } else if found != dir {
        NotPinnedWhy::NoDir
    } else {
        NotPinnedWhy::Empty
    };
    Err(DataplaneError::NotPinned {
        dir: dir.to_path_buf(),
        why,
    })
}

/// Every map of this build is pinned in `dir` (see [`pinned_maps`]).
fn check_pinned(dir: &Path) -> Result<(), DataplaneError> {
    let missing = pinned_maps(dir)?;
    if missing.is_empty() {
        return Ok(());
    }
    Err(DataplaneError::MissingMaps {
        dir: dir.to_path_buf(),
        missing,
    })
}

/// Equal sizes do not make equal layouts: the pins must also carry this build's
/// LAYOUT_VERSION in SVC_CONFIG. Pins without SVC_CONFIG come from before the version was
/// recorded. Nothing pinned at all is fine.
pub(super) fn check_layout(dir: &Path) -> Result<(), DataplaneError> {
    const CONFIG: &str = map_names::SVC_CONFIG;
    let config = dir.join(CONFIG);
    if !config.exists() {
        return match MAP_SPECS.iter().find(|s| dir.join(s.name).exists()) {
            Some(_) => Err(DataplaneError::IncompatibleLayout {
                dir: dir.to_path_buf(),
                pinned: None,
            }),
            None => Ok(()),
        };
    }
    let map: Array<MapData, DatapathConfig4> =
        Map::from_map_data(MapData::from_pin(&config).map_err(map_err(CONFIG))?)
            .and_then(|m| m.try_into())
            .map_err(map_err(CONFIG))?;
    let raw = map.get(&0, 0).map_err(map_err(CONFIG))?;
    // Zero: the map was created but not written yet (an agent stopped while loading).
    if raw.layout_version != svc_common::LAYOUT_VERSION && raw.layout_version != 0 {
        return Err(DataplaneError::IncompatibleLayout {
            dir: dir.to_path_buf(),
            pinned: Some(raw.layout_version),
        });
    }
    Ok(())
}

impl Maps {
    /// Opens the maps a running (or exited) agent pinned under `dir`, checking each
    /// against this build's layout. Used by svcctl; needs no agent process.
    pub fn open_pinned(dir: &Path) -> Result<Maps, DataplaneError> {
        let missing = pinned_maps(dir)?;
        // A pin of another layout says more than the maps that are missing next to it.
        for spec in MAP_SPECS {
            check_pin(dir, spec, None)?;
        }
        if !missing.is_empty() {
            return Err(DataplaneError::MissingMaps {
                dir: dir.to_path_buf(),
                missing,
            });
        }
        check_layout(dir)?;
        let open = |name: &'static str| -> Result<Map, DataplaneError> {
            let data = MapData::from_pin(dir.join(name)).map_err(map_err(name))?;
            Map::from_map_data(data).map_err(map_err(name))
        };
        Self::from_maps(open)
    }

    /// Verdict counters summed over CPUs, in `Verdict::ALL` order.
    pub fn verdict_totals(&self) -> Result<Vec<(Verdict, u64)>, DataplaneError> {
        Verdict::ALL
            .iter()
            .map(|v| {
                let per_cpu = self
                    .stats
                    .get(&(*v as u32), 0)
                    .map_err(map_err(map_names::SVC_STATS))?;
                Ok((*v, per_cpu.iter().sum()))
            })
            .collect()
    }

    /// The per-Service counters (SVC_SVC_STATS) summed over CPUs, by rev_nat_id, in id
    /// order. Entries deleted while we read (a Service removed) are left out.
    pub fn service_stats_totals(&self) -> Result<Vec<(u32, ServiceStats)>, DataplaneError> {
        let mut out = Vec::new();
        for item in self.service_stats.iter() {
            match item {
                Ok((id, per_cpu)) => {
                    let mut total = ServiceStats::default();
                    for v in per_cpu.iter() {
                        total.add(v);
                    }
                    out.push((id, total));
                }
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(map_err(map_names::SVC_SVC_STATS)(e)),
            }
        }
        out.sort_by_key(|(id, _)| *id);
        Ok(out)
    }

    /// The configuration the live programs were loaded with (written by the agent).
    pub fn read_config(&self) -> Result<DatapathConfig, DataplaneError> {
        let raw = self
            .config
            .get(&0, 0)
            .map_err(map_err(map_names::SVC_CONFIG))?;
        let max = |m: &MapData, name| m.info().map(|i| i.max_entries()).map_err(map_err(name));
        let sizes = MapSizes {
            lb: max(
                aya::maps::IterableMap::map(&self.services),
                map_names::SVC4_SERVICES,
            )?,
            ct: max(aya::maps::IterableMap::map(&self.ct), map_names::SVC4_CT)?,
        };
        let cidrs = self.read_pod_cidrs().map_err(DataplaneError::Read)?;
        Ok(DatapathConfig::from_raw(&raw, cidrs, sizes))
    }

    /// Every conntrack entry (a snapshot; the LRU map changes under us).
    pub fn read_conntrack(&self) -> Result<Vec<(Ct4Key, Ct4Value)>, StoreError> {
        read_all(&self.ct, map_names::SVC4_CT)
    }

    /// Every session affinity entry (a snapshot; the LRU map changes under us).
    pub fn read_affinity(&self) -> Result<Vec<(Affinity4Key, Affinity4Value)>, StoreError> {
        read_all(&self.affinity, map_names::SVC4_AFFINITY)
    }

    /// Every IPv6 conntrack entry (a snapshot).
    pub fn read_conntrack6(&self) -> Result<Vec<(Ct6Key, Ct6Value)>, StoreError> {
        read_all(&self.ct6, map_names::SVC6_CT)
    }

    /// Every IPv6 session affinity entry (a snapshot).
    pub fn read_affinity6(&self) -> Result<Vec<(Affinity6Key, Affinity4Value)>, StoreError> {
        read_all(&self.affinity6, map_names::SVC6_AFFINITY)
    }

    /// Reads the maps `parts` asks for, and the small ones; what is not read is empty.
    pub fn read_raw(&self, parts: Parts) -> Result<RawMaps, DataplaneError> {
        let store = |e: StoreError| DataplaneError::Read(e);
        Ok(RawMaps {
            services: self.read_services().map_err(store)?,
            backends: self.read_backends().map_err(store)?,
            revnats: self.read_revnats().map_err(store)?,
            conntrack: if parts.conntrack {
                self.read_conntrack().map_err(store)?
            } else {
                Vec::new()
            },
            src_ranges: self.read_src_ranges().map_err(store)?,
            affinity: if parts.affinity {
                self.read_affinity().map_err(store)?
            } else {
                Vec::new()
            },
            stats: if parts.stats {
                self.verdict_totals()?
            } else {
                Vec::new()
            },
            names: self.read_names().map_err(store)?,
            problems: self.read_problems().map_err(store)?,
            cluster_ips: self.read_cluster_ips().map_err(store)?,
            service_cidrs: self.read_service_cidrs().map_err(store)?,
            unserved_range: self.read_unserved_range().map_err(store)?,
            cluster_ips6: self.read_cluster_ips6().map_err(store)?,
            service_cidrs6: self.read_service_cidrs6().map_err(store)?,
            unserved_range6: self.read_unserved_range6().map_err(store)?,
            services6: self.read_services6().map_err(store)?,
            backends6: self.read_backends6().map_err(store)?,
            revnats6: self.read_revnats6().map_err(store)?,
            conntrack6: if parts.conntrack {
                self.read_conntrack6().map_err(store)?
            } else {
                Vec::new()
            },
            src_ranges6: self.read_src_ranges6().map_err(store)?,
            affinity6: if parts.affinity {
                self.read_affinity6().map_err(store)?
            } else {
                Vec::new()
            },
        })
    }

    /// Copies the datapath state of `live` into these (fresh) maps: services, backends,
    /// rev-NAT, source ranges, ClusterIPs, service CIDRs (all of both families), conntrack, affinity and names;
    /// not the counters. `live` is only read. For svcctl trace, which runs a second program
    /// instance on the copies.
    pub fn copy_state_from(&mut self, live: &Maps) -> Result<(), StoreError> {
        for (k, v) in live.read_services()? {
            self.put_service(&k, &v)?;
        }
        for (k, v) in live.read_backends()? {
            self.put_backend(k, &v)?;
        }
        for (k, v) in live.read_revnats()? {
            self.put_revnat(k, &v)?;
        }
        for k in live.read_src_ranges()? {
            self.put_src_range(&k)?;
        }
        for (k, v) in live.read_services6()? {
            self.put_service6(&k, &v)?;
        }
        for (k, v) in live.read_backends6()? {
            self.put_backend6(k, &v)?;
        }
        for (k, v) in live.read_revnats6()? {
            self.put_revnat6(k, &v)?;
        }
        for k in live.read_src_ranges6()? {
            self.put_src_range6(&k)?;
        }
        for (k, v) in live.read_cluster_ips()? {
            self.put_cluster_ip(k, v)?;
        }
        for k in live.read_service_cidrs()? {
            self.put_service_cidr(&k)?;
        }
        self.put_unserved_range(&live.read_unserved_range()?)?;
        for (k, v) in live.read_cluster_ips6()? {
            self.put_cluster_ip6(k, v)?;
        }
        for k in live.read_service_cidrs6()? {
            self.put_service_cidr6(&k)?;
        }
        self.put_unserved_range6(&live.read_unserved_range6()?)?;
        for (k, v) in live.read_names()? {
            self.put_name(k, &v)?;
        }
        for (k, v) in live.read_problems()? {
            self.put_problem(k, &v)?;
        }
        for (k, v) in live.read_affinity()? {
            self.affinity
                .insert(k, v, 0)
                .map_err(store_err(map_names::SVC4_AFFINITY))?;
        }
        self.set_pod_cidrs(&live.read_pod_cidrs()?)?;
        for (k, v) in live.read_conntrack()? {
            self.ct
                .insert(k, v, 0)
                .map_err(store_err(map_names::SVC4_CT))?;
        }
        for (k, v) in live.read_affinity6()? {
            self.affinity6
                .insert(k, v, 0)
                .map_err(store_err(map_names::SVC6_AFFINITY))?;
        }
        for (k, v) in live.read_conntrack6()? {
            self.ct6
                .insert(k, v, 0)
                .map_err(store_err(map_names::SVC6_CT))?;
        }
        Ok(())
    }
}

/// How full one map is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapUsage {
    pub name: &'static str,
    pub entries: u64,
    pub capacity: u64,
}

/// Counts the entries of `map` by walking its keys (BPF_MAP_GET_NEXT_KEY with a raw key
/// buffer, so one function serves every key type).
fn count_keys(map: &MapData, key_size: usize, max_entries: u32) -> Result<u64, std::io::Error> {
    use std::os::fd::AsRawFd as _;
    // union bpf_attr, the BPF_MAP_*_ELEM part; BPF_MAP_GET_NEXT_KEY is cmd 4 in
    // include/uapi/linux/bpf.h.
    #[repr(C)]
    struct NextKeyAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        next_key: u64,
    }
    const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
    let fd = map.fd().as_fd().as_raw_fd() as u32;
    let mut key = vec![0u8; key_size];
    let mut next = vec![0u8; key_size];
    let mut count = 0u64;
    let mut first = true;
    // Bounded: an LRU map can change under us, but never holds more than max_entries; twice
    // that many steps means the walk restarted (a deleted key) often enough to stop.
    let bound = 2 * u64::from(max_entries) + 16;
    while count < bound {
        let attr = NextKeyAttr {
            map_fd: fd,
            _pad: 0,
            key: if first { 0 } else { key.as_ptr() as u64 },
            next_key: next.as_mut_ptr() as u64,
        };
        // The attr points at two buffers of the map's key size that outlive the call.
        if let Err(e) = links::sys_bpf(BPF_MAP_GET_NEXT_KEY, &attr) {
            if e.raw_os_error() == Some(libc::ENOENT) {
                return Ok(count);
            }
            return Err(e);
        }
        count += 1;
        first = false;
        std::mem::swap(&mut key, &mut next);
    }
    Ok(count)
}

/// Entries and capacity of every pinned map under `dir` (for metrics). A per-CPU array
/// always holds max_entries entries.
pub fn map_usage(dir: &Path) -> Result<Vec<MapUsage>, DataplaneError> {
    check_pinned(dir)?;
    MAP_SPECS
        .iter()
        .map(|spec| {
            let path = dir.join(spec.name);
            let data = MapData::from_pin(&path).map_err(map_err(spec.name))?;
            // The pinned map's own size: the agent sets some (--lb-map-max, --ct-map-max).
            let capacity = data.info().map_err(map_err(spec.name))?.max_entries();
            let entries = if spec.name == map_names::SVC_STATS {
                u64::from(capacity)
            } else if spec.name == map_names::SVC_EVENTS {
                // A ring buffer has no keys to count (and its capacity is bytes): the
                // events waiting are svcctl monitor's business.
                0
            } else {
                count_keys(&data, spec.key_size as usize, capacity).map_err(|e| {
                    DataplaneError::Map {
                        name: spec.name,
                        source: MapError::SyscallError(aya::sys::SyscallError {
                            call: "bpf_map_get_next_key",
                            io_error: e,
                        }),
                    }
                })?
            };
            Ok(MapUsage {
                name: spec.name,
                entries,
                capacity: u64::from(capacity),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_map_is_specified_once_with_the_kernel_sizes() {
        assert_eq!(MAP_SPECS.len(), map_names::ALL.len());
        for (spec, name) in MAP_SPECS.iter().zip(map_names::ALL) {
            assert_eq!(spec.name, *name);
        }
        let spec = |n: &str| MAP_SPECS.iter().find(|s| s.name == n).unwrap();
        // An LPM trie key carries its prefix length first.
        assert_eq!(spec(map_names::SVC4_SRC_RANGE).key_size, 4 + 8);
        assert_eq!(spec(map_names::SVC4_SVC_CIDR).key_size, 4 + 4);
        assert_eq!(spec(map_names::SVC4_CLUSTERIPS).value_size, 1);
        assert_eq!(spec(map_names::SVC_STATS).value_size, 8);
        let sizes = MapSizes { lb: 1000, ct: 2000 };
        assert_eq!(sizes.max_entries(spec(map_names::SVC4_BACKENDS)), 1000);
        assert_eq!(sizes.max_entries(spec(map_names::SVC4_CLUSTERIPS)), 1000);
        assert_eq!(
            sizes.max_entries(spec(map_names::SVC_NAMES)),
            1000 + svc_common::NAMES_UNSERVED_MAX
        );
        assert_eq!(sizes.max_entries(spec(map_names::SVC4_CT)), 2000);
        assert_eq!(
            sizes.max_entries(spec(map_names::SVC4_AFFINITY)),
            svc_common::AFFINITY4_MAP_SIZE
        );
    }
}
