//! `svcctl lb`: the agent's LoadBalancer report ([`LbReport`], read from its
//! `/loadbalancers` endpoint) as text.
use std::fmt::Write as _;

use crate::lbipam::plan::LbReport;

fn list<T: ToString>(items: &[T]) -> String {
    if items.is_empty() {
        "-".to_string()
    } else {
        items
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Pools (size, used), assignments, problems and announcements.
pub fn render_lb(r: &LbReport) -> String {
    let mut out = String::new();
    let writer = match (r.mode.as_str(), r.writer) {
        ("manifests", _) => {
            "assignments applied by this agent (manifest mode: no status to write)".to_string()
        }
        (_, Some(true)) => format!(
            "this agent writes Services' status (holds the IPAM Lease; {} writes, {} failed)",
            r.status_writes, r.status_write_failures
        ),
        _ => "another agent writes Services' status (this one does not hold the IPAM Lease)"
            .to_string(),
    };
    let _ = writeln!(out, "LoadBalancer IPAM: {writer}");
    let _ = writeln!(
        out,
        "class-less Services: {}",
        if r.classless {
            "served"
        } else {
            "not served (only loadBalancerClass svc-ebpf.dev/lb)"
        }
    );
    let _ = writeln!(out, "\nPOOLS ({})", r.pools.len());
    if r.pools.is_empty() {
        let _ = writeln!(out, "  none: no LoadBalancerIPPool, no address is given");
    } else {
        let _ = writeln!(
            out,
            "  {:<20} {:<9} {:>8} {:>12} {:>6}  BLOCKS",
            "NAME", "STATE", "IPv4", "IPv6", "USED"
        );
        for p in &r.pools {
            let state = if p.disabled { "disabled" } else { "enabled" };
            let _ = writeln!(
                out,
                "  {:<20} {:<9} {:>8} {:>12} {:>6}  {}",
                p.name,
                state,
                p.size_v4,
                p.size_v6,
                p.used,
                list(&p.blocks)
            );
        }
    }
    let _ = writeln!(out, "\nASSIGNMENTS ({})", r.assignments.len());
    if !r.assignments.is_empty() {
        let _ = writeln!(
            out,
            "  {:<32} {:<28} {:<16} STATUS",
            "SERVICE", "ADDRESSES", "POOL"
        );
        for a in &r.assignments {
            let pools: Vec<&str> = a
                .pools
                .iter()
                .map(|p| if p.is_empty() { "(none)" } else { p.as_str() })
                .collect();
            let status = if a.ips.is_empty() {
                "none (see PROBLEMS)".to_string()
            } else if r.mode == "manifests" {
                // No status: the agent's model holds them.
                "served (no status in manifest mode)".to_string()
            } else if a.status == a.ips {
                "written".to_string()
            } else if a.status.is_empty() {
                "pending".to_string()
            } else {
                format!("pending (now {})", list(&a.status))
            };
            let _ = writeln!(
                out,
                "  {:<32} {:<28} {:<16} {}",
                a.service,
                list(&a.ips),
                list(&pools),
                status
            );
        }
    }
    if !r.problems.is_empty() {
        let _ = writeln!(out, "\nPROBLEMS ({})", r.problems.len());
        for p in &r.problems {
            let _ = writeln!(out, "  {p}");
        }
    }
    match (&r.l2, &r.l2_off) {
        (Some(l2), _) => {
            let _ = writeln!(
                out,
                "\nL2 ANNOUNCEMENTS (node {}, devices {}; {} ARP replies, {} gratuitous ARP frames sent)",
                l2.node,
                list(&l2.devices),
                l2.arp_replies,
                l2.gratuitous_arps
            );
            if !l2.announcements.is_empty() {
                let _ = writeln!(
                    out,
                    "  {:<32} {:<28} {:<10} ANNOUNCED BY",
                    "SERVICE", "ADDRESSES", "ELIGIBLE"
                );
                for a in &l2.announcements {
                    let by = match (a.here, &a.holder) {
                        (true, _) => "this node".to_string(),
                        (false, Some(h)) => h.clone(),
                        (false, None) => "nobody yet".to_string(),
                    };
                    let eligible = if a.eligible { "yes" } else { "no" };
                    let _ = writeln!(
                        out,
                        "  {:<32} {:<28} {:<10} {}",
                        a.service,
                        list(&a.ips),
                        eligible,
                        by
                    );
                }
            }
        }
        (None, Some(why)) => {
            let _ = writeln!(out, "\nL2 ANNOUNCEMENTS: off ({why})");
        }
        (None, None) => {}
    }
    out
}
