//! The load-balancing decision: service lookup and backend choice for a new flow (source
//! ranges, traffic policy, session affinity: `pick`, shared by TC, XDP and the socket
//! programs of sock.rs, as Cilium's bpf_sock.c reuses lib/lb.h), and for TC and XDP also
//! masquerade and conntrack for established flows and replies: the reply-tuple collision
//! rule and the port search (`reply_port`), and flow lifetimes (either entry alive). It
//! reads and writes maps but never the packet; the callers apply the returned action with
//! their own rewrite code. README "The datapath" describes the rules for users.
//!
//! Every function is generic over the address family `A` (family.rs: `u32` for IPv4,
//! `Ip6` for IPv6), so each rule is written once for both; `A`'s maps are `A::ct()` and so
//! on. Addresses are compared with `same`, never `==` (family.rs says why).
use aya_ebpf::bindings::{BPF_ANY, BPF_NOEXIST};
use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_get_prandom_u32, bpf_loop},
    maps::lpm_trie::Key,
};
use svc_common::{
    Affinity4Value, AffinityKey, BACKEND_STATE_ACTIVE, CT_F_CLOSING, CT_F_HALF_OPEN, CT_F_REPLIED,
    CT_F_SNAT, CT_KIND_REPLY, CT_KIND_SERVICE, CtKey, CtValue, PROTO_TCP, SCOPE_ALL, SCOPE_LOCAL,
    SRC_RANGE_PREFIX_BASE, SVC_F_AFFINITY, SVC_F_EXTERNAL, SVC_F_LOCAL, SVC_F_SOURCE_RANGES,
    SrcRange, SvcKey, Verdict, ct_timeout_ns,
};

use crate::{
    clock::Clock,
    config,
    family::Family,
    local,
    parse::{Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    rules, sctp,
};

/// An address and port, network order.
#[derive(Clone, Copy)]
pub struct Endpoint<A = u32> {
    pub addr: A,
    pub port: u16,
}

impl<A: Family> Endpoint<A> {
    /// "Leave this side as it is": no address we translate to is 0.0.0.0. A plain value
    /// rather than an Option: an `Action` is handed to BPF functions by pointer (frag.rs),
    /// and a `None` leaves bytes undefined that LLVM may fill with any register, which the
    /// verifier refuses when that register holds a pointer ("invalid size of register
    /// spill").
    pub const NONE: Endpoint<A> = Endpoint {
        addr: A::ZERO,
        port: 0,
    };

    #[inline(always)]
    pub fn is_set(&self) -> bool {
        !self.addr.is_zero()
    }
}

/// What to do with a packet. `rev_nat_id`: the Service (frontend) the packet is counted
/// for in SVC_SVC_STATS (counters.rs), 0 for none.
pub enum Action<A = u32> {
    /// A packet to a Service: rewrite the destination, and the source if masqueraded or
    /// its port remapped (a reply-tuple clash, see `reply_port`).
    Forward {
        dst: Endpoint<A>,
        /// [`Endpoint::NONE`] when the source stays.
        src: Endpoint<A>,
        verdict: Verdict,
        rev_nat_id: u32,
    },
    /// A reply leaving a backend: the source goes back to the Service address, and the
    /// destination back to the original client if the flow's source was translated.
    Reply {
        src: Endpoint<A>,
        /// [`Endpoint::NONE`] when the destination stays.
        dst: Endpoint<A>,
        rev_nat_id: u32,
    },
    /// The destination is a Service with no endpoints (`rev_nat_id`), or a ClusterIP on a
    /// port no Service has (0): answer with RST / ICMP unreachable.
    Reject { rev_nat_id: u32 },
    /// A new flow to a Service that gets no backend: drop it; the verdict says why.
    Drop { verdict: Verdict, rev_nat_id: u32 },
    /// Nothing to translate, and no Service's packet; the verdict says why.
    Done(Verdict),
}

/// Ports a new flow's source may be remapped to are searched in runs of NAT_PORT_RUN
/// consecutive ports, each run starting at a fresh random point of the range, at most
/// NAT_PORT_PROBES probes in all (netfilter: up to 128 attempts, then restarts at a random
/// point with smaller windows). Consecutive ports cover a small range completely; restarts
/// keep a new flow from walking along the runs of taken ports that consecutive allocation
/// builds up. Simulated on 4,536 ports with ports taken at random and freed as flows end:
/// no new flow failed at 90 % of the range taken, 0.2 % at 95 %, 2 % at 98 % (the 6
/// random probes before this failed 25 % of new flows at 80 %). Every probe is one hash
/// lookup, run by bpf_loop (`search_step`), so the verifier checks it once, not 128 times
/// (svc-agent/tests/datapath/verifier.rs prints the instruction count).
const NAT_PORT_PROBES: u32 = 128;
const NAT_PORT_RUN: u32 = 8;

#[inline(always)]
fn closing_flags(tcp_flags: u8) -> u8 {
    if tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        CT_F_CLOSING
    } else {
        0
    }
}

#[inline(always)]
pub(crate) fn expired<A>(ct: &CtValue<A>, proto: u8, now: u64) -> bool {
    now.saturating_sub(ct.last_seen_ns) > ct_timeout_ns(proto, ct.flags)
}

// A flow lives while either of its two entries is within its lifetime: each entry is
// refreshed only by the packets of its own direction, so a flow whose traffic goes one
// way (a UDP stream, a long upload) would otherwise lose the other entry while alive.
// Netfilter keeps one entry for both directions. The check of the other entry runs only
// when an entry has expired, so it costs nothing on the common path. Without it an
// expired reply entry of a live flow could be given to a new flow (the tuple clash the
// collision rule prevents), and the live flow's replies would go to the new one.

/// Whether the service entry of the flow whose reply entry `rev` is keyed by `key` is
/// alive and still describes this reply tuple (same backend, same reply address:port).
#[inline(always)]
pub(crate) fn service_side_alive<A: Family>(key: &CtKey<A>, rev: &CtValue<A>, now: u64) -> bool {
    let Some(svc) = (unsafe { A::revnat().get(&rev.rev_nat_id) }) else {
        return false;
    };
    let fwd_key = ct_key(
        rev.addr_be,
        svc.vip_be,
        rev.port_be,
        svc.port_be,
        key.proto,
        CT_KIND_SERVICE,
    );
    let Some(fwd) = (unsafe { A::ct().get(&fwd_key) }) else {
        return false;
    };
    let (reply_addr, reply_port) = if fwd.flags & CT_F_SNAT != 0 {
        (fwd.nat_addr_be, fwd.nat_port_be)
    } else {
        (rev.addr_be, rev.port_be)
    };
    !expired(fwd, key.proto, now)
        && fwd.addr_be.same(&key.saddr_be)
        && fwd.port_be == key.sport_be
        && reply_addr.same(&key.daddr_be)
        && reply_port == key.dport_be
}

/// Whether the reply entry of the flow whose service entry `fwd` is keyed by `key` is
/// alive and belongs to this flow (same client, same Service).
#[inline(always)]
pub(crate) fn reply_side_alive<A: Family>(key: &CtKey<A>, fwd: &CtValue<A>, now: u64) -> bool {
    let (reply_addr, reply_port) = if fwd.flags & CT_F_SNAT != 0 {
        (fwd.nat_addr_be, fwd.nat_port_be)
    } else {
        (key.saddr_be, key.sport_be)
    };
    let reply_key = ct_key(
        fwd.addr_be,
        reply_addr,
        fwd.port_be,
        reply_port,
        key.proto,
        CT_KIND_REPLY,
    );
    match unsafe { A::ct().get(&reply_key) } {
        Some(rev) => {
            !expired(rev, key.proto, now)
                && rev.addr_be.same(&key.saddr_be)
                && rev.port_be == key.sport_be
                && rev.rev_nat_id == fwd.rev_nat_id
        }
        None => false,
    }
}

#[inline(always)]
pub(crate) fn ct_key<A>(
    saddr: A,
    daddr: A,
    sport: u16,
    dport: u16,
    proto: u8,
    kind: u8,
) -> CtKey<A> {
    CtKey {
        saddr_be: saddr,
        daddr_be: daddr,
        sport_be: sport,
        dport_be: dport,
        proto,
        kind,
        _pad: [0; 2],
    }
}

#[inline(always)]
pub fn decide<A: Family>(pkt: &Packet<A>, clock: &Clock) -> Action<A> {
    // Replies to masqueraded flows are addressed to the node, where NodePorts live too: a
    // kept client port can equal a NodePort, so such a reply must not be taken for a new
    // connection to it. Conntrack decides first for packets to the masquerade address.
    let to_node = pkt.daddr.same(&A::masq_addr());
    if to_node && let Some(action) = reply_entry(pkt, clock) {
        return action;
    }
    // 127/8 frontends (localhost NodePorts) are for the socket programs only.
    let f = if pkt.daddr.is_loopback() {
        None
    } else {
        frontend(pkt.daddr, pkt.dport, pkt.proto)
    };
    match f {
        Some(f) => forward(pkt, &f, clock.now()),
        // Conntrack said no already: the node's own traffic pays one lookup, not two.
        None if to_node => pkt.daddr.unserved(),
        None => reply(pkt, clock),
    }
}

/// A Service address's frontend entry (slot 0, SCOPE_ALL) as looked up, copied out.
#[derive(Clone, Copy)]
pub struct Frontend<A = u32> {
    key: SvcKey<A>,
    count: u16,
    pub rev_nat_id: u32,
    flags: u16,
    affinity_timeout: u32,
}

impl<A> Frontend<A> {
    /// Drops a new flow to this frontend for `verdict`.
    #[inline(always)]
    fn drop(&self, verdict: Verdict) -> Action<A> {
        Action::Drop {
            verdict,
            rev_nat_id: self.rev_nat_id,
        }
    }

    /// True if any of the SVC_F_* `bits` is set.
    #[inline(always)]
    pub fn has_any(&self, bits: u16) -> bool {
        self.flags & bits != 0
    }
}

/// The frontend of `vip:port/proto` (network order), if that is a Service address.
#[inline(always)]
pub fn frontend<A: Family>(vip: A, port: u16, proto: u8) -> Option<Frontend<A>> {
    let key = SvcKey {
        vip_be: vip,
        port_be: port,
        slot: 0,
        proto,
        scope: SCOPE_ALL,
        _pad: [0; 2],
    };
    // SAFETY: values are copied out at once; a concurrent update can at worst give us a
    // value from just before or after it, which the slot/backend checks of `pick` tolerate.
    let v = unsafe { A::services().get(&key) }?;
    Some(Frontend {
        key,
        count: v.count,
        rev_nat_id: v.rev_nat_id,
        flags: v.flags,
        affinity_timeout: v.backend_id,
    })
}

/// Where a new flow comes from, as the traffic policies tell sources apart
/// (shared service-semantics: "pod", "node", "outside").
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Inside the cluster's pod CIDR.
    Pod,
    /// A process of this node itself (socket LB; TC and XDP never classify a packet so).
    Node,
    /// Anything else.
    Outside,
}

/// The backend a new flow gets: id in SVC4_BACKENDS, address and port (network order).
#[derive(Clone, Copy)]
pub struct Picked<A = u32> {
    pub id: u32,
    pub addr: A,
    pub port: u16,
}

/// Why a new flow gets no backend. Each caller turns it into its own verdict.
#[derive(Clone, Copy)]
pub enum NoPick {
    /// loadBalancerSourceRanges apply and the client is outside them (kube-proxy: DROP).
    SourceRange,
    /// The Service has no usable endpoint at all (kube-proxy: REJECT).
    NoEndpoints,
    /// Traffic policy Local applies and this node has none of the endpoints (DROP).
    NoLocalEndpoint,
    /// The frontend counts a slot, or a slot names a backend, that is not there: the agent
    /// is between two writes of an update.
    MidUpdate,
}

/// A packet to a Service address.
#[inline(always)]
fn forward<A: Family>(pkt: &Packet<A>, f: &Frontend<A>, now: u64) -> Action<A> {
    let key = ct_key(
        pkt.saddr,
        pkt.daddr,
        pkt.sport,
        pkt.dport,
        pkt.proto,
        CT_KIND_SERVICE,
    );
    if let Some(ct) = A::ct().get_ptr_mut(&key) {
        // SAFETY: a pointer into the LRU map's value; fields are written individually.
        let ct = unsafe { &mut *ct };
        // A bare SYN on a closing entry is a new connection reusing the client port.
        let reused = pkt.proto == PROTO_TCP
            && ct.flags & CT_F_CLOSING != 0
            && pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
        if !reused && (!expired(ct, pkt.proto, now) || reply_side_alive(&key, ct, now)) {
            // A UDP flow keeps its backend while that backend exists with the same address,
            // whether or not it is still among the Service's slots (a terminating backend
            // keeps its flows); once it is removed (or its freed id reused for another
            // address) the flow moves to a new one at its next packet, as kube-proxy
            // clears the UDP conntrack entries of a removed endpoint. A TCP connection
            // never moves: another backend could only answer it with a RST, and netfilter
            // keeps sending it to the address it was given (a pod that left the Service but
            // still runs keeps serving it).
            let keeps = pkt.proto == PROTO_TCP
                || unsafe { A::backends().get(&ct.backend_id) }
                    .is_some_and(|b| b.addr_be.same(&ct.addr_be) && b.port_be == ct.port_be);
            {
                if keeps {
                    ct.last_seen_ns = now;
                    ct.flags |= closing_flags(pkt.tcp_flags);
                    if ct.flags & CT_F_HALF_OPEN != 0 && pkt.tcp_flags & TCP_SYN == 0 {
                        handshake_done(ct, pkt);
                    }
                    let src = if ct.flags & CT_F_SNAT != 0 {
                        Endpoint {
                            addr: ct.nat_addr_be,
                            port: ct.nat_port_be,
                        }
                    } else {
                        Endpoint::NONE
                    };
                    let dst = Endpoint {
                        addr: ct.addr_be,
                        port: ct.port_be,
                    };
                    return Action::Forward {
                        dst,
                        src,
                        verdict: Verdict::DnatEstablished,
                        rev_nat_id: f.rev_nat_id,
                    };
                }
            }
        }
    }
    new_flow(pkt, f, &key, now)
}

/// The client answered the SYN-ACK of a half-open flow (its service entry `ct`): both
/// entries move to the established lifetime.
#[inline(always)]
fn handshake_done<A: Family>(ct: &mut CtValue<A>, pkt: &Packet<A>) {
    ct.flags &= !CT_F_HALF_OPEN;
    let (reply_addr, reply_port) = if ct.flags & CT_F_SNAT != 0 {
        (ct.nat_addr_be, ct.nat_port_be)
    } else {
        (pkt.saddr, pkt.sport)
    };
    let reply_key = ct_key(
        ct.addr_be,
        reply_addr,
        ct.port_be,
        reply_port,
        pkt.proto,
        CT_KIND_REPLY,
    );
    if let Some(rev) = A::ct().get_ptr_mut(&reply_key) {
        // SAFETY: a pointer into the LRU map's value.
        unsafe { (*rev).flags &= !CT_F_HALF_OPEN };
    }
}

/// Picks a backend for a new flow (`pick`, the rules every hook shares) and records the
/// flow; masquerade per kube-proxy's rules (`rules::masquerade`): ClusterIP from outside
/// the pod CIDR (when it is known) or with --masquerade-all, external addresses with policy
/// Cluster, hairpin.
#[inline(always)]
fn new_flow<A: Family>(pkt: &Packet<A>, f: &Frontend<A>, key: &CtKey<A>, now: u64) -> Action<A> {
    let (cidr_known, from_pod) = local::pod_source(pkt);
    // A packet never comes from the node itself here: node processes go through the
    // cgroup socket programs (sock.rs) and their packets never reach these hooks.
    let source = if from_pod {
        Source::Pod
    } else {
        Source::Outside
    };
    let (backend_id, backend_addr, backend_port) = match pick(f, pkt.saddr, source, now) {
        Ok(b) => (b.id, b.addr, b.port),
        Err(NoPick::SourceRange) => return f.drop(Verdict::DropSourceRange),
        Err(NoPick::NoEndpoints) => {
            return Action::Reject {
                rev_nat_id: f.rev_nat_id,
            };
        }
        Err(NoPick::NoLocalEndpoint) => return f.drop(Verdict::DropNoLocalBackend),
        Err(NoPick::MidUpdate) => return f.drop(Verdict::DropNoBackend),
    };
    // SCTP is translated by address only (sctp.rs); the agent never gives an SCTP frontend
    // a backend on another port.
    if sctp::ports_fixed(pkt.proto) && backend_port != pkt.dport {
        return f.drop(Verdict::DropRewriteFailed);
    }
    let hairpin = backend_addr.same(&pkt.saddr);
    let masq_addr = A::masq_addr();
    let masquerade =
        !masq_addr.is_zero() && rules::masquerade(f.flags, from_pod, cidr_known, hairpin);

    // The tuple replies will carry: to the node's address when masqueraded, else to the
    // client itself. It must not be the reply tuple of another live flow (see
    // `claim_reply`); the client's own port is tried first, then the range is searched.
    let reply_addr = if masquerade { masq_addr } else { pkt.saddr };
    let flow = Flow {
        pkt,
        key,
        rev_nat_id: f.rev_nat_id,
        backend_id,
        backend_addr,
        backend_port,
        reply_addr,
        masquerade,
        now,
    };
    let reply_port = match reply_port(&flow) {
        Ok(port) => port,
        Err(verdict) => return f.drop(verdict),
    };
    let dst = Endpoint {
        addr: backend_addr,
        port: backend_port,
    };
    let src = if flow.snat(reply_port) {
        Endpoint {
            addr: reply_addr,
            port: reply_port,
        }
    } else {
        Endpoint::NONE
    };
    Action::Forward {
        dst,
        src,
        verdict: Verdict::DnatNew,
        rev_nat_id: f.rev_nat_id,
    }
}

/// A new flow being recorded: what `reply_port` and `claim_reply` need to write its
/// entries.
struct Flow<'a, A> {
    pkt: &'a Packet<A>,
    /// The service entry's key: the client's original tuple.
    key: &'a CtKey<A>,
    rev_nat_id: u32,
    backend_id: u32,
    backend_addr: A,
    backend_port: u16,
    /// The address replies come back to: the masquerade address or the client's.
    reply_addr: A,
    masquerade: bool,
    now: u64,
}

impl<A: Family> Flow<'_, A> {
    /// The flow's source is translated when it is masqueraded or its port was remapped.
    #[inline(always)]
    fn snat(&self, reply_port: u16) -> bool {
        self.masquerade || reply_port != self.pkt.sport
    }

    /// The flow's reply entry: the client in addr/port. Its service entry is the same with
    /// the backend there (`claim_reply`).
    #[inline(always)]
    fn entry(&self, reply_port: u16) -> CtValue<A> {
        let snat = self.snat(reply_port);
        CtValue {
            created_ns: self.now,
            last_seen_ns: self.now,
            backend_id: self.backend_id,
            addr_be: self.pkt.saddr,
            port_be: self.pkt.sport,
            rev_nat_id: self.rev_nat_id,
            flags: closing_flags(self.pkt.tcp_flags) | if snat { CT_F_SNAT } else { 0 },
            _pad: 0,
            nat_addr_be: if snat { self.reply_addr } else { A::ZERO },
            nat_port_be: if snat { reply_port } else { 0 },
            _pad2: [0; 2],
        }
    }
}

/// Chooses the flow's reply port and writes both entries; the port, or the verdict of a
/// flow that cannot be recorded.
///
/// The collision rule (netfilter's, for reply tuples): a new flow's reply tuple {backend
/// ip:port -> reply address:port} must not be the one of another live flow, or that
/// flow's replies would be translated as this one's (one client port used for two
/// Services that share a backend ip:targetPort; two masqueraded clients given one port).
/// The first candidate is the client's own port (masqueraded: only if it is in the
/// masquerade range); if another flow holds that tuple, the source port is remapped to a
/// free port of the masquerade range (`config::nat_ports`): masqueraded flows get another
/// masquerade port; other flows keep their address and get a port-only SNAT (CT_F_SNAT,
/// nat_addr = the client's address), which replies undo through the reply entry as for
/// masquerade. The range sits above Linux's ephemeral ports, so the remapped port is not
/// one the client host uses for its own connections by default.
///
/// The search only looks entries up; the one chosen is then claimed with BPF_NOEXIST
/// (`claim_reply`), so a live entry of another flow is never overwritten, even by a flow
/// that raced us to the same tuple on another CPU (that flow keeps it, and this one
/// searches once more). Looking up first also matters
/// because an insert into a full LRU map evicts other entries even when it then fails.
#[inline(always)]
fn reply_port<A: Family>(flow: &Flow<A>) -> Result<u16, Verdict> {
    let pkt = flow.pkt;
    let (min, span) = config::nat_ports();
    let client_port = u16::from_be(pkt.sport) as u32;
    let in_range = client_port >= min && client_port - min < span;
    // SCTP keeps the client's port whatever the range (sctp.rs): no search.
    let fixed = sctp::ports_fixed(pkt.proto);
    let mut search = PortSearch {
        key: reply_key(flow, pkt.sport),
        now: flow.now,
        client_addr: pkt.saddr,
        rev_nat_id: flow.rev_nat_id,
        min,
        span,
        off: 0,
        client_port: pkt.sport,
        port: pkt.sport,
        found: PROBE_TAKEN,
        _pad: [0; 3],
    };
    if !flow.masquerade || in_range || fixed {
        search.found = probe_reply(&search, true);
    }
    if search.found == PROBE_TAKEN && !fixed {
        search_ports(&mut search);
    }
    match claim_found(flow, &search) {
        // Another CPU's new flow claimed the same tuple since the probe (one client socket
        // sending to two Services at once): search once more; the tuple it took now
        // probes as taken.
        Err(Verdict::DropNatFailed) if search.found == PROBE_FREE && !fixed => {
            search.found = PROBE_TAKEN;
            search_ports(&mut search);
            claim_found(flow, &search)
        }
        claimed => claimed,
    }
}

/// Runs the port search (NAT_PORT_PROBES probes, bpf_loop) until a usable tuple is found.
#[inline(always)]
fn search_ports<A: Family>(search: &mut PortSearch<A>) {
    // SAFETY: `search_step` is a static function of the signature bpf_loop calls, and its
    // context is `search`, on the caller's stack for the whole call.
    unsafe {
        bpf_loop(
            NAT_PORT_PROBES,
            search_step::<A> as *mut c_void,
            search as *mut PortSearch<A> as *mut c_void,
            0,
        )
    };
}

/// Claims the tuple the search found: the port, or why the flow gets none.
#[inline(always)]
fn claim_found<A: Family>(flow: &Flow<A>, search: &PortSearch<A>) -> Result<u16, Verdict> {
    let port = search.port;
    match search.found {
        PROBE_FREE => claim_reply(flow, port, false).map(|()| port),
        PROBE_REUSABLE => claim_reply(flow, port, true).map(|()| port),
        _ => Err(Verdict::DropNatFailed),
    }
}

/// What a probe of a reply tuple found: no entry, the tuple is free.
const PROBE_FREE: u8 = 0;
/// This same flow's own entry (same original client address and port, same rev_nat_id: a
/// retransmitted first packet, a flow whose service entry was evicted or closed), or a
/// dead one: the flow may take the tuple over.
const PROBE_REUSABLE: u8 = 1;
/// Another live flow holds the tuple.
const PROBE_TAKEN: u8 = 2;

/// The state of the port search, on `reply_port`'s stack, which `search_step` (run by
/// bpf_loop) reads and writes.
#[repr(C)]
struct PortSearch<A> {
    /// The reply key probed; its dport is the candidate port.
    key: CtKey<A>,
    now: u64,
    /// The flow's original client and Service, to recognise its own entry.
    client_addr: A,
    rev_nat_id: u32,
    /// The masquerade range (first port, number of ports), host order.
    min: u32,
    span: u32,
    /// The current candidate's offset in the range.
    off: u32,
    client_port: u16,
    /// The last candidate probed, network order, and what its probe found (PROBE_*).
    port: u16,
    found: u8,
    _pad: [u8; 3],
}

/// One probe of the search, run by bpf_loop (index 0..NAT_PORT_PROBES): runs of
/// NAT_PORT_RUN consecutive ports, each from a fresh random point. Returns 1 (stop) once a
/// usable tuple is found. A bpf_loop callback is verified once, however many probes run:
/// the same loop written inline cost the verifier about 4,000 instructions per probe
/// (half a million for 128), against the kernel's limit of a million.
#[inline(never)]
extern "C" fn search_step<A: Family>(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes the context `reply_port` gave it: its PortSearch.
    let s = unsafe { &mut *(ctx as *mut PortSearch<A>) };
    if index % NAT_PORT_RUN as u64 == 0 {
        // SAFETY: helper call without arguments.
        s.off = unsafe { bpf_get_prandom_u32() }
            .checked_rem(s.span)
            .unwrap_or(0);
    } else {
        s.off += 1;
        if s.off >= s.span {
            s.off = 0;
        }
    }
    s.port = ((s.min + s.off) as u16).to_be();
    s.key.dport_be = s.port;
    s.found = probe_reply(s, A::PROBE_DEAD_IN_LOOP);
    if s.found == PROBE_TAKEN { 0 } else { 1 }
}

/// Who holds the reply tuple `s.key` (a lookup, nothing written): PROBE_*. `take_dead`:
/// a dead entry of another flow is reusable too; without it such an entry probes as taken
/// and the search goes on. IPv6's search loop goes without (family.rs,
/// `PROBE_DEAD_IN_LOOP`, a constant, so its copy of this code has no dead-entry check):
/// the check builds a second 40-byte key in the loop's frame, which the verifier's
/// 512-byte limit for the call chain has no room for.
#[inline(always)]
fn probe_reply<A: Family>(s: &PortSearch<A>, take_dead: bool) -> u8 {
    match unsafe { A::ct().get(&s.key) } {
        None => PROBE_FREE,
        Some(ct)
            if (ct.addr_be.same(&s.client_addr)
                && ct.port_be == s.client_port
                && ct.rev_nat_id == s.rev_nat_id)
                || (take_dead
                    && expired(ct, s.key.proto, s.now)
                    && !service_side_alive(&s.key, ct, s.now)) =>
        {
            PROBE_REUSABLE
        }
        Some(_) => PROBE_TAKEN,
    }
}

/// The reply key of the flow with reply port `port`.
#[inline(always)]
fn reply_key<A: Family>(flow: &Flow<A>, port: u16) -> CtKey<A> {
    ct_key(
        flow.backend_addr,
        flow.reply_addr,
        flow.backend_port,
        port,
        flow.pkt.proto,
        CT_KIND_REPLY,
    )
}

/// Writes the flow's reply entry for `port`, then its service entry. A free tuple is
/// inserted with BPF_NOEXIST: if another CPU's new flow took it since the probe, that
/// flow keeps it. A reusable one (this flow's own, or dead) is overwritten.
#[inline(always)]
fn claim_reply<A: Family>(flow: &Flow<A>, port: u16, reusable: bool) -> Result<(), Verdict> {
    let reply_key = reply_key(flow, port);
    let mode = if reusable { BPF_ANY } else { BPF_NOEXIST } as u64;
    // One value on the stack for both entries (an IPv6 one is 64 bytes): the reply
    // entry's, then changed into the service entry's.
    let mut entry = flow.entry(port);
    if A::ct().insert(&reply_key, &entry, mode).is_err() {
        return Err(if reusable {
            Verdict::DropCtFailed
        } else {
            Verdict::DropNatFailed
        });
    }
    entry.addr_be = flow.backend_addr;
    entry.port_be = flow.backend_port;
    if A::ct().insert(flow.key, &entry, BPF_ANY as u64).is_err() {
        let _ = A::ct().remove(&reply_key);
        return Err(Verdict::DropCtFailed);
    }
    Ok(())
}

/// The backend for a new flow to `f` from `client` (the address source ranges and session
/// affinity key on), the one decision TC, XDP and the socket programs share. Rules
/// (kube-proxy's, see shared service-semantics): source ranges first; no endpoints at all
/// rejects; traffic policy Local narrows to this node's endpoints (`scope`); then the
/// client's affinity backend, else a random slot.
#[inline(always)]
pub fn pick<A: Family>(
    f: &Frontend<A>,
    client: A,
    source: Source,
    now: u64,
) -> Result<Picked<A>, NoPick> {
    if !source_allowed(f, client) {
        return Err(NoPick::SourceRange);
    }
    if f.count == 0 {
        return Err(NoPick::NoEndpoints);
    }
    let (scope, count) = select_scope(f, source).ok_or(NoPick::NoLocalEndpoint)?;
    choose_backend(f, client, scope, count, now).ok_or(NoPick::MidUpdate)
}

/// loadBalancerSourceRanges: true unless the frontend has ranges and `client` is in none.
#[inline(always)]
fn source_allowed<A: Family>(f: &Frontend<A>, client: A) -> bool {
    if f.flags & SVC_F_SOURCE_RANGES == 0 {
        return true;
    }
    let probe = Key::new(
        SRC_RANGE_PREFIX_BASE + A::BITS,
        SrcRange {
            rev_nat_id: f.rev_nat_id,
            addr_be: client,
        },
    );
    A::src_ranges().get(&probe).is_some()
}

/// The slots a new flow from `source` chooses among: (scope, slot count), or None when
/// policy Local leaves no endpoint. Local applies to ClusterIPs (internalTrafficPolicy)
/// from every source, the node itself included; to external addresses
/// (externalTrafficPolicy) only from outside: pods and the node itself use every endpoint.
#[inline(always)]
fn select_scope<A: Family>(f: &Frontend<A>, source: Source) -> Option<(u8, u16)> {
    let external = f.flags & SVC_F_EXTERNAL != 0;
    let local = f.flags & SVC_F_LOCAL != 0;
    if !(local && (!external || source == Source::Outside)) {
        return Some((SCOPE_ALL, f.count));
    }
    let local_key = SvcKey {
        scope: SCOPE_LOCAL,
        ..f.key
    };
    match unsafe { A::services().get(&local_key) } {
        Some(v) if v.count > 0 => Some((SCOPE_LOCAL, v.count)),
        _ => None,
    }
}

/// The client's affinity backend while it is fresh and still in the same slot, else a
/// random slot of `scope` (recorded as the client's affinity backend). None when the slot
/// or its backend is missing (mid-update).
#[inline(always)]
fn choose_backend<A: Family>(
    f: &Frontend<A>,
    client: A,
    scope: u8,
    count: u16,
    now: u64,
) -> Option<Picked<A>> {
    let affinity = f.flags & SVC_F_AFFINITY != 0;
    let aff_key = AffinityKey {
        client_be: client,
        rev_nat_id: f.rev_nat_id,
    };
    if affinity {
        if let Some(a) = A::affinity().get_ptr_mut(&aff_key) {
            let a = unsafe { &mut *a };
            let timeout_ns = f.affinity_timeout as u64 * 1_000_000_000;
            if a.scope == scope
                && a.slot >= 1
                && a.slot <= count
                && now.saturating_sub(a.last_used_ns) <= timeout_ns
            {
                let slot_key = SvcKey {
                    slot: a.slot,
                    scope,
                    ..f.key
                };
                if let Some(slot) = unsafe { A::services().get(&slot_key) } {
                    if slot.backend_id == a.backend_id {
                        if let Some(b) = unsafe { A::backends().get(&a.backend_id) } {
                            if b.state == BACKEND_STATE_ACTIVE {
                                a.last_used_ns = now;
                                return Some(Picked {
                                    id: a.backend_id,
                                    addr: b.addr_be,
                                    port: b.port_be,
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    let (slot, backend_id, addr, port) = random_backend(&f.key, scope, count)?;
    if affinity {
        let value = Affinity4Value {
            last_used_ns: now,
            backend_id,
            slot,
            scope,
            _pad: 0,
        };
        let _ = A::affinity().insert(&aff_key, &value, 0);
    }
    Some(Picked {
        id: backend_id,
        addr,
        port,
    })
}

/// A uniformly random slot of `scope` (1..=count) of the frontend `key` and its backend:
/// (slot, backend id, address, port).
#[inline(always)]
fn random_backend<A: Family>(key: &SvcKey<A>, scope: u8, count: u16) -> Option<(u16, u32, A, u16)> {
    // SAFETY: helper call without arguments.
    let slot = (unsafe { bpf_get_prandom_u32() } % count as u32) as u16 + 1;
    let slot_key = SvcKey {
        slot,
        scope,
        ..*key
    };
    let backend_id = unsafe { A::services().get(&slot_key) }?.backend_id;
    let backend = unsafe { A::backends().get(&backend_id) }?;
    Some((slot, backend_id, backend.addr_be, backend.port_be))
}

/// A packet that is not to a Service address: a reply of a translated flow, else to an
/// allocated ClusterIP or a service CIDR (unserved.rs), or not ours.
#[inline(always)]
fn reply<A: Family>(pkt: &Packet<A>, clock: &Clock) -> Action<A> {
    reply_entry(pkt, clock).unwrap_or_else(|| pkt.daddr.unserved())
}

/// The reverse translation for a reply of a live translated flow, if `pkt` is one.
#[inline(always)]
fn reply_entry<A: Family>(pkt: &Packet<A>, clock: &Clock) -> Option<Action<A>> {
    let key = ct_key(
        pkt.saddr,
        pkt.daddr,
        pkt.sport,
        pkt.dport,
        pkt.proto,
        CT_KIND_REPLY,
    );
    // SAFETY: a pointer into the LRU map's value; fields are written individually.
    let ct = unsafe { &mut *A::ct().get_ptr_mut(&key)? };
    // A tracked flow: the first use of the clock on this path.
    let now = clock.now();
    if expired(ct, pkt.proto, now) && !service_side_alive(&key, ct, now) {
        return None;
    }
    let rev_nat_id = ct.rev_nat_id;
    // None if the Service is gone: the packet is then left as it is.
    let rev = unsafe { A::revnat().get(&rev_nat_id) }?;
    let (vip, vport) = (rev.vip_be, rev.port_be);
    let (client, client_port) = (ct.addr_be, ct.port_be);
    let forward_key = ct_key(client, vip, client_port, vport, pkt.proto, CT_KIND_SERVICE);
    // A SYN-ACK on a closed flow's tuple answers a new connection that did not come
    // through the Service: a direct connection from the same client port (e.g. translated
    // at the socket, sock.rs), whose replies must not become the Service's. The backend
    // holds one connection per tuple, so the closed flow is over: both its entries go (the
    // service entry too, or the old flow's last packets would still leave with a tuple no
    // longer reserved for it, which a new flow may then take). Closed is the service
    // entry's word: a new SYN through the Service (port reuse) renews that entry and may
    // keep this one, flags and all; without a service entry, this one's.
    if pkt.proto == PROTO_TCP && pkt.tcp_flags & TCP_SYN != 0 {
        let (closed, forward) = match unsafe { A::ct().get(&forward_key) } {
            Some(f) => (f.flags & CT_F_CLOSING != 0, true),
            None => (ct.flags & CT_F_CLOSING != 0, false),
        };
        if closed {
            if forward {
                let _ = A::ct().remove(&forward_key);
            }
            let _ = A::ct().remove(&key);
            return None;
        }
    }
    ct.last_seen_ns = now;
    // A TCP flow's first reply, a SYN-ACK, leaves it half-open (short lifetime) until the
    // client answers it (`handshake_done`).
    let half_open =
        if pkt.proto == PROTO_TCP && ct.flags & CT_F_REPLIED == 0 && pkt.tcp_flags & TCP_SYN != 0 {
            CT_F_HALF_OPEN
        } else {
            0
        };
    let new_flags = ct.flags | CT_F_REPLIED | half_open | closing_flags(pkt.tcp_flags);
    if new_flags != ct.flags {
        ct.flags = new_flags;
        // First reply (or a close): the forward entry moves from the short SYN lifetime to
        // the established one (or half-open, or closing), as the reply entry does.
        if let Some(fwd) = A::ct().get_ptr_mut(&forward_key) {
            unsafe { (*fwd).flags |= new_flags & (CT_F_REPLIED | CT_F_CLOSING | CT_F_HALF_OPEN) };
        }
    }
    let dst = if ct.flags & CT_F_SNAT != 0 {
        Endpoint {
            addr: client,
            port: client_port,
        }
    } else {
        Endpoint::NONE
    };
    Some(Action::Reply {
        src: Endpoint {
            addr: vip,
            port: vport,
        },
        dst,
        rev_nat_id,
    })
}
