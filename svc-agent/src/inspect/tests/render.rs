//! svcctl's text tables.
use super::*;

#[test]
fn tables_are_aligned() {
    let snap = decode(&sample(), 112 * S);
    let text = render_services(&snap);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[1],
        "SERVICE            FRONTEND       PROTO  TYPE       FLAGS  BACKENDS"
    );
    assert_eq!(
        lines[2],
        "default/echo:http  10.96.0.10:80  TCP    clusterip  -      10.244.1.11:8080, 10.244.1.12:8080"
    );
    assert_eq!(
        lines[3],
        "-                  10.96.0.11:80  TCP    clusterip  -      <none: rejects>"
    );
    assert_eq!(
        &lines[4..],
        [
            "",
            "NOT SERVED (2 Services without datapath entries)",
            "SERVICE           REASON        WHY",
            "default/db-alias  externalname  DNS CNAME only",
            "default/headless  headless      clusterIP None: DNS returns the endpoints",
        ]
    );
    let ct = render_conntrack(&snap);
    let lines: Vec<&str> = ct.lines().collect();
    assert_eq!(lines[0], "CONNTRACK (2 entries)");
    let col = lines[1].find("TRANSLATED").unwrap();
    assert_eq!(&lines[2][col..col + 6], "dst ->");
    assert_eq!(&lines[3][col..col + 6], "src ->");
    assert!(lines[2].ends_with("12s  1s    replied"), "{}", lines[2]);
}

#[test]
fn lb_tables_show_type_flags_local_backends_and_snat() {
    let mut raw = lb_sample();
    raw.conntrack = snat_flow().to_vec();
    raw.revnats.push((3, revnat([192, 0, 2, 1], 30080)));
    let snap = decode(&raw, 112 * S);
    let text = render_services(&snap);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[1],
        "SERVICE  FRONTEND         PROTO  TYPE          FLAGS                                        BACKENDS"
    );
    assert_eq!(
        lines[2],
        "-        192.0.2.100:443  TCP    loadbalancer  policy-local,source-ranges,affinity(10800s)  \
         10.244.1.11:8080, 10.244.1.12:8080 (local: 10.244.1.12:8080) \
         (from: 198.51.100.7/32, 203.0.113.0/24)"
    );
    assert!(
        text.contains("NOT ACTIVE BACKENDS (kept for established flows only)\n10.244.1.13:8080 (id 3, terminating)"),
        "{text}"
    );
    // The table shows the main rewrite and the snat flag; wide the whole translated
    // tuple, with the masquerade address.
    let ct = render_conntrack(&snap);
    assert!(
        ct.contains("198.51.100.7:50000 -> 192.0.2.1:30080  dst -> 10.244.1.12:8080  "),
        "{ct}"
    );
    assert!(
        ct.contains("10.244.1.12:8080 -> 192.0.2.1:41000    src -> 192.0.2.1:30080   "),
        "{ct}"
    );
    assert!(ct.contains("replied,snat"), "{ct}");
    let wide = render_conntrack_as(&snap, Width::Wide);
    assert!(
        wide.contains("198.51.100.7:50000 -> 192.0.2.1:30080  192.0.2.1:41000 -> 10.244.1.12:8080"),
        "{wide}"
    );
    assert!(
        wide.contains(
            "10.244.1.12:8080 -> 192.0.2.1:41000    192.0.2.1:30080 -> 198.51.100.7:50000"
        ),
        "{wide}"
    );
    let aff = render_affinity(&snap);
    let lines: Vec<&str> = aff.lines().collect();
    assert_eq!(lines[0], "AFFINITY (2 entries)");
    assert!(lines[1].starts_with("CLIENT"), "{aff}");
    assert!(
        lines[2]
            .starts_with("198.51.100.7  192.0.2.100:443  5       10.244.1.12:8080 (id 2)  local/1"),
        "{aff}"
    );
    assert!(lines[2].ends_with("3h0m     -"), "{aff}");
    assert!(lines[3].ends_with("stale"), "{aff}");
}

#[test]
fn every_verdict_is_listed() {
    let totals: Vec<(Verdict, u64)> = Verdict::ALL.iter().map(|v| (*v, 0)).collect();
    let text = render_stats(&decode_stats(&totals));
    for label in [
        "drop_no_local_backend",
        "drop_source_range",
        "drop_nat_failed",
    ] {
        assert!(text.contains(label), "{text}");
    }
    assert_eq!(text.lines().count(), Verdict::ALL.len() + 2);
}

#[test]
fn durations_read_like_kubectl() {
    assert_eq!(human_duration(0), "0s");
    assert_eq!(human_duration(192), "3m12s");
    assert_eq!(human_duration(5 * 3600 + 4 * 60 + 9), "5h4m");
    assert_eq!(human_duration(2 * 86400 + 3 * 3600), "2d3h");
}

#[test]
fn backends_table_names_the_services_wide_the_frontends_and_scopes() {
    let snap = decode(&sample(), 112 * S);
    let text = render_backends(&snap, Width::Normal);
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [
            "BACKENDS (3 entries)",
            "ID  BACKEND           PROTO  STATE   FLOWS  SERVICES",
            "1   10.244.1.11:8080  TCP    active  1      default/echo:http",
            "2   10.244.1.12:8080  TCP    active  0      default/echo:http",
            "3   10.244.1.13:8080  TCP    active  0      -",
        ]
    );
    let mut raw = lb_sample();
    raw.conntrack = snat_flow().to_vec();
    let wide = render_backends(&decode(&raw, 112 * S), Width::Wide);
    let lines: Vec<&str> = wide.lines().collect();
    assert_eq!(
        lines[1],
        "ID  BACKEND           PROTO  STATE        FLOWS  FRONTENDS  REFERENCED-BY"
    );
    assert_eq!(
        lines[3],
        "2   10.244.1.12:8080  TCP    active       1      1          192.0.2.100:443/TCP - rev=5 scope=all,local"
    );
    assert_eq!(
        lines[4],
        "3   10.244.1.13:8080  TCP    terminating  0      0          -"
    );
    assert_eq!(
        render_backends(&decode(&RawMaps::default(), 0), Width::Normal),
        "BACKENDS (0 entries)\n(none)\n"
    );
}

#[test]
fn wide_tables_show_ids_flags_scopes_and_timestamps() {
    let mut raw = lb_sample();
    raw.conntrack = snat_flow().to_vec();
    raw.revnats.push((3, revnat([192, 0, 2, 1], 30080)));
    let snap = decode(&raw, 112 * S);
    let text = render_services_as(&snap, Width::Wide);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        [
            "SERVICE",
            "FRONTEND",
            "PROTO",
            "TYPE",
            "REVNAT",
            "COUNT",
            "FLAGS",
            "AFFINITY",
            "SOURCE-RANGES",
            "LOCAL-BACKENDS",
            "BACKENDS"
        ]
    );
    // Cells are separated by two spaces at least.
    let cells: Vec<&str> = lines[2]
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        cells,
        [
            "-",
            "192.0.2.100:443",
            "TCP",
            "loadbalancer",
            "5",
            "2",
            "external,policy-local,loadbalancer,source-ranges,affinity (0x3b)",
            "10800s",
            "198.51.100.7/32,203.0.113.0/24",
            "1: 10.244.1.12:8080 (id 2)",
            "10.244.1.11:8080 (id 1), 10.244.1.12:8080 (id 2)"
        ]
    );
    // Aligned: the last column starts at the same place in both lines.
    assert_eq!(
        lines[1].rfind("  BACKENDS").unwrap() + 2,
        lines[2].find("10.244.1.11:8080 (id 1)").unwrap()
    );
    let ct = render_conntrack_as(&snap, Width::Wide);
    let lines: Vec<&str> = ct.lines().collect();
    assert!(lines[1].starts_with("SERVICE  KIND"), "{ct}");
    assert!(
        lines[1]
            .ends_with("BACKEND  REVNAT  AGE  IDLE  TIMEOUT  CREATED-NS    LAST-SEEN-NS  FLAGS"),
        "{ct}"
    );
    assert!(
        lines[2].ends_with(
            "2        3       12s  1s    6h0m     100000000000  111000000000  replied,snat"
        ),
        "{ct}"
    );
    let aff = render_affinity_as(&snap, Width::Wide);
    assert!(
        aff.lines().nth(1).unwrap().contains("LAST-USED-NS"),
        "{aff}"
    );
    assert!(aff.contains("100000000000"), "{aff}");
}

#[test]
fn rates_table_hides_zero_verdicts_unless_all() {
    let before = totals(&[("pass_not_ip", 0), ("dnat_new", 4), ("rev_nat", 0)]);
    let after = totals(&[("pass_not_ip", 0), ("dnat_new", 10), ("rev_nat", 0)]);
    let doc = verdict_rates(&before, &after, 2.0);
    assert_eq!(
        render_rates(&doc, false).lines().collect::<Vec<_>>(),
        [
            "STATS (packets per verdict; rates over 2.0s)",
            "VERDICT   PACKETS  PER-SECOND",
            "dnat_new  10       3.0",
            "(2 verdicts at 0 not shown; --all or -o wide lists them)",
        ]
    );
    let all = render_rates(&doc, true);
    assert_eq!(all.lines().count(), 5, "{all}");
    assert!(all.contains("pass_not_ip  0        0.0"), "{all}");
    let zero = verdict_rates(&before[..1], &after[..1], 1.0);
    assert!(render_rates(&zero, false).contains("(no packets counted yet)"));
}

#[test]
fn problems_are_listed_in_the_agents_order() {
    let mut raw = sample();
    raw.problems = vec![
        (
            1,
            svc_common::ProblemText::new("b.yaml Service x/y: second"),
        ),
        (0, svc_common::ProblemText::new("a.yaml: first")),
    ];
    let snap = decode(&raw, 112 * S);
    assert_eq!(
        snap.problems,
        ["a.yaml: first", "b.yaml Service x/y: second"]
    );
    let text = render_services(&snap);
    assert!(
        text.contains("PROBLEMS (2: input the agent skipped, as it logged them)\n- a.yaml: first\n- b.yaml Service x/y: second\n"),
        "{text}"
    );
    // None: no section.
    assert!(!render_services(&decode(&sample(), 112 * S)).contains("PROBLEMS"));
}

#[test]
fn the_service_cidrs_section_says_what_unallocated_addresses_get() {
    use crate::dataplane::layout::{
        cluster_ip_key, cluster_ip6_key, service_cidr_key, service_cidr6_key,
    };
    let mut raw = sample();
    // Without CIDRs and ClusterIPs: no section at all.
    assert!(!render_services(&decode(&raw, 112 * S)).contains("SERVICE CIDRS"));
    raw.cluster_ips = vec![
        (cluster_ip_key([10, 96, 0, 10].into()), 1),
        (cluster_ip_key([10, 96, 0, 11].into()), 1),
        (cluster_ip_key([10, 96, 0, 21].into()), 2),
    ];
    let snap = decode(&raw, 112 * S);
    assert_eq!(
        snap.service_cidrs,
        ServiceCidrs {
            cidrs: vec![],
            cluster_ips: 3,
            ipv6_cluster_ips: 0,
            other_proxy_cluster_ips: 1,
        }
    );
    assert!(
        render_services(&snap).contains(
            "\nSERVICE CIDRS (none: packets to addresses no Service has are passed; 3 allocated ClusterIPs: ports no Service has are rejected; 1 of them another proxy's, left alone)\n"
        ),
        "{}",
        render_services(&snap)
    );
    raw.service_cidrs = vec![
        service_cidr_key(&"172.30.0.0/16".parse().unwrap()),
        service_cidr_key(&"10.96.0.0/16".parse().unwrap()),
    ];
    let snap = decode(&raw, 112 * S);
    assert_eq!(snap.service_cidrs.cidrs, ["10.96.0.0/16", "172.30.0.0/16"]);
    let text = render_services(&snap);
    assert!(
        text.contains(
            "SERVICE CIDRS (3 allocated ClusterIPs: ports no Service has are rejected; 1 of them another proxy's, left alone)\n\
             10.96.0.0/16  addresses inside that no Service has are dropped\n\
             172.30.0.0/16  addresses inside that no Service has are dropped\n"
        ),
        "{text}"
    );
    let json = serde_json::to_value(snap.services_document()).unwrap();
    assert_eq!(
        json["service_cidrs"],
        serde_json::json!({"cidrs": ["10.96.0.0/16", "172.30.0.0/16"], "cluster_ips": 3, "ipv6_cluster_ips": 0, "other_proxy_cluster_ips": 1})
    );

    // IPv6 ones (SVC6_CLUSTERIPS, SVC6_SVC_CIDR) are counted and listed with them, after
    // the IPv4 CIDRs.
    raw.cluster_ips6 = vec![
        (cluster_ip6_key("fd00:10:96::a".parse().unwrap()), 1),
        (cluster_ip6_key("fd00:10:96::b".parse().unwrap()), 2),
    ];
    raw.service_cidrs6 = vec![service_cidr6_key(&crate::addr::Ipv6Cidr::new(
        "fd00:10:96::".parse().unwrap(),
        112,
    ))];
    let snap = decode(&raw, 112 * S);
    let text = render_services(&snap);
    assert!(
        text.contains(
            "SERVICE CIDRS (5 allocated ClusterIPs (2 IPv6): ports no Service has are rejected; 2 of them another proxy's, left alone)\n\
             10.96.0.0/16  addresses inside that no Service has are dropped\n\
             172.30.0.0/16  addresses inside that no Service has are dropped\n\
             fd00:10:96::/112  addresses inside that no Service has are dropped\n"
        ),
        "{text}"
    );
    let json = serde_json::to_value(snap.services_document()).unwrap();
    assert_eq!(
        json["service_cidrs"],
        serde_json::json!({"cidrs": ["10.96.0.0/16", "172.30.0.0/16", "fd00:10:96::/112"], "cluster_ips": 5, "ipv6_cluster_ips": 2, "other_proxy_cluster_ips": 2})
    );
}

fn counted(f: impl FnOnce(&mut svc_common::ServiceStats)) -> svc_common::ServiceStats {
    let mut s = svc_common::ServiceStats::default();
    f(&mut s);
    s
}

#[test]
fn service_rates_join_counters_to_frontends_and_render_per_service() {
    use svc_common::ServiceDrop;
    let snap = decode(&sample(), 112 * S);
    // rev 1: default/echo:http (10.96.0.10:80); rev 2: no name entry (10.96.0.11:80);
    // rev 9: a counter entry of no frontend (left out).
    let before = [(
        1,
        counted(|s| {
            s.packets = 4;
            s.bytes = 400;
            s.new_flows = 1;
        }),
    )];
    let after = [
        (
            1,
            counted(|s| {
                s.packets = 10;
                s.bytes = 1000;
                s.new_flows = 3;
                s.reply_packets = 8;
                s.reply_bytes = 640;
            }),
        ),
        (
            2,
            counted(|s| {
                s.drops[ServiceDrop::NoEndpoints.raw() as usize] = 5;
                s.drops[ServiceDrop::NatFailed.raw() as usize] = 1;
            }),
        ),
        (9, counted(|s| s.packets = 1)),
    ];
    let mut doc = verdict_rates(&[], &[], 2.0);
    doc.services = service_rates(&snap.services, &before, &after, 2.0);
    let revs: Vec<u32> = doc.services.iter().map(|s| s.rev_nat_id).collect();
    assert_eq!(revs, [1, 2], "in the snapshot's order, rev 9 left out");
    let echo = &doc.services[0];
    assert_eq!(
        (
            echo.packets_per_second,
            echo.new_flows_per_second,
            echo.bytes_per_second
        ),
        (3.0, 1.0, 300.0)
    );
    assert_eq!(doc.services[1].dropped, 6);
    assert_eq!(
        doc.services[1].dropped_per_second, 3.0,
        "from nothing before"
    );
    let json = serde_json::to_value(&doc).unwrap();
    assert_eq!(json["services"][0]["service"]["name"], "echo");
    assert_eq!(json["services"][1]["service"], serde_json::Value::Null);
    assert_eq!(
        json["services"][1]["drops"],
        serde_json::json!({
            "no_endpoints": 5, "no_local_backend": 0, "source_range": 0, "no_backend": 0,
            "nat_failed": 1, "ct_failed": 0, "rewrite_failed": 0
        })
    );
    let table = render_service_rates(&doc, false);
    assert_eq!(
        table.lines().collect::<Vec<_>>(),
        [
            "SERVICES (packets to each Service port, counted once per packet; rates over 2.0s)",
            "SERVICE            FRONTEND                     PACKETS  BYTES  NEW-FLOWS  REPLIES  DROPPED  DROP-REASONS                 PKT/S  FLOWS/S  DROPS/S",
            "default/echo:http  clusterip 10.96.0.10:80/TCP  10       1000   3          8        0        -                            3.0    1.0      0.0",
            "<no name>          clusterip 10.96.0.11:80/TCP  0        0      0          0        6        nat_failed=1,no_endpoints=5  0.0    0.0      3.0",
        ]
    );
    let wide = render_service_rates(&doc, true);
    let header = wide.lines().nth(1).unwrap();
    assert!(
        header.contains("REPLY-BYTES") && header.ends_with("BYTES/S  REV-NAT-ID"),
        "{wide}"
    );
    assert!(
        wide.lines().nth(2).unwrap().ends_with("300.0    1"),
        "{wide}"
    );
    doc.services.clear();
    assert!(render_service_rates(&doc, false).contains("(no Service frontend selected)"));
}
