//! `cargo xtask run`: the demo. Builds, brings a lab up (network namespaces only), starts
//! svc-agent on examples/, shows that the ClusterIP answers from all three pods, prints
//! commands to try, and tears everything down on Ctrl-C (or after --for SECONDS).
use std::{collections::BTreeMap, net::SocketAddrV4, sync::mpsc, time::Duration};

use anyhow::Context as _;
use svc_common::PROTO_TCP;
use svc_lab::{Lab, agent::LabAgent, tcp_request};

use crate::{cargo, setup, workspace_root};

#[derive(Debug, clap::Args)]
pub struct Opts {
    /// Stop by itself after this many seconds instead of waiting for Ctrl-C.
    #[arg(long = "for", value_name = "SECONDS")]
    pub duration: Option<u64>,
}

pub fn run(opts: &Opts) -> anyhow::Result<()> {
    setup::ensure(&setup::Opts::default())?;
    cargo(&["build", "--package", "svc-agent", "--bins"])?;
    let root = workspace_root().canonicalize()?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), Into::into);
    let bin_dir = target.join("debug");
    // SAFETY: single-threaded at this point; the lab reads it to find the binaries.
    unsafe { std::env::set_var("SVC_BIN_DIR", &bin_dir) };

    let (stop_tx, stop_rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = stop_tx.send(());
    })
    .context("installing the Ctrl-C handler")?;

    let mut lab = Lab::up()?;
    let examples = root.join("examples");
    let log = std::env::temp_dir().join(format!("svl-{}-agent.log", lab.id()));
    let agent = LabAgent::start(&mut lab, &examples, &log)?;
    let vip = "10.96.0.10".parse()?;
    agent.wait_backends(vip, 80, PROTO_TCP, 3, Duration::from_secs(20))?;

    let mut hits = BTreeMap::new();
    for _ in 0..30 {
        let reply = tcp_request(
            lab.client_ns(),
            SocketAddrV4::new(vip, 80),
            "hello",
            Duration::from_secs(2),
        )?;
        *hits.entry(reply.pod).or_insert(0usize) += 1;
    }
    let svcctl = bin_dir.join("svcctl");
    let bpffs = agent.bpffs.display().to_string();
    let (client, ext) = (lab.client_ns().to_string(), lab.ext_ns().to_string());
    println!(
        "\nThe lab is up (namespaces svl-{id}-*), svc-agent serves {examples}.\n\
         30 new TCP connections from the client pod to 10.96.0.10:80 were answered by: {hits:?}\n\n\
         Try, from the client pod (TC path):\n\
         \x20 ip netns exec {client} curl -s http://10.96.0.10/          # a pod answers with its name and your address\n\
         \x20 ip netns exec {client} sh -c 'echo hi | nc -u -w1 10.96.0.10 80'   # UDP\n\
         \x20 ip netns exec {client} curl -sv http://10.96.0.11/         # no endpoints: connection refused at once\n\
         From outside the node (XDP path):\n\
         \x20 ip netns exec {ext} curl -s http://10.96.0.10/\n\
         What the maps hold:\n\
         \x20 {svcctl} --bpffs {bpffs} dump\n\
         Edit {examples}/*.yaml (e.g. remove an endpoint) and the agent applies it within a second.\n\
         Agent log: {log}\n\n\
         Ctrl-C stops the agent and removes the lab.",
        id = lab.id(),
        examples = examples.display(),
        svcctl = svcctl.display(),
        log = log.display(),
    );
    match opts.duration {
        Some(secs) => {
            let _ = stop_rx.recv_timeout(Duration::from_secs(secs));
        }
        None => {
            let _ = stop_rx.recv();
        }
    }
    println!("\nstopping: agent, echo servers, namespaces");
    let _ = agent.process.stop();
    drop(lab);
    Ok(())
}
