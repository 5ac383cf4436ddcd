//! LoadBalancer on bare metal, end to end (issue 15): address pools, the elected status
//! writer, and L2 announcements, with real packets on the two-node lab.
//!
//! Kubernetes mode: both nodes' agents watch an in-process API server that runs in the
//! outside host's namespace (ext, 192.0.2.100), as a control plane off the nodes would.
//! - A LoadBalancer Service without an address gets the lowest one of the pool, written
//!   into its status once (by the one agent holding the IPAM Lease).
//! - ext, with no route to it (the address is on ext's own LAN subnet), resolves it by
//!   ARP and connects: exactly one node answers, the holder of the Service's Lease.
//! - The announcing node's agent is killed: the other node takes the Lease and sends
//!   gratuitous ARP; ext's neighbour entry moves to it. The failover time (kill to the
//!   new MAC in ext's neighbour table) and the failed connections during it are printed.
//! - externalTrafficPolicy Local with endpoints on one node only: the announcement moves
//!   to that node.
//! - The Service deleted: its address returns to the pool (a new Service gets it).
//!
//! Manifest mode: the same pool kind gives the address, which svcctl shows and the
//! datapath serves (no announcement: there is no Lease API).
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use svc_lab::{
    Lab,
    agent::{AgentSource, LabAgent, svcctl_in_node, wait_for},
    fake_apiserver::FakeApiServer,
    kube, tcp_request,
};

static SERIAL: Mutex<()> = Mutex::new(());

const POOL_FIRST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);
const POOL_SECOND: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 201);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 30, 10);
const VIP2: Ipv4Addr = Ipv4Addr::new(10, 96, 30, 11);
const TIMEOUT: Duration = Duration::from_secs(2);

struct Cleanup(PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pool() -> Value {
    json!({
        "apiVersion": "svc-ebpf.dev/v1alpha1", "kind": "LoadBalancerIPPool",
        "metadata": {"name": "lan"},
        "spec": {"blocks": [{"start": "192.0.2.200", "stop": "192.0.2.209"}]},
    })
}

fn lb_service(name: &str, vip: Ipv4Addr, node_port: u16, policy: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "type": "LoadBalancer", "clusterIP": vip.to_string(), "clusterIPs": [vip.to_string()],
            "ipFamilies": ["IPv4"], "externalTrafficPolicy": policy,
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": node_port}],
        },
    })
}

fn slice(service: &str, pods: &[(Ipv4Addr, &str)]) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{service}-abc12"), "namespace": "default",
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
        "endpoints": pods.iter().map(|(ip, node)| json!({
            "addresses": [ip.to_string()], "conditions": {"ready": true}, "nodeName": node,
        })).collect::<Vec<_>>(),
    })
}

fn status_ips(server: &FakeApiServer, name: &str) -> Vec<String> {
    kube::status_ips(server, "default", name)
}

fn lease_holder(server: &FakeApiServer, service: &str) -> Option<String> {
    kube::announcer(server, "default", service)
}

fn svcctl_lb(lab: &Lab, node: usize) -> String {
    svcctl_in_node(lab, node, &["lb", "--agent", "127.0.0.1:10249"]).unwrap()
}

fn node_number(name: &str) -> usize {
    kube::node_number(name).unwrap()
}

#[test]
fn pools_assign_announce_and_fail_over_on_the_lan() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::up_two_nodes().expect("two-node lab");
    let dir = std::env::temp_dir().join(format!("svl-{}-lbipam", lab.id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = Cleanup(dir.clone());
    // The control plane on the outside host: both nodes reach it over the LAN.
    let server = kube::apiserver_on_ext(&lab).expect("fake API server");
    let kc = kube::kubeconfig(&dir, &server.url()).unwrap();
    kube::apply_nodes(&server, &lab);
    server.apply(pool());
    let (a1, b1) = (lab.pod_ip("a1"), lab.pod_ip("b1"));
    server.apply(lb_service("web", VIP, 30080, "Cluster"));
    server.apply(slice("web", &[(a1, "node1"), (b1, "node2")]));

    let mut agents: Vec<LabAgent> = (1..=2)
        .map(|n| {
            let name = format!("node{n}");
            LabAgent::start_from(
                &mut lab,
                n,
                AgentSource::Kubeconfig(&kc),
                &dir.join(format!("agent{n}.log")),
                &["--node-name", &name, "--l2-announcements"],
            )
            .expect("agent")
        })
        .collect();
    let logs = |agents: &[LabAgent]| {
        agents
            .iter()
            .map(|a| format!("--- node{} ---\n{}", a.node, a.log_text()))
            .collect::<Vec<_>>()
            .join("\n")
    };

    // 1. The address, written once, by one agent.
    assert!(
        wait_for(Duration::from_secs(30), || status_ips(&server, "web")
            == [POOL_FIRST.to_string()]),
        "web never got {POOL_FIRST}: status {:?}\n{}",
        status_ips(&server, "web"),
        logs(&agents)
    );
    std::thread::sleep(Duration::from_secs(2));
    let writes = server.count_requests("PATCH", "/api/v1/namespaces/default/services/web/status");
    assert_eq!(writes, 1, "one status write, no fight:\n{}", logs(&agents));
    let ipam_holder = kube::lease_holder(&server, kube::IPAM_LEASE);
    println!("IPAM Lease holder: {ipam_holder:?}");
    assert!(ipam_holder.is_some());

    // 2. ext reaches it by ARP (no route: 192.0.2.200 is on ext's subnet), and exactly
    // the Lease holder answers.
    assert!(
        wait_for(Duration::from_secs(15), || lease_holder(&server, "web")
            .is_some()),
        "nobody took the announcement Lease\n{}",
        logs(&agents)
    );
    let to = SocketAddrV4::new(POOL_FIRST, 80);
    assert!(
        wait_for(Duration::from_secs(10), || tcp_request(
            lab.ext_ns(),
            to,
            "hi",
            TIMEOUT
        )
        .is_ok()),
        "ext cannot reach {to}\n{}",
        logs(&agents)
    );
    let holder = lease_holder(&server, "web").unwrap();
    let holder_n = node_number(&holder);
    let other_n = 3 - holder_n;
    let macs = [lab.node_mac(1).unwrap(), lab.node_mac(2).unwrap()];
    assert_eq!(
        lab.ext_neighbour(POOL_FIRST).as_deref(),
        Some(macs[holder_n - 1].as_str()),
        "ext's neighbour entry is the holder's MAC"
    );
    let mut pods = std::collections::BTreeSet::new();
    for _ in 0..20 {
        if let Ok(r) = tcp_request(lab.ext_ns(), to, "hi", TIMEOUT) {
            pods.insert(r.pod);
        }
    }
    assert_eq!(
        pods.len(),
        2,
        "both pods serve the LoadBalancer address: {pods:?}"
    );
    let lb = svcctl_lb(&lab, holder_n);
    println!("svcctl lb on {holder}:\n{lb}");
    assert!(
        lb.contains("lan") && lb.contains("192.0.2.200") && lb.contains("this node"),
        "{lb}"
    );
    let lb_other = svcctl_lb(&lab, other_n);
    assert!(
        lb_other.contains(&holder),
        "the other node names the holder:\n{lb_other}"
    );
    // Nothing answers for a pool address nobody holds.
    let _ = tcp_request(
        lab.ext_ns(),
        SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 205), 80),
        "x",
        Duration::from_millis(500),
    );
    assert_eq!(
        lab.ext_neighbour(Ipv4Addr::new(192, 0, 2, 205)),
        None,
        "an unassigned address gets no ARP answer"
    );

    // 3. Failover: the announcing node's agent dies (its pinned datapath keeps serving
    // the flows that still reach it).
    let killed_at = Instant::now();
    agents[holder_n - 1].process.kill().expect("kill the agent");
    let mut failed = 0;
    let mut tried = 0;
    let mut moved_after = None;
    while killed_at.elapsed() < Duration::from_secs(15) && moved_after.is_none() {
        tried += 1;
        if tcp_request(lab.ext_ns(), to, "hi", Duration::from_millis(500)).is_err() {
            failed += 1;
        }
        if lab.ext_neighbour(POOL_FIRST).as_deref() == Some(macs[other_n - 1].as_str()) {
            moved_after = Some(killed_at.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let moved_after = moved_after.unwrap_or_else(|| {
        panic!(
            "ext's entry for {POOL_FIRST} never moved to node{other_n} (holder {:?})\n{}",
            lease_holder(&server, "web"),
            logs(&agents)
        )
    });
    println!(
        "failover: node{holder_n}'s agent killed; ext's neighbour entry moved to node{other_n} after {:.2} s; {failed} of {tried} connections failed meanwhile",
        moved_after.as_secs_f64()
    );
    assert_eq!(
        lease_holder(&server, "web").as_deref(),
        Some(format!("node{other_n}").as_str())
    );
    assert!(
        moved_after < Duration::from_secs(5),
        "failover took {moved_after:?} (goal: under 5 s)"
    );
    assert!(tcp_request(lab.ext_ns(), to, "hi", TIMEOUT).is_ok());
    // The killed agent comes back: the announcement stays where it is.
    agents[holder_n - 1].restart(&mut lab).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        lease_holder(&server, "web").as_deref(),
        Some(format!("node{other_n}").as_str())
    );

    // 4. externalTrafficPolicy Local, endpoints on the other node than the announcer:
    // the announcement moves there.
    let current = other_n;
    let target = 3 - current;
    let (pod, node) = if target == 1 {
        (a1, "node1")
    } else {
        (b1, "node2")
    };
    server.apply(lb_service("web", VIP, 30080, "Local"));
    server.apply(slice("web", &[(pod, node)]));
    assert!(
        wait_for(Duration::from_secs(15), || lease_holder(&server, "web")
            .as_deref()
            == Some(node)),
        "the announcement did not move to {node}: holder {:?}\n{}",
        lease_holder(&server, "web"),
        logs(&agents)
    );
    assert!(
        wait_for(Duration::from_secs(5), || lab
            .ext_neighbour(POOL_FIRST)
            .as_deref()
            == Some(macs[target - 1].as_str())),
        "ext's entry did not follow to {node}"
    );
    let r = tcp_request(lab.ext_ns(), to, "hi", TIMEOUT).expect("eTP Local answers");
    assert_eq!(
        r.client.ip(),
        &svc_lab::EXT_IP,
        "eTP Local keeps the client address"
    );
    // The status was not written again: the address stayed.
    assert_eq!(status_ips(&server, "web"), [POOL_FIRST.to_string()]);

    // 5. Deleted: the address returns to the pool.
    server.apply(lb_service("web2", VIP2, 30081, "Cluster"));
    server.apply(slice("web2", &[(a1, "node1")]));
    assert!(
        wait_for(Duration::from_secs(15), || status_ips(&server, "web2")
            == [POOL_SECOND.to_string()]),
        "web2: {:?}",
        status_ips(&server, "web2")
    );
    server.delete("Service", Some("default"), "web");
    server.delete("Service", Some("default"), "web2");
    server.apply(lb_service("web3", VIP, 30082, "Cluster"));
    assert!(
        wait_for(Duration::from_secs(15), || status_ips(&server, "web3")
            == [POOL_FIRST.to_string()]),
        "web3 should get the freed {POOL_FIRST}: {:?}\n{}",
        status_ips(&server, "web3"),
        logs(&agents)
    );
    // 6. A Service that stops being a LoadBalancer gives its address back (its status is
    // cleared), and the announcement Lease of a Service gone is removed (by the writer,
    // every five lease durations: 15 s).
    let mut cluster_ip = lb_service("web3", VIP, 30082, "Cluster");
    cluster_ip["spec"]["type"] = json!("ClusterIP");
    server.apply(cluster_ip);
    assert!(
        wait_for(Duration::from_secs(15), || status_ips(&server, "web3")
            .is_empty()),
        "web3's status still holds {:?}",
        status_ips(&server, "web3")
    );
    assert!(
        wait_for(Duration::from_secs(25), || server
            .get("Lease", Some(kube::LEASE_NAMESPACE), "svc-l2.default.web")
            .is_none()),
        "the deleted Service's announcement Lease is still there\n{}",
        logs(&agents)
    );

    // 7. Every agent restarts: the assignment lives in the status, nothing is written again.
    server.apply(lb_service("web4", VIP2, 30083, "Cluster"));
    assert!(wait_for(Duration::from_secs(15), || !status_ips(
        &server, "web4"
    )
    .is_empty()));
    let before = status_ips(&server, "web4");
    let writes = server.count_requests("PATCH", "/api/v1/namespaces/default/services/web4/status");
    for a in &mut agents {
        let _ = a.process.kill();
    }
    for a in &mut agents {
        a.restart(&mut lab).unwrap();
    }
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(status_ips(&server, "web4"), before, "kept across restarts");
    assert_eq!(
        server.count_requests("PATCH", "/api/v1/namespaces/default/services/web4/status"),
        writes,
        "no write after the restarts\n{}",
        logs(&agents)
    );

    for a in &mut agents {
        let _ = a.process.stop();
    }
}
