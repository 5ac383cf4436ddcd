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
//! A packet therefore never reads a count that points past the slots that exist, nor a slot
//! whose backend is missing.
//!
//! The reconciler keeps a mirror of what it wrote (rebuilt from the maps at start, so a
//! restarted agent adopts existing state) and updates it only for writes that succeeded:
//! a failed write (e.g. a full map) leaves that frontend as it was, is reported, and is
//! retried on the next sync; nothing else is lost.
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use svc_common::{
    BACKEND_STATE_ACTIVE, BACKEND_STATE_TERMINATING, Backend4, NAME_EXTERNALNAME, NAME_HEADLESS,
    NAME_KEY_UNSERVED, NAME_KIND_CLUSTERIP, NAME_KIND_EXTERNALIP, NAME_KIND_LOADBALANCER,
    NAME_KIND_NODEPORT, NAME_KIND_NONE, NAME_NO_IPV4_CLUSTERIP, NAME_NO_PORTS, NAME_OTHER_PROXY,
    NAME_SERVED, PROTO_TCP, PROTO_UDP, RevNat4, SCOPE_ALL, SCOPE_LOCAL, SRC_RANGE_PREFIX_BASE,
    SVC_F_AFFINITY, SVC_F_EXTERNAL, SVC_F_EXTERNAL_IP, SVC_F_LOADBALANCER, SVC_F_LOCAL,
    SVC_F_NODEPORT, SVC_F_SOURCE_RANGES, SrcRange4, Svc4Key, Svc4Value, SvcName,
};

use crate::alloc::IdAllocator;
use crate::desired::{
    BackendAddr, DesiredState, Frontend, FrontendKind, FrontendState, Ipv4Cidr, UnservedReason,
};
use crate::model::{ObjectRef, Protocol};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("map {map} is full")]
    Full { map: &'static str },
    #[error("map {map}: {message}")]
    Other { map: &'static str, message: String },
}

/// A loadBalancerSourceRanges entry: (prefix length as the LPM trie counts it, data).
pub type SrcRangeKey = (u32, SrcRange4);

/// The writes and reads the reconciler needs. Implemented by the real pinned maps
/// (`dataplane::Maps`) and by an in-memory fake in tests.
pub trait MapStore {
    fn put_service(&mut self, key: &Svc4Key, value: &Svc4Value) -> Result<(), StoreError>;
    fn del_service(&mut self, key: &Svc4Key) -> Result<(), StoreError>;
    fn put_backend(&mut self, id: u32, value: &Backend4) -> Result<(), StoreError>;
    fn del_backend(&mut self, id: u32) -> Result<(), StoreError>;
    fn put_revnat(&mut self, id: u32, value: &RevNat4) -> Result<(), StoreError>;
    fn del_revnat(&mut self, id: u32) -> Result<(), StoreError>;
    fn put_src_range(&mut self, key: &SrcRangeKey) -> Result<(), StoreError>;
    fn del_src_range(&mut self, key: &SrcRangeKey) -> Result<(), StoreError>;
    fn read_services(&self) -> Result<Vec<(Svc4Key, Svc4Value)>, StoreError>;
    fn read_backends(&self) -> Result<Vec<(u32, Backend4)>, StoreError>;
    fn read_revnats(&self) -> Result<Vec<(u32, RevNat4)>, StoreError>;
    fn read_src_ranges(&self) -> Result<Vec<SrcRangeKey>, StoreError>;
    /// SVC_NAMES: svcctl's names (key: rev_nat_id, or NAME_KEY_UNSERVED + n).
    fn put_name(&mut self, key: u32, value: &SvcName) -> Result<(), StoreError>;
    fn del_name(&mut self, key: u32) -> Result<(), StoreError>;
    fn read_names(&self) -> Result<Vec<(u32, SvcName)>, StoreError>;
}

/// What one sync did.
#[derive(Debug, Default)]
pub struct SyncReport {
    pub backends_added: usize,
    pub backends_removed: usize,
    pub frontends_written: usize,
    pub frontends_removed: usize,
    pub slots_written: usize,
    pub slots_removed: usize,
    /// SVC_NAMES entries written / deleted.
    pub names_written: usize,
    pub names_removed: usize,
    /// Writes that failed, with the frontend they belong to (if any). Each is retried on
    /// the next sync.
    pub errors: Vec<(Option<Frontend>, StoreError)>,
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
            > 0
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
    /// [SCOPE_ALL, SCOPE_LOCAL].
    scopes: [ScopeEntries; 2],
    src_ranges: BTreeSet<SrcRangeKey>,
}

impl Installed {
    fn is_empty(&self) -> bool {
        self.scopes
            .iter()
            .all(|s| s.head.is_none() && s.slots.is_empty())
            && self.src_ranges.is_empty()
    }
}

pub struct Reconciler {
    backend_ids: IdAllocator<BackendAddr>,
    revnat_ids: IdAllocator<Frontend>,
    frontends: BTreeMap<Frontend, Installed>,
    backends: BTreeMap<u32, Backend4>,
    revnats: BTreeSet<u32>,
    /// Entries found at adoption that belong to no frontend; deleted on the first sync.
    orphan_slots: Vec<Svc4Key>,
    orphan_ranges: Vec<SrcRangeKey>,
    /// SVC_NAMES as written (adopted from the map at start).
    names: BTreeMap<u32, SvcName>,
    /// Capacity of SVC4_BACKENDS and SVC4_REVNAT (the agent's --lb-map-max).
    lb_capacity: u32,
}

fn proto_from_u8(p: u8) -> Option<Protocol> {
    match p {
        PROTO_TCP => Some(Protocol::Tcp),
        PROTO_UDP => Some(Protocol::Udp),
        _ => None,
    }
}

fn frontend_of(key: &Svc4Key) -> Option<Frontend> {
    Some(Frontend {
        vip: Ipv4Addr::from(u32::from_be(key.vip_be)),
        port: u16::from_be(key.port_be),
        proto: proto_from_u8(key.proto)?,
    })
}

fn svc_key(f: &Frontend, scope: u8, slot: u16) -> Svc4Key {
    Svc4Key {
        vip_be: u32::from(f.vip).to_be(),
        port_be: f.port.to_be(),
        slot,
        proto: f.proto.as_u8(),
        scope,
        _pad: [0; 2],
    }
}

fn backend_value(b: &BackendAddr, state: u8) -> Backend4 {
    Backend4 {
        addr_be: u32::from(b.addr).to_be(),
        port_be: b.port.to_be(),
        proto: b.proto.as_u8(),
        state,
    }
}

fn backend_addr(b: &Backend4) -> Option<BackendAddr> {
    Some(BackendAddr {
        addr: Ipv4Addr::from(u32::from_be(b.addr_be)),
        port: u16::from_be(b.port_be),
        proto: proto_from_u8(b.proto)?,
    })
}

fn src_range_key(rev_nat_id: u32, cidr: &Ipv4Cidr) -> SrcRangeKey {
    (
        SRC_RANGE_PREFIX_BASE + u32::from(cidr.prefix_len.min(32)),
        // rev_nat_id in host order, as the kernel side builds its probe; the first 32 bits
        // always match exactly, so only the two sides' agreement matters.
        SrcRange4 {
            rev_nat_id,
            addr_be: (u32::from(cidr.addr) & cidr.netmask()).to_be(),
        },
    )
}

/// The SVC_NAMES value of a served frontend.
fn frontend_name(state: &FrontendState) -> SvcName {
    let kind = match state.kind {
        FrontendKind::ClusterIp => NAME_KIND_CLUSTERIP,
        FrontendKind::NodePort => NAME_KIND_NODEPORT,
        FrontendKind::ExternalIp => NAME_KIND_EXTERNALIP,
        FrontendKind::LoadBalancer => NAME_KIND_LOADBALANCER,
    };
    SvcName::new(
        &state.service.namespace,
        &state.service.name,
        &state.port_name,
        kind,
        NAME_SERVED,
    )
}

/// The SVC_NAMES value of a Service without entries.
fn unserved_name(service: &ObjectRef, reason: UnservedReason) -> SvcName {
    let status = match reason {
        UnservedReason::Headless => NAME_HEADLESS,
        UnservedReason::ExternalName => NAME_EXTERNALNAME,
        UnservedReason::OtherProxy => NAME_OTHER_PROXY,
        UnservedReason::NoIpv4ClusterIp => NAME_NO_IPV4_CLUSTERIP,
        UnservedReason::NoPorts => NAME_NO_PORTS,
    };
    SvcName::new(
        &service.namespace,
        &service.name,
        "",
        NAME_KIND_NONE,
        status,
    )
}

/// The frontend's flags (svc-common SVC_F_*) for what the desired state says.
fn frontend_flags(state: &FrontendState) -> u16 {
    let mut flags = 0;
    if state.kind.is_external() {
        flags |= SVC_F_EXTERNAL;
    }
    match state.kind {
        FrontendKind::NodePort => flags |= SVC_F_NODEPORT,
        FrontendKind::LoadBalancer => flags |= SVC_F_LOADBALANCER,
        FrontendKind::ExternalIp => flags |= SVC_F_EXTERNAL_IP,
        FrontendKind::ClusterIp => {}
    }
    if state.local_policy {
        flags |= SVC_F_LOCAL;
    }
    if state.kind == FrontendKind::LoadBalancer && !state.source_ranges.is_empty() {
        flags |= SVC_F_SOURCE_RANGES;
    }
    if state.affinity_timeout.is_some() {
        flags |= SVC_F_AFFINITY;
    }
    flags
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
            revnats: BTreeSet::new(),
            orphan_slots: Vec::new(),
            orphan_ranges: Vec::new(),
            names: BTreeMap::new(),
        };
        for (id, b) in store.read_backends()? {
            let Some(addr) = backend_addr(&b) else {
                continue;
            };
            r.backend_ids.adopt(addr, id);
            r.backends.insert(id, b);
        }
        r.revnats = store
            .read_revnats()?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let services = store.read_services()?;
        // Frontends are the SCOPE_ALL slot-0 entries; everything else hangs off one.
        for (key, value) in services
            .iter()
            .filter(|(k, _)| k.slot == 0 && k.scope == SCOPE_ALL)
        {
            let Some(frontend) = frontend_of(key) else {
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
        for (key, value) in services
            .iter()
            .filter(|(k, _)| !(k.slot == 0 && k.scope == SCOPE_ALL))
        {
            let scope = key.scope as usize;
            match frontend_of(key)
                .and_then(|f| r.frontends.get_mut(&f))
                .filter(|_| scope < 2)
            {
                Some(installed) if key.slot == 0 => installed.scopes[scope].head = Some(*value),
                Some(installed) => {
                    installed.scopes[scope]
                        .slots
                        .insert(key.slot, value.backend_id);
                }
                None => r.orphan_slots.push(*key),
            }
        }
        let by_rev: BTreeMap<u32, Frontend> = r
            .frontends
            .iter()
            .map(|(f, i)| (i.rev_nat_id, *f))
            .collect();
        for key in store.read_src_ranges()? {
            match by_rev
                .get(&key.1.rev_nat_id)
                .and_then(|f| r.frontends.get_mut(f))
            {
                Some(installed) => {
                    installed.src_ranges.insert(key);
                }
                None => r.orphan_ranges.push(key),
            }
        }
        // Names that belong to nothing are deleted by the first sync's name pass.
        r.names = store.read_names()?.into_iter().collect();
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
        wanted: &BTreeMap<BackendAddr, u8>,
        store: &mut impl MapStore,
        report: &mut SyncReport,
    ) -> BTreeMap<BackendAddr, u32> {
        let mut ready: BTreeMap<BackendAddr, u32> = BTreeMap::new();
        for (addr, backend_state) in wanted {
            if self.backend_ids.get(addr).is_none()
                && self.backends.len() >= self.lb_capacity as usize
            {
                report.errors.push((
                    None,
                    StoreError::Full {
                        map: svc_common::BACKEND4_MAP,
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
                            map: svc_common::BACKEND4_MAP,
                            message: e.to_string(),
                        },
                    ));
                    continue;
                }
            };
            let value = backend_value(addr, *backend_state);
            if self.backends.get(&id) != Some(&value) {
                match store.put_backend(id, &value) {
                    Ok(()) => {
                        self.backends.insert(id, value);
                        report.backends_added += 1;
                    }
                    Err(e) => {
                        report.errors.push((None, e));
                        continue;
                    }
                }
            }
            ready.insert(*addr, id);
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
        let mut wanted: BTreeMap<BackendAddr, u8> = BTreeMap::new();
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
                .is_some_and(|b| b.state == BACKEND_STATE_ACTIVE);
            if *st == BACKEND_STATE_TERMINATING && active_elsewhere {
                *st = BACKEND_STATE_ACTIVE;
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
        if !candidates.is_empty() {
            // Still in a slot of any frontend, or kept for the flows of a terminating one.
            for installed in self.frontends.values() {
                for scope in &installed.scopes {
                    for id in scope.slots.values() {
                        candidates.remove(id);
                    }
                }
            }
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
            match store.del_backend(id) {
                Ok(()) => {
                    if let Some(addr) = self.backends.remove(&id).as_ref().and_then(backend_addr) {
                        self.backend_ids.release(&addr);
                    }
                    report.backends_removed += 1;
                }
                Err(e) => report.errors.push((None, e)),
            }
        }
    }

    pub fn sync(&mut self, desired: &DesiredState, store: &mut impl MapStore) -> SyncReport {
        let mut report = SyncReport::default();
        self.remove_orphans(store, &mut report);

        // 1. Backends: every backend a new flow may get is active; terminating ones stay
        //    (state terminating) so established flows keep them.
        let mut wanted: BTreeMap<BackendAddr, u8> = BTreeMap::new();
        for state in desired.frontends.values() {
            add_wanted(&mut wanted, state);
        }
        let ready = self.ensure_backends(&wanted, store, &mut report);

        // 2. Frontends no longer wanted go first, freeing room in full maps.
        let stale: Vec<Frontend> = self
            .frontends
            .keys()
            .filter(|f| !desired.frontends.contains_key(f))
            .copied()
            .collect();
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
        let referenced: BTreeSet<u32> = self
            .frontends
            .values()
            .flat_map(|i| i.scopes.iter().flat_map(|s| s.slots.values().copied()))
            .chain(ready.values().copied())
            .collect();
        let unused: Vec<u32> = self
            .backends
            .keys()
            .filter(|id| !referenced.contains(id))
            .copied()
            .collect();
        self.delete_backends(&unused, store, &mut report);

        // 6. Names: the unserved Services, then whatever no installed frontend owns.
        let mut wanted_names: BTreeMap<u32, SvcName> = desired
            .unserved
            .iter()
            .enumerate()
            .map(|(n, (svc, why))| (NAME_KEY_UNSERVED + n as u32, unserved_name(svc, *why)))
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
            if *key >= NAME_KEY_UNSERVED && self.names.get(key) != Some(value) {
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
            match store.del_service(&key) {
                Ok(()) => report.slots_removed += 1,
                Err(e) => {
                    report.errors.push((None, e));
                    self.orphan_slots.push(key);
                }
            }
        }
        for key in std::mem::take(&mut self.orphan_ranges) {
            if let Err(e) = store.del_src_range(&key) {
                report.errors.push((None, e));
                self.orphan_ranges.push(key);
            }
        }
    }

    /// Writes one frontend: rev-NAT entry, source ranges, then per scope the slots before
    /// the slot-0 entry that counts them (SCOPE_LOCAL before SCOPE_ALL, whose SVC_F_LOCAL
    /// flag sends packets to it), then removes what is no longer wanted in reverse.
    fn sync_frontend(
        &mut self,
        frontend: &Frontend,
        state: &FrontendState,
        ready: &BTreeMap<BackendAddr, u32>,
        store: &mut impl MapStore,
        report: &mut SyncReport,
    ) -> Result<(), StoreError> {
        let rev_nat_id = self
            .revnat_ids
            .get_or_alloc(frontend)
            .map_err(|e| StoreError::Other {
                map: svc_common::REVNAT4_MAP,
                message: e.to_string(),
            })?;
        if !self.revnats.contains(&rev_nat_id) {
            let value = RevNat4 {
                vip_be: u32::from(frontend.vip).to_be(),
                port_be: frontend.port.to_be(),
                _pad: [0; 2],
            };
            store.put_revnat(rev_nat_id, &value)?;
            self.revnats.insert(rev_nat_id);
        }
        self.sync_name(frontend, rev_nat_id, state, store, report);
        let installed = self.frontends.entry(*frontend).or_default();
        if installed.rev_nat_id != rev_nat_id {
            // Every entry carries the rev-NAT id: rewrite them all.
            installed.scopes = Default::default();
            installed.rev_nat_id = rev_nat_id;
        }

        let flags = frontend_flags(state);
        let ranges: BTreeSet<SrcRangeKey> = if flags & SVC_F_SOURCE_RANGES != 0 {
            state
                .source_ranges
                .iter()
                .map(|c| src_range_key(rev_nat_id, c))
                .collect()
        } else {
            BTreeSet::new()
        };
        for key in ranges.difference(&installed.src_ranges.clone()) {
            store.put_src_range(key)?;
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
        let head = |count: usize| -> Result<Svc4Value, StoreError> {
            Ok(Svc4Value {
                backend_id: state.affinity_timeout.unwrap_or(0),
                count: u16::try_from(count).map_err(|_| StoreError::Other {
                    map: svc_common::SVC4_MAP,
                    message: "more than 65535 backends".into(),
                })?,
                rev_nat_id,
                flags,
            })
        };

        if let Some(local) = &local {
            write_scope(
                store,
                frontend,
                SCOPE_LOCAL,
                &mut installed.scopes[1],
                local,
                head(local.len())?,
                rev_nat_id,
                report,
            )?;
        }
        write_scope(
            store,
            frontend,
            SCOPE_ALL,
            &mut installed.scopes[0],
            &all,
            head(all.len())?,
            rev_nat_id,
            report,
        )?;

        // Removals, now that slot 0 no longer points at them.
        trim_scope(
            store,
            frontend,
            SCOPE_ALL,
            &mut installed.scopes[0],
            all.len(),
            report,
        )?;
        match &local {
            Some(local) => trim_scope(
                store,
                frontend,
                SCOPE_LOCAL,
                &mut installed.scopes[1],
                local.len(),
                report,
            )?,
            None => {
                if installed.scopes[1].head.is_some() {
                    store.del_service(&svc_key(frontend, SCOPE_LOCAL, 0))?;
                    installed.scopes[1].head = None;
                }
                trim_scope(
                    store,
                    frontend,
                    SCOPE_LOCAL,
                    &mut installed.scopes[1],
                    0,
                    report,
                )?;
            }
        }
        for key in installed.src_ranges.clone().difference(&ranges) {
            store.del_src_range(key)?;
            installed.src_ranges.remove(key);
        }
        Ok(())
    }

    fn remove_frontend(
        &mut self,
        frontend: &Frontend,
        store: &mut impl MapStore,
        report: &mut SyncReport,
    ) -> Result<(), StoreError> {
        let Some(installed) = self.frontends.get_mut(frontend) else {
            return Ok(());
        };
        // The SCOPE_ALL head first: from then on no packet finds the frontend.
        for scope in [SCOPE_ALL, SCOPE_LOCAL] {
            let entries = &mut installed.scopes[scope as usize];
            if entries.head.is_some() {
                store.del_service(&svc_key(frontend, scope, 0))?;
                entries.head = None;
            }
        }
        for scope in [SCOPE_ALL, SCOPE_LOCAL] {
            trim_scope(
                store,
                frontend,
                scope,
                &mut installed.scopes[scope as usize],
                0,
                report,
            )?;
        }
        for key in std::mem::take(&mut installed.src_ranges) {
            store.del_src_range(&key)?;
        }
        debug_assert!(installed.is_empty());
        let rev = installed.rev_nat_id;
        if rev != 0 && self.revnats.contains(&rev) {
            store.del_revnat(rev)?;
            self.revnats.remove(&rev);
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

/// Writes slots 1..=n of one scope (only those that differ), then its slot-0 entry.
#[allow(clippy::too_many_arguments)]
fn write_scope(
    store: &mut impl MapStore,
    frontend: &Frontend,
    scope: u8,
    entries: &mut ScopeEntries,
    ids: &[u32],
    head: Svc4Value,
    rev_nat_id: u32,
    report: &mut SyncReport,
) -> Result<(), StoreError> {
    for (i, id) in ids.iter().enumerate() {
        let slot = i as u16 + 1;
        if entries.slots.get(&slot) != Some(id) {
            let value = Svc4Value {
                backend_id: *id,
                count: 0,
                rev_nat_id,
                flags: 0,
            };
            store.put_service(&svc_key(frontend, scope, slot), &value)?;
            entries.slots.insert(slot, *id);
            report.slots_written += 1;
        }
    }
    if entries.head != Some(head) {
        store.put_service(&svc_key(frontend, scope, 0), &head)?;
        entries.head = Some(head);
        report.frontends_written += 1;
    }
    Ok(())
}

/// Deletes the slots of one scope past `count`.
fn trim_scope(
    store: &mut impl MapStore,
    frontend: &Frontend,
    scope: u8,
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
        store.del_service(&svc_key(frontend, scope, slot))?;
        entries.slots.remove(&slot);
        report.slots_removed += 1;
    }
    Ok(())
}

/// Adds the backends `state` wants to `wanted`: active for those new flows may get,
/// terminating (unless active for another frontend) for those only established flows keep.
fn add_wanted(wanted: &mut BTreeMap<BackendAddr, u8>, state: &FrontendState) {
    for b in &state.terminating {
        wanted.entry(*b).or_insert(BACKEND_STATE_TERMINATING);
    }
    let local: &[BackendAddr] = if state.local_policy {
        &state.local_backends
    } else {
        &[]
    };
    for b in state.backends.iter().chain(local) {
        wanted.insert(*b, BACKEND_STATE_ACTIVE);
    }
}

/// An in-memory MapStore with the kernel's capacity behaviour, for tests.
#[derive(Debug, Default, Clone)]
pub struct FakeMaps {
    pub services: BTreeMap<Svc4Key, Svc4Value>,
    pub backends: BTreeMap<u32, Backend4>,
    pub revnats: BTreeMap<u32, RevNat4>,
    pub src_ranges: BTreeSet<SrcRangeKey>,
    pub names: BTreeMap<u32, SvcName>,
    /// Capacity of the names map (None: unlimited).
    pub names_capacity: Option<usize>,
    /// Capacity of the services map (None: unlimited).
    pub services_capacity: Option<usize>,
    /// Every write, in order, for checking the write order.
    pub log: Vec<String>,
}

impl MapStore for FakeMaps {
    fn put_service(&mut self, key: &Svc4Key, value: &Svc4Value) -> Result<(), StoreError> {
        if let Some(cap) = self.services_capacity
            && !self.services.contains_key(key)
            && self.services.len() >= cap
        {
            return Err(StoreError::Full {
                map: svc_common::SVC4_MAP,
            });
        }
        let scope = if key.scope == SCOPE_LOCAL {
            " local"
        } else {
            ""
        };
        self.log.push(format!(
            "put svc{scope} slot {} count {} backend {}",
            key.slot, value.count, value.backend_id
        ));
        self.services.insert(*key, *value);
        Ok(())
    }
    fn del_service(&mut self, key: &Svc4Key) -> Result<(), StoreError> {
        let scope = if key.scope == SCOPE_LOCAL {
            " local"
        } else {
            ""
        };
        self.log.push(format!("del svc{scope} slot {}", key.slot));
        self.services.remove(key);
        Ok(())
    }
    fn put_backend(&mut self, id: u32, value: &Backend4) -> Result<(), StoreError> {
        self.log.push(format!("put backend {id}"));
        self.backends.insert(id, *value);
        Ok(())
    }
    fn del_backend(&mut self, id: u32) -> Result<(), StoreError> {
        self.log.push(format!("del backend {id}"));
        self.backends.remove(&id);
        Ok(())
    }
    fn put_revnat(&mut self, id: u32, value: &RevNat4) -> Result<(), StoreError> {
        self.log.push(format!("put revnat {id}"));
        self.revnats.insert(id, *value);
        Ok(())
    }
    fn del_revnat(&mut self, id: u32) -> Result<(), StoreError> {
        self.log.push(format!("del revnat {id}"));
        self.revnats.remove(&id);
        Ok(())
    }
    fn put_src_range(&mut self, key: &SrcRangeKey) -> Result<(), StoreError> {
        self.log.push(format!("put range /{}", key.0));
        self.src_ranges.insert(*key);
        Ok(())
    }
    fn del_src_range(&mut self, key: &SrcRangeKey) -> Result<(), StoreError> {
        self.log.push(format!("del range /{}", key.0));
        self.src_ranges.remove(key);
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
                map: svc_common::NAMES_MAP,
            });
        }
        self.log.push(format!("put name {key:#x}"));
        self.names.insert(key, *value);
        Ok(())
    }
    fn del_name(&mut self, key: u32) -> Result<(), StoreError> {
        self.log.push(format!("del name {key:#x}"));
        self.names.remove(&key);
        Ok(())
    }
    fn read_names(&self) -> Result<Vec<(u32, SvcName)>, StoreError> {
        Ok(self.names.iter().map(|(k, v)| (*k, *v)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::FrontendState;
    use crate::model::ObjectRef;

    fn fe(vip: [u8; 4], port: u16) -> Frontend {
        Frontend {
            vip: Ipv4Addr::from(vip),
            port,
            proto: Protocol::Tcp,
        }
    }
    fn be(last: u8) -> BackendAddr {
        BackendAddr {
            addr: Ipv4Addr::new(10, 244, 1, last),
            port: 8080,
            proto: Protocol::Tcp,
        }
    }
    fn desired(entries: &[(Frontend, Vec<BackendAddr>)]) -> DesiredState {
        let mut d = DesiredState::default();
        for (f, b) in entries {
            d.frontends.insert(
                *f,
                FrontendState {
                    service: ObjectRef::new("default", "svc"),
                    backends: b.clone(),
                    ..Default::default()
                },
            );
        }
        d
    }

    /// A partial sync of the frontends whose backends changed leaves the maps exactly as a
    /// full sync does: new backends in, the backends only they used out, shared ones kept.
    #[test]
    fn partial_sync_equals_a_full_sync_for_endpoint_changes() {
        let (f1, f2, f3) = (
            fe([10, 96, 0, 1], 80),
            fe([10, 96, 0, 2], 80),
            fe([10, 96, 0, 3], 80),
        );
        let before = desired(&[
            (f1, vec![be(1), be(2)]),
            (f2, vec![be(2), be(3)]),
            (f3, vec![be(4)]),
        ]);
        let mut after = desired(&[
            (f1, vec![be(1), be(5)]),
            (f2, vec![be(3)]),
            (f3, vec![be(4)]),
        ]);
        // be(6) stays for f3's established flows only.
        after.frontends.get_mut(&f3).unwrap().terminating = vec![be(6)];
        let mut full = FakeMaps::default();
        let mut r_full = Reconciler::adopt(&full).unwrap();
        assert!(r_full.sync(&before, &mut full).errors.is_empty());
        let mut part = full.clone();
        let mut r_part = Reconciler::adopt(&part).unwrap();
        assert!(r_full.sync(&after, &mut full).errors.is_empty());
        let report = r_part.sync_partial(&after, &[f1, f2, f3], &mut part);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(part.services, full.services);
        assert_eq!(part.backends, full.backends);
        assert_eq!(part.revnats, full.revnats);
        assert_consistent(&part);
        // be(2) (only f1 and f2 used it) is gone; be(6) is there, terminating.
        assert_eq!(report.backends_removed, 1);
        // A second partial sync of the same state writes nothing.
        let again = r_part.sync_partial(&after, &[f1, f2], &mut part);
        assert!(!again.changed(), "{again:?}");
    }

    /// Checks the invariant a packet relies on: every frontend's count points at existing
    /// slots whose backends exist, with a rev-NAT entry.
    fn assert_consistent(m: &FakeMaps) {
        for (k, v) in m.services.iter().filter(|(k, _)| k.slot == 0) {
            assert!(
                m.revnats.contains_key(&{ v.rev_nat_id }),
                "frontend without revnat"
            );
            for slot in 1..=v.count {
                let s = m
                    .services
                    .get(&Svc4Key { slot, ..*k })
                    .expect("count points past the slots");
                assert!(
                    m.backends.contains_key(&s.backend_id),
                    "slot points at a missing backend"
                );
            }
        }
    }

    fn backends_of(m: &FakeMaps, f: &Frontend) -> Vec<Ipv4Addr> {
        let front = m.services[&svc_key(f, SCOPE_ALL, 0)];
        let mut v: Vec<Ipv4Addr> = (1..=front.count)
            .map(|s| {
                Ipv4Addr::from(u32::from_be(
                    m.backends[&m.services[&svc_key(f, SCOPE_ALL, s)].backend_id].addr_be,
                ))
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn installs_then_writes_nothing_when_unchanged() {
        let mut maps = FakeMaps::default();
        let mut r = Reconciler::adopt(&maps).unwrap();
        let d = desired(&[(fe([10, 96, 0, 10], 80), vec![be(11), be(12), be(13)])]);
        let rep = r.sync(&d, &mut maps);
        assert!(rep.errors.is_empty());
        assert_eq!(
            (rep.backends_added, rep.frontends_written, rep.slots_written),
            (3, 1, 3)
        );
        assert_consistent(&maps);
        assert_eq!(backends_of(&maps, &fe([10, 96, 0, 10], 80)).len(), 3);
        maps.log.clear();
        let rep = r.sync(&d, &mut maps);
        assert!(!rep.changed(), "{rep:?}");
        assert!(maps.log.is_empty());
    }

    #[test]
    fn write_order_is_safe_for_growth_and_shrink() {
        let mut maps = FakeMaps::default();
        let mut r = Reconciler::adopt(&maps).unwrap();
        let f = fe([10, 96, 0, 10], 80);
        r.sync(&desired(&[(f, vec![be(11)])]), &mut maps);
        maps.log.clear();
        r.sync(&desired(&[(f, vec![be(11), be(12), be(13)])]), &mut maps);
        // Backends, then new slots, then the frontend's count.
        assert_eq!(
            maps.log,
            vec![
                "put backend 2",
                "put backend 3",
                "put svc slot 2 count 0 backend 2",
                "put svc slot 3 count 0 backend 3",
                "put svc slot 0 count 3 backend 0"
            ]
        );
        maps.log.clear();
        r.sync(&desired(&[(f, vec![be(13)])]), &mut maps);
        // Slot 1 rewritten, count lowered, then extra slots removed, then unused backends.
        assert_eq!(
            maps.log,
            vec![
                "put svc slot 1 count 0 backend 3",
                "put svc slot 0 count 1 backend 0",
                "del svc slot 2",
                "del svc slot 3",
                "del backend 1",
                "del backend 2"
            ]
        );
        assert_consistent(&maps);
    }

    #[test]
    fn removal_deletes_frontend_first_and_everything_after() {
        let mut maps = FakeMaps::default();
        let mut r = Reconciler::adopt(&maps).unwrap();
        let f = fe([10, 96, 0, 10], 80);
        r.sync(&desired(&[(f, vec![be(11), be(12)])]), &mut maps);
        maps.log.clear();
        r.sync(&DesiredState::default(), &mut maps);
        assert_eq!(maps.log[0], "del svc slot 0");
        assert!(
            maps.services.is_empty() && maps.backends.is_empty() && maps.revnats.is_empty(),
            "{maps:?}"
        );
    }

    #[test]
    fn no_endpoints_gives_count_zero() {
        let mut maps = FakeMaps::default();
        let mut r = Reconciler::adopt(&maps).unwrap();
        let f = fe([10, 96, 0, 11], 80);
        r.sync(&desired(&[(f, vec![])]), &mut maps);
        assert_eq!(maps.services[&svc_key(&f, SCOPE_ALL, 0)].count, 0);
        assert_eq!(maps.services.len(), 1);
        assert_consistent(&maps);
    }

    #[test]
    fn shared_backend_is_kept_until_no_frontend_uses_it() {
        let mut maps = FakeMaps::default();
        let mut r = Reconciler::adopt(&maps).unwrap();
        let (a, b) = (fe([10, 96, 0, 1], 80), fe([10, 96, 0, 2], 80));
        r.sync(&desired(&[(a, vec![be(11)]), (b, vec![be(11)])]), &mut maps);
        assert_eq!(maps.backends.len(), 1);
        r.sync(&desired(&[(b, vec![be(11)])]), &mut maps);
        assert_eq!(maps.backends.len(), 1);
        assert_consistent(&maps);
        r.sync(&DesiredState::default(), &mut maps);
        assert!(maps.backends.is_empty());
    }

    #[test]
    fn full_map_skips_one_frontend_and_keeps_the_rest() {
        let mut maps = FakeMaps {
            services_capacity: Some(4),
            ..Default::default()
        };
        let mut r = Reconciler::adopt(&maps).unwrap();
        let (a, b) = (fe([10, 96, 0, 1], 80), fe([10, 96, 0, 2], 80));
        // a needs 3 entries, b needs 3: only a fits.
        let rep = r.sync(
            &desired(&[(a, vec![be(11), be(12)]), (b, vec![be(13), be(14)])]),
            &mut maps,
        );
        assert_eq!(rep.errors.len(), 1);
        assert!(matches!(rep.errors[0], (Some(f), StoreError::Full { .. }) if f == b));
        assert_eq!(backends_of(&maps, &a).len(), 2);
        assert!(
            !maps.services.contains_key(&svc_key(&b, SCOPE_ALL, 0)),
            "b must not have a frontend pointing at missing slots"
        );
        assert_consistent(&maps);
        // Room appears (a removed): b is installed on the next sync.
        let rep = r.sync(&desired(&[(b, vec![be(13), be(14)])]), &mut maps);
        assert!(rep.errors.is_empty(), "{rep:?}");
        assert_eq!(backends_of(&maps, &b).len(), 2);
        assert_consistent(&maps);
    }

    #[test]
    fn adoption_after_restart_rewrites_nothing() {
        let mut maps = FakeMaps::default();
        let d = desired(&[
            (fe([10, 96, 0, 10], 80), vec![be(11), be(12)]),
            (fe([10, 96, 0, 10], 53), vec![be(13)]),
        ]);
        Reconciler::adopt(&maps).unwrap().sync(&d, &mut maps);
        let before = maps.clone();
        maps.log.clear();
        let mut restarted = Reconciler::adopt(&maps).unwrap();
        let rep = restarted.sync(&d, &mut maps);
        assert!(!rep.changed(), "{rep:?}");
        assert_eq!(maps.services, before.services);
        // New ids continue after the adopted ones.
        let rep = restarted.sync(
            &desired(&[(fe([10, 96, 0, 10], 80), vec![be(11), be(12), be(20)])]),
            &mut maps,
        );
        assert!(rep.errors.is_empty());
        assert!(maps.backends.contains_key(&4), "{:?}", maps.backends.keys());
        assert_consistent(&maps);
    }

    #[test]
    fn orphan_slots_are_removed_on_first_sync() {
        let mut maps = FakeMaps::default();
        let f = fe([10, 96, 0, 10], 80);
        maps.services.insert(
            svc_key(&f, SCOPE_ALL, 3),
            Svc4Value {
                backend_id: 9,
                ..Default::default()
            },
        );
        let mut r = Reconciler::adopt(&maps).unwrap();
        r.sync(&DesiredState::default(), &mut maps);
        assert!(maps.services.is_empty());
    }

    fn named(entries: &[(Frontend, &str, &str, FrontendKind)]) -> DesiredState {
        let mut d = DesiredState::default();
        for (f, svc, port, kind) in entries {
            d.frontends.insert(
                *f,
                FrontendState {
                    service: ObjectRef::new("default", *svc),
                    port_name: port.to_string(),
                    kind: *kind,
                    ..Default::default()
                },
            );
        }
        d
    }

    fn name_of(m: &FakeMaps, key: u32) -> (String, String, String, u8, u8) {
        let n = &m.names[&key];
        (
            n.namespace().into(),
            n.name().into(),
            n.port_name().into(),
            n.kind,
            n.status,
        )
    }

    #[test]
    fn names_follow_frontends_and_unserved_services() {
        let mut maps = FakeMaps::default();
        let mut r = Reconciler::adopt(&maps).unwrap();
        let (a, b) = (fe([10, 96, 0, 10], 80), fe([192, 0, 2, 1], 30080));
        let mut d = named(&[
            (a, "echo", "http", FrontendKind::ClusterIp),
            (b, "web", "", FrontendKind::NodePort),
        ]);
        d.unserved = vec![
            (
                ObjectRef::new("default", "db-alias"),
                UnservedReason::ExternalName,
            ),
            (
                ObjectRef::new("default", "headless"),
                UnservedReason::Headless,
            ),
        ];
        let rep = r.sync(&d, &mut maps);
        assert!(rep.errors.is_empty(), "{rep:?}");
        assert_eq!(rep.names_written, 4);
        // The name right after the rev-NAT entry, before any slot of the frontend.
        let pos = |m: &FakeMaps, s: &str| {
            m.log
                .iter()
                .position(|l| l == s)
                .unwrap_or_else(|| panic!("{s} not in {:?}", m.log))
        };
        assert_eq!(pos(&maps, "put name 0x1"), pos(&maps, "put revnat 1") + 1);
        let rev_a = maps.services[&svc_key(&a, SCOPE_ALL, 0)].rev_nat_id;
        let rev_b = maps.services[&svc_key(&b, SCOPE_ALL, 0)].rev_nat_id;
        assert_eq!(
            name_of(&maps, rev_a),
            (
                "default".into(),
                "echo".into(),
                "http".into(),
                NAME_KIND_CLUSTERIP,
                NAME_SERVED
            )
        );
        assert_eq!(
            name_of(&maps, rev_b),
            (
                "default".into(),
                "web".into(),
                String::new(),
                NAME_KIND_NODEPORT,
                NAME_SERVED
            )
        );
        assert_eq!(
            name_of(&maps, NAME_KEY_UNSERVED),
            (
                "default".into(),
                "db-alias".into(),
                String::new(),
                NAME_KIND_NONE,
                NAME_EXTERNALNAME
            )
        );
        assert_eq!(name_of(&maps, NAME_KEY_UNSERVED + 1).4, NAME_HEADLESS);

        // Unchanged: nothing written.
        maps.log.clear();
        assert!(!r.sync(&d, &mut maps).changed());
        assert!(maps.log.is_empty(), "{:?}", maps.log);

        // A frontend goes: its name goes with it (after its rev-NAT entry); one unserved
        // Service goes and the other moves to key 0: rewritten by diff.
        let mut d2 = named(&[(a, "echo", "http", FrontendKind::ClusterIp)]);
        d2.unserved = vec![(
            ObjectRef::new("default", "headless"),
            UnservedReason::Headless,
        )];
        maps.log.clear();
        let rep = r.sync(&d2, &mut maps);
        assert!(rep.errors.is_empty(), "{rep:?}");
        assert_eq!(
            pos(&maps, &format!("del name {rev_b:#x}")),
            pos(&maps, &format!("del revnat {rev_b}")) + 1
        );
        assert_eq!(maps.names.len(), 2);
        assert_eq!(name_of(&maps, NAME_KEY_UNSERVED).1, "headless");
        assert!(!maps.names.contains_key(&(NAME_KEY_UNSERVED + 1)));

        // The port is renamed: the entry is rewritten in place.
        let d3 = named(&[(a, "echo", "web", FrontendKind::ClusterIp)]);
        r.sync(&d3, &mut maps);
        assert_eq!(maps.names.len(), 1);
        assert_eq!(name_of(&maps, rev_a).2, "web");
        r.sync(&DesiredState::default(), &mut maps);
        assert!(maps.names.is_empty());
    }

    #[test]
    fn names_are_adopted_and_strays_removed() {
        let mut maps = FakeMaps::default();
        let f = fe([10, 96, 0, 10], 80);
        let mut d = named(&[(f, "echo", "http", FrontendKind::ClusterIp)]);
        d.unserved = vec![(
            ObjectRef::new("default", "headless"),
            UnservedReason::Headless,
        )];
        Reconciler::adopt(&maps).unwrap().sync(&d, &mut maps);
        // A name nothing owns (e.g. left by a crash between writes).
        maps.names
            .insert(77, SvcName::new("x", "y", "", 0, NAME_SERVED));
        maps.log.clear();
        let mut restarted = Reconciler::adopt(&maps).unwrap();
        let rep = restarted.sync(&d, &mut maps);
        assert!(rep.errors.is_empty(), "{rep:?}");
        assert_eq!(maps.log, vec!["del name 0x4d"]);
        assert_eq!(maps.names.len(), 2);
    }

    #[test]
    fn a_full_names_map_does_not_stop_the_datapath() {
        let mut maps = FakeMaps {
            names_capacity: Some(0),
            ..Default::default()
        };
        let mut r = Reconciler::adopt(&maps).unwrap();
        let f = fe([10, 96, 0, 10], 80);
        let mut d = named(&[(f, "echo", "http", FrontendKind::ClusterIp)]);
        d.frontends.get_mut(&f).unwrap().backends = vec![be(11)];
        d.unserved = vec![(
            ObjectRef::new("default", "headless"),
            UnservedReason::Headless,
        )];
        let rep = r.sync(&d, &mut maps);
        assert_eq!(rep.errors.len(), 2, "{rep:?}");
        assert!(matches!(rep.errors[0], (Some(e), StoreError::Full { .. }) if e == f));
        assert_eq!(backends_of(&maps, &f).len(), 1);
        assert_consistent(&maps);
        // Room appears: both names are written on the next sync.
        maps.names_capacity = None;
        let rep = r.sync(&d, &mut maps);
        assert!(rep.errors.is_empty(), "{rep:?}");
        assert_eq!((rep.names_written, maps.names.len()), (2, 2));
    }
}
