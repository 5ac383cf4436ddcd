//! Packet fuzzing of the real TC and XDP programs through BPF_PROG_TEST_RUN, as a test.
//!
//! Frames are generated around real flows to real frontends (Services that share a
//! backend, a NodePort, a Service without endpoints; pods, a pod of node 2 and outside
//! clients; a few client ports used for every Service, so reply tuples clash) and the
//! replies of the flows the programs translated; a part of them is then cut short,
//! bit-flipped, given odd headers (IHL, total length, fragment bits, TCP data offset, UDP
//! length) or padded, and some frames are random bytes. Each frame goes through TC, XDP,
//! or XDP then TC (the external interface's path). The oracle, checked on every run:
//! - XDP never returns XDP_ABORTED (nor anything but DROP/PASS), TC only OK/SHOT/REDIRECT
//!   (a reject), and the return value agrees with the verdict; exactly one verdict counter
//!   goes up;
//! - no rewrite of a packet that is neither to a Service address nor a reply of a flow the
//!   programs translated (passed packets come back byte for byte);
//! - every translated packet goes to a backend of its Service (and a flow's later packets
//!   to the same backend and source), with a source that is the client's own, the client
//!   address with a port of the masquerade range, or the node's address;
//! - a rewritten packet whose input had valid checksums has valid checksums (rejects
//!   always);
//! - IPv4 fragments: first fragments (MF set) of the generated frames are decided as
//!   packets; fragments after the first are generated for datagrams whose first fragment
//!   went through, and one that is translated (`dnat_fragment`, `rev_nat_fragment`) gets
//!   exactly the addresses its first fragment left with and nothing else changes;
//! - two live flows never get one reply tuple, and every reverse-translated reply comes
//!   from the Service its flow went to, addressed to that flow's client;
//! - ICMP errors quoting a flow's packets (some addressed to another host, some of types
//!   not translated): a translated error quotes the packet its receiver sent (the flow's
//!   client -> Service, or backend -> the source it saw) and is addressed to that sender.
//!
//! Reproducible: the generator is seeded (SVC_FUZZ_SEED, else from the clock) and prints
//! its seed; a failure prints the seed, the packet's index and the input as hex. (The
//! programs' own random draws, backend and port choices, are not seeded; replies are built
//! from what they chose, so a replay may differ after the first such choice. The hex input
//! and the flows printed with it are the reproducer.)
//!
//! `fuzz_bounded` runs in `cargo xtask test` (FUZZ_PACKETS packets, a few seconds);
//! `fuzz_long` (ignored by default) is the long run:
//! `SVC_FUZZ_PACKETS=5000000 cargo test -p svc-agent --test datapath -- --ignored fuzz_long`,
//! bounded by SVC_FUZZ_PACKETS (default 1,000,000) and SVC_FUZZ_SECONDS (default 900).
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use svc_agent::desired::DesiredState;
use svc_agent::model::Protocol;
use svc_agent::packet::{
    ACK, FIN, PROTO_ICMP, PROTO_TCP, PROTO_UDP, PSH, PacketBuilder, Quote, RST, SYN, Summary,
    parse_icmp_quote, parse_summary, verify_checksums,
};
use svc_common::{MASQUERADE_PORTS, Verdict};

use crate::support::*;

/// The bounded run's packet count (a few seconds here).
const FUZZ_PACKETS: u64 = 30_000;

/// splitmix64: small, seedable, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const SHARED_BE: &str = "10.244.1.41:8080";
const REMOTE_BE: &str = "10.244.2.42:8080";

/// Services sharing backends, a NodePort, one without endpoints.
fn services() -> DesiredState {
    let two = [SHARED_BE, REMOTE_BE];
    DesiredState {
        frontends: BTreeMap::from([
            fe("10.96.0.40:80", TCP, CIP, "a", &[SHARED_BE], no_edit),
            fe("10.96.0.40:80", UDP, CIP, "a", &[SHARED_BE], no_edit),
            fe("10.96.0.41:80", TCP, CIP, "b", &[SHARED_BE], no_edit),
            fe("10.96.0.41:80", UDP, CIP, "b", &[SHARED_BE], no_edit),
            fe("10.96.0.42:80", TCP, CIP, "c", &two, no_edit),
            fe("192.0.2.1:30000", TCP, NP, "np", &two, no_edit),
            fe("192.0.2.1:30000", UDP, NP, "np", &two, no_edit),
            fe("10.96.0.43:80", TCP, CIP, "empty", &[], no_edit),
            fe("10.96.0.43:80", UDP, CIP, "empty", &[], no_edit),
        ]),
        ..Default::default()
    }
}

/// Clients: pods of node 1 (one of them the shared backend itself: hairpin), a pod of
/// node 2 and outside hosts.
const CLIENTS: [&str; 5] = [
    "10.244.1.20",
    "10.244.1.41",
    "10.244.2.20",
    "192.0.2.100",
    "192.0.2.101",
];
/// A few client ports for every Service, so reply tuples clash: Linux-style ephemeral
/// ports, ports of the masquerade range (kept when free), the NodePort's number.
const CLIENT_PORTS: [u16; 5] = [40000, 40001, 61000, 61001, 30000];

/// A frontend as the oracle knows it: its backends (empty: rejects).
struct Front {
    backends: Vec<SocketAddrV4>,
}

/// A flow the programs translated, keyed by (client, Service, protocol).
#[derive(Clone, Debug)]
struct FlowRec {
    backend: SocketAddrV4,
    /// The source the backend sees (the client, a remapped port, the node).
    nat: SocketAddrV4,
    /// A FIN or RST went through: its entries may be reclaimed, so its reply tuple may go
    /// to another flow later.
    closing: bool,
    last: Instant,
}

type FlowKey = (SocketAddrV4, SocketAddrV4, u8);

/// A fragmented datagram as it arrives: source, destination, IPv4 id, protocol.
type FragKey = (Ipv4Addr, Ipv4Addr, u16, u8);

struct Model {
    fronts: HashMap<(SocketAddrV4, u8), Front>,
    flows: HashMap<FlowKey, FlowRec>,
    /// Reply tuple (backend, nat, protocol) -> the flow it belongs to.
    replies: HashMap<FlowKey, FlowKey>,
    /// Datagrams whose first fragment the programs translated -> the (source,
    /// destination) it left with, which its later fragments must get.
    frags: HashMap<FragKey, (Ipv4Addr, Ipv4Addr)>,
    /// Every first fragment run, for the generator to send later fragments of.
    firsts: Vec<FragKey>,
}

impl Model {
    fn new(desired: &DesiredState) -> Model {
        let fronts = desired
            .frontends
            .iter()
            .map(|(f, s)| {
                let proto = proto_num(f.proto);
                let backends = s
                    .backends
                    .iter()
                    .map(|b| SocketAddrV4::new(v4(b.addr), b.port))
                    .collect();
                (
                    (SocketAddrV4::new(v4(f.vip), f.port), proto),
                    Front { backends },
                )
            })
            .collect();
        Model {
            fronts,
            flows: HashMap::new(),
            replies: HashMap::new(),
            frags: HashMap::new(),
            firsts: Vec::new(),
        }
    }

    /// A flow's entries are live in the programs' eyes (shorter than the 60 s SYN/UDP
    /// lifetime; closing entries count as possibly dead).
    fn live(rec: &FlowRec) -> bool {
        !rec.closing && rec.last.elapsed() < Duration::from_secs(50)
    }
}

fn proto_num(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => PROTO_TCP,
        Protocol::Udp => PROTO_UDP,
        Protocol::Sctp => svc_agent::packet::PROTO_SCTP,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Recomputes the IPv4 header checksum and the TCP/UDP checksum (over the total length's
/// worth, when the frame holds it) of a mutated frame, so that odd headers also reach the
/// programs with valid checksums.
fn fix_checksums(f: &mut [u8]) {
    if f.len() < 34 || f[12..14] != [0x08, 0x00] {
        return;
    }
    let ihl = usize::from(f[14] & 0x0f) * 4;
    if ihl < 20 || f.len() < 14 + ihl {
        return;
    }
    f[24] = 0;
    f[25] = 0;
    let c = checksum(&f[14..14 + ihl], 0);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    let tot = usize::from(u16::from_be_bytes([f[16], f[17]]));
    let frag = u16::from_be_bytes([f[20], f[21]]) & 0x3fff;
    if tot < ihl || 14 + tot > f.len() || frag != 0 {
        return;
    }
    let l4 = 14 + ihl;
    let l4_len = tot - ihl;
    let at = match f[23] {
        PROTO_TCP if l4_len >= 20 => 16,
        PROTO_UDP if l4_len >= 8 => 6,
        PROTO_ICMP if l4_len >= 4 => 2,
        _ => return,
    };
    if f[23] == PROTO_UDP && f[l4 + 6..l4 + 8] == [0, 0] {
        return;
    }
    f[l4 + at] = 0;
    f[l4 + at + 1] = 0;
    let mut pseudo = Vec::with_capacity(12);
    if f[23] != PROTO_ICMP {
        pseudo.extend_from_slice(&f[26..34]);
        pseudo.extend_from_slice(&[0, f[23]]);
        pseudo.extend_from_slice(&(l4_len as u16).to_be_bytes());
    }
    let mut c = checksum(&f[l4..l4 + l4_len], sum(&pseudo));
    if f[23] == PROTO_UDP && c == 0 {
        c = 0xffff;
    }
    f[l4 + at..l4 + at + 2].copy_from_slice(&c.to_be_bytes());
}

fn sum(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn checksum(data: &[u8], start: u32) -> u16 {
    let mut s = start + sum(data);
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

struct Fuzzer {
    h: Harness,
    model: Model,
    rng: Rng,
    seed: u64,
    index: u64,
    /// Runs the kernel refused (EINVAL for frames too short for their EtherType).
    refused: u64,
    verdicts: BTreeMap<&'static str, u64>,
}

#[derive(Clone, Copy, Debug)]
enum Path {
    Tc,
    Xdp,
    XdpThenTc,
}

impl Fuzzer {
    fn new(seed: u64) -> Fuzzer {
        let desired = services();
        // Node 1 with the default masquerade range 61000-65535: a client port there is
        // kept when free, others are remapped into it.
        let mut h = Harness::load("fuzz", &node1_config());
        h.sync(&desired);
        Fuzzer {
            h,
            model: Model::new(&desired),
            rng: Rng(seed),
            seed,
            index: 0,
            refused: 0,
            verdicts: BTreeMap::new(),
        }
    }

    fn fail(&self, path: Path, input: &[u8], output: &[u8], why: String) -> ! {
        panic!(
            "fuzz violation (seed {seed}, packet {idx}, {path:?}): {why}\n  input  {}\n  output {}\n  input hex:  {}\n  output hex: {}\n  known flows: {:#?}",
            summary(input),
            summary(output),
            hex(input),
            hex(output),
            self.model.flows,
            seed = self.seed,
            idx = self.index,
        )
    }

    /// An ICMP error about a packet of a flow the programs translated, from a router: about
    /// its packet to the backend (to the source the backend saw) or about its reply (to the
    /// Service address); a tenth addressed to another host; some of types that are never
    /// translated (redirect, echo request).
    fn icmp_error_frame(&mut self) -> Vec<u8> {
        let rng = &mut self.rng;
        let n = rng.below(self.model.flows.len());
        let (&(client, vip, proto), rec) = self.model.flows.iter().nth(n).unwrap();
        let (src, dst) = if rng.chance(50) {
            (rec.nat, rec.backend)
        } else {
            (vip, client)
        };
        let payload = {
            let n = rng.below(48);
            rng.bytes(n)
        };
        let offending = if proto == PROTO_TCP {
            PacketBuilder::tcp(src, dst)
                .flags(ACK)
                .seq(rng.next() as u32)
                .payload(&payload)
                .build()
        } else {
            PacketBuilder::udp(src, dst).payload(&payload).build()
        };
        let (kind, code) = *rng.pick(&[
            (3, 4),
            (3, 4),
            (3, 3),
            (3, 1),
            (11, 0),
            (12, 0),
            (5, 1),
            (8, 0),
        ]);
        let to = if rng.chance(90) {
            *src.ip()
        } else {
            rng.pick(&CLIENTS).parse().unwrap()
        };
        let quote = if rng.chance(50) {
            Quote::Minimal
        } else {
            Quote::Linux
        };
        let rest = (rng.next() as u32).to_be_bytes();
        PacketBuilder::icmp_error(ip("198.51.100.1"), to, kind, code, rest, &offending, quote)
            .ip_id(rng.next() as u16)
            .build()
    }

    /// One well-formed frame: a client's packet to a frontend, a reply of a known flow, or
    /// an ICMP error about a known flow.
    fn valid_frame(&mut self) -> Vec<u8> {
        if !self.model.flows.is_empty() && self.rng.chance(8) {
            return self.icmp_error_frame();
        }
        let rng = &mut self.rng;
        let flags = *rng.pick(&[
            SYN,
            SYN,
            ACK,
            PSH | ACK,
            PSH | ACK,
            FIN | ACK,
            RST,
            SYN | ACK,
            0,
        ]);
        let payload = {
            let n = rng.below(48);
            rng.bytes(n)
        };
        if !self.model.flows.is_empty() && rng.chance(40) {
            // A reply of a flow the programs translated: backend -> the source it saw.
            let n = rng.below(self.model.flows.len());
            let ((_, _, proto), rec) = self.model.flows.iter().nth(n).unwrap();
            let b = if *proto == PROTO_TCP {
                PacketBuilder::tcp(rec.backend, rec.nat)
                    .flags(flags)
                    .seq(rng.next() as u32)
            } else {
                PacketBuilder::udp(rec.backend, rec.nat)
            };
            return b.payload(&payload).ip_id(rng.next() as u16).build();
        }
        let fronts: Vec<&(SocketAddrV4, u8)> = self.model.fronts.keys().collect();
        let (vip, proto) = **rng.pick(&fronts);
        let client = SocketAddrV4::new(
            rng.pick(&CLIENTS).parse::<Ipv4Addr>().unwrap(),
            if rng.chance(90) {
                *rng.pick(&CLIENT_PORTS)
            } else {
                1024 + rng.below(64000) as u16
            },
        );
        let b = if proto == PROTO_TCP {
            PacketBuilder::tcp(client, vip)
                .flags(flags)
                .seq(rng.next() as u32)
        } else {
            let b = PacketBuilder::udp(client, vip);
            if rng.chance(10) {
                b.udp_checksum_zero()
            } else {
                b
            }
        };
        b.payload(&payload).ip_id(rng.next() as u16).build()
    }

    /// A fragment after the first of a datagram whose first fragment was run.
    fn later_fragment(&mut self) -> Option<Vec<u8>> {
        if self.model.firsts.is_empty() {
            return None;
        }
        let rng = &mut self.rng;
        let (src, dst, id, proto) = *rng.pick(&self.model.firsts);
        let payload = {
            let n = 8 * (1 + rng.below(8));
            rng.bytes(n)
        };
        Some(
            PacketBuilder::ipv4_raw(src, dst, proto)
                .ip_id(id)
                .fragment(rng.chance(50), 1 + rng.below(400) as u16)
                .payload(&payload)
                .build(),
        )
    }

    /// A frame to run: valid, mutated, a fragment, or random bytes.
    fn frame(&mut self) -> Vec<u8> {
        if self.rng.chance(8)
            && let Some(f) = self.later_fragment()
        {
            return f;
        }
        if self.rng.chance(5) {
            let n = self.rng.below(100);
            let mut f = self.rng.bytes(n);
            if f.len() >= 14 && self.rng.chance(70) {
                f[12] = 0x08;
                f[13] = 0x00;
            }
            return f;
        }
        let mut f = self.valid_frame();
        if self.rng.chance(8) {
            // A clean first fragment (MF set, offset 0).
            f[20] |= 0x20;
            fix_checksums(&mut f);
            return f;
        }
        if self.rng.chance(45) {
            return f;
        }
        let rng = &mut self.rng;
        match rng.below(8) {
            0 => f.truncate(rng.below(f.len())),
            1 => {
                for _ in 0..1 + rng.below(3) {
                    let bit = rng.below(f.len() * 8);
                    f[bit / 8] ^= 1 << (bit % 8);
                }
            }
            2 => {
                // IHL
                f[14] = (f[14] & 0xf0) | rng.below(16) as u8;
            }
            3 => {
                // total length: small shifts and anything
                let tot = u16::from_be_bytes([f[16], f[17]]);
                let new = if rng.chance(50) {
                    tot.wrapping_add(rng.below(41) as u16).wrapping_sub(20)
                } else {
                    rng.next() as u16
                };
                f[16..18].copy_from_slice(&new.to_be_bytes());
            }
            4 => {
                // fragment bits and version
                if rng.chance(50) {
                    f[20] |= 0x20;
                } else {
                    f[20] = (f[20] & 0xe0) | rng.below(32) as u8;
                    f[21] = rng.next() as u8;
                }
                if rng.chance(20) {
                    f[14] = (rng.below(16) as u8) << 4 | (f[14] & 0x0f);
                }
            }
            5 => {
                // TCP data offset / UDP length (option-less IPv4 header: L4 at 34)
                if f.len() >= 54 && f[23] == PROTO_TCP {
                    f[46] = (rng.below(16) as u8) << 4;
                } else if f.len() >= 42 {
                    let v = rng.below(80) as u16;
                    f[38..40].copy_from_slice(&v.to_be_bytes());
                }
            }
            6 => {
                // Ethernet padding (valid)
                let to = f.len() + 1 + rng.below(64);
                f.resize(to, 0);
            }
            _ => {
                let at = rng.below(f.len());
                f[at] = rng.next() as u8;
            }
        }
        if self.rng.chance(60) {
            fix_checksums(&mut f);
        }
        f
    }

    fn step(&mut self) {
        let frame = self.frame();
        let path = *self
            .rng
            .pick(&[Path::Tc, Path::Tc, Path::Xdp, Path::XdpThenTc]);
        self.index += 1;
        match path {
            Path::Tc => {
                self.run(Prog::Tc, path, &frame);
            }
            Path::Xdp => {
                self.run(Prog::Xdp, path, &frame);
            }
            Path::XdpThenTc => {
                if let Some((ret, out)) = self.run(Prog::Xdp, path, &frame)
                    && ret == XDP_PASS
                {
                    self.run(Prog::Tc, path, &out);
                }
            }
        }
    }

    /// Runs one program on `input` and checks the oracle; the return value and output.
    fn run(&mut self, prog: Prog, path: Path, input: &[u8]) -> Option<(u32, Vec<u8>)> {
        let r = match self.h.try_run(prog, input) {
            Ok(r) => r,
            // The kernel refuses some frames before the program runs (too short for an
            // Ethernet header, or for the IPv4 header its EtherType announces).
            Err(_) if input.len() < 34 => {
                self.refused += 1;
                return None;
            }
            Err(e) => self.fail(path, input, &[], format!("{prog:?} test run failed: {e}")),
        };
        let out = r.out;
        let verdict = match r.delta.as_slice() {
            [(v, 1)] => *v,
            // XDP counts nothing for a packet it passes on untouched (TC counts it).
            [] if prog == Prog::Xdp && r.ret == XDP_PASS => Verdict::XdpPassToTc,
            other => self.fail(
                path,
                input,
                &out,
                format!("{prog:?}: counters changed: {other:?}"),
            ),
        };
        *self.verdicts.entry(verdict.label()).or_default() += 1;
        let ret_ok = match prog {
            Prog::Xdp => {
                (r.ret == XDP_DROP && verdict.is_drop())
                    || (r.ret == XDP_PASS && !verdict.is_drop())
            }
            Prog::Tc => match r.ret {
                TC_ACT_SHOT => verdict.is_drop(),
                TC_ACT_OK => !verdict.is_drop(),
                TC_ACT_REDIRECT => {
                    matches!(verdict, Verdict::RejectTcpRst | Verdict::RejectIcmp)
                }
                _ => false,
            },
        };
        if !ret_ok {
            self.fail(
                path,
                input,
                &out,
                format!("{prog:?} returned {} for {verdict:?}", r.ret),
            );
        }
        self.note_fragment(input, &out, verdict);
        match verdict {
            Verdict::DnatFragment | Verdict::RevNatFragment => {
                self.check_later_fragment(path, input, &out)
            }
            Verdict::DnatNew | Verdict::DnatEstablished => {
                self.check_forward(path, input, &out, verdict)
            }
            Verdict::RevNat => self.check_reply(path, input, &out),
            Verdict::RevNatIcmp | Verdict::DnatIcmp => self.check_icmp(path, input, &out, verdict),
            Verdict::RejectTcpRst | Verdict::RejectIcmp => {
                let (front, _) = self.front_of(input);
                if !front.is_some_and(|f| f.backends.is_empty()) {
                    self.fail(
                        path,
                        input,
                        &out,
                        "a reject for a packet not to an empty Service".into(),
                    );
                }
                if let Err(e) = verify_checksums(&out) {
                    self.fail(
                        path,
                        input,
                        &out,
                        format!("reject with a bad checksum: {e}"),
                    );
                }
            }
            v if !v.is_drop() && out != input => {
                self.fail(
                    path,
                    input,
                    &out,
                    format!("{v:?} but the frame was rewritten"),
                );
            }
            _ => {}
        }
        Some((r.ret, out))
    }

    /// What a first fragment's run tells the model: the addresses its datagram's later
    /// fragments get (translated), or none (the programs decided it is not theirs: passed
    /// or dropped by the decision). Verdicts that may come before the decision (malformed,
    /// IPv4 options, a failed rewrite) leave the model as it is.
    fn note_fragment(&mut self, input: &[u8], out: &[u8], verdict: Verdict) {
        let Some(key) = first_fragment_key(input) else {
            return;
        };
        if !self.model.firsts.contains(&key) {
            if self.model.firsts.len() >= 64 {
                let i = self.rng.below(64);
                self.model.firsts[i] = key;
            } else {
                self.model.firsts.push(key);
            }
        }
        match verdict {
            Verdict::DnatNew | Verdict::DnatEstablished | Verdict::RevNat => {
                if let Some(o) = parse_summary(out) {
                    self.model.frags.insert(key, (o.src, o.dst));
                }
            }
            Verdict::PassNotService
            | Verdict::RejectTcpRst
            | Verdict::RejectIcmp
            | Verdict::DropNoBackend
            | Verdict::DropNoLocalBackend
            | Verdict::DropSourceRange
            | Verdict::DropNatFailed
            | Verdict::DropCtFailed => {
                self.model.frags.remove(&key);
            }
            _ => {}
        }
    }

    /// A fragment after the first, translated: the addresses its first fragment left
    /// with, every other byte but the IPv4 header checksum as it came in.
    fn check_later_fragment(&mut self, path: Path, input: &[u8], out: &[u8]) {
        let key = match parse_summary(input) {
            Some(s) if s.fragment && s.sport.is_none() && input.len() >= 34 => (
                s.src,
                s.dst,
                u16::from_be_bytes([input[18], input[19]]),
                s.proto,
            ),
            _ => self.fail(
                path,
                input,
                out,
                "a fragment verdict for a frame that is no fragment after the first".into(),
            ),
        };
        let Some(&(src, dst)) = self.model.frags.get(&key) else {
            self.fail(
                path,
                input,
                out,
                "a later fragment translated, but no first fragment of it was".into(),
            );
        };
        if out.len() != input.len() {
            self.fail(
                path,
                input,
                out,
                "a later fragment changed its length".into(),
            );
        }
        let mut expected = input.to_vec();
        expected[26..30].copy_from_slice(&src.octets());
        expected[30..34].copy_from_slice(&dst.octets());
        expected[24..26].copy_from_slice(&out[24..26]);
        if out != expected {
            self.fail(
                path,
                input,
                out,
                format!("a later fragment should only get {src} -> {dst}"),
            );
        }
        self.check_checksums(path, input, out);
    }

    fn front_of(&self, frame: &[u8]) -> (Option<&Front>, Option<Summary>) {
        let s = parse_summary(frame);
        let front = s
            .as_ref()
            .and_then(|s| s.dst_socket().map(|d| (d, s.proto)))
            .and_then(|k| self.model.fronts.get(&k));
        (front, s)
    }

    /// Both frames' tuples, or a failure.
    fn tuples(&self, path: Path, input: &[u8], out: &[u8]) -> (Summary, Summary) {
        match (parse_summary(input), parse_summary(out)) {
            (Some(i), Some(o)) if i.sport.is_some() && o.sport.is_some() => (i, o),
            _ => self.fail(
                path,
                input,
                out,
                "translated, but not a TCP/UDP frame".into(),
            ),
        }
    }

    fn check_checksums(&self, path: Path, input: &[u8], out: &[u8]) {
        if verify_checksums(input).is_ok()
            && let Err(e) = verify_checksums(out)
        {
            self.fail(
                path,
                input,
                out,
                format!("valid input, rewritten with a bad checksum: {e}"),
            );
        }
    }

    fn check_forward(&mut self, path: Path, input: &[u8], out: &[u8], verdict: Verdict) {
        let (i, o) = self.tuples(path, input, out);
        let (client, vip) = (i.src_socket().unwrap(), i.dst_socket().unwrap());
        let (nat, backend) = (o.src_socket().unwrap(), o.dst_socket().unwrap());
        let Some(front) = self.model.fronts.get(&(vip, i.proto)) else {
            self.fail(
                path,
                input,
                out,
                "translated, but not to a Service address".into(),
            );
        };
        if !front.backends.contains(&backend) {
            self.fail(
                path,
                input,
                out,
                format!("{backend} is no backend of {vip}"),
            );
        }
        self.check_checksums(path, input, out);
        let (lo, hi) = MASQUERADE_PORTS;
        let source_ok = nat == client
            || ((*nat.ip() == *client.ip() || *nat.ip() == ip(NODE_IP))
                && ((lo..=hi).contains(&nat.port()) || nat.port() == client.port()));
        if !source_ok {
            self.fail(
                path,
                input,
                out,
                format!("source {client} translated to {nat}"),
            );
        }
        let key = (client, vip, i.proto);
        if verdict == Verdict::DnatEstablished
            && let Some(rec) = self.model.flows.get(&key)
            && (rec.backend != backend || rec.nat != nat)
        {
            self.fail(
                path,
                input,
                out,
                format!("established flow moved from {rec:?}"),
            );
        }
        let tuple = (backend, nat, i.proto);
        if let Some(other) = self.model.replies.get(&tuple)
            && *other != key
            && let Some(rec) = self.model.flows.get(other)
            && Model::live(rec)
            && rec.backend == backend
            && rec.nat == nat
        {
            self.fail(
                path,
                input,
                out,
                format!("reply tuple {backend} -> {nat} of live flow {other:?} given to {key:?}"),
            );
        }
        let closing = i.tcp_flags.is_some_and(|f| f & (FIN | RST) != 0);
        let rec = self.model.flows.entry(key).or_insert(FlowRec {
            backend,
            nat,
            closing: false,
            last: Instant::now(),
        });
        if verdict == Verdict::DnatNew {
            rec.closing = false;
        }
        rec.backend = backend;
        rec.nat = nat;
        rec.closing |= closing;
        rec.last = Instant::now();
        self.model.replies.insert(tuple, key);
    }

    fn check_reply(&mut self, path: Path, input: &[u8], out: &[u8]) {
        let (i, o) = self.tuples(path, input, out);
        let tuple = (i.src_socket().unwrap(), i.dst_socket().unwrap(), i.proto);
        let Some(key) = self.model.replies.get(&tuple).copied() else {
            self.fail(
                path,
                input,
                out,
                "reverse-translated, but no flow has this reply tuple".into(),
            );
        };
        let (client, vip, _) = key;
        if o.src_socket() != Some(vip) || o.dst_socket() != Some(client) {
            self.fail(
                path,
                input,
                out,
                format!(
                    "a reply of flow {client} -> {vip} came out as {:?} -> {:?}",
                    o.src_socket(),
                    o.dst_socket()
                ),
            );
        }
        self.check_checksums(path, input, out);
        if let Some(rec) = self.model.flows.get_mut(&key) {
            rec.closing |= i.tcp_flags.is_some_and(|f| f & (FIN | RST) != 0);
            rec.last = Instant::now();
        }
    }
}

/// The datagram key of a first fragment (MF set, offset 0, a TCP/UDP header): source,
/// destination, IPv4 id, protocol.
fn first_fragment_key(frame: &[u8]) -> Option<FragKey> {
    let s = parse_summary(frame)?;
    let field = u16::from_be_bytes([*frame.get(20)?, *frame.get(21)?]);
    (field & 0x3fff == 0x2000 && s.sport.is_some()).then(|| {
        (
            s.src,
            s.dst,
            u16::from_be_bytes([frame[18], frame[19]]),
            s.proto,
        )
    })
}

impl Fuzzer {
    /// A translated ICMP error: its input quoted a packet of a known flow (rev_nat_icmp:
    /// the flow's packet to the backend; dnat_icmp: its reply to the client) and was
    /// addressed to that packet's source; its output quotes the packet as the receiver
    /// sent it and is addressed to that receiver (rev_nat_icmp: from the Service address).
    fn check_icmp(&self, path: Path, input: &[u8], out: &[u8], verdict: Verdict) {
        let quoted = |frame: &[u8]| {
            parse_icmp_quote(frame).and_then(|q| Some((q.src_socket()?, q.dst_socket()?, q.proto)))
        };
        let (Some((qs, qd, proto)), Some(oq), Some(i), Some(o)) = (
            quoted(input),
            quoted(out),
            parse_summary(input),
            parse_summary(out),
        ) else {
            self.fail(
                path,
                input,
                out,
                "translated, but not an ICMP error quoting ports".into(),
            );
        };
        if i.dst != *qs.ip() {
            self.fail(
                path,
                input,
                out,
                "translated an error not addressed to the quoted source".into(),
            );
        }
        let (expected_quote, expected_src, expected_dst) = if verdict == Verdict::RevNatIcmp {
            let Some(&(client, vip, _)) = self.model.replies.get(&(qd, qs, proto)) else {
                self.fail(
                    path,
                    input,
                    out,
                    "rev_nat_icmp, but no flow has this reply tuple".into(),
                );
            };
            ((client, vip, proto), *vip.ip(), *client.ip())
        } else {
            let Some(rec) = self.model.flows.get(&(qd, qs, proto)) else {
                self.fail(
                    path,
                    input,
                    out,
                    "dnat_icmp, but no flow is client -> Service of the quote".into(),
                );
            };
            let src = if rec.nat == qd { i.src } else { *rec.nat.ip() };
            ((rec.backend, rec.nat, proto), src, *rec.backend.ip())
        };
        if oq != expected_quote || o.src != expected_src || o.dst != expected_dst {
            self.fail(
                path,
                input,
                out,
                format!(
                    "{verdict:?}: came out {} > {} quoting {oq:?}, expected {expected_src} > {expected_dst} quoting {expected_quote:?}",
                    o.src, o.dst
                ),
            );
        }
        self.check_checksums(path, input, out);
    }
}

fn seed() -> u64 {
    std::env::var("SVC_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn fuzz(packets: u64, limit: Duration) {
    let seed = seed();
    println!(
        "fuzz: seed {seed} (SVC_FUZZ_SEED={seed} replays it), up to {packets} packets or {limit:?}"
    );
    let mut f = Fuzzer::new(seed);
    let start = Instant::now();
    while f.index < packets && start.elapsed() < limit {
        f.step();
    }
    let took = start.elapsed();
    println!(
        "fuzz: {} packets in {:.1}s ({} refused by the kernel), {} flows translated, verdicts: {:?}",
        f.index,
        took.as_secs_f64(),
        f.refused,
        f.model.flows.len(),
        f.verdicts
    );
    // The generator must reach the interesting verdicts, or the oracle checked little.
    for v in [
        "dnat_new",
        "dnat_established",
        "rev_nat",
        "drop_malformed",
        "pass_not_service",
        "dnat_fragment",
        "rev_nat_fragment",
        "rev_nat_icmp",
        "dnat_icmp",
    ] {
        assert!(
            f.verdicts.get(v).copied().unwrap_or(0) > 0,
            "the fuzzer never reached {v}: {:?}",
            f.verdicts
        );
    }
}

#[test]
fn fuzz_bounded() {
    fuzz(FUZZ_PACKETS, Duration::from_secs(60));
}

/// The long run: `SVC_FUZZ_PACKETS=5000000 cargo test -p svc-agent --test datapath --
/// --ignored --nocapture fuzz_long` (README, Tests).
#[test]
#[ignore]
fn fuzz_long() {
    fuzz(
        env_u64("SVC_FUZZ_PACKETS", 1_000_000),
        Duration::from_secs(env_u64("SVC_FUZZ_SECONDS", 900)),
    );
}

/// The IPv4 address of an IPv4-only model's frontend or backend.
fn v4(ip: std::net::IpAddr) -> std::net::Ipv4Addr {
    match ip {
        std::net::IpAddr::V4(a) => a,
        std::net::IpAddr::V6(a) => panic!("{a}: the fuzz model is IPv4"),
    }
}
