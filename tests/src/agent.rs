//! Running the real svc-agent (and svcctl) inside a lab node's namespace, and waiting for
//! it to have programmed the maps. Shared by the e2e tests and `cargo xtask run`.
use std::{
    collections::BTreeMap,
    ffi::OsString,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use aya::{
    maps::{HashMap, Map, MapData, PerCpuArray},
    programs::links::{FdLink, PinnedLink},
};
use svc_common::map_names::{
    SVC_STATS, SVC4_BACKENDS, SVC4_CT, SVC4_SERVICES, SVC6_BACKENDS, SVC6_SERVICES,
};
use svc_common::{
    Backend4, Backend6, Ct4Key, Ct4Value, Svc4Key, Svc4Value, Svc6Key, Verdict, ip6_from_octets,
    ip6_octets,
};

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

/// Runs `svcctl ARGS` inside node `node`'s namespace (1-based), where `127.0.0.1:10249`
/// is that node's agent's metrics address (e.g. `["lb", "--agent", "127.0.0.1:10249"]`);
/// returns stdout then stderr.
pub fn svcctl_in_node(lab: &Lab, node: usize, args: &[&str]) -> anyhow::Result<String> {
    let bin = workspace_bin("svcctl")?;
    let mut argv: Vec<OsString> = vec![bin.into()];
    argv.extend(args.iter().map(OsString::from));
    let out = crate::netns::exec_in(lab.node_ns_of(node), &argv)
        .with_context(|| format!("svcctl {args:?} in node{node}"))?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
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

/// Where a lab agent reads the cluster from.
pub enum AgentSource<'a> {
    Manifests(&'a Path),
    /// A kubeconfig file (e.g. pointing at a `fake_apiserver::FakeApiServer`).
    Kubeconfig(&'a Path),
    /// kube-proxy's configuration file (`--config`): the cluster comes from the kubeconfig
    /// it names, the node's addresses from its Node object.
    ConfigFile(&'a Path),
}

/// A running svc-agent in a lab node.
pub struct LabAgent {
    pub process: NodeProcess,
    pub log: PathBuf,
    /// The command line it was started with (for [`restart`](Self::restart)).
    args: Vec<OsString>,
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
        Self::start_impl(
            lab,
            node,
            AgentSource::Manifests(manifests),
            log,
            extra_args,
            true,
        )
    }

    /// Starts svc-agent in node `node` reading the cluster from `source`, otherwise as
    /// [`start_in`](Self::start_in); with a kubeconfig there is no `--node-ip`, so the
    /// node's addresses come from its Node object (pass `--node-name` in `extra_args`).
    /// With a config file, no `--cluster-cidr` either: the file's clusterCIDR is used (a
    /// flag would override it).
    pub fn start_from(
        lab: &mut Lab,
        node: usize,
        source: AgentSource<'_>,
        log: &Path,
        extra_args: &[&str],
    ) -> anyhow::Result<LabAgent> {
        let with_pod_cidr = !matches!(source, AgentSource::ConfigFile(_));
        Self::start_impl(lab, node, source, log, extra_args, with_pod_cidr)
    }

    /// As [`start_in`](Self::start_in) on node 1, but without `--cluster-cidr`: the agent
    /// does not know which sources are pods (kube-proxy then never masquerades ClusterIP
    /// traffic).
    pub fn start_without_pod_cidr(
        lab: &mut Lab,
        manifests: &Path,
        log: &Path,
    ) -> anyhow::Result<LabAgent> {
        Self::start_impl(lab, 1, AgentSource::Manifests(manifests), log, &[], false)
    }

    /// As [`start_in`](Self::start_in) on node 1 with `extra_args`, and `--cluster-cidr`
    /// only if `with_pod_cidr`.
    pub fn start_with(
        lab: &mut Lab,
        manifests: &Path,
        log: &Path,
        extra_args: &[&str],
        with_pod_cidr: bool,
    ) -> anyhow::Result<LabAgent> {
        Self::start_impl(
            lab,
            1,
            AgentSource::Manifests(manifests),
            log,
            extra_args,
            with_pod_cidr,
        )
    }

    fn start_impl(
        lab: &mut Lab,
        node: usize,
        source: AgentSource<'_>,
        log: &Path,
        extra_args: &[&str],
        with_pod_cidr: bool,
    ) -> anyhow::Result<LabAgent> {
        let (bpffs, node_ip) = {
            let n = lab.node(node);
            (n.bpffs_dir.clone(), n.ip.to_string())
        };
        let mut args: Vec<OsString> = Vec::new();
        match source {
            AgentSource::Manifests(dir) => {
                args.extend(["--manifests".into(), dir.into()]);
                args.extend(["--node-ip".into(), node_ip.into()]);
            }
            AgentSource::Kubeconfig(file) => {
                args.extend(["--kubeconfig".into(), file.into()]);
            }
            AgentSource::ConfigFile(file) => {
                args.extend(["--config".into(), file.into()]);
            }
        }
        args.extend(
            ["--device", NODE_EXT_IF, "--pod-device", "lxc*"]
                .into_iter()
                .map(OsString::from),
        );
        args.extend(["--poll-interval-ms".into(), "100".into()]);
        args.extend(["--bpffs".into(), bpffs.clone().into()]);
        if with_pod_cidr {
            // Both families: the lab is dual-stack.
            args.extend(["--cluster-cidr".into(), crate::CLUSTER_POD_CIDR.into()]);
            args.extend(["--cluster-cidr".into(), crate::CLUSTER_POD_CIDR6.into()]);
        }
        args.extend(extra_args.iter().map(OsString::from));
        let process = Self::spawn(lab, node, &args, log)?;
        Ok(LabAgent {
            process,
            log: log.to_path_buf(),
            args,
            bpffs,
            node,
        })
    }

    fn spawn(
        lab: &mut Lab,
        node: usize,
        args: &[OsString],
        log: &Path,
    ) -> anyhow::Result<NodeProcess> {
        let bin = workspace_bin("svc-agent")?;
        let name = lab.node(node).name.clone();
        let mut cmd = Command::new(bin);
        cmd.args(args).env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        );
        lab.spawn_in_logged(node, cmd, log)
            .with_context(|| format!("starting svc-agent in {name}"))
    }

    /// Starts the agent again with the same command line (after it exited or was killed),
    /// appending to the same log.
    pub fn restart(&mut self, lab: &mut Lab) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.process.is_running(),
            "restart: the agent is still running"
        );
        self.process = Self::spawn(lab, self.node, &self.args, &self.log)?;
        Ok(())
    }

    /// Every conntrack entry in the pinned map (a snapshot).
    pub fn conntrack(&self) -> anyhow::Result<BTreeMap<Ct4KeyOrd, Ct4Value>> {
        let data = MapData::from_pin(self.bpffs.join(SVC4_CT))?;
        let ct: HashMap<MapData, Ct4Key, Ct4Value> = Map::from_map_data(data)?.try_into()?;
        let mut out = BTreeMap::new();
        for kv in ct.iter() {
            match kv {
                Ok((k, v)) => {
                    out.insert(Ct4KeyOrd(k), v);
                }
                // Evicted or expired while we walk.
                Err(aya::maps::MapError::KeyNotFound) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// The pinned links (`links/` under the bpffs dir): pin name -> (link id, program id).
    pub fn links(&self) -> BTreeMap<String, (u32, u32)> {
        let dir = self.bpffs.join("links");
        let mut out = BTreeMap::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Ok(link) = PinnedLink::from_pin(e.path())
                && let Ok(info) = FdLink::from(link).info()
            {
                out.insert(name, (info.id(), info.program_id()));
            }
        }
        out
    }

    /// The agent's log so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The agent's SVC_STATS counter of `v`, summed over CPUs.
    pub fn verdict_count(&self, v: Verdict) -> u64 {
        let data = MapData::from_pin(self.bpffs.join(SVC_STATS)).expect("open SVC_STATS");
        let stats: PerCpuArray<MapData, u64> = Map::from_map_data(data)
            .and_then(|m| m.try_into())
            .expect("SVC_STATS type");
        stats
            .get(&(v as u32), 0)
            .expect("read SVC_STATS")
            .iter()
            .sum()
    }

    /// Number of backends the maps give the frontend vip:port/proto (either family), if it
    /// is installed.
    pub fn backend_count(&self, vip: impl Into<IpAddr>, port: u16, proto: u8) -> Option<u16> {
        self.backends(vip, port, proto).map(|b| b.len() as u16)
    }

    /// The backends (pod address and target port) of the frontend vip:port/proto, in slot
    /// order, if it is installed and every slot resolves (None while a write is half done).
    /// Reads the pinned SVC4_* or SVC6_* maps directly (this crate does not depend on
    /// svc-agent).
    pub fn backends(
        &self,
        vip: impl Into<IpAddr>,
        port: u16,
        proto: u8,
    ) -> Option<Vec<SocketAddr>> {
        let open =
            |name: &str| Map::from_map_data(MapData::from_pin(self.bpffs.join(name)).ok()?).ok();
        match vip.into() {
            IpAddr::V4(vip) => {
                let services: HashMap<MapData, Svc4Key, Svc4Value> =
                    open(SVC4_SERVICES)?.try_into().ok()?;
                let backends: HashMap<MapData, u32, Backend4> =
                    open(SVC4_BACKENDS)?.try_into().ok()?;
                let key = Svc4Key {
                    vip_be: u32::from(vip).to_be(),
                    port_be: port.to_be(),
                    slot: 0,
                    proto,
                    // scope SCOPE_ALL (0) and padding.
                    ..Default::default()
                };
                let count = services.get(&key, 0).ok()?.count;
                (1..=count)
                    .map(|slot| {
                        let id = services.get(&Svc4Key { slot, ..key }, 0).ok()?.backend_id;
                        let b = backends.get(&id, 0).ok()?;
                        Some(SocketAddr::from(SocketAddrV4::new(
                            Ipv4Addr::from(u32::from_be(b.addr_be)),
                            u16::from_be(b.port_be),
                        )))
                    })
                    .collect()
            }
            IpAddr::V6(vip) => {
                let services: HashMap<MapData, Svc6Key, Svc4Value> =
                    open(SVC6_SERVICES)?.try_into().ok()?;
                let backends: HashMap<MapData, u32, Backend6> =
                    open(SVC6_BACKENDS)?.try_into().ok()?;
                let key = Svc6Key {
                    vip_be: ip6_from_octets(vip.octets()),
                    port_be: port.to_be(),
                    slot: 0,
                    proto,
                    ..Default::default()
                };
                let count = services.get(&key, 0).ok()?.count;
                (1..=count)
                    .map(|slot| {
                        let id = services.get(&Svc6Key { slot, ..key }, 0).ok()?.backend_id;
                        let b = backends.get(&id, 0).ok()?;
                        Some(SocketAddr::new(
                            IpAddr::from(ip6_octets(b.addr_be)),
                            u16::from_be(b.port_be),
                        ))
                    })
                    .collect()
            }
        }
    }

    /// Waits until the frontend has exactly `count` backends; fails with the agent's log.
    pub fn wait_backends(
        &self,
        vip: impl Into<IpAddr>,
        port: u16,
        proto: u8,
        count: u16,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let vip: IpAddr = vip.into();
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

/// A conntrack key ordered by its fields (for comparing snapshots).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ct4KeyOrd(pub Ct4Key);

impl Ct4KeyOrd {
    fn tuple(&self) -> (u32, u32, u16, u16, u8, u8) {
        let k = &self.0;
        (
            k.saddr_be, k.daddr_be, k.sport_be, k.dport_be, k.proto, k.kind,
        )
    }
}

impl PartialOrd for Ct4KeyOrd {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ct4KeyOrd {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.tuple().cmp(&other.tuple())
    }
}

/// A manifests directory for `lab` (`$TMP/svl-<id>-manifests`) holding copies of these
/// files of examples/, for tests to serve and edit. The caller removes it.
pub fn example_manifests(lab: &Lab, files: &[&str]) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("svl-{}-manifests", lab.id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for f in files {
        std::fs::copy(examples.join(f), dir.join(f))
            .with_context(|| format!("copying examples/{f}"))?;
    }
    Ok(dir)
}
