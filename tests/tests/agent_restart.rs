//! End to end: state that survives the agent. A long-lived TCP connection and a UDP flow
//! through a ClusterIP keep exchanging data, with the same backend, while the agent is
//! killed with SIGKILL and started again; no conntrack entry is lost; the restarted agent
//! swaps its own program instances into the pinned links (the link ids stay, the program
//! ids change), which is also what an upgrade to a new build does. `svc-agent cleanup` then
//! removes everything.
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use svc_common::{CT_KIND_SERVICE, PROTO_TCP, PROTO_UDP};
use svc_lab::{
    CLIENT_IP, Lab, TcpSession, UdpSession,
    agent::{LabAgent, example_manifests, wait_for, workspace_bin},
};

static SERIAL: Mutex<()> = Mutex::new(());

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const SVC: SocketAddrV4 = SocketAddrV4::new(VIP, 80);
const TIMEOUT: Duration = Duration::from_secs(2);

/// What the background traffic saw.
#[derive(Debug, Default)]
struct Tally {
    tcp_ok: usize,
    udp_ok: usize,
    /// Failures and answers from a pod other than the flow's first one.
    bad: Vec<String>,
}

#[test]
fn flows_survive_sigkill_and_restart_of_the_agent() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut lab = Lab::up().expect("lab up");
    let manifests = example_manifests(&lab, &["echo-clusterip.yaml"]).unwrap();
    let log = std::env::temp_dir().join(format!("svl-{}-agent.log", lab.id()));
    let mut agent = LabAgent::start(&mut lab, &manifests, &log).expect("start agent");
    agent
        .wait_backends(VIP, 80, PROTO_TCP, 3, Duration::from_secs(20))
        .unwrap();
    agent
        .wait_backends(VIP, 80, PROTO_UDP, 3, Duration::from_secs(5))
        .unwrap();

    // The flows, and the backend each was given.
    let mut tcp = TcpSession::connect(lab.client_ns(), SVC, TIMEOUT).expect("connect");
    let tcp_pod = tcp.exchange("hello").expect("tcp exchange").pod;
    let udp = UdpSession::bind(lab.client_ns()).expect("udp bind");
    let udp_pod = udp.request(SVC, TIMEOUT).expect("udp request").pod;
    let tcp_port = tcp.local_addr().unwrap().port();
    let udp_port = udp.local_addr().unwrap().port();
    let is_ours = |k: &svc_common::Ct4Key| {
        k.kind == CT_KIND_SERVICE
            && k.saddr_be == u32::from(CLIENT_IP).to_be()
            && (k.sport_be == tcp_port.to_be() || k.sport_be == udp_port.to_be())
    };
    let before = agent.conntrack().expect("read conntrack");
    let ours_before: Vec<_> = before.iter().filter(|(k, _)| is_ours(&k.0)).collect();
    assert_eq!(
        ours_before.len(),
        2,
        "one service entry per flow: {before:?}"
    );
    let links_before = agent.links();
    assert!(
        links_before.contains_key("xdp@eth0") && links_before.contains_key("tc-ingress@lxc-client"),
        "pinned links: {links_before:?}"
    );

    // Traffic on both flows every 20 ms until told to stop (bounded: 60 s at most).
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let traffic = {
        let (stop, tally) = (stop.clone(), tally.clone());
        let (tcp_pod, udp_pod) = (tcp_pod.clone(), udp_pod.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                n += 1;
                let t = tcp.exchange(&format!("ping {n}"));
                let u = udp.request(SVC, TIMEOUT);
                let mut tally = tally.lock().unwrap();
                match t {
                    Ok(r) if r.pod == tcp_pod => tally.tcp_ok += 1,
                    Ok(r) => tally.bad.push(format!("tcp {n}: answered by {}", r.pod)),
                    Err(e) => tally.bad.push(format!("tcp {n}: {e}")),
                }
                match u {
                    Ok(r) if r.pod == udp_pod => tally.udp_ok += 1,
                    Ok(r) => tally.bad.push(format!("udp {n}: answered by {}", r.pod)),
                    Err(e) => tally.bad.push(format!("udp {n}: {e}")),
                }
                drop(tally);
                std::thread::sleep(Duration::from_millis(20));
            }
            tcp
        })
    };
    let ok_count = || {
        let t = tally.lock().unwrap();
        (t.tcp_ok, t.udp_ok)
    };
    assert!(wait_for(Duration::from_secs(5), || ok_count().0 >= 5));

    // SIGKILL: the agent cleans nothing up. Flows keep going on the pinned programs.
    agent.process.kill().expect("kill -9");
    let at_kill = ok_count();
    assert!(
        wait_for(Duration::from_secs(10), || {
            let now = ok_count();
            now.0 >= at_kill.0 + 50 && now.1 >= at_kill.1 + 50
        }),
        "traffic while no agent runs: {:?}",
        tally.lock().unwrap()
    );
    // A new connection while no agent runs is load-balanced too.
    let mut fresh = TcpSession::connect(lab.client_ns(), SVC, TIMEOUT)
        .expect("a new connection while the agent is down");
    fresh.exchange("new").expect("new connection answers");
    drop(fresh);

    // Restart: the new agent adopts maps and links, and swaps its programs in.
    agent.restart(&mut lab).expect("restart");
    assert!(
        wait_for(Duration::from_secs(20), || agent
            .log_text()
            .matches("pinned state adopted")
            .count()
            == 2),
        "restarted agent did not come up:\n{}",
        agent.log_text()
    );
    assert!(
        wait_for(Duration::from_secs(10), || {
            let now = agent.links();
            links_before.iter().all(|(name, (link, prog))| {
                now.get(name).is_some_and(|(l, p)| l == link && p != prog)
            })
        }),
        "every pinned link kept its id and runs a new program: before {links_before:?}, now {:?}\n{}",
        agent.links(),
        agent.log_text()
    );
    let at_restart = ok_count();
    assert!(
        wait_for(Duration::from_secs(10), || {
            let now = ok_count();
            now.0 >= at_restart.0 + 25 && now.1 >= at_restart.1 + 25
        }),
        "traffic after the restart: {:?}",
        tally.lock().unwrap()
    );
    stop.store(true, Ordering::SeqCst);
    let mut tcp = traffic.join().expect("traffic thread");
    let tally = tally.lock().unwrap();
    assert!(
        tally.bad.is_empty(),
        "every packet went to the flow's backend and was answered: {} failures, first: {:?}",
        tally.bad.len(),
        &tally.bad[..tally.bad.len().min(5)]
    );
    assert!(tally.tcp_ok >= 60 && tally.udp_ok >= 60, "{tally:?}");

    // The flows' conntrack entries are the same entries (same creation time, same backend).
    let after = agent.conntrack().expect("read conntrack");
    for (k, v) in &ours_before {
        let now = after
            .get(k)
            .unwrap_or_else(|| panic!("conntrack entry {k:?} lost: {after:?}"));
        assert_eq!(
            (now.created_ns, now.backend_id, now.addr_be, now.port_be),
            (v.created_ns, v.backend_id, v.addr_be, v.port_be),
            "entry {k:?} kept"
        );
        assert!(now.last_seen_ns > v.last_seen_ns, "and kept being used");
    }
    assert_eq!(tcp.exchange("still there").expect("tcp after").pod, tcp_pod);
    drop(tcp);

    // cleanup detaches and unpins everything (agent stopped first, as documented).
    agent.process.stop().expect("stop agent");
    let out = std::process::Command::new(workspace_bin("svc-agent").unwrap())
        .arg("cleanup")
        .arg("--bpffs")
        .arg(&agent.bpffs)
        .output()
        .expect("svc-agent cleanup");
    assert!(
        out.status.success(),
        "cleanup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !agent.bpffs.exists(),
        "cleanup removed {}",
        agent.bpffs.display()
    );
    // With the programs gone, the ClusterIP is just an unrouted address again (the kernel
    // frees a detached link's program asynchronously, hence the wait).
    assert!(
        wait_for(Duration::from_secs(5), || {
            TcpSession::connect(lab.client_ns(), SVC, Duration::from_millis(300))
                .and_then(|mut s| s.exchange("x"))
                .is_err()
        }),
        "nothing translates after cleanup"
    );
    let _ = std::fs::remove_dir_all(&manifests);
}
