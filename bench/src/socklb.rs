//! Section 5 of `cargo xtask bench`: socket-level load balancing for pods, on and off
//! (`--socket-lb all` against `node`). The same new TCP connections from the client pod (a
//! process in the pod's cgroup under the node's, as a kubelet puts it) to a ClusterIP with
//! the three echo pods behind it; the figure is the CPU time the kernel spent in our BPF
//! programs per connection (BPF_ENABLE_STATS: every program's run time and run count,
//! summed over the TC, XDP and socket programs, read before and after), and how many
//! program runs a connection took. That is the translation's own cost: with `all` the
//! connect() hook picks the backend once and every packet of the connection crosses TC as
//! plain pod-to-pod traffic; with `node` TC looks each packet up in conntrack and rewrites
//! it. The client is a Python loop (the lab's `pod_requests`): its own CPU is not counted,
//! so the client's speed does not matter to the figure.
use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use svc_common::PROTO_TCP;
use svc_lab::{Lab, agent::LabAgent};

use crate::cpu::{OUR_PROGRAMS, program_stats, stats_delta};
use crate::results::SockLbRun;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 9, 10);
const PORT: u16 = 80;
const MANIFEST: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec:\n  clusterIP: 10.96.9.10\n  ports:\n    - {name: http, protocol: TCP, port: 80, targetPort: 8080}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  namespace: default\n  labels: {kubernetes.io/service-name: web}\naddressType: IPv4\nports:\n  - {name: http, protocol: TCP, port: 8080}\nendpoints:\n  - {addresses: [\"10.244.1.11\"]}\n  - {addresses: [\"10.244.1.12\"]}\n  - {addresses: [\"10.244.1.13\"]}\n";

/// `rounds` rounds of `connections` connections per mode, the modes alternating.
pub fn run(
    connections: usize,
    rounds: usize,
    log: &dyn Fn(&str),
) -> anyhow::Result<Vec<SockLbRun>> {
    // Run-time statistics are on while this fd is open (and only then).
    let _stats =
        aya::sys::enable_stats(aya::sys::Stats::RunTime).context("BPF_ENABLE_STATS (run time)")?;
    let mut lab = Lab::up().context("socket LB: bringing the lab up")?;
    let dir = std::env::temp_dir().join(format!("svl-{}-socklb", lab.id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("web.yaml"), MANIFEST)?;
    let cgroup = lab.node_cgroup(1)?.display().to_string();
    lab.pod_cgroup(1, "client")?;
    let mut out = Vec::new();
    let mut bpffs = None;
    // The programs the previous agent's links ran.
    let mut previous: BTreeSet<u32> = BTreeSet::new();
    let result = (|| -> anyhow::Result<()> {
        for round in 0..rounds {
            for mode in ["node", "all"] {
                let log_file = dir.join(format!("agent-{mode}-{round}.log"));
                let agent = LabAgent::start_in(
                    &mut lab,
                    1,
                    &dir,
                    &log_file,
                    &["--cgroup", &cgroup, "--socket-lb", mode],
                )?;
                let measured = (|| -> anyhow::Result<SockLbRun> {
                    agent.wait_backends(VIP, PORT, PROTO_TCP, 3, Duration::from_secs(20))?;
                    // Every link runs this agent's programs (the pod interfaces are
                    // switched after the maps are ready): one program per hook kind,
                    // none of the previous agent's.
                    ensure!(
                        svc_lab::agent::wait_for(Duration::from_secs(20), || {
                            let links = agent.links();
                            let now: BTreeSet<u32> = links.values().map(|(_, p)| *p).collect();
                            links.len() > OUR_PROGRAMS.len()
                                && now.len() == OUR_PROGRAMS.len()
                                && now.is_disjoint(&previous)
                        }),
                        "the agent with --socket-lb {mode} never switched every link: {:?}",
                        agent.links()
                    );
                    previous = agent.links().values().map(|(_, p)| *p).collect();
                    let before = program_stats()?;
                    let started = Instant::now();
                    let replies = lab.pod_requests(
                        1,
                        "client",
                        SocketAddrV4::new(VIP, PORT),
                        false,
                        connections,
                        Duration::from_secs(2),
                    );
                    let wall = started.elapsed();
                    let (time, runs) = stats_delta(&before, &program_stats()?);
                    let failed = replies.iter().filter(|r| r.is_err()).count();
                    ensure!(
                        failed == 0,
                        "{failed} of {connections} connections failed with --socket-lb {mode}: {:?}",
                        replies.iter().find(|r| r.is_err())
                    );
                    let per = |x: f64| x / connections as f64;
                    Ok(SockLbRun {
                        mode: mode.into(),
                        round,
                        connections,
                        bpf_ns_per_connection: per(time.as_nanos() as f64),
                        bpf_runs_per_connection: per(runs as f64),
                        wall_ms_per_connection: per(wall.as_secs_f64() * 1e3),
                    })
                })();
                let _ = agent.process.stop();
                bpffs = Some(agent.bpffs.clone());
                let run = measured?;
                log(&format!(
                    "socket LB: --socket-lb {} round {}: {:.0} ns of BPF per connection ({:.1} program runs)",
                    run.mode, round, run.bpf_ns_per_connection, run.bpf_runs_per_connection
                ));
                out.push(run);
            }
        }
        Ok(())
    })();
    // The programs stay attached through pinned links after the agent: detach them and
    // unpin the maps before the lab goes.
    let cleaned = match &bpffs {
        Some(b) => crate::e2e::agent_cleanup(lab.node_ns_of(1), b, &dir.join("cleanup.log")),
        None => Ok(()),
    };
    let _ = std::fs::remove_dir_all(&dir);
    drop(lab);
    result?;
    cleaned.context("socket LB: svc-agent cleanup")?;
    Ok(out)
}
