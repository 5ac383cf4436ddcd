//! BPF_PROG_TEST_RUN fixtures, as Katran's: the real TC and XDP programs run on tables of
//! frames built with `svc_agent::packet`, on maps filled by the real reconciler. Each case
//! names the program, the input frame, the return value, the exact output frame (checksums
//! verified) and the verdict counter that must go up by exactly one (none for a packet XDP
//! passes on untouched: TC counts it; a packet XDP translates must carry the mark that
//! keeps TC from counting it again); a table is one
//! #[test] on a datapath of its own, its cases run in order (later ones may depend on the
//! conntrack state of earlier ones). The harness is tests/support/; the Services and the
//! two datapaths the tables load are in `services`; one file per concern:
//!
//! - `clusterip`: TC DNAT and reverse NAT of ClusterIP flows
//! - `xdp`: the same on XDP from outside, nothing masqueraded
//! - `icmp`: ICMP errors about translated flows, both directions
//! - `reject`: Services without endpoints (RST, ICMP port unreachable, passed on by XDP)
//! - `malformed`: odd packets (ARP, cut headers, bad version/IHL, fragments, ICMP, IPv4
//!   options, non-Service addresses)
//! - `conntrack`: what the tables leave in SVC4_CT, port reuse, stickiness
//! - `masquerade`: SNAT to the node, hairpin, masquerade_all, NAT port collisions
//! - `policy`: NodePorts, externalTrafficPolicy and internalTrafficPolicy Local
//! - `source_ranges`: loadBalancerSourceRanges
//! - `affinity`: sessionAffinity ClientIP
//! - `batch`: batched map writes when the map fills up in the middle of a batch
//! - `terminating`: a terminating backend keeps its flows
//! - `fragments`: IPv4 fragments, every one given its first fragment's translation
//! - `sctp`: SCTP translated by address only, the CRC32c valid after translation
//! - `detect_local`: several pod CIDRs and a change of them; pods told by interface
//! - `kube_proxy`: every IPv4 row of kube-proxy's own packet-flow tables
//!   (`runPacketFlowTests` in pkg/proxy/nftables/proxier_test.go), row by row
//! - `monitor`: svcctl monitor's events (SVC_EVENTS) for drops and translations, off, sampled
//! - `service_counters`: the per-Service counters (SVC_SVC_STATS) each packet moves, and
//!   that nothing moves for a packet not to or from a Service
//! - `unallocated`: a ClusterIP's unknown ports (REJECT) and unallocated addresses of the
//!   service CIDRs (DROP), kube-proxy nftables' rules; replies and other traffic untouched
//!
//! Needs root (CAP_BPF + CAP_NET_ADMIN) and bpffs at /sys/fs/bpf (mounted if absent). The
//! tests hold a lock while a datapath is loaded, so they never run concurrently.
#[path = "../support/mod.rs"]
mod support;

mod affinity;
mod batch;
mod clusterip;
mod collisions;
mod conntrack;
mod detect_local;
mod fragments;
mod fuzz;
mod icmp;
mod ipv6;
mod kube_proxy;
mod malformed;
mod masquerade;
mod monitor;
mod policy;
mod reject;
mod sctp;
mod service_counters;
mod services;
mod source_ranges;
mod terminating;
mod unallocated;
mod verifier;
mod xdp;
