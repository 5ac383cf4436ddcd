//! LoadBalancer pools in manifest mode (issue 15): the same `LoadBalancerIPPool` kind read
//! from the directory; with no API to write status to, the agent's assignment goes into
//! its model, the datapath serves it and `svcctl lb` shows it. A pool that turns malformed
//! keeps its last good version; a pool that is removed leaves the Service its address
//! (reported); a full pool is reported with the Service that got nothing.
use std::{
    ffi::OsStr,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4},
    path::PathBuf,
    sync::Mutex,
    time::Duration,
};

use svc_common::PROTO_TCP;
use svc_lab::{
    Lab,
    agent::{LabAgent, wait_for, workspace_bin},
    echo_tcp, http_get,
    netns::exec_in,
    tcp_request,
};

static SERIAL: Mutex<()> = Mutex::new(());
const TIMEOUT: Duration = Duration::from_secs(2);
const POOL_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

struct Cleanup(PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const POOL: &str = "
apiVersion: svc-ebpf.dev/v1alpha1
kind: LoadBalancerIPPool
metadata: {name: edge}
spec:
  blocks: [{start: 203.0.113.1, stop: 203.0.113.1}]
";

/// A dual-stack pool and Service: one address of each family, in ipFamilies order.
fn dual_stack(pods: [Ipv6Addr; 2]) -> String {
    format!(
        "apiVersion: svc-ebpf.dev/v1alpha1\nkind: LoadBalancerIPPool\nmetadata: {{name: dual}}\n\
         spec: {{blocks: [{{cidr: '198.51.100.0/30'}}, {{cidr: 'fd00:198:51:100::/126'}}], serviceSelector: {{matchLabels: {{pool: dual}}}}}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: dual, namespace: default, labels: {{pool: dual}}}}\n\
         spec: {{type: LoadBalancer, ipFamilyPolicy: RequireDualStack, ipFamilies: [IPv6, IPv4], clusterIP: 'fd00:10:96::40', clusterIPs: ['fd00:10:96::40', 10.96.40.20],\n\
         ports: [{{port: 80, targetPort: 8080, nodePort: 30092}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: dual-6, namespace: default, labels: {{kubernetes.io/service-name: dual}}}}\n\
         addressType: IPv6\nports: [{{port: 8080}}]\n\
         endpoints: [{{addresses: ['{}'], conditions: {{ready: true}}}}, {{addresses: ['{}'], conditions: {{ready: true}}}}]\n",
        pods[0], pods[1]
    )
}

fn services(pods: [Ipv4Addr; 2]) -> String {
    let svc = |name: &str, vip: &str, np: u16| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
             spec: {{type: LoadBalancer, clusterIP: {vip}, ports: [{{port: 80, targetPort: 8080, nodePort: {np}}}]}}\n---\n"
        )
    };
    format!(
        "{}{}apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: web-1, namespace: default, labels: {{kubernetes.io/service-name: web}}}}\n\
         addressType: IPv4\nports: [{{port: 8080}}]\n\
         endpoints: [{{addresses: ['{}'], conditions: {{ready: true}}}}, {{addresses: ['{}'], conditions: {{ready: true}}}}]\n",
        svc("web", "10.96.40.10", 30090),
        svc("zz-late", "10.96.40.11", 30091),
        pods[0],
        pods[1]
    )
}

fn svcctl_lb(lab: &Lab) -> String {
    let bin = workspace_bin("svcctl").unwrap();
    let out = exec_in(
        lab.node_ns(),
        &[
            bin.as_os_str(),
            OsStr::new("lb"),
            OsStr::new("--agent"),
            OsStr::new("127.0.0.1:10249"),
        ],
    )
    .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn manifest_pools_give_addresses_the_datapath_serves() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::up().expect("lab");
    let dir = std::env::temp_dir().join(format!("svl-{}-lbmanifests", lab.id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = Cleanup(dir.clone());
    let manifests = dir.join("m");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(manifests.join("pool.yaml"), POOL).unwrap();
    std::fs::write(
        manifests.join("services.yaml"),
        services([lab.pod_ip("p1"), lab.pod_ip("p2")]),
    )
    .unwrap();
    std::fs::write(
        manifests.join("dual.yaml"),
        dual_stack([lab.pod_ip6("p1"), lab.pod_ip6("p2")]),
    )
    .unwrap();
    // Manifest mode has no announcer: ext reaches the pools through the node.
    lab.ext_route("203.0.113.0/24", 1).unwrap();
    lab.ext_route("fd00:198:51:100::/64", 1).unwrap();
    let agent = LabAgent::start(&mut lab, &manifests, &dir.join("agent.log")).expect("agent");

    // web (first by name) gets the pool's only address; zz-late gets nothing, reported.
    if let Err(e) = agent.wait_backends(POOL_IP, 80, PROTO_TCP, 2, Duration::from_secs(20)) {
        panic!(
            "{POOL_IP}:80 never got web's backends: {e}\n{}",
            agent.log_text()
        );
    }
    let to = SocketAddrV4::new(POOL_IP, 80);
    let r = tcp_request(lab.ext_ns(), to, "hi", TIMEOUT).expect("the pool address answers");
    assert!(["p1", "p2"].contains(&r.pod.as_str()), "{r:?}");
    let lb = svcctl_lb(&lab);
    println!("{lb}");
    assert!(lb.contains("manifest mode"), "{lb}");
    assert!(
        lb.contains("default/web") && lb.contains("203.0.113.1"),
        "{lb}"
    );
    assert!(
        lb.contains("default/zz-late gets no IPv4 address"),
        "the full pool is reported with the Service that got nothing:\n{lb}"
    );
    assert!(lb.contains("L2 ANNOUNCEMENTS: off"), "{lb}");
    // IPv6: the dual-stack Service got one address of each family from its pool (the first
    // of the IPv4 /30 is .1: network and broadcast left out); the IPv6 one answers.
    assert!(
        lb.contains("fd00:198:51:100::1,198.51.100.1"),
        "dual: IPv6 first (ipFamilies order):\n{lb}"
    );
    let v6: SocketAddr = "[fd00:198:51:100::1]:80".parse().unwrap();
    let (pod, _) = echo_tcp(lab.ext_ns(), v6, TIMEOUT).expect("the IPv6 pool address answers");
    assert!(["p1", "p2"].contains(&pod.as_str()), "{pod}");
    // The pools' use, as metrics.
    let (code, metrics) = http_get(
        lab.node_ns(),
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, 10249),
        "/metrics",
        TIMEOUT,
    )
    .expect("metrics");
    assert_eq!(code, 200);
    for line in [
        "svc_lb_pool_addresses{pool=\"edge\",family=\"IPv4\"} 1",
        "svc_lb_pool_used_addresses{pool=\"edge\"} 1",
        "svc_lb_pool_addresses{pool=\"dual\",family=\"IPv6\"} 3",
        "svc_lb_pool_used_addresses{pool=\"dual\"} 2",
        "svc_lb_ipam_writer 0",
    ] {
        assert!(
            metrics.contains(line),
            "no {line:?} in /metrics:\n{metrics}"
        );
    }

    // A typo in the pool: its last good version keeps serving, the typo is reported.
    std::fs::write(
        manifests.join("pool.yaml"),
        POOL.replace("blocks", "blcoks"),
    )
    .unwrap();
    assert!(wait_for(Duration::from_secs(10), || agent
        .log_text()
        .contains("unknown field `blcoks`")));
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        tcp_request(lab.ext_ns(), to, "hi", TIMEOUT).is_ok(),
        "still served"
    );
    assert_eq!(agent.backend_count(POOL_IP, 80, PROTO_TCP), Some(2));

    // The pool removed: web keeps its address (nothing takes a working Service's address).
    std::fs::remove_file(manifests.join("pool.yaml")).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        tcp_request(lab.ext_ns(), to, "hi", TIMEOUT).is_ok(),
        "still served without its pool"
    );
    assert_eq!(agent.backend_count(POOL_IP, 80, PROTO_TCP), Some(2));
    // A new pool that does not hold it: web keeps it (reported), zz-late gets the new one.
    std::fs::write(
        manifests.join("pool.yaml"),
        POOL.replace("203.0.113.1}", "203.0.113.2}")
            .replace("start: 203.0.113.1", "start: 203.0.113.2"),
    )
    .unwrap();
    // (zz-late has no endpoints: its frontend exists, with none.)
    let second = Ipv4Addr::new(203, 0, 113, 2);
    assert!(
        wait_for(Duration::from_secs(10), || agent
            .backend_count(second, 80, PROTO_TCP)
            .is_some()),
        "zz-late never got {second}\n{}",
        agent.log_text()
    );
    let lb = svcctl_lb(&lab);
    println!("{lb}");
    assert!(
        lb.contains(
            "default/web keeps 203.0.113.1, which no enabled pool that selects it holds any more"
        ),
        "{lb}"
    );
    assert!(tcp_request(lab.ext_ns(), to, "hi", TIMEOUT).is_ok());
    let _ = agent.process.stop();
}
