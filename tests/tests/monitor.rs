//! End to end: `svcctl monitor -o json` on a lab node shows what the datapath decides, from
//! real packets: a drop (a client pod to an internalTrafficPolicy Local Service whose only
//! endpoint is on another node: drop_no_local_backend) and the translations of a
//! connection to the echo ClusterIP (DNAT to a pod, the reply translated back), each with
//! its Service, both tuples, the backend and the node; and the programs stop reporting
//! when it exits (SVC_MONITOR off). Then as lines, filtered (--verdict drop, -n, SERVICE)
//! and stopped by --count. svcctl runs in the node's network namespace with the
//! root mount namespace (the bpffs pins), as the agent does.
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use aya::maps::{Array, Map, MapData};
use serde_json::Value;
use svc_common::{MonitorControl, PROTO_TCP, map_names};
use svc_lab::{
    CLIENT_IP, Lab, TcpSession,
    agent::{LabAgent, example_manifests, workspace_bin},
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const LOCAL_ONLY_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);

/// internalTrafficPolicy Local, its one endpoint (the lab's p2 address) on node2: from
/// node1's pods, DROP.
const LOCAL_ONLY: &str = "\
apiVersion: v1
kind: Service
metadata: {name: local-only, namespace: default}
spec:
  clusterIP: 10.96.0.20
  internalTrafficPolicy: Local
  ports:
    - {name: web, protocol: TCP, port: 80, targetPort: 8080}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: local-only-1
  namespace: default
  labels: {kubernetes.io/service-name: local-only}
addressType: IPv4
ports:
  - {name: web, protocol: TCP, port: 8080}
endpoints:
  - {addresses: [\"10.244.1.12\"], nodeName: node2}
";

struct Env {
    agent: LabAgent,
    manifests: PathBuf,
    lab: Lab,
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- svc-agent log ---\n{}", self.agent.log_text());
        }
        let _ = self.agent.process.stop();
        let _ = std::fs::remove_dir_all(&self.manifests);
        let _ = std::fs::remove_file(&self.agent.log);
    }
}

fn control(bpffs: &std::path::Path) -> MonitorControl {
    let data = MapData::from_pin(bpffs.join(map_names::SVC_MONITOR)).expect("SVC_MONITOR pin");
    let map: Array<MapData, MonitorControl> = Map::from_map_data(data).unwrap().try_into().unwrap();
    map.get(&0, 0).unwrap()
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn svcctl_monitor_shows_a_drop_and_a_translation() {
    let mut lab = Lab::up().expect("lab up");
    let manifests = example_manifests(&lab, &["echo-clusterip.yaml"]).unwrap();
    std::fs::write(manifests.join("local-only.yaml"), LOCAL_ONLY).unwrap();
    let log = std::env::temp_dir().join(format!("svl-{}-agent.log", lab.id()));
    let agent = LabAgent::start_in(&mut lab, 1, &manifests, &log, &["--node-name", "node1"])
        .expect("start agent");
    let mut env = Env {
        agent,
        manifests,
        lab,
    };
    env.agent
        .wait_backends(VIP, 80, PROTO_TCP, 3, Duration::from_secs(20))
        .unwrap();
    env.agent
        .wait_backends(LOCAL_ONLY_VIP, 80, PROTO_TCP, 1, Duration::from_secs(20))
        .unwrap();
    let bpffs = env.agent.bpffs.clone();

    let out = std::env::temp_dir().join(format!("svl-{}-monitor.out", env.lab.id()));
    let mut cmd = Command::new(workspace_bin("svcctl").unwrap());
    cmd.arg("--bpffs")
        .arg(&bpffs)
        .args(["monitor", "-o", "json", "--duration", "10"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::inherit());
    let monitor = env.lab.spawn_in(1, cmd).expect("svcctl monitor");
    assert!(
        wait_until(Duration::from_secs(5), || control(&bpffs).until_ns != 0),
        "svcctl monitor did not switch SVC_MONITOR on"
    );
    assert_eq!(control(&bpffs).owner_pid, monitor.pid());
    assert_eq!(control(&bpffs).node_name(), "node1");

    // A second monitor is refused while the first runs.
    let second = Command::new(workspace_bin("svcctl").unwrap())
        .arg("--bpffs")
        .arg(&bpffs)
        .args(["monitor", "--duration", "1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("another svcctl monitor"), "{err}");

    // The drop: the SYN never gets an answer.
    let dropped = TcpSession::connect(
        env.lab.client_ns(),
        SocketAddrV4::new(LOCAL_ONLY_VIP, 80),
        Duration::from_millis(500),
    );
    assert!(dropped.is_err(), "a connection to the Local-only Service");
    // The translation.
    let mut tcp = TcpSession::connect(
        env.lab.client_ns(),
        SocketAddrV4::new(VIP, 80),
        Duration::from_secs(3),
    )
    .expect("connect to the echo ClusterIP");
    let pod = tcp.exchange("hi").unwrap().pod;
    let pod_addr = format!("{}:8080", env.lab.pod_ip(&pod));
    let client_port = tcp.local_addr().unwrap().port();
    drop(tcp);

    let status = monitor
        .wait_timeout(Duration::from_secs(20))
        .unwrap()
        .expect("svcctl monitor stops after --duration");
    assert!(status.success(), "svcctl monitor: {status}");
    assert_eq!(control(&bpffs).until_ns, 0, "SVC_MONITOR left on");
    assert_eq!(control(&bpffs).owner_pid, 0);

    let text = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let show = || text.clone();
    for e in &events {
        assert_eq!(e["node"], "node1", "{e}");
    }
    let drop = events
        .iter()
        .find(|e| e["verdict"] == "drop_no_local_backend")
        .unwrap_or_else(|| panic!("no drop event in:\n{}", show()));
    assert_eq!(drop["kind"], "drop");
    assert_eq!(drop["service"]["namespace"], "default");
    assert_eq!(drop["service"]["name"], "local-only");
    assert_eq!(drop["service"]["port"], "web");
    assert_eq!(drop["protocol"], "TCP");
    assert_eq!(drop["hook"], "tc");
    assert_eq!(drop["before"]["dst"], "10.96.0.20:80");
    assert!(
        drop["before"]["src"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{CLIENT_IP}:"))
    );
    assert_eq!(drop["after"], drop["before"]);

    let client = format!("{CLIENT_IP}:{client_port}");
    let dnat = events
        .iter()
        .find(|e| e["verdict"] == "dnat_new" && e["before"]["src"] == client.as_str())
        .unwrap_or_else(|| panic!("no dnat_new event from {client} in:\n{}", show()));
    assert_eq!(dnat["kind"], "translate");
    assert_eq!(dnat["service"]["name"], "echo");
    assert_eq!(dnat["service"]["port"], "http");
    assert_eq!(dnat["before"]["dst"], "10.96.0.10:80");
    assert_eq!(dnat["after"]["src"], client.as_str());
    assert_eq!(dnat["after"]["dst"], pod_addr.as_str());
    assert_eq!(dnat["backend"]["addr"], pod_addr.as_str());
    let rnat = events
        .iter()
        .find(|e| e["verdict"] == "rev_nat" && e["before"]["dst"] == client.as_str())
        .unwrap_or_else(|| panic!("no rev_nat event to {client} in:\n{}", show()));
    assert_eq!(rnat["before"]["src"], pod_addr.as_str());
    assert_eq!(rnat["after"]["src"], "10.96.0.10:80");
    assert_eq!(rnat["service"]["name"], "echo");

    // Lines, filtered: only drops of default/local-only, stopped by --count.
    let out = std::env::temp_dir().join(format!("svl-{}-monitor.txt", env.lab.id()));
    let mut cmd = Command::new(workspace_bin("svcctl").unwrap());
    cmd.arg("--bpffs")
        .arg(&bpffs)
        .args([
            "monitor",
            "--verdict",
            "drop",
            "-n",
            "default",
            "local-only",
            "--count",
            "1",
            "--duration",
            "15",
        ])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null());
    let monitor = env.lab.spawn_in(1, cmd).expect("svcctl monitor");
    assert!(
        wait_until(Duration::from_secs(5), || control(&bpffs).until_ns != 0),
        "svcctl monitor did not switch SVC_MONITOR on"
    );
    // A translation first (filtered out), then the drop.
    let mut tcp = TcpSession::connect(
        env.lab.client_ns(),
        SocketAddrV4::new(VIP, 80),
        Duration::from_secs(3),
    )
    .expect("connect to the echo ClusterIP");
    tcp.exchange("hi").unwrap();
    std::mem::drop(tcp);
    let _ = TcpSession::connect(
        env.lab.client_ns(),
        SocketAddrV4::new(LOCAL_ONLY_VIP, 80),
        Duration::from_millis(500),
    );
    let status = monitor
        .wait_timeout(Duration::from_secs(20))
        .unwrap()
        .expect("svcctl monitor stops after --count");
    assert!(status.success(), "svcctl monitor: {status}");
    let text = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let words: Vec<&str> = lines[0].split(' ').collect();
    // 12:00:01.123 node1 DROP no_local_backend default/local-only:web TCP SRC -> DST
    assert_eq!(
        words[1..6],
        [
            "node1",
            "DROP",
            "no_local_backend",
            "default/local-only:web",
            "TCP"
        ],
        "{text}"
    );
    assert!(words[6].starts_with(&format!("{CLIENT_IP}:")), "{text}");
    assert_eq!(words[7..], ["->", "10.96.0.20:80"], "{text}");
    eprintln!("svcctl monitor printed: {text}");
    assert_eq!(control(&bpffs).until_ns, 0, "SVC_MONITOR left on");
}
