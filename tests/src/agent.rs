//! Running the real svc-agent (and svcctl) inside a lab node's namespace, and waiting for
//! it to have programmed the maps. Shared by the e2e tests and `cargo xtask run`.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use aya::maps::{HashMap, Map, MapData};
use svc_common::{SVC4_MAP, Svc4Key, Svc4Value};

use crate::{Lab, NODE_EXT_IF, NodeProcess};

/// Finds a binary of this workspace: `$SVC_BIN_DIR/<name>` if set, else next to the
/// running executable or one directory up (cargo puts test executables in target/*/deps).
/// `cargo xtask test` and `cargo xtask run` build the binaries before using them.
pub fn workspace_bin(name: &str) -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("SVC_BIN_DIR") {
        let p = Path::new(&dir).join(name);
        if p.exists() {
            return Ok(p);
        }
        bail!("{} does not exist (SVC_BIN_DIR)", p.display());
    }
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(2) {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "cannot find the `{name}` binary near {}; build it first (`cargo build -p svc-agent`), or set SVC_BIN_DIR",
        exe.display()
    )
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes.
pub fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running svc-agent in a lab node.
pub struct LabAgent {
    pub process: NodeProcess,
    pub log: PathBuf,
    /// The node's bpffs dir the agent pins its maps in.
    pub bpffs: PathBuf,
    /// Number (1-based) of the node the agent runs on.
    pub node: usize,
}

impl LabAgent {
    /// Starts svc-agent in node 1 (the single-node lab's node) serving `manifests`; see
    /// [`start_in`](Self::start_in).
    pub fn start(lab: &mut Lab, manifests: &Path, log: &Path) -> anyhow::Result<LabAgent> {
        Self::start_in(lab, 1, manifests, log, &[])
    }

    /// Starts svc-agent in node `node` (1-based) serving `manifests`, with the XDP program
    /// on the node's eth0, TC on every lxc-* pod interface, that node's bpffs dir and
    /// `--node-ip` its eth0 address, then `extra_args` verbatim (e.g.
    /// `["--node-name", "node2"]`: the caller decides what the agent accepts).
    pub fn start_in(
        lab: &mut Lab,
        node: usize,
        manifests: &Path,
        log: &Path,
        extra_args: &[&str],
    ) -> anyhow::Result<LabAgent> {
        Self::start_impl(lab, node, manifests, log, extra_args, true)
    }

    /// As [`start_in`](Self::start_in) on node 1, but without `--cluster-cidr`: the agent
    /// does not know which sources are pods (kube-proxy then never masquerades ClusterIP
    /// traffic).
    pub fn start_without_pod_cidr(
        lab: &mut Lab,
        manifests: &Path,
        log: &Path,
    ) -> anyhow::Result<LabAgent> {
        Self::start_impl(lab, 1, manifests, log, &[], false)
    }

    fn start_impl(
        lab: &mut Lab,
        node: usize,
        manifests: &Path,
        log: &Path,
        extra_args: &[&str],
        with_pod_cidr: bool,
    ) -> anyhow::Result<LabAgent> {
        let bin = workspace_bin("svc-agent")?;
        let (bpffs, node_ip, name) = {
            let n = lab.node(node);
            (n.bpffs_dir.clone(), n.ip.to_string(), n.name.clone())
        };
        let mut cmd = Command::new(bin);
        cmd.arg("--manifests")
            .arg(manifests)
            .args([
                "--device",
                NODE_EXT_IF,
                "--pod-device",
                "lxc*",
                "--node-ip",
                &node_ip,
            ])
            .args(["--poll-interval-ms", "100"])
            .arg("--bpffs")
            .arg(&bpffs)
            .args(if with_pod_cidr {
                &["--cluster-cidr", crate::CLUSTER_POD_CIDR][..]
            } else {
                &[]
            })
            .args(extra_args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            );
        let process = lab
            .spawn_in_logged(node, cmd, log)
            .with_context(|| format!("starting svc-agent in {name}"))?;
        Ok(LabAgent {
            process,
            log: log.to_path_buf(),
            bpffs,
            node,
        })
    }

    /// The agent's log so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Number of backends the maps give the frontend vip:port/proto, if it is installed.
    /// Reads the pinned services map directly (this crate does not depend on svc-agent).
    pub fn backend_count(&self, vip: Ipv4Addr, port: u16, proto: u8) -> Option<u16> {
        let data = MapData::from_pin(self.bpffs.join(SVC4_MAP)).ok()?;
        let services: HashMap<MapData, Svc4Key, Svc4Value> =
            Map::from_map_data(data).ok()?.try_into().ok()?;
        let key = Svc4Key {
            vip_be: u32::from(vip).to_be(),
            port_be: port.to_be(),
            slot: 0,
            proto,
            // scope SCOPE_ALL (0) and padding, whatever the layout's remaining fields are.
            ..Default::default()
        };
        services.get(&key, 0).ok().map(|v| v.count)
    }

    /// Waits until the frontend has exactly `count` backends; fails with the agent's log.
    pub fn wait_backends(
        &self,
        vip: Ipv4Addr,
        port: u16,
        proto: u8,
        count: u16,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        if wait_for(timeout, || {
            self.backend_count(vip, port, proto) == Some(count)
        }) {
            return Ok(());
        }
        if !self.process.is_running() {
            bail!("svc-agent exited early; its log:\n{}", self.log_text());
        }
        bail!(
            "{vip}:{port}/{proto} did not get {count} backends within {timeout:?} (has {:?}); agent log:\n{}",
            self.backend_count(vip, port, proto),
            self.log_text()
        )
    }
}
