//! svc-agent: keeps the eBPF Service maps in sync with the Services and endpoints it reads.
use std::{net::Ipv4Addr, path::PathBuf, time::Duration};

use clap::Parser;
use svc_agent::{
    agent::{Agent, Config},
    dataplane::{DEFAULT_BPFFS_DIR, DatapathConfig},
    desired::{Ipv4Cidr, NodeContext},
};
use tracing::info;

/// A Kubernetes Service dataplane on eBPF (a kube-proxy replacement).
///
/// Loads the TC and XDP programs, pins their maps under --bpffs, and keeps the maps in
/// sync with the Services, EndpointSlices and Endpoints in --manifests (multi-document
/// YAML or JSON files, as `kubectl apply -f` takes them). The directory is re-read when a
/// file in it changes; an invalid object is reported with its namespace/name and the
/// reason and skipped, leaving the others untouched. Inspect the maps with `svcctl dump`.
#[derive(Debug, Parser)]
#[command(name = "svc-agent", version, after_help = AFTER_HELP)]
struct Args {
    /// Directory of Service / EndpointSlice / Endpoints manifests to serve.
    #[arg(long, value_name = "DIR", env = "SVC_MANIFESTS")]
    manifests: PathBuf,

    /// The node's external interface: traffic arriving from outside. Gets the XDP program
    /// (native mode where the driver supports it) and the TC ingress program, which answers
    /// for Services without endpoints.
    #[arg(long, value_name = "IFACE")]
    device: Option<String>,

    /// Pod-facing interfaces (host side of pod veths) that get the TC ingress program.
    /// An exact name, or a prefix ending in `*` (quote it in the shell). Repeatable.
    /// Interfaces that appear later are picked up on the next poll.
    #[arg(long = "pod-device", value_name = "PATTERN", default_values_t = ["lxc*".to_string()])]
    pod_devices: Vec<String>,

    /// A cgroup v2 directory: connections and datagrams that processes in it (and in its
    /// descendants) send to a Service address go straight to a backend (socket-level load
    /// balancing, for the node's own traffic, which never crosses the TC or XDP hooks). On
    /// a node that is the host's cgroup root (e.g. /sys/fs/cgroup); not set: the node's own
    /// traffic to Services is not translated.
    #[arg(long, value_name = "DIR")]
    cgroup: Option<PathBuf>,

    /// This node's name (the Node object's name). Endpoints whose nodeName matches are
    /// local: traffic policy Local uses only those.
    #[arg(long, value_name = "NAME", env = "NODE_NAME")]
    node_name: Option<String>,

    /// This node's IPv4 addresses. Repeatable. NodePort Services answer on them (see
    /// --node-port-addresses); the first is the source address of masqueraded flows.
    #[arg(long = "node-ip", value_name = "IP")]
    node_ips: Vec<Ipv4Addr>,

    /// Like kube-proxy's --nodeport-addresses: NodePorts answer only on the node addresses
    /// inside these CIDRs. Repeatable; default: on every --node-ip.
    #[arg(long = "node-port-addresses", value_name = "CIDR", value_parser = parse_cidr)]
    node_port_addresses: Vec<Ipv4Cidr>,

    /// The cluster's pod CIDR (e.g. 10.244.0.0/16): sources inside it are pods. ClusterIP
    /// traffic from outside it is masqueraded; without it, ClusterIP traffic never is.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    cluster_cidr: Option<Ipv4Cidr>,

    /// Masquerade every translated flow to the node address (kube-proxy's --masquerade-all).
    #[arg(long)]
    masquerade_all: bool,

    /// bpffs directory where the maps are pinned (svcctl reads them there).
    #[arg(long, value_name = "DIR", env = "SVC_BPFFS", default_value = DEFAULT_BPFFS_DIR)]
    bpffs: PathBuf,

    /// How often the manifest directory and the interfaces are checked for changes.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    poll_interval_ms: u64,

    /// Full resync period: manifests are re-read and the maps reconciled even when
    /// nothing seems to have changed.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    resync_interval: u64,
}

const AFTER_HELP: &str = "\
Examples:
  svc-agent --manifests examples/ --device eth0 --pod-device 'lxc*'
  svc-agent --manifests /etc/svc --device ens3 --pod-device 'cali*' --bpffs /sys/fs/bpf/svc

Logging: RUST_LOG=debug for more detail (default: info).
The programs stay attached while the agent runs and are detached when it exits; the maps
stay pinned, so a restarted agent adopts their state.";

/// `a.b.c.d/n`, surrounding whitespace tolerated; host bits are cleared.
fn parse_cidr(s: &str) -> Result<Ipv4Cidr, String> {
    s.trim()
        .parse()
        .map_err(|e| format!("{s:?} is {e} (expected e.g. 10.244.0.0/16)"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let config = Config {
        manifests: args.manifests,
        bpffs: args.bpffs,
        device: args.device,
        cgroup: args.cgroup,
        pod_devices: args.pod_devices,
        datapath: DatapathConfig {
            cluster_cidr: args.cluster_cidr,
            masquerade_addr: args.node_ips.first().copied(),
            masquerade_all: args.masquerade_all,
            ..DatapathConfig::default()
        },
        node: NodeContext {
            node_name: args.node_name,
            node_ips: args.node_ips,
            node_port_addresses: args.node_port_addresses,
        },
        poll_interval: Duration::from_millis(args.poll_interval_ms.max(10)),
        resync_interval: Duration::from_secs(args.resync_interval.max(1)),
    };
    let mut agent = Agent::start(config)?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut ticker = tokio::time::interval(agent.poll_interval());
    loop {
        tokio::select! {
            _ = ticker.tick() => agent.tick(),
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
    }
    info!("stopping: programs detach, maps stay pinned");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn every_flag_parses_into_its_type() {
        let args = Args::try_parse_from([
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
            "--bpffs",
            "/sys/fs/bpf/x",
        ])
        .expect("parses");
        assert_eq!(
            args.cluster_cidr,
            Some(Ipv4Cidr {
                addr: Ipv4Addr::new(10, 244, 0, 0),
                prefix_len: 16
            })
        );
        assert_eq!(args.node_port_addresses.len(), 1);
        assert!(args.masquerade_all);
        assert!(
            Args::try_parse_from([
                "svc-agent",
                "--manifests",
                "x",
                "--cluster-cidr",
                "10.0.0.0/33"
            ])
            .is_err()
        );
    }
}
