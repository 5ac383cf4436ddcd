//! Socket-level load balancing (cgroup connect4 / sendmsg4 / recvmsg4 and their IPv6
//! twins connect6 / sendmsg6 / recvmsg6, as Cilium's socket LB) for the node's own
//! processes, and for pods' if asked (see "Pods"). An IPv6 socket's call to a v4-mapped
//! address (`::ffff:a.b.c.d`, a dual-stack socket reaching an IPv4 address) is an IPv4 call:
//! it is looked up in the IPv4 maps and gets an IPv4 backend, v4-mapped again. The node's
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
use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_set_retval},
    programs::SockAddrContext,
};
use svc_common::{
    Ip6, PROTO_TCP, PROTO_UDP, SVC_F_AFFINITY, SVC_F_EXTERNAL, SVC_F_SOURCE_RANGES, SockRevNat4Key,
    SockRevNat6Key, SockRevNatValue, Verdict,
};

use crate::{
    clock, config,
    family::Family,
    lb::{self, NoPick, Source},
    maps::{SVC4_SOCK_RNAT, SVC6_SOCK_RNAT, count},
    unserved::Unserved,
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
    translate4(ctx, bound)
}

/// sendmsg4 (unconnected UDP): the client is `msg_src_ip4` (the socket's bound address, or
/// the one IP_PKTINFO asks for), if any. connect4 may not read that field.
#[inline(always)]
pub fn sendmsg4(ctx: &SockAddrContext) -> i32 {
    // SAFETY: the context the kernel passed; msg_src_ip4 is readable in sendmsg4.
    let bound = unsafe { (*ctx.sock_addr).msg_src_ip4 };
    translate4(ctx, bound)
}

/// connect6: as connect4, the client being the socket's bound IPv6 address.
#[inline(always)]
pub fn connect6(ctx: &SockAddrContext) -> i32 {
    // SAFETY: as connect4; src_ip6 is readable in 4-byte words.
    let sk = unsafe { (*ctx.sock_addr).__bindgen_anon_1.sk };
    let bound = unsafe { read_words(&(*sk).src_ip6) };
    translate6(ctx, bound)
}

/// sendmsg6: as sendmsg4, with `msg_src_ip6`.
#[inline(always)]
pub fn sendmsg6(ctx: &SockAddrContext) -> i32 {
    // SAFETY: msg_src_ip6 is readable in sendmsg6, in 4-byte words.
    let bound = unsafe { read_words(&(*ctx.sock_addr).msg_src_ip6) };
    translate6(ctx, bound)
}

/// Reads an IPv6 address of the context one 32-bit word at a time: the only access size
/// the verifier allows for every IPv6 field of a sock_addr context.
#[inline(always)]
unsafe fn read_words(field: &[u32; 4]) -> Ip6 {
    unsafe {
        [
            read_volatile(&field[0]),
            read_volatile(&field[1]),
            read_volatile(&field[2]),
            read_volatile(&field[3]),
        ]
    }
}

/// Writes an IPv6 address into the context one 32-bit word at a time (as `read_words`).
#[inline(always)]
fn write_words(field: &mut [u32; 4], value: Ip6) {
    // SAFETY: plain stores into the context's field.
    unsafe {
        write_volatile(&mut field[0], value[0]);
        write_volatile(&mut field[1], value[1]);
        write_volatile(&mut field[2], value[2]);
        write_volatile(&mut field[3], value[3]);
    }
}

/// ::ffff:0:0/96, the first three words in network order.
const V4_MAPPED: [u32; 3] = [0, 0, 0x0000_ffffu32.to_be()];

#[inline(always)]
fn v4_mapped(a: &Ip6) -> Option<u32> {
    (a[0] == V4_MAPPED[0] && a[1] == V4_MAPPED[1] && a[2] == V4_MAPPED[2]).then_some(a[3])
}

/// What a call to a Service address gets.
enum Sock<A> {
    /// Let it go on as it is.
    Allow,
    /// Fail it: the program's return value (errno set, verdict counted).
    Deny(i32),
    /// Send it to this backend instead.
    To { addr: A, port: u16, rev_nat_id: u32 },
}

/// The program's return value for `sock`; a translation is written into the context by
/// `to` (with the Service remembered for recvmsg) and counted.
#[inline(always)]
fn answer<A>(sock: Sock<A>, to: impl FnOnce(A, u16, u32)) -> i32 {
    match sock {
        Sock::Allow => ALLOW,
        Sock::Deny(ret) => ret,
        Sock::To {
            addr,
            port,
            rev_nat_id,
        } => {
            to(addr, port, rev_nat_id);
            count(Verdict::SockTranslate);
            ALLOW
        }
    }
}

/// IPv4 calls.
#[inline(always)]
fn translate4(ctx: &SockAddrContext, bound: u32) -> i32 {
    // SAFETY: the context pointer the kernel passed; fields read and written are those a
    // sock_addr program may access.
    let sa: &mut bpf_sock_addr = unsafe { &mut *ctx.sock_addr };
    let (vip, vport) = (sa.user_ip4, sa.user_port as u16);
    answer(
        decide(ctx, vip, vport, sa.protocol as u8, bound),
        |addr, port, id| {
            remember4(ctx, addr, port, vip, vport, id);
            sa.user_ip4 = addr;
            sa.user_port = port as u32;
        },
    )
}

/// IPv6 calls; a v4-mapped destination is an IPv4 call (module docs).
#[inline(always)]
fn translate6(ctx: &SockAddrContext, bound: Ip6) -> i32 {
    // SAFETY: as translate4.
    let sa: &mut bpf_sock_addr = unsafe { &mut *ctx.sock_addr };
    let vip = unsafe { read_words(&sa.user_ip6) };
    let vport = sa.user_port as u16;
    let proto = sa.protocol as u8;
    if let Some(vip4) = v4_mapped(&vip) {
        let bound4 = v4_mapped(&bound).unwrap_or(0);
        return answer(decide(ctx, vip4, vport, proto, bound4), |addr, port, id| {
            remember4(ctx, addr, port, vip4, vport, id);
            write_words(
                &mut sa.user_ip6,
                [V4_MAPPED[0], V4_MAPPED[1], V4_MAPPED[2], addr],
            );
            sa.user_port = port as u32;
        });
    }
    answer(decide(ctx, vip, vport, proto, bound), |addr, port, id| {
        remember6(ctx, addr, port, vip, vport, id);
        write_words(&mut sa.user_ip6, addr);
        sa.user_port = port as u32;
    })
}

// A full LRU map evicts rather than fails; losing an entry of SVC4_SOCK_RNAT or
// SVC6_SOCK_RNAT only affects how an unconnected UDP socket sees a reply's source, never
// where the datagram goes.

/// Remembers which Service an IPv4 backend was reached through, for recvmsg4/6.
#[inline(always)]
fn remember4(ctx: &SockAddrContext, addr: u32, port: u16, vip: u32, vport: u16, id: u32) {
    // SAFETY: the context pointer is the socket-address context this helper takes.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr as *mut _) };
    let rkey = SockRevNat4Key {
        cookie,
        backend_be: addr,
        backend_port_be: port,
        _pad: [0; 2],
    };
    let value = SockRevNatValue {
        vip_be: vip,
        rev_nat_id: id,
        port_be: vport,
        _pad: [0; 2],
    };
    let _ = SVC4_SOCK_RNAT.insert(&rkey, &value, 0);
}

/// Remembers which Service an IPv6 backend was reached through, for recvmsg6.
#[inline(always)]
fn remember6(ctx: &SockAddrContext, addr: Ip6, port: u16, vip: Ip6, vport: u16, id: u32) {
    // SAFETY: the context pointer is the socket-address context this helper takes.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr as *mut _) };
    let rkey = SockRevNat6Key {
        cookie,
        backend_be: addr,
        backend_port_be: port,
        _pad: [0; 6],
    };
    let value = SockRevNatValue {
        vip_be: vip,
        rev_nat_id: id,
        port_be: vport,
        _pad: [0; 2],
    };
    let _ = SVC6_SOCK_RNAT.insert(&rkey, &value, 0);
}

/// A Service address becomes one of its backends, or the call fails (see the module docs).
/// `bound`: the socket's source address, zero if it has none yet. A pod's socket (another
/// network namespace than the node's) is translated only as "Pods" in the module docs say.
#[inline(always)]
fn decide<A: Family>(ctx: &SockAddrContext, vip: A, vport: u16, proto: u8, bound: A) -> Sock<A> {
    let pod = !in_node_netns(ctx);
    if pod && !config::sock_lb_pods() {
        return Sock::Allow;
    }
    let Some(f) = lb::frontend(vip, vport, proto) else {
        return if pod {
            Sock::Allow
        } else {
            unserved(&vip, proto)
        };
    };
    let b = if pod {
        if f.has_any(POD_PACKET_RULES) || config::masquerade_all() {
            return Sock::Allow;
        }
        match lb::pick(&f, bound, Source::Pod, clock::now()) {
            Ok(b) => b,
            // Refusals are the packet rules' (REJECT, DROP): TC applies and counts them.
            Err(_) => return Sock::Allow,
        }
    } else {
        let client = if bound.is_zero() {
            A::masq_addr()
        } else {
            bound
        };
        match lb::pick(&f, client, Source::Node, clock::now()) {
            Ok(b) => b,
            Err(why) => return Sock::Deny(refuse(why)),
        }
    };
    Sock::To {
        addr: b.addr,
        port: b.port,
        rev_nat_id: f.rev_nat_id,
    }
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

/// Fails the call for `why` with the errno the module docs give, and counts it: the
/// program's return value.
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
fn unserved<A: Family>(vip: &A, proto: u8) -> Sock<A> {
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Sock::Allow;
    }
    match vip.unserved_class() {
        Unserved::Pass => Sock::Allow,
        Unserved::Reject => Sock::Deny(deny(Verdict::SockReject, ECONNREFUSED)),
        // DENY alone means EPERM.
        Unserved::Drop => Sock::Deny(deny(Verdict::SockReject, 0)),
    }
}

/// recvmsg6 (UDP): as `reverse`; a v4-mapped source is looked up as recvmsg4 would.
#[inline(always)]
pub fn reverse6(ctx: &SockAddrContext) -> i32 {
    // SAFETY: as `reverse`; user_ip6 is read and written in 4-byte words.
    let sa: &mut bpf_sock_addr = unsafe { &mut *ctx.sock_addr };
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr as *mut _) };
    let from = unsafe { read_words(&sa.user_ip6) };
    let port = sa.user_port as u16;
    if let Some(from4) = v4_mapped(&from) {
        let key = SockRevNat4Key {
            cookie,
            backend_be: from4,
            backend_port_be: port,
            _pad: [0; 2],
        };
        if let Some(v) = unsafe { SVC4_SOCK_RNAT.get(&key) } {
            let (vip, vport) = (v.vip_be, v.port_be);
            write_words(
                &mut sa.user_ip6,
                [V4_MAPPED[0], V4_MAPPED[1], V4_MAPPED[2], vip],
            );
            sa.user_port = vport as u32;
            count(Verdict::SockRevNat);
        }
        return ALLOW;
    }
    let key = SockRevNat6Key {
        cookie,
        backend_be: from,
        backend_port_be: port,
        _pad: [0; 6],
    };
    if let Some(v) = unsafe { SVC6_SOCK_RNAT.get(&key) } {
        let (vip, vport) = (v.vip_be, v.port_be);
        write_words(&mut sa.user_ip6, vip);
        sa.user_port = vport as u32;
        count(Verdict::SockRevNat);
    }
    ALLOW
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
