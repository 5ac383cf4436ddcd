//! Every map the programs use. Names, sizes and layouts come from svc-common, which the
//! agent and svcctl share. All maps are pinned by name under the directory the agent passes
//! to the loader, so svcctl can read them and a restarted agent can adopt them.
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};
use svc_common::{
    AFFINITY4_MAP_SIZE, Affinity4Key, Affinity4Value, BACKEND4_MAP_SIZE, Backend4, CONFIG_MAP_SIZE,
    CT4_MAP_SIZE, Ct4Key, Ct4Value, DatapathConfig4, NAMES_MAP_SIZE, REVNAT4_MAP_SIZE, RevNat4,
    SOCK_REVNAT4_MAP_SIZE, SRC_RANGE4_MAP_SIZE, STATS_MAP_SIZE, SVC4_MAP_SIZE, SockRevNat4Key,
    SockRevNat4Value, SrcRange4, Svc4Key, Svc4Value, SvcName,
};

// The maps only the agent writes (services, backends, rev-NAT, names) are not
// preallocated: the agent sizes them for the largest cluster (--lb-map-max) and the kernel
// allocates entries as they are written, so a small cluster pays for what it has. The maps
// the programs write (conntrack, affinity, socket rev-NAT) stay preallocated LRU maps:
// inserting from a program must not allocate. Sizes here are defaults; the agent sets
// SVC4_SERVICES, SVC4_BACKENDS, SVC4_REVNAT, SVC_NAMES and SVC4_CT at load time.

/// {VIP, port, proto, slot} -> frontend (slot 0) or backend slot (1..=count).
#[map(name = "SVC4_SERVICES")]
pub static SVC4_SERVICES: HashMap<Svc4Key, Svc4Value> =
    HashMap::pinned(SVC4_MAP_SIZE, BPF_F_NO_PREALLOC);

/// Backend id -> pod address and target port.
#[map(name = "SVC4_BACKENDS")]
pub static SVC4_BACKENDS: HashMap<u32, Backend4> =
    HashMap::pinned(BACKEND4_MAP_SIZE, BPF_F_NO_PREALLOC);

/// rev_nat_id -> the Service address replies are translated back to.
#[map(name = "SVC4_REVNAT")]
pub static SVC4_REVNAT: HashMap<u32, RevNat4> =
    HashMap::pinned(REVNAT4_MAP_SIZE, BPF_F_NO_PREALLOC);

/// Per-flow state: which backend a flow was given, and how to reverse-translate replies.
/// LRU so a flood of new flows evicts the oldest instead of failing inserts.
#[map(name = "SVC4_CT")]
pub static SVC4_CT: LruHashMap<Ct4Key, Ct4Value> = LruHashMap::pinned(CT4_MAP_SIZE, 0);

/// sessionAffinity ClientIP: the backend a client was last given, per Service port.
#[map(name = "SVC4_AFFINITY")]
pub static SVC4_AFFINITY: LruHashMap<Affinity4Key, Affinity4Value> =
    LruHashMap::pinned(AFFINITY4_MAP_SIZE, 0);

/// loadBalancerSourceRanges: the source prefixes allowed per rev_nat_id.
#[map(name = "SVC4_SRC_RANGE")]
pub static SVC4_SRC_RANGE: LpmTrie<SrcRange4, u8> = LpmTrie::pinned(SRC_RANGE4_MAP_SIZE, 0);

/// Socket LB: {socket cookie, backend} -> the Service address a node process sent to.
#[map(name = "SVC4_SOCK_RNAT")]
pub static SVC4_SOCK_RNAT: LruHashMap<SockRevNat4Key, SockRevNat4Value> =
    LruHashMap::pinned(SOCK_REVNAT4_MAP_SIZE, 0);

/// rev_nat_id (or NAME_KEY_UNSERVED + n for a Service without entries) -> the Service's
/// namespace/name and port name, for svcctl. The programs never read it: it is declared
/// here only so that it is created, pinned and layout-checked with the other maps (aya
/// creates every map of the object, referenced or not).
#[map(name = "SVC_NAMES")]
pub static SVC_NAMES: HashMap<u32, SvcName> = HashMap::pinned(NAMES_MAP_SIZE, BPF_F_NO_PREALLOC);

/// The load-time globals as the agent set them, for svcctl trace. Never read by the
/// programs (they read the globals); declared here, like SVC_NAMES, to be created, pinned
/// and layout-checked with the other maps.
#[map(name = "SVC_CONFIG")]
pub static SVC_CONFIG: Array<DatapathConfig4> = Array::pinned(CONFIG_MAP_SIZE, 0);

/// Verdict counters, indexed by `svc_common::Verdict`.
#[map(name = "SVC_STATS")]
pub static SVC_STATS: PerCpuArray<u64> = PerCpuArray::pinned(STATS_MAP_SIZE, 0);

/// Counts one program exit. Per-CPU, so no atomics are needed.
#[inline(always)]
pub fn count(verdict: svc_common::Verdict) {
    if let Some(counter) = SVC_STATS.get_ptr_mut(verdict as u32) {
        // SAFETY: the pointer comes from the map lookup and is valid for this CPU.
        unsafe { *counter += 1 };
    }
}
