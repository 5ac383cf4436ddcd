//! The one reconciler: diffs the desired state against what the maps hold and writes only
//! the difference, in an order that is safe while packets flow:
//!
//! 1. new backends;
//! 2. removed frontends: slot 0 first, then their slots and rev-NAT entry (first, so a full
//!    map has room for what follows);
//! 3. rev-NAT entries of the wanted frontends;
//! 4. per frontend: backend slots 1..=n, then the frontend (slot 0, count n), then slots
//!    past n;
//! 5. backends nothing points at any more;
//! 6. names (SVC_NAMES, read by svcctl only): a frontend's name is written right after its
//!    rev-NAT entry and deleted with it; then the unserved Services' entries are written
//!    and every other name entry is deleted.
//!
//! Around them, the addresses no frontend takes (`SVC4_CLUSTERIPS`, `SVC4_SVC_CIDR` and
//! their IPv6 counterparts, each address in its family's map):
//! ClusterIPs added or changed go first, before step 1 (a packet to a new Service's other
//! ports is then rejected, never dropped as unallocated, and the Service's frontends come
//! after); after step 6, service CIDRs no longer wanted are deleted, new ones written, and
//! last the ClusterIPs no Service has any more (after their frontends: a packet in
//! between is rejected rather than dropped). With [`Removals::Keep`] neither is deleted.
//! Each family's range (`SVC4_SVC_RANGE`, `SVC6_SVC_RANGE`) is widened before the first
//! of these writes and narrowed after the last, so it always covers every entry.
//!
//! A packet therefore never reads a count that points past the slots that exist, nor a slot
//! whose backend is missing, nor finds a served ClusterIP inside a service CIDR that is not
//! an allocated one.
//!
//! The reconciler keeps a mirror of what it wrote (rebuilt from the maps at start, so a
//! restarted agent adopts existing state) and updates it only for writes that succeeded:
//! a failed write (e.g. a full map) leaves that frontend as it was, is reported, and is
//! retried on the next sync; nothing else is lost.
//!
//! Both families go through the same steps: a frontend's entries go to the maps of its
//! address's family (`SVC4_*` or `SVC6_*`), and its backends are always of that family
//! (the desired state sees to it). Backend ids and rev-NAT ids come from one allocator
//! each for both families: an id names one thing in either map, and SVC_NAMES, keyed by
//! rev_nat_id, holds the names of both.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use svc_common::{
    AddrRange4, AddrRange6, BackendState, PROBLEMS_MAP_SIZE, ProblemText, Scope, Svc4Value,
    SvcName, map_names,
};

use crate::addr::{BackendAddr, Family, Frontend};
use crate::alloc::IdAllocator;
use crate::dataplane::layout::{
    self, BackendValue, ClusterIpKey, FrontendHead, ServiceCidrEntry, ServiceKey, SrcRangeEntry,
};
use crate::dataplane::{MapStore, StoreError};
use crate::desired::{DesiredState, FrontendState};

/// Whether a sync removes the frontends the desired state lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removals {
    Prune,
    /// Leave them: the desired state is known to lack something an earlier agent may have
    /// served (see the agent).
    Keep,
}

/// What one sync did.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// Frontends the desired state lacks that were left in place ([`Removals::Keep`]).
    pub frontends_kept: usize,
    pub backends_added: usize,
    pub backends_removed: usize,
    pub frontends_written: usize,
    pub frontends_removed: usize,
    pub slots_written: usize,
    pub slots_removed: usize,
    /// SVC_NAMES entries written / deleted.
    pub names_written: usize,
    pub names_removed: usize,
    /// SVC_PROBLEMS entries written / deleted.
    pub problems_written: usize,
    pub problems_removed: usize,
    /// SVC4_CLUSTERIPS and SVC6_CLUSTERIPS entries written / deleted.
    pub cluster_ips_written: usize,
    pub cluster_ips_removed: usize,
    /// SVC4_SVC_CIDR and SVC6_SVC_CIDR entries written / deleted.
    pub cidrs_written: usize,
    pub cidrs_removed: usize,
    /// Writes that failed, with the frontend they belong to (if any). Each is retried on
    /// the next sync.
    pub errors: Vec<(Option<Frontend>, StoreError)>,
    /// The Services (`namespace/name`) with a frontend whose entries this sync wrote or
    /// removed, sorted. A removed frontend is named by its SVC_NAMES entry (so also one an
    /// earlier agent wrote; cut as that map cuts names); one without a name is left out.
    pub services: BTreeSet<String>,
}

impl SyncReport {
    pub fn changed(&self) -> bool {
        self.backends_added
            + self.backends_removed
            + self.frontends_written
            + self.frontends_removed
            + self.slots_written
            + self.slots_removed
            + self.names_written
            + self.names_removed
            + self.problems_written
            + self.problems_removed
            + self.cluster_ips_written
            + self.cluster_ips_removed
            + self.cidrs_written
            + self.cidrs_removed
            > 0
    }

    /// The map writes and deletes that belong to frontends, for telling whether one
    /// frontend's sync changed anything.
    fn frontend_changes(&self) -> usize {
        self.frontends_written
            + self.frontends_removed
            + self.slots_written
            + self.slots_removed
            + self.names_written
            + self.names_removed
    }
}

/// One scope's entries of a frontend as written: slot 0's value and slot -> backend id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ScopeEntries {
    /// The slot-0 value; None if slot 0 of this scope is not in the map.
    head: Option<Svc4Value>,
    slots: BTreeMap<u16, u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Installed {
    rev_nat_id: u32,
    /// Indexed by [`Scope`]: [all, local].
    scopes: [ScopeEntries; 2],
    src_ranges: BTreeSet<SrcRangeEntry>,
}

/// The services map of a family (for errors about it).
fn services_map(family: Family) -> &'static str {
    match family {
        Family::V4 => map_names::SVC4_SERVICES,
        Family::V6 => map_names::SVC6_SERVICES,
    }
}

/// The backends map of a family.
fn backends_map(family: Family) -> &'static str {
    match family {
        Family::V4 => map_names::SVC4_BACKENDS,
        Family::V6 => map_names::SVC6_BACKENDS,
    }
}

/// The rev-NAT map of a family.
fn revnat_map(family: Family) -> &'static str {
    match family {
        Family::V4 => map_names::SVC4_REVNAT,
        Family::V6 => map_names::SVC6_REVNAT,
    }
}

impl Installed {
    fn is_empty(&self) -> bool {
        self.scopes
            .iter()
            .all(|s| s.head.is_none() && s.slots.is_empty())
            && self.src_ranges.is_empty()
    }

    fn scope(&mut self, scope: Scope) -> &mut ScopeEntries {
        &mut self.scopes[usize::from(scope.raw())]
    }
}

pub struct Reconciler {
    backend_ids: IdAllocator<BackendAddr>,
    revnat_ids: IdAllocator<Frontend>,
    frontends: BTreeMap<Frontend, Installed>,
    /// Both families' backends maps, by id (ids are unique across the two).
    backends: BTreeMap<u32, BackendValue>,
    /// How many of `backends` each family's map holds ([`Family`] order), for its
    /// capacity.
    backend_counts: [usize; 2],
    /// The rev-NAT entries written, with the family of the map that holds each.
    revnats: BTreeSet<(Family, u32)>,
    /// The rev_nat_ids with a per-Service counter entry (SVC_SVC_STATS), one per frontend.
    service_stats: BTreeSet<u32>,
    /// Counter entries found at adoption that belong to no frontend; deleted on the first
    /// sync.
    orphan_stats: Vec<u32>,
    /// Adopted frontends without a counter entry (pins from before SVC_SVC_STATS
    /// existed); created on the first sync.
    missing_stats: Vec<u32>,
    /// Entries found at adoption that belong to no frontend; deleted on the first sync.
    orphan_slots: Vec<ServiceKey>,
    orphan_ranges: Vec<SrcRangeEntry>,
    /// Backend entries whose id the other family's map holds too (never written so: one
    /// allocator): the first one read is adopted, this one deleted.
    orphan_backends: Vec<(Family, u32)>,
    /// SVC_NAMES as written (adopted from the map at start).
    names: BTreeMap<u32, SvcName>,
    /// SVC_PROBLEMS as written (adopted from the map at start).
    problems: BTreeMap<u32, ProblemText>,
    /// SVC4_CLUSTERIPS, SVC4_SVC_CIDR and their IPv6 counterparts as written (adopted
    /// from the maps at start).
    cluster_ips: BTreeMap<ClusterIpKey, u8>,
    service_cidrs: BTreeSet<ServiceCidrEntry>,
    /// SVC4_SVC_RANGE and SVC6_SVC_RANGE as written (adopted from the maps at start).
    unserved_range: AddrRange4,
    unserved_range6: AddrRange6,
    /// How many installed slots point at each backend id, kept with the mirror's slots, so
    /// a change that frees backends finds the unused ones without walking every slot
    /// (at 100k Services that walk was most of an EndpointSlice change's time).
    slot_refs: HashMap<u32, u32>,
    /// Capacity of SVC4_BACKENDS and SVC4_REVNAT, and of their SVC6_* counterparts (the
    /// agent's --lb-map-max). Rev-NAT ids are shared: all frontends of both families
    /// together get at most this many (SVC_NAMES, keyed by them, is sized for that).
    lb_capacity: u32,
}

/// The index of a family in per-family arrays.
fn fam(family: Family) -> usize {
    match family {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

/// The SVC_NAMES value of a served frontend.
fn frontend_name(state: &FrontendState) -> SvcName {
    layout::served_name(
        &state.service.namespace,
        &state.service.name,
        &state.port_name,
        state.kind,
    )
}

/// The frontend entry (slot 0) of one scope, as the desired state wants it.
fn frontend_head(
    family: Family,
    state: &FrontendState,
    rev_nat_id: u32,
    count: usize,
) -> Result<Svc4Value, StoreError> {
    Ok(FrontendHead {
        count: u16::try_from(count).map_err(|_| StoreError::Other {
            map: services_map(family),
            message: "more than 65535 backends".into(),
        })?,
        rev_nat_id,
        kind: state.kind,
        local: state.local_policy,
        source_ranges: state.kind == svc_common::FrontendKind::LoadBalancer
            && !state.source_ranges.is_empty(),
        affinity_timeout: state.affinity_timeout,
    }
    .encode())
}

impl Reconciler {
    /// Rebuilds the mirror and the id allocators from what the maps hold, for maps of the
    /// default capacity.
    pub fn adopt(store: &impl MapStore) -> Result<Reconciler, StoreError> {
        Self::adopt_with_capacity(store, svc_common::DEFAULT_LB_MAP_MAX)
    }

    /// As [`adopt`](Self::adopt), for backends and rev-NAT maps of `lb_capacity` entries:
    /// rev-NAT ids run from 1 to `lb_capacity` (below NAME_KEY_UNSERVED, the first key of
    /// the unserved Services in SVC_NAMES).
    pub fn adopt_with_capacity(
        store: &impl MapStore,
        lb_capacity: u32,
    ) -> Result<Reconciler, StoreError> {
        let lb_capacity = lb_capacity.min(svc_common::NAME_KEY_UNSERVED - 1);
        let mut r = Reconciler {
            lb_capacity,
            backend_ids: IdAllocator::new(u32::MAX),
            revnat_ids: IdAllocator::new(lb_capacity),
            frontends: BTreeMap::new(),
            backends: BTreeMap::new(),
            backend_counts: [0; 2],
            revnats: BTreeSet::new(),
            service_stats: BTreeSet::new(),
            orphan_stats: Vec::new(),
            missing_stats: Vec::new(),
            orphan_slots: Vec::new(),
            orphan_ranges: Vec::new(),
            orphan_backends: Vec::new(),
            names: BTreeMap::new(),
            problems: BTreeMap::new(),
            cluster_ips: BTreeMap::new(),
            service_cidrs: BTreeSet::new(),
            unserved_range: AddrRange4::default(),
            unserved_range6: AddrRange6::default(),
            slot_refs: HashMap::new(),
        };
        let backends = store
            .read_backends()?
            .into_iter()
            .map(|(id, b)| (id, BackendValue::V4(b)))
            .chain(
                store
                    .read_backends6()?
                    .into_iter()
                    .map(|(id, b)| (id, BackendValue::V6(b))),
            );
        for (id, b) in backends {
            let Some(addr) = b.addr() else {
                continue;
            };
            // An id in both maps (never written so) is adopted once, from the IPv4 map;
            // the other entry is deleted by the first sync.
            if r.backends.contains_key(&id) {
                r.orphan_backends.push((b.family(), id));
                continue;
            }
            r.backend_ids.adopt(addr, id);
            r.backend_counts[fam(b.family())] += 1;
            r.backends.insert(id, b);
        }
        r.revnats = store
            .read_revnats()?
            .into_iter()
            .map(|(id, _)| (Family::V4, id))
            .chain(
                store
                    .read_revnats6()?
                    .into_iter()
                    .map(|(id, _)| (Family::V6, id)),
            )
            .collect();
        let services: Vec<(ServiceKey, Svc4Value)> = store
            .read_services()?
            .into_iter()
            .map(|(k, v)| (ServiceKey::V4(k), v))
            .chain(
                store
                    .read_services6()?
                    .into_iter()
                    .map(|(k, v)| (ServiceKey::V6(k), v)),
            )
            .collect();
        // Frontends are the slot-0 entries of scope all; everything else hangs off one.
        let is_frontend = |k: &ServiceKey| k.slot() == 0 && k.scope() == Scope::All.raw();
        for (key, value) in services.iter().filter(|(k, _)| is_frontend(k)) {
            let Some(frontend) = key.frontend() else {
                continue;
            };
            r.revnat_ids.adopt(frontend, value.rev_nat_id);
            let mut installed = Installed {
                rev_nat_id: value.rev_nat_id,
                ..Default::default()
            };
            installed.scopes[0].head = Some(*value);
            r.frontends.insert(frontend, installed);
        }
        for (key, value) in services.iter().filter(|(k, _)| !is_frontend(k)) {
            let scope = Scope::from_raw(key.scope());
            match (key.frontend().and_then(|f| r.frontends.get_mut(&f)), scope) {
                (Some(installed), Some(scope)) if key.slot() == 0 => {
                    installed.scope(scope).head = Some(*value)
                }
                (Some(installed), Some(scope)) => {
                    installed
                        .scope(scope)
                        .slots
                        .insert(key.slot(), value.backend_id);
                }
                _ => r.orphan_slots.push(*key),
            }
        }
        let by_rev: BTreeMap<u32, Frontend> = r
            .frontends
            .iter()
            .map(|(f, i)| (i.rev_nat_id, *f))
            .collect();
        let ranges = store
            .read_src_ranges()?
            .into_iter()
            .map(SrcRangeEntry::V4)
            .chain(store.read_src_ranges6()?.into_iter().map(SrcRangeEntry::V6));
        for key in ranges {
            // A range in the other family's map than its frontend's is an orphan too.
            match by_rev
                .get(&key.rev_nat_id())
                .filter(|f| f.family() == key.family())
                .and_then(|f| r.frontends.get_mut(f))
            {
                Some(installed) => {
                    installed.src_ranges.insert(key);
                }
                None => r.orphan_ranges.push(key),
            }
        }
        // Counters of no frontend are deleted by the first sync; a frontend without one
        // (pins from before SVC_SVC_STATS existed) gets one from it.
        for id in store.read_service_stats_ids()? {
            if by_rev.contains_key(&id) {
                r.service_stats.insert(id);
            } else {
                r.orphan_stats.push(id);
            }
        }
        r.missing_stats = by_rev
            .keys()
            .filter(|id| !r.service_stats.contains(id))
            .copied()
            .collect();
        // Names that belong to nothing are deleted by the first sync's name pass.
        r.names = store.read_names()?.into_iter().collect();
        r.problems = store.read_problems()?.into_iter().collect();
        r.cluster_ips = store.read_cluster_ip_entries()?.into_iter().collect();
        r.service_cidrs = store.read_service_cidr_entries()?.into_iter().collect();
        r.unserved_range = store.read_unserved_range()?;
        r.unserved_range6 = store.read_unserved_range6()?;
        r.slot_refs = r.count_slot_refs();
        Ok(r)
    }

    /// Number of frontends and backends the maps hold, as the mirror knows it.
    pub fn sizes(&self) -> (usize, usize) {
        (self.frontends.len(), self.backends.len())
    }

    /// Allocates ids for and writes the `wanted` backends (address -> state) that the maps
    /// do not hold as wanted; returns the id of every backend that is now in the map.
    fn ensure_backends(
        &mut self,
        wanted: &BTreeMap<BackendAddr, BackendState>,
        store: &mut impl MapStore,
        report: &mut SyncReport,
    ) -> BTreeMap<BackendAddr, u32> {
        let mut ready: BTreeMap<BackendAddr, u32> = BTreeMap::new();
        // The writes, batched: (address, id) and the value of each.
        let mut writes: Vec<(BackendAddr, u32)> = Vec::new();
        let mut values: Vec<BackendValue> = Vec::new();
        // New entries per family: each family's map has the capacity.
        let mut new_ids = [0usize; 2];
        for (addr, backend_state) in wanted {
            let family = addr.family();
            if self.backend_ids.get(addr).is_none()
                && self.backend_counts[fam(family)] + new_ids[fam(family)]
                    >= self.lb_capacity as usize
            {
                report.errors.push((
                    None,
                    StoreError::Full {
                        map: backends_map(family),
                    },
                ));
                continue;
            }
            let id = match self.backend_ids.get_or_alloc(addr) {
                Ok(id) => id,
                Err(e) => {
                    report.errors.push((
                        None,
                        StoreError::Other {
                            map: backends_map(family),
                            message: e.to_string(),
                        },
                    ));
                    continue;
                }
            };
            let value = layout::backend_value(addr, *backend_state);
            match self.backends.get(&id) {
                Some(v) if *v == value => {
                    ready.insert(*addr, id);
                }
                installed => {
                    new_ids[fam(family)] += usize::from(installed.is_none());
                    writes.push((*addr, id));
                    values.push(value);
                }
            }
        }
        let ids: Vec<u32> = writes.iter().map(|(_, id)| *id).collect();
        // One batch; an entry that fails is reported and skipped, the rest written after it.
        let mut start = 0;
        while start < ids.len() {
            let (written, failed) = match store.put_backend_entries(&ids[start..], &values[start..])
            {
                Ok(()) => (ids.len() - start, None),
                Err((n, e)) => (n, Some(e)),
            };
            for i in start..start + written {
                if self.backends.insert(ids[i], values[i]).is_none() {
                    self.backend_counts[fam(values[i].family())] += 1;
                }
                report.backends_added += 1;
                ready.insert(writes[i].0, ids[i]);
            }
            start += written;
            if let Some(e) = failed {
                report.errors.push((None, e));
                start += 1;
            }
        }
        ready
    }

    /// Syncs only `frontends` (added, changed or removed in `desired`), for a change that
    /// touches nothing else: an endpoint change of some Services. Their backends are added
    /// first and the backends only they used are removed last, as in [`sync`](Self::sync);
    /// a backend that another frontend uses is never downgraded to terminating here (the
    /// next full sync settles states). What a full sync also does (orphans, unserved
    /// names) is left to it.
    pub fn sync_partial(
        &mut self,
        desired: &DesiredState,
        frontends: &[Frontend],
        store: &mut impl MapStore,
    ) -> SyncReport {
        let mut report = SyncReport::default();
        let mut wanted: BTreeMap<BackendAddr, BackendState> = BTreeMap::new();
        for f in frontends {
            if let Some(state) = desired.frontends.get(f) {
                add_wanted(&mut wanted, state);
            }
        }
        for (addr, st) in wanted.iter_mut() {
            let active_elsewhere = self
                .backend_ids
                .get(addr)
                .and_then(|id| self.backends.get(&id))
                .is_some_and(|b| b.state() == Some(BackendState::Active));
            if *st == BackendState::Terminating && active_elsewhere {
                *st = BackendState::Active;
            }
        }
        let ready = self.ensure_backends(&wanted, store, &mut report);
        // The backends these frontends pointed at: candidates for removal afterwards.
        let mut candidates: std::collections::HashSet<u32> = frontends
            .iter()
            .filter_map(|f| self.frontends.get(f))
            .flat_map(|i| i.scopes.iter().flat_map(|s| s.slots.values().copied()))
            .collect();
        for f in frontends {
            let result = match desired.frontends.get(f) {
                Some(state) => self.sync_frontend(f, state, &ready, store, &mut report),
                None => self.remove_frontend(f, store, &mut report),
            };
            if let Err(e) = result {
                report.errors.push((Some(*f), e));
            }
        }
        for id in ready.values() {
            candidates.remove(id);
        }
        debug_assert_eq!(self.slot_refs, self.count_slot_refs(), "slot counts");
        if !candidates.is_empty() {
            // Still in a slot of any frontend, or kept for the flows of a terminating one.
            candidates.retain(|id| !self.slot_refs.contains_key(id));
            for state in desired.frontends.values() {
                for b in &state.terminating {
                    if let Some(id) = self.backend_ids.get(b) {
                        candidates.remove(&id);
                    }
                }
            }
        }
        let mut unused: Vec<u32> = candidates.into_iter().collect();
        unused.sort_unstable();
        self.delete_backends(&unused, store, &mut report);
        report
    }

    fn delete_backends(&mut self, ids: &[u32], store: &mut impl MapStore, report: &mut SyncReport) {
        for &id in ids {
            // Not in the mirror (never so): a delete from the IPv4 map is harmless.
            let family = self
                .backends
                .get(&id)
                .map_or(Family::V4, BackendValue::family);
            match store.del_backend_entry(id, family) {
                Ok(()) => {
                    if let Some(removed) = self.backends.remove(&id) {
                        self.backend_counts[fam(family)] -= 1;
                        if let Some(addr) = removed.addr() {
                            self.backend_ids.release(&addr);
                        }
                    }
                    report.backends_removed += 1;
                }
                Err(e) => report.errors.push((None, e)),
            }
        }
    }

    pub fn sync(&mut self, desired: &DesiredState, store: &mut impl MapStore) -> SyncReport {
        self.sync_with(desired, store, Removals::Prune)
    }

    /// As [`sync`](Self::sync); with [`Removals::Keep`] the frontends the maps hold and
    /// `desired` lacks are left as they are (with their backends and names).
    pub fn sync_with(
        &mut self,
        desired: &DesiredState,
        store: &mut impl MapStore,
        removals: Removals,
    ) -> SyncReport {
        let mut report = SyncReport::default();
        self.remove_orphans(store, &mut report);

        // 0. ClusterIPs added or changed, before any frontend; first the range the programs
        //    look them (and the service CIDRs) up in, per family, widened to what the maps
        //    hold and will hold, so no entry is ever outside it.
        let wanted_ips: BTreeMap<ClusterIpKey, u8> = desired
            .cluster_ips
            .iter()
            .map(|(ip, use_)| (ClusterIpKey::of(*ip), layout::cluster_ip_value(*use_)))
            .collect();
        let wanted_cidrs: BTreeSet<ServiceCidrEntry> = desired
            .service_cidrs
            .cidrs
            .iter()
            .map(ServiceCidrEntry::of)
            .collect();
        let wide = layout::unserved_ranges(
            self.cluster_ips.keys().chain(wanted_ips.keys()),
            self.service_cidrs.iter().chain(&wanted_cidrs),
        );
        self.write_unserved_range(wide, store, &mut report);
        for (key, value) in &wanted_ips {
            if self.cluster_ips.get(key) != Some(value) {
                match store.put_cluster_ip_entry(key, *value) {
                    Ok(()) => {
                        self.cluster_ips.insert(*key, *value);
                        report.cluster_ips_written += 1;
                    }
                    Err(e) => report.errors.push((None, e)),
                }
            }
        }

        // 1. Backends: every backend a new flow may get is active; terminating ones stay
        //    (state terminating) so established flows keep them.
        let mut wanted: BTreeMap<BackendAddr, BackendState> = BTreeMap::new();
        for state in desired.frontends.values() {
            add_wanted(&mut wanted, state);
        }
        let ready = self.ensure_backends(&wanted, store, &mut report);

        // 2. Frontends no longer wanted go first, freeing room in full maps.
        let stale: Vec<Frontend> = match removals {
            Removals::Prune => self
                .frontends
                .keys()
                .filter(|f| !desired.frontends.contains_key(f))
                .copied()
                .collect(),
            Removals::Keep => Vec::new(),
        };
        report.frontends_kept = self
            .frontends
            .keys()
            .filter(|f| !desired.frontends.contains_key(f))
            .count()
            - stale.len();
        for frontend in stale {
            if let Err(e) = self.remove_frontend(&frontend, store, &mut report) {
                report.errors.push((Some(frontend), e));
            }
        }

        // 3 + 4. Frontends.
        for (frontend, state) in &desired.frontends {
            if let Err(e) = self.sync_frontend(frontend, state, &ready, store, &mut report) {
                report.errors.push((Some(*frontend), e));
            }
        }

        // 5. Backends no installed slot points at, and that no flow may keep.
        let wanted_ids: BTreeSet<u32> = ready.values().copied().collect();
        let unused: Vec<u32> = self
            .backends
            .keys()
            .filter(|id| !self.slot_refs.contains_key(id) && !wanted_ids.contains(id))
            .copied()
            .collect();
        self.delete_backends(&unused, store, &mut report);

        // 6. Names: the unserved Services, then whatever no installed frontend owns.
        let mut wanted_names: BTreeMap<u32, SvcName> = desired
            .unserved
            .iter()
            .enumerate()
            .map(|(n, (svc, why))| {
                (
                    layout::unserved_key(n),
                    layout::unserved_name(&svc.namespace, &svc.name, *why),
                )
            })
            .collect();
        for (frontend, installed) in &self.frontends {
            let key = installed.rev_nat_id;
            match desired.frontends.get(frontend) {
                Some(state) => {
                    wanted_names.insert(key, frontend_name(state));
                }
                // Still installed (its removal failed): keep the name it has.
                None => {
                    if let Some(v) = self.names.get(&key) {
                        wanted_names.insert(key, *v);
                    }
                }
            }
        }
        for (key, value) in &wanted_names {
            if layout::is_unserved_key(*key) && self.names.get(key) != Some(value) {
                match store.put_name(*key, value) {
                    Ok(()) => {
                        self.names.insert(*key, *value);
                        report.names_written += 1;
                    }
                    Err(e) => report.errors.push((None, e)),
                }
            }
        }
        let stale: Vec<u32> = self
            .names
            .keys()
            .filter(|k| !wanted_names.contains_key(k))
            .copied()
            .collect();
        for key in stale {
            match store.del_name(key) {
                Ok(()) => {
                    self.names.remove(&key);
                    report.names_removed += 1;
                }
                Err(e) => report.errors.push((None, e)),
            }
        }

        // 7. Service CIDRs (stale ones first: room in a full map), then the ClusterIPs no
        //    Service has any more, then the range narrowed to what is left.
        if removals == Removals::Prune {
            let stale: Vec<ServiceCidrEntry> = self
                .service_cidrs
                .difference(&wanted_cidrs)
                .copied()
                .collect();
            for key in stale {
                match store.del_service_cidr_entry(&key) {
                    Ok(()) => {
                        self.service_cidrs.remove(&key);
                        report.cidrs_removed += 1;
                    }
                    Err(e) => report.errors.push((None, e)),
                }
            }
        }
        for key in &wanted_cidrs {
            if !self.service_cidrs.contains(key) {
                match store.put_service_cidr_entry(key) {
                    Ok(()) => {
                        self.service_cidrs.insert(*key);
                        report.cidrs_written += 1;
                    }
                    Err(e) => report.errors.push((None, e)),
                }
            }
        }
        if removals == Removals::Prune {
            let stale: Vec<ClusterIpKey> = self
                .cluster_ips
                .keys()
                .filter(|k| !wanted_ips.contains_key(k))
                .copied()
                .collect();
            for key in stale {
                match store.del_cluster_ip_entry(&key) {
                    Ok(()) => {
                        self.cluster_ips.remove(&key);
                        report.cluster_ips_removed += 1;
                    }
                    Err(e) => report.errors.push((None, e)),
                }
            }
        }
        let exact = layout::unserved_ranges(self.cluster_ips.keys(), &self.service_cidrs);
        self.write_unserved_range(exact, store, &mut report);
        debug_assert_eq!(self.slot_refs, self.count_slot_refs(), "slot counts");
        report
    }

    /// Writes SVC4_SVC_RANGE and SVC6_SVC_RANGE where they differ from what they hold; a
    /// failed write is reported and retried on the next sync.
    fn write_unserved_range(
        &mut self,
        (range, range6): (AddrRange4, AddrRange6),
        store: &mut impl MapStore,
        report: &mut SyncReport,
    ) {
        if range != self.unserved_range {
            match store.put_unserved_range(&range) {
                Ok(()) => self.unserved_range = range,
                Err(e) => report.errors.push((None, e)),
            }
        }
        if range6 != self.unserved_range6 {
            match store.put_unserved_range6(&range6) {
                Ok(()) => self.unserved_range6 = range6,
                Err(e) => report.errors.push((None, e)),
            }
        }
    }

    /// Writes the problems svcctl lists (SVC_PROBLEMS, for svcctl only): `texts` in order
    /// under keys 0.., only the entries that differ; when there are more than the map holds,
    /// the last entry counts the rest. Entries past them are deleted. A failed write is
    /// reported and retried on the next call.
    pub fn sync_problems(&mut self, texts: &[String], store: &mut impl MapStore) -> SyncReport {
        let mut report = SyncReport::default();
        let room = PROBLEMS_MAP_SIZE as usize;
        let mut wanted: BTreeMap<u32, ProblemText> = BTreeMap::new();
        for (i, text) in texts.iter().enumerate() {
            let text = if i + 1 == room && texts.len() > room {
                format!(
                    "... and {} more problems (see the agent's log)",
                    texts.len() - i
                )
            } else {
                text.clone()
            };
            wanted.insert(i as u32, ProblemText::new(&text));
            if i + 1 == room {
                break;
            }
        }
        for (key, value) in &wanted {
            if self.problems.get(key) != Some(value) {
                match store.put_problem(*key, value) {
                    Ok(()) => {
                        self.problems.insert(*key, *value);
                        report.problems_written += 1;
                    }
                    Err(e) => report.errors.push((None, e)),
                }
            }
        }
        let stale: Vec<u32> = self
            .problems
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .copied()
            .collect();
        for key in stale {
            match store.del_problem(key) {
                Ok(()) => {
                    self.problems.remove(&key);
                    report.problems_removed += 1;
                }
                Err(e) => report.errors.push((None, e)),
            }
        }
        report
    }

    /// Writes a frontend's SVC_NAMES entry if it differs. A failure is reported but does
    /// not stop the frontend: names are for svcctl only. Retried on the next sync.
    fn sync_name(
        &mut self,
        frontend: &Frontend,
        rev_nat_id: u32,
        state: &FrontendState,
        store: &mut impl MapStore,
        report: &mut SyncReport,
    ) {
        let key = rev_nat_id;
        let value = frontend_name(state);
        if self.names.get(&key) == Some(&value) {
            return;
        }
        match store.put_name(key, &value) {
            Ok(()) => {
                self.names.insert(key, value);
                report.names_written += 1;
            }
            Err(e) => report.errors.push((Some(*frontend), e)),
        }
    }

    fn remove_orphans(&mut self, store: &mut impl MapStore, report: &mut SyncReport) {
        for key in std::mem::take(&mut self.orphan_slots) {
            match store.del_service_entry(&key) {
                Ok(()) => report.slots_removed += 1,
                Err(e) => {
                    report.errors.push((None, e));
                    self.orphan_slots.push(key);
                }
            }
        }
        for key in std::mem::take(&mut self.orphan_ranges) {
            if let Err(e) = store.del_src_range_entry(&key) {
                report.errors.push((None, e));
                self.orphan_ranges.push(key);
            }
        }
        for id in std::mem::take(&mut self.orphan_stats) {
            if let Err(e) = store.del_service_stats(id) {
                report.errors.push((None, e));
                self.orphan_stats.push(id);
            }
        }
        for id in std::mem::take(&mut self.missing_stats) {
            match store.put_service_stats(id) {
                Ok(()) => {
                    self.service_stats.insert(id);
                }
                // Retried when the frontend is next written.
                Err(e) => report.errors.push((None, e)),
            }
        }
        for (family, id) in std::mem::take(&mut self.orphan_backends) {
            match store.del_backend_entry(id, family) {
                Ok(()) => report.backends_removed += 1,
                Err(e) => {
                    report.errors.push((None, e));
                    self.orphan_backends.push((family, id));
                }
            }
        }
    }

    /// [`write_frontend`](Self::write_frontend), with the slot counts following what it
    /// changed in the mirror (also when it stopped at a failed write).
    fn sync_frontend(
        &mut self,
        frontend: &Frontend,
        state: &FrontendState,
        ready: &BTreeMap<BackendAddr, u32>,
        store: &mut impl MapStore,
        report: &mut SyncReport,
    ) -> Result<(), StoreError> {
        let before = self.slot_ids(frontend);
        let (changes, ranges) = (report.frontend_changes(), self.src_ranges(frontend));
        let result = self.write_frontend(frontend, state, ready, store, report);
        self.recount_slots(&before, &self.slot_ids(frontend));
        if report.frontend_changes() != changes || self.src_ranges(frontend) != ranges {
            report.services.insert(state.service.to_string());
        }
        result
    }

    /// [`delete_frontend`](Self::delete_frontend), with the slot counts following it.
    fn remove_frontend(
        &mut self,
        frontend: &Frontend,
        store: &mut impl MapStore,
        report: &mut SyncReport,
    ) -> Result<(), StoreError> {
        let before = self.slot_ids(frontend);
        let service = self
            .frontends
            .get(frontend)
            .and_then(|i| self.names.get(&i.rev_nat_id))
            .map(|n| format!("{}/{}", n.namespace(), n.name()));
        let (changes, ranges) = (report.frontend_changes(), self.src_ranges(frontend));
        let result = self.delete_frontend(frontend, store, report);
        self.recount_slots(&before, &self.slot_ids(frontend));
        if report.frontend_changes() != changes || self.src_ranges(frontend) != ranges {
            report.services.extend(service);
        }
        result
    }

    /// The source-range entries the mirror holds for `frontend` (usually none: no
    /// allocation).
    fn src_ranges(&self, frontend: &Frontend) -> BTreeSet<SrcRangeEntry> {
        self.frontends
            .get(frontend)
            .map_or_else(BTreeSet::new, |i| i.src_ranges.clone())
    }

    /// The backend ids the mirror's slots of `frontend` point at (both scopes).
    fn slot_ids(&self, frontend: &Frontend) -> Vec<u32> {
        self.frontends.get(frontend).map_or_else(Vec::new, |i| {
            i.scopes
                .iter()
                .flat_map(|s| s.slots.values().copied())
                .collect()
        })
    }

    fn recount_slots(&mut self, before: &[u32], after: &[u32]) {
        for id in after {
            *self.slot_refs.entry(*id).or_default() += 1;
        }
        for id in before {
            if let std::collections::hash_map::Entry::Occupied(mut e) = self.slot_refs.entry(*id) {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
    }

    /// The slot counts, counted from the mirror.
    fn count_slot_refs(&self) -> HashMap<u32, u32> {
        let mut refs = HashMap::new();
        for installed in self.frontends.values() {
            for id in installed.scopes.iter().flat_map(|s| s.slots.values()) {
                *refs.entry(*id).or_default() += 1;
            }
        }
        refs
    }

    /// Writes one frontend: rev-NAT entry, source ranges, then per scope the slots before
    /// the slot-0 entry that counts them (local before all, whose SVC_F_LOCAL flag
    /// sends packets to it), then removes what is no longer wanted in reverse.
    fn write_frontend(
        &mut self,
        frontend: &Frontend,
        state: &FrontendState,
        ready: &BTreeMap<BackendAddr, u32>,
        store: &mut impl MapStore,
        report: &mut SyncReport,
    ) -> Result<(), StoreError> {
        let family = frontend.family();
        let rev_nat_id = self
            .revnat_ids
            .get_or_alloc(frontend)
            .map_err(|e| StoreError::Other {
                map: revnat_map(family),
                message: e.to_string(),
            })?;
        if !self.revnats.contains(&(family, rev_nat_id)) {
            store.put_revnat_entry(rev_nat_id, &layout::revnat_value(frontend))?;
            self.revnats.insert((family, rev_nat_id));
        }
        // The Service's counters before its first packet can be translated (slot 0 is
        // written below). A failure costs the counters only, never the frontend.
        if !self.service_stats.contains(&rev_nat_id) {
            match store.put_service_stats(rev_nat_id) {
                Ok(()) => {
                    self.service_stats.insert(rev_nat_id);
                }
                Err(e) => report.errors.push((Some(*frontend), e)),
            }
        }
        self.sync_name(frontend, rev_nat_id, state, store, report);
        let installed = self.frontends.entry(*frontend).or_default();
        if installed.rev_nat_id != rev_nat_id {
            // Every entry carries the rev-NAT id: rewrite them all.
            installed.scopes = Default::default();
            installed.rev_nat_id = rev_nat_id;
        }

        let head = |count: usize| frontend_head(family, state, rev_nat_id, count);
        // Only the frontend's family's ranges (the desired state gives no other): a range
        // of the other family could never match a source of this one.
        let ranges: BTreeSet<SrcRangeEntry> = if FrontendHead::decode(&head(0)?).source_ranges {
            state
                .source_ranges
                .iter()
                .filter(|c| c.family() == family)
                .map(|c| layout::src_range_key(rev_nat_id, c))
                .collect()
        } else {
            BTreeSet::new()
        };
        for key in ranges.difference(&installed.src_ranges.clone()) {
            store.put_src_range_entry(key)?;
            installed.src_ranges.insert(*key);
        }

        // Backends whose write failed are left out; the frontend serves the others.
        let ids = |list: &[BackendAddr]| -> Vec<u32> {
            list.iter().filter_map(|b| ready.get(b).copied()).collect()
        };
        let all = ids(&state.backends);
        let local = if state.local_policy {
            Some(ids(&state.local_backends))
        } else {
            None
        };

        if let Some(local) = &local {
            let entries = installed.scope(Scope::Local);
            write_scope(
                store,
                frontend,
                Scope::Local,
                entries,
                local,
                head(local.len())?,
                report,
            )?;
        }
        let entries = installed.scope(Scope::All);
        write_scope(
            store,
            frontend,
            Scope::All,
            entries,
            &all,
            head(all.len())?,
            report,
        )?;

        // Removals, now that slot 0 no longer points at them.
        trim_scope(
            store,
            frontend,
            Scope::All,
            installed.scope(Scope::All),
            all.len(),
            report,
        )?;
        let entries = installed.scope(Scope::Local);
        match &local {
            Some(local) => trim_scope(store, frontend, Scope::Local, entries, local.len(), report)?,
            None => {
                if entries.head.is_some() {
                    store.del_service_entry(&layout::service_key(frontend, Scope::Local, 0))?;
                    entries.head = None;
                }
                trim_scope(store, frontend, Scope::Local, entries, 0, report)?;
            }
        }
        for key in installed.src_ranges.clone().difference(&ranges) {
            store.del_src_range_entry(key)?;
            installed.src_ranges.remove(key);
        }
        Ok(())
    }

    fn delete_frontend(
        &mut self,
        frontend: &Frontend,
        store: &mut impl MapStore,
        report: &mut SyncReport,
    ) -> Result<(), StoreError> {
        let Some(installed) = self.frontends.get_mut(frontend) else {
            return Ok(());
        };
        // The head of scope all first: from then on no packet finds the frontend.
        for scope in [Scope::All, Scope::Local] {
            let entries = installed.scope(scope);
            if entries.head.is_some() {
                store.del_service_entry(&layout::service_key(frontend, scope, 0))?;
                entries.head = None;
            }
        }
        for scope in [Scope::All, Scope::Local] {
            trim_scope(store, frontend, scope, installed.scope(scope), 0, report)?;
        }
        for key in std::mem::take(&mut installed.src_ranges) {
            store.del_src_range_entry(&key)?;
        }
        debug_assert!(installed.is_empty());
        let rev = installed.rev_nat_id;
        let family = frontend.family();
        if rev != 0 && self.revnats.contains(&(family, rev)) {
            store.del_revnat_entry(rev, family)?;
            self.revnats.remove(&(family, rev));
        }
        // Its counters go with it (no packet finds the frontend any more); the series of a
        // removed Service disappear from the metrics.
        if rev != 0 && self.service_stats.contains(&rev) {
            match store.del_service_stats(rev) {
                Ok(()) => {
                    self.service_stats.remove(&rev);
                }
                Err(e) => report.errors.push((Some(*frontend), e)),
            }
        }
        // The name goes with the frontend; if deleting it fails, the name pass of this
        // sync (or the next) deletes it: nothing wants it any more.
        if rev != 0 && self.names.contains_key(&rev) {
            match store.del_name(rev) {
                Ok(()) => {
                    self.names.remove(&rev);
                    report.names_removed += 1;
                }
                Err(e) => report.errors.push((Some(*frontend), e)),
            }
        }
        self.revnat_ids.release(frontend);
        self.frontends.remove(frontend);
        report.frontends_removed += 1;
        Ok(())
    }
}

/// Writes slots 1..=n of one scope (only those that differ), then its slot-0 entry, in
/// one batched call (the kernel writes them in this order and stops at the first that
/// fails: the mirror takes the prefix it reports as written).
fn write_scope(
    store: &mut impl MapStore,
    frontend: &Frontend,
    scope: Scope,
    entries: &mut ScopeEntries,
    ids: &[u32],
    head: Svc4Value,
    report: &mut SyncReport,
) -> Result<(), StoreError> {
    let mut keys = Vec::with_capacity(ids.len() + 1);
    let mut values = Vec::with_capacity(ids.len() + 1);
    // Per entry: the slot and backend it sets, or None for the slot-0 entry.
    let mut sets: Vec<Option<(u16, u32)>> = Vec::with_capacity(ids.len() + 1);
    for (i, id) in ids.iter().enumerate() {
        let slot = i as u16 + 1;
        if entries.slots.get(&slot) != Some(id) {
            keys.push(layout::service_key(frontend, scope, slot));
            values.push(layout::slot_value(*id, head.rev_nat_id));
            sets.push(Some((slot, *id)));
        }
    }
    if entries.head != Some(head) {
        keys.push(layout::service_key(frontend, scope, 0));
        values.push(head);
        sets.push(None);
    }
    let (written, result) = match store.put_service_entries(&keys, &values) {
        Ok(()) => (sets.len(), Ok(())),
        Err((written, e)) => (written, Err(e)),
    };
    for set in &sets[..written] {
        match set {
            Some((slot, id)) => {
                entries.slots.insert(*slot, *id);
                report.slots_written += 1;
            }
            None => {
                entries.head = Some(head);
                report.frontends_written += 1;
            }
        }
    }
    result
}

/// Deletes the slots of one scope past `count`.
fn trim_scope(
    store: &mut impl MapStore,
    frontend: &Frontend,
    scope: Scope,
    entries: &mut ScopeEntries,
    count: usize,
    report: &mut SyncReport,
) -> Result<(), StoreError> {
    let extra: Vec<u16> = entries
        .slots
        .keys()
        .filter(|s| **s as usize > count)
        .copied()
        .collect();
    for slot in extra {
        store.del_service_entry(&layout::service_key(frontend, scope, slot))?;
        entries.slots.remove(&slot);
        report.slots_removed += 1;
    }
    Ok(())
}

/// Adds the backends `state` wants to `wanted`: active for those new flows may get,
/// terminating (unless active for another frontend) for those only established flows keep.
fn add_wanted(wanted: &mut BTreeMap<BackendAddr, BackendState>, state: &FrontendState) {
    for b in &state.terminating {
        wanted.entry(*b).or_insert(BackendState::Terminating);
    }
    let local: &[BackendAddr] = if state.local_policy {
        &state.local_backends
    } else {
        &[]
    };
    for b in state.backends.iter().chain(local) {
        wanted.insert(*b, BackendState::Active);
    }
}

#[cfg(test)]
mod tests;
