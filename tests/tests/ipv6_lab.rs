//! End to end: the dual-stack lab (svc-lab's module docs, "IPv6"), and IPv6 that is not
//! to a Service through a node running the agent: pod-to-pod TCP and UDP and outside-to-pod
//! TCP over IPv6 pass TC and XDP untouched (`pass_not_service`, and `pass_other_proto` for
//! the neighbour discovery that resolves each hop), and nothing else is counted meanwhile;
//! `svcctl trace` says so for an IPv6 packet too; the node still translates IPv4.
//! The two-node lab routes IPv6 between the nodes' pods and from the outside host.
use std::{
    io::{BufRead, BufReader, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    sync::Mutex,
    time::Duration,
};

use svc_common::{PROTO_TCP, Verdict};
use svc_lab::{Lab, agent::LabAgent, in_netns, ipv6_twin};

static SERIAL: Mutex<()> = Mutex::new(());

const TIMEOUT: Duration = Duration::from_secs(3);
const WEB: Ipv4Addr = Ipv4Addr::new(10, 96, 9, 10);

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.9.10
  ports:
    - {name: http, protocol: TCP, port: 80, targetPort: 8080}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports:
  - {name: http, protocol: TCP, port: 8080}
endpoints:
  - {addresses: ["10.244.1.11"]}
  - {addresses: ["10.244.1.12"]}
  - {addresses: ["10.244.1.13"]}
"#;

/// One TCP line echo from namespace `ns` to `to`: the reply line.
fn tcp_echo(ns: &str, to: SocketAddr) -> String {
    in_netns(ns, || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&to, TIMEOUT)?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.write_all(b"hello\n")?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        Ok(line.trim_end().to_string())
    })
    .unwrap_or_else(|e| panic!("TCP {to} from {ns}: {e}"))
}

/// One UDP datagram from namespace `ns` to `to`: the reply.
fn udp_echo(ns: &str, to: SocketAddr) -> String {
    in_netns(ns, || -> std::io::Result<String> {
        let any: SocketAddr = if to.is_ipv6() {
            "[::]:0".parse().unwrap()
        } else {
            "0.0.0.0:0".parse().unwrap()
        };
        let s = UdpSocket::bind(any)?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.send_to(b"ping\n", to)?;
        let mut buf = [0u8; 512];
        let (n, _) = s.recv_from(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).trim_end().to_string())
    })
    .unwrap_or_else(|e| panic!("UDP {to} from {ns}: {e}"))
}

/// `<pod> [<client>]:<port>[ <rest>]`: the pod and the client address of an IPv6 reply.
fn answered_by(reply: &str) -> (&str, &str) {
    let (pod, tail) = reply.split_once(' ').expect("pod and client");
    let client = tail
        .strip_prefix('[')
        .and_then(|t| t.split_once("]:"))
        .map(|(a, _)| a)
        .unwrap_or_else(|| panic!("not an IPv6 client: {reply:?}"));
    (pod, client)
}

fn counters(agent: &LabAgent) -> Vec<(Verdict, u64)> {
    Verdict::ALL
        .iter()
        .map(|&v| (v, agent.verdict_count(v)))
        .collect()
}

#[test]
fn ipv6_not_to_a_service_passes_untouched() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut lab = Lab::up().expect("lab");
    let dir = std::env::temp_dir().join(format!("svl-{}-ipv6", lab.id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("web.yaml"), MANIFESTS).unwrap();
    let agent = LabAgent::start_in(&mut lab, 1, &dir, &dir.join("agent.log"), &[]).expect("agent");
    agent
        .wait_backends(WEB, 80, PROTO_TCP, 3, Duration::from_secs(20))
        .expect("web's backends");

    let client = lab.client_ns().to_string();
    let client6 = lab.pod_ip6("client").to_string();
    let ext6 = ipv6_twin(svc_lab::EXT_IP).to_string();
    let before = counters(&agent);

    // Pod to pod through the node (TC on lxc-client and lxc-pN), TCP and UDP.
    let tcp = tcp_echo(&client, lab.pod("p1").echo_addr6().into());
    assert_eq!(answered_by(&tcp), ("p1", client6.as_str()), "{tcp}");
    assert!(tcp.ends_with(" hello"), "{tcp}");
    let udp = udp_echo(&client, lab.pod("p2").echo_addr6().into());
    assert_eq!(answered_by(&udp), ("p2", client6.as_str()), "{udp}");
    // From outside through the node's eth0 (XDP, then TC), no translation of the source.
    let outside = tcp_echo(lab.ext_ns(), lab.pod("p3").echo_addr6().into());
    assert_eq!(answered_by(&outside), ("p3", ext6.as_str()), "{outside}");

    let after = counters(&agent);
    let moved: Vec<(Verdict, u64)> = before
        .iter()
        .zip(&after)
        .filter(|((_, a), (_, b))| a != b)
        .map(|((v, a), (_, b))| (*v, b - a))
        .collect();
    eprintln!("counters moved by the IPv6 exchanges: {moved:?}");
    // At least the three exchanges' packets, each crossing two programs or more.
    let not_service = moved
        .iter()
        .find(|(v, _)| *v == Verdict::PassNotService)
        .map_or(0, |(_, n)| *n);
    assert!(
        not_service >= 12,
        "pass_not_service moved by {not_service}: {moved:?}"
    );
    assert!(
        moved
            .iter()
            .all(|(v, _)| matches!(v, Verdict::PassNotService | Verdict::PassOtherProto)),
        "IPv6 traffic took another verdict: {moved:?}"
    );

    // svcctl trace predicts the same for an IPv6 packet (on a copy of the maps).
    let out = std::process::Command::new(svc_lab::agent::workspace_bin("svcctl").unwrap())
        .arg("--bpffs")
        .arg(&agent.bpffs)
        .args(["trace", "--from", &format!("[{client6}]"), "--to"])
        .arg(format!("[{}]:8080", lab.pod_ip6("p1")))
        .args(["--via", "pod", "-o", "json"])
        .output()
        .expect("run svcctl trace");
    assert!(
        out.status.success(),
        "svcctl trace: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).expect("trace JSON");
    assert_eq!(t["verdict"], "pass_not_service", "{t}");
    assert_eq!(t["action"], "passed", "{t}");
    assert_eq!(t["input"], t["output"], "{t}");

    // IPv4 is still translated.
    let v4 = tcp_echo(&client, SocketAddrV4::new(WEB, 80).into());
    assert!(
        ["p1 ", "p2 ", "p3 "].iter().any(|p| v4.starts_with(p)),
        "{v4}"
    );
    assert!(agent.verdict_count(Verdict::DnatNew) > 0);
    drop(agent);
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_two_node_lab_routes_ipv6() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::up_two_nodes().expect("lab");
    // ca (node1) to b1 (node2): across the nodes' eth0 and the L2 segment.
    let ca6 = lab.pod_ip6("ca").to_string();
    let reply = tcp_echo(lab.pod_ns("ca"), lab.pod("b1").echo_addr6().into());
    assert_eq!(answered_by(&reply), ("b1", ca6.as_str()), "{reply}");
    let reply = udp_echo(lab.pod_ns("cb"), lab.pod("a2").echo_addr6().into());
    assert_eq!(
        answered_by(&reply),
        ("a2", lab.pod_ip6("cb").to_string().as_str()),
        "{reply}"
    );
    // The outside host, once it routes node2's IPv6 pod CIDR there.
    lab.ext_route(svc_lab::NODE2_POD_CIDR6, 2)
        .expect("ext route");
    let reply = tcp_echo(lab.ext_ns(), lab.pod("b2").echo_addr6().into());
    assert_eq!(
        answered_by(&reply),
        ("b2", ipv6_twin(svc_lab::EXT_IP).to_string().as_str()),
        "{reply}"
    );
}
