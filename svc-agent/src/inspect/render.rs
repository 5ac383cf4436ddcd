//! The text tables of svcctl (`-o table` and `-o wide`), from a [`Snapshot`]: laid out as
//! `kubectl get` lays out its tables.
use std::fmt::Write as _;

use svc_common::{BackendState, CtKind, SVC_F_LOCAL, SVC_KIND_FLAGS};

use super::schema::*;
use crate::dataplane::layout::frontend_flag_labels;

/// Left-aligned columns separated by at least two spaces (as `kubectl get`); the last
/// column is not padded.
pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Durations as `kubectl` shows ages: 45s, 3m12s, 5h4m, 2d3h.
pub fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

/// How much a table shows: `-o table` or `-o wide` (more columns: ids, raw flags, scopes,
/// timestamps, NAT addresses).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Width {
    #[default]
    Normal,
    Wide,
}

/// `10.244.1.11:8080` (with its state when not active); wide: also `(id 1)`.
fn backend_list(list: &[ServiceBackend], width: Width) -> String {
    list.iter()
        .map(|b| {
            let mut cell = crate::addr::HostPort(b.addr, b.port).to_string();
            let active = b.state == BackendState::Active.label();
            match (width, active) {
                (Width::Wide, true) => {
                    let _ = write!(cell, " (id {})", b.backend_id);
                }
                (Width::Wide, false) => {
                    let _ = write!(cell, " (id {}, {})", b.backend_id, b.state);
                }
                (Width::Normal, true) => {}
                (Width::Normal, false) => {
                    let _ = write!(cell, " ({})", b.state);
                }
            }
            cell
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The table's FLAGS cell: the frontend's flags other than its kind.
fn service_flags_cell(s: &Service) -> String {
    let words: Vec<String> = frontend_flag_labels(s.flags_raw & !SVC_KIND_FLAGS)
        .into_iter()
        .map(|w| match (w.as_str(), s.affinity_timeout_secs) {
            ("affinity", Some(t)) => format!("affinity({t}s)"),
            _ => w,
        })
        .collect();
    if words.is_empty() {
        "-".into()
    } else {
        words.join(",")
    }
}

fn dash_if_empty(cell: String) -> String {
    if cell.is_empty() { "-".into() } else { cell }
}

fn service_name_cell(name: Option<&ServiceName>) -> String {
    name.map_or_else(|| "-".to_string(), ServiceName::to_string)
}

/// The SERVICES section (then NOT SERVED, PROBLEMS, NOT ACTIVE BACKENDS and INCONSISTENCIES, when
/// there are any), as `-o table`.
pub fn render_services(snap: &Snapshot) -> String {
    render_services_as(snap, Width::Normal)
}

/// The SERVICES section. Wide: rev-NAT id, count, every flag word with the raw bits, the
/// affinity timeout, source ranges and local backends in their own columns, backend ids.
pub fn render_services_as(snap: &Snapshot, width: Width) -> String {
    let local_cell = |s: &Service| match s.local_count {
        None if s.flags_raw & SVC_F_LOCAL != 0 => Some("<missing>".to_string()),
        None => None,
        Some(_) if s.local_backends.is_empty() => Some("none".to_string()),
        Some(_) => Some(backend_list(&s.local_backends, width)),
    };
    let backends_cell = |s: &Service| {
        if s.rejects {
            "<none: rejects>".to_string()
        } else if s.backends.is_empty() {
            "<none usable: see inconsistencies>".to_string()
        } else {
            backend_list(&s.backends, width)
        }
    };
    let rows: Vec<Vec<String>> = snap
        .services
        .iter()
        .map(|s| {
            let name = service_name_cell(s.service.as_ref());
            let frontend = crate::addr::HostPort(s.vip, s.port).to_string();
            match width {
                Width::Normal => {
                    let mut backends = backends_cell(s);
                    if let Some(local) = local_cell(s) {
                        let _ = write!(backends, " (local: {local})");
                    }
                    if !s.source_ranges.is_empty() {
                        let _ = write!(backends, " (from: {})", s.source_ranges.join(", "));
                    }
                    vec![
                        name,
                        frontend,
                        s.protocol.clone(),
                        s.kind.to_string(),
                        service_flags_cell(s),
                        backends,
                    ]
                }
                Width::Wide => vec![
                    name,
                    frontend,
                    s.protocol.clone(),
                    s.kind.to_string(),
                    s.rev_nat_id.to_string(),
                    s.count.to_string(),
                    if s.flags_raw == 0 {
                        "-".to_string()
                    } else {
                        format!("{} ({:#x})", s.flags.join(","), s.flags_raw)
                    },
                    s.affinity_timeout_secs
                        .map_or("-".to_string(), |t| format!("{t}s")),
                    dash_if_empty(s.source_ranges.join(",")),
                    match local_cell(s) {
                        None => "-".to_string(),
                        Some(local) => match s.local_count {
                            Some(n) => format!("{n}: {local}"),
                            None => local,
                        },
                    },
                    backends_cell(s),
                ],
            }
        })
        .collect();
    let mut out = format!(
        "SERVICES ({} frontends, {} backends)\n",
        snap.services.len(),
        snap.backends.len()
    );
    let header: &[&str] = match width {
        Width::Normal => &["SERVICE", "FRONTEND", "PROTO", "TYPE", "FLAGS", "BACKENDS"],
        Width::Wide => &[
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
            "BACKENDS",
        ],
    };
    if rows.is_empty() {
        out.push_str("(none)\n");
    } else {
        out.push_str(&render_table(header, &rows));
    }
    if !snap.unserved.is_empty() {
        let rows: Vec<Vec<String>> = snap
            .unserved
            .iter()
            .map(|u| {
                vec![
                    format!("{}/{}", u.namespace, u.name),
                    u.reason.clone(),
                    u.why.map_or("-", |r| r.description()).to_string(),
                ]
            })
            .collect();
        let _ = write!(
            out,
            "\nNOT SERVED ({} Services without datapath entries)\n{}",
            rows.len(),
            render_table(&["SERVICE", "REASON", "WHY"], &rows)
        );
    }
    out.push_str(&render_service_cidrs(&snap.service_cidrs));
    if !snap.problems.is_empty() {
        let _ = writeln!(
            out,
            "\nPROBLEMS ({}: input the agent skipped, as it logged them)",
            snap.problems.len()
        );
        for line in &snap.problems {
            let _ = writeln!(out, "- {line}");
        }
    }
    let terminating: Vec<String> = snap
        .backends
        .iter()
        .filter(|b| b.state != BackendState::Active.label())
        .map(|b| {
            format!(
                "{} (id {}, {})",
                crate::addr::HostPort(b.addr, b.port),
                b.id,
                b.state
            )
        })
        .collect();
    if !terminating.is_empty() {
        let _ = writeln!(
            out,
            "\nNOT ACTIVE BACKENDS (kept for established flows only)\n{}",
            terminating.join("\n")
        );
    }
    if !snap.inconsistencies.is_empty() {
        let _ = writeln!(out, "\nINCONSISTENCIES ({})", snap.inconsistencies.len());
        for line in &snap.inconsistencies {
            let _ = writeln!(out, "- {line}");
        }
    }
    out
}

/// The SERVICE CIDRS section of `svcctl dump [services]`: what a packet no frontend takes
/// gets (kube-proxy nftables' rules); nothing when there is neither a CIDR nor an
/// allocated ClusterIP.
pub fn render_service_cidrs(c: &ServiceCidrs) -> String {
    if c.cidrs.is_empty() && c.cluster_ips == 0 {
        return String::new();
    }
    let mut ips = format!(
        "{} allocated ClusterIP{}",
        c.cluster_ips,
        if c.cluster_ips == 1 { "" } else { "s" }
    );
    if c.ipv6_cluster_ips > 0 {
        let _ = write!(ips, " ({} IPv6)", c.ipv6_cluster_ips);
    }
    ips.push_str(": ports no Service has are rejected");
    if c.other_proxy_cluster_ips > 0 {
        let _ = write!(
            ips,
            "; {} of them another proxy's, left alone",
            c.other_proxy_cluster_ips
        );
    }
    if c.cidrs.is_empty() {
        return format!(
            "\nSERVICE CIDRS (none: packets to addresses no Service has are passed; {ips})\n"
        );
    }
    format!(
        "\nSERVICE CIDRS ({ips})\n{}\n",
        c.cidrs
            .iter()
            .map(|cidr| format!("{cidr}  addresses inside that no Service has are dropped"))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

/// The BACKENDS section (`svcctl dump backends`): every SVC4_BACKENDS entry with the
/// Services that use it. Wide: the frontends, their rev-NAT ids and slot scopes.
pub fn render_backends(snap: &Snapshot, width: Width) -> String {
    let rows: Vec<Vec<String>> = snap
        .backends
        .iter()
        .map(|b| {
            let mut row = vec![
                b.id.to_string(),
                crate::addr::HostPort(b.addr, b.port).to_string(),
                b.protocol.clone(),
                b.state.clone(),
                b.flows.to_string(),
            ];
            match width {
                Width::Normal => {
                    let mut labels: Vec<String> = Vec::new();
                    for r in &b.references {
                        let label = r.label();
                        if !labels.contains(&label) {
                            labels.push(label);
                        }
                    }
                    row.push(dash_if_empty(labels.join(", ")));
                }
                Width::Wide => {
                    row.push(b.frontends.to_string());
                    let refs: Vec<String> = b
                        .references
                        .iter()
                        .map(|r| {
                            format!(
                                "{} {} rev={} scope={}",
                                r.frontend(),
                                service_name_cell(r.service.as_ref()),
                                r.rev_nat_id,
                                r.scopes.join(",")
                            )
                        })
                        .collect();
                    row.push(dash_if_empty(refs.join("; ")));
                }
            }
            row
        })
        .collect();
    let mut out = format!("BACKENDS ({} entries)\n", snap.backends.len());
    let header: &[&str] = match width {
        Width::Normal => &["ID", "BACKEND", "PROTO", "STATE", "FLOWS", "SERVICES"],
        Width::Wide => &[
            "ID",
            "BACKEND",
            "PROTO",
            "STATE",
            "FLOWS",
            "FRONTENDS",
            "REFERENCED-BY",
        ],
    };
    if rows.is_empty() {
        out.push_str("(none)\n");
    } else {
        out.push_str(&render_table(header, &rows));
    }
    out
}

/// The CONNTRACK section, as `-o table`.
pub fn render_conntrack(snap: &Snapshot) -> String {
    render_conntrack_as(snap, Width::Normal)
}

/// The CONNTRACK section. Normal: the main rewrite of each entry (service entries: the
/// destination, reply entries: the source). Wide: the whole translated tuple (with the
/// masquerade address), backend and rev-NAT ids, timeout and the raw timestamps.
pub fn render_conntrack_as(snap: &Snapshot, width: Width) -> String {
    let show = |ep: Option<Endpoint>| ep.map_or("?".to_string(), |ep| ep.to_string());
    let rows: Vec<Vec<String>> = snap
        .conntrack
        .iter()
        .map(|e| {
            let translated = match width {
                Width::Normal if e.kind == CtKind::Service.label() => {
                    format!("dst -> {}", show(e.translated_dst))
                }
                Width::Normal if e.kind == CtKind::Reply.label() => {
                    format!("src -> {}", show(e.translated_src))
                }
                Width::Normal => "-".to_string(),
                Width::Wide
                    if e.kind == CtKind::Service.label() || e.kind == CtKind::Reply.label() =>
                {
                    format!("{} -> {}", show(e.translated.src), show(e.translated.dst))
                }
                Width::Wide => "-".to_string(),
            };
            let mut flags = e.flags.clone();
            if e.expired {
                flags.push("expired".into());
            }
            let flags = dash_if_empty(flags.join(","));
            let mut row = vec![
                service_name_cell(e.service.as_ref()),
                e.kind.clone(),
                e.protocol.clone(),
                format!("{} -> {}", e.src, e.dst),
                translated,
            ];
            if width == Width::Wide {
                row.push(e.backend_id.to_string());
                row.push(e.rev_nat_id.to_string());
            }
            row.push(human_duration(e.age_secs));
            row.push(human_duration(e.idle_secs));
            if width == Width::Wide {
                row.push(human_duration(e.timeout_secs));
                row.push(e.created_ns.to_string());
                row.push(e.last_seen_ns.to_string());
            }
            row.push(flags);
            row
        })
        .collect();
    let mut out = format!(
        "CONNTRACK ({} entries{})\n",
        snap.conntrack.len(),
        expired_note(snap.expired_hidden.conntrack)
    );
    let header: &[&str] = match width {
        Width::Normal => &[
            "SERVICE",
            "KIND",
            "PROTO",
            "ORIGINAL",
            "TRANSLATED",
            "AGE",
            "IDLE",
            "FLAGS",
        ],
        Width::Wide => &[
            "SERVICE",
            "KIND",
            "PROTO",
            "ORIGINAL",
            "TRANSLATED",
            "BACKEND",
            "REVNAT",
            "AGE",
            "IDLE",
            "TIMEOUT",
            "CREATED-NS",
            "LAST-SEEN-NS",
            "FLAGS",
        ],
    };
    if !rows.is_empty() {
        out.push_str(&render_table(header, &rows));
    }
    out
}

/// `; 3 expired not shown (--show-expired lists them)` when entries were left out.
fn expired_note(hidden: usize) -> String {
    if hidden == 0 {
        String::new()
    } else {
        format!("; {hidden} expired not shown (--show-expired lists them)")
    }
}

/// The AFFINITY section (`svcctl dump affinity`), as `-o table`.
pub fn render_affinity(snap: &Snapshot) -> String {
    render_affinity_as(snap, Width::Normal)
}

/// The AFFINITY section. Wide: also the last-used timestamp in ns.
pub fn render_affinity_as(snap: &Snapshot, width: Width) -> String {
    let entries = &snap.affinity;
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|a| {
            let mut flags = Vec::new();
            if a.expired {
                flags.push("expired");
            }
            if !a.current {
                flags.push("stale");
            }
            let mut row = vec![
                a.client.to_string(),
                a.service
                    .map_or_else(|| format!("? (rev {})", a.rev_nat_id), |s| s.to_string()),
                a.rev_nat_id.to_string(),
                match a.backend {
                    Some(b) => format!("{b} (id {})", a.backend_id),
                    None => format!("? (id {})", a.backend_id),
                },
                format!("{}/{}", a.scope, a.slot),
                human_duration(a.idle_secs),
                a.timeout_secs
                    .map_or("-".to_string(), |t| human_duration(t as u64)),
            ];
            if width == Width::Wide {
                row.push(a.last_used_ns.to_string());
            }
            row.push(dash_if_empty(flags.join(",")));
            row
        })
        .collect();
    let mut out = format!(
        "AFFINITY ({} entries{})\n",
        entries.len(),
        expired_note(snap.expired_hidden.affinity)
    );
    let header: &[&str] = match width {
        Width::Normal => &[
            "CLIENT", "SERVICE", "REVNAT", "BACKEND", "SLOT", "IDLE", "TIMEOUT", "FLAGS",
        ],
        Width::Wide => &[
            "CLIENT",
            "SERVICE",
            "REVNAT",
            "BACKEND",
            "SLOT",
            "IDLE",
            "TIMEOUT",
            "LAST-USED-NS",
            "FLAGS",
        ],
    };
    if !rows.is_empty() {
        out.push_str(&render_table(header, &rows));
    }
    out
}

/// The STATS section: every verdict with its total.
pub fn render_stats(stats: &[VerdictTotal]) -> String {
    let rows: Vec<Vec<String>> = stats
        .iter()
        .map(|s| vec![s.verdict.to_string(), s.total.to_string()])
        .collect();
    format!("STATS\n{}", render_table(&["VERDICT", "PACKETS"], &rows))
}

/// `svcctl stats`: totals and rates; only the verdicts that counted a packet unless `all`.
pub fn render_rates(doc: &RatesDocument, all: bool) -> String {
    let rows: Vec<Vec<String>> = doc
        .stats
        .iter()
        .filter(|s| all || s.packets > 0)
        .map(|s| {
            vec![
                s.verdict.to_string(),
                s.packets.to_string(),
                format!("{:.1}", s.per_second),
            ]
        })
        .collect();
    let mut out = format!(
        "STATS (packets per verdict; rates over {:.1}s)\n",
        doc.interval_s
    );
    if rows.is_empty() {
        out.push_str("(no packets counted yet)\n");
    } else {
        out.push_str(&render_table(&["VERDICT", "PACKETS", "PER-SECOND"], &rows));
    }
    let hidden = doc.stats.len() - rows.len();
    if hidden > 0 {
        let _ = writeln!(
            out,
            "({hidden} verdicts at 0 not shown; --all or -o wide lists them)"
        );
    }
    out
}

/// `svcctl stats`: the per-Service counters of a rates document, one row per frontend.
/// `wide`: also reply bytes, the rev-NAT id and the byte rate.
pub fn render_service_rates(doc: &RatesDocument, wide: bool) -> String {
    let mut out = format!(
        "SERVICES (packets to each Service port, counted once per packet; rates over {:.1}s)\n",
        doc.interval_s
    );
    if doc.services.is_empty() {
        out.push_str("(no Service frontend selected)\n");
        return out;
    }
    let rows: Vec<Vec<String>> = doc
        .services
        .iter()
        .map(|s| {
            let name = s
                .service
                .as_ref()
                .map_or_else(|| "<no name>".to_string(), ToString::to_string);
            let frontend = format!(
                "{} {}/{}",
                s.kind,
                crate::addr::HostPort(s.vip, s.port),
                s.protocol
            );
            let reasons: Vec<String> = s
                .drops
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(r, n)| format!("{r}={n}"))
                .collect();
            let mut row = vec![
                name,
                frontend,
                s.packets.to_string(),
                s.bytes.to_string(),
                s.new_flows.to_string(),
                s.reply_packets.to_string(),
            ];
            if wide {
                row.push(s.reply_bytes.to_string());
            }
            row.push(s.dropped.to_string());
            row.push(if reasons.is_empty() {
                "-".to_string()
            } else {
                reasons.join(",")
            });
            row.push(format!("{:.1}", s.packets_per_second));
            row.push(format!("{:.1}", s.new_flows_per_second));
            row.push(format!("{:.1}", s.dropped_per_second));
            if wide {
                row.push(format!("{:.1}", s.bytes_per_second));
                row.push(s.rev_nat_id.to_string());
            }
            row
        })
        .collect();
    let mut header = vec![
        "SERVICE",
        "FRONTEND",
        "PACKETS",
        "BYTES",
        "NEW-FLOWS",
        "REPLIES",
    ];
    if wide {
        header.push("REPLY-BYTES");
    }
    header.extend(["DROPPED", "DROP-REASONS", "PKT/S", "FLOWS/S", "DROPS/S"]);
    if wide {
        header.extend(["BYTES/S", "REV-NAT-ID"]);
    }
    out.push_str(&render_table(&header, &rows));
    out
}
