//! Map keys, values, names and sizes shared by the eBPF programs (svc-ebpf), the agent and
//! svcctl. Every type is `#[repr(C)]` with explicit padding and derives bytemuck's
//! Pod/Zeroable, so a layout with a hole fails to compile instead of leaking stack bytes
//! into a map key.
//!
//! Byte order: fields that end in `_be` hold network byte order exactly as the packet
//! carries them (the kernel side compares them against packet bytes without converting).
//! Everything else is host order. On the user side every conversion between these raw
//! structs and typed values happens in one module (`svc_agent::dataplane::layout`).
//!
//! Words: every small enumeration a map field holds (scope, backend state, conntrack kind,
//! frontend kind, why a Service is unserved, the IP protocol, the verdicts) is declared
//! once here with `words!`: its number and its stable label (what svcctl, the JSON
//! documents and the metrics show). Map fields stay plain integers (any bit pattern is a
//! valid map value, and a map written by another version may hold a number this build
//! does not know); `from_raw` tells which word a number is.
//!
//! Maps: [`for_each_map!`] lists every map once (name, kind, key and value types, size);
//! the kernel side declares the maps from it and the agent derives its typed handles and
//! layout checks from it.
//!
//! IPv4 and IPv6 get separate maps (as in Cilium: `lb4_*` / `lb6_*`). The types whose only
//! difference between the families is the address are generic over it ([`SvcKey`],
//! [`Backend`], [`RevNat`], [`CtKey`], [`CtValue`], [`AffinityKey`], [`SrcRange`]): `A` is
//! `u32` for IPv4 and [`Ip6`] for IPv6, with the aliases `Svc4Key` / `Svc6Key` and so on.
//! The kernel side writes each rule once, generic over the family, and gets one copy per
//! family. Generic structs cannot derive bytemuck's Pod (the derive cannot check padding
//! for every `A`), so `family_pod!` implements it for the two instances after asserting
//! that each one's size is the sum of its fields' sizes.
#![no_std]

use bytemuck::{Pod, Zeroable};

/// Declares a word: a `#[repr]` enum of the numbers a map field may hold, each with its
/// stable label. Generates `ALL`, `raw()`, `from_raw()`, `label()` and `Display` (the
/// label).
macro_rules! words {
    ($(#[$meta:meta])* pub enum $name:ident: $repr:ty {
        $($(#[doc = $doc:literal])* $var:ident = $val:literal => $label:literal,)*
    }) => {
        $(#[$meta])*
        #[repr($repr)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[doc = $doc])* $var = $val,)*
        }
        impl $name {
            /// Every word, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$var,)*];
            /// The number the maps hold.
            pub const fn raw(self) -> $repr {
                self as $repr
            }
            /// The word of a number read from a map; None for a number no word has.
            pub const fn from_raw(raw: $repr) -> Option<$name> {
                match raw {
                    $($val => Some($name::$var),)*
                    _ => None,
                }
            }
            /// The stable label (svcctl, JSON documents, metrics).
            pub const fn label(self) -> &'static str {
                match self {
                    $($name::$var => $label,)*
                }
            }
        }
        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(self.label())
            }
        }
    };
}

words! {
    /// The IP protocols a Service port can have in the datapath (the protocol number of
    /// the IPv4 header).
    pub enum Protocol: u8 {
        Tcp = 6 => "TCP",
        Udp = 17 => "UDP",
        /// Translated by address only: SCTP's CRC32c covers the SCTP packet but not the IP
        /// header, so a frontend whose backends listen on its own port needs no checksum
        /// update (svc-ebpf/src/sctp.rs). The agent serves no SCTP frontend that would need
        /// a port change.
        Sctp = 132 => "SCTP",
    }
}

/// The protocol numbers, for `match` arms on the kernel side.
pub const PROTO_TCP: u8 = Protocol::Tcp.raw();
pub const PROTO_UDP: u8 = Protocol::Udp.raw();
pub const PROTO_SCTP: u8 = Protocol::Sctp.raw();

words! {
    /// How the programs tell a new flow's source is a pod (kube-proxy's detect-local
    /// modes, as the datapath can test them; DatapathConfig4::detect_local and the
    /// DETECT_LOCAL global).
    pub enum DetectLocal: u32 {
        /// Unknown (no pod CIDR given): no source is a pod, and ClusterIP traffic is never
        /// masqueraded (kube-proxy's no-op detector).
        None = 0 => "none",
        /// The source address is inside one of SVC4_POD_CIDRS (kube-proxy's ClusterCIDR
        /// and NodeCIDR modes).
        Cidr = 1 => "cidr",
        /// The packet entered through an interface in SVC_POD_IFACES (kube-proxy's
        /// InterfaceNamePrefix and BridgeInterface modes).
        Interface = 2 => "interface",
    }
}

// ---------------------------------------------------------------------------------------
// The maps, listed once.
// ---------------------------------------------------------------------------------------

/// Calls `$callback!` with every map of the datapath, once: the kernel side declares the
/// maps from it (svc-ebpf/src/maps.rs) and the agent derives its typed handles, the pins'
/// layout checks and the map sizes from it (svc-agent/src/dataplane/maps.rs). Each entry:
///
/// `field: NAME = kind<types>, size DEFAULT_SIZE, sized by SIZING;`
///
/// - `field`: the agent's name for its handle; `NAME`: the map's name in the object file,
///   in `bpftool map` and as the pin's file name (BPF object names have at most 15
///   characters);
/// - `kind`: `hash` (not preallocated: the agent writes it and sizes it for the largest
///   cluster), `lru` (preallocated LRU hash: the programs insert into it, and inserting
///   from a program must not allocate), `lpm` (LPM trie), `array`, `percpu_array`,
///   `percpu_hash` (per-CPU hash, not preallocated: only the agent inserts);
/// - `types`: key and value (arrays: value only; their key is the u32 index);
/// - `DEFAULT_SIZE`: max_entries in the object file; `SIZING`: what the agent sets at
///   load time (`lb`: --lb-map-max, `names`: --lb-map-max plus room for the unserved
///   Services, `ct`: --ct-map-max, `fixed`: the default).
#[macro_export]
macro_rules! for_each_map {
    ($callback:ident) => {
        $callback! {
            /// {VIP, port, proto, scope, slot} -> frontend (slot 0) or backend slot
            /// (1..=count).
            services: SVC4_SERVICES = hash<$crate::Svc4Key, $crate::Svc4Value>,
                size $crate::SVC4_MAP_SIZE, sized by lb;
            /// Backend id -> pod address and target port.
            backends: SVC4_BACKENDS = hash<u32, $crate::Backend4>,
                size $crate::BACKEND4_MAP_SIZE, sized by lb;
            /// rev_nat_id -> the Service address replies are translated back to.
            revnat: SVC4_REVNAT = hash<u32, $crate::RevNat4>,
                size $crate::REVNAT4_MAP_SIZE, sized by lb;
            /// Per-flow state: which backend a flow was given, and how to reverse-translate
            /// replies. LRU, so a flood of new flows evicts the oldest instead of failing.
            ct: SVC4_CT = lru<$crate::Ct4Key, $crate::Ct4Value>,
                size $crate::CT4_MAP_SIZE, sized by ct;
            /// sessionAffinity ClientIP: the backend a client was last given, per Service
            /// port.
            affinity: SVC4_AFFINITY = lru<$crate::Affinity4Key, $crate::Affinity4Value>,
                size $crate::AFFINITY4_MAP_SIZE, sized by fixed;
            /// loadBalancerSourceRanges: the source prefixes allowed per rev_nat_id.
            src_ranges: SVC4_SRC_RANGE = lpm<$crate::SrcRange4, u8>,
                size $crate::SRC_RANGE4_MAP_SIZE, sized by fixed;
            /// The service CIDRs (ServiceCIDR objects, else --service-cluster-ip-range):
            /// {prefix, address (network order)} -> 1. A packet no frontend takes, to an
            /// address inside them that is no ClusterIP, is dropped.
            service_cidrs: SVC4_SVC_CIDR = lpm<u32, u8>,
                size $crate::SVC_CIDR4_MAP_SIZE, sized by fixed;
            /// Every allocated ClusterIP (network order) -> a [`ClusterIpUse`]: a packet to
            /// it on a port/protocol no frontend has is rejected (kube-proxy nftables'
            /// `cluster-ips` set), or left alone when another proxy owns the Service.
            cluster_ips: SVC4_CLUSTERIPS = hash<u32, u8>,
                size $crate::CLUSTERIP4_MAP_SIZE, sized by lb;
            /// One entry: the range of addresses SVC4_CLUSTERIPS and SVC4_SVC_CIDR cover
            /// (an [`AddrRange4`]). A packet no frontend takes, to an address outside it,
            /// needs neither lookup (an array lookup the verifier inlines).
            unserved_range: SVC4_SVC_RANGE = array<$crate::AddrRange4>,
                size $crate::SVC_RANGE4_MAP_SIZE, sized by fixed;
            /// Socket LB: {socket cookie, backend} -> the Service address a node process
            /// sent to.
            sock_revnat: SVC4_SOCK_RNAT = lru<$crate::SockRevNat4Key, $crate::SockRevNat4Value>,
                size $crate::SOCK_REVNAT4_MAP_SIZE, sized by fixed;
            /// IPv4 fragments: {source, destination, IPv4 id, protocol} of a datagram whose
            /// first fragment went through the programs -> the addresses its later
            /// fragments get (they carry no ports to look a flow up with).
            frags: SVC4_FRAG = lru<$crate::Frag4Key, $crate::Frag4Value>,
                size $crate::FRAG4_MAP_SIZE, sized by fixed;
            /// rev_nat_id (or NAME_KEY_UNSERVED + n for a Service without entries) -> the
            /// Service's namespace/name and port name, for svcctl. The programs never read
            /// it: it is declared on the kernel side only so that it is created, pinned and
            /// layout-checked with the other maps.
            names: SVC_NAMES = hash<u32, $crate::SvcName>,
                size $crate::NAMES_MAP_SIZE, sized by names;
            /// Index -> one problem of the agent's input (what was skipped, where, why), for
            /// svcctl. Never read by the programs, like SVC_NAMES.
            problems: SVC_PROBLEMS = hash<u32, $crate::ProblemText>,
                size $crate::PROBLEMS_MAP_SIZE, sized by fixed;
            /// The load-time globals as the agent set them, for svcctl trace (never read by
            /// the programs, which read the globals).
            config: SVC_CONFIG = array<$crate::DatapathConfig4>,
                size $crate::CONFIG_MAP_SIZE, sized by fixed;
            /// Verdict counters, indexed by `Verdict`.
            stats: SVC_STATS = percpu_array<u64>,
                size $crate::STATS_MAP_SIZE, sized by fixed;
            /// Detect-local by address (DetectLocal::Cidr): the pod CIDRs (the cluster's,
            /// or this node's podCIDRs); key data: the prefix, network order; value 1.
            pod_cidrs: SVC4_POD_CIDRS = lpm<u32, u8>,
                size $crate::POD_CIDRS4_MAP_SIZE, sized by fixed;
            /// Detect-local by interface (DetectLocal::Interface): ifindex -> 1 for the
            /// interfaces pod traffic enters through.
            pod_ifaces: SVC_POD_IFACES = hash<u32, u32>,
                size $crate::POD_IFACES_MAP_SIZE, sized by fixed;
            /// SVC4_SERVICES for IPv6 frontends.
            services6: SVC6_SERVICES = hash<$crate::Svc6Key, $crate::Svc6Value>,
                size $crate::SVC6_MAP_SIZE, sized by lb;
            /// SVC4_BACKENDS for IPv6 backends. Backend and rev-NAT ids come from one
            /// allocator for both families, so an id names one thing in either map.
            backends6: SVC6_BACKENDS = hash<u32, $crate::Backend6>,
                size $crate::BACKEND6_MAP_SIZE, sized by lb;
            /// SVC4_REVNAT for IPv6 frontends.
            revnat6: SVC6_REVNAT = hash<u32, $crate::RevNat6>,
                size $crate::REVNAT6_MAP_SIZE, sized by lb;
            /// SVC4_CT for IPv6 flows.
            ct6: SVC6_CT = lru<$crate::Ct6Key, $crate::Ct6Value>,
                size $crate::CT6_MAP_SIZE, sized by ct;
            /// SVC4_AFFINITY for IPv6 clients.
            affinity6: SVC6_AFFINITY = lru<$crate::Affinity6Key, $crate::Affinity4Value>,
                size $crate::AFFINITY6_MAP_SIZE, sized by fixed;
            /// SVC4_SRC_RANGE for IPv6 sources (the prefix length counts 32 bits of
            /// rev_nat_id, then up to 128 address bits).
            src_ranges6: SVC6_SRC_RANGE = lpm<$crate::SrcRange6, u8>,
                size $crate::SRC_RANGE6_MAP_SIZE, sized by fixed;
            /// SVC4_POD_CIDRS for IPv6 pod CIDRs.
            pod_cidrs6: SVC6_POD_CIDRS = lpm<$crate::Ip6, u8>,
                size $crate::POD_CIDRS6_MAP_SIZE, sized by fixed;
            /// SVC4_CLUSTERIPS for IPv6 ClusterIPs (key: [`Ip6`]).
            cluster_ips6: SVC6_CLUSTERIPS = hash<$crate::Ip6, u8>,
                size $crate::CLUSTERIP6_MAP_SIZE, sized by lb;
            /// SVC4_SVC_CIDR for IPv6 service CIDRs (key data: [`Ip6`]).
            service_cidrs6: SVC6_SVC_CIDR = lpm<$crate::Ip6, u8>,
                size $crate::SVC_CIDR6_MAP_SIZE, sized by fixed;
            /// SVC4_SVC_RANGE for IPv6: one [`AddrRange6`].
            unserved_range6: SVC6_SVC_RANGE = array<$crate::AddrRange6>,
                size $crate::SVC_RANGE6_MAP_SIZE, sized by fixed;
            /// SVC4_FRAG for IPv6 fragments (fragment headers).
            frags6: SVC6_FRAG = lru<$crate::Frag6Key, $crate::Frag6Value>,
                size $crate::FRAG6_MAP_SIZE, sized by fixed;
            /// Scratch space (one per-CPU [`Frag6Entry`]) where the IPv6 packet path builds
            /// an SVC6_FRAG entry. Never read outside the programs.
            frag6_tmp: SVC6_FRAG_TMP = percpu_array<$crate::Frag6Entry>,
                size 1, sized by fixed;
            /// SVC4_SOCK_RNAT for IPv6 sockets (recvmsg6).
            sock_revnat6: SVC6_SOCK_RNAT = lru<$crate::SockRevNat6Key, $crate::SockRevNat6Value>,
                size $crate::SOCK_REVNAT6_MAP_SIZE, sized by fixed;
            /// svcctl monitor's switch: one [`MonitorControl`], written by svcctl monitor
            /// (on, until when, which verdicts, the sampling) and by the agent (the node's
            /// name). The programs read it once per packet: while it is off, that one array
            /// lookup is all monitoring costs.
            monitor: SVC_MONITOR = array<$crate::MonitorControl>,
                size 1, sized by fixed;
            /// svcctl monitor's events: one [`MonitorEvent`] per reported packet, in a BPF
            /// ring buffer of MONITOR_RING_BYTES (a `ringbuf` has no keys or values; its size
            /// is in bytes). Written only while SVC_MONITOR is on.
            events: SVC_EVENTS = ringbuf<>,
                size $crate::MONITOR_RING_BYTES, sized by fixed;
            /// Per-Service counters: rev_nat_id (both families: one id space) -> a
            /// [`ServiceStats`] per CPU. The agent creates a zeroed entry when it allocates
            /// a frontend's rev_nat_id and deletes it with the frontend; the programs only
            /// look entries up and add to them (never insert). Per-CPU, so no atomics.
            service_stats: SVC_SVC_STATS = percpu_hash<u32, $crate::ServiceStats>,
                size $crate::SERVICE_STATS_MAP_SIZE, sized by lb;
        }
    };
}

macro_rules! map_name_consts {
    ($($(#[doc = $doc:literal])* $field:ident: $name:ident = $kind:ident<$($t:ty),*>,
        size $size:expr, sized by $sizing:ident;)*) => {
        /// The maps' names (also the file names of the pins under the agent's bpffs
        /// directory), from [`for_each_map!`].
        pub mod map_names {
            $(
                #[allow(missing_docs)]
                pub const $name: &str = stringify!($name);
            )*
            /// Every map, in [`for_each_map!`](crate::for_each_map) order.
            pub const ALL: &[&str] = &[$($name,)*];
        }
    };
}
for_each_map!(map_name_consts);

/// The default capacity of the maps the agent writes (services, backends, rev-NAT; the
/// agent's --lb-map-max, like Cilium's --bpf-lb-map-max). Those maps are not preallocated,
/// so a large capacity costs nothing until it is used.
pub const DEFAULT_LB_MAP_MAX: u32 = 262_144;
/// Frontend slots plus one slot per backend of every service port.
pub const SVC4_MAP_SIZE: u32 = DEFAULT_LB_MAP_MAX;
/// The IPv6 maps take the IPv4 ones' sizes: the agent sizes both from one flag.
pub const SVC6_MAP_SIZE: u32 = SVC4_MAP_SIZE;
pub const BACKEND6_MAP_SIZE: u32 = BACKEND4_MAP_SIZE;
pub const REVNAT6_MAP_SIZE: u32 = REVNAT4_MAP_SIZE;
pub const CT6_MAP_SIZE: u32 = CT4_MAP_SIZE;
pub const AFFINITY6_MAP_SIZE: u32 = AFFINITY4_MAP_SIZE;
pub const SRC_RANGE6_MAP_SIZE: u32 = SRC_RANGE4_MAP_SIZE;
pub const POD_CIDRS6_MAP_SIZE: u32 = POD_CIDRS4_MAP_SIZE;
pub const SOCK_REVNAT6_MAP_SIZE: u32 = SOCK_REVNAT4_MAP_SIZE;
pub const CLUSTERIP6_MAP_SIZE: u32 = CLUSTERIP4_MAP_SIZE;
pub const SVC_CIDR6_MAP_SIZE: u32 = SVC_CIDR4_MAP_SIZE;
pub const SVC_RANGE6_MAP_SIZE: u32 = 1;
pub const FRAG6_MAP_SIZE: u32 = FRAG4_MAP_SIZE;
pub const BACKEND4_MAP_SIZE: u32 = DEFAULT_LB_MAP_MAX;
pub const REVNAT4_MAP_SIZE: u32 = DEFAULT_LB_MAP_MAX;
/// Two entries per flow (forward and reply). LRU maps evict in per-CPU batches before they
/// are full, so this is sized well above the flows we expect to hold.
pub const CT4_MAP_SIZE: u32 = 262144;
pub const AFFINITY4_MAP_SIZE: u32 = 65536;
pub const SOCK_REVNAT4_MAP_SIZE: u32 = 65536;
/// Fragmented datagrams in flight (Cilium's default for its fragment map). An entry is
/// needed only while the datagram's fragments pass, microseconds to milliseconds; the LRU
/// map evicts the oldest first.
pub const FRAG4_MAP_SIZE: u32 = 8192;
pub const SRC_RANGE4_MAP_SIZE: u32 = 16384;
/// Service CIDRs: a cluster has one or two (one per family) per ServiceCIDR object.
pub const SVC_CIDR4_MAP_SIZE: u32 = 1024;
/// One entry per ClusterIP, at most one per Service: sized with the other maps the agent
/// writes (--lb-map-max).
pub const CLUSTERIP4_MAP_SIZE: u32 = DEFAULT_LB_MAP_MAX;
/// One entry per rev_nat_id plus the Services that get no entries.
pub const NAMES_MAP_SIZE: u32 = REVNAT4_MAP_SIZE + NAMES_UNSERVED_MAX;
/// Room in SVC_NAMES for Services without datapath entries.
pub const NAMES_UNSERVED_MAX: u32 = 16384;
/// Pod CIDRs the programs can tell apart (--cluster-cidr, or the Node's podCIDRs).
pub const POD_CIDRS4_MAP_SIZE: u32 = 256;
/// Pod interfaces of the interface detect-local modes (one per pod on a node with veths).
pub const POD_IFACES_MAP_SIZE: u32 = 16384;
/// SVC_SVC_STATS: one entry per rev_nat_id (rev-NAT ids run from 1 to --lb-map-max).
///
/// A per-CPU *hash*, not an array indexed by rev_nat_id: an array is preallocated for
/// every possible id and every possible CPU, [`ServiceStats`] (96 bytes) x 262,144 ids x
/// 64 CPUs = 1.6 GB, whatever the cluster holds. The hash is not preallocated
/// (BPF_F_NO_PREALLOC): an entry costs 96 bytes per possible CPU only once the agent
/// writes it, so 10,000 frontends on 64 CPUs cost about 61 MB and a small cluster next to
/// nothing; the price is a hash lookup per packet of a Service instead of an array index.
pub const SERVICE_STATS_MAP_SIZE: u32 = DEFAULT_LB_MAP_MAX;
/// Problems svcctl can show; the agent writes the first PROBLEMS_MAP_SIZE - 1 and a last
/// entry that counts the rest.
pub const PROBLEMS_MAP_SIZE: u32 = 4096;

/// Program names as they appear in the object file (and in `bpftool prog`).
pub const TC_PROG: &str = "svc_tc_ingress";
pub const XDP_PROG: &str = "svc_xdp";
/// Socket-level programs for traffic the node's own processes originate.
pub const CONNECT4_PROG: &str = "svc_connect4";
pub const SENDMSG4_PROG: &str = "svc_sendmsg4";
pub const RECVMSG4_PROG: &str = "svc_recvmsg4";
pub const CONNECT6_PROG: &str = "svc_connect6";
pub const SENDMSG6_PROG: &str = "svc_sendmsg6";
pub const RECVMSG6_PROG: &str = "svc_recvmsg6";
/// An XDP program that only passes: the benchmark's per-packet floor (never attached).
pub const BENCH_PASS_PROG: &str = "svc_bench_pass";

// ---------------------------------------------------------------------------------------
// Services map: one frontend entry (slot 0) and `count` backend-slot entries (1..=count)
// per {VIP, port, protocol}. Cilium's lb4_key / lb4_service model.
// ---------------------------------------------------------------------------------------

/// An IPv6 address as the maps hold it: four 32-bit words, each in network order as the
/// packet carries it (word `i` is bytes `4i..4i+4` of the address). Words rather than
/// bytes: the kernel side compares and copies them four at a time.
pub type Ip6 = [u32; 4];

/// The [`Ip6`] of an address's 16 bytes.
pub const fn ip6_from_octets(o: [u8; 16]) -> Ip6 {
    [
        u32::from_ne_bytes([o[0], o[1], o[2], o[3]]),
        u32::from_ne_bytes([o[4], o[5], o[6], o[7]]),
        u32::from_ne_bytes([o[8], o[9], o[10], o[11]]),
        u32::from_ne_bytes([o[12], o[13], o[14], o[15]]),
    ]
}

/// An [`Ip6`]'s 16 bytes, as the packet carries them.
pub const fn ip6_octets(a: Ip6) -> [u8; 16] {
    let (w0, w1, w2, w3) = (
        a[0].to_ne_bytes(),
        a[1].to_ne_bytes(),
        a[2].to_ne_bytes(),
        a[3].to_ne_bytes(),
    );
    [
        w0[0], w0[1], w0[2], w0[3], w1[0], w1[1], w1[2], w1[3], w2[0], w2[1], w2[2], w2[3], w3[0],
        w3[1], w3[2], w3[3],
    ]
}

/// Implements Pod and Zeroable for the IPv4 (`u32`) and IPv6 ([`Ip6`]) instances of a
/// struct generic over its address, after asserting at compile time that each instance's
/// size is the sum of its fields' (no padding the derive would have refused).
macro_rules! family_pod {
    ($name:ident { $($field:ty),+ $(,)? }) => {
        family_pod!(@one $name, u32, { $($field),+ });
        family_pod!(@one $name, Ip6, { $($field),+ });
    };
    (@one $name:ident, $a:ty, { $($field:ty),+ }) => {
        const _: () = {
            #[allow(dead_code)]
            type A = $a;
            assert!(core::mem::size_of::<$name<$a>>() == 0 $(+ core::mem::size_of::<$field>())+);
        };
        // SAFETY: repr(C), Copy, every field Pod, and no padding (asserted above).
        unsafe impl Zeroable for $name<$a> {}
        unsafe impl Pod for $name<$a> {}
    };
}

/// SVC4_SERVICES / SVC6_SERVICES key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SvcKey<A> {
    /// Service address (ClusterIP), network order.
    pub vip_be: A,
    /// Service port, network order.
    pub port_be: u16,
    /// 0 = the frontend entry; 1..=count = backend slots.
    pub slot: u16,
    /// A [`Protocol`].
    pub proto: u8,
    /// A [`Scope`].
    pub scope: u8,
    pub _pad: [u8; 2],
}
family_pod!(SvcKey { A, u16, u16, u8, u8, [u8; 2] });
pub type Svc4Key = SvcKey<u32>;
pub type Svc6Key = SvcKey<Ip6>;

words! {
    /// Svc4Key::scope: which slot list of a frontend an entry belongs to.
    pub enum Scope: u8 {
        /// Every usable backend.
        All = 0 => "all",
        /// Only this node's backends; present for frontends with SVC_F_LOCAL (traffic
        /// policy Local), its slot 0 counts them.
        Local = 1 => "local",
    }
}

/// The scope numbers, for the kernel side.
pub const SCOPE_ALL: u8 = Scope::All.raw();
pub const SCOPE_LOCAL: u8 = Scope::Local.raw();

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct Svc4Value {
    /// Backend slots: the id in SVC4_BACKENDS. Frontend (slot 0): the session affinity
    /// timeout in seconds when SVC_F_AFFINITY is set (as Cilium's union), else 0.
    pub backend_id: u32,
    /// Frontend and slots: the id in SVC4_REVNAT, unique per {VIP, port, protocol}. 32
    /// bits (Cilium's is 16), so more than 65535 frontends fit.
    pub rev_nat_id: u32,
    /// Frontend: number of backend slots (0 = no endpoints: reject). Backend slots: 0.
    pub count: u16,
    /// Frontend: SVC_F_* bits.
    pub flags: u16,
}

/// The IPv6 services map's value: the same as IPv4's (ids and counts, no address).
pub type Svc6Value = Svc4Value;

// Flag bits of a frontend's Svc4Value::flags (slot 0, SCOPE_ALL entry).

/// A NodePort, externalIP or LoadBalancer address: externalTrafficPolicy applies, and
/// with policy Cluster every flow is masqueraded.
pub const SVC_F_EXTERNAL: u16 = 1 << 0;
/// Traffic policy Local (internalTrafficPolicy for ClusterIPs, externalTrafficPolicy for
/// external addresses): a SCOPE_LOCAL entry lists this node's backends.
pub const SVC_F_LOCAL: u16 = 1 << 1;
/// The address is one of the node's (NodePort).
pub const SVC_F_NODEPORT: u16 = 1 << 2;
/// A status.loadBalancer.ingress IP.
pub const SVC_F_LOADBALANCER: u16 = 1 << 3;
/// loadBalancerSourceRanges apply: sources not in SVC4_SRC_RANGE are dropped.
pub const SVC_F_SOURCE_RANGES: u16 = 1 << 4;
/// sessionAffinity: ClientIP; the timeout is in backend_id.
pub const SVC_F_AFFINITY: u16 = 1 << 5;
/// A spec.externalIPs address.
pub const SVC_F_EXTERNAL_IP: u16 = 1 << 6;

/// Every SVC_F_* bit with its label, in bit order.
pub const SVC_FLAG_LABELS: [(u16, &str); 7] = [
    (SVC_F_EXTERNAL, "external"),
    (SVC_F_LOCAL, "policy-local"),
    (SVC_F_NODEPORT, "nodeport"),
    (SVC_F_LOADBALANCER, "loadbalancer"),
    (SVC_F_SOURCE_RANGES, "source-ranges"),
    (SVC_F_AFFINITY, "affinity"),
    (SVC_F_EXTERNAL_IP, "externalip"),
];

words! {
    /// How a frontend address came to be: a frontend's kind (its SVC_F_* kind bits, see
    /// [`FrontendKind::flags`]) and SvcName::kind of a served frontend.
    pub enum FrontendKind: u8 {
        /// spec.clusterIP(s).
        ClusterIp = 0 => "clusterip",
        /// A node address (nodePortAddresses) at spec.ports[].nodePort.
        NodePort = 1 => "nodeport",
        /// spec.externalIPs.
        ExternalIp = 2 => "externalip",
        /// status.loadBalancer.ingress[].ip.
        LoadBalancer = 3 => "loadbalancer",
    }
}

impl FrontendKind {
    /// The kind as Kubernetes users write it, for messages (`ClusterIP`, `NodePort`, ...).
    pub const fn title(self) -> &'static str {
        match self {
            FrontendKind::ClusterIp => "ClusterIP",
            FrontendKind::NodePort => "NodePort",
            FrontendKind::ExternalIp => "externalIP",
            FrontendKind::LoadBalancer => "LoadBalancer IP",
        }
    }

    /// NodePort, externalIP and LoadBalancer addresses: externalTrafficPolicy applies.
    pub const fn is_external(self) -> bool {
        !matches!(self, FrontendKind::ClusterIp)
    }

    /// The SVC_F_* bits that say this kind.
    pub const fn flags(self) -> u16 {
        match self {
            FrontendKind::ClusterIp => 0,
            FrontendKind::NodePort => SVC_F_EXTERNAL | SVC_F_NODEPORT,
            FrontendKind::ExternalIp => SVC_F_EXTERNAL | SVC_F_EXTERNAL_IP,
            FrontendKind::LoadBalancer => SVC_F_EXTERNAL | SVC_F_LOADBALANCER,
        }
    }

    /// The kind a frontend's flags say: the first of nodeport, loadbalancer, externalip
    /// that is set, else clusterip (a mix is an inconsistency svcctl reports).
    pub const fn of_flags(flags: u16) -> FrontendKind {
        if flags & SVC_F_NODEPORT != 0 {
            FrontendKind::NodePort
        } else if flags & SVC_F_LOADBALANCER != 0 {
            FrontendKind::LoadBalancer
        } else if flags & SVC_F_EXTERNAL_IP != 0 {
            FrontendKind::ExternalIp
        } else {
            FrontendKind::ClusterIp
        }
    }
}

// Written out: `words!` declares the enum, so it cannot carry `#[default]`.
#[allow(clippy::derivable_impls)]
impl Default for FrontendKind {
    fn default() -> Self {
        FrontendKind::ClusterIp
    }
}

/// The SVC_F_* bits that make up a frontend's kind.
pub const SVC_KIND_FLAGS: u16 =
    SVC_F_EXTERNAL | SVC_F_NODEPORT | SVC_F_LOADBALANCER | SVC_F_EXTERNAL_IP;

// ---------------------------------------------------------------------------------------
// Backends map: id -> pod address and target port.
// ---------------------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Backend<A> {
    /// Pod (endpoint) address, network order.
    pub addr_be: A,
    /// Target port, network order.
    pub port_be: u16,
    /// A [`Protocol`].
    pub proto: u8,
    /// A [`BackendState`].
    pub state: u8,
}
family_pod!(Backend { A, u16, u8, u8 });
pub type Backend4 = Backend<u32>;
pub type Backend6 = Backend<Ip6>;

words! {
    /// Backend4::state.
    pub enum BackendState: u8 {
        /// New flows may get it.
        Active = 0 => "active",
        /// Kept for the flows it already has, never chosen for a new one.
        Terminating = 1 => "terminating",
    }
}

/// The backend state numbers, for the kernel side.
pub const BACKEND_STATE_ACTIVE: u8 = BackendState::Active.raw();
pub const BACKEND_STATE_TERMINATING: u8 = BackendState::Terminating.raw();

// ---------------------------------------------------------------------------------------
// Reverse NAT map: rev_nat_id (widened to u32) -> the service address replies must carry.
// ---------------------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RevNat<A> {
    pub vip_be: A,
    pub port_be: u16,
    pub _pad: [u8; 2],
}
family_pod!(RevNat { A, u16, [u8; 2] });
pub type RevNat4 = RevNat<u32>;
pub type RevNat6 = RevNat<Ip6>;

// ---------------------------------------------------------------------------------------
// Conntrack (LRU hash). Every translated flow has two entries:
// - CT_KIND_SERVICE keyed by the client's original tuple {client, VIP, client port,
//   service port}: which backend the flow was given. The VIP in the key keeps entries
//   unique per service (Cilium #11810).
// - CT_KIND_REPLY keyed by the reply tuple as it leaves the backend {backend, client,
//   target port, client port}: which service address replies are reverse-translated to.
// ---------------------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey<A> {
    pub saddr_be: A,
    pub daddr_be: A,
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    /// A [`CtKind`].
    pub kind: u8,
    pub _pad: [u8; 2],
}
family_pod!(CtKey { A, A, u16, u16, u8, u8, [u8; 2] });
pub type Ct4Key = CtKey<u32>;
pub type Ct6Key = CtKey<Ip6>;

words! {
    /// Ct4Key::kind: which of a flow's two entries this is.
    pub enum CtKind: u8 {
        /// Keyed by the client's original tuple: the backend the flow was given.
        Service = 1 => "service",
        /// Keyed by the tuple replies leave the backend with: how to translate them back.
        Reply = 2 => "reply",
    }
}

/// The conntrack kind numbers, for the kernel side.
pub const CT_KIND_SERVICE: u8 = CtKind::Service.raw();
pub const CT_KIND_REPLY: u8 = CtKind::Reply.raw();

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtValue<A> {
    /// bpf_ktime_get_ns() when the flow was created (CLOCK_MONOTONIC).
    pub created_ns: u64,
    /// bpf_ktime_get_ns() of the last packet in either direction.
    pub last_seen_ns: u64,
    /// The backend chosen for this flow (both entries of the flow).
    pub backend_id: u32,
    /// Service entries: the backend the destination is translated to. Reply entries: the
    /// original client, which the destination of a reply is translated back to (it differs
    /// from the key's destination when the flow is masqueraded). The source goes back to
    /// the Service address from SVC4_REVNAT by rev_nat_id. Network order.
    pub addr_be: A,
    pub port_be: u16,
    /// CT_F_* bits.
    pub flags: u8,
    pub _pad: u8,
    pub rev_nat_id: u32,
    /// Service entries of flows with a translated source (CT_F_SNAT): the source the flow
    /// is translated to: the node address and a port when masqueraded, the client's own
    /// address and another port when only the port was remapped (a reply-tuple clash, see
    /// svc-ebpf/src/lb.rs). Network order; 0 otherwise.
    pub nat_addr_be: A,
    pub nat_port_be: u16,
    pub _pad2: [u8; 2],
}
family_pod!(CtValue { u64, u64, u32, A, u16, u8, u8, u32, A, u16, [u8; 2] });
pub type Ct4Value = CtValue<u32>;
pub type Ct6Value = CtValue<Ip6>;

/// A FIN or RST was seen: the entry expires after CT_CLOSING_TIMEOUT_NS.
pub const CT_F_CLOSING: u8 = 1;
/// The flow has seen a reply (TCP: SYN-ACK; UDP: any reply).
pub const CT_F_REPLIED: u8 = 2;
/// The flow's source is translated to nat_addr:nat_port: masqueraded to the node, or (the
/// client's own address with another port) remapped because its reply tuple clashed with
/// another live flow's.
pub const CT_F_SNAT: u8 = 4;
/// TCP: the backend answered the SYN (SYN-ACK) but the client has not sent a packet since:
/// a half-open handshake (a scan, a spoofed or vanished client). It keeps the short SYN
/// lifetime until the client's next packet clears it, as netfilter's SYN_RECV (60 s)
/// does; without it a SYN answered once would hold its entries, and a masquerade port,
/// for the established lifetime. Entries written before this bit existed never carry it.
pub const CT_F_HALF_OPEN: u8 = 8;

/// Every CT_F_* bit with its label, in bit order.
pub const CT_FLAG_LABELS: [(u8, &str); 4] = [
    (CT_F_CLOSING, "closing"),
    (CT_F_REPLIED, "replied"),
    (CT_F_SNAT, "snat"),
    (CT_F_HALF_OPEN, "half-open"),
];

/// Lifetimes after the last packet (Cilium's defaults; netfilter's for comparison):
/// - TCP established (a reply seen, handshake completed): 6 h (netfilter: 5 days; its
///   300 s "unacknowledged" shortening needs sequence tracking, which we do not do);
/// - TCP before a reply (SYN sent), or half-open (CT_F_HALF_OPEN): 60 s (netfilter:
///   SYN_SENT 120 s, SYN_RECV 60 s);
/// - after a FIN or RST: 10 s (netfilter: FIN_WAIT/CLOSE_WAIT 60 s, TIME_WAIT 120 s);
/// - UDP: 60 s (netfilter: 30 s unreplied, 120 s once a stream);
/// - SCTP: 210 s ([`CT_SCTP_TIMEOUT_NS`]).
pub const CT_TCP_TIMEOUT_NS: u64 = 21_600 * 1_000_000_000;
pub const CT_TCP_SYN_TIMEOUT_NS: u64 = 60 * 1_000_000_000;
pub const CT_CLOSING_TIMEOUT_NS: u64 = 10 * 1_000_000_000;
pub const CT_UDP_TIMEOUT_NS: u64 = 60 * 1_000_000_000;
/// SCTP: 210 s after the last packet (netfilter's SCTP ESTABLISHED since Linux 6.1). An
/// association sends a HEARTBEAT every 30 s (+ RTO) when idle, so a live one keeps its
/// entries; the chunks are not tracked (no closing state), as for UDP.
pub const CT_SCTP_TIMEOUT_NS: u64 = 210 * 1_000_000_000;

/// Source ports masqueraded flows get by default (host order, inclusive); the agent's
/// configuration may narrow or move it. Above Linux's default ip_local_port_range
/// (32768-60999) and the NodePort range (30000-32767): a masquerade port equal to a port of
/// one of the node's own connections to the same backend would take that connection's
/// replies. The one definition: the kernel side's defaults and the agent's come from here.
pub const MASQUERADE_PORTS: (u16, u16) = (61000, 65535);

/// Seconds an entry may live after its last packet, as the kernel side decides it.
pub const fn ct_timeout_ns(proto: u8, flags: u8) -> u64 {
    if flags & CT_F_CLOSING != 0 {
        CT_CLOSING_TIMEOUT_NS
    } else if proto == PROTO_TCP {
        if flags & CT_F_REPLIED != 0 && flags & CT_F_HALF_OPEN == 0 {
            CT_TCP_TIMEOUT_NS
        } else {
            CT_TCP_SYN_TIMEOUT_NS
        }
    } else if proto == PROTO_SCTP {
        CT_SCTP_TIMEOUT_NS
    } else {
        CT_UDP_TIMEOUT_NS
    }
}

// ---------------------------------------------------------------------------------------
// Session affinity (LRU): {client address, rev_nat_id} -> the backend it was last given.
// ---------------------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AffinityKey<A> {
    pub client_be: A,
    pub rev_nat_id: u32,
}
family_pod!(AffinityKey { A, u32 });
pub type Affinity4Key = AffinityKey<u32>;
pub type Affinity6Key = AffinityKey<Ip6>;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct Affinity4Value {
    pub last_used_ns: u64,
    pub backend_id: u32,
    /// The slot the backend had when chosen: a new flow checks the slot still holds it,
    /// so a backend removed from this Service (but alive for another) is not reused.
    pub slot: u16,
    /// The [`Scope`] of that slot.
    pub scope: u8,
    pub _pad: u8,
}

// ---------------------------------------------------------------------------------------
// loadBalancerSourceRanges (LPM trie): {prefix length, {rev_nat_id, source prefix}} -> 1.
// The prefix length (aya's lpm_trie::Key) counts the 32 bits of rev_nat_id + padding, then
// the address bits (Cilium's lb4_src_range_key).
// ---------------------------------------------------------------------------------------

/// The data part of a SVC4_SRC_RANGE / SVC6_SRC_RANGE key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SrcRange<A> {
    pub rev_nat_id: u32,
    pub addr_be: A,
}
family_pod!(SrcRange { u32, A });
pub type SrcRange4 = SrcRange<u32>;
pub type SrcRange6 = SrcRange<Ip6>;

pub const SRC_RANGE_PREFIX_BASE: u32 = 32;

// ---------------------------------------------------------------------------------------
// Addresses no frontend takes (kube-proxy nftables' `cluster-ips-check` chain):
// SVC4_CLUSTERIPS (hash): ClusterIP (network order) -> ClusterIpUse; SVC4_SVC_CIDR (LPM
// trie): {prefix length, address (network order)} -> SVC_CIDR_DROP. A packet that no
// frontend takes and that is no reply of a translated flow is rejected when its
// destination is an allocated ClusterIP, dropped when it is inside a service CIDR, and
// passed otherwise (svc-ebpf/src/unserved.rs).
// ---------------------------------------------------------------------------------------

words! {
    /// SVC4_CLUSTERIPS value: what a packet to this ClusterIP on a port/protocol no
    /// frontend has gets.
    pub enum ClusterIpUse: u8 {
        /// A Service this agent serves: REJECT (TCP RST / ICMP port unreachable; a node
        /// process: ECONNREFUSED), as kube-proxy's nftables mode.
        Reject = 1 => "reject",
        /// Only Services another proxy owns (service.kubernetes.io/service-proxy-name) have
        /// it: passed untouched, never dropped as unallocated (the other proxy may handle
        /// it after us: TC ingress runs before netfilter).
        OtherProxy = 2 => "other-proxy",
    }
}

/// The ClusterIpUse numbers, for the kernel side.
pub const CLUSTERIP_REJECT: u8 = ClusterIpUse::Reject.raw();
pub const CLUSTERIP_OTHER_PROXY: u8 = ClusterIpUse::OtherProxy.raw();

/// The value of every SVC4_SVC_CIDR entry.
pub const SVC_CIDR_DROP: u8 = 1;

/// SVC4_SVC_RANGE's entry: the lowest and highest address (host order) of every
/// SVC4_CLUSTERIPS key and every SVC4_SVC_CIDR prefix. The agent widens it before it adds
/// an entry outside it and narrows it only after removing entries, so every entry is
/// always inside. `lo > hi`: empty (the zeroed entry holds only 0.0.0.0, which no packet
/// is addressed to).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct AddrRange4 {
    pub lo: u32,
    pub hi: u32,
}

impl AddrRange4 {
    pub const EMPTY: AddrRange4 = AddrRange4 { lo: 1, hi: 0 };

    /// Whether `addr` (host order) is inside.
    #[inline(always)]
    pub const fn contains(&self, addr: u32) -> bool {
        self.lo <= addr && addr <= self.hi
    }
}

pub const SVC_RANGE4_MAP_SIZE: u32 = 1;

/// SVC6_SVC_RANGE's entry: [`AddrRange4`] for IPv6. Addresses as two host-order 64-bit
/// halves, `[high, low]`, so the programs compare them without 128-bit arithmetic. `lo >
/// hi`: empty ([`AddrRange6::EMPTY`]; the zeroed entry holds only ::, which no packet is
/// addressed to).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct AddrRange6 {
    pub lo: [u64; 2],
    pub hi: [u64; 2],
}

impl AddrRange6 {
    pub const EMPTY: AddrRange6 = AddrRange6 {
        lo: [0, 1],
        hi: [0, 0],
    };

    /// The halves of an address's 16 bytes.
    pub const fn halves(octets: [u8; 16]) -> [u64; 2] {
        let mut hi = 0u64;
        let mut lo = 0u64;
        let mut i = 0;
        while i < 8 {
            hi = (hi << 8) | octets[i] as u64;
            lo = (lo << 8) | octets[i + 8] as u64;
            i += 1;
        }
        [hi, lo]
    }

    /// Whether the address with halves `addr` is inside.
    #[inline(always)]
    pub const fn contains(&self, addr: [u64; 2]) -> bool {
        let above_lo = addr[0] > self.lo[0] || (addr[0] == self.lo[0] && addr[1] >= self.lo[1]);
        let below_hi = addr[0] < self.hi[0] || (addr[0] == self.hi[0] && addr[1] <= self.hi[1]);
        above_lo && below_hi
    }
}

// ---------------------------------------------------------------------------------------
// Socket LB reverse NAT (LRU): {socket cookie, backend} -> the Service address a node
// process sent to, so a reply datagram's source can be shown as that address (recvmsg4).
// ---------------------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct SockRevNat4Key {
    pub cookie: u64,
    pub backend_be: u32,
    pub backend_port_be: u16,
    pub _pad: [u8; 2],
}

/// SVC6_SOCK_RNAT's key: SVC4_SOCK_RNAT's for an IPv6 backend (not generic: the cookie's
/// alignment leaves a family-dependent tail to pad).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct SockRevNat6Key {
    pub cookie: u64,
    pub backend_be: Ip6,
    pub backend_port_be: u16,
    pub _pad: [u8; 6],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SockRevNatValue<A> {
    pub vip_be: A,
    pub rev_nat_id: u32,
    pub port_be: u16,
    pub _pad: [u8; 2],
}
family_pod!(SockRevNatValue { A, u32, u16, [u8; 2] });
pub type SockRevNat4Value = SockRevNatValue<u32>;
pub type SockRevNat6Value = SockRevNatValue<Ip6>;

// ---------------------------------------------------------------------------------------
// IPv4 fragments (LRU): {source, destination, IPv4 id, protocol} of a datagram, as its
// fragments arrive -> what its fragments after the first get. Only the first fragment
// carries the TCP/UDP header, so only it can be looked up in conntrack; the programs record
// the addresses it was translated to (or that it was dropped) and give every later
// fragment of the datagram the same addresses (svc-ebpf/src/frag.rs). Cilium's
// cilium_ipv4_frag_datagrams has the same key and records the ports instead.
// ---------------------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct Frag4Key {
    /// The datagram's addresses as it arrives (before translation), network order.
    pub saddr_be: u32,
    pub daddr_be: u32,
    /// The IPv4 identification field, network order.
    pub id_be: u16,
    /// A [`Protocol`].
    pub proto: u8,
    pub _pad: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragValue<A> {
    /// bpf_ktime_get_ns() when the first fragment went through (CLOCK_MONOTONIC).
    pub created_ns: u64,
    /// The source and destination the first fragment left with (network order): later
    /// fragments get the same. Unused for FragKind::Drop.
    pub saddr_be: A,
    pub daddr_be: A,
    /// A [`FragKind`].
    pub kind: u8,
    pub _pad: [u8; 7],
}
family_pod!(FragValue { u64, A, A, u8, [u8; 7] });
pub type Frag4Value = FragValue<u32>;
pub type Frag6Value = FragValue<Ip6>;

/// SVC6_FRAG's key: {source, destination, fragment header identification, upper-layer
/// protocol}, as the datagram arrives (Frag4Key's, with IPv6's 32-bit identification).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct Frag6Key {
    pub saddr_be: Ip6,
    pub daddr_be: Ip6,
    /// The fragment header's identification, network order.
    pub id_be: u32,
    /// A [`Protocol`].
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// SVC6_FRAG_TMP's one per-CPU entry: an SVC6_FRAG entry built in map memory rather than
/// on the stack, which the IPv6 packet path has no room left on (svc-ebpf/src/frag6.rs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct Frag6Entry {
    pub key: Frag6Key,
    pub value: Frag6Value,
}

words! {
    /// Frag4Value::kind: what the first fragment of the datagram got.
    pub enum FragKind: u8 {
        /// Translated to a backend (DNAT, and SNAT when the flow's source is translated).
        Dnat = 1 => "dnat",
        /// A reply, translated back (source to the Service address, destination to the
        /// client when the flow's source was translated).
        RevNat = 2 => "rev-nat",
        /// Dropped or rejected (a Service without endpoints, policy Local without a local
        /// endpoint, a source outside loadBalancerSourceRanges, ...): so are the rest.
        Drop = 3 => "drop",
    }
}

/// The fragment kind numbers, for the kernel side.
pub const FRAG_KIND_DNAT: u8 = FragKind::Dnat.raw();
pub const FRAG_KIND_REV_NAT: u8 = FragKind::RevNat.raw();
pub const FRAG_KIND_DROP: u8 = FragKind::Drop.raw();

/// How long after its first fragment a datagram's later fragments get its translation:
/// Linux's ipfrag_time (net.ipv4.ipfrag_time, 30 s by default). A receiver discards a
/// datagram still incomplete after that, so an older entry can only belong to an earlier
/// datagram that had the same IPv4 id.
pub const FRAG_TIMEOUT_NS: u64 = 30 * 1_000_000_000;

// ---------------------------------------------------------------------------------------
// Service names (hash): key -> the Service (namespace/name) and port a frontend belongs to,
// or a Service that gets no datapath entries and why. Written by the agent for svcctl
// only; the programs never read it. Keys:
// - 1..NAME_KEY_UNSERVED: a served frontend's rev_nat_id;
// - NAME_KEY_UNSERVED + n: the n-th Service (namespace/name order) without entries.
// Strings are UTF-8, NUL-padded, truncated at a character boundary when too long.
// ---------------------------------------------------------------------------------------

/// First key of the unserved Services in SVC_NAMES (above every rev_nat_id).
pub const NAME_KEY_UNSERVED: u32 = 0x8000_0000;

pub const NAME_NAMESPACE_LEN: usize = 64;
pub const NAME_NAME_LEN: usize = 64;
pub const NAME_PORT_LEN: usize = 32;

/// SvcName::kind of a Service without entries (a served frontend's is its
/// [`FrontendKind`]).
pub const NAME_KIND_NONE: u8 = 255;

/// SvcName::status of a served frontend (an unserved Service's is its
/// [`UnservedReason`]).
pub const NAME_SERVED: u8 = 0;

words! {
    /// SvcName::status of a Service that gets no datapath entries: why.
    pub enum UnservedReason: u8 {
        /// clusterIP: None: DNS returns the endpoints themselves.
        Headless = 1 => "headless",
        /// type ExternalName: a DNS CNAME only.
        ExternalName = 2 => "externalname",
        /// Labelled service.kubernetes.io/service-proxy-name: another proxy owns it.
        OtherProxy = 3 => "other-proxy",
        /// No IPv4 cluster IP (IPv6 only, or unset) and no other address to serve.
        NoIpv4ClusterIp = 4 => "no-ipv4-clusterip",
        /// Every port was skipped: none left (e.g. SCTP ports whose targetPort differs).
        NoPorts = 5 => "no-ports",
        /// Every address it would answer on is served by another Service, which keeps it
        /// (the agent's address-ownership rule; PROBLEMS names the owner).
        AddressTaken = 6 => "address-taken",
    }
}

impl UnservedReason {
    /// What the reason means, for people (svcctl's table).
    pub const fn description(self) -> &'static str {
        match self {
            UnservedReason::Headless => "clusterIP None: DNS returns the endpoints",
            UnservedReason::ExternalName => "DNS CNAME only",
            UnservedReason::OtherProxy => {
                "labelled service.kubernetes.io/service-proxy-name: another proxy owns it"
            }
            UnservedReason::NoIpv4ClusterIp => "no IPv4 cluster IP (IPv6 only or unset)",
            UnservedReason::NoPorts => {
                "every port skipped (e.g. SCTP ports whose targetPort differs)"
            }
            UnservedReason::AddressTaken => {
                "every address is served by another Service, which keeps it"
            }
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct SvcName {
    pub namespace: [u8; NAME_NAMESPACE_LEN],
    pub name: [u8; NAME_NAME_LEN],
    /// Empty when the Service port has no name.
    pub port_name: [u8; NAME_PORT_LEN],
    /// A served frontend's [`FrontendKind`], or NAME_KIND_NONE.
    pub kind: u8,
    /// NAME_SERVED, or the [`UnservedReason`] of a Service without entries.
    pub status: u8,
    pub _pad: [u8; 6],
}

impl Default for SvcName {
    fn default() -> Self {
        Zeroable::zeroed()
    }
}

/// Copies `s` into `out`, NUL-padded, cut at the last character boundary that fits.
fn put_str(out: &mut [u8], s: &str) {
    let mut len = s.len().min(out.len());
    while !s.is_char_boundary(len) {
        len -= 1;
    }
    out[..len].copy_from_slice(&s.as_bytes()[..len]);
    for b in &mut out[len..] {
        *b = 0;
    }
}

/// The string in a NUL-padded field: up to the first NUL, and up to the last valid UTF-8
/// character (a map written by someone else may hold anything).
fn get_str(field: &[u8]) -> &str {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    match core::str::from_utf8(&field[..end]) {
        Ok(s) => s,
        // The prefix up to valid_up_to() is valid UTF-8 by definition.
        Err(e) => core::str::from_utf8(&field[..e.valid_up_to()]).unwrap_or_default(),
    }
}

impl SvcName {
    pub fn new(namespace: &str, name: &str, port_name: &str, kind: u8, status: u8) -> SvcName {
        let mut v = SvcName {
            kind,
            status,
            ..Default::default()
        };
        put_str(&mut v.namespace, namespace);
        put_str(&mut v.name, name);
        put_str(&mut v.port_name, port_name);
        v
    }
    pub fn namespace(&self) -> &str {
        get_str(&self.namespace)
    }
    pub fn name(&self) -> &str {
        get_str(&self.name)
    }
    pub fn port_name(&self) -> &str {
        get_str(&self.port_name)
    }
}

// ---------------------------------------------------------------------------------------
// Problems (hash): index -> one problem of the agent's input as the agent logs it (`source
// object: reason`), written by the agent for svcctl only; the programs never read it.
// ---------------------------------------------------------------------------------------

pub const PROBLEM_TEXT_LEN: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct ProblemText {
    /// UTF-8, NUL-padded, cut at a character boundary when too long.
    pub text: [u8; PROBLEM_TEXT_LEN],
}

impl ProblemText {
    pub fn new(text: &str) -> ProblemText {
        let mut v = ProblemText {
            text: [0; PROBLEM_TEXT_LEN],
        };
        put_str(&mut v.text, text);
        v
    }
    pub fn text(&self) -> &str {
        get_str(&self.text)
    }
}

// ---------------------------------------------------------------------------------------
// Verdict counters: a per-CPU array indexed by `Verdict as u32`. Every run of the TC and XDP
// programs ends in exactly one verdict; the socket programs count only what they do to a
// Service address (a call to any other address counts nothing).
//
// Packets, not program runs: a packet arriving on the external interface meets XDP and
// then, if XDP passes it, TC on the same interface. Each packet is counted once, with the
// verdict of the program that decided what happened to it (svc-ebpf/src/counters.rs):
// - XDP counts the packets it drops and the ones it translates (DNAT, reverse NAT, their
//   later fragments). A translated packet it passes on is marked in the XDP metadata area
//   (bpf_xdp_adjust_meta, 4 bytes, XDP_COUNTED_MARK), which the kernel hands to TC with
//   the skb (skb->data_meta), native or generic XDP alike; TC counts nothing for a marked
//   packet (it would count it again as pass_not_service: it is no longer addressed to a
//   Service).
// - XDP counts nothing for the packets it passes untouched (not to a Service, other
//   protocols, rejects and IPv4 options handed to TC: `xdp_pass_to_tc`, which is
//   therefore never counted any more): TC decides them and counts its verdict.
// - If a driver refuses the metadata (bpf_xdp_adjust_meta fails: no headroom for it), XDP
//   still counts its translation and TC counts the packet again as pass_not_service: the
//   one case left of a packet counted twice in SVC_STATS. The per-Service counters
//   (SVC_SVC_STATS) are right even then: TC finds no Service in a translated packet.
// ---------------------------------------------------------------------------------------

macro_rules! verdicts {
    ($($(#[doc = $doc:literal])* $name:ident = $idx:literal, $label:literal;)*) => {
        /// Why a program returned what it returned. Indexes SVC_STATS.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Verdict {
            $($(#[doc = $doc])* $name = $idx,)*
        }
        impl Verdict {
            pub const ALL: &'static [Verdict] = &[$(Verdict::$name,)*];
            /// Stable snake_case name, used by svcctl and metrics.
            pub const fn label(self) -> &'static str {
                match self { $(Verdict::$name => $label,)* }
            }
            /// Whether svcctl monitor can report this verdict: drops, rejects and
            /// translations, never a pass. A packet XDP passes on untouched (or hands to TC)
            /// is then reported once, by the program that decides it, and a packet XDP
            /// translated, which TC sees again as a packet to no Service, is reported
            /// once, by XDP.
            pub const fn is_monitored(self) -> bool {
                !matches!(
                    self,
                    Verdict::PassNotIp
                        | Verdict::PassNotService
                        | Verdict::PassFragment
                        | Verdict::PassOtherProto
                        | Verdict::XdpPassToTc
                        | Verdict::PassIpv6Unparsed
                )
            }
            /// A drop or a reject (reported always; translations are sampled).
            pub const fn is_drop_or_reject(self) -> bool {
                self.is_drop()
                    || matches!(
                        self,
                        Verdict::RejectTcpRst
                            | Verdict::RejectIcmp
                            | Verdict::SockReject
                            | Verdict::SockNoBackend
                    )
            }
            /// The verdict of a number read from a map or an event.
            pub const fn from_raw(raw: u32) -> Option<Verdict> {
                match raw {
                    $($idx => Some(Verdict::$name),)*
                    _ => None,
                }
            }
            /// The program drops the packet (TC_ACT_SHOT / XDP_DROP) for this verdict.
            pub const fn is_drop(self) -> bool {
                matches!(
                    self,
                    Verdict::DropMalformed
                        | Verdict::DropNoBackend
                        | Verdict::DropCtFailed
                        | Verdict::DropRewriteFailed
                        | Verdict::DropNoLocalBackend
                        | Verdict::DropSourceRange
                        | Verdict::DropNatFailed
                        | Verdict::DropFragment
                        | Verdict::DropUnallocated
                )
            }
        }
    };
}

verdicts! {
    /// Neither IPv4 nor IPv6 (ARP, VLAN, ...): passed untouched. (Named `pass_not_ipv4`
    /// before the programs served IPv6.)
    PassNotIp = 0, "pass_not_ip";
    /// IPv4 but not addressed to a Service and not a reply of a translated flow (nor an
    /// allocated ClusterIP or an address inside a service CIDR, see DropUnallocated).
    PassNotService = 1, "pass_not_service";
    /// An IPv4 fragment after the first (offset > 0) of a datagram whose first fragment
    /// the programs did not translate or drop (not to a Service, or not seen yet: it
    /// arrived before the first one, or more than FRAG_TIMEOUT_NS after it): passed
    /// untouched. First fragments carry the ports and are decided as whole packets.
    PassFragment = 2, "pass_fragment";
    /// Neither TCP, UDP nor SCTP (ICMP, ...): passed untouched.
    PassOtherProto = 3, "pass_other_proto";
    /// Headers cut short (Ethernet, IPv4, TCP/UDP) or an invalid IPv4 version/IHL: dropped.
    DropMalformed = 4, "drop_malformed";
    /// A new flow to a Service: backend chosen, destination translated.
    DnatNew = 5, "dnat_new";
    /// A packet of a known flow: destination translated to its backend.
    DnatEstablished = 6, "dnat_established";
    /// A reply from a backend: source translated back to the Service address.
    RevNat = 7, "rev_nat";
    /// TCP to a Service without endpoints, or to a ClusterIP on a port no Service has:
    /// answered with a RST.
    RejectTcpRst = 8, "reject_tcp_rst";
    /// UDP to a Service without endpoints, or to a ClusterIP on a port no Service has:
    /// answered with ICMP port unreachable.
    RejectIcmp = 9, "reject_icmp";
    /// The frontend points at a slot or backend that is not there (a sync in progress).
    DropNoBackend = 10, "drop_no_backend";
    /// The conntrack entry could not be written.
    DropCtFailed = 11, "drop_ct_failed";
    /// A rewrite helper failed.
    DropRewriteFailed = 12, "drop_rewrite_failed";
    /// XDP: a packet XDP does not translate itself (reject, IPv4 options) handed to TC.
    /// No longer counted: TC counts what it decides for that packet (each packet is
    /// counted once, see above); kept so that the indexes stay.
    XdpPassToTc = 13, "xdp_pass_to_tc";
    /// Traffic policy Local and this node has none of the Service's endpoints.
    DropNoLocalBackend = 14, "drop_no_local_backend";
    /// A LoadBalancer address with loadBalancerSourceRanges, from a source outside them.
    DropSourceRange = 15, "drop_source_range";
    /// No free source port to masquerade the flow with.
    DropNatFailed = 16, "drop_nat_failed";
    /// Socket LB (a node process): connect/sendmsg to a Service address sent to a backend.
    SockTranslate = 17, "sock_translate";
    /// Socket LB: connect/sendmsg to a Service refused: no endpoints (ECONNREFUSED), policy
    /// Local without a local one, or a source outside loadBalancerSourceRanges (EPERM); or
    /// to a ClusterIP on a port no Service has (ECONNREFUSED), or to an unallocated address
    /// inside a service CIDR (EPERM).
    SockReject = 18, "sock_reject";
    /// Socket LB: a reply datagram's source translated back to the Service address.
    SockRevNat = 19, "sock_rev_nat";
    /// Socket LB: connect/sendmsg to a Service whose frontend points at a slot or backend
    /// that is not there (a sync in progress) failed with EHOSTUNREACH, never sent
    /// untranslated.
    SockNoBackend = 20, "sock_no_backend";
    /// An IPv4 fragment after the first, of a datagram whose first fragment was translated
    /// to a backend: given the first fragment's addresses (SVC4_FRAG).
    DnatFragment = 21, "dnat_fragment";
    /// An IPv4 fragment after the first, of a reply whose first fragment was translated
    /// back: given the first fragment's addresses (SVC4_FRAG).
    RevNatFragment = 22, "rev_nat_fragment";
    /// An IPv4 fragment after the first, of a datagram whose first fragment was dropped or
    /// rejected: dropped too.
    DropFragment = 23, "drop_fragment";
    /// An ICMP error (destination unreachable incl. fragmentation needed, time exceeded,
    /// parameter problem) about a packet of a translated flow that went to the backend, on
    /// its way back to the client: the quoted packet translated back to the client and the
    /// Service address, the outer source to the Service address (and the destination to
    /// the client when masqueraded), as netfilter does for RELATED errors.
    RevNatIcmp = 24, "rev_nat_icmp";
    /// An ICMP error about a reply of a translated flow (addressed to the Service address),
    /// on its way to the backend: the quoted reply translated to the backend (and the
    /// masquerade address), the outer destination to the backend.
    DnatIcmp = 25, "dnat_icmp";
    /// No frontend takes the packet, it is no reply of a translated flow, and its
    /// destination is inside a service CIDR but no Service's ClusterIP (kube-proxy
    /// nftables: "Drop traffic to unallocated ClusterIPs").
    DropUnallocated = 26, "drop_unallocated";
    /// IPv6 whose upper-layer header the programs do not reach: more than 8 extension
    /// headers, or one they do not walk (AH, ESP, an unknown one; hop-by-hop, routing,
    /// destination options and fragment headers are walked). Passed untouched: the stack
    /// decides, and nothing is translated that the programs cannot read.
    PassIpv6Unparsed = 27, "pass_ipv6_unparsed";
}

pub const STATS_MAP_SIZE: u32 = 32;

/// What XDP writes in the 4 bytes of XDP metadata it adds in front of a packet it counted
/// and passes on (see the verdict counters above): TC counts nothing for a packet whose
/// skb carries it. A constant unlikely in another program's metadata, compared whole.
pub const XDP_COUNTED_MARK: u32 = 0x5356_4331; // "SVC1"

// ---------------------------------------------------------------------------------------
// Per-Service counters (SVC_SVC_STATS, per-CPU hash): rev_nat_id -> ServiceStats. Counted
// by TC and XDP where lb.rs's decision names a frontend: translations towards a backend,
// reverse translations of replies, new flows, and the drops and rejects of new flows to
// a Service. Not counted per Service: IPv4/IPv6 fragments after the first (their entry in
// SVC4_FRAG does not record the Service), ICMP errors about translated flows, and the
// socket programs (a node process's connect()/sendmsg() is translated before any packet
// exists; its packets pass TC untranslated).
// ---------------------------------------------------------------------------------------

words! {
    /// Why a packet to a Service got no backend: the index of its counter in
    /// [`ServiceStats::drops`]. Each one is a verdict of SVC_STATS (see
    /// [`ServiceDrop::of_verdict`]), named by the cause.
    pub enum ServiceDrop: u8 {
        /// The Service has no endpoints: TCP answered with a RST, UDP (and SCTP) with ICMP
        /// port unreachable (`reject_tcp_rst`, `reject_icmp`).
        NoEndpoints = 0 => "no_endpoints",
        /// Traffic policy Local and none of the endpoints on this node
        /// (`drop_no_local_backend`).
        NoLocalBackend = 1 => "no_local_backend",
        /// A source outside loadBalancerSourceRanges (`drop_source_range`).
        SourceRange = 2 => "source_range",
        /// The frontend points at a slot or backend that is not there, a sync in progress
        /// (`drop_no_backend`).
        NoBackend = 3 => "no_backend",
        /// No free source port to masquerade or remap the flow with (`drop_nat_failed`).
        NatFailed = 4 => "nat_failed",
        /// The conntrack entry could not be written (`drop_ct_failed`).
        CtFailed = 5 => "ct_failed",
        /// A rewrite helper failed, or an SCTP backend on another port
        /// (`drop_rewrite_failed`).
        RewriteFailed = 6 => "rewrite_failed",
    }
}

/// The number of [`ServiceDrop`] reasons: the length of [`ServiceStats::drops`].
pub const SERVICE_DROP_REASONS: usize = 7;

impl ServiceDrop {
    /// The reason a per-Service drop or reject verdict counts under; None for the verdicts
    /// that are no drop of a Service's packet.
    pub const fn of_verdict(v: Verdict) -> Option<ServiceDrop> {
        Some(match v {
            Verdict::RejectTcpRst | Verdict::RejectIcmp => ServiceDrop::NoEndpoints,
            Verdict::DropNoLocalBackend => ServiceDrop::NoLocalBackend,
            Verdict::DropSourceRange => ServiceDrop::SourceRange,
            Verdict::DropNoBackend => ServiceDrop::NoBackend,
            Verdict::DropNatFailed => ServiceDrop::NatFailed,
            Verdict::DropCtFailed => ServiceDrop::CtFailed,
            Verdict::DropRewriteFailed => ServiceDrop::RewriteFailed,
            _ => return None,
        })
    }
}

/// SVC_SVC_STATS's value, one per CPU. Packets are counted once each however many programs
/// see them (see [`Verdict`]); bytes are the frame's length as the program sees it at
/// ingress, Ethernet header included (skb->len at TC ingress, data_end - data at XDP),
/// before translation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct ServiceStats {
    /// Packets to the Service translated towards a backend (`dnat_new`,
    /// `dnat_established`), and their bytes.
    pub packets: u64,
    pub bytes: u64,
    /// New flows given a backend (`dnat_new`; a retransmitted first packet of a flow
    /// conntrack already has counts as established).
    pub new_flows: u64,
    /// Replies from a backend translated back to the Service address (`rev_nat`), and
    /// their bytes.
    pub reply_packets: u64,
    pub reply_bytes: u64,
    /// New flows to the Service dropped or rejected, by [`ServiceDrop`].
    pub drops: [u64; SERVICE_DROP_REASONS],
}

impl ServiceStats {
    /// The sum of per-CPU values (wrapping, as the counters do).
    pub fn add(&mut self, other: &ServiceStats) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.bytes = self.bytes.wrapping_add(other.bytes);
        self.new_flows = self.new_flows.wrapping_add(other.new_flows);
        self.reply_packets = self.reply_packets.wrapping_add(other.reply_packets);
        self.reply_bytes = self.reply_bytes.wrapping_add(other.reply_bytes);
        for (d, o) in self.drops.iter_mut().zip(other.drops.iter()) {
            *d = d.wrapping_add(*o);
        }
    }

    /// Every dropped or rejected packet, all reasons together.
    pub fn dropped(&self) -> u64 {
        self.drops.iter().fold(0u64, |a, d| a.wrapping_add(*d))
    }
}

// ---------------------------------------------------------------------------------------
// svcctl monitor: a control entry (SVC_MONITOR) and a ring buffer of events (SVC_EVENTS).
// ---------------------------------------------------------------------------------------

/// SVC_MONITOR's one entry. svcctl monitor sets `until_ns` a few seconds ahead and moves it
/// forward every second while it runs, and sets it to 0 when it stops: a killed svcctl
/// leaves a time in the past, so the programs stop reporting within MONITOR_LEASE_NS and
/// nothing stays on. One svcctl monitor at a time (`owner_pid`): a ring buffer has one
/// consumer position, and two readers would each get part of the events.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct MonitorControl {
    /// CLOCK_MONOTONIC ns (the programs' bpf_ktime_get_coarse_ns) up to which the programs
    /// report; 0: off (the programs then read no clock).
    pub until_ns: u64,
    /// Translations are reported 1 in `sample` (at random, per packet); drops and rejects
    /// always. 0 or 1: every translation.
    pub sample: u32,
    /// Bit `Verdict as u32` set: that verdict is reported (pass verdicts never are, see
    /// [`Verdict::is_monitored`]).
    pub verdict_mask: u32,
    /// The pid of the svcctl monitor that holds the monitor (0: none).
    pub owner_pid: u32,
    pub _pad: u32,
    /// The node's name as the agent knows it (--node-name), NUL-padded; written by the
    /// agent at start, for the events' `node`. Empty: svcctl uses the host name.
    pub node_name: [u8; MONITOR_NODE_LEN],
}

pub const MONITOR_NODE_LEN: usize = 64;

impl Default for MonitorControl {
    fn default() -> Self {
        Zeroable::zeroed()
    }
}

impl MonitorControl {
    pub fn node_name(&self) -> &str {
        get_str(&self.node_name)
    }
    pub fn set_node_name(&mut self, name: &str) {
        put_str(&mut self.node_name, name);
    }
}

/// How long one refresh of `until_ns` keeps the programs reporting.
pub const MONITOR_LEASE_NS: u64 = 5_000_000_000;
/// SVC_EVENTS' size: 1 MiB holds about 9,000 events (each takes its size plus an 8-byte
/// header). When the reader falls that far behind, the programs' reservations fail and
/// those events are lost (the packets are not affected).
pub const MONITOR_RING_BYTES: u32 = 1 << 20;

/// Where an event comes from ([`MonitorEvent::hook`]).
pub const MONITOR_HOOK_TC: u8 = 1;
pub const MONITOR_HOOK_XDP: u8 = 2;
pub const MONITOR_HOOK_SOCK: u8 = 3;

/// One reported packet, as the programs decided it. Addresses are 16 bytes for both
/// families: an IPv4 address in the first 4 bytes (network order), the rest zero. "Before"
/// is the packet as it arrived, "after" as it left (equal to before for drops and
/// rejects).
///
/// The Service (rev_nat_id) and the backend are not in the event: svcctl looks them up
/// from the tuple (the flow's conntrack entry, or the destination's frontend). A lookup in
/// the program needs its key on the stack, and the IPv6 packet path already uses 480 of
/// the 512 bytes a call chain may have: the verifier refused the program with the lookup
/// in it ("combined stack size of 3 calls is 624").
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct MonitorEvent {
    /// bpf_ktime_get_coarse_ns() (CLOCK_MONOTONIC, coarse) when the packet was decided.
    pub time_ns: u64,
    /// A [`Verdict`].
    pub verdict: u32,
    /// The interface the packet entered through.
    pub ifindex: u32,
    /// 4 or 6.
    pub family: u8,
    /// The IP protocol number.
    pub protocol: u8,
    /// MONITOR_HOOK_*.
    pub hook: u8,
    pub _pad: u8,
    /// Ports, network order.
    pub sport_be: u16,
    pub dport_be: u16,
    pub nat_sport_be: u16,
    pub nat_dport_be: u16,
    pub _pad2: u32,
    pub saddr: Ip6,
    pub daddr: Ip6,
    pub nat_saddr: Ip6,
    pub nat_daddr: Ip6,
}

// ---------------------------------------------------------------------------------------
// The load-time globals (svc-ebpf/src/config.rs) as the agent set them, in a one-entry
// array beside the maps, so svcctl can load a second instance of the programs that decides
// exactly as the live one (svcctl trace).
// ---------------------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct DatapathConfig4 {
    /// [`LAYOUT_VERSION`] of the agent that pinned the maps.
    pub layout_version: u32,
    /// DETECT_LOCAL: a [`DetectLocal`] (the CIDRs and interfaces are in SVC4_POD_CIDRS and
    /// SVC_POD_IFACES).
    pub detect_local: u32,
    pub _pad0: u32,
    /// MASQ_ADDR_BE: the masquerade source (0: never masquerade).
    pub masq_addr_be: u32,
    /// MASQUERADE_ALL (0 or 1).
    pub masquerade_all: u32,
    /// NAT_PORT_MIN / NAT_PORT_MAX (host order).
    pub nat_port_min: u32,
    pub nat_port_max: u32,
    pub _pad: u32,
    /// MASQ_ADDR6_BE: the IPv6 masquerade source (all zero: never masquerade IPv6).
    pub masq_addr6_be: Ip6,
}

pub const CONFIG_MAP_SIZE: u32 = 1;

/// The version of every map layout together. Bump it whenever a key or value type, or the
/// meaning of a field, changes: pins of another layout version are refused (equal sizes do
/// not make equal layouts), and so are pins without a SVC_CONFIG map (made before the
/// version was recorded).
pub const LAYOUT_VERSION: u32 = 5;

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: all of these are repr(C), Copy, with explicit padding (checked by bytemuck's
    // Pod derive), so any bit pattern is valid and none has uninitialised bytes.
    unsafe impl aya::Pod for Svc4Key {}
    unsafe impl aya::Pod for AddrRange4 {}
    unsafe impl aya::Pod for AddrRange6 {}
    unsafe impl aya::Pod for Frag6Key {}
    unsafe impl aya::Pod for Frag6Value {}
    unsafe impl aya::Pod for Frag6Entry {}
    unsafe impl aya::Pod for Svc4Value {}
    unsafe impl aya::Pod for Backend4 {}
    unsafe impl aya::Pod for RevNat4 {}
    unsafe impl aya::Pod for Ct4Key {}
    unsafe impl aya::Pod for Ct4Value {}
    unsafe impl aya::Pod for Affinity4Key {}
    unsafe impl aya::Pod for Affinity4Value {}
    unsafe impl aya::Pod for SrcRange4 {}
    unsafe impl aya::Pod for SockRevNat4Key {}
    unsafe impl aya::Pod for SockRevNat4Value {}
    unsafe impl aya::Pod for Frag4Key {}
    unsafe impl aya::Pod for Frag4Value {}
    unsafe impl aya::Pod for SvcName {}
    unsafe impl aya::Pod for ProblemText {}
    unsafe impl aya::Pod for DatapathConfig4 {}
    unsafe impl aya::Pod for Svc6Key {}
    unsafe impl aya::Pod for Backend6 {}
    unsafe impl aya::Pod for RevNat6 {}
    unsafe impl aya::Pod for Ct6Key {}
    unsafe impl aya::Pod for Ct6Value {}
    unsafe impl aya::Pod for Affinity6Key {}
    unsafe impl aya::Pod for SrcRange6 {}
    unsafe impl aya::Pod for SockRevNat6Key {}
    unsafe impl aya::Pod for SockRevNat6Value {}
    unsafe impl aya::Pod for MonitorControl {}
    unsafe impl aya::Pod for ServiceStats {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_are_stable() {
        // The sizes are part of the pinned-map ABI: changing one needs a migration.
        assert_eq!(size_of::<Svc4Key>(), 12);
        assert_eq!(size_of::<Svc4Value>(), 12);
        assert_eq!(size_of::<Backend4>(), 8);
        assert_eq!(size_of::<RevNat4>(), 8);
        assert_eq!(size_of::<Ct4Key>(), 16);
        assert_eq!(size_of::<Ct4Value>(), 40);
        assert_eq!(size_of::<Affinity4Key>(), 8);
        assert_eq!(size_of::<Affinity4Value>(), 16);
        assert_eq!(size_of::<SrcRange4>(), 8);
        assert_eq!(size_of::<MonitorEvent>(), 96);
        assert_eq!(size_of::<MonitorControl>(), 24 + MONITOR_NODE_LEN);
        assert_eq!(size_of::<SockRevNat4Key>(), 16);
        assert_eq!(size_of::<SockRevNat4Value>(), 12);
        assert_eq!(size_of::<Frag4Key>(), 12);
        assert_eq!(size_of::<Frag4Value>(), 24);
        assert_eq!(size_of::<SvcName>(), 168);
        assert_eq!(size_of::<ProblemText>(), 256);
        assert_eq!(size_of::<DatapathConfig4>(), 48);
        assert_eq!(size_of::<Svc6Key>(), 24);
        assert_eq!(size_of::<Backend6>(), 20);
        assert_eq!(size_of::<RevNat6>(), 20);
        assert_eq!(size_of::<Ct6Key>(), 40);
        assert_eq!(size_of::<Ct6Value>(), 64);
        assert_eq!(size_of::<Affinity6Key>(), 20);
        assert_eq!(size_of::<SrcRange6>(), 20);
        assert_eq!(size_of::<SockRevNat6Key>(), 32);
        assert_eq!(size_of::<SockRevNat6Value>(), 24);
        assert_eq!(size_of::<AddrRange6>(), 32);
        assert_eq!(size_of::<Frag6Key>(), 40);
        assert_eq!(size_of::<Frag6Value>(), 48);
        assert_eq!(size_of::<Frag6Entry>(), 88);
        assert_eq!(core::mem::align_of::<SvcName>(), 1);
        assert_eq!(size_of::<ServiceStats>(), 96);
    }

    #[test]
    fn ipv6_ranges_compare_by_halves() {
        let a = |s: [u8; 16]| AddrRange6::halves(s);
        let mut lo = [0u8; 16];
        lo[0] = 0xfd;
        lo[15] = 0x10;
        let mut hi = lo;
        hi[8] = 0x01;
        let r = AddrRange6 {
            lo: a(lo),
            hi: a(hi),
        };
        assert!(r.contains(a(lo)) && r.contains(a(hi)));
        let mut mid = lo;
        mid[7] = 0;
        mid[9] = 0xff;
        assert!(r.contains(a(mid)));
        let mut below = lo;
        below[15] = 0x0f;
        assert!(!r.contains(a(below)));
        let mut above = hi;
        above[15] = 0x11;
        assert!(!r.contains(a(above)));
        assert!(!AddrRange6::EMPTY.contains([0, 0]));
        assert!(!AddrRange6::EMPTY.contains([0, 1]));
    }

    #[test]
    fn ipv6_words_hold_the_address_bytes_in_order() {
        let octets: [u8; 16] = core::array::from_fn(|i| i as u8 + 1);
        let words = ip6_from_octets(octets);
        assert_eq!(ip6_octets(words), octets);
        // Each word is the packet's bytes as they are in memory (network order).
        assert_eq!(u32::from_be(words[0]), 0x0102_0304);
        assert_eq!(u32::from_be(words[3]), 0x0d0e_0f10);
        // The IPv6 key keeps its fields where a C reader expects them.
        let key = Svc6Key {
            vip_be: words,
            port_be: 80u16.to_be(),
            slot: 2,
            proto: PROTO_TCP,
            scope: SCOPE_LOCAL,
            _pad: [0; 2],
        };
        let bytes = bytemuck::bytes_of(&key);
        assert_eq!(&bytes[..16], &octets);
        assert_eq!(&bytes[16..24], &[0, 80, 2, 0, PROTO_TCP, SCOPE_LOCAL, 0, 0]);
    }

    #[test]
    fn names_round_trip_and_truncate_at_a_char_boundary() {
        let v = SvcName::new(
            "default",
            "echo",
            "http",
            FrontendKind::ClusterIp.raw(),
            NAME_SERVED,
        );
        assert_eq!(
            (v.namespace(), v.name(), v.port_name()),
            ("default", "echo", "http")
        );
        assert!(v.namespace[7..].iter().all(|b| *b == 0));
        // 31 ASCII bytes then a 2-byte character: the character does not fit in 32.
        let long = "p".repeat(31) + "é";
        let v = SvcName::new("ns", "n", &long, 0, 0);
        assert_eq!(v.port_name(), "p".repeat(31));
        let exact = "n".repeat(64);
        assert_eq!(SvcName::new("ns", &exact, "", 0, 0).name(), exact);
        // Garbage from another writer decodes to its valid prefix.
        let mut v = SvcName::default();
        v.name[..3].copy_from_slice(&[b'a', 0xff, b'b']);
        assert_eq!(v.name(), "a");
    }

    #[test]
    fn drop_verdicts_are_the_drop_labels() {
        for v in Verdict::ALL {
            assert_eq!(v.is_drop(), v.label().starts_with("drop_"), "{v:?}");
        }
    }

    #[test]
    fn words_round_trip_and_unknown_numbers_have_no_word() {
        for w in Scope::ALL {
            assert_eq!(Scope::from_raw(w.raw()), Some(*w));
        }
        for w in UnservedReason::ALL {
            assert_eq!(UnservedReason::from_raw(w.raw()), Some(*w));
            assert_ne!(w.raw(), NAME_SERVED);
        }
        for w in FrontendKind::ALL {
            assert_eq!(FrontendKind::from_raw(w.raw()), Some(*w));
            assert_eq!(FrontendKind::of_flags(w.flags()), *w);
            assert_eq!(w.flags() & !SVC_KIND_FLAGS, 0);
            assert_ne!(w.raw(), NAME_KIND_NONE);
        }
        assert_eq!(Protocol::from_raw(6), Some(Protocol::Tcp));
        assert_eq!(Protocol::from_raw(132), Some(Protocol::Sctp));
        assert_eq!(Protocol::from_raw(1), None);
        for w in DetectLocal::ALL {
            assert_eq!(DetectLocal::from_raw(w.raw()), Some(*w));
        }
        assert_eq!(CtKind::from_raw(0), None);
        assert_eq!(FragKind::from_raw(0), None);
        for w in FragKind::ALL {
            assert_eq!(FragKind::from_raw(w.raw()), Some(*w));
        }
        assert_eq!(BackendState::Terminating.label(), "terminating");
        for w in ClusterIpUse::ALL {
            assert_eq!(ClusterIpUse::from_raw(w.raw()), Some(*w));
            assert_ne!(w.raw(), 0, "0 is what a missing entry reads as");
        }
    }

    #[test]
    fn tcp_lifetimes_follow_the_handshake() {
        let t = |flags| ct_timeout_ns(PROTO_TCP, flags);
        assert_eq!(t(0), CT_TCP_SYN_TIMEOUT_NS, "SYN sent");
        assert_eq!(
            t(CT_F_REPLIED | CT_F_HALF_OPEN),
            CT_TCP_SYN_TIMEOUT_NS,
            "half-open"
        );
        assert_eq!(t(CT_F_REPLIED), CT_TCP_TIMEOUT_NS, "established");
        assert_eq!(
            t(CT_F_REPLIED | CT_F_CLOSING),
            CT_CLOSING_TIMEOUT_NS,
            "closing"
        );
        assert_eq!(ct_timeout_ns(PROTO_UDP, CT_F_REPLIED), CT_UDP_TIMEOUT_NS);
        assert_eq!(ct_timeout_ns(PROTO_SCTP, 0), CT_SCTP_TIMEOUT_NS);
        assert_eq!(ct_timeout_ns(PROTO_SCTP, CT_F_REPLIED), CT_SCTP_TIMEOUT_NS);
    }

    #[test]
    fn service_drop_reasons_index_the_drops_array() {
        assert_eq!(ServiceDrop::ALL.len(), SERVICE_DROP_REASONS);
        for (i, r) in ServiceDrop::ALL.iter().enumerate() {
            assert_eq!(r.raw() as usize, i);
        }
        // Every per-Service reason is a drop or a reject, and each one has a verdict.
        for v in Verdict::ALL {
            if let Some(r) = ServiceDrop::of_verdict(*v) {
                assert!(
                    v.is_drop() || v.label().starts_with("reject_"),
                    "{v:?} {r:?}"
                );
            }
        }
        for r in ServiceDrop::ALL {
            assert!(
                Verdict::ALL
                    .iter()
                    .any(|v| ServiceDrop::of_verdict(*v) == Some(*r))
            );
        }
    }

    #[test]
    fn verdict_indexes_fit_the_stats_map() {
        for (i, v) in Verdict::ALL.iter().enumerate() {
            assert_eq!(*v as usize, i);
            assert!((*v as u32) < STATS_MAP_SIZE);
        }
    }
}
