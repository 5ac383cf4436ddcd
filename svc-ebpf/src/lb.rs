//! The load-balancing decision shared by TC and XDP: service lookup, backend choice for a
//! new flow, conntrack for established flows and replies. It reads and writes maps but
//! never the packet; the callers apply the returned action with their own rewrite code.
use aya_ebpf::helpers::bpf_get_prandom_u32;
use svc_common::{
    CT_F_CLOSING, CT_F_REPLIED, CT_KIND_REPLY, CT_KIND_SERVICE, Ct4Key, Ct4Value, PROTO_TCP,
    Svc4Key, Verdict, ct_timeout_ns,
};

use crate::{
    maps::{SVC4_BACKENDS, SVC4_CT, SVC4_REVNAT, SVC4_SERVICES},
    parse::{Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};

pub enum Action {
    /// Rewrite the destination to addr:port (network order).
    Dnat {
        addr: u32,
        port: u16,
        verdict: Verdict,
    },
    /// Rewrite the source to addr:port (network order): a reply leaving a backend.
    RevNat { addr: u32, port: u16 },
    /// The destination is a Service with no endpoints: answer with RST / ICMP unreachable.
    Reject,
    /// Nothing to translate; the verdict says why.
    Done(Verdict),
}

#[inline(always)]
fn closing_flags(tcp_flags: u8) -> u8 {
    if tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        CT_F_CLOSING
    } else {
        0
    }
}

#[inline(always)]
fn expired(ct: &Ct4Value, proto: u8, now: u64) -> bool {
    now.saturating_sub(ct.last_seen_ns) > ct_timeout_ns(proto, ct.flags)
}

#[inline(always)]
pub fn decide(pkt: &Packet, now: u64) -> Action {
    let frontend_key = Svc4Key {
        vip_be: pkt.daddr,
        port_be: pkt.dport,
        slot: 0,
        proto: pkt.proto,
        _pad: [0; 3],
    };
    // SAFETY: values are copied out at once; a concurrent update can at worst give us a
    // value from just before or after it, which the slot/backend checks below tolerate.
    match unsafe { SVC4_SERVICES.get(&frontend_key) } {
        Some(frontend) => {
            let (count, rev_nat_id) = (frontend.count, frontend.rev_nat_id);
            forward(pkt, &frontend_key, count, rev_nat_id, now)
        }
        None => reply(pkt, now),
    }
}

/// A packet to a Service address.
#[inline(always)]
fn forward(pkt: &Packet, frontend_key: &Svc4Key, count: u16, rev_nat_id: u16, now: u64) -> Action {
    let ct_key = Ct4Key {
        saddr_be: pkt.saddr,
        daddr_be: pkt.daddr,
        sport_be: pkt.sport,
        dport_be: pkt.dport,
        proto: pkt.proto,
        kind: CT_KIND_SERVICE,
        _pad: [0; 2],
    };
    if let Some(ct) = SVC4_CT.get_ptr_mut(&ct_key) {
        // SAFETY: a pointer into the LRU map's value; fields are written individually.
        let ct = unsafe { &mut *ct };
        // A bare SYN on a closing entry is a new connection reusing the client port.
        let reused = pkt.proto == PROTO_TCP
            && ct.flags & CT_F_CLOSING != 0
            && pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
        if !reused && !expired(ct, pkt.proto, now) {
            // The flow keeps its backend while that backend exists with the same address,
            // whether or not it is still among the Service's slots. A freed and reused id
            // has another address: the flow is then stale and gets a new backend.
            if let Some(backend) = unsafe { SVC4_BACKENDS.get(&ct.backend_id) } {
                if backend.addr_be == ct.addr_be && backend.port_be == ct.port_be {
                    ct.last_seen_ns = now;
                    ct.flags |= closing_flags(pkt.tcp_flags);
                    return Action::Dnat {
                        addr: ct.addr_be,
                        port: ct.port_be,
                        verdict: Verdict::DnatEstablished,
                    };
                }
            }
        }
    }

    if count == 0 {
        return Action::Reject;
    }
    // SAFETY: helper call without arguments.
    let slot = (unsafe { bpf_get_prandom_u32() } % count as u32) as u16 + 1;
    let slot_key = Svc4Key {
        slot,
        ..*frontend_key
    };
    let Some(slot_value) = (unsafe { SVC4_SERVICES.get(&slot_key) }) else {
        return Action::Done(Verdict::DropNoBackend);
    };
    let backend_id = slot_value.backend_id;
    let Some(backend) = (unsafe { SVC4_BACKENDS.get(&backend_id) }) else {
        return Action::Done(Verdict::DropNoBackend);
    };
    let (baddr, bport) = (backend.addr_be, backend.port_be);

    let flags = closing_flags(pkt.tcp_flags);
    let forward_entry = Ct4Value {
        created_ns: now,
        last_seen_ns: now,
        backend_id,
        addr_be: baddr,
        port_be: bport,
        rev_nat_id,
        flags,
        _pad: [0; 3],
    };
    if SVC4_CT.insert(&ct_key, &forward_entry, 0).is_err() {
        return Action::Done(Verdict::DropCtFailed);
    }
    let reply_key = Ct4Key {
        saddr_be: baddr,
        daddr_be: pkt.saddr,
        sport_be: bport,
        dport_be: pkt.sport,
        proto: pkt.proto,
        kind: CT_KIND_REPLY,
        _pad: [0; 2],
    };
    // Reply entries remember the service address for display; the datapath takes it
    // from SVC4_REVNAT by rev_nat_id, which the agent owns.
    let reply_entry = Ct4Value {
        addr_be: pkt.daddr,
        port_be: pkt.dport,
        ..forward_entry
    };
    if SVC4_CT.insert(&reply_key, &reply_entry, 0).is_err() {
        let _ = SVC4_CT.remove(&ct_key);
        return Action::Done(Verdict::DropCtFailed);
    }
    Action::Dnat {
        addr: baddr,
        port: bport,
        verdict: Verdict::DnatNew,
    }
}

/// A packet that is not to a Service address: a reply of a translated flow, or not ours.
#[inline(always)]
fn reply(pkt: &Packet, now: u64) -> Action {
    let key = Ct4Key {
        saddr_be: pkt.saddr,
        daddr_be: pkt.daddr,
        sport_be: pkt.sport,
        dport_be: pkt.dport,
        proto: pkt.proto,
        kind: CT_KIND_REPLY,
        _pad: [0; 2],
    };
    let Some(ct) = SVC4_CT.get_ptr_mut(&key) else {
        return Action::Done(Verdict::PassNotService);
    };
    let ct = unsafe { &mut *ct };
    if expired(ct, pkt.proto, now) {
        return Action::Done(Verdict::PassNotService);
    }
    let rev_nat_id = ct.rev_nat_id as u32;
    let Some(rev) = (unsafe { SVC4_REVNAT.get(&rev_nat_id) }) else {
        // The Service is gone: leave the packet as it is.
        return Action::Done(Verdict::PassNotService);
    };
    let (vip, vport) = (rev.vip_be, rev.port_be);
    ct.last_seen_ns = now;
    let new_flags = ct.flags | CT_F_REPLIED | closing_flags(pkt.tcp_flags);
    if new_flags != ct.flags {
        ct.flags = new_flags;
        // First reply (or a close): the forward entry moves from the short SYN lifetime to
        // the established one (or to closing), as the reply entry does.
        let forward_key = Ct4Key {
            saddr_be: pkt.daddr,
            daddr_be: vip,
            sport_be: pkt.dport,
            dport_be: vport,
            proto: pkt.proto,
            kind: CT_KIND_SERVICE,
            _pad: [0; 2],
        };
        if let Some(fwd) = SVC4_CT.get_ptr_mut(&forward_key) {
            unsafe { (*fwd).flags |= new_flags & (CT_F_REPLIED | CT_F_CLOSING) };
        }
    }
    Action::RevNat {
        addr: vip,
        port: vport,
    }
}
