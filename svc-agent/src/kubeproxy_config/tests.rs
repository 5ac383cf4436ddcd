use super::*;

const KUBEADM: &str = include_str!("../../tests/fixtures/kube-proxy/kubeadm-v1.31.yaml");

fn cidr(s: &str) -> IpCidr {
    s.parse().unwrap()
}

fn ok(text: &str) -> (Settings, Report) {
    parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn error(text: &str) -> ConfigError {
    parse(text).expect_err(text)
}

const HEAD: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";

fn with(body: &str) -> String {
    format!("{HEAD}{body}")
}

#[test]
fn a_kubeadm_config_maps_and_reports_what_is_not_supported() {
    let (s, report) = ok(KUBEADM);
    assert_eq!(
        s,
        Settings {
            kubeconfig: Some("/var/lib/kube-proxy/kubeconfig.conf".into()),
            cluster_cidrs: vec![cidr("10.244.0.0/16"), cidr("fd00:10:244::/56")],
            ..Settings::default()
        }
    );
    // The zero values kubeadm writes are no setting; what the operator set is reported.
    assert_eq!(report.fields(NoticeKind::Unsupported), ["ipvs.strictARP"]);
    assert_eq!(report.fields(NoticeKind::Info), ["mode"]);
    assert_eq!(report.fields(NoticeKind::Unknown), Vec::<&str>::new());
    let text: Vec<String> = report.notices.iter().map(ToString::to_string).collect();
    assert!(
        text[1].starts_with("config field ipvs.strictARP is not supported: an IPVS setting"),
        "{text:?}"
    );
}

#[test]
fn json_reads_as_well() {
    let json = serde_json::to_string(&serde_yaml::from_str::<serde_json::Value>(KUBEADM).unwrap())
        .unwrap();
    assert_eq!(parse(&json).unwrap(), parse(KUBEADM).unwrap());
}

#[test]
fn every_mapped_field() {
    let (s, report) = ok(&with(
        r#"
clientConnection: {kubeconfig: /k}
hostnameOverride: node-1
bindAddress: 192.0.2.7
healthzBindAddress: 0.0.0.0:10256
metricsBindAddress: "[::1]"
clusterCIDR: 10.244.0.0/16
nodePortAddresses: [192.0.2.0/24, localhost, primary]
mode: nftables
nftables: {masqueradeAll: true, syncPeriod: 1m30s}
iptables: {localhostNodePorts: false, syncPeriod: 10s}
detectLocalMode: InterfaceNamePrefix
detectLocal: {interfaceNamePrefix: veth, bridgeInterface: cbr0}
"#,
    ));
    assert_eq!(
        s,
        Settings {
            kubeconfig: Some("/k".into()),
            node_name: Some("node-1".into()),
            bind_address: Some("192.0.2.7".parse().unwrap()),
            healthz_bind_address: Some("0.0.0.0:10256".parse().unwrap()),
            metrics_bind_address: Some("[::1]:10249".parse().unwrap()),
            cluster_cidrs: vec![cidr("10.244.0.0/16")],
            node_port_addresses: Some(NodePortAddresses {
                cidrs: vec![cidr("192.0.2.0/24"), cidr("127.0.0.0/8"), cidr("::1/128")],
                primary: true,
            }),
            masquerade_all: Some(true),
            localhost_nodeports: Some(false),
            detect_local_mode: Some(DetectLocalMode::InterfaceNamePrefix),
            pod_interface_name_prefix: Some("veth".into()),
            pod_bridge_interface: Some("cbr0".into()),
            resync_interval_secs: Some(90),
        }
    );
    // iptables.syncPeriod is not nftables mode's.
    assert_eq!(
        report.fields(NoticeKind::Info),
        ["mode", "iptables.syncPeriod"]
    );
}

#[test]
fn zero_values_are_unset() {
    let (s, report) = ok(&with(
        "bindAddress: '::'\nhealthzBindAddress: ''\nnodePortAddresses: []\nclusterCIDR: ''\n\
         iptables: {masqueradeAll: false, syncPeriod: 0s}\ndetectLocalMode: ''\n",
    ));
    assert_eq!(s, Settings::default());
    assert!(report.notices.is_empty(), "{report:?}");
    let (s, _) = ok(&with("nodePortAddresses: [all]\n"));
    assert_eq!(
        s.node_port_addresses.unwrap().cidrs,
        [cidr("0.0.0.0/0"), cidr("::/0")]
    );
}

#[test]
fn unknown_fields_are_reported_by_name_at_any_depth() {
    let (_, report) = ok(&with(
        "clusterCidr: 10.0.0.0/8\nmasqueradeAll: true\nconntrack: {maxPerCor: 5}\n\
         detectLocal: {clusterCIDRs: [10.0.0.0/8]}\n",
    ));
    let mut unknown = report.fields(NoticeKind::Unknown);
    unknown.sort();
    assert_eq!(
        unknown,
        [
            "clusterCidr",
            "conntrack.maxPerCor",
            "detectLocal.clusterCIDRs",
            "masqueradeAll",
        ]
    );
    let hint = report
        .notices
        .iter()
        .find(|n| n.field == "masqueradeAll")
        .unwrap()
        .to_string();
    assert!(hint.contains("iptables.masqueradeAll"), "{hint}");
}

#[test]
fn unsupported_fields_with_values_are_reported() {
    let (_, report) = ok(&with(
        "featureGates: {KubeProxyDrainingTerminatingNodes: true}\nconntrack: {maxPerCore: 32768, \
         tcpEstablishedTimeout: 24h}\noomScoreAdj: -999\nlogging: {verbosity: 2}\n\
         iptables: {masqueradeBit: 14, minSyncPeriod: 1s}\nenableProfiling: true\n\
         clientConnection: {qps: 50}\nwinkernel: {enableDSR: true}\n",
    ));
    assert_eq!(
        report.fields(NoticeKind::Unsupported),
        [
            "featureGates.KubeProxyDrainingTerminatingNodes",
            "clientConnection.qps",
            "logging",
            "enableProfiling",
            "iptables.minSyncPeriod",
            "iptables.masqueradeBit",
            "winkernel.enableDSR",
            "oomScoreAdj",
            "conntrack.maxPerCore",
            "conntrack.tcpEstablishedTimeout",
        ]
    );
    let (_, report) = ok(&with("mode: nftables\n"));
    assert_eq!(
        report.fields(NoticeKind::Info),
        ["mode", "nodePortAddresses"]
    );
}

#[test]
fn errors_name_the_field() {
    let cases: &[(&str, &str)] = &[
        ("clusterCIDR: 10.244.0.0/33\n", "clusterCIDR"),
        ("clusterCIDR: 10.244.0.0/16,bogus\n", "clusterCIDR"),
        ("clusterCIDR: 5\n", "clusterCIDR"),
        ("nodePortAddresses: 10.0.0.0/8\n", "nodePortAddresses"),
        ("nodePortAddresses: [primaryy]\n", "nodePortAddresses"),
        (
            "iptables: {masqueradeAll: 'yes'}\n",
            "iptables.masqueradeAll",
        ),
        ("iptables: {syncPeriod: 30}\n", "iptables.syncPeriod"),
        ("iptables: {syncPeriod: 30x}\n", "iptables.syncPeriod"),
        ("iptables: true\n", "iptables"),
        ("conntrack: {maxPerCore: lots}\n", "conntrack.maxPerCore"),
        (
            "conntrack: {tcpEstablishedTimeout: -1s}\n",
            "conntrack.tcpEstablishedTimeout",
        ),
        ("detectLocalMode: PodCIDR\n", "detectLocalMode"),
        (
            "healthzBindAddress: localhost:10256\n",
            "healthzBindAddress",
        ),
        ("bindAddress: node1\n", "bindAddress"),
        ("mode: userspace\n", "mode"),
        ("mode: kernelspace\n", "mode"),
        ("featureGates: {A: 1}\n", "featureGates.A"),
        ("ipvs: {excludeCIDRs: [1]}\n", "ipvs.excludeCIDRs"),
    ];
    for (body, field) in cases {
        let e = error(&with(body));
        assert_eq!(e.field, *field, "{body}: {e}");
        assert!(
            e.to_string().starts_with(&format!("field {field}: ")),
            "{e}"
        );
    }
    for (text, field) in [
        (
            "apiVersion: kubeproxy.config.k8s.io/v1alpha2\nkind: KubeProxyConfiguration\n",
            "apiVersion",
        ),
        ("kind: KubeProxyConfiguration\n", "apiVersion"),
        (
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeletConfiguration\n",
            "kind",
        ),
        ("[a, b]\n", ""),
        ("a: [b\n", ""),
        ("", ""),
    ] {
        assert_eq!(error(text).field, field, "{text}");
    }
}

#[test]
fn go_durations() {
    let d = |s| go_duration(s);
    assert_eq!(d("0"), Ok(Duration::ZERO));
    assert_eq!(d("0s"), Ok(Duration::ZERO));
    assert_eq!(d("30s"), Ok(Duration::from_secs(30)));
    assert_eq!(d("1m30s"), Ok(Duration::from_secs(90)));
    assert_eq!(d("2h22m"), Ok(Duration::from_secs(2 * 3600 + 22 * 60)));
    assert_eq!(d("1.5h"), Ok(Duration::from_secs(5400)));
    assert_eq!(d("250ms"), Ok(Duration::from_millis(250)));
    for bad in ["", "30", "s", "1x", "-1s", "1..5s"] {
        assert!(d(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_sub_second_sync_period_rounds_up() {
    let (s, _) = ok(&with("iptables: {syncPeriod: 1500ms}\n"));
    assert_eq!(s.resync_interval_secs, Some(2));
}
