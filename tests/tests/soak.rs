//! Proven under churn and pressure, with real packets in the single-node lab:
//!
//! - **Soak**: steady TCP and UDP traffic (new connections, new UDP flows, and one
//!   long-lived UDP flow) through two Services while their EndpointSlices change all the
//!   time (scale down and up, rolling replacement with a terminating endpoint) and the
//!   agent is killed (SIGKILL) and restarted every few changes. Counted: requests that
//!   failed, replies from a backend that was not in the Service's set at that moment
//!   (the set before or after a change in flight counts), and how long the long-lived UDP
//!   flow took to move after its backend was removed. All must be zero (the move: one
//!   send interval). `SVC_SOAK_SECS` sets the length (default 30 s; `cargo xtask soak`
//!   runs a long one).
//! - **Conntrack pressure**: with `--ct-map-max 4096`, 6,000 new UDP flows (12,000 entries)
//!   overflow the conntrack map; an established TCP connection that keeps talking keeps
//!   working (the LRU map evicts what is idle), new flows keep being served, and the
//!   pressure is visible in the metrics (`svc_map_entries{map="SVC4_CT"}` at capacity).
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use svc_common::{PROTO_TCP, PROTO_UDP};
use svc_lab::agent::{LabAgent, wait_for};
use svc_lab::{EchoServers, Lab, TcpSession, UdpSession, http_get, tcp_request, udp_request};

const A_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 7, 1);
const B_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 7, 2);
/// Service B's pods answer on another port, under other names, so a reply tells which
/// Service's backend answered.
const B_PORT: u16 = 9090;
const TIMEOUT: Duration = Duration::from_secs(2);
const METRICS: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 10249);

/// Serialises the tests of this file (each builds a lab and loads programs).
static SERIAL: Mutex<()> = Mutex::new(());

const SERVICES: &str = "\
apiVersion: v1
kind: Service
metadata: {name: soak-a, namespace: default}
spec:
  clusterIP: 10.96.7.1
  ports:
    - {name: tcp, protocol: TCP, port: 80, targetPort: 8080}
    - {name: udp, protocol: UDP, port: 80, targetPort: 8080}
---
apiVersion: v1
kind: Service
metadata: {name: soak-b, namespace: default}
spec:
  clusterIP: 10.96.7.2
  ports:
    - {name: tcp, protocol: TCP, port: 80, targetPort: 9090}
    - {name: udp, protocol: UDP, port: 80, targetPort: 9090}
";

/// Pods 1..=3 (p1 p2 p3): the endpoints a phase has.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Set {
    active: BTreeSet<u8>,
    /// Serving and terminating: kept for established flows, never for new ones.
    terminating: BTreeSet<u8>,
}

fn set(active: &[u8], terminating: &[u8]) -> Set {
    Set {
        active: active.iter().copied().collect(),
        terminating: terminating.iter().copied().collect(),
    }
}

/// The cycle both Services go through (B three steps behind A): scale down, up, a rolling
/// replacement that leaves p1 terminating, then gone.
fn cycle() -> Vec<Set> {
    vec![
        set(&[1, 2, 3], &[]),
        set(&[1], &[]),
        set(&[1, 2], &[]),
        set(&[2, 3], &[1]),
        set(&[2, 3], &[]),
        set(&[3], &[]),
    ]
}

fn pod_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 1, 10 + i)
}

/// The EndpointSlice of a soak Service for `s`.
fn slice(service: &str, port: u16, s: &Set) -> String {
    let mut out = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {service}-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: {service}}}\naddressType: IPv4\nports:\n  - {{name: tcp, protocol: TCP, port: {port}}}\n  - {{name: udp, protocol: UDP, port: {port}}}\nendpoints:\n"
    );
    for i in &s.active {
        out += &format!(
            "  - {{addresses: [\"{}\"], nodeName: node1, conditions: {{ready: true, serving: true, terminating: false}}}}\n",
            pod_ip(*i)
        );
    }
    for i in &s.terminating {
        out += &format!(
            "  - {{addresses: [\"{}\"], nodeName: node1, conditions: {{ready: false, serving: true, terminating: true}}}}\n",
            pod_ip(*i)
        );
    }
    out
}

/// Writes a file atomically (rename), so the agent never reads half of it.
fn write_atomic(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// Removes the manifests directory and stops the agent (before the lab, declared last).
struct Env {
    agent: LabAgent,
    manifests: PathBuf,
    _b_servers: Option<EchoServers>,
    lab: Lab,
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- agent ---\n{}", self.agent.log_text());
        }
        let _ = self.agent.process.stop();
        let _ = std::fs::remove_dir_all(&self.manifests);
        let _ = std::fs::remove_file(&self.agent.log);
    }
}

fn up(extra_args: &[&str], a: &Set, b: &Set) -> Env {
    let mut lab = Lab::up().expect("lab up");
    // Service B's echo servers: in the same pods, on B_PORT, answering "p1-b"...
    let pods: Vec<(String, String)> = ["p1", "p2", "p3"]
        .iter()
        .map(|p| (format!("{p}-b"), lab.pod_ns(p).to_string()))
        .collect();
    let b_servers = EchoServers::start(&pods, B_PORT).expect("B's echo servers");
    let manifests = std::env::temp_dir().join(format!("svl-{}-soak", lab.id()));
    std::fs::create_dir_all(&manifests).unwrap();
    write_atomic(&manifests, "00-services.yaml", SERVICES);
    write_atomic(&manifests, "10-a.yaml", &slice("soak-a", 8080, a));
    write_atomic(&manifests, "10-b.yaml", &slice("soak-b", B_PORT, b));
    let log = std::env::temp_dir().join(format!("svl-{}-agent.log", lab.id()));
    let agent = LabAgent::start_in(&mut lab, 1, &manifests, &log, extra_args).expect("agent");
    let env = Env {
        agent,
        manifests,
        _b_servers: Some(b_servers),
        lab,
    };
    assert!(
        wait_for(Duration::from_secs(20), || applied(&env.agent, a, b)),
        "the first state never reached the maps"
    );
    env
}

/// True once the maps serve exactly the active sets of A and B, TCP and UDP.
fn applied(agent: &LabAgent, a: &Set, b: &Set) -> bool {
    let want = |s: &Set, port: u16| -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = s
            .active
            .iter()
            .map(|i| SocketAddrV4::new(pod_ip(*i), port).into())
            .collect();
        v.sort();
        v
    };
    let got = |vip: Ipv4Addr, proto: u8| {
        agent.backends(vip, 80, proto).map(|mut v| {
            v.sort();
            v
        })
    };
    [(A_VIP, a, 8080), (B_VIP, b, B_PORT)]
        .iter()
        .all(|(vip, s, port)| {
            [PROTO_TCP, PROTO_UDP]
                .iter()
                .all(|proto| got(*vip, *proto) == Some(want(s, *port)))
        })
}

/// One phase of the soak: the sets, when they were written and when the maps had them.
struct Phase {
    a: Set,
    b: Set,
    written: Instant,
    applied: Instant,
}

/// One request and its answer.
struct Sample {
    service: char,
    /// 't' or 'u', and the client's source port: a new flow that reuses the tuple of a
    /// flow still in conntrack is that flow (conntrack keeps its backend, as netfilter's).
    proto: char,
    port: u16,
    /// The long-lived UDP flow (an established flow: may stay on a terminating backend).
    long_lived: bool,
    started: Instant,
    ended: Instant,
    /// The pod that answered (1..=3, and whether it was B's server), or the error.
    answer: Result<(u8, bool), String>,
}

fn parse_pod(name: &str) -> Option<(u8, bool)> {
    let (pod, b) = match name.strip_suffix("-b") {
        Some(p) => (p, true),
        None => (name, false),
    };
    let i: u8 = pod.strip_prefix('p')?.parse().ok()?;
    Some((i, b))
}

/// Runs `f` every `every` until `stop`, recording one sample per call. `f` answers the
/// source port it used and the pod that replied.
#[allow(clippy::too_many_arguments)]
fn traffic(
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    service: char,
    proto: char,
    long_lived: bool,
    every: Duration,
    mut f: impl FnMut() -> std::io::Result<(u16, String)> + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let (port, answer) = match f() {
                Ok((port, pod)) => (
                    port,
                    parse_pod(&pod).ok_or(format!("unexpected reply from {pod:?}")),
                ),
                Err(e) => (0, Err(e.to_string())),
            };
            samples.lock().unwrap().push(Sample {
                service,
                proto,
                port,
                long_lived,
                started,
                ended: Instant::now(),
                answer,
            });
            std::thread::sleep(every);
        }
    })
}

fn soak_secs() -> u64 {
    std::env::var("SVC_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30)
        .clamp(5, 24 * 3600)
}

#[test]
fn soak_endpoint_churn_and_agent_restarts() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cycle = cycle();
    let state = |n: usize| {
        (
            cycle[n % cycle.len()].clone(),
            cycle[(n + 3) % cycle.len()].clone(),
        )
    };
    let (a0, b0) = state(0);
    let mut env = up(&[], &a0, &b0);
    let client = env.lab.client_ns().to_string();
    // Phase 0 is in the maps before the first request starts: `up` waited for it. Taking
    // the clock after the traffic threads start would leave their first requests in no
    // phase (a reply "outside the set", allowed {}).
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for (service, vip) in [('a', A_VIP), ('b', B_VIP)] {
        let to = SocketAddrV4::new(vip, 80);
        let ns = client.clone();
        threads.push(traffic(
            stop.clone(),
            samples.clone(),
            service,
            't',
            false,
            Duration::from_millis(15),
            move || {
                let mut c = TcpSession::connect(&ns, to, TIMEOUT)?;
                let port = c.local_addr()?.port();
                Ok((port, c.exchange("soak")?.pod))
            },
        ));
        let ns = client.clone();
        threads.push(traffic(
            stop.clone(),
            samples.clone(),
            service,
            'u',
            false,
            Duration::from_millis(15),
            move || {
                let u = UdpSession::bind(&ns)?;
                let port = u.local_addr()?.port();
                Ok((port, u.request(to, TIMEOUT)?.pod))
            },
        ));
    }
    // One UDP flow for the whole run (same source port): it keeps its backend while that
    // backend exists, terminating or not, and moves at once when it is removed.
    let long = UdpSession::bind(&client).expect("long-lived UDP socket");
    let a_udp = SocketAddrV4::new(A_VIP, 80);
    threads.push(traffic(
        stop.clone(),
        samples.clone(),
        'a',
        'u',
        true,
        Duration::from_millis(20),
        move || Ok((long.local_addr()?.port(), long.request(a_udp, TIMEOUT)?.pod)),
    ));

    let length = Duration::from_secs(soak_secs());
    let mut phases = vec![Phase {
        a: a0,
        b: b0,
        written: started,
        applied: started,
    }];
    let mut restarts = 0;
    let mut n = 0;
    while started.elapsed() < length {
        std::thread::sleep(Duration::from_millis(1200));
        n += 1;
        let (a, b) = state(n);
        let restart = n % 4 == 2;
        if restart {
            // SIGKILL, as a crash; the pinned programs and maps keep serving meanwhile.
            env.agent.process.kill().expect("kill the agent");
        }
        let written = Instant::now();
        write_atomic(&env.manifests, "10-a.yaml", &slice("soak-a", 8080, &a));
        write_atomic(&env.manifests, "10-b.yaml", &slice("soak-b", B_PORT, &b));
        if restart {
            std::thread::sleep(Duration::from_millis(300));
            env.agent.restart(&mut env.lab).expect("restart the agent");
            restarts += 1;
        }
        assert!(
            wait_for(Duration::from_secs(20), || applied(&env.agent, &a, &b)),
            "phase {n} ({a:?}, {b:?}) never reached the maps"
        );
        phases.push(Phase {
            a,
            b,
            written,
            applied: Instant::now(),
        });
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("traffic thread");
    }
    let samples = std::mem::take(&mut *samples.lock().unwrap());

    // A sample may have gone to any backend of the phases whose time overlaps it: phase i's
    // set is possible from its write until the next phase is applied.
    let allowed = |s: &Sample| -> BTreeSet<u8> {
        let mut out = BTreeSet::new();
        for (i, p) in phases.iter().enumerate() {
            let until = phases.get(i + 1).map(|n| n.applied);
            let overlaps = p.written <= s.ended && until.is_none_or(|u| s.started <= u);
            if overlaps {
                let set = if s.service == 'a' { &p.a } else { &p.b };
                out.extend(&set.active);
                if s.long_lived {
                    out.extend(&set.terminating);
                }
            }
        }
        out
    };
    // A "new" flow whose tuple (protocol, client port, Service) an earlier flow used, still
    // in conntrack (UDP: 60 s after its last packet; TCP: until a new SYN after FIN/RST),
    // is that earlier flow: conntrack keeps its backend (netfilter does the same).
    let mut last_use: std::collections::BTreeMap<(char, char, u16), (Instant, u8)> =
        Default::default();
    let mut reused: Vec<Option<u8>> = Vec::with_capacity(samples.len());
    let mut order: Vec<usize> = (0..samples.len()).collect();
    order.sort_by_key(|i| samples[*i].started);
    reused.resize(samples.len(), None);
    for i in order {
        let s = &samples[i];
        let key = (s.service, s.proto, s.port);
        if s.proto == 'u'
            && let Some((at, pod)) = last_use.get(&key)
            && s.started.saturating_duration_since(*at) < Duration::from_secs(60)
        {
            reused[i] = Some(*pod);
        }
        if let Ok((pod, _)) = s.answer {
            last_use.insert(key, (s.ended, pod));
        }
    }
    let mut failed = Vec::new();
    let mut wrong = Vec::new();
    let mut tuples_reused = 0;
    for (i, s) in samples.iter().enumerate() {
        if let (Some(pod), Ok((answered, _))) = (reused[i], &s.answer)
            && pod == *answered
        {
            tuples_reused += 1;
            continue;
        }
        match &s.answer {
            Err(e) => failed.push(format!("{} at {:?}: {e}", s.service, s.started - started)),
            Ok((pod, is_b)) => {
                if *is_b != (s.service == 'b') || !allowed(s).contains(pod) {
                    wrong.push(format!(
                        "{} {} port {} (long-lived: {}) at {:?}: answered by p{pod}{}, allowed {:?}",
                        s.service,
                        s.proto,
                        s.port,
                        s.long_lived,
                        s.started - started,
                        if *is_b { "-b" } else { "" },
                        allowed(s)
                    ));
                }
            }
        }
    }
    // The long-lived UDP flow after each removal of its backend: time from the removal
    // reaching the maps to the first reply from a backend of the new set.
    let long: Vec<&Sample> = samples.iter().filter(|s| s.long_lived).collect();
    let mut moves = Vec::new();
    for w in phases.windows(2) {
        let before = long
            .iter()
            .rev()
            .find(|s| s.ended <= w[1].written)
            .and_then(|s| s.answer.as_ref().ok().map(|a| a.0));
        let Some(pod) = before else { continue };
        if w[1].a.active.contains(&pod) || w[1].a.terminating.contains(&pod) {
            continue;
        }
        if let Some(first) = long.iter().find(|s| {
            s.started >= w[1].applied
                && s.answer
                    .as_ref()
                    .is_ok_and(|a| w[1].a.active.contains(&a.0))
        }) {
            moves.push(first.ended.saturating_duration_since(w[1].applied));
        }
    }
    let ok = samples.iter().filter(|s| s.answer.is_ok()).count();
    let max_move = moves.iter().max().copied().unwrap_or_default();
    println!(
        "soak: {:?}, {} endpoint changes, {restarts} agent restarts (SIGKILL), {} requests, {ok} answered, {} failed, {} from a backend outside the Service's set ({tuples_reused} UDP requests reused the tuple of a live flow and kept its backend), long-lived UDP flow moved {} times (slowest {max_move:?} after the removal reached the maps)",
        started.elapsed(),
        phases.len() - 1,
        samples.len(),
        failed.len(),
        wrong.len(),
        moves.len()
    );
    assert!(
        restarts >= 1 && phases.len() > 5,
        "the soak was too short to mean anything"
    );
    assert!(
        failed.is_empty(),
        "{} requests failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    assert!(
        wrong.is_empty(),
        "{} replies from a backend outside the set:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(
        !moves.is_empty(),
        "the long-lived UDP flow never lost its backend"
    );
    assert!(
        max_move < Duration::from_secs(1),
        "a removed UDP backend's flow took {max_move:?} to move"
    );
}

/// Reads one gauge of the agent's /metrics.
fn metric(lab: &Lab, name: &str) -> Option<f64> {
    let (_, text) = http_get(lab.node_ns(), METRICS, "/metrics", TIMEOUT).ok()?;
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn conntrack_pressure_keeps_live_and_new_flows_served() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let all = set(&[1, 2, 3], &[]);
    let env = up(&["--ct-map-max", "4096"], &all, &all);
    let client = env.lab.client_ns().to_string();
    let a_tcp = SocketAddrV4::new(A_VIP, 80);
    let mut session = TcpSession::connect(&client, a_tcp, TIMEOUT).expect("connect");
    let first = session.exchange("hello").expect("first exchange").pod;

    // 6,000 new UDP flows (two conntrack entries each) in bursts, the TCP connection
    // talking between bursts.
    let mut exchanges = 0;
    for burst in 0..30 {
        svc_lab::try_in_netns(&client, || {
            for _ in 0..200 {
                let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
                s.send_to(b"flood\n", SocketAddrV4::new(B_VIP, 80))?;
            }
            Ok::<_, std::io::Error>(())
        })
        .expect("enter the client namespace")
        .expect("flood");
        let reply = session
            .exchange(&format!("still there {burst}"))
            .unwrap_or_else(|e| panic!("the established connection broke in burst {burst}: {e}"));
        assert_eq!(
            reply.pod, first,
            "the established connection changed backend"
        );
        exchanges += 1;
    }
    let entries = metric(&env.lab, "svc_map_entries{map=\"SVC4_CT\"}").expect("entries metric");
    let capacity = metric(&env.lab, "svc_map_capacity{map=\"SVC4_CT\"}").expect("capacity metric");
    assert_eq!(capacity, 4096.0);
    assert!(
        entries >= 0.9 * capacity,
        "conntrack pressure is not visible: {entries} of {capacity} entries"
    );
    // New flows are still served: the LRU map makes room.
    for i in 0..50 {
        tcp_request(&client, a_tcp, "new", TIMEOUT)
            .unwrap_or_else(|e| panic!("new TCP flow {i}: {e}"));
        udp_request(&client, a_tcp, TIMEOUT).unwrap_or_else(|e| panic!("new UDP flow {i}: {e}"));
    }
    println!(
        "conntrack pressure: 6000 UDP flows into a 4096-entry map; the established TCP connection answered {exchanges} times on its backend; {entries} of {capacity} entries in use; 100 new flows served"
    );
}
