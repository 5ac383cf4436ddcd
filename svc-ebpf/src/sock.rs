//! Socket-level load balancing (cgroup connect4 / sendmsg4 / recvmsg4, as Cilium's socket
//! LB) for the node's own processes, and for pods' if asked (see "Pods"). The node's
//! packets never cross the TC or XDP hooks on the way out, so the Service address is
//! swapped for a backend when the socket connects or sends. The backend is chosen by
//! `lb::pick`, the same code (source ranges, traffic policy, session affinity, random
//! slot) TC and XDP use for a packet. The node's flow then leaves with the node's own
//! address, which is the masquerade kube-proxy applies to node-originated traffic.
//! Replies to unconnected UDP sockets get their source turned back into the Service
//! address on receive.
//!
//! # Who the client is
//!
//! Source ranges and session affinity key on a client address. For a node process that is
//! the socket's bound source address when the hook shows one (connect4: the socket's
//! `src_ip4`, set by bind(); sendmsg4: `msg_src_ip4`, the bound address or IP_PKTINFO's),
//! else the masquerade address (the node's primary IP, `--node-ip`). That is the source
//! kube-proxy's rules see for the same call: an unbound socket gets the node's address
//! from routing. Cilium keys socket affinity on the network namespace cookie instead,
//! because its socket LB also serves pods, each in its own namespace. Here a cookie would
//! not fit SVC4_AFFINITY's client-address key (a layout change) and could not be checked
//! against loadBalancerSourceRanges, which are address prefixes: a pod's flows to such
//! frontends stay with TC (see "Pods").
//!
//! # Never out untranslated
//!
//! Once the destination is a Service address (its frontend exists), the call either goes
//! to a backend or fails: letting it out with the Service address could leak it to a
//! gateway, or to whatever else answers on that address. Failures, as `errno`:
//! - no endpoints at all: ECONNREFUSED, as after kube-proxy's REJECT (`sock_reject`);
//! - policy Local without a local endpoint, or a source outside loadBalancerSourceRanges:
//!   kube-proxy DROPs; a socket has no packet to drop, so EPERM, the kernel's answer for a
//!   denying cgroup program (`sock_reject`);
//! - the frontend counts a slot, or a slot names a backend, that is not there (the agent
//!   is between two writes of an update): EHOSTUNREACH (`sock_no_backend`), as for a
//!   route that is briefly missing: a transient failure callers already retry, and what
//!   Cilium's socket LB answers for a Service without a backend.
//!
//! # Pods
//!
//! The programs sit on a cgroup; on a node whose cgroup root they are attached to, pods'
//! processes are under it too. Which of their sockets are translated is the agent's
//! `--socket-lb` (SOCK_LB_PODS), told apart by network namespace (the node's is
//! HOST_NETNS_COOKIE), as Cilium's `hostNamespaceOnly`:
//! - `node`: only the node's own sockets; a pod's calls go out untouched and TC
//!   translates their packets (a sidecar or service mesh in the pod sees the Service
//!   address on the wire).
//! - `all`: a pod's TCP connect() and UDP sendmsg() to a ClusterIP go straight to a backend
//!   (no per-packet NAT for that flow at all), chosen by `lb::pick` for a pod source.
//!   Whatever needs a rule on the packet or the pod's address is still left to TC:
//!   external addresses (masquerade, source ranges), session affinity (keyed on the
//!   client address, which an unbound socket does not have yet), --masquerade-all, and
//!   every refusal (REJECT, DROP, no backend), so their verdicts and counters stay TC's.
//!   A pod that picks itself reaches itself directly, where kube-proxy would masquerade
//!   the hairpin through the node.
//!
//! A TCP or UDP call to an address no frontend takes follows kube-proxy nftables'
//! `cluster-ips-check` rules (unserved.rs): an allocated ClusterIP on a port no Service has
//! fails with ECONNREFUSED (REJECT), an unallocated address inside a service CIDR with
//! EPERM (DROP), both counted as `sock_reject`; anything else goes on untouched.
use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_set_retval},
    programs::SockAddrContext,
};
use svc_common::{
    PROTO_TCP, PROTO_UDP, SVC_F_AFFINITY, SVC_F_EXTERNAL, SVC_F_SOURCE_RANGES, SockRevNat4Key,
    SockRevNat4Value, Verdict,
};

use crate::{
    clock, config,
    lb::{self, NoPick, Source},
    maps::{SVC4_SOCK_RNAT, count},
    unserved::{self, Unserved},
};

/// What a cgroup sock_addr program returns: 1 lets the call go on, 0 fails it (EPERM unless
/// the program set another error with bpf_set_retval).
const ALLOW: i32 = 1;
const DENY: i32 = 0;
const ECONNREFUSED: i32 = 111;
const EHOSTUNREACH: i32 = 113;

/// connect4: the client is the socket's bound address (bind() before connect()), if any.
#[inline(always)]
pub fn connect4(ctx: &SockAddrContext) -> i32 {
    // SAFETY: the context the kernel passed; `sk` is always a valid socket for sock_addr
    // programs (PTR_TO_SOCKET), and src_ip4 is one of its readable fields.
    let bound = unsafe { (*(*ctx.sock_addr).__bindgen_anon_1.sk).src_ip4 };
    translate(ctx, bound)
}

/// sendmsg4 (unconnected UDP): the client is `msg_src_ip4` (the socket's bound address, or
/// the one IP_PKTINFO asks for), if any. connect4 may not read that field.
#[inline(always)]
pub fn sendmsg4(ctx: &SockAddrContext) -> i32 {
    // SAFETY: the context the kernel passed; msg_src_ip4 is readable in sendmsg4.
    let bound = unsafe { (*ctx.sock_addr).msg_src_ip4 };
    translate(ctx, bound)
}

/// A Service address becomes one of its backends, or the call fails (see the module docs).
/// `bound`: the socket's source address, 0 if it has none yet. A pod's socket (another
/// network namespace than the node's) is translated only as "Pods" in the module docs say.
#[inline(always)]
fn translate(ctx: &SockAddrContext, bound: u32) -> i32 {
    // SAFETY: the context pointer the kernel passed; fields read and written are those a
    // sock_addr program may access.
    let sa: &mut bpf_sock_addr = unsafe { &mut *ctx.sock_addr };
    let pod = !in_node_netns(ctx);
    if pod && !config::sock_lb_pods() {
        return ALLOW;
    }
    let (vip, vport) = (sa.user_ip4, sa.user_port as u16);
    let Some(f) = lb::frontend(vip, vport, sa.protocol as u8) else {
        return if pod {
            ALLOW
        } else {
            unserved(vip, sa.protocol as u8)
        };
    };
    let b = if pod {
        if f.has_any(POD_PACKET_RULES) || config::masquerade_all() {
            return ALLOW;
        }
        match lb::pick(&f, bound, Source::Pod, clock::now()) {
            Ok(b) => b,
            // Refusals are the packet rules' (REJECT, DROP): TC applies and counts them.
            Err(_) => return ALLOW,
        }
    } else {
        let client = if bound != 0 {
            bound
        } else {
            config::masq_addr()
        };
        match lb::pick(&f, client, Source::Node, clock::now()) {
            Ok(b) => b,
            Err(why) => return refuse(why),
        }
    };
    // SAFETY: the context pointer is the socket-address context this helper takes.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr as *mut _) };
    let rkey = SockRevNat4Key {
        cookie,
        backend_be: b.addr,
        backend_port_be: b.port,
        _pad: [0; 2],
    };
    let value = SockRevNat4Value {
        vip_be: vip,
        rev_nat_id: f.rev_nat_id,
        port_be: vport,
        _pad: [0; 2],
    };
    // A full LRU map evicts rather than fails; losing this entry only affects how an
    // unconnected UDP socket sees a reply's source, never where the datagram goes.
    let _ = SVC4_SOCK_RNAT.insert(&rkey, &value, 0);
    sa.user_ip4 = b.addr;
    sa.user_port = b.port as u32;
    count(Verdict::SockTranslate);
    ALLOW
}

/// Frontends whose pod traffic needs a rule on the packet (or the pod's address, which a
/// socket that has not sent yet does not have): external addresses (masquerade with policy
/// Cluster, source ranges), session affinity (keyed on the pod's address).
const POD_PACKET_RULES: u16 = SVC_F_EXTERNAL | SVC_F_AFFINITY | SVC_F_SOURCE_RANGES;

/// True when the socket lives in the node's own network namespace, or when that is not
/// known (HOST_NETNS_COOKIE 0).
#[inline(always)]
fn in_node_netns(ctx: &SockAddrContext) -> bool {
    let node = config::host_netns_cookie();
    // SAFETY: the context pointer the kernel passed; bpf_get_netns_cookie takes it in
    // cgroup sock_addr programs (kernel 5.7+).
    node == 0 || unsafe { bpf_get_netns_cookie(ctx.sock_addr as *mut _) } == node
}

/// Fails the call for `why` with the errno the module docs give, and counts it.
#[inline(always)]
fn refuse(why: NoPick) -> i32 {
    let (verdict, errno) = match why {
        NoPick::NoEndpoints => (Verdict::SockReject, ECONNREFUSED),
        // DENY alone already means EPERM.
        NoPick::NoLocalEndpoint | NoPick::SourceRange => (Verdict::SockReject, 0),
        NoPick::MidUpdate => (Verdict::SockNoBackend, EHOSTUNREACH),
    };
    deny(verdict, errno)
}

/// Fails the call with `errno` (0: EPERM), counting `verdict`.
#[inline(always)]
fn deny(verdict: Verdict, errno: i32) -> i32 {
    count(verdict);
    if errno != 0 {
        // SAFETY: helper with a plain integer argument; allowed in cgroup sock_addr programs.
        unsafe { bpf_set_retval(-errno) };
    }
    DENY
}

/// A call to `vip` that no frontend takes (unserved.rs), TCP or UDP: an allocated ClusterIP
/// on a port no Service has fails with ECONNREFUSED (what kube-proxy's REJECT gives a
/// node process); an unallocated address inside a service CIDR with EPERM (kube-proxy
/// DROPs; a socket has no packet to drop, as for policy Local); anything else goes on.
/// Other protocols (ping sockets) are left alone, as TC and XDP leave their packets.
#[inline(always)]
fn unserved(vip: u32, proto: u8) -> i32 {
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return ALLOW;
    }
    match unserved::classify(vip) {
        Unserved::Pass => ALLOW,
        Unserved::Reject => deny(Verdict::SockReject, ECONNREFUSED),
        // DENY alone means EPERM.
        Unserved::Drop => deny(Verdict::SockReject, 0),
    }
}

/// recvmsg4 (UDP): a datagram from a backend this socket sent to through a Service reads
/// as coming from the Service address.
#[inline(always)]
pub fn reverse(ctx: &SockAddrContext) -> i32 {
    let sa: &mut bpf_sock_addr = unsafe { &mut *ctx.sock_addr };
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr as *mut _) };
    let key = SockRevNat4Key {
        cookie,
        backend_be: sa.user_ip4,
        backend_port_be: sa.user_port as u16,
        _pad: [0; 2],
    };
    if let Some(v) = unsafe { SVC4_SOCK_RNAT.get(&key) } {
        sa.user_ip4 = v.vip_be;
        sa.user_port = v.port_be as u32;
        count(Verdict::SockRevNat);
    }
    ALLOW
}
