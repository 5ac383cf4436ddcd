//! svc-lab: throw-away Kubernetes-like nodes built from network namespaces, for e2e tests,
//! the `cargo xtask run` demo and benchmarks. Nothing is created in the root network namespace.
//!
//! # Single-node lab ([`Lab::up`])
//!
//! Every address lives only inside the lab's namespaces:
//!
//! ```text
//!   client (10.244.1.20) ──lxc-client─┐
//!   p1     (10.244.1.11) ──lxc-p1─────┤
//!   p2     (10.244.1.12) ──lxc-p2─────┼── node (ip_forward, rp_filter=0) ── eth0 192.0.2.1/24
//!   p3     (10.244.1.13) ──lxc-p3─────┘                                        │
//!                                                                  ext eth0 192.0.2.100/24
//! ```
//!
//! Pods are routed like Calico/Cilium: `<ip>/32` on the pod's eth0, gateway 10.244.1.1 as a
//! link-scope route; the node holds 10.244.1.1/32 on every lxc-* and a /32 route per pod.
//! ext routes the service range 10.96.0.0/12 and the pod range 10.244.0.0/16 to the node.
//!
//! Before the agent starts, a test may add a second external link to another outside host
//! ([`Lab::add_second_nic`]: eth1 198.18.0.1/24, ext2 198.18.0.100), more client pods
//! ([`Lab::add_client_pod`]), more backend pods on any node ([`Lab::add_backend_pod`]) and
//! pods behind a bridge ([`Lab::add_bridged_client_pod`]).
//!
//! # Two-node lab ([`Lab::up_two_nodes`])
//!
//! A "physical" L2 segment (bridge `br0` in namespace `svl-<id>-phys`, no IP) joins the two
//! nodes' eth0 and the outside host ext; each node routes the other's pod CIDR via the
//! other's eth0 address:
//!
//! ```text
//!  a1 10.244.1.11 ─lxc-a1─┐                                           ┌─lxc-b1─ b1 10.244.2.11
//!  a2 10.244.1.12 ─lxc-a2─┼ node1 svl-<id>-n1          svl-<id>-n2 node2 ┼─lxc-b2─ b2 10.244.2.12
//!  ca 10.244.1.20 ─lxc-ca─┘ gw 10.244.1.1               gw 10.244.2.1  └─lxc-cb─ cb 10.244.2.20
//!                           10.244.2.0/24 via .2       10.244.1.0/24 via .1
//!                           eth0 192.0.2.1/24          eth0 192.0.2.2/24
//!                                 │                          │
//!                                 n1 ────────── br0 ──────── n2      (svl-<id>-phys, L2 only)
//!                                                │
//!                                               ext
//!                                                │
//!                                 ext eth0 192.0.2.100/24  (svl-<id>-ext)
//!                                 routes only what tests add with Lab::ext_route
//! ```
//!
//! # IPv6: both labs are dual-stack
//!
//! Every IPv4 address above has an IPv6 twin, digits kept ([`ipv6_twin`]: 10.244.1.11 ↔
//! fd00:10:244:1::11, 192.0.2.1 ↔ fd00:192:0:2::1): pods hold theirs as /128 with the
//! twin of their gateway (fd00:10:244:1::1, held by the node on every lxc-*) as on-link
//! route and default route, node pod CIDRs are fd00:10:244:N::/64 ([`POD_CIDR6`]), node
//! and ext links fd00:192:0:2::/64, and ext routes [`SERVICE_CIDR6`] and
//! [`CLUSTER_POD_CIDR6`] to the node as it does for IPv4 (the two-node lab's nodes route
//! each other's pod CIDR6). Nodes forward IPv6; no namespace runs duplicate address
//! detection, so addresses are usable at once. The echo servers also answer on [::]:8080
//! (their own IPv6-only sockets: the IPv4 ones are untouched), replying
//! `<pod> [<client>]:<port>`. The second NIC ([`Lab::add_second_nic`]) and bridged pods
//! are IPv4 only.
//!
//! Nodes have ip_forward=1, rp_filter=0 everywhere and send_redirects=0 (a node forwards
//! ext's traffic for the other node's pods back out of eth0). Transmit checksum offload is
//! off on ext's and both nodes' eth0, so the XDP program on a node's eth0 only ever sees
//! complete checksums. Backend pods a1 a2 b1 b2 run the echo servers; ca and cb are clients.
//! Node numbers are 1-based everywhere (`node(1)` is node1); the single-node lab's node is
//! node 1.

pub mod agent;
pub mod client;
pub mod echo;
pub mod fake_apiserver;
pub mod kube;
pub mod netns;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;

pub use client::{
    TcpSession, UdpSession, connect_probe, echo_tcp, echo_udp, http_get, request_from, tcp_request,
    udp_request,
};
pub use echo::{EchoReply, EchoServers};
pub use netns::{in_netns, try_in_netns};

/// Prefix of every namespace and bpffs dir the lab creates; `cleanup_stale` keys on it.
pub const PREFIX: &str = "svl-";
/// Pod network of the (single) node, and of node1 in the two-node lab.
pub const POD_CIDR: &str = "10.244.1.0/24";
/// Cluster-wide pod range, routed by ext towards the node.
pub const CLUSTER_POD_CIDR: &str = "10.244.0.0/16";
/// Service (ClusterIP) range, routed by ext towards the node.
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
/// IPv6 pod network of the (single) node, and of node1 in the two-node lab.
pub const POD_CIDR6: &str = "fd00:10:244:1::/64";
/// node2's IPv6 pod network in the two-node lab.
pub const NODE2_POD_CIDR6: &str = "fd00:10:244:2::/64";
/// Cluster-wide IPv6 pod range, routed by ext towards the node.
pub const CLUSTER_POD_CIDR6: &str = "fd00:10:244::/48";
/// IPv6 Service (ClusterIP) range, routed by ext towards the node.
pub const SERVICE_CIDR6: &str = "fd00:10:96::/112";
/// Prefix length of the IPv6 node/ext link.
pub const EXT_PREFIX_LEN6: u8 = 64;

/// The IPv6 twin of a lab address: `a.b.c.d` → `fd00:a:b:c::d`, each number's decimal
/// digits written as the group (10.244.1.11 → fd00:10:244:1::11), so the two read alike.
pub fn ipv6_twin(v4: Ipv4Addr) -> Ipv6Addr {
    // Decimal digits read as hex: at most 0x255, always a valid group.
    let g = |n: u8| u16::from_str_radix(&n.to_string(), 16).unwrap_or(0);
    let [a, b, c, d] = v4.octets();
    Ipv6Addr::new(0xfd00, g(a), g(b), g(c), 0, 0, 0, g(d))
}

/// The IPv6 twin of an IPv4 CIDR of the lab (`10.244.1.0/24` → `fd00:10:244:1::/64`): the
/// network's twin with a /64 (a /24 or longer) or /48 (shorter).
fn cidr6_twin(cidr: &str) -> String {
    let (net, len) = cidr.split_once('/').unwrap_or((cidr, "24"));
    let net: Ipv4Addr = net.parse().unwrap_or(Ipv4Addr::UNSPECIFIED);
    let len: u8 = len.parse().unwrap_or(24);
    let twin = ipv6_twin(net).segments();
    if len >= 24 {
        format!(
            "{}/64",
            Ipv6Addr::new(twin[0], twin[1], twin[2], twin[3], 0, 0, 0, 0)
        )
    } else {
        format!(
            "{}/48",
            Ipv6Addr::new(twin[0], twin[1], twin[2], 0, 0, 0, 0, 0)
        )
    }
}

/// Gateway address every pod uses; the node holds it (/32) on every lxc-* interface.
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);
pub const P1_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 11);
pub const P2_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 12);
pub const P3_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 13);
/// The client pod (not a backend).
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 20);
/// Node address on its "external" interface eth0 (node1's in the two-node lab).
pub const NODE_EXT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// node2's eth0 address in the two-node lab.
pub const NODE2_EXT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// node2's pod network in the two-node lab.
pub const NODE2_POD_CIDR: &str = "10.244.2.0/24";
/// node2's pod gateway in the two-node lab.
pub const NODE2_POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 1);
/// The outside host.
pub const EXT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
pub const EXT_PREFIX_LEN: u8 = 24;
/// Interface name of the node's external link (and of the ext host's link).
pub const NODE_EXT_IF: &str = "eth0";
/// The node's second external link ([`Lab::add_second_nic`]), to the second outside host.
pub const NODE_EXT2_IF: &str = "eth1";
/// The node's address on its second external link.
pub const NODE_EXT2_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The second outside host, behind the node's second link.
pub const EXT2_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
/// The bridge in the two-node lab's phys namespace.
pub const PHYS_BRIDGE: &str = "br0";
/// Port of the TCP and UDP echo servers in every backend pod.
pub const ECHO_PORT: u16 = 8080;
/// Backend pod names, in order.
pub const BACKENDS: [&str; 3] = ["p1", "p2", "p3"];
pub const CLIENT_POD: &str = "client";

/// The two-node lab's pods: `(node number, name, ip, is a backend running echo servers)`.
pub const TWO_NODE_PODS: [(usize, &str, Ipv4Addr, bool); 6] = [
    (1, "a1", Ipv4Addr::new(10, 244, 1, 11), true),
    (1, "a2", Ipv4Addr::new(10, 244, 1, 12), true),
    (1, "ca", Ipv4Addr::new(10, 244, 1, 20), false),
    (2, "b1", Ipv4Addr::new(10, 244, 2, 11), true),
    (2, "b2", Ipv4Addr::new(10, 244, 2, 12), true),
    (2, "cb", Ipv4Addr::new(10, 244, 2, 20), false),
];

/// One node of the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// 1-based node number (node1 is 1).
    pub index: usize,
    /// Kubernetes-style node name: "node1", "node2" (the single-node lab's node is "node1").
    pub name: String,
    /// Network namespace name (`svl-<id>-node` for the single-node lab, `svl-<id>-n<N>`).
    pub ns: String,
    /// Address on the node's eth0.
    pub ip: Ipv4Addr,
    /// The node's pod CIDR, e.g. "10.244.1.0/24".
    pub pod_cidr: String,
    /// Pod gateway the node holds (/32) on every lxc-* interface.
    pub gateway: Ipv4Addr,
    /// Per-node bpffs directory for the agent's pins, removed on drop.
    pub bpffs_dir: PathBuf,
    /// IPv6 address on the node's eth0 (the twin of `ip`).
    pub ip6: Ipv6Addr,
    /// The node's IPv6 pod CIDR, e.g. "fd00:10:244:1::/64".
    pub pod_cidr6: String,
    /// IPv6 pod gateway the node holds (/128) on every lxc-* interface.
    pub gateway6: Ipv6Addr,
}

impl Node {
    /// Node `index` (name `node<index>`) with its IPv6 twins of `ip`, `pod_cidr` and
    /// `gateway`.
    fn new(
        index: usize,
        ns: String,
        ip: Ipv4Addr,
        pod_cidr: &str,
        gateway: Ipv4Addr,
        bpffs_dir: PathBuf,
    ) -> Node {
        Node {
            index,
            name: format!("node{index}"),
            ns,
            ip,
            pod_cidr: pod_cidr.into(),
            gateway,
            bpffs_dir,
            ip6: ipv6_twin(ip),
            pod_cidr6: cidr6_twin(pod_cidr),
            gateway6: ipv6_twin(gateway),
        }
    }
}

/// One pod of the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// Short name: "p1", "p2", "p3" or "client" (single node), "a1" "a2" "ca" "b1" "b2" "cb"
    /// (two nodes); also what the echo servers report.
    pub name: String,
    pub ip: Ipv4Addr,
    /// The pod's IPv6 address (the twin of `ip`).
    pub ip6: Ipv6Addr,
    /// Network namespace name (`svl-<id>-<name>`).
    pub ns: String,
    /// Node-side veth name (`lxc-<name>`).
    pub node_if: String,
    /// Number (1-based) of the node the pod runs on.
    pub node: usize,
}

impl Pod {
    /// The pod's echo endpoint `ip:8080`.
    pub fn echo_addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.ip, ECHO_PORT)
    }

    /// The pod's IPv6 echo endpoint `[ip6]:8080`.
    pub fn echo_addr6(&self) -> SocketAddrV6 {
        SocketAddrV6::new(self.ip6, ECHO_PORT, 0, 0)
    }
}

/// A process started in a node namespace; shared with the [`Lab`], which kills it on drop.
#[derive(Clone)]
pub struct NodeProcess {
    pid: u32,
    child: Arc<Mutex<Child>>,
}

impl NodeProcess {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `Some(status)` once the process has exited.
    pub fn try_wait(&self) -> io::Result<Option<std::process::ExitStatus>> {
        self.child
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_wait()
    }

    pub fn is_running(&self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// Wait at most `timeout` for the process to exit on its own.
    pub fn wait_timeout(&self, timeout: Duration) -> io::Result<Option<std::process::ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait()? {
                return Ok(Some(st));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as the OOM killer or a node crash would, and reap it: the process gets no
    /// chance to clean anything up.
    pub fn kill(&self) -> io::Result<std::process::ExitStatus> {
        let mut c = self.child.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(st) = c.try_wait()? {
            return Ok(st);
        }
        c.kill()?;
        c.wait()
    }

    /// SIGTERM, wait up to 3 s, then SIGKILL. Idempotent.
    ///
    /// The whole process tree is signalled: a shell wrapper's grandchildren would otherwise
    /// outlive the lab (and keep inherited stdout/stderr pipes open). The child stays in the
    /// caller's process group on purpose, so Ctrl-C in a terminal still reaches it.
    pub fn stop(&self) -> io::Result<Option<std::process::ExitStatus>> {
        if let Some(st) = self.try_wait()? {
            return Ok(Some(st));
        }
        let tree = process_tree(self.pid);
        for (pid, _) in &tree {
            // SAFETY: kill(2) has no memory-safety preconditions; the root pid is our
            // unreaped child, the others were verified by start time just above.
            unsafe { libc::kill(*pid as libc::pid_t, libc::SIGTERM) };
        }
        let exited = self.wait_timeout(Duration::from_secs(3))?;
        for (pid, start) in &tree {
            if *pid != self.pid && start_time(*pid) == Some(*start) {
                // SAFETY: as above; start time matched, so the pid was not reused.
                unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
            }
        }
        if exited.is_some() {
            return Ok(exited);
        }
        let mut c = self.child.lock().unwrap_or_else(|p| p.into_inner());
        c.kill()?;
        c.wait().map(Some)
    }
}

/// `(ppid, starttime)` of a process from /proc/<pid>/stat.
fn stat_of(pid: u32) -> Option<(u32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces/parens: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] = state (field 3), ppid = field 4, starttime = field 22.
    Some((f.get(1)?.parse().ok()?, f.get(19)?.parse().ok()?))
}

fn start_time(pid: u32) -> Option<u64> {
    stat_of(pid).map(|(_, st)| st)
}

/// `root` and all its descendants with their start times (bounded by the /proc listing).
fn process_tree(root: u32) -> Vec<(u32, u64)> {
    let mut all: Vec<(u32, u32, u64)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok())
                && let Some((ppid, st)) = stat_of(pid)
            {
                all.push((pid, ppid, st));
            }
        }
    }
    let mut tree: Vec<(u32, u64)> = vec![(root, start_time(root).unwrap_or(0))];
    let mut i = 0;
    while i < tree.len() && tree.len() <= all.len() {
        let parent = tree[i].0;
        for &(pid, ppid, st) in &all {
            if ppid == parent && !tree.iter().any(|(p, _)| *p == pid) {
                tree.push((pid, st));
            }
        }
        i += 1;
    }
    tree
}

/// The lab: namespaces, veths, routes, echo servers, bpffs dirs and node processes.
/// Everything is torn down on drop (also when unwinding from a panic).
pub struct Lab {
    id: String,
    /// Node 1 first; one entry for [`Lab::up`], two for [`Lab::up_two_nodes`].
    nodes: Vec<Node>,
    /// The L2 segment's namespace (two-node lab only).
    phys_ns: Option<String>,
    ext_ns: String,
    /// Backend pods (echo servers), in node order.
    pods: Vec<Pod>,
    /// Client pods, in node order.
    clients: Vec<Pod>,
    /// Namespaces actually created, so a half-built lab tears down exactly what exists.
    created_ns: Vec<String>,
    /// bpffs dirs actually created.
    created_dirs: Vec<PathBuf>,
    /// cgroup v2 directories made for node processes (removed, empty, on teardown).
    created_cgroups: Vec<PathBuf>,
    echo: Option<EchoServers>,
    /// Echo servers of backend pods added after the lab was built ([`Lab::add_backend_pod`]).
    extra_echo: Vec<EchoServers>,
    children: Vec<NodeProcess>,
    torn_down: bool,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// `<pid>-<4 hex>`: the pid lets `cleanup_stale` tell whether the owner is alive; the
/// suffix (time ^ counter) keeps several labs per process, and pid reuse, apart.
fn new_run_id() -> String {
    let pid = std::process::id();
    for _ in 0..64 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let tag = (nanos >> 10).wrapping_add(seq.wrapping_mul(0x9e37)) & 0xffff;
        let id = format!("{pid}-{tag:04x}");
        let taken = ["node", "phys", "ext"]
            .iter()
            .any(|t| netns::netns_path(&format!("{PREFIX}{id}-{t}")).exists());
        if !taken {
            return id;
        }
    }
    format!("{pid}-{:04x}", SEQ.fetch_add(1, Ordering::Relaxed) & 0xffff)
}

/// Owner pid encoded in a lab object name `svl-<pid>-...`.
fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

const BPFFS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn is_bpffs(path: &str) -> bool {
    let c = std::ffi::CString::new(path).expect("no NUL in path");
    // SAFETY: statfs fills a zeroed struct we own.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

/// Mount bpffs at /sys/fs/bpf if it is not there (the agent pins maps below it).
pub fn ensure_bpffs() -> anyhow::Result<()> {
    if is_bpffs(BPFFS) {
        return Ok(());
    }
    netns::run_checked("mount", &["-t", "bpf", "bpf", BPFFS]).context("mounting bpffs")?;
    anyhow::ensure!(
        is_bpffs(BPFFS),
        "{BPFFS} is still not a bpf filesystem after mount"
    );
    Ok(())
}

/// The node's IPv6 address on its eth0, in its namespace `ns`.
fn add_node_ip6(ns: &str, node: &Node) -> anyhow::Result<()> {
    let addr = format!("{}/{EXT_PREFIX_LEN6}", node.ip6);
    netns::ip_in(ns, &["addr", "add", &addr, "dev", NODE_EXT_IF, "nodad"])
}

/// The outside host's IPv6 address (the twin of [`EXT_IP`]) on its link `dev`.
fn add_ext_ip6(ext: &str, dev: &str) -> anyhow::Result<()> {
    let addr = format!("{}/{EXT_PREFIX_LEN6}", ipv6_twin(EXT_IP));
    netns::ip_in(ext, &["addr", "add", &addr, "dev", dev, "nodad"])
}

/// `ethtool -K eth0 tx off` in `ns`: an XDP program on the receiving node's eth0 cannot
/// complete CHECKSUM_PARTIAL packets, so senders on the wire must checksum fully.
fn tx_csum_off(ns: &str) -> anyhow::Result<()> {
    let out = netns::exec_in(ns, &["ethtool", "-K", NODE_EXT_IF, "tx", "off"])?;
    anyhow::ensure!(
        out.status.success(),
        "ethtool -K {NODE_EXT_IF} tx off in {ns}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

impl Lab {
    /// Root check, stale cleanup, bpffs mount; returns a fresh run id.
    fn prepare() -> anyhow::Result<String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            anyhow::bail!("svc-lab needs root (network namespaces, veths, bpffs); run as root");
        }
        Lab::cleanup_stale();
        ensure_bpffs()?;
        Ok(new_run_id())
    }

    fn empty(id: String, nodes: Vec<Node>, phys_ns: Option<String>) -> Lab {
        Lab {
            ext_ns: format!("{PREFIX}{id}-ext"),
            nodes,
            phys_ns,
            pods: Vec::new(),
            clients: Vec::new(),
            created_ns: Vec::new(),
            created_dirs: Vec::new(),
            created_cgroups: Vec::new(),
            echo: None,
            extra_echo: Vec::new(),
            children: Vec::new(),
            torn_down: false,
            id,
        }
    }

    fn make_pod(id: &str, node: usize, name: &str, ip: Ipv4Addr) -> Pod {
        Pod {
            name: name.into(),
            ip,
            ip6: ipv6_twin(ip),
            ns: format!("{PREFIX}{id}-{name}"),
            node_if: format!("lxc-{name}"),
            node,
        }
    }

    /// Build the single-node lab. Needs root. Removes leftovers of dead earlier runs first.
    pub fn up() -> anyhow::Result<Lab> {
        let id = Lab::prepare()?;
        let node = Node::new(
            1,
            format!("{PREFIX}{id}-node"),
            NODE_EXT_IP,
            POD_CIDR,
            POD_GATEWAY,
            PathBuf::from(BPFFS).join(format!("{PREFIX}{id}")),
        );
        let mut lab = Lab::empty(id.clone(), vec![node], None);
        lab.pods = [("p1", P1_IP), ("p2", P2_IP), ("p3", P3_IP)]
            .iter()
            .map(|&(n, ip)| Lab::make_pod(&id, 1, n, ip))
            .collect();
        lab.clients = vec![Lab::make_pod(&id, 1, CLIENT_POD, CLIENT_IP)];
        // On error `lab` is dropped here and removes whatever was built so far.
        lab.build_single()
            .with_context(|| format!("building lab {}", lab.id))?;
        Ok(lab)
    }

    /// Build the two-node lab (see the module docs). Needs root. ext has no routes beyond
    /// its /24; add them with [`ext_route`](Self::ext_route).
    pub fn up_two_nodes() -> anyhow::Result<Lab> {
        let id = Lab::prepare()?;
        let node = |index: usize, ip, cidr: &str, gateway| {
            Node::new(
                index,
                format!("{PREFIX}{id}-n{index}"),
                ip,
                cidr,
                gateway,
                PathBuf::from(BPFFS).join(format!("{PREFIX}{id}-n{index}")),
            )
        };
        let nodes = vec![
            node(1, NODE_EXT_IP, POD_CIDR, POD_GATEWAY),
            node(2, NODE2_EXT_IP, NODE2_POD_CIDR, NODE2_POD_GATEWAY),
        ];
        let mut lab = Lab::empty(id.clone(), nodes, Some(format!("{PREFIX}{id}-phys")));
        for &(n, name, ip, backend) in &TWO_NODE_PODS {
            let p = Lab::make_pod(&id, n, name, ip);
            if backend {
                lab.pods.push(p);
            } else {
                lab.clients.push(p);
            }
        }
        lab.build_two_nodes()
            .with_context(|| format!("building two-node lab {}", lab.id))?;
        Ok(lab)
    }

    fn add_ns(&mut self, name: &str) -> anyhow::Result<()> {
        netns::run_checked("ip", &["netns", "add", name])?;
        self.created_ns.push(name.to_string());
        // No duplicate address detection (the lab's addresses are unique by construction):
        // IPv6 addresses, link-local ones included, are usable at once. Before any
        // interface exists, so every new one inherits `default`.
        for k in ["all", "default"] {
            netns::sysctl_in(name, &format!("net.ipv6.conf.{k}.accept_dad"), "0")?;
        }
        netns::ip_in(name, &["link", "set", "lo", "up"])
    }

    /// The node namespace with forwarding sysctls, and its bpffs dir.
    fn add_node_ns(&mut self, node: &Node, no_redirects: bool) -> anyhow::Result<()> {
        std::fs::create_dir_all(&node.bpffs_dir)
            .with_context(|| format!("mkdir {}", node.bpffs_dir.display()))?;
        self.created_dirs.push(node.bpffs_dir.clone());
        self.add_ns(&node.ns)?;
        // Before any interface exists, so new interfaces inherit `default`.
        let mut sysctls = vec![
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ];
        if no_redirects {
            sysctls.extend([
                ("net.ipv4.conf.all.send_redirects", "0"),
                ("net.ipv4.conf.default.send_redirects", "0"),
            ]);
        }
        for (k, v) in sysctls {
            netns::sysctl_in(&node.ns, k, v)?;
        }
        Ok(())
    }

    /// Pod namespace + veth, routed Calico/Cilium style through `node`.
    fn add_pod(&mut self, node: &Node, p: &Pod) -> anyhow::Result<()> {
        let gw = format!("{}/32", node.gateway);
        let gw_host = node.gateway.to_string();
        self.add_ns(&p.ns)?;
        let ip32 = format!("{}/32", p.ip);
        // Created from inside the node namespace with the peer moved straight into the
        // pod, so no end ever shows up in the root namespace.
        netns::ip_in(
            &node.ns,
            &[
                "link", "add", &p.node_if, "type", "veth", "peer", "name", "eth0", "netns", &p.ns,
            ],
        )?;
        netns::sysctl_in(
            &node.ns,
            &format!("net.ipv4.conf.{}.rp_filter", p.node_if),
            "0",
        )?;
        netns::ip_in(&node.ns, &["addr", "add", &gw, "dev", &p.node_if])?;
        netns::ip_in(&node.ns, &["link", "set", &p.node_if, "up"])?;
        netns::ip_in(&node.ns, &["route", "add", &ip32, "dev", &p.node_if])?;

        netns::ip_in(&p.ns, &["addr", "add", &ip32, "dev", "eth0"])?;
        netns::ip_in(&p.ns, &["link", "set", "eth0", "up"])?;
        netns::ip_in(
            &p.ns,
            &["route", "add", &gw_host, "dev", "eth0", "scope", "link"],
        )?;
        netns::ip_in(
            &p.ns,
            &["route", "add", "default", "via", &gw_host, "dev", "eth0"],
        )?;
        // IPv6 the same way: the gateway's twin on the node side, the pod's /128.
        let (gw6, ip6) = (node.gateway6.to_string(), p.ip6.to_string());
        netns::ip_in(
            &node.ns,
            &[
                "addr",
                "add",
                &format!("{gw6}/128"),
                "dev",
                &p.node_if,
                "nodad",
            ],
        )?;
        netns::ip_in(
            &node.ns,
            &[
                "-6",
                "route",
                "add",
                &format!("{ip6}/128"),
                "dev",
                &p.node_if,
            ],
        )?;
        netns::ip_in(
            &p.ns,
            &["addr", "add", &format!("{ip6}/128"), "dev", "eth0", "nodad"],
        )?;
        netns::ip_in(&p.ns, &["-6", "route", "add", &gw6, "dev", "eth0"])?;
        netns::ip_in(
            &p.ns,
            &["-6", "route", "add", "default", "via", &gw6, "dev", "eth0"],
        )?;
        Ok(())
    }

    fn all_pods(&self) -> impl Iterator<Item = &Pod> {
        self.pods.iter().chain(self.clients.iter())
    }

    fn start_echo(&mut self) -> anyhow::Result<()> {
        let backends: Vec<(String, String)> = self
            .pods
            .iter()
            .map(|p| (p.name.clone(), p.ns.clone()))
            .collect();
        self.echo = Some(EchoServers::start(&backends, ECHO_PORT)?);
        Ok(())
    }

    fn build_single(&mut self) -> anyhow::Result<()> {
        let node = self.nodes[0].clone();
        let node_ns = node.ns.clone();
        self.add_node_ns(&node, false)?;
        let pods: Vec<Pod> = self.all_pods().cloned().collect();
        for p in &pods {
            self.add_pod(&node, p)?;
        }

        let ext = self.ext_ns.clone();
        self.add_ns(&ext)?;
        netns::ip_in(
            &node_ns,
            &[
                "link",
                "add",
                NODE_EXT_IF,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &ext,
            ],
        )?;
        netns::sysctl_in(
            &node_ns,
            &format!("net.ipv4.conf.{NODE_EXT_IF}.rp_filter"),
            "0",
        )?;
        netns::ip_in(
            &node_ns,
            &[
                "addr",
                "add",
                &format!("{}/{EXT_PREFIX_LEN}", node.ip),
                "dev",
                NODE_EXT_IF,
            ],
        )?;
        add_node_ip6(&node_ns, &node)?;
        netns::ip_in(&node_ns, &["link", "set", NODE_EXT_IF, "up"])?;
        netns::ip_in(
            &ext,
            &[
                "addr",
                "add",
                &format!("{EXT_IP}/{EXT_PREFIX_LEN}"),
                "dev",
                "eth0",
            ],
        )?;
        add_ext_ip6(&ext, "eth0")?;
        netns::ip_in(&ext, &["link", "set", "eth0", "up"])?;
        let via = node.ip.to_string();
        netns::ip_in(&ext, &["route", "add", SERVICE_CIDR, "via", &via])?;
        netns::ip_in(&ext, &["route", "add", CLUSTER_POD_CIDR, "via", &via])?;
        let via6 = node.ip6.to_string();
        netns::ip_in(&ext, &["-6", "route", "add", SERVICE_CIDR6, "via", &via6])?;
        netns::ip_in(
            &ext,
            &["-6", "route", "add", CLUSTER_POD_CIDR6, "via", &via6],
        )?;
        tx_csum_off(&ext)?;
        self.start_echo()
    }

    fn build_two_nodes(&mut self) -> anyhow::Result<()> {
        let phys = self.phys_ns.clone().expect("two-node lab has a phys ns");
        self.add_ns(&phys)?;
        netns::ip_in(&phys, &["link", "add", PHYS_BRIDGE, "type", "bridge"])?;
        netns::ip_in(&phys, &["link", "set", PHYS_BRIDGE, "up"])?;
        // One bridge port per host; the other end becomes that host's eth0.
        let plug = |port: &str, host_ns: &str| -> anyhow::Result<()> {
            netns::ip_in(
                &phys,
                &[
                    "link",
                    "add",
                    port,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    NODE_EXT_IF,
                    "netns",
                    host_ns,
                ],
            )?;
            netns::ip_in(&phys, &["link", "set", port, "master", PHYS_BRIDGE])?;
            netns::ip_in(&phys, &["link", "set", port, "up"])
        };

        let nodes = self.nodes.clone();
        for node in &nodes {
            self.add_node_ns(node, true)?;
            plug(&format!("n{}", node.index), &node.ns)?;
            for k in ["rp_filter", "send_redirects"] {
                netns::sysctl_in(&node.ns, &format!("net.ipv4.conf.{NODE_EXT_IF}.{k}"), "0")?;
            }
            netns::ip_in(
                &node.ns,
                &[
                    "addr",
                    "add",
                    &format!("{}/{EXT_PREFIX_LEN}", node.ip),
                    "dev",
                    NODE_EXT_IF,
                ],
            )?;
            add_node_ip6(&node.ns, node)?;
            netns::ip_in(&node.ns, &["link", "set", NODE_EXT_IF, "up"])?;
            // Nodes forward pod traffic to each other through eth0: the peer's XDP needs
            // complete checksums (forwarded CHECKSUM_PARTIAL skbs get completed on xmit).
            tx_csum_off(&node.ns)?;
            let pods: Vec<Pod> = self
                .all_pods()
                .filter(|p| p.node == node.index)
                .cloned()
                .collect();
            for p in &pods {
                self.add_pod(node, p)?;
            }
        }
        for node in &nodes {
            for other in nodes.iter().filter(|o| o.index != node.index) {
                let via = other.ip.to_string();
                netns::ip_in(
                    &node.ns,
                    &[
                        "route",
                        "add",
                        &other.pod_cidr,
                        "via",
                        &via,
                        "dev",
                        NODE_EXT_IF,
                    ],
                )?;
                let via6 = other.ip6.to_string();
                netns::ip_in(
                    &node.ns,
                    &[
                        "-6",
                        "route",
                        "add",
                        &other.pod_cidr6,
                        "via",
                        &via6,
                        "dev",
                        NODE_EXT_IF,
                    ],
                )?;
            }
        }

        let ext = self.ext_ns.clone();
        self.add_ns(&ext)?;
        plug("ext", &ext)?;
        netns::ip_in(
            &ext,
            &[
                "addr",
                "add",
                &format!("{EXT_IP}/{EXT_PREFIX_LEN}"),
                "dev",
                NODE_EXT_IF,
            ],
        )?;
        add_ext_ip6(&ext, NODE_EXT_IF)?;
        netns::ip_in(&ext, &["link", "set", NODE_EXT_IF, "up"])?;
        tx_csum_off(&ext)?;
        self.start_echo()
    }

    /// A second external link on node 1 (a node with two NICs): `eth1` 198.18.0.1/24 in the
    /// node, to a second outside host (namespace `svl-<id>-ext2`, eth0 198.18.0.100/24,
    /// routing the Service and pod ranges to the node, transmit checksum offload off for
    /// XDP). Returns the outside host's namespace. Call before starting the agent, which
    /// takes the link with `--device eth1`.
    pub fn add_second_nic(&mut self) -> anyhow::Result<String> {
        let node_ns = self.node_ns().to_string();
        let ext2 = format!("{PREFIX}{}-ext2", self.id);
        self.add_ns(&ext2)?;
        netns::ip_in(
            &node_ns,
            &[
                "link",
                "add",
                NODE_EXT2_IF,
                "type",
                "veth",
                "peer",
                "name",
                NODE_EXT_IF,
                "netns",
                &ext2,
            ],
        )?;
        netns::sysctl_in(
            &node_ns,
            &format!("net.ipv4.conf.{NODE_EXT2_IF}.rp_filter"),
            "0",
        )?;
        let node_addr = format!("{NODE_EXT2_IP}/24");
        netns::ip_in(&node_ns, &["addr", "add", &node_addr, "dev", NODE_EXT2_IF])?;
        netns::ip_in(&node_ns, &["link", "set", NODE_EXT2_IF, "up"])?;
        let ext_addr = format!("{EXT2_IP}/24");
        netns::ip_in(&ext2, &["addr", "add", &ext_addr, "dev", NODE_EXT_IF])?;
        netns::ip_in(&ext2, &["link", "set", NODE_EXT_IF, "up"])?;
        let via = NODE_EXT2_IP.to_string();
        netns::ip_in(&ext2, &["route", "add", SERVICE_CIDR, "via", &via])?;
        netns::ip_in(&ext2, &["route", "add", CLUSTER_POD_CIDR, "via", &via])?;
        tx_csum_off(&ext2)?;
        Ok(ext2)
    }

    /// Another client pod `name` at `ip` on node 1, routed as the others (`ip`/32, the
    /// node's pod gateway, the node-side veth `lxc-<name>`); `ip` may be outside the pod
    /// CIDRs (a second pod range). Removed with the lab.
    pub fn add_client_pod(&mut self, name: &str, ip: Ipv4Addr) -> anyhow::Result<()> {
        let node = self.nodes[0].clone();
        let pod = Lab::make_pod(&self.id, node.index, name, ip);
        self.add_pod(&node, &pod)?;
        self.clients.push(pod);
        Ok(())
    }

    /// Another backend pod `name` at `ip` on node `n` (1-based), routed as the others (`ip`/32,
    /// the node's pod gateway, `lxc-<name>`) and running the TCP and UDP echo servers on
    /// [`ECHO_PORT`], e.g. when a test needs more endpoints on one node than the lab has.
    /// `ip` must be inside the node's pod CIDR: the other node routes only that CIDR to it.
    /// Removed with the lab.
    pub fn add_backend_pod(&mut self, n: usize, name: &str, ip: Ipv4Addr) -> anyhow::Result<()> {
        let node = self.node(n).clone();
        let pod = Lab::make_pod(&self.id, node.index, name, ip);
        self.add_pod(&node, &pod)?;
        let echo = EchoServers::start(&[(pod.name.clone(), pod.ns.clone())], ECHO_PORT)?;
        self.extra_echo.push(echo);
        self.pods.push(pod);
        Ok(())
    }

    /// A client pod `name` at `ip`/24 behind a Linux bridge `bridge` of node 1 (made on
    /// first use, holding `gateway`/24), as the bridge CNIs (flannel's cni0, kubenet's
    /// cbr0) wire pods: the pod's veth `vethbr-<name>` is a port of the bridge, the pod
    /// routes through `gateway`. Removed with the lab.
    pub fn add_bridged_client_pod(
        &mut self,
        bridge: &str,
        gateway: Ipv4Addr,
        name: &str,
        ip: Ipv4Addr,
    ) -> anyhow::Result<()> {
        let node_ns = self.node_ns().to_string();
        let have_bridge = netns::exec_in(&node_ns, &["ip", "link", "show", bridge])?
            .status
            .success();
        if !have_bridge {
            netns::ip_in(&node_ns, &["link", "add", bridge, "type", "bridge"])?;
            netns::sysctl_in(&node_ns, &format!("net.ipv4.conf.{bridge}.rp_filter"), "0")?;
            netns::ip_in(
                &node_ns,
                &["addr", "add", &format!("{gateway}/24"), "dev", bridge],
            )?;
            netns::ip_in(&node_ns, &["link", "set", bridge, "up"])?;
        }
        let mut pod = Lab::make_pod(&self.id, 1, name, ip);
        pod.node_if = format!("vethbr-{name}");
        self.add_ns(&pod.ns)?;
        netns::ip_in(
            &node_ns,
            &[
                "link",
                "add",
                &pod.node_if,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &pod.ns,
            ],
        )?;
        netns::ip_in(&node_ns, &["link", "set", &pod.node_if, "master", bridge])?;
        netns::ip_in(&node_ns, &["link", "set", &pod.node_if, "up"])?;
        netns::ip_in(
            &pod.ns,
            &["addr", "add", &format!("{ip}/24"), "dev", "eth0"],
        )?;
        netns::ip_in(&pod.ns, &["link", "set", "eth0", "up"])?;
        netns::ip_in(
            &pod.ns,
            &["route", "add", "default", "via", &gateway.to_string()],
        )?;
        self.clients.push(pod);
        Ok(())
    }

    /// Short unique run id (`<pid>-<hex>`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// All nodes, node 1 first.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node number `n` (1-based); panics on a number the lab does not have (a test bug).
    pub fn node(&self, n: usize) -> &Node {
        n.checked_sub(1)
            .and_then(|i| self.nodes.get(i))
            .unwrap_or_else(|| {
                panic!(
                    "svc-lab: no node {n} (nodes are numbered 1..={})",
                    self.nodes.len()
                )
            })
    }

    /// Namespace of node 1 (the single-node lab's node).
    pub fn node_ns(&self) -> &str {
        &self.nodes[0].ns
    }

    /// Namespace of node `n` (1-based).
    pub fn node_ns_of(&self, n: usize) -> &str {
        &self.node(n).ns
    }

    /// eth0 address of node `n` (1-based).
    pub fn node_ip(&self, n: usize) -> Ipv4Addr {
        self.node(n).ip
    }

    /// bpffs dir of node `n` (1-based): `/sys/fs/bpf/svl-<id>-n<N>` (two nodes), or
    /// `/sys/fs/bpf/svl-<id>` for the single-node lab's node.
    pub fn node_bpffs_dir(&self, n: usize) -> PathBuf {
        self.node(n).bpffs_dir.clone()
    }

    /// Namespace of the first client pod ("client", or "ca" in the two-node lab).
    pub fn client_ns(&self) -> &str {
        &self.clients[0].ns
    }

    pub fn ext_ns(&self) -> &str {
        &self.ext_ns
    }

    /// The L2 segment's namespace (holds br0); `None` for the single-node lab.
    pub fn phys_ns(&self) -> Option<&str> {
        self.phys_ns.as_deref()
    }

    /// Namespace of a pod by name ("p1", "client", "a1", "cb", ...).
    pub fn pod_ns(&self, name: &str) -> &str {
        &self.pod(name).ns
    }

    /// IP of a pod by name ("p1", "client", "a1", "cb", ...).
    pub fn pod_ip(&self, name: &str) -> Ipv4Addr {
        self.pod(name).ip
    }

    /// IPv6 address of a pod by name.
    pub fn pod_ip6(&self, name: &str) -> Ipv6Addr {
        self.pod(name).ip6
    }

    /// A pod (backend or client) by name; panics on an unknown name (a test bug).
    pub fn pod(&self, name: &str) -> &Pod {
        self.all_pods()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("svc-lab: no pod named {name:?}"))
    }

    /// The backend pods (the ones running echo servers), in node order.
    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// The backend pods on node `n` (1-based).
    pub fn pods_on(&self, n: usize) -> Vec<&Pod> {
        let n = self.node(n).index;
        self.pods.iter().filter(|p| p.node == n).collect()
    }

    /// The first client pod ("client", or "ca" in the two-node lab).
    pub fn client(&self) -> &Pod {
        &self.clients[0]
    }

    /// All client pods, in node order.
    pub fn clients(&self) -> &[Pod] {
        &self.clients
    }

    /// The client pod on node `n` (1-based).
    pub fn client_on(&self, n: usize) -> &Pod {
        let n = self.node(n).index;
        self.clients
            .iter()
            .find(|p| p.node == n)
            .unwrap_or_else(|| panic!("svc-lab: node {n} has no client pod"))
    }

    /// All namespaces of this lab.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v: Vec<String> = self.nodes.iter().map(|n| n.ns.clone()).collect();
        v.extend(self.phys_ns.clone());
        v.extend(self.all_pods().map(|p| p.ns.clone()));
        v.push(self.ext_ns.clone());
        v
    }

    /// bpffs dir of node 1: `/sys/fs/bpf/svl-<id>` for the single-node lab (see
    /// [`node_bpffs_dir`](Self::node_bpffs_dir)). Removed on drop.
    pub fn bpffs_dir(&self) -> PathBuf {
        self.nodes[0].bpffs_dir.clone()
    }

    /// `ip route replace <cidr> via <node n's eth0 ip>` in ext (its IPv6 address for an IPv6
    /// CIDR), e.g. a ClusterIP range, an externalIP or LoadBalancer range, or pod CIDRs,
    /// towards node `n` (1-based).
    pub fn ext_route(&self, cidr: &str, via_node: usize) -> anyhow::Result<()> {
        anyhow::ensure!(
            via_node >= 1 && via_node <= self.nodes.len(),
            "ext_route({cidr}): no node {via_node} (nodes are numbered 1..={})",
            self.nodes.len()
        );
        // An IPv6 CIDR goes via the node's IPv6 address.
        let node = self.node(via_node);
        let via = if cidr.contains(':') {
            node.ip6.to_string()
        } else {
            node.ip.to_string()
        };
        netns::ip_in(
            &self.ext_ns,
            &["route", "replace", cidr, "via", &via, "dev", NODE_EXT_IF],
        )
        .with_context(|| format!("ext route {cidr} via node{via_node}"))
    }

    /// The MAC address of node `n`'s eth0 (1-based), e.g. to tell which node answers ARP.
    pub fn node_mac(&self, n: usize) -> anyhow::Result<String> {
        // `ip netns exec` mounts the namespace's own /sys: this is the node's eth0.
        let path = format!("/sys/class/net/{NODE_EXT_IF}/address");
        let out = netns::exec_in(self.node_ns_of(n), &["cat", &path])
            .with_context(|| format!("reading node{n}'s MAC"))?;
        anyhow::ensure!(out.status.success(), "cat {path} in node{n} failed");
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// ext's neighbour (ARP) entry for `ip`: the MAC it resolved, if any (`ip neigh show`'s
    /// `lladdr`; an entry still resolving, or failed, has none).
    pub fn ext_neighbour(&self, ip: Ipv4Addr) -> Option<String> {
        let out = netns::exec_in(&self.ext_ns, &["ip", "neigh", "show", &ip.to_string()]).ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut words = text.split_whitespace();
        words.find(|w| *w == "lladdr")?;
        words.next().map(str::to_string)
    }

    /// Sets the MTU of the node's end of pod `name`'s veth (`lxc-<name>`), leaving the pod's
    /// own eth0 (and so the MSS the pod announces) alone: the node, forwarding a larger
    /// packet with DF set toward the pod, answers "fragmentation needed" with this MTU, as a
    /// router in front of a lower-MTU link does. The node's end also drops larger non-GSO
    /// packets the pod sends; lower it for pods that receive the large packets.
    pub fn set_pod_link_mtu(&self, name: &str, mtu: u32) -> anyhow::Result<()> {
        let pod = self.pod(name);
        let ns = self.node(pod.node).ns.clone();
        netns::ip_in(&ns, &["link", "set", &pod.node_if, "mtu", &mtu.to_string()])
            .with_context(|| format!("MTU {mtu} on {} in {ns}", pod.node_if))
    }

    /// Start `cmd` in node 1's network namespace; see [`spawn_in`](Self::spawn_in).
    pub fn spawn_in_node(&mut self, cmd: Command) -> anyhow::Result<NodeProcess> {
        self.spawn_in(1, cmd)
    }

    /// [`spawn_in_node`](Self::spawn_in_node) with stdout and stderr appended to `log`.
    pub fn spawn_in_node_logged(
        &mut self,
        cmd: Command,
        log: &Path,
    ) -> anyhow::Result<NodeProcess> {
        self.spawn_in_logged(1, cmd, log)
    }

    /// Start `cmd` in node `n`'s (1-based) network namespace, keeping the root mount
    /// namespace (so /sys/fs/bpf is visible). The caller's stdio/env/cwd settings on `cmd`
    /// are kept. The process is stopped (SIGTERM, 3 s, SIGKILL) when the lab is dropped.
    pub fn spawn_in(&mut self, n: usize, mut cmd: Command) -> anyhow::Result<NodeProcess> {
        let ns = self.node(n).ns.clone();
        netns::command_in_netns(&mut cmd, &ns)?;
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {:?} in {ns}", cmd.get_program()))?;
        let p = NodeProcess {
            pid: child.id(),
            child: Arc::new(Mutex::new(child)),
        };
        self.children.push(p.clone());
        Ok(p)
    }

    /// [`spawn_in`](Self::spawn_in) with stdout and stderr appended to `log`.
    pub fn spawn_in_logged(
        &mut self,
        n: usize,
        mut cmd: Command,
        log: &Path,
    ) -> anyhow::Result<NodeProcess> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening log {}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(f.try_clone()?).stderr(f);
        self.spawn_in(n, cmd)
    }

    /// Run `args` in namespace `ns` via `ip netns exec` (ad-hoc checks; note it remounts /sys).
    pub fn exec<S: AsRef<std::ffi::OsStr>>(&self, ns: &str, args: &[S]) -> io::Result<Output> {
        netns::exec_in(ns, args)
    }

    /// Remove namespaces and bpffs dirs of earlier runs whose owning process is gone.
    pub fn cleanup_stale() {
        Self::cleanup_where(|pid| !pid_alive(pid));
    }

    /// Remove the cgroups, namespaces and bpffs dirs of labs process `pid` made: what a
    /// process that is stopped by a signal (its Drop guards never run) calls for itself,
    /// after stopping its children.
    pub fn cleanup_owned_by(pid: u32) {
        Self::cleanup_where(|p| p == pid);
    }

    fn cleanup_where(owned: impl Fn(u32) -> bool) {
        if let Ok(root) = cgroup2_root()
            && let Ok(rd) = std::fs::read_dir(&root)
        {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = owner_pid(&name)
                    && owned(pid)
                {
                    remove_cgroup(&e.path());
                }
            }
        }
        for name in netns::list_netns() {
            if let Some(pid) = owner_pid(&name)
                && owned(pid)
                && let Err(e) = netns::delete_netns(&name)
            {
                eprintln!("svc-lab: removing stale netns {name}: {e:#}");
            }
        }
        if let Ok(rd) = std::fs::read_dir(BPFFS) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = owner_pid(&name)
                    && owned(pid)
                    && let Err(err) = std::fs::remove_dir_all(e.path())
                {
                    eprintln!("svc-lab: removing stale {}: {err}", e.path().display());
                }
            }
        }
    }

    /// A cgroup v2 directory for node `n`'s own processes, `<cgroup2 root>/svl-<id>-n<n>`;
    /// made on first use, removed on teardown. The agent's `--cgroup` points here so its
    /// socket-level programs see only the processes the lab starts as "the node itself".
    pub fn node_cgroup(&mut self, n: usize) -> anyhow::Result<PathBuf> {
        let dir = cgroup2_root()?.join(format!("{PREFIX}{}-n{n}", self.id));
        if !self.created_cgroups.contains(&dir) {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            self.created_cgroups.push(dir.clone());
        }
        Ok(dir)
    }

    /// A cgroup for the processes of pod `pod` on node `n`, `<node cgroup>/pod-<pod>`: as a
    /// kubelet puts pods in the node's cgroup tree, so an agent's `--cgroup` on the node's
    /// covers them (its `--socket-lb` decides whether their sockets are translated). Made
    /// (with the node's) on first use, removed on teardown before its parent.
    pub fn pod_cgroup(&mut self, n: usize, pod: &str) -> anyhow::Result<PathBuf> {
        let dir = self.node_cgroup(n)?.join(format!("pod-{pod}"));
        if !self.created_cgroups.contains(&dir) {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            self.created_cgroups.push(dir.clone());
        }
        Ok(dir)
    }

    /// A command that runs as a process of node `n` itself: in the node's network
    /// namespace and in its cgroup (see `node_cgroup`), entered before exec so its first
    /// connect already goes through the node's socket-level programs.
    /// The cgroup must exist already (`node_cgroup`).
    pub fn node_command(&self, n: usize, program: &str) -> anyhow::Result<Command> {
        let dir = cgroup2_root()?.join(format!("{PREFIX}{}-n{n}", self.id));
        command_in(self.node_ns_of(n), &dir, program)
    }

    /// A command that runs as a process of pod `pod` on node `n`: in the pod's network
    /// namespace and its cgroup (see `pod_cgroup`, which must have made it).
    pub fn pod_command(&self, n: usize, pod: &str, program: &str) -> anyhow::Result<Command> {
        let dir = cgroup2_root()?
            .join(format!("{PREFIX}{}-n{n}", self.id))
            .join(format!("pod-{pod}"));
        command_in(self.pod_ns(pod), &dir, program)
    }

    /// `count` new connections (or UDP flows) to `to` from one process of node `n` itself
    /// (a Python client started by [`node_command`](Self::node_command): through the node's
    /// socket-level programs), bound to `bind` if given: each the echo server's reply, or the
    /// error the call failed with (`ConnectionRefused` for ECONNREFUSED, `PermissionDenied`
    /// for EPERM, `TimedOut`, `NetworkUnreachable`, `HostUnreachable`, else `Other`). One
    /// process for all of them: starting Python is the slow part. The node's cgroup must
    /// exist (`node_cgroup`).
    pub fn node_requests(
        &self,
        n: usize,
        bind: Option<Ipv4Addr>,
        to: SocketAddrV4,
        udp: bool,
        count: usize,
        timeout: Duration,
    ) -> Vec<io::Result<EchoReply>> {
        let cmd = self.node_command(n, "python3");
        client_requests(
            cmd,
            &format!("node{n} process"),
            bind,
            to,
            udp,
            count,
            timeout,
        )
    }

    /// As [`node_requests`](Self::node_requests), from one process of pod `pod` on node
    /// `n` (in its namespace and cgroup: `pod_cgroup` must have made it).
    pub fn pod_requests(
        &self,
        n: usize,
        pod: &str,
        to: SocketAddrV4,
        udp: bool,
        count: usize,
        timeout: Duration,
    ) -> Vec<io::Result<EchoReply>> {
        let cmd = self.pod_command(n, pod, "python3");
        client_requests(
            cmd,
            &format!("pod {pod} process"),
            None,
            to,
            udp,
            count,
            timeout,
        )
    }

    /// Tear everything down now; idempotent, never panics, logs failures to stderr.
    pub fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        // Children first: they may hold BPF links and pinned maps in the lab's bpffs dirs.
        for c in self.children.drain(..) {
            if let Err(e) = c.stop() {
                eprintln!("svc-lab: stopping pid {}: {e}", c.pid);
            }
        }
        for mut echo in self.extra_echo.drain(..) {
            echo.stop();
        }
        if let Some(mut echo) = self.echo.take() {
            echo.stop();
        }
        // Children (pods') were made after their parents: removed first.
        for cg in self.created_cgroups.drain(..).rev() {
            remove_cgroup(&cg);
        }
        // Deleting a node namespace destroys its veths and any programs attached to them.
        for ns in self.created_ns.drain(..).rev() {
            if let Err(e) = netns::delete_netns(&ns) {
                eprintln!("svc-lab: deleting netns {ns}: {e:#}");
            }
        }
        for dir in self.created_dirs.drain(..) {
            if dir.exists()
                && let Err(e) = std::fs::remove_dir_all(&dir)
            {
                eprintln!("svc-lab: removing {}: {e}", dir.display());
            }
        }
    }
}

/// Where the cgroup v2 hierarchy is mounted: /sys/fs/cgroup on unified systems,
/// /sys/fs/cgroup/unified on hybrid ones.
pub fn cgroup2_root() -> anyhow::Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, kind) = (f.next()?, f.next()?, f.next()?);
            (kind == "cgroup2").then(|| PathBuf::from(dir))
        })
        .min_by_key(|p| p.as_os_str().len())
        .context("no cgroup2 filesystem is mounted")
}

/// Removes a lab cgroup once its processes are gone (rmdir of an empty cgroup).
/// `count` new connections (or UDP flows, connected sockets) to `to` from one Python
/// process started by `cmd` (see [`Lab::node_requests`]); `who` names it in errors.
fn client_requests(
    cmd: anyhow::Result<Command>,
    who: &str,
    bind: Option<Ipv4Addr>,
    to: SocketAddrV4,
    udp: bool,
    count: usize,
    timeout: Duration,
) -> Vec<io::Result<EchoReply>> {
    client_lines(
        cmd,
        who,
        bind.map(IpAddr::V4),
        to.into(),
        udp,
        count,
        timeout,
    )
    .into_iter()
    .map(|line| line.and_then(|l| EchoReply::parse(&l)))
    .collect()
}

/// [`Lab::node_requests6`]'s answer: the pod that answered and the client address it saw.
pub type Reply6 = (String, SocketAddr);

impl Lab {
    /// [`node_requests`](Self::node_requests) over IPv6 (or to a v4-mapped address, from an
    /// IPv6 socket): each answer as the pod and the client it saw.
    pub fn node_requests6(
        &self,
        n: usize,
        to: SocketAddrV6,
        udp: bool,
        count: usize,
        timeout: Duration,
    ) -> Vec<io::Result<Reply6>> {
        let cmd = self.node_command(n, "python3");
        client_lines(
            cmd,
            &format!("node{n} process"),
            None,
            to.into(),
            udp,
            count,
            timeout,
        )
        .into_iter()
        .map(|line| line.and_then(|l| parse_reply6(&l)))
        .collect()
    }
}

/// `<pod> <client>[ <rest>]`, the client in either family.
pub fn parse_reply6(line: &str) -> io::Result<Reply6> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad echo reply: {line:?}"),
        )
    };
    let mut words = line.split_whitespace();
    let pod = words.next().ok_or_else(bad)?;
    let client = words.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    Ok((pod.to_string(), client))
}

/// The requests of [`client_requests`], to either family: each the reply line, or the
/// error the call failed with.
fn client_lines(
    cmd: anyhow::Result<Command>,
    who: &str,
    bind: Option<IpAddr>,
    to: SocketAddr,
    udp: bool,
    count: usize,
    timeout: Duration,
) -> Vec<io::Result<String>> {
    const CLIENT: &str = r#"
import errno, socket, sys
host, port, udp, timeout, n, bind = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "udp", float(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
family = socket.AF_INET6 if ":" in host else socket.AF_INET
for _ in range(n):
    s = socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        if bind != "-":
            s.bind((bind, 0))
        s.connect((host, port))
        s.sendall(b"node\n")
        print("OK", s.recv(200).decode().splitlines()[0], flush=True)
    except socket.timeout:
        print("ERR ETIMEDOUT", flush=True)
    except OSError as e:
        print("ERR", errno.errorcode.get(e.errno, e.errno), flush=True)
    finally:
        s.close()
"#;
    let out = cmd.map_err(io::Error::other).and_then(|mut cmd| {
        cmd.args(["-c", CLIENT, &to.ip().to_string(), &to.port().to_string()])
            .arg(if udp { "udp" } else { "tcp" })
            .arg(format!("{:.1}", timeout.as_secs_f64()))
            .arg(count.to_string())
            .arg(bind.map_or("-".to_string(), |b| b.to_string()))
            .output()
    });
    let out = match out {
        Ok(out) => out,
        Err(e) => return vec![Err(e)],
    };
    let results: Vec<io::Result<String>> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| match line.split_once(' ') {
            Some(("OK", reply)) => Ok(reply.to_string()),
            Some(("ERR", errno)) => Err(io::Error::new(
                match errno {
                    "ECONNREFUSED" => io::ErrorKind::ConnectionRefused,
                    "EPERM" => io::ErrorKind::PermissionDenied,
                    "ETIMEDOUT" => io::ErrorKind::TimedOut,
                    "ENETUNREACH" => io::ErrorKind::NetworkUnreachable,
                    "EHOSTUNREACH" => io::ErrorKind::HostUnreachable,
                    _ => io::ErrorKind::Other,
                },
                format!("{who}: {errno}"),
            )),
            _ => Err(io::Error::other(format!("{who} said {line:?}"))),
        })
        .collect();
    if results.len() != count {
        return vec![Err(io::Error::other(format!(
            "{who} gave {} of {count} results: {}",
            results.len(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))];
    }
    results
}

/// `program` run in network namespace `ns` and cgroup `cgroup`, both entered before exec.
fn command_in(ns: &str, cgroup: &Path, program: &str) -> anyhow::Result<Command> {
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(cgroup.join("cgroup.procs"))
        .with_context(|| {
            format!(
                "opening {}/cgroup.procs (make the cgroup first)",
                cgroup.display()
            )
        })?;
    let mut cmd = Command::new(program);
    netns::command_in_netns(&mut cmd, ns)?;
    // SAFETY: between fork and exec; only write(2) on an fd opened before the fork.
    unsafe {
        use std::os::unix::{io::AsRawFd as _, process::CommandExt as _};
        cmd.pre_exec(move || {
            // "0" moves the writing process itself.
            if libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd)
}

/// Removes a cgroup and the cgroups below it (a node's holds its pods').
fn remove_cgroup(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path());
            }
        }
    }
    for _ in 0..20 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            // Busy: a process is still exiting.
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
    eprintln!("svc-lab: could not remove cgroup {}", dir.display());
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_twins_read_like_their_ipv4_addresses() {
        let twin = |s: &str| ipv6_twin(s.parse().unwrap()).to_string();
        assert_eq!(twin("10.244.1.11"), "fd00:10:244:1::11");
        assert_eq!(twin("10.244.2.20"), "fd00:10:244:2::20");
        assert_eq!(twin("192.0.2.100"), "fd00:192:0:2::100");
        assert_eq!(twin("255.255.255.255"), "fd00:255:255:255::255");
        assert_eq!(cidr6_twin(POD_CIDR), POD_CIDR6);
        assert_eq!(cidr6_twin(NODE2_POD_CIDR), NODE2_POD_CIDR6);
        assert_eq!(cidr6_twin(CLUSTER_POD_CIDR), CLUSTER_POD_CIDR6);
        // Every pod twin is inside its node's IPv6 pod CIDR.
        for (node, _, ip, _) in TWO_NODE_PODS {
            let prefix = if node == 1 {
                "fd00:10:244:1::"
            } else {
                "fd00:10:244:2::"
            };
            assert!(ipv6_twin(ip).to_string().starts_with(prefix));
        }
    }
}
