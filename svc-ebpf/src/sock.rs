//! Socket-level load balancing for the node's own processes (cgroup connect4 / sendmsg4 /
//! recvmsg4), as Cilium's socket LB does: their packets never cross the TC or XDP hooks on
//! the way out, so the Service address is swapped for a backend when the socket connects
//! or sends. The flow then leaves with the node's own address, which is the masquerade
//! kube-proxy applies to node-originated traffic. Replies to unconnected UDP sockets get
//! their source turned back into the Service address on receive.
use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::{bpf_get_socket_cookie, bpf_set_retval},
    programs::SockAddrContext,
};
use svc_common::{
    SCOPE_ALL, SCOPE_LOCAL, SVC_F_EXTERNAL, SVC_F_LOCAL, SockRevNat4Key, SockRevNat4Value, Svc4Key,
    Verdict,
};

use crate::{
    lb,
    maps::{SVC4_SERVICES, SVC4_SOCK_RNAT, count},
};

/// What a cgroup sock_addr program returns: 1 lets the call go on, 0 fails it.
const ALLOW: i32 = 1;
const DENY: i32 = 0;
const ECONNREFUSED: i32 = 111;

/// connect4 and sendmsg4: a Service address becomes one of its backends.
#[inline(always)]
pub fn translate(ctx: &SockAddrContext) -> i32 {
    // SAFETY: the context pointer the kernel passed; fields read and written are those a
    // sock_addr program may access.
    let sa: &mut bpf_sock_addr = unsafe { &mut *ctx.sock_addr };
    let proto = sa.protocol as u8;
    let key = Svc4Key {
        vip_be: sa.user_ip4,
        port_be: sa.user_port as u16,
        slot: 0,
        proto,
        scope: SCOPE_ALL,
        _pad: [0; 2],
    };
    let Some(frontend) = (unsafe { SVC4_SERVICES.get(&key) }) else {
        return ALLOW;
    };
    let (all, flags, rev_nat_id) = (frontend.count, frontend.flags, frontend.rev_nat_id);
    // From the node: internalTrafficPolicy Local keeps ClusterIP traffic on this node's
    // endpoints; for external addresses the node uses every endpoint (kube-proxy).
    let (scope, n) = if flags & SVC_F_LOCAL != 0 && flags & SVC_F_EXTERNAL == 0 {
        let local_key = Svc4Key {
            scope: SCOPE_LOCAL,
            ..key
        };
        (
            SCOPE_LOCAL,
            unsafe { SVC4_SERVICES.get(&local_key) }.map_or(0, |v| v.count),
        )
    } else {
        (SCOPE_ALL, all)
    };
    if all == 0 {
        // No endpoints: the caller sees "connection refused", as after kube-proxy's REJECT.
        count(Verdict::SockReject);
        unsafe { bpf_set_retval(-ECONNREFUSED) };
        return DENY;
    }
    if n == 0 {
        // Policy Local without a local endpoint: kube-proxy DROPs. A socket has no packet
        // to drop, and letting it go out untranslated could leak it to a gateway, so the
        // call fails with EPERM (the kernel's answer for a denying cgroup program).
        count(Verdict::SockReject);
        return DENY;
    }
    let Some((_, _, addr, port)) = lb::random_backend(&key, scope, n) else {
        return ALLOW;
    };
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr as *mut _) };
    let rkey = SockRevNat4Key {
        cookie,
        backend_be: addr,
        backend_port_be: port,
        _pad: [0; 2],
    };
    let value = SockRevNat4Value {
        vip_be: sa.user_ip4,
        rev_nat_id,
        port_be: sa.user_port as u16,
        _pad: [0; 2],
    };
    let _ = SVC4_SOCK_RNAT.insert(&rkey, &value, 0);
    sa.user_ip4 = addr;
    sa.user_port = port as u32;
    count(Verdict::SockTranslate);
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
