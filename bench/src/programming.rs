//! Sections 3 and 4: programming time and agent memory, in Kubernetes mode.
//!
//! The real agent runs in a scratch network namespace, watching an in-process API server
//! (`svc_lab::fake_apiserver`, real HTTP, as in the tests) that holds N Services of
//! `endpoints_per_service` endpoints each (the same Services `rules::services` lays out for
//! iptables and nftables, so all three install the same thing):
//!
//! - **install**: from the agent's start (nothing pinned) to the moment the pinned maps
//!   hold every frontend with all its backends: program load, the initial lists over
//!   HTTP, conversion, desired state and every map write. The agent's own log line gives
//!   the split (source, compute, map writes).
//! - **endpoint change**: `changes` times, one endpoint of one EndpointSlice (a different
//!   Service each time, spread over all) is replaced by a new address at the API server;
//!   the time until the datapath maps point that Service at the new address, polled from the
//!   pinned maps every 200 µs.
//! - **memory**: the agent's peak RSS (VmHWM) after all of it.
//! - **iptables-legacy-restore / nft -f** of the same Services, in another scratch
//!   namespace, for the comparison (when the end-to-end section did not measure them).
use std::{
    io::BufRead as _,
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;
use svc_agent::dataplane::Maps;
use svc_common::{PROTO_TCP, SCOPE_ALL, Svc4Key};
use svc_lab::{fake_apiserver::FakeApiServer, in_netns, netns::command_in_netns};

use crate::{
    results::{ChangeLatency, InstallTime, Memory, quantile},
    rules::{self, Backend, BenchService},
    scratch::ScratchNs,
};

#[derive(Clone, Debug)]
pub struct ProgrammingOpts {
    pub services: usize,
    pub endpoints_per_service: usize,
    pub changes: usize,
    /// Also time iptables-legacy-restore / nft -f of the same Services here.
    pub iptables: bool,
    pub nft: bool,
}

/// What the section measured.
#[derive(Debug, Default)]
pub struct Programming {
    pub install: Vec<InstallTime>,
    pub change: Option<ChangeLatency>,
    pub memory: Vec<Memory>,
}

/// The agent process, killed (and its pins removed) on drop.
struct AgentProcess {
    child: Child,
    bpffs: PathBuf,
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = svc_agent::dataplane::cleanup(&self.bpffs);
    }
}

/// The Services as API objects (the YAML `rules::manifests` writes, as JSON values).
fn api_objects(services: &[BenchService]) -> anyhow::Result<Vec<Value>> {
    let text = rules::manifests(services);
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).context("bench manifests")?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// The backend addresses the pinned maps give `vip:port/TCP` (SCOPE_ALL).
fn backends_of(maps: &Maps, vip: Ipv4Addr, port: u16) -> Vec<SocketAddrV4> {
    let key = |slot: u16| Svc4Key {
        vip_be: u32::from(vip).to_be(),
        port_be: port.to_be(),
        slot,
        proto: PROTO_TCP,
        scope: SCOPE_ALL,
        _pad: [0; 2],
    };
    let Ok(head) = maps.services.get(&key(0), 0) else {
        return Vec::new();
    };
    (1..=head.count)
        .filter_map(|slot| maps.services.get(&key(slot), 0).ok())
        .filter_map(|s| maps.backends.get(&s.backend_id, 0).ok())
        .map(|b| {
            SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(b.addr_be)),
                u16::from_be(b.port_be),
            )
        })
        .collect()
}

fn vm_hwm(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The `synced` line of the agent's log that installed everything: its source, compute
/// and map-write times.
fn sync_split(log: &Path) -> Option<String> {
    let f = std::fs::File::open(log).ok()?;
    std::io::BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains(" synced ") && l.contains("frontends_written="))
        .map(|l| {
            l.split_whitespace()
                .filter(|w| {
                    w.starts_with("source_ms=")
                        || w.starts_with("compute_ms=")
                        || w.starts_with("took_ms=")
                        || w.starts_with("frontends_written=")
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
}

/// Medians of source_ms / compute_ms / took_ms over the agent's `synced` lines after the
/// first (the install).
fn change_profile(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut cols: [Vec<f64>; 3] = Default::default();
    for line in text.lines().filter(|l| l.contains(" synced ")).skip(1) {
        for (i, key) in ["source_ms=", "compute_ms=", "took_ms="].iter().enumerate() {
            if let Some(v) = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|v| v.parse::<f64>().ok())
            {
                cols[i].push(v);
            }
        }
    }
    if cols[0].is_empty() {
        return String::new();
    }
    format!(
        "median per change over {} syncs: source (model from the watch caches) {:.1} ms, desired state {:.1} ms, map writes {:.1} ms",
        cols[0].len(),
        crate::results::median(&cols[0]),
        crate::results::median(&cols[1]),
        crate::results::median(&cols[2])
    )
}

/// Runs sections 3 and 4; `log` gets a line per step.
pub fn run(opts: &ProgrammingOpts, log: &dyn Fn(&str)) -> anyhow::Result<Programming> {
    let mut out = Programming::default();
    let n = opts.services;
    let per = opts.endpoints_per_service;
    let measured = BenchService::new(
        "bench",
        "measured",
        Ipv4Addr::new(10, 111, 0, 1),
        80,
        (0..per)
            .map(|e| SocketAddrV4::new(Ipv4Addr::new(10, 250, 0, e as u8 + 1), 8080))
            .collect(),
    );
    let services = rules::services(n, per, measured);
    let objects = api_objects(&services)?;

    let ns = ScratchNs::new("prog")?;
    let server = in_netns(ns.name(), FakeApiServer::start_local).context("fake API server")?;
    for o in &objects {
        server.apply(o.clone());
    }
    let dir = std::env::temp_dir().join(format!("svb-{}-programming", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: b, cluster: {{server: \"{}\"}}}}]\nusers: [{{name: b, user: {{}}}}]\ncontexts: [{{name: b, context: {{cluster: b, user: b}}}}]\ncurrent-context: b\n",
            server.url()
        ),
    )?;
    let bpffs = PathBuf::from(format!("/sys/fs/bpf/svb-{}-agent", std::process::id()));
    let _ = svc_agent::dataplane::cleanup(&bpffs);
    let agent_log = dir.join("agent.log");
    let lb = ((n + 1) * (per + 1) + 1024).max(65_536) as u32;
    let mut cmd = Command::new(svc_lab::agent::workspace_bin("svc-agent")?);
    cmd.arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--bpffs")
        .arg(&bpffs)
        .args(["--node-name", "bench", "--node-ip", "192.0.2.1"])
        .args(["--pod-device", "none-svb"])
        .args(["--healthz-bind-address", "", "--metrics-bind-address", ""])
        .args(["--lb-map-max", &lb.to_string()])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&agent_log)?);
    command_in_netns(&mut cmd, ns.name())?;

    // Install: from start to every frontend with all its backends.
    let last = services.last().expect("at least the measured Service");
    let started = Instant::now();
    let agent = AgentProcess {
        child: cmd.spawn().context("starting svc-agent")?,
        bpffs: bpffs.clone(),
    };
    let pid = agent.child.id();
    let deadline = started + Duration::from_secs(600);
    let mut maps = None;
    loop {
        ensure!(
            Instant::now() < deadline,
            "the agent did not install {n} Services within 600 s; log: {}",
            std::fs::read_to_string(&agent_log).unwrap_or_default()
        );
        if maps.is_none() {
            maps = Maps::open_pinned(&bpffs).ok();
        }
        // The measured Service is last in the API server's lists; when it and the first
        // are complete, everything is (one sync writes all).
        if let Some(m) = &maps
            && backends_of(m, last.vip, last.port).len() == per
            && backends_of(m, services[0].vip, services[0].port).len() == per
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let install = started.elapsed();
    let maps = maps.expect("opened above");
    // The agent logs the sync right after its last map write: give it a moment.
    let split_deadline = Instant::now() + Duration::from_secs(5);
    let split = loop {
        if let Some(s) = sync_split(&agent_log) {
            break s;
        }
        if Instant::now() > split_deadline {
            break String::new();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    log(&format!(
        "programming: agent installed {n} Services x {per} endpoints in {:.2} s ({split})",
        install.as_secs_f64()
    ));
    // The agent's own work once the lists were in: model, desired state, map writes.
    let sync_ms: f64 = ["source_ms=", "compute_ms=", "took_ms="]
        .iter()
        .filter_map(|k| {
            split
                .split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .sum();
    if sync_ms > 0.0 {
        out.install.push(InstallTime {
            layout: "ebpf-sync".into(),
            services: n,
            endpoints_per_service: per,
            seconds: sync_ms / 1e3,
            what: "the agent's first pass once the lists were in: model, desired state and every map write (its log)".into(),
        });
    }
    out.install.push(InstallTime {
        layout: "ebpf".into(),
        services: n,
        endpoints_per_service: per,
        seconds: install.as_secs_f64(),
        what: format!(
            "agent start to all frontends in the maps (Kubernetes mode, initial list over HTTP); first sync: {split}"
        ),
    });

    // Endpoint changes: one endpoint of one slice replaced, a different Service each time.
    let mut samples = Vec::new();
    for c in 0..opts.changes {
        let svc = &services[(c * 7919) % services.len()];
        let slice_obj = objects
            .iter()
            .find(|o| {
                o["kind"] == "EndpointSlice"
                    && o["metadata"]["labels"]["kubernetes.io/service-name"] == svc.name.as_str()
            })
            .context("the Service's slice")?;
        let mut slice_obj = slice_obj.clone();
        let fresh = Ipv4Addr::new(10, 252, (c >> 8) as u8, c as u8);
        slice_obj["endpoints"][0]["addresses"] = serde_json::json!([fresh.to_string()]);
        let port = slice_obj["ports"][0]["port"].as_u64().unwrap_or(8080) as u16;
        let want = SocketAddrV4::new(fresh, port);
        let t0 = Instant::now();
        server.apply(slice_obj);
        loop {
            if backends_of(&maps, svc.vip, svc.port).contains(&want) {
                break;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("change {c} to {} not in the maps after 30 s", svc.name);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        samples.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    if !samples.is_empty() {
        let change = ChangeLatency {
            services: n,
            endpoints_per_service: per,
            changes: samples.len(),
            p50_ms: quantile(&samples, 0.5),
            p99_ms: quantile(&samples, 0.99),
            max_ms: samples.iter().copied().fold(0.0, f64::max),
            samples_ms: samples,
            profile: change_profile(&agent_log),
        };
        log(&format!(
            "programming: endpoint change visible p50 {:.1} ms, p99 {:.1} ms over {} changes ({})",
            change.p50_ms, change.p99_ms, change.changes, change.profile
        ));
        out.change = Some(change);
    }
    if let Some(bytes) = vm_hwm(pid) {
        log(&format!(
            "memory: agent peak RSS {:.1} MB at {n} Services",
            bytes as f64 / 1e6
        ));
        out.memory.push(Memory {
            what: "agent peak RSS (VmHWM), Kubernetes mode, after install and the changes".into(),
            services: n,
            endpoints_per_service: per,
            bytes,
        });
    }
    drop(maps);
    drop(agent);
    drop(server);

    // The same Services through kube-proxy's layouts.
    for (enabled, backend, name) in [
        (
            opts.iptables,
            Backend::IptablesLegacy,
            "iptables-legacy-restore",
        ),
        (opts.nft, Backend::Nftables, "nft -f"),
    ] {
        if !enabled {
            continue;
        }
        let text = backend.layout(&services);
        let took = rules::load(ns.name(), backend, &text)?;
        log(&format!(
            "programming: {name} of {n} Services x {per} endpoints: {:.2} s",
            took.as_secs_f64()
        ));
        out.install.push(InstallTime {
            layout: name.into(),
            services: n,
            endpoints_per_service: per,
            seconds: took.as_secs_f64(),
            what: format!("{name} of kube-proxy's layout into an empty namespace"),
        });
        rules::flush(ns.name(), backend)?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out)
}
