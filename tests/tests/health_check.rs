//! End to end on two nodes: the healthCheckNodePort of a LoadBalancer Service with
//! externalTrafficPolicy Local answers, from outside, 200 with the local endpoint count on
//! the node that has the endpoint and 503 on the other; moving the endpoint flips them. Both
//! on the nodes' IPv4 and IPv6 addresses (the lab is dual-stack): one dual-stack listener
//! per port, as kube-proxy's.
use std::{
    io::{self, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::PathBuf,
    sync::Mutex,
    time::{Duration, Instant},
};

use svc_common::PROTO_TCP;
use svc_lab::{Lab, agent::LabAgent, in_netns};

static SERIAL: Mutex<()> = Mutex::new(());
const HC_PORT: u16 = 32000;
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 2, 10);

/// The Service, and its EndpointSlice with one ready endpoint `pod` (address, node).
fn manifests(pod: (&str, &str)) -> String {
    let (ip, node) = pod;
    format!(
        "\
apiVersion: v1
kind: Service
metadata: {{name: hc-web, namespace: default}}
spec:
  type: LoadBalancer
  clusterIP: 10.96.2.10
  externalTrafficPolicy: Local
  healthCheckNodePort: {HC_PORT}
  ports:
    - {{name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: 30090}}
status:
  loadBalancer:
    ingress:
      - ip: 203.0.113.20
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: hc-web-1
  namespace: default
  labels: {{kubernetes.io/service-name: hc-web}}
addressType: IPv4
ports:
  - {{name: http, protocol: TCP, port: 8080}}
endpoints:
  - {{addresses: [\"{ip}\"], conditions: {{ready: true}}, nodeName: {node}}}
"
    )
}

const A1: (&str, &str) = ("10.244.1.11", "node1");
const B1: (&str, &str) = ("10.244.2.11", "node2");

struct Env {
    agents: Vec<LabAgent>,
    manifests: PathBuf,
    lab: Lab,
}

impl Env {
    fn up() -> Env {
        let lab = Lab::up_two_nodes().expect("two-node lab");
        let manifests = std::env::temp_dir().join(format!("svl-{}-hc-manifests", lab.id()));
        std::fs::create_dir_all(&manifests).unwrap();
        std::fs::write(manifests.join("hc.yaml"), manifests_text(A1)).unwrap();
        let mut env = Env {
            agents: Vec::new(),
            manifests,
            lab,
        };
        for n in [1, 2] {
            let log = std::env::temp_dir().join(format!("svl-{}-hc-agent{n}.log", env.lab.id()));
            let name = env.lab.node(n).name.clone();
            let agent = LabAgent::start_in(
                &mut env.lab,
                n,
                &env.manifests,
                &log,
                &["--node-name", &name],
            )
            .expect("start agent");
            env.agents.push(agent);
        }
        for agent in &env.agents {
            agent
                .wait_backends(VIP, 80, PROTO_TCP, 1, Duration::from_secs(20))
                .expect("agent synced");
        }
        env
    }

    /// Replaces the manifests atomically (written next to the directory, renamed in).
    fn set_endpoint(&self, pod: (&str, &str)) {
        let tmp = self.manifests.with_extension("tmp.yaml");
        std::fs::write(&tmp, manifests_text(pod)).unwrap();
        std::fs::rename(&tmp, self.manifests.join("hc.yaml")).unwrap();
    }
}

fn manifests_text(pod: (&str, &str)) -> String {
    // A comment that changes the file size, so the agent's change detection (names,
    // sizes, mtimes) cannot miss a rewrite within the mtime granularity.
    format!("# endpoint on {}\n{}", pod.1, manifests(pod))
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for a in &self.agents {
                eprintln!("--- agent on node{} ---\n{}", a.node, a.log_text());
            }
        }
        for a in &self.agents {
            let _ = a.process.stop();
            let _ = std::fs::remove_file(&a.log);
        }
        let _ = std::fs::remove_dir_all(&self.manifests);
    }
}

/// What a health check answered.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: serde_json::Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `GET /` to `to` from namespace `ns` with a plain TcpStream; reads until the server
/// closes.
fn http_get(ns: &str, to: SocketAddr) -> io::Result<Answer> {
    let raw = in_netns(ns, || -> io::Result<String> {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.set_write_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })?;
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {raw:?}"));
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let body = serde_json::from_str(body).map_err(|e| bad(&format!("body is not JSON ({e})")))?;
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// The status line of `GET path` to `to` from namespace `ns`.
fn status_line(ns: &str, to: SocketAddr, path: &str) -> io::Result<String> {
    in_netns(ns, || -> io::Result<String> {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out.lines().next().unwrap_or_default().to_string())
    })
}

/// Checks one answer against the expected status and local endpoint count.
fn expect(answer: &io::Result<Answer>, status: u16, local: u64) -> Result<(), String> {
    let a = answer
        .as_ref()
        .map_err(|e| format!("request failed: {e}"))?;
    let want_body = serde_json::json!({
        "service": {"namespace": "default", "name": "hc-web"},
        "localEndpoints": local,
        "serviceProxyHealthy": true,
    });
    let weight = local.to_string();
    if a.status != status
        || a.body != want_body
        || a.header("Content-Type") != Some("application/json")
        || a.header("X-Content-Type-Options") != Some("nosniff")
        || a.header("X-Load-Balancing-Endpoint-Weight") != Some(weight.as_str())
    {
        return Err(format!(
            "expected {status} with localEndpoints {local}, got {a:?}"
        ));
    }
    Ok(())
}

/// Polls both nodes, on their IPv4 and their IPv6 address, until node1 and node2 give the
/// expected (status, localEndpoints), or panics after `timeout` with the last answers.
fn wait_answers(env: &Env, want: [(u16, u64); 2], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let results: Vec<Result<(), String>> = [1, 2]
            .iter()
            .zip(want)
            .flat_map(|(&n, (status, local))| {
                let node = env.lab.node(n);
                [
                    SocketAddr::from((node.ip, HC_PORT)),
                    SocketAddr::from((node.ip6, HC_PORT)),
                ]
                .map(|to| {
                    expect(&http_get(env.lab.ext_ns(), to), status, local)
                        .map_err(|e| format!("node{n} ({to}): {e}"))
                })
            })
            .collect();
        if results.iter().all(Result::is_ok) {
            return;
        }
        if Instant::now() >= deadline {
            let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
            panic!(
                "health checks not as expected within {timeout:?}:\n{}",
                errors.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn health_check_node_port_follows_local_endpoints() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up();
    assert_eq!(env.lab.node_ip(1), Ipv4Addr::new(192, 0, 2, 1));
    assert_eq!(env.lab.node_ip(2), Ipv4Addr::new(192, 0, 2, 2));

    // a1 runs on node1: node1 healthy with 1 local endpoint, node2 not.
    wait_answers(&env, [(200, 1), (503, 0)], Duration::from_secs(10));

    // The endpoint moves to node2 (b1): the answers flip.
    env.set_endpoint(B1);
    wait_answers(&env, [(503, 0), (200, 1)], Duration::from_secs(10));

    // And back: the listeners stayed up and follow the counts in place.
    env.set_endpoint(A1);
    wait_answers(&env, [(200, 1), (503, 0)], Duration::from_secs(10));
    // The agent's own /healthz (its default 0.0.0.0:10256) answers over IPv6 too, as
    // kube-proxy's Go listener does.
    for n in [1, 2] {
        let to = SocketAddr::from((env.lab.node(n).ip6, 10256));
        let head = status_line(env.lab.ext_ns(), to, "/healthz");
        assert!(
            head.as_deref().is_ok_and(|h| h.contains(" 200 ")),
            "node{n} {to}/healthz: {head:?}"
        );
    }
    for a in &env.agents {
        assert!(a.process.is_running(), "agent on node{} exited", a.node);
        let log = a.log_text();
        assert_eq!(
            log.matches("serving health check").count(),
            1,
            "node{}: the listener was started more than once:\n{log}",
            a.node
        );
    }
}
