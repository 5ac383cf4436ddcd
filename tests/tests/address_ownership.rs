//! End to end (issue 11): an address:port that is served stays with the Service serving
//! it. echo serves 10.96.0.10:80 from its three pods; then `aaa/evil` lists that address
//! as an externalIP and `default/clash` (no endpoints) claims it as its ClusterIP. Both
//! sort before echo by namespace/name, which used to decide: evil took the address, or
//! clash made it refuse. Now echo keeps answering (real TCP connections from a pod), the
//! losers are named in `svcctl dump -o json`, in the agent's log and in the metrics, and a
//! restarted agent (which learns who serves what from the pinned maps) still gives the
//! address to echo. And `--external-ip-cidrs`: an externalIP outside is not served and is
//! reported, one inside answers.
use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    process::{Command, Stdio},
    sync::Mutex,
    time::Duration,
};

use serde_json::Value;
use svc_common::{PROTO_TCP, PROTO_UDP};
use svc_lab::{
    BACKENDS, Lab,
    agent::{LabAgent, example_manifests, wait_for, workspace_bin},
    http_get, tcp_request,
};

static SERIAL: Mutex<()> = Mutex::new(());

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const EVIL_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 99);
const SVC: SocketAddrV4 = SocketAddrV4::new(VIP, 80);
const TIMEOUT: Duration = Duration::from_secs(3);
const METRICS: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 10249);

/// Sorts before default/echo; its own ClusterIP plus echo's ClusterIP as an externalIP.
const EVIL: &str = "\
apiVersion: v1
kind: Service
metadata: {name: evil, namespace: aaa}
spec:
  clusterIP: 10.96.0.99
  externalIPs: [10.96.0.10]
  ports: [{name: http, protocol: TCP, port: 80, targetPort: 8080}]
";

/// Sorts before echo too, echo's ClusterIP:port, and no endpoints (it would refuse).
const CLASH: &str = "\
apiVersion: v1
kind: Service
metadata: {name: clash, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, protocol: TCP, port: 80, targetPort: 8080}]
";

struct Env {
    agent: LabAgent,
    manifests: PathBuf,
    // Dropped last: tears the namespaces down after the agent is stopped.
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

impl Env {
    /// Writes a manifest file the way an editor would not leave it half written.
    fn write(&self, file: &str, text: &str) {
        let tmp = self.manifests.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.manifests.join(file)).unwrap();
    }

    fn dump(&self) -> Value {
        let out = Command::new(workspace_bin("svcctl").unwrap())
            .arg("--bpffs")
            .arg(&self.agent.bpffs)
            .args(["dump", "-o", "json"])
            .stdin(Stdio::null())
            .output()
            .expect("run svcctl");
        assert!(
            out.status.success(),
            "svcctl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("svcctl dump -o json is JSON")
    }

    /// The pods that answered `n` new TCP connections from the client pod to echo's
    /// address; every connection must be answered.
    fn echo_answers(&self, n: usize, when: &str) -> BTreeSet<String> {
        (0..n)
            .map(|i| {
                tcp_request(self.lab.client_ns(), SVC, &format!("{when} {i}"), TIMEOUT)
                    .unwrap_or_else(|e| panic!("{when}: connection {i} to {SVC}: {e}"))
                    .pod
            })
            .collect()
    }
}

/// The owner of `vip:port/TCP` in a dump: (namespace/name, kind).
fn owner(dump: &Value, vip: Ipv4Addr, port: u16) -> Option<(String, String)> {
    let s = dump["services"]
        .as_array()?
        .iter()
        .find(|s| s["vip"] == vip.to_string() && s["port"] == port && s["protocol"] == "TCP")?;
    let svc = &s["service"];
    Some((
        format!("{}/{}", svc["namespace"].as_str()?, svc["name"].as_str()?),
        s["kind"].as_str()?.to_string(),
    ))
}

/// The frontends, unserved Services and problems of a dump, one per line (for messages).
fn summary(dump: &Value) -> String {
    let str_of = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    let mut out = Vec::new();
    for s in dump["services"].as_array().into_iter().flatten() {
        out.push(format!(
            "{}:{}/{} {}/{} {} ({} backends)",
            str_of(&s["vip"]),
            s["port"],
            str_of(&s["protocol"]),
            str_of(&s["service"]["namespace"]),
            str_of(&s["service"]["name"]),
            str_of(&s["kind"]),
            s["count"]
        ));
    }
    for u in dump["unserved"].as_array().into_iter().flatten() {
        out.push(format!("unserved {u}"));
    }
    for p in dump["problems"].as_array().into_iter().flatten() {
        out.push(format!("problem {}", str_of(p)));
    }
    out.join("\n")
}

/// What a dump must say once the clash is decided: echo owns the address, clash is
/// unserved with `address-taken`, and the problems name both sides of both conflicts.
fn check_decided(dump: &Value) -> Result<(), String> {
    if owner(dump, VIP, 80) != Some(("default/echo".into(), "clusterip".into())) {
        return Err("10.96.0.10:80/TCP is not echo's ClusterIP".into());
    }
    if owner(dump, EVIL_VIP, 80) != Some(("aaa/evil".into(), "clusterip".into())) {
        return Err("evil lost its own ClusterIP".into());
    }
    let unserved = dump["unserved"].as_array().ok_or("no unserved list")?;
    if !unserved.iter().any(|u| {
        u["namespace"] == "default" && u["name"] == "clash" && u["reason"] == "address-taken"
    }) {
        return Err("clash is not unserved as address-taken".into());
    }
    let problems: Vec<&str> = dump["problems"]
        .as_array()
        .ok_or("no problems list")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for want in [
        "Service aaa/evil: port \"http\" (externalIP 10.96.0.10:80/TCP) skipped: Service default/echo (ClusterIP) keeps it: ClusterIP outranks externalIP",
        "Service default/clash: port \"http\" (ClusterIP 10.96.0.10:80/TCP) skipped: Service default/echo (ClusterIP) keeps it: it serves it already",
    ] {
        if !problems.contains(&want) {
            return Err(format!("problem {want:?} missing"));
        }
    }
    Ok(())
}

fn env_log_count(env: &Env, what: &str) -> usize {
    env.agent.log_text().matches(what).count()
}

fn wait_decided(env: &Env, what: &str) {
    let mut last = (Ok(()), Value::Null);
    let decided = wait_for(Duration::from_secs(15), || {
        let dump = env.dump();
        last = (check_decided(&dump), dump);
        last.0.is_ok()
    });
    assert!(
        decided,
        "{what}: {}; svcctl dump says:\n{}",
        last.0.unwrap_err(),
        summary(&last.1)
    );
}

#[test]
fn a_served_address_stays_with_its_service_across_new_claims_and_restarts() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::up().expect("lab up");
    let manifests = example_manifests(&lab, &["echo-clusterip.yaml"]).unwrap();
    let log = std::env::temp_dir().join(format!("svl-{}-agent.log", lab.id()));
    let agent = LabAgent::start(&mut lab, &manifests, &log).expect("start agent");
    let mut env = Env {
        agent,
        manifests,
        lab,
    };
    env.agent
        .wait_backends(VIP, 80, PROTO_TCP, 3, Duration::from_secs(20))
        .unwrap();
    let pods: BTreeSet<String> = BACKENDS.iter().map(|p| p.to_string()).collect();
    assert_eq!(env.echo_answers(30, "before"), pods);

    // Both challengers at once, in files that sort before echo's.
    env.write("00-evil.yaml", EVIL);
    env.write("00-clash.yaml", CLASH);
    wait_decided(&env, "after the challengers arrived");
    assert_eq!(env.agent.backend_count(VIP, 80, PROTO_TCP), Some(3));
    assert_eq!(env.agent.backend_count(VIP, 80, PROTO_UDP), Some(3));
    assert_eq!(
        env.agent.backend_count(EVIL_VIP, 80, PROTO_TCP),
        Some(0),
        "evil keeps its own address (no endpoints: it rejects)"
    );
    assert_eq!(
        env.echo_answers(30, "challenged"),
        pods,
        "echo's pods keep answering"
    );

    // The log names both Services of each conflict.
    let text = env.agent.log_text();
    for want in [
        "address conflict",
        "service=aaa/evil owner=default/echo",
        "service=default/clash owner=default/echo",
    ] {
        assert!(text.contains(want), "{want:?} not in the log:\n{text}");
    }
    let (code, metrics) =
        http_get(env.lab.node_ns(), METRICS, "/metrics", TIMEOUT).expect("metrics");
    assert_eq!(code, 200);
    assert!(
        metrics
            .lines()
            .any(|l| l == "svc_agent_address_conflicts 2"),
        "svc_agent_address_conflicts 2 missing:\n{metrics}"
    );

    // A restart: the new agent has no memory but the pinned maps. Without the incumbents
    // read from them, clash (first by name) would take the address and echo would refuse.
    let before = env_log_count(&env, "address conflict");
    env.agent.process.kill().expect("kill the agent");
    let Env { agent, lab, .. } = &mut env;
    agent.restart(lab).expect("restart");
    let restarted = wait_for(Duration::from_secs(20), || {
        env_log_count(&env, "address conflict") >= before + 2
    });
    assert!(
        restarted,
        "the restarted agent computed the conflicts again"
    );
    wait_decided(&env, "after the restart");
    assert_eq!(env.echo_answers(30, "restarted"), pods);
}

/// Two externalIPs, one inside `--external-ip-cidrs`, one outside.
const EXT: &str = "\
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: default}
spec:
  clusterIP: 10.96.0.30
  externalIPs: [198.51.100.10, 203.0.113.10]
  ports: [{name: http, protocol: TCP, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ext-1
  namespace: default
  labels: {kubernetes.io/service-name: ext}
addressType: IPv4
ports: [{name: http, protocol: TCP, port: 8080}]
endpoints:
  - addresses: [10.244.1.11]
    conditions: {ready: true}
";

#[test]
fn external_ips_outside_the_allowed_cidrs_are_not_served() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::up().expect("lab up");
    let manifests = example_manifests(&lab, &[]).unwrap();
    std::fs::write(manifests.join("ext.yaml"), EXT).unwrap();
    let log = std::env::temp_dir().join(format!("svl-{}-agent.log", lab.id()));
    let agent = LabAgent::start_in(
        &mut lab,
        1,
        &manifests,
        &log,
        &["--external-ip-cidrs", "198.51.100.0/24"],
    )
    .expect("start agent");
    let env = Env {
        agent,
        manifests,
        lab,
    };
    let allowed = Ipv4Addr::new(198, 51, 100, 10);
    env.agent
        .wait_backends(allowed, 80, PROTO_TCP, 1, Duration::from_secs(20))
        .unwrap();
    let reply = tcp_request(
        env.lab.client_ns(),
        SocketAddrV4::new(allowed, 80),
        "allowed",
        TIMEOUT,
    )
    .expect("the allowed externalIP answers");
    assert_eq!(reply.pod, "p1");
    let denied = Ipv4Addr::new(203, 0, 113, 10);
    assert_eq!(env.agent.backend_count(denied, 80, PROTO_TCP), None);
    let want = "Service default/ext: externalIP 203.0.113.10 skipped: not allowed on this node (--external-ip-cidrs 198.51.100.0/24)";
    let mut dump = Value::Null;
    let listed = wait_for(Duration::from_secs(10), || {
        dump = env.dump();
        dump["problems"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p == want))
    });
    assert!(
        listed,
        "{want:?} not in svcctl's problems:\n{}",
        summary(&dump)
    );
    assert!(owner(&dump, denied, 80).is_none());
    assert_eq!(
        owner(&dump, allowed, 80),
        Some(("default/ext".into(), "externalip".into()))
    );
}
