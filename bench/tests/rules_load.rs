//! Loads kube-proxy's layouts for real, in throw-away namespaces (needs root, iptables-legacy
//! and nft: `cargo xtask setup`), and checks that they are there, that they translate, and that
//! they go away again.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Mutex;

use svc_bench::rules::{self, Backend, BenchService};
use svc_bench::scratch::ScratchNs;

/// One load at a time: they share the xtables lock and the machine has 2 cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn measured(endpoints: Vec<SocketAddrV4>) -> BenchService {
    BenchService::new(
        "default",
        "measured",
        Ipv4Addr::new(10, 96, 0, 10),
        80,
        endpoints,
    )
}

fn fake_endpoints() -> Vec<SocketAddrV4> {
    (1..=3)
        .map(|i| SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 10 + i), 8080))
        .collect()
}

#[test]
fn iptables_layout_loads_shows_and_flushes() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let ns = ScratchNs::new("ipt").expect("scratch netns");
    for n in [1, 100] {
        let set = rules::services(n, 10, measured(fake_endpoints()));
        let took = rules::load(
            ns.name(),
            Backend::IptablesLegacy,
            &rules::iptables_layout(&set),
        )
        .expect("iptables-legacy-restore");
        eprintln!("iptables-legacy: {n} services loaded in {took:?}");
        let saved = rules::dump(ns.name(), Backend::IptablesLegacy).unwrap();
        let svc_chains: BTreeSet<&str> = saved
            .lines()
            .filter_map(|l| l.strip_prefix(':'))
            .filter(|c| c.starts_with("KUBE-SVC-"))
            .map(|c| c.split(' ').next().unwrap())
            .collect();
        assert_eq!(svc_chains.len(), n, "{saved}");
        for s in &set {
            assert!(svc_chains.contains(s.iptables_service_chain().as_str()));
        }
        let sep_chains = saved
            .lines()
            .filter(|l| l.starts_with(":KUBE-SEP-"))
            .count();
        assert_eq!(sep_chains, (n - 1) * 10 + 3);
        // The measured Service is the last service rule of KUBE-SERVICES.
        let kube_services: Vec<&str> = saved
            .lines()
            .filter(|l| l.starts_with("-A KUBE-SERVICES "))
            .collect();
        assert_eq!(kube_services.len(), n + 1);
        assert!(
            kube_services[n - 1].starts_with("-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp")
                && kube_services[n - 1]
                    .ends_with(&format!("-j {}", set[n - 1].iptables_service_chain())),
            "{}",
            kube_services[n - 1]
        );
        assert!(saved.contains(
            "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
        ));
        assert!(saved.contains("-m statistic --mode random --probability 0.3333333"));
        assert!(saved.contains("-j DNAT --to-destination 10.244.1.13:8080"));
    }
    rules::flush(ns.name(), Backend::IptablesLegacy).unwrap();
    let saved = rules::dump(ns.name(), Backend::IptablesLegacy).unwrap();
    assert!(!saved.contains("KUBE-"), "{saved}");
}

#[test]
fn nft_layout_loads_shows_and_flushes() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let ns = ScratchNs::new("nft").expect("scratch netns");
    for n in [1, 100] {
        let set = rules::services(n, 10, measured(fake_endpoints()));
        // Loading twice replaces (the layout starts by deleting the table).
        for _ in 0..2 {
            let took = rules::load(ns.name(), Backend::Nftables, &rules::nft_layout(&set))
                .expect("nft -f");
            eprintln!("nftables: {n} services loaded in {took:?}");
        }
        let listed = rules::dump(ns.name(), Backend::Nftables).unwrap();
        assert!(listed.contains("table ip kube-proxy {"), "{listed}");
        let service_chains = listed
            .lines()
            .filter(|l| l.trim_start().starts_with("chain service-"))
            .count();
        assert_eq!(service_chains, n);
        let endpoint_chains = listed
            .lines()
            .filter(|l| l.trim_start().starts_with("chain endpoint-"))
            .count();
        assert_eq!(endpoint_chains, (n - 1) * 10 + 3);
        assert!(listed.contains("ip daddr . meta l4proto . th dport vmap @service-ips"));
        let m = set.last().unwrap();
        assert!(
            listed.contains(&format!(
                "10.96.0.10 . tcp . 80 : goto {}",
                m.nft_service_chain()
            )),
            "{listed}"
        );
        assert!(listed.contains("numgen random mod 3 vmap { 0 : goto endpoint-"));
        assert!(listed.contains("meta l4proto tcp dnat to 10.244.1.13:8080"));
        assert!(listed.contains("type nat hook prerouting priority dstnat; policy accept;"));
    }
    rules::flush(ns.name(), Backend::Nftables).unwrap();
    let listed = rules::dump(ns.name(), Backend::Nftables).unwrap();
    assert!(!listed.contains("kube-proxy"), "{listed}");
    // Flushing what is not there is fine.
    rules::flush(ns.name(), Backend::Nftables).unwrap();
}

#[test]
fn a_bad_layout_fails_with_the_tools_message() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let ns = ScratchNs::new("bad").expect("scratch netns");
    let e = rules::load(
        ns.name(),
        Backend::IptablesLegacy,
        "*nat\n-A NO-SUCH-CHAIN -j ACCEPT\nCOMMIT\n",
    )
    .unwrap_err();
    assert!(
        format!("{e:#}").contains("iptables-legacy-restore"),
        "{e:#}"
    );
    let e = rules::load(
        ns.name(),
        Backend::Nftables,
        "add rule ip nope nope accept\n",
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("nft"), "{e:#}");
}

#[test]
fn layouts_translate_a_clusterip_in_the_lab() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let lab = svc_lab::Lab::up().expect("lab (needs root)");
    let backends: Vec<SocketAddrV4> = lab.pods().iter().map(|p| p.echo_addr()).collect();
    let set = rules::services(100, 10, measured(backends));
    let vip = set.last().unwrap().frontend();
    for backend in Backend::ALL {
        rules::load(lab.node_ns(), backend, &backend.layout(&set)).unwrap();
        let mut pods = BTreeSet::new();
        for _ in 0..30 {
            let (status, body) = svc_bench::load::http_get(lab.client_ns(), vip)
                .unwrap_or_else(|e| panic!("{}: GET {vip}: {e:#}", backend.name()));
            assert_eq!(status, 200);
            let reply = svc_lab::EchoReply::parse(&String::from_utf8_lossy(&body)).unwrap();
            assert_eq!(
                *reply.client.ip(),
                svc_lab::CLIENT_IP,
                "no masquerade from a pod"
            );
            pods.insert(reply.pod);
        }
        assert_eq!(
            pods.len(),
            3,
            "{}: 30 connections reached only {pods:?}",
            backend.name()
        );
        rules::flush(lab.node_ns(), backend).unwrap();
        assert!(
            svc_bench::load::http_get(lab.client_ns(), vip).is_err(),
            "{}: the ClusterIP still answers after the flush",
            backend.name()
        );
    }
}
