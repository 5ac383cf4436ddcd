//! Every map the programs use, declared from svc-common's list (`for_each_map!`), which the
//! agent and svcctl derive their handles from too: names, key and value types and default
//! sizes are written once, there. All maps are pinned by name under the directory the
//! agent passes to the loader, so svcctl can read them and a restarted agent can adopt them.
//!
//! The maps only the agent writes (services, backends, rev-NAT, names) are not
//! preallocated (`hash`): the agent sizes them for the largest cluster (--lb-map-max) and
//! the kernel allocates entries as they are written, so a small cluster pays for what it
//! has. The maps the programs write (conntrack, affinity, socket rev-NAT) are preallocated
//! LRU maps (`lru`): inserting from a program must not allocate. Sizes here are defaults;
//! the agent sets SVC4_SERVICES, SVC4_BACKENDS, SVC4_REVNAT, SVC_NAMES and SVC4_CT at load
//! time. aya creates every map of the object, referenced by a program or not, so SVC_NAMES
//! and SVC_CONFIG (read only by svcctl) are declared here too.
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};

/// Declares one `#[map]` static per entry of svc-common's list; the static's name is the
/// map's name (`#[map]` without a name takes the identifier).
macro_rules! declare_maps {
    ($($(#[doc = $doc:literal])* $field:ident: $name:ident = $kind:ident<$($t:ty),*>,
        size $size:expr, sized by $sizing:ident;)*) => {
        $(
            $(#[doc = $doc])*
            #[map]
            pub static $name: declare_maps!(@type $kind<$($t),*>) =
                declare_maps!(@new $kind, $size);
        )*
    };
    (@type hash<$k:ty, $v:ty>) => { HashMap<$k, $v> };
    (@type lru<$k:ty, $v:ty>) => { LruHashMap<$k, $v> };
    (@type lpm<$k:ty, $v:ty>) => { LpmTrie<$k, $v> };
    (@type array<$v:ty>) => { Array<$v> };
    (@type percpu_array<$v:ty>) => { PerCpuArray<$v> };
    (@type ringbuf<>) => { RingBuf };
    (@type percpu_hash<$k:ty, $v:ty>) => { PerCpuHashMap<$k, $v> };
    (@new hash, $size:expr) => { HashMap::pinned($size, BPF_F_NO_PREALLOC) };
    (@new lru, $size:expr) => { LruHashMap::pinned($size, 0) };
    (@new lpm, $size:expr) => { LpmTrie::pinned($size, 0) };
    (@new array, $size:expr) => { Array::pinned($size, 0) };
    (@new percpu_array, $size:expr) => { PerCpuArray::pinned($size, 0) };
    // $size is the ring's size in bytes.
    (@new ringbuf, $size:expr) => { RingBuf::pinned($size, 0) };
    (@new percpu_hash, $size:expr) => { PerCpuHashMap::pinned($size, BPF_F_NO_PREALLOC) };
}

svc_common::for_each_map!(declare_maps);

/// Counts one program exit. Per-CPU, so no atomics are needed.
#[inline(always)]
pub fn count(verdict: svc_common::Verdict) {
    if let Some(counter) = SVC_STATS.get_ptr_mut(verdict as u32) {
        // SAFETY: the pointer comes from the map lookup and is valid for this CPU.
        unsafe { *counter += 1 };
    }
}
