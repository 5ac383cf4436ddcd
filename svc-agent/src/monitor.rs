//! `svcctl monitor`: what the datapath decides, packet by packet. The programs write a
//! [`MonitorEvent`] per reported packet into the SVC_EVENTS ring buffer while SVC_MONITOR
//! is on (svc-ebpf/src/monitor.rs); this module turns one into a [`Record`] (Service name,
//! backend, both tuples, wall-clock time), decides whether the user's [`Filter`] wants it,
//! and prints it as a line ([`render_line`]) or JSON. svcctl's loop (reading the ring,
//! keeping SVC_MONITOR on) is in src/bin/svcctl.rs.
use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use serde::Serialize;
use svc_common::{
    CT_KIND_REPLY, CT_KIND_SERVICE, CtKey, MONITOR_HOOK_SOCK, MONITOR_HOOK_TC, MONITOR_HOOK_XDP,
    MonitorEvent, Protocol, SCOPE_ALL, SvcKey, SvcName, Verdict, ip6_octets,
};

use crate::dataplane::{DataplaneError, MapStore as _, Maps};

/// The Service port (rev-NAT id, 0: none) and the backend (0: none) of an event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ids {
    pub rev_nat_id: u32,
    pub backend_id: u32,
}

/// The event's Service and backend, looked up in the maps as the programs decided them
/// (the programs leave this to svcctl: see svc-common's `MonitorEvent`): a translation's
/// from its flow's conntrack entry (the service entry, keyed by the tuple as it arrived;
/// a reply's reply entry), anything else (or a flow whose entry is gone already) from the
/// frontend of the Service address (the destination as it arrived; a reply's source as
/// it left). Read right after the packet, so the entries are the ones it met (conntrack
/// keeps a closed flow's entries 10 s).
pub fn lookup_ids(maps: &Maps, ev: &MonitorEvent) -> Ids {
    let verdict = Verdict::from_raw(ev.verdict);
    let kind = match verdict {
        Some(Verdict::DnatNew | Verdict::DnatEstablished) => Some(CT_KIND_SERVICE),
        Some(Verdict::RevNat) => Some(CT_KIND_REPLY),
        _ => None,
    };
    let (vip, vport) = if verdict == Some(Verdict::RevNat) {
        (ev.nat_saddr, ev.nat_sport_be)
    } else {
        (ev.daddr, ev.dport_be)
    };
    if ev.family == 6 {
        if let Some(kind) = kind {
            let key = CtKey {
                saddr_be: ev.saddr,
                daddr_be: ev.daddr,
                sport_be: ev.sport_be,
                dport_be: ev.dport_be,
                proto: ev.protocol,
                kind,
                _pad: [0; 2],
            };
            if let Ok(ct) = maps.ct6.get(&key, 0) {
                return Ids {
                    rev_nat_id: ct.rev_nat_id,
                    backend_id: ct.backend_id,
                };
            }
        }
        let key = SvcKey {
            vip_be: vip,
            port_be: vport,
            slot: 0,
            proto: ev.protocol,
            scope: SCOPE_ALL,
            _pad: [0; 2],
        };
        let rev_nat_id = maps.services6.get(&key, 0).map_or(0, |v| v.rev_nat_id);
        return Ids {
            rev_nat_id,
            backend_id: 0,
        };
    }
    if let Some(kind) = kind {
        let key = CtKey {
            saddr_be: ev.saddr[0],
            daddr_be: ev.daddr[0],
            sport_be: ev.sport_be,
            dport_be: ev.dport_be,
            proto: ev.protocol,
            kind,
            _pad: [0; 2],
        };
        if let Ok(ct) = maps.ct.get(&key, 0) {
            return Ids {
                rev_nat_id: ct.rev_nat_id,
                backend_id: ct.backend_id,
            };
        }
    }
    let key = SvcKey {
        vip_be: vip[0],
        port_be: vport,
        slot: 0,
        proto: ev.protocol,
        scope: SCOPE_ALL,
        _pad: [0; 2],
    };
    let rev_nat_id = maps.services.get(&key, 0).map_or(0, |v| v.rev_nat_id);
    Ids {
        rev_nat_id,
        backend_id: 0,
    }
}

/// The event in a ring buffer record; None if the record is not one (another size).
pub fn decode(bytes: &[u8]) -> Option<MonitorEvent> {
    (bytes.len() == std::mem::size_of::<MonitorEvent>())
        .then(|| bytemuck::pod_read_unaligned(bytes))
}

/// What kind of decision a verdict is, as --verdict names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Drop,
    Reject,
    Translate,
}

impl Kind {
    pub fn of(verdict: Verdict) -> Kind {
        if verdict.is_drop() {
            Kind::Drop
        } else if verdict.is_drop_or_reject() {
            Kind::Reject
        } else {
            Kind::Translate
        }
    }
}

/// Every verdict svcctl monitor can report (no pass verdict: `Verdict::is_monitored`).
pub fn monitored() -> impl Iterator<Item = Verdict> {
    Verdict::ALL.iter().copied().filter(|v| v.is_monitored())
}

/// The bit mask of SVC_MONITOR (bit `verdict as u32`).
pub fn verdict_mask(verdicts: &BTreeSet<u32>) -> u32 {
    verdicts
        .iter()
        .filter(|v| **v < 32)
        .fold(0, |m, v| m | (1 << v))
}

/// Parses --verdict values: labels (`drop_no_local_backend`, `dnat_new`, ...), the words
/// `drop`, `reject` and `translate`, comma-separated or repeated. Empty: every monitored
/// verdict.
pub fn parse_verdicts(values: &[String]) -> Result<BTreeSet<u32>, String> {
    let mut out = BTreeSet::new();
    for word in values.iter().flat_map(|v| v.split(',')) {
        let word = word.trim().to_ascii_lowercase();
        if word.is_empty() {
            continue;
        }
        let kind = match word.as_str() {
            "drop" | "drops" => Some(Kind::Drop),
            "reject" | "rejects" => Some(Kind::Reject),
            "translate" | "translation" | "translations" | "nat" => Some(Kind::Translate),
            _ => None,
        };
        if let Some(kind) = kind {
            out.extend(
                monitored()
                    .filter(|v| Kind::of(*v) == kind)
                    .map(|v| v as u32),
            );
            continue;
        }
        match Verdict::ALL.iter().find(|v| v.label() == word) {
            Some(v) if v.is_monitored() => {
                out.insert(*v as u32);
            }
            Some(v) => {
                return Err(format!(
                    "{} is a pass (the packet is left as it is): svcctl monitor reports drops, rejects and translations",
                    v.label()
                ));
            }
            None => {
                let known: Vec<&str> = monitored().map(|v| v.label()).collect();
                return Err(format!(
                    "unknown verdict `{word}`: one of drop, reject, translate, {}",
                    known.join(", ")
                ));
            }
        }
    }
    if out.is_empty() {
        out.extend(monitored().map(|v| v as u32));
    }
    Ok(out)
}

/// An address or a CIDR (--from, --to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("`{s}` is not an address or a CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("`{s}`: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, len })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| -> u128 {
            match ip {
                IpAddr::V4(v4) => u128::from(u32::from(v4)) << 96,
                IpAddr::V6(v6) => u128::from(v6),
            }
        };
        if self.addr.is_ipv4() != ip.is_ipv4() {
            return false;
        }
        if self.len == 0 {
            return true;
        }
        // IPv4 sits in the top 32 bits, so a prefix length counts from the top for both.
        let mask = u128::MAX << (128 - u32::from(self.len));
        bits(self.addr) & mask == bits(ip) & mask
    }
}

/// What the user asked to see. `verdicts` also goes to the programs (SVC_MONITOR's mask),
/// so what nobody asked for never reaches the ring.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// -n: only events of Services of this namespace.
    pub namespace: Option<String>,
    /// SERVICE: only events of Services with this name.
    pub service: Option<String>,
    /// Verdict numbers (see [`parse_verdicts`]).
    pub verdicts: BTreeSet<u32>,
    /// --from: the packet's source as it arrived is in one of these.
    pub from: Vec<Cidr>,
    /// --to: the packet's destination, as it arrived or as it left, is in one of these.
    pub to: Vec<Cidr>,
}

impl Filter {
    pub fn matches(&self, r: &Record) -> bool {
        if !self.verdicts.is_empty()
            && !Verdict::ALL
                .iter()
                .any(|v| v.label() == r.verdict && self.verdicts.contains(&(*v as u32)))
        {
            return false;
        }
        if self.namespace.is_some() || self.service.is_some() {
            let Some(s) = &r.service else {
                return false;
            };
            if self.namespace.as_ref().is_some_and(|n| *n != s.namespace)
                || self.service.as_ref().is_some_and(|n| *n != s.name)
            {
                return false;
            }
        }
        if !self.from.is_empty() && !self.from.iter().any(|c| c.contains(r.before.src.ip())) {
            return false;
        }
        if !self.to.is_empty()
            && !self
                .to
                .iter()
                .any(|c| c.contains(r.before.dst.ip()) || c.contains(r.after.dst.ip()))
        {
            return false;
        }
        true
    }
}

/// A 5-tuple's addresses and ports (the protocol is the record's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Tuple {
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

/// A Service port, by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
    /// Empty when the Service port has no name.
    pub port: String,
}

impl std::fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)?;
        if !self.port.is_empty() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// The backend a flow was given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendRef {
    pub id: u32,
    /// ADDRESS:PORT; None when the backend is gone from SVC4_BACKENDS / SVC6_BACKENDS.
    pub addr: Option<SocketAddr>,
}

/// One reported packet, resolved: what `-o json` prints, one object per line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Record {
    /// Wall-clock time, RFC 3339 (UTC).
    pub time: String,
    /// CLOCK_MONOTONIC ns (coarse) as the program read it.
    pub time_ns: u64,
    pub node: String,
    /// `drop`, `reject` or `translate`.
    pub kind: Kind,
    /// The verdict's label (`svcctl stats`, the metrics).
    pub verdict: String,
    /// None: no Service (an unallocated address inside a service CIDR, a malformed packet).
    pub service: Option<ServiceRef>,
    pub rev_nat_id: u32,
    /// `TCP`, `UDP`, `SCTP`, or the protocol number.
    pub protocol: String,
    /// 4 or 6.
    pub family: u8,
    /// `tc`, `xdp` or `sock`.
    pub hook: &'static str,
    pub ifindex: u32,
    /// The packet as it arrived.
    pub before: Tuple,
    /// The packet as it left (the same as `before` for drops and rejects).
    pub after: Tuple,
    pub backend: Option<BackendRef>,
}

/// rev_nat_id -> Service name and backend id -> address, read from the maps and read again
/// when an event names one not seen yet (at most once a second).
#[derive(Debug, Default)]
pub struct Names {
    pub services: HashMap<u32, ServiceRef>,
    pub backends: HashMap<u32, SocketAddr>,
    last_read: Option<std::time::Instant>,
}

impl Names {
    /// Reads SVC_NAMES and both backend maps.
    pub fn read(&mut self, maps: &Maps) -> Result<(), DataplaneError> {
        let store = DataplaneError::Read;
        self.services = maps
            .read_names()
            .map_err(store)?
            .into_iter()
            .map(|(id, n)| (id, service_ref(&n)))
            .collect();
        let mut backends = HashMap::new();
        for (id, b) in maps.read_backends().map_err(store)? {
            let ip = Ipv4Addr::from(u32::from_be(b.addr_be));
            backends.insert(id, SocketAddr::new(ip.into(), u16::from_be(b.port_be)));
        }
        for (id, b) in maps.read_backends6().map_err(store)? {
            let ip = Ipv6Addr::from(ip6_octets(b.addr_be));
            backends.insert(id, SocketAddr::new(ip.into(), u16::from_be(b.port_be)));
        }
        self.backends = backends;
        self.last_read = Some(std::time::Instant::now());
        Ok(())
    }

    /// Reads the maps again if `ids` names a Service or backend not known yet and the last
    /// read is a second old.
    pub fn refresh_for(&mut self, maps: &Maps, ids: Ids) -> Result<(), DataplaneError> {
        let unknown = (ids.rev_nat_id != 0 && !self.services.contains_key(&ids.rev_nat_id))
            || (ids.backend_id != 0 && !self.backends.contains_key(&ids.backend_id));
        let stale = self
            .last_read
            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1));
        if unknown && stale {
            self.read(maps)?;
        }
        Ok(())
    }
}

fn service_ref(n: &SvcName) -> ServiceRef {
    ServiceRef {
        namespace: n.namespace().to_string(),
        name: n.name().to_string(),
        port: n.port_name().to_string(),
    }
}

fn addr(family: u8, a: &[u32; 4], port_be: u16) -> SocketAddr {
    let ip: IpAddr = if family == 6 {
        Ipv6Addr::from(ip6_octets(*a)).into()
    } else {
        Ipv4Addr::from(u32::from_be(a[0])).into()
    };
    SocketAddr::new(ip, u16::from_be(port_be))
}

/// Turns CLOCK_MONOTONIC ns into wall-clock time: `offset_ns` is realtime - monotonic,
/// taken once at start.
pub fn wall_time(time_ns: u64, offset_ns: i128) -> String {
    let ns = i128::from(time_ns) + offset_ns;
    match jiff::Timestamp::from_nanosecond(ns) {
        Ok(t) => t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        Err(_) => String::new(),
    }
}

/// realtime - monotonic now, in ns (for [`wall_time`]).
pub fn clock_offset_ns() -> i128 {
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or_default();
    real - i128::from(crate::dataplane::monotonic_ns())
}

/// The record of `ev` with its [`Ids`]; None for a record no build of ours writes (an
/// unknown verdict).
pub fn resolve(
    ev: &MonitorEvent,
    ids: Ids,
    names: &Names,
    node: &str,
    offset_ns: i128,
) -> Option<Record> {
    let verdict = Verdict::from_raw(ev.verdict)?;
    let before = Tuple {
        src: addr(ev.family, &ev.saddr, ev.sport_be),
        dst: addr(ev.family, &ev.daddr, ev.dport_be),
    };
    let after = Tuple {
        src: addr(ev.family, &ev.nat_saddr, ev.nat_sport_be),
        dst: addr(ev.family, &ev.nat_daddr, ev.nat_dport_be),
    };
    Some(Record {
        time: wall_time(ev.time_ns, offset_ns),
        time_ns: ev.time_ns,
        node: node.to_string(),
        kind: Kind::of(verdict),
        verdict: verdict.label().to_string(),
        service: (ids.rev_nat_id != 0)
            .then(|| names.services.get(&ids.rev_nat_id).cloned())
            .flatten(),
        rev_nat_id: ids.rev_nat_id,
        protocol: match Protocol::from_raw(ev.protocol) {
            Some(p) => p.label().to_string(),
            None => ev.protocol.to_string(),
        },
        family: ev.family,
        hook: match ev.hook {
            MONITOR_HOOK_TC => "tc",
            MONITOR_HOOK_XDP => "xdp",
            MONITOR_HOOK_SOCK => "sock",
            _ => "?",
        },
        ifindex: ev.ifindex,
        before,
        after,
        backend: (ids.backend_id != 0).then(|| BackendRef {
            id: ids.backend_id,
            addr: names.backends.get(&ids.backend_id).copied(),
        }),
    })
}

/// The word a line starts with, and the detail after it: `DROP no_local_backend`,
/// `REJECT tcp_rst`, `DNAT new`, `DNAT established`, `REVNAT`.
fn headline(verdict: &str) -> (&'static str, &str) {
    if let Some(rest) = verdict.strip_prefix("drop_") {
        return ("DROP", rest);
    }
    if let Some(rest) = verdict.strip_prefix("reject_") {
        return ("REJECT", rest);
    }
    if let Some(rest) = verdict.strip_prefix("dnat_") {
        return ("DNAT", rest);
    }
    if let Some(rest) = verdict.strip_prefix("rev_nat") {
        return ("REVNAT", rest.trim_start_matches('_'));
    }
    if let Some(rest) = verdict.strip_prefix("sock_") {
        return ("SOCK", rest);
    }
    ("", verdict)
}

/// One line: `12:00:01.123 node1 DROP no_local_backend default/web:http TCP
/// 10.0.0.5:40000 -> 192.0.2.10:80`, and for a translation `=> ` and what changed: the
/// destination alone, or both ends when the source changed too (masquerade, reverse NAT).
pub fn render_line(r: &Record) -> String {
    let clock = r
        .time
        .split_once('T')
        .map(|(_, t)| t.trim_end_matches('Z'))
        .unwrap_or(&r.time);
    let (word, detail) = headline(&r.verdict);
    let mut line = format!("{clock} {} {word}", r.node);
    if !detail.is_empty() {
        line.push(' ');
        line.push_str(detail);
    }
    match &r.service {
        Some(s) => line.push_str(&format!(" {s}")),
        None if r.rev_nat_id != 0 => line.push_str(&format!(" rev-nat-{}", r.rev_nat_id)),
        None => line.push_str(" -"),
    }
    line.push_str(&format!(
        " {} {} -> {}",
        r.protocol, r.before.src, r.before.dst
    ));
    if r.after != r.before {
        if r.after.src == r.before.src {
            line.push_str(&format!(" => {}", r.after.dst));
        } else {
            line.push_str(&format!(" => {} -> {}", r.after.src, r.after.dst));
        }
    }
    if let Some(b) = &r.backend
        && b.addr.is_none()
    {
        line.push_str(&format!(" (backend {}, gone)", b.id));
    }
    line
}

#[cfg(test)]
mod tests;
