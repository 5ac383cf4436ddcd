//! svc-lab: a throw-away Kubernetes-like node built from network namespaces, for e2e tests,
//! the `cargo xtask run` demo and benchmarks. Nothing is created in the root network namespace.
//!
//! Topology (every address lives only inside the lab's namespaces):
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

pub mod agent;
pub mod client;
pub mod echo;
pub mod netns;

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;

pub use client::{TcpSession, UdpSession, tcp_request, udp_request};
pub use echo::{EchoReply, EchoServers};
pub use netns::{in_netns, try_in_netns};

/// Prefix of every namespace and bpffs dir the lab creates; `cleanup_stale` keys on it.
pub const PREFIX: &str = "svl-";
/// Pod network of the (single) node.
pub const POD_CIDR: &str = "10.244.1.0/24";
/// Cluster-wide pod range, routed by ext towards the node.
pub const CLUSTER_POD_CIDR: &str = "10.244.0.0/16";
/// Service (ClusterIP) range, routed by ext towards the node.
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
/// Gateway address every pod uses; the node holds it (/32) on every lxc-* interface.
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);
pub const P1_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 11);
pub const P2_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 12);
pub const P3_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 13);
/// The client pod (not a backend).
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 20);
/// Node address on its "external" interface eth0.
pub const NODE_EXT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The outside host.
pub const EXT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
pub const EXT_PREFIX_LEN: u8 = 24;
/// Interface name of the node's external link (and of the ext host's link).
pub const NODE_EXT_IF: &str = "eth0";
/// Port of the TCP and UDP echo servers in every backend pod.
pub const ECHO_PORT: u16 = 8080;
/// Backend pod names, in order.
pub const BACKENDS: [&str; 3] = ["p1", "p2", "p3"];
pub const CLIENT_POD: &str = "client";

/// One pod of the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// Short name: "p1", "p2", "p3" or "client"; also what the echo servers report.
    pub name: String,
    pub ip: Ipv4Addr,
    /// Network namespace name (`svl-<id>-<name>`).
    pub ns: String,
    /// Node-side veth name (`lxc-<name>`).
    pub node_if: String,
}

impl Pod {
    /// The pod's echo endpoint `ip:8080`.
    pub fn echo_addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.ip, ECHO_PORT)
    }
}

/// A process started in the node namespace; shared with the [`Lab`], which kills it on drop.
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

/// The lab: namespaces, veths, routes, echo servers, bpffs dir and node processes.
/// Everything is torn down on drop (also when unwinding from a panic).
pub struct Lab {
    id: String,
    node_ns: String,
    ext_ns: String,
    pods: Vec<Pod>,
    client: Pod,
    /// Namespaces actually created, so a half-built lab tears down exactly what exists.
    created_ns: Vec<String>,
    bpffs_dir: PathBuf,
    bpffs_created: bool,
    echo: Option<EchoServers>,
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
        if !netns::netns_path(&format!("{PREFIX}{id}-node")).exists() {
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

impl Lab {
    /// Build the whole lab. Needs root. Removes leftovers of dead earlier runs first.
    pub fn up() -> anyhow::Result<Lab> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            anyhow::bail!("svc-lab needs root (network namespaces, veths, bpffs); run as root");
        }
        Lab::cleanup_stale();
        ensure_bpffs()?;

        let id = new_run_id();
        let ns = |n: &str| format!("{PREFIX}{id}-{n}");
        let pod = |name: &str, ip| Pod {
            name: name.into(),
            ip,
            ns: ns(name),
            node_if: format!("lxc-{name}"),
        };
        let mut lab = Lab {
            node_ns: ns("node"),
            ext_ns: ns("ext"),
            pods: vec![pod("p1", P1_IP), pod("p2", P2_IP), pod("p3", P3_IP)],
            client: pod(CLIENT_POD, CLIENT_IP),
            created_ns: Vec::new(),
            bpffs_dir: PathBuf::from(BPFFS).join(format!("{PREFIX}{id}")),
            bpffs_created: false,
            echo: None,
            children: Vec::new(),
            torn_down: false,
            id,
        };
        // On error `lab` is dropped here and removes whatever was built so far.
        lab.build()
            .with_context(|| format!("building lab {}", lab.id))?;
        Ok(lab)
    }

    fn add_ns(&mut self, name: &str) -> anyhow::Result<()> {
        netns::run_checked("ip", &["netns", "add", name])?;
        self.created_ns.push(name.to_string());
        netns::ip_in(name, &["link", "set", "lo", "up"])
    }

    fn build(&mut self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.bpffs_dir)
            .with_context(|| format!("mkdir {}", self.bpffs_dir.display()))?;
        self.bpffs_created = true;

        let node = self.node_ns.clone();
        self.add_ns(&node)?;
        // Before any interface exists, so new interfaces inherit `default`.
        for (k, v) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ] {
            netns::sysctl_in(&node, k, v)?;
        }

        let gw = format!("{POD_GATEWAY}/32");
        let gw_host = POD_GATEWAY.to_string();
        for p in self
            .pods
            .clone()
            .iter()
            .chain(std::iter::once(&self.client.clone()))
        {
            self.add_ns(&p.ns)?;
            let ip32 = format!("{}/32", p.ip);
            // Created from inside the node namespace with the peer moved straight into the
            // pod, so no end ever shows up in the root namespace.
            netns::ip_in(
                &node,
                &[
                    "link", "add", &p.node_if, "type", "veth", "peer", "name", "eth0", "netns",
                    &p.ns,
                ],
            )?;
            netns::sysctl_in(
                &node,
                &format!("net.ipv4.conf.{}.rp_filter", p.node_if),
                "0",
            )?;
            netns::ip_in(&node, &["addr", "add", &gw, "dev", &p.node_if])?;
            netns::ip_in(&node, &["link", "set", &p.node_if, "up"])?;
            netns::ip_in(&node, &["route", "add", &ip32, "dev", &p.node_if])?;

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
        }

        let ext = self.ext_ns.clone();
        self.add_ns(&ext)?;
        netns::ip_in(
            &node,
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
            &node,
            &format!("net.ipv4.conf.{NODE_EXT_IF}.rp_filter"),
            "0",
        )?;
        netns::ip_in(
            &node,
            &[
                "addr",
                "add",
                &format!("{NODE_EXT_IP}/{EXT_PREFIX_LEN}"),
                "dev",
                NODE_EXT_IF,
            ],
        )?;
        netns::ip_in(&node, &["link", "set", NODE_EXT_IF, "up"])?;
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
        netns::ip_in(&ext, &["link", "set", "eth0", "up"])?;
        let via = NODE_EXT_IP.to_string();
        netns::ip_in(&ext, &["route", "add", SERVICE_CIDR, "via", &via])?;
        netns::ip_in(&ext, &["route", "add", CLUSTER_POD_CIDR, "via", &via])?;
        // An XDP program on the node's eth0 cannot complete CHECKSUM_PARTIAL packets, so
        // ext must send fully checksummed frames.
        let out = netns::exec_in(&ext, &["ethtool", "-K", "eth0", "tx", "off"])?;
        anyhow::ensure!(
            out.status.success(),
            "ethtool -K eth0 tx off in {ext}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );

        let backends: Vec<(String, String)> = self
            .pods
            .iter()
            .map(|p| (p.name.clone(), p.ns.clone()))
            .collect();
        self.echo = Some(EchoServers::start(&backends, ECHO_PORT)?);
        Ok(())
    }

    /// Short unique run id (`<pid>-<hex>`).
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn node_ns(&self) -> &str {
        &self.node_ns
    }

    pub fn client_ns(&self) -> &str {
        &self.client.ns
    }

    pub fn ext_ns(&self) -> &str {
        &self.ext_ns
    }

    /// Namespace of a pod by name ("p1", "p2", "p3", "client").
    pub fn pod_ns(&self, name: &str) -> &str {
        &self.pod(name).ns
    }

    /// IP of a pod by name ("p1", "p2", "p3", "client").
    pub fn pod_ip(&self, name: &str) -> Ipv4Addr {
        self.pod(name).ip
    }

    /// A pod by name; panics on an unknown name (a test bug).
    pub fn pod(&self, name: &str) -> &Pod {
        self.pods
            .iter()
            .chain(std::iter::once(&self.client))
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("svc-lab: no pod named {name:?}"))
    }

    /// The backend pods p1..p3 (the ones running echo servers).
    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// The client pod (not a backend).
    pub fn client(&self) -> &Pod {
        &self.client
    }

    /// All namespaces of this lab.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v = vec![self.node_ns.clone()];
        v.extend(self.pods.iter().map(|p| p.ns.clone()));
        v.push(self.client.ns.clone());
        v.push(self.ext_ns.clone());
        v
    }

    /// Per-lab bpffs directory `/sys/fs/bpf/svl-<id>`, removed on drop.
    pub fn bpffs_dir(&self) -> PathBuf {
        self.bpffs_dir.clone()
    }

    /// Start `cmd` in the node's network namespace, keeping the root mount namespace (so
    /// /sys/fs/bpf is visible). The caller's stdio/env/cwd settings on `cmd` are kept.
    /// The process is stopped (SIGTERM, 3 s, SIGKILL) when the lab is dropped.
    pub fn spawn_in_node(&mut self, mut cmd: Command) -> anyhow::Result<NodeProcess> {
        netns::command_in_netns(&mut cmd, &self.node_ns)?;
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {:?} in {}", cmd.get_program(), self.node_ns))?;
        let p = NodeProcess {
            pid: child.id(),
            child: Arc::new(Mutex::new(child)),
        };
        self.children.push(p.clone());
        Ok(p)
    }

    /// [`spawn_in_node`](Self::spawn_in_node) with stdout and stderr appended to `log`.
    pub fn spawn_in_node_logged(
        &mut self,
        mut cmd: Command,
        log: &Path,
    ) -> anyhow::Result<NodeProcess> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening log {}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(f.try_clone()?).stderr(f);
        self.spawn_in_node(cmd)
    }

    /// Run `args` in namespace `ns` via `ip netns exec` (ad-hoc checks; note it remounts /sys).
    pub fn exec<S: AsRef<std::ffi::OsStr>>(&self, ns: &str, args: &[S]) -> io::Result<Output> {
        netns::exec_in(ns, args)
    }

    /// Remove namespaces and bpffs dirs of earlier runs whose owning process is gone.
    pub fn cleanup_stale() {
        for name in netns::list_netns() {
            if let Some(pid) = owner_pid(&name)
                && !pid_alive(pid)
                && let Err(e) = netns::delete_netns(&name)
            {
                eprintln!("svc-lab: removing stale netns {name}: {e:#}");
            }
        }
        if let Ok(rd) = std::fs::read_dir(BPFFS) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = owner_pid(&name)
                    && !pid_alive(pid)
                    && let Err(err) = std::fs::remove_dir_all(e.path())
                {
                    eprintln!("svc-lab: removing stale {}: {err}", e.path().display());
                }
            }
        }
    }

    /// Tear everything down now; idempotent, never panics, logs failures to stderr.
    pub fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        // Children first: they may hold BPF links and pinned maps in the lab's bpffs dir.
        for c in self.children.drain(..) {
            if let Err(e) = c.stop() {
                eprintln!("svc-lab: stopping pid {}: {e}", c.pid);
            }
        }
        if let Some(mut echo) = self.echo.take() {
            echo.stop();
        }
        // Deleting the node namespace destroys the veths and any programs attached to them.
        for ns in self.created_ns.drain(..).rev() {
            if let Err(e) = netns::delete_netns(&ns) {
                eprintln!("svc-lab: deleting netns {ns}: {e:#}");
            }
        }
        if self.bpffs_created
            && self.bpffs_dir.exists()
            && let Err(e) = std::fs::remove_dir_all(&self.bpffs_dir)
        {
            eprintln!("svc-lab: removing {}: {e}", self.bpffs_dir.display());
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}
