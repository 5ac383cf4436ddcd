//! svc-agent: keeps the eBPF Service maps in sync with the Services and endpoints it reads.
use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use anyhow::Context;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, parser::ValueSource};
use svc_agent::kubeproxy_config::{self, NoticeKind};
use svc_agent::kubernetes::lease::LeaseTiming;
use svc_agent::{
    agent::{Agent, Config, DetectLocalMode, LbConfig, LocalDetection, SourceConfig},
    dataplane::{
        self, DEFAULT_BPFFS_DIR, DatapathConfig, IfRunning, MapSizes,
        report::{self, Task},
    },
    desired::{ExternalIpPolicy, IpCidr, NodeContext},
    http::StatusAddrs,
    kubernetes,
};
use tracing::{info, warn};

/// Where manifest mode reads when there is neither --manifests nor a cluster.
const DEFAULT_MANIFESTS_DIR: &str = "/etc/svc-agent/manifests";

/// The pod interfaces of the common CNIs (README "The agent", Interfaces): Calico, Cilium,
/// Flannel / the bridge plugin / kindnet / Weave (`vethwe*` is within `veth*`), the AWS VPC
/// CNI, Azure CNI, GKE.
const DEFAULT_POD_DEVICES: [&str; 6] = ["cali*", "lxc*", "veth*", "eni*", "azv*", "gke*"];

/// A Kubernetes Service dataplane on eBPF (a kube-proxy replacement).
///
/// Loads the TC, XDP and cgroup programs, pins their maps and links under --bpffs, and keeps
/// the maps in sync with the cluster's Services and EndpointSlices. The source is, in this
/// order: --manifests DIR (Service / EndpointSlice / Endpoints manifests, as `kubectl apply
/// -f` takes them, re-read when a file changes); --kubeconfig FILE; the Kubernetes API found
/// the way kubectl finds it (in-cluster service account, KUBECONFIG, ~/.kube/config); and,
/// with no cluster at all, manifests in /etc/svc-agent/manifests. Invalid objects are
/// reported with their namespace/name and the reason and skipped, leaving the others
/// untouched. Inspect the maps with `svcctl dump`.
#[derive(Debug, Parser)]
#[command(
    name = "svc-agent",
    version,
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: Args,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Detach every program and unpin every map and link under --bpffs, like kube-proxy's
    /// --cleanup, and list what was removed. Stop the agent first (on a cluster: delete the
    /// DaemonSet); established connections through Services break.
    ///
    /// Refuses while an svc-agent runs on --bpffs (it holds the directory's lock; the
    /// message names its pid), unless --force. Exit status: 0 when something was removed; 3
    /// when there was nothing to clean up (the directory does not exist, or holds none of
    /// svc-agent's pins: a mistyped path is not a successful uninstall); 1 on an error
    /// (an agent running, permissions, ...); 2 on a usage error.
    #[command(after_help = CLEANUP_AFTER_HELP)]
    Cleanup {
        /// bpffs directory the agent pinned its maps and links in.
        #[arg(long, value_name = "DIR", env = "SVC_BPFFS", default_value = DEFAULT_BPFFS_DIR)]
        bpffs: PathBuf,

        /// Unpin even while an svc-agent runs on --bpffs. Its programs are detached, and it
        /// keeps running on maps nobody can see (svcctl says nothing is pinned): stop it too.
        #[arg(long)]
        force: bool,
    },
}

/// `svc-agent cleanup`'s exit status when there was nothing to clean up.
const EXIT_NOTHING_TO_CLEAN: u8 = 3;

const CLEANUP_AFTER_HELP: &str = "\
Exit status: 0 removed; 1 error (e.g. an agent still runs on --bpffs); 2 usage error;
3 nothing to clean up (no such directory, or none of svc-agent's pins in it).

Example:
  svc-agent cleanup --bpffs /sys/fs/bpf/svc-ebpf";

#[derive(Debug, clap::Args)]
struct Args {
    /// kube-proxy's configuration file (a KubeProxyConfiguration,
    /// kubeproxy.config.k8s.io/v1alpha1, YAML or JSON: on a kubeadm cluster the
    /// `config.conf` of the ConfigMap kube-system/kube-proxy), as kube-proxy's --config.
    /// Its fields that mean what a flag here means set that flag's default: clusterCIDR,
    /// nodePortAddresses, iptables/nftables.masqueradeAll, iptables.localhostNodePorts,
    /// bindAddress, healthzBindAddress, metricsBindAddress, detectLocalMode, detectLocal.*,
    /// hostnameOverride, clientConnection.kubeconfig and the mode's syncPeriod
    /// (--resync-interval); a flag given on the command line (or by its environment
    /// variable) wins. Fields svc-agent does not act on (conntrack, ipvs, featureGates...)
    /// and unknown ones are logged by name with the reason. An unreadable file, a wrong
    /// apiVersion or kind, a field of the wrong type or an invalid value stops the agent
    /// before it changes anything.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// kube-proxy's --cleanup: do what `svc-agent cleanup` does (on --bpffs) and exit,
    /// with its exit status.
    #[arg(long)]
    cleanup: bool,

    /// kube-proxy's --bind-address: this node's primary address of its family (like
    /// --node-ip with that one address, which wins when given). 0.0.0.0 or :: (kube-proxy's
    /// default): not set.
    #[arg(long, value_name = "IP")]
    bind_address: Option<IpAddr>,

    /// kube-proxy's --proxy-mode (iptables, ipvs, nftables): accepted and ignored, logged;
    /// svc-agent's eBPF dataplane replaces every one of them.
    #[arg(long, value_name = "MODE", value_parser = parse_proxy_mode)]
    proxy_mode: Option<String>,

    /// Serve the Service / EndpointSlice / Endpoints manifests of this directory instead of
    /// a cluster's (manifest mode).
    #[arg(
        long,
        value_name = "DIR",
        env = "SVC_MANIFESTS",
        conflicts_with = "kubeconfig"
    )]
    manifests: Option<PathBuf>,

    /// Watch the cluster of this kubeconfig file. Without it (and without --manifests) the
    /// agent uses the in-cluster service account, then KUBECONFIG, then ~/.kube/config.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,

    /// An external interface of the node: traffic arriving from outside. Repeatable (a
    /// node with several NICs). Each gets the XDP program (native mode where the driver
    /// supports it) and the TC ingress program, which answers for Services without
    /// endpoints; NodePorts answer on each one's IPv4 and global IPv6 addresses too
    /// (besides --node-ip, as --node-port-addresses allows; never on link-local ones).
    #[arg(long = "device", value_name = "IFACE")]
    devices: Vec<String>,

    /// Pod-facing interfaces (host side of pod veths) that get the TC ingress program.
    /// An exact name, or a prefix ending in `*` (quote it in the shell). Repeatable; given,
    /// it replaces the default, which covers the common CNIs: Calico `cali*`, Cilium
    /// `lxc*`, Flannel / bridge / kindnet / Weave (`vethwe*`) `veth*`, AWS VPC CNI `eni*`,
    /// Azure `azv*`, GKE `gke*`. Interfaces that appear later are picked up on the next
    /// poll; a --device never counts as one.
    #[arg(long = "pod-device", value_name = "PATTERN", default_values_t = DEFAULT_POD_DEVICES.map(String::from))]
    pod_devices: Vec<String>,

    /// A cgroup v2 directory: connections and datagrams that processes in it (and in its
    /// descendants) send to a Service address go straight to a backend (socket-level load
    /// balancing, for the node's own traffic, which never crosses the TC or XDP hooks). On
    /// a node that is the host's cgroup root (e.g. /sys/fs/cgroup); not set: the node's own
    /// traffic to Services is not translated.
    #[arg(long, value_name = "DIR")]
    cgroup: Option<PathBuf>,

    /// Whose sockets under --cgroup are translated at connect()/sendmsg() (socket-level load
    /// balancing, Cilium's default). `node`: only the node's own processes (its network
    /// namespace); pods' sockets, though in the cgroup, go out untouched and their packets
    /// are translated by TC, so sidecars and service meshes in a pod see the Service
    /// address (Cilium's `hostNamespaceOnly`). `all`: pods' TCP connections and UDP
    /// datagrams to ClusterIPs too, with no per-packet NAT for them (what needs a packet
    /// rule stays with TC: external addresses, session affinity, --masquerade-all,
    /// refusals). `off`: no socket programs at all, even with --cgroup.
    #[arg(long, value_enum, value_name = "WHO", default_value_t = SocketLb::Node)]
    socket_lb: SocketLb,

    /// This node's name (the Node object's name). Endpoints whose nodeName matches are
    /// local: traffic policy Local uses only those; EndpointSlice `forNodes` hints naming
    /// it keep new connections on them (trafficDistribution PreferSameNode; see
    /// --node-zone). In Kubernetes mode the agent also watches this Node for its addresses,
    /// its zone label and /healthz.
    #[arg(
        long,
        value_name = "NAME",
        env = "NODE_NAME",
        visible_alias = "hostname-override"
    )]
    node_name: Option<String>,

    /// This node's addresses, IPv4 and IPv6. Repeatable, or comma-separated (as kubelet's
    /// --node-ip). NodePort Services answer on them (see --node-port-addresses); the first
    /// of each family is the source address of that family's masqueraded flows. Not
    /// given, in Kubernetes mode: the Node object's InternalIP addresses.
    #[arg(long = "node-ip", value_name = "IP", value_delimiter = ',')]
    node_ips: Vec<IpAddr>,

    /// This node's zone, for topology-aware routing: where every ready endpoint of a
    /// Service port has an EndpointSlice `forZones` hint (the EndpointSlice controller writes
    /// them for trafficDistribution PreferClose / PreferSameZone / PreferSameNode) and one
    /// names this zone, new connections go only to the endpoints hinted for it. Not given,
    /// in Kubernetes mode: the Node object's topology.kubernetes.io/zone label; in
    /// manifest mode: no zone (zone hints are ignored). `forNodes` hints match
    /// --node-name.
    #[arg(long, value_name = "ZONE", env = "NODE_ZONE", value_parser = parse_zone)]
    node_zone: Option<String>,

    /// Like kube-proxy's --nodeport-addresses: NodePorts answer only on the node addresses
    /// inside these CIDRs (and, for the node's own processes, on 127.0.0.1 if a CIDR
    /// contains it: see --localhost-nodeports). Repeatable; default: on every node address
    /// and 127.0.0.1. Per family, as kube-proxy's proxiers each keep their family's CIDRs:
    /// a family with no CIDR here answers on every node address of that family. kube-proxy's
    /// words work too: `all` (0.0.0.0/0 and ::/0), `localhost` (127.0.0.0/8 and ::1/128),
    /// `primary` (the node's first address of each family; needs --node-ip).
    #[arg(
        long = "node-port-addresses",
        visible_alias = "nodeport-addresses",
        value_name = "CIDR|all|localhost|primary",
        value_delimiter = ',',
        value_parser = parse_node_port_address
    )]
    node_port_addresses: Vec<NodePortArg>,

    /// Serve a Service's spec.externalIPs only inside these CIDRs (comma-separated), or
    /// not at all (`none`); an externalIP outside is skipped with a problem naming the
    /// Service (log, svcctl dump), its other addresses are served. Default (`all`): every
    /// externalIP, as kube-proxy. Whoever may create a Service can otherwise claim any
    /// address with an externalIP (CVE-2020-8554); in a cluster the DenyServiceExternalIPs
    /// admission plugin (or a policy engine) stops that at the API server, and kube-proxy
    /// has no such flag: this is the same idea at the node. LoadBalancer ingress IPs (set
    /// by a controller) are not affected. Both families: an externalIP is allowed by a CIDR
    /// of its own family (IPv4 CIDRs only: no IPv6 externalIP is served).
    #[arg(long, value_name = "CIDR,...|none", value_parser = parse_external_ip_cidrs)]
    external_ip_cidrs: Option<ExternalIpArg>,

    /// The cluster's pod CIDRs (e.g. 10.244.0.0/16): with --detect-local-mode ClusterCIDR
    /// (the default), sources inside one of them are pods. Repeatable, or comma-separated
    /// (a dual-stack cluster's IPv6 ranges tell IPv6 pods, as kube-proxy's IPv6 proxier
    /// takes them). ClusterIP traffic from elsewhere is masqueraded; without any,
    /// ClusterIP traffic never is.
    #[arg(long = "cluster-cidr", value_name = "CIDR", value_delimiter = ',', value_parser = parse_range_cidr)]
    cluster_cidrs: Vec<RangeCidr>,

    /// How traffic from pods is told apart, as kube-proxy's --detect-local-mode:
    /// `ClusterCIDR` (default: the source is in a --cluster-cidr), `NodeCIDR` (the source
    /// is in this Node's spec.podCIDRs; Kubernetes mode with --node-name; the agent waits
    /// for them at start and follows them), `InterfaceNamePrefix` (the packet entered
    /// through a pod interface: see --pod-interface-name-prefix), `BridgeInterface` (the
    /// same, with --pod-bridge-interface). Pod interfaces are the ones that get TC as
    /// pod-facing: --pod-device matches, plus the prefix or the bridge.
    #[arg(long, value_name = "MODE", default_value = "ClusterCIDR")]
    detect_local_mode: DetectLocalMode,

    /// With --detect-local-mode InterfaceNamePrefix: pod interfaces are those whose name
    /// starts with this (e.g. `veth`); they get the TC program like --pod-device ones.
    #[arg(long, value_name = "PREFIX")]
    pod_interface_name_prefix: Option<String>,

    /// With --detect-local-mode BridgeInterface: the bridge the pods are attached to (e.g.
    /// `cbr0`); it gets the TC program and counts as a pod interface. Its ports (the pods'
    /// veths) should match --pod-device, so a reply bridged between two pods is translated.
    #[arg(long, value_name = "IFACE")]
    pod_bridge_interface: Option<String>,

    /// The service CIDRs, as kube-apiserver's flag of that name (comma-separated, or
    /// repeated), used only while no ServiceCIDR object (networking.k8s.io/v1) exists: in
    /// a cluster the API server makes one (`kubernetes`) from its own flag, and the agent
    /// watches them; in manifest mode ServiceCIDR manifests count as well. As kube-proxy's
    /// nftables mode does, a packet to an address inside the service CIDRs that no Service
    /// has is dropped (a node process gets EPERM), while a packet to a ClusterIP on a port
    /// or protocol no Service has is rejected (TCP RST / ICMP port unreachable; a node
    /// process: ECONNREFUSED) whatever the CIDRs. Without any service CIDR, packets to
    /// unallocated addresses are passed on to routing. Both families (kube-apiserver's form
    /// is one CIDR per family); a CIDR holding one of this node's addresses is not used (it
    /// would drop the node's own traffic).
    #[arg(
        long,
        value_name = "CIDR,...",
        value_delimiter = ',',
        value_parser = parse_range_cidr
    )]
    service_cluster_ip_range: Vec<RangeCidr>,

    /// Masquerade all traffic to ClusterIPs to the node address, pods' too (kube-proxy's
    /// --masquerade-all). Like kube-proxy's, it applies to ClusterIP traffic only: the
    /// NodePorts, externalIPs and LoadBalancer IPs of an externalTrafficPolicy Local
    /// Service keep the client's address (with policy Cluster they are masqueraded
    /// anyway).
    #[arg(long)]
    masquerade_all: bool,

    /// Localhost NodePorts, as kube-proxy's --iptables-localhost-nodeports (an alias
    /// here): the node's own processes (those in --cgroup) reach every NodePort on
    /// 127.0.0.1 too, with the node's address as source, when --node-port-addresses is
    /// not given or includes 127.0.0.1. Only 127.0.0.1, not the rest of 127/8. Default
    /// on; `--localhost-nodeports=false` leaves 127.0.0.1:<nodePort> to whatever listens
    /// on the node.
    #[arg(
        long = "localhost-nodeports",
        visible_alias = "iptables-localhost-nodeports",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_value_t = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    localhost_nodeports: bool,

    /// Capacity of the services, backends and rev-NAT maps (like Cilium's
    /// --bpf-lb-map-max): the services map holds one entry per frontend plus one per
    /// backend slot, so 10,000 Services of 10 endpoints need 110,000. These maps are not
    /// preallocated: a large value costs kernel memory only as entries are written. A
    /// different value than the pinned maps have is refused at start (see `cleanup`).
    #[arg(long, value_name = "N", default_value_t = svc_common::DEFAULT_LB_MAP_MAX,
          value_parser = clap::value_parser!(u32).range(16..=(1 << 30)))]
    lb_map_max: u32,

    /// Capacity of the conntrack map (two entries per flow; an LRU map, preallocated: about
    /// 100 bytes of kernel memory per entry).
    #[arg(long, value_name = "N", default_value_t = svc_common::CT4_MAP_SIZE,
          value_parser = clap::value_parser!(u32).range(1024..=(1 << 28)))]
    ct_map_max: u32,

    /// bpffs directory where the maps and links are pinned (svcctl reads them there).
    #[arg(long, value_name = "DIR", env = "SVC_BPFFS", default_value = DEFAULT_BPFFS_DIR)]
    bpffs: PathBuf,

    /// Where the agent writes net.ipv4.conf.<iface>.accept_local. In a container, a
    /// writable host mount of /proc/sys/net (the container's /proc/sys is read-only).
    #[arg(long, value_name = "DIR", default_value = "/proc/sys/net")]
    proc_sys_net: PathBuf,

    /// Address of /healthz and /livez (kube-proxy's --healthz-bind-address). Empty: off.
    /// 0.0.0.0 or [::]: every address of both families (one dual-stack socket, as
    /// kube-proxy's Go listener), 0.0.0.0 alone where IPv6 is disabled.
    #[arg(long, value_name = "IP:PORT", default_value = "0.0.0.0:10256", value_parser = parse_bind)]
    healthz_bind_address: BindAddr,

    /// Address of the Prometheus /metrics endpoint (kube-proxy's --metrics-bind-address).
    /// Empty: off. 0.0.0.0 or [::]: both families, as for --healthz-bind-address.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:10249", value_parser = parse_bind)]
    metrics_bind_address: BindAddr,

    /// How often the manifest directory and the interfaces are checked for changes.
    /// (Kubernetes changes are taken as they arrive.)
    #[arg(long, value_name = "MS", default_value_t = 500)]
    poll_interval_ms: u64,

    /// Full resync period: the source is re-read and the maps reconciled even when nothing
    /// seems to have changed.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    resync_interval: u64,

    /// LoadBalancer address pools (LoadBalancerIPPool objects, svc-ebpf.dev/v1alpha1) also
    /// give addresses to type LoadBalancer Services without spec.loadBalancerClass (as
    /// MetalLB and Cilium do). false: only to Services of class svc-ebpf.dev/lb (when a
    /// cloud controller serves the class-less ones). Without any pool nothing is given.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    lb_ipam_classless: bool,

    /// Answer ARP on the LAN for the LoadBalancer pool addresses of the Services this node
    /// is elected for (one node per Service, by a Lease; with externalTrafficPolicy Local
    /// only nodes with a ready endpoint of it), as MetalLB's L2 mode. IPv4 only. Needs the
    /// Kubernetes API and --node-name.
    #[arg(long)]
    l2_announcements: bool,

    /// The LAN-facing device(s) ARP is answered on (repeat the flag). Default: the
    /// --device list.
    #[arg(long = "l2-device", value_name = "NAME")]
    l2_devices: Vec<String>,

    /// Namespace of the Leases that elect the LoadBalancer status writer and each
    /// Service's announcer.
    #[arg(
        long,
        value_name = "NAMESPACE",
        env = "POD_NAMESPACE",
        default_value = "kube-system"
    )]
    lease_namespace: String,

    /// How long a Lease lasts without renewal: an announcer or writer whose agent died is
    /// replaced within this plus up to 1 s.
    #[arg(long, value_name = "SECONDS", default_value_t = 3, value_parser = clap::value_parser!(u64).range(2..))]
    lease_duration_seconds: u64,
}

const AFTER_HELP: &str = "\
Examples:
  svc-agent --manifests examples/ --device eth0 --pod-device 'lxc*'
  svc-agent --manifests examples/ --device eth0 --device eth1 --cluster-cidr 10.244.0.0/16,10.245.0.0/16
  svc-agent --kubeconfig ~/.kube/config --node-name node1 --device ens3 --pod-device 'cali*'
  svc-agent cleanup --bpffs /sys/fs/bpf/svc-ebpf

Logging: RUST_LOG=debug for more detail (default: info).
Programs stay attached when the agent exits or is killed (pinned links), and the maps stay
pinned: a restarted or upgraded agent adopts both and swaps its programs in atomically, so
established connections survive. `svc-agent cleanup` removes everything.

One agent per --bpffs directory: the agent locks it (flock, released by the kernel when the
agent exits, even on SIGKILL) before anything else; a second agent on the same directory
exits with `another svc-agent (pid N) holds DIR`. svcctl only reads and takes no lock.

Privileges: root, or uid 0 with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (what
deploy/base/svc-agent.yaml grants). A failure for lack of one names what is missing.

Exit status: 0 stopped by SIGTERM / Ctrl-C; 1 on an error (printed as `error: ...`); 2 on a
usage error. `svc-agent cleanup --help` for its own.";

/// A zone name, checked as the `topology.kubernetes.io/zone` label value it stands for
/// (1-63 alphanumerics, `-`, `_` or `.`, beginning and ending with an alphanumeric): a value
/// no label can have would match no hint.
fn parse_zone(s: &str) -> Result<String, String> {
    let ok = (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a zone name (a label value: 1-63 alphanumerics, '-', '_' or '.', \
             beginning and ending with an alphanumeric)"
        ))
    }
}

/// One CIDR of a flag that lists both families of a dual-stack cluster
/// (--service-cluster-ip-range, --node-port-addresses, --cluster-cidr).
type RangeCidr = IpCidr;

/// One `--node-port-addresses` value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NodePortArg {
    Cidrs(Vec<IpCidr>),
    /// The node's primary address of each family.
    Primary,
}

fn parse_node_port_address(s: &str) -> Result<NodePortArg, String> {
    let cidrs = |list: [&str; 2]| NodePortArg::Cidrs(list.map(|c| c.parse().unwrap()).to_vec());
    match s.trim() {
        "primary" => Ok(NodePortArg::Primary),
        "all" => Ok(cidrs(["0.0.0.0/0", "::/0"])),
        "localhost" => Ok(cidrs(["127.0.0.0/8", "::1/128"])),
        other => parse_range_cidr(other)
            .map(|c| NodePortArg::Cidrs(vec![c]))
            .map_err(|e| format!("{e}, or all, localhost or primary")),
    }
}

fn parse_range_cidr(s: &str) -> Result<RangeCidr, String> {
    s.trim()
        .parse::<IpCidr>()
        .map_err(|e| format!("{s:?} is {e} (expected e.g. 10.96.0.0/12)"))
}

/// `none`, `all`, or CIDRs separated by commas (whitespace around each tolerated).
/// `--external-ip-cidrs` as given.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ExternalIpArg {
    policy: ExternalIpPolicy,
}

fn parse_external_ip_cidrs(s: &str) -> Result<ExternalIpArg, String> {
    let policy = |policy| ExternalIpArg { policy };
    match s.trim() {
        "none" => return Ok(policy(ExternalIpPolicy::deny_all())),
        "all" => return Ok(policy(ExternalIpPolicy::AllowAll)),
        _ => {}
    }
    // Ranges of one family only: no externalIP of the other is allowed (the list allows,
    // it never widens).
    let cidrs = s
        .split(',')
        .map(parse_range_cidr)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(policy(ExternalIpPolicy::AllowIn(cidrs)))
}

/// A listen address, or none (the empty string).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BindAddr(Option<SocketAddr>);

fn parse_bind(s: &str) -> Result<BindAddr, String> {
    if s.trim().is_empty() {
        return Ok(BindAddr(None));
    }
    s.trim()
        .parse()
        .map(|a| BindAddr(Some(a)))
        .map_err(|e| format!("{s:?}: {e} (expected IP:PORT, e.g. 0.0.0.0:10256, or \"\" for off)"))
}

/// `svc-agent cleanup`: what it removed goes to stdout, one line each.
fn cleanup(bpffs: &std::path::Path, force: bool) -> Result<(), Failure> {
    let if_running = if force {
        IfRunning::Force
    } else {
        IfRunning::Refuse
    };
    let done = match dataplane::cleanup_with(bpffs, if_running) {
        Ok(done) => done,
        Err(e @ dataplane::DataplaneError::NothingToClean { .. }) => {
            return Err(Failure {
                code: EXIT_NOTHING_TO_CLEAN,
                task: Task::Cleanup,
                error: e.into(),
            });
        }
        Err(e) => return Err(Failure::of(Task::Cleanup, e.into())),
    };
    if done.forced {
        eprintln!(
            "warning: svc-agent ({}) still runs on {}: its programs are detached now and it \
             runs on maps nobody can see; stop it",
            done.holder
                .map_or_else(|| "pid unknown".to_string(), |p| format!("pid {p}")),
            bpffs.display()
        );
    }
    for l in &done.links {
        println!("detached and unpinned link {l}");
    }
    for m in &done.maps {
        println!("unpinned map {m}");
    }
    if !done.left.is_empty() {
        return Err(Failure::of(
            Task::Cleanup,
            anyhow::anyhow!(
                "{} also holds {:?}, which svc-agent did not create; left them, and the \
                 directory, alone",
                bpffs.display(),
                done.left
            ),
        ));
    }
    println!(
        "removed {} ({} links, {} maps)",
        bpffs.display(),
        done.links.len(),
        done.maps.len()
    );
    Ok(())
}

/// A failed command: the exit status, and the error with what it was doing (for the
/// privilege hint).
struct Failure {
    code: u8,
    task: Task,
    error: anyhow::Error,
}

impl Failure {
    fn of(task: Task, error: anyhow::Error) -> Failure {
        Failure {
            code: 1,
            task,
            error,
        }
    }

    /// `error: <the chain, each cause once>`, then what privilege is missing if that is
    /// the reason. No backtrace: this is for people (RUST_BACKTRACE is for developers, and
    /// anyhow would print one when main returned the error).
    fn report(&self) -> ExitCode {
        eprintln!("error: {}", report::chain_text(self.error.as_ref()));
        if let Some(hint) = report::privilege_hint(self.task, self.error.chain()) {
            eprintln!("{hint}");
        }
        ExitCode::from(self.code)
    }
}

/// `--config FILE`: reads kube-proxy's configuration file into `args`
/// ([`apply_settings`]), logging what it does not act on. An unreadable or invalid file is
/// an error: the agent does not start on half a configuration.
fn read_config_file(args: &mut Args, matches: &ArgMatches) -> anyhow::Result<()> {
    let Some(path) = args.config.clone() else {
        return Ok(());
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("--config {}: cannot read it", path.display()))?;
    let (settings, report) =
        kubeproxy_config::parse(&text).with_context(|| format!("--config {}", path.display()))?;
    for notice in &report.notices {
        match notice.kind {
            NoticeKind::Info => info!("{notice}"),
            NoticeKind::Unsupported | NoticeKind::Unknown => warn!("{notice}"),
        }
    }
    info!(file = %path.display(), "read kube-proxy's configuration; flags given on the command line override it");
    apply_settings(args, matches, settings);
    Ok(())
}

/// The file's settings, into each flag the command line (or its environment variable)
/// left at its default.
fn apply_settings(args: &mut Args, m: &ArgMatches, file: kubeproxy_config::Settings) {
    let unset = |id: &str| {
        !matches!(
            m.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    // clientConnection.kubeconfig only when the command line names no source at all.
    if let Some(k) = file.kubeconfig {
        if unset("kubeconfig") && unset("manifests") {
            args.kubeconfig = Some(k);
        } else {
            info!(file = %k.display(), "config field clientConnection.kubeconfig not used: the command line names the source");
        }
    }
    if unset("node_name") && file.node_name.is_some() {
        args.node_name = file.node_name;
    }
    if unset("bind_address") && file.bind_address.is_some() {
        args.bind_address = file.bind_address;
    }
    if unset("healthz_bind_address") && file.healthz_bind_address.is_some() {
        args.healthz_bind_address = BindAddr(file.healthz_bind_address);
    }
    if unset("metrics_bind_address") && file.metrics_bind_address.is_some() {
        args.metrics_bind_address = BindAddr(file.metrics_bind_address);
    }
    if unset("cluster_cidrs") && !file.cluster_cidrs.is_empty() {
        args.cluster_cidrs = file.cluster_cidrs;
    }
    if unset("node_port_addresses")
        && let Some(npa) = file.node_port_addresses
    {
        args.node_port_addresses = npa
            .cidrs
            .into_iter()
            .map(|c| NodePortArg::Cidrs(vec![c]))
            .chain(npa.primary.then_some(NodePortArg::Primary))
            .collect();
    }
    // A switch: the command line can only turn it on.
    if file.masquerade_all == Some(true) {
        args.masquerade_all = true;
    }
    if unset("localhost_nodeports")
        && let Some(on) = file.localhost_nodeports
    {
        args.localhost_nodeports = on;
    }
    if unset("detect_local_mode")
        && let Some(mode) = file.detect_local_mode
    {
        args.detect_local_mode = mode;
    }
    if unset("pod_interface_name_prefix") && file.pod_interface_name_prefix.is_some() {
        args.pod_interface_name_prefix = file.pod_interface_name_prefix;
    }
    if unset("pod_bridge_interface") && file.pod_bridge_interface.is_some() {
        args.pod_bridge_interface = file.pod_bridge_interface;
    }
    if unset("resync_interval")
        && let Some(secs) = file.resync_interval_secs
    {
        args.resync_interval = secs;
    }
}

/// `--proxy-mode`: kube-proxy's Linux modes (and "", its default).
fn parse_proxy_mode(s: &str) -> Result<String, String> {
    match s {
        "" | "iptables" | "ipvs" | "nftables" => Ok(s.to_string()),
        _ => Err(format!(
            "{s:?} is not one of kube-proxy's Linux proxy modes (iptables, ipvs, nftables)"
        )),
    }
}

fn config(args: Args) -> anyhow::Result<Config> {
    let service_cluster_ip_range = args.service_cluster_ip_range;
    let mut node_ips: Vec<IpAddr> = Vec::new();
    for ip in args.node_ips {
        if !node_ips.contains(&ip) {
            node_ips.push(ip);
        }
    }
    if let Some(ip) = args.bind_address.filter(|ip| !ip.is_unspecified()) {
        if node_ips.is_empty() {
            node_ips.push(ip);
        } else if !node_ips.contains(&ip) {
            info!(%ip, "--bind-address (bindAddress) not used: --node-ip gives this node's addresses");
        }
    }
    if let Some(mode) = args.proxy_mode.as_deref().filter(|m| !m.is_empty()) {
        info!(
            "--proxy-mode {mode} ignored: svc-agent's eBPF dataplane replaces kube-proxy's {mode} mode"
        );
    }
    let primary = args.node_port_addresses.contains(&NodePortArg::Primary);
    let mut node_port_addresses: Vec<IpCidr> = args
        .node_port_addresses
        .into_iter()
        .flat_map(|a| match a {
            NodePortArg::Cidrs(c) => c,
            NodePortArg::Primary => Vec::new(),
        })
        .collect();
    if primary {
        // The primary addresses are the first of each family; kube-proxy takes them from
        // the Node object, which is not read yet here.
        if node_ips.is_empty() {
            anyhow::bail!(
                "nodePortAddresses \"primary\": svc-agent needs this node's addresses at \
                 start for it; give --node-ip (or bindAddress), or list the nodes' CIDRs \
                 instead"
            );
        }
        for family in [IpAddr::is_ipv4, IpAddr::is_ipv6] {
            if let Some(ip) = node_ips.iter().copied().find(family) {
                node_port_addresses.push(IpCidr::host(ip));
            }
        }
    }
    let node = NodeContext {
        node_name: args.node_name,
        node_ips,
        zone: args.node_zone,
        node_port_addresses,
        external_ips: args.external_ip_cidrs.map(|a| a.policy).unwrap_or_default(),
        localhost_node_ports: args.localhost_nodeports,
        service_cluster_ip_range,
    };
    if node.loopback_node_ports_disabled() {
        tracing::warn!(
            "--node-port-addresses includes 127.0.0.1 but --localhost-nodeports=false: \
             NodePorts are not served on 127.0.0.1"
        );
    }
    let source = match (args.manifests, args.kubeconfig) {
        (Some(dir), _) => SourceConfig::Manifests(dir),
        (None, Some(file)) => SourceConfig::Kubernetes {
            kubeconfig: Some(file),
        },
        (None, None) if kubernetes::cluster_config_present() => {
            SourceConfig::Kubernetes { kubeconfig: None }
        }
        (None, None) => {
            info!(
                dir = DEFAULT_MANIFESTS_DIR,
                "no cluster configuration (not in a pod, no KUBECONFIG, no ~/.kube/config): manifest mode"
            );
            SourceConfig::Manifests(PathBuf::from(DEFAULT_MANIFESTS_DIR))
        }
    };
    let local = LocalDetection::new(
        args.detect_local_mode,
        args.cluster_cidrs,
        args.pod_interface_name_prefix,
        args.pod_bridge_interface,
    )
    .map_err(anyhow::Error::msg)?;
    let (cgroup, sock_lb_pods, host_netns_cookie) = socket_lb(args.socket_lb, args.cgroup);
    let l2_devices = if args.l2_devices.is_empty() {
        args.devices.clone()
    } else {
        args.l2_devices
    };
    Ok(Config {
        source,
        bpffs: args.bpffs,
        devices: args.devices,
        cgroup,
        pod_devices: args.pod_devices,
        local,
        datapath: DatapathConfig {
            masquerade_all: args.masquerade_all,
            map_sizes: MapSizes {
                lb: args.lb_map_max,
                ct: args.ct_map_max,
            },
            sock_lb_pods,
            host_netns_cookie,
            ..DatapathConfig::default()
        },
        node,
        proc_sys_net: args.proc_sys_net,
        status: StatusAddrs {
            healthz: args.healthz_bind_address.0,
            metrics: args.metrics_bind_address.0,
        },
        poll_interval: Duration::from_millis(args.poll_interval_ms.max(10)),
        resync_interval: Duration::from_secs(args.resync_interval.max(1)),
        lb: LbConfig {
            classless: args.lb_ipam_classless,
            lease_namespace: args.lease_namespace,
            // Renewed a second before it expires (the duration is at least 2 s).
            lease_timing: LeaseTiming {
                duration_secs: args.lease_duration_seconds,
                grace_secs: 1,
            },
            l2_announcements: args.l2_announcements,
            l2_devices,
        },
    })
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // The matches too: which flags the command line gave, to let them win over --config.
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Some(Command::Cleanup { bpffs, force }) => cleanup(&bpffs, force),
        None if cli.run.cleanup => cleanup(&cli.run.bpffs, false),
        None => {
            let mut args = cli.run;
            read_config_file(&mut args, &matches)
                .and_then(|()| run(args))
                .map_err(|e| Failure::of(Task::Agent, e))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

// Two workers: the watches and HTTP servers keep running while a sync blocks one.
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn run(args: Args) -> anyhow::Result<()> {
    let config = config(args)?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut agent = tokio::select! {
        agent = Agent::start(config) => agent?,
        _ = tokio::signal::ctrl_c() => return Ok(()),
        _ = sigterm.recv() => return Ok(()),
    };
    let mut ticker = tokio::time::interval(agent.poll_interval());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = agent.source_changed() => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
        tokio::task::block_in_place(|| agent.tick());
    }
    info!("stopping: programs stay attached and maps pinned (`svc-agent cleanup` removes them)");
    Ok(())
}

/// `--socket-lb`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum SocketLb {
    Off,
    Node,
    All,
}

/// The cgroup the socket programs go on (none with `off`), whether they take pods'
/// sockets, and the node's network namespace cookie that tells the two apart.
fn socket_lb(mode: SocketLb, cgroup: Option<PathBuf>) -> (Option<PathBuf>, bool, u64) {
    if mode == SocketLb::Off {
        if let Some(c) = &cgroup {
            tracing::info!(cgroup = %c.display(), "--socket-lb off: no socket programs on --cgroup");
        }
        return (None, false, 0);
    }
    let cookie = if cgroup.is_some() {
        svc_agent::dataplane::own_netns_cookie().unwrap_or_else(|e| {
            tracing::warn!(
                error = %e,
                "cannot read this network namespace's cookie (SO_NETNS_COOKIE, kernel 5.14+): pods' sockets under --cgroup are translated as the node's own"
            );
            0
        })
    } else {
        0
    };
    (cgroup, mode == SocketLb::All, cookie)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::net::Ipv4Addr;
    use svc_agent::desired::Ipv4Cidr;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_flag_parses_into_its_type() {
        let cli = Cli::try_parse_from([
            "svc-agent",
            "--manifests",
            "examples",
            "--device",
            "eth0",
            "--pod-device",
            "lxc*",
            "--node-name",
            "node1",
            "--node-ip",
            "192.0.2.1",
            "--node-port-addresses",
            "192.0.2.0/24",
            "--cluster-cidr",
            "10.244.0.0/16",
            "--masquerade-all",
            "--external-ip-cidrs",
            "203.0.113.0/24, 198.51.100.0/24",
            "--bpffs",
            "/sys/fs/bpf/x",
            "--node-zone",
            "eu-west-1a",
        ])
        .expect("parses");
        assert!(cli.command.is_none());
        let args = cli.run;
        assert_eq!(args.node_zone.as_deref(), Some("eu-west-1a"));
        assert_eq!(
            args.cluster_cidrs,
            vec![IpCidr::V4(Ipv4Cidr {
                addr: Ipv4Addr::new(10, 244, 0, 0),
                prefix_len: 16
            })]
        );
        assert_eq!(args.node_port_addresses.len(), 1);
        assert!(args.masquerade_all);
        assert_eq!(
            args.external_ip_cidrs.map(|a| a.policy),
            Some(ExternalIpPolicy::AllowIn(vec![
                "203.0.113.0/24".parse().unwrap(),
                "198.51.100.0/24".parse().unwrap()
            ]))
        );
        let policy = |v: &str| {
            Cli::try_parse_from(["svc-agent", "--manifests", "x", "--external-ip-cidrs", v])
                .map(|c| config(c.run).unwrap().node.external_ips)
        };
        assert_eq!(policy("none").unwrap(), ExternalIpPolicy::deny_all());
        assert_eq!(policy("all").unwrap(), ExternalIpPolicy::AllowAll);
        assert!(policy("10.0.0.0/8,bogus").is_err());
        // A dual-stack list: each range allows its family's externalIPs; IPv6 ranges alone
        // allow no IPv4 externalIP.
        let dual = policy("203.0.113.0/24,2001:db8::/64").unwrap();
        assert_eq!(
            dual,
            ExternalIpPolicy::AllowIn(vec![
                "203.0.113.0/24".parse().unwrap(),
                "2001:db8::/64".parse().unwrap()
            ])
        );
        assert!(dual.allows("2001:db8::7".parse().unwrap()));
        assert!(!dual.allows("2001:db9::7".parse().unwrap()));
        let v6_only = policy("2001:db8::/64").unwrap();
        assert!(!v6_only.allows("203.0.113.1".parse().unwrap()));
        assert!(v6_only.allows("2001:db8::1".parse().unwrap()));
        assert!(policy("").is_err());
        let zone = |v: &str| {
            Cli::try_parse_from(["svc-agent", "--manifests", "x", "--node-zone", v])
                .map(|c| config(c.run).unwrap().node.zone)
        };
        assert_eq!(zone("zone-a").unwrap().as_deref(), Some("zone-a"));
        for bad in ["", "-a", "a b", "zone/a", &"z".repeat(64)] {
            assert!(zone(bad).is_err(), "{bad:?}");
        }
        let default = Cli::try_parse_from(["svc-agent", "--manifests", "x"]).unwrap();
        assert_eq!(
            config(default.run).unwrap().node.external_ips,
            ExternalIpPolicy::AllowAll
        );
        assert!(
            Cli::try_parse_from([
                "svc-agent",
                "--manifests",
                "x",
                "--cluster-cidr",
                "10.0.0.0/33"
            ])
            .is_err()
        );
    }

    #[test]
    fn several_devices_and_pod_cidrs_and_detect_local_modes() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["svc-agent", "--manifests", "x"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv)
                .map_err(|e| e.to_string())
                .and_then(|c| config(c.run).map_err(|e| e.to_string()))
        };
        let c = parse(&[
            "--device",
            "eth0",
            "--device",
            "eth1",
            "--cluster-cidr",
            "10.244.0.0/16,10.245.0.0/16",
            "--cluster-cidr",
            "10.200.0.0/16",
        ])
        .unwrap();
        assert_eq!(c.devices, vec!["eth0", "eth1"]);
        assert_eq!(c.local.mode, DetectLocalMode::ClusterCidr);
        assert_eq!(c.local.cluster_cidrs.len(), 3);
        // A dual-stack cluster's values, as kube-proxy's and kubelet's flags take them: both
        // families are used, in the order given.
        let dual = parse(&[
            "--cluster-cidr",
            "10.244.0.0/16,fd00:10:244::/56",
            "--node-ip",
            "192.0.2.1,fd00:192:0:2::1",
            "--node-ip",
            "192.0.2.11",
        ])
        .unwrap();
        assert_eq!(dual.local.cluster_cidrs.len(), 2);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            dual.node.node_ips,
            [ip("192.0.2.1"), ip("fd00:192:0:2::1"), ip("192.0.2.11")]
        );
        assert_eq!(
            c.local.datapath_test(),
            svc_agent::dataplane::DetectLocal::Cidr
        );
        // The default pod interfaces cover the common CNIs.
        assert_eq!(
            c.pod_devices,
            vec!["cali*", "lxc*", "veth*", "eni*", "azv*", "gke*"]
        );
        let c = parse(&["--pod-device", "lxc*"]).unwrap();
        assert_eq!(c.pod_devices, vec!["lxc*"]);
        assert_eq!(
            c.local.datapath_test(),
            svc_agent::dataplane::DetectLocal::None
        );
        let c = parse(&[
            "--detect-local-mode",
            "InterfaceNamePrefix",
            "--pod-interface-name-prefix",
            "veth",
        ])
        .unwrap();
        assert_eq!(c.local.extra_pod_patterns(), vec!["veth*"]);
        let c = parse(&[
            "--detect-local-mode",
            "BridgeInterface",
            "--pod-bridge-interface",
            "cbr0",
        ])
        .unwrap();
        assert_eq!(c.local.extra_pod_patterns(), vec!["cbr0"]);
        assert!(parse(&["--detect-local-mode", "NodeCIDR"]).is_ok());
        let err = parse(&["--detect-local-mode", "InterfaceNamePrefix"]).unwrap_err();
        assert!(err.contains("--pod-interface-name-prefix"), "{err}");
        assert!(parse(&["--detect-local-mode", "BridgeInterface"]).is_err());
        assert!(parse(&["--detect-local-mode", "bogus"]).is_err());
        // A dual-stack list: its IPv6 range goes to SVC6_POD_CIDRS; a bad one is refused.
        let dual = parse(&["--cluster-cidr", "10.244.0.0/16,fd00::/8"]).unwrap();
        assert_eq!(dual.local.cluster_cidrs.len(), 2);
        assert!(parse(&["--cluster-cidr", "10.244.0.0/16,fd00::/129"]).is_err());
    }

    /// kube-proxy's --nodeport-addresses: comma-separated or repeated, both families (each
    /// family's CIDRs select that family's node addresses).
    #[test]
    fn node_port_addresses_flag() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["svc-agent", "--manifests", "x"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).map(|c| config(c.run).unwrap().node.node_port_addresses)
        };
        let cidr = |s: &str| s.parse::<IpCidr>().unwrap();
        assert_eq!(parse(&[]).unwrap(), []);
        assert_eq!(
            parse(&[
                "--node-port-addresses",
                "192.168.0.0/24, 192.168.1.0/24,2001:db8::/64",
                "--node-port-addresses",
                "127.0.0.1/32"
            ])
            .unwrap(),
            [
                cidr("192.168.0.0/24"),
                cidr("192.168.1.0/24"),
                cidr("2001:db8::/64"),
                cidr("127.0.0.1/32")
            ]
        );
        assert_eq!(
            parse(&["--node-port-addresses", "2001:db8::/64"]).unwrap(),
            [cidr("2001:db8::/64")]
        );
        assert!(parse(&["--node-port-addresses", "192.168.0.0/33"]).is_err());
        // kube-proxy's words.
        assert_eq!(
            parse(&["--nodeport-addresses", "localhost,all"]).unwrap(),
            [
                cidr("127.0.0.0/8"),
                cidr("::1/128"),
                cidr("0.0.0.0/0"),
                cidr("::/0")
            ]
        );
        assert_eq!(
            parse(&[
                "--node-ip",
                "192.0.2.1,fd00::1",
                "--nodeport-addresses",
                "primary"
            ])
            .unwrap(),
            [cidr("192.0.2.1/32"), cidr("fd00::1/128")]
        );
        let no_ips = Cli::try_parse_from([
            "svc-agent",
            "--manifests",
            "x",
            "--nodeport-addresses",
            "primary",
        ])
        .map(|c| config(c.run).map(|_| ()));
        assert!(matches!(no_ips, Ok(Err(_))), "primary needs --node-ip");
    }

    #[test]
    fn service_cluster_ip_range_flag() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["svc-agent", "--manifests", "x"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).map(|c| config(c.run).unwrap().node.service_cluster_ip_range)
        };
        let cidr = |s: &str| s.parse::<IpCidr>().unwrap();
        assert_eq!(parse(&[]).unwrap(), []);
        // kube-apiserver's form: one per family, comma-separated.
        assert_eq!(
            parse(&[
                "--service-cluster-ip-range",
                "10.96.0.0/12,fd00:10:96::7/112"
            ])
            .unwrap(),
            [cidr("10.96.0.0/12"), cidr("fd00:10:96::/112")]
        );
        assert_eq!(
            parse(&[
                "--service-cluster-ip-range",
                "10.96.0.0/16, 172.30.0.0/16",
                "--service-cluster-ip-range",
                "10.97.0.0/16"
            ])
            .unwrap(),
            [
                cidr("10.96.0.0/16"),
                cidr("172.30.0.0/16"),
                cidr("10.97.0.0/16")
            ]
        );
        for bad in ["10.96.0.0", "10.96.0.0/33", "", "x/12"] {
            assert!(
                parse(&["--service-cluster-ip-range", bad]).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn localhost_nodeports_flag() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["svc-agent", "--manifests", "x"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).map(|c| config(c.run).unwrap().node.localhost_node_ports)
        };
        // On by default, as kube-proxy's --iptables-localhost-nodeports.
        assert!(parse(&[]).unwrap());
        assert!(parse(&["--localhost-nodeports"]).unwrap());
        assert!(parse(&["--localhost-nodeports=true"]).unwrap());
        assert!(!parse(&["--localhost-nodeports=false"]).unwrap());
        assert!(!parse(&["--iptables-localhost-nodeports=false"]).unwrap());
        assert!(parse(&["--localhost-nodeports=maybe"]).is_err());
        // kube-proxy's pflag bool takes its value after `=` only.
        assert!(parse(&["--localhost-nodeports", "false"]).is_err());
        let node = Cli::try_parse_from([
            "svc-agent",
            "--manifests",
            "x",
            "--node-port-addresses",
            "127.0.0.0/8",
            "--localhost-nodeports=false",
        ])
        .map(|c| config(c.run).unwrap().node)
        .unwrap();
        assert!(node.loopback_node_ports_disabled());
        assert_eq!(node.localhost_node_port_ip(), None);
    }

    /// `argv` (after `svc-agent --manifests x`) with `file` as --config's content.
    fn with_file(file: &str, extra: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["svc-agent", "--manifests", "x"];
        argv.extend_from_slice(extra);
        let m = Cli::command()
            .try_get_matches_from(argv)
            .map_err(|e| e.to_string())?;
        let mut args = Cli::from_arg_matches(&m).map_err(|e| e.to_string())?.run;
        let (settings, _) = kubeproxy_config::parse(file).map_err(|e| e.to_string())?;
        apply_settings(&mut args, &m, settings);
        config(args).map_err(|e| e.to_string())
    }

    const FILE: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
nodePortAddresses: [192.0.2.0/24]
iptables: {masqueradeAll: true, localhostNodePorts: false, syncPeriod: 30s}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 0.0.0.0
hostnameOverride: from-file
bindAddress: 192.0.2.9
detectLocalMode: BridgeInterface
detectLocal: {bridgeInterface: cbr0}
clientConnection: {kubeconfig: /etc/kube-proxy.conf}
";

    #[test]
    fn the_config_file_sets_defaults_and_flags_override_it() {
        let c = with_file(FILE, &[]).unwrap();
        let cidr = |s: &str| s.parse::<IpCidr>().unwrap();
        assert_eq!(
            c.local.cluster_cidrs,
            [cidr("10.244.0.0/16"), cidr("fd00:10:244::/56")]
        );
        assert_eq!(c.local.mode, DetectLocalMode::BridgeInterface);
        assert_eq!(c.local.extra_pod_patterns(), vec!["cbr0"]);
        assert_eq!(c.node.node_port_addresses, [cidr("192.0.2.0/24")]);
        assert!(c.datapath.masquerade_all);
        assert!(!c.node.localhost_node_ports);
        assert_eq!(c.resync_interval, Duration::from_secs(30));
        assert_eq!(c.status.healthz, Some("127.0.0.1:10256".parse().unwrap()));
        assert_eq!(c.status.metrics, Some("0.0.0.0:10249".parse().unwrap()));
        assert_eq!(c.node.node_ips, ["192.0.2.9".parse::<IpAddr>().unwrap()]);
        // --manifests on the command line: the file's kubeconfig does not apply.
        assert!(matches!(c.source, SourceConfig::Manifests(_)));
        // NODE_NAME may be set in the test's environment: then it wins, as a flag does.
        if std::env::var_os("NODE_NAME").is_none() {
            assert_eq!(c.node.node_name.as_deref(), Some("from-file"));
        }

        let c = with_file(
            FILE,
            &[
                "--cluster-cidr",
                "10.0.0.0/8",
                "--nodeport-addresses",
                "198.51.100.0/24",
                "--iptables-localhost-nodeports=true",
                "--healthz-bind-address",
                "0.0.0.0:10256",
                "--metrics-bind-address",
                "",
                "--hostname-override",
                "from-flag",
                "--node-ip",
                "198.51.100.1",
                "--detect-local-mode",
                "ClusterCIDR",
                "--resync-interval",
                "7",
            ],
        )
        .unwrap();
        assert_eq!(c.local.cluster_cidrs, [cidr("10.0.0.0/8")]);
        assert_eq!(c.local.mode, DetectLocalMode::ClusterCidr);
        assert_eq!(c.node.node_port_addresses, [cidr("198.51.100.0/24")]);
        assert!(c.node.localhost_node_ports);
        assert_eq!(c.status.healthz, Some("0.0.0.0:10256".parse().unwrap()));
        assert_eq!(c.status.metrics, None);
        assert_eq!(c.node.node_name.as_deref(), Some("from-flag"));
        assert_eq!(c.node.node_ips, ["198.51.100.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(c.resync_interval, Duration::from_secs(7));
    }

    #[test]
    fn the_config_files_kubeconfig_applies_without_a_source_flag() {
        let m = Cli::command().try_get_matches_from(["svc-agent"]).unwrap();
        let mut args = Cli::from_arg_matches(&m).unwrap().run;
        let (settings, _) = kubeproxy_config::parse(FILE).unwrap();
        apply_settings(&mut args, &m, settings);
        assert_eq!(
            args.kubeconfig.as_deref(),
            Some(std::path::Path::new("/etc/kube-proxy.conf"))
        );
        let m = Cli::command()
            .try_get_matches_from(["svc-agent", "--kubeconfig", "/mine"])
            .unwrap();
        let mut args = Cli::from_arg_matches(&m).unwrap().run;
        let (settings, _) = kubeproxy_config::parse(FILE).unwrap();
        apply_settings(&mut args, &m, settings);
        assert_eq!(
            args.kubeconfig.as_deref(),
            Some(std::path::Path::new("/mine"))
        );
    }

    #[test]
    fn node_port_addresses_primary_needs_the_node_ips() {
        let file = "apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
nodePortAddresses: [primary, localhost]
";
        let err = with_file(file, &[]).unwrap_err();
        assert!(
            err.contains("primary") && err.contains("--node-ip"),
            "{err}"
        );
        let c = with_file(file, &["--node-ip", "192.0.2.1,2001:db8::1,192.0.2.2"]).unwrap();
        let cidr = |s: &str| s.parse::<IpCidr>().unwrap();
        assert_eq!(
            c.node.node_port_addresses,
            [
                cidr("127.0.0.0/8"),
                cidr("::1/128"),
                cidr("192.0.2.1/32"),
                cidr("2001:db8::1/128")
            ]
        );
    }

    #[test]
    fn kube_proxy_flag_names() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["svc-agent", "--manifests", "x"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv)
                .map_err(|e| e.to_string())
                .and_then(|c| config(c.run).map_err(|e| e.to_string()))
        };
        let c = parse(&["--bind-address", "192.0.2.3", "--proxy-mode", "ipvs"]).unwrap();
        assert_eq!(c.node.node_ips, ["192.0.2.3".parse::<IpAddr>().unwrap()]);
        let c = parse(&["--bind-address", "0.0.0.0", "--proxy-mode", ""]).unwrap();
        assert!(c.node.node_ips.is_empty());
        let c = parse(&["--bind-address", "192.0.2.3", "--node-ip", "192.0.2.4"]).unwrap();
        assert_eq!(c.node.node_ips, ["192.0.2.4".parse::<IpAddr>().unwrap()]);
        assert!(parse(&["--proxy-mode", "userspace"]).is_err());
        assert!(parse(&["--bind-address", "node1"]).is_err());
        let cli =
            Cli::try_parse_from(["svc-agent", "--cleanup", "--bpffs", "/sys/fs/bpf/t"]).unwrap();
        assert!(cli.command.is_none() && cli.run.cleanup);
        // Every kube-proxy name is in --help (the DaemonSet test relies on it).
        let help = Cli::command().render_help().to_string();
        for flag in [
            "--config",
            "--cleanup",
            "--bind-address",
            "--proxy-mode",
            "--hostname-override",
            "--nodeport-addresses",
            "--iptables-localhost-nodeports",
            "--kubeconfig",
        ] {
            assert!(help.contains(flag), "{flag} not in --help");
        }
    }

    #[test]
    fn status_addresses_and_cleanup() {
        let cli = Cli::try_parse_from([
            "svc-agent",
            "--kubeconfig",
            "/k",
            "--healthz-bind-address",
            "127.0.0.1:1234",
            "--metrics-bind-address",
            "",
        ])
        .expect("parses");
        assert_eq!(
            cli.run.healthz_bind_address,
            BindAddr(Some("127.0.0.1:1234".parse().unwrap()))
        );
        assert_eq!(cli.run.metrics_bind_address, BindAddr(None));
        assert!(Cli::try_parse_from(["svc-agent", "--healthz-bind-address", "10256"]).is_err());
        assert!(
            Cli::try_parse_from(["svc-agent", "--manifests", "d", "--kubeconfig", "k"]).is_err()
        );
        let cli = Cli::try_parse_from(["svc-agent", "cleanup", "--bpffs", "/sys/fs/bpf/t"])
            .expect("parses");
        assert!(
            matches!(cli.command, Some(Command::Cleanup { bpffs, force: false }) if bpffs == std::path::Path::new("/sys/fs/bpf/t"))
        );
        let cli = Cli::try_parse_from(["svc-agent", "cleanup", "--force"]).expect("parses");
        assert!(matches!(
            cli.command,
            Some(Command::Cleanup { force: true, .. })
        ));
    }
}
