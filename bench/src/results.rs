//! What one `cargo xtask bench` run measured: the document written to
//! `bench/results/<timestamp>.json`, from which the markdown report and the plots are made.
//! Every figure comes from the same run; goals are ratios between figures of that run.
use serde::{Deserialize, Serialize};

use crate::load::Report;

/// Schema version of [`Results`].
pub const RESULTS_VERSION: u32 = 1;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Results {
    pub version: u32,
    /// UTC, RFC 3339.
    pub started: String,
    pub finished: String,
    /// `--quick`: fewer scales and shorter runs.
    pub quick: bool,
    pub machine: Machine,
    /// Section 1: per-packet cost through BPF_PROG_TEST_RUN.
    pub packet: Vec<PacketCost>,
    /// Section 2: end to end in the lab.
    pub e2e: Vec<E2eRun>,
    /// Section 3: programming time.
    pub programming: Programming,
    /// Section 4: memory.
    pub memory: Vec<Memory>,
    /// Section 5: socket-level load balancing for pods, on (`all`) and off (`node`).
    #[serde(default)]
    pub socket_lb: Vec<SockLbRun>,
    /// The goals of the benchmark issue, evaluated on the figures above.
    pub goals: Vec<Goal>,
    /// Sections skipped or failed, with why (the run goes on without them).
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Machine {
    pub kernel: String,
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_mib: u64,
}

/// One measured case of section 1.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PacketCost {
    /// `svc_bench_pass` (the empty XDP program, the floor), `svc_xdp` or `svc_tc_ingress`.
    pub program: String,
    /// `floor` or one of [`crate::prog::CASES`] (`non_service`, `established6`, ...).
    pub case: String,
    /// Services in the maps (0 for the floor).
    pub services: usize,
    pub endpoints_per_service: usize,
    /// BPF_PROG_TEST_RUN repeat per call (1 for new flows: each packet must be a new flow).
    pub repeat: u32,
    /// Packets per run (calls × repeat).
    pub packets_per_run: u64,
    /// Nanoseconds per packet of each run, as the kernel timed it.
    pub runs_ns: Vec<f64>,
    pub median_ns: f64,
    pub min_ns: f64,
    pub max_ns: f64,
    /// For repeat = 1: the kernel timer's own cost per call, measured on the empty program
    /// the same way and subtracted from `median_ns` to give `net_median_ns`.
    pub harness_ns: Option<f64>,
    pub net_median_ns: f64,
    /// How the outputs were checked (verdict counters, output frames).
    pub verified: String,
}

/// One load run of section 2.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct E2eRun {
    /// `ebpf` (`--socket-lb node`), `ebpf-socklb` (`--socket-lb all`), `iptables`
    /// (kube-proxy's iptables layout, iptables-legacy) or `nftables`.
    pub layout: String,
    pub services: usize,
    /// `paced`, `new_connections` or `keepalive`.
    pub mode: String,
    /// Runs alternate between layouts; this is the round number (0-based).
    pub round: usize,
    pub report: Report,
    /// Paced runs of the ebpf layouts: the kernel's run time of our BPF programs during the
    /// run (BPF_ENABLE_STATS, every TC, XDP and socket program), in µs per connection
    /// answered: the translation's own share of `report`'s CPU time.
    #[serde(default)]
    pub bpf_us_per_connection: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Programming {
    pub install: Vec<InstallTime>,
    pub endpoint_change: Option<ChangeLatency>,
}

/// Installing a rule set / the maps for `services` Services from nothing.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct InstallTime {
    /// `ebpf` (through the agent), `iptables-legacy-restore` or `nft -f`.
    pub layout: String,
    pub services: usize,
    pub endpoints_per_service: usize,
    pub seconds: f64,
    /// What the time covers.
    pub what: String,
}

/// From an EndpointSlice change at the API server to the datapath using it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ChangeLatency {
    pub services: usize,
    pub endpoints_per_service: usize,
    pub changes: usize,
    pub samples_ms: Vec<f64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Where the agent spent a change's time, medians of its per-pass log: reading the
    /// source (building the model), computing the desired state, writing the maps.
    #[serde(default)]
    pub profile: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Memory {
    /// e.g. `agent peak RSS (VmHWM)`.
    pub what: String,
    pub services: usize,
    pub endpoints_per_service: usize,
    pub bytes: u64,
}

/// One round of one `--socket-lb` mode (section 5).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SockLbRun {
    /// `node` (pods' packets translated by TC) or `all` (at the socket).
    pub mode: String,
    pub round: usize,
    pub connections: usize,
    /// Run time of our BPF programs (TC, XDP, socket) per connection, ns.
    pub bpf_ns_per_connection: f64,
    /// Runs of those programs per connection.
    pub bpf_runs_per_connection: f64,
    /// Wall time per connection of the (Python) client, ms: context only.
    pub wall_ms_per_connection: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Goal {
    pub name: String,
    /// The target, in words (`<= 3.0x the empty program`).
    pub target: String,
    /// The measured figure, in words (`2.1x (61 ns vs 29 ns)`).
    pub measured: String,
    /// None: not measured in this run (say why in `note`).
    pub met: Option<bool>,
    pub note: String,
}

/// The median of `v` (mean of the middle two for an even count); 0 for an empty slice.
pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return 0.0;
    }
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// The `q` quantile (0..=1) of `v`, nearest rank; 0 for an empty slice.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return 0.0;
    }
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q.clamp(0.0, 1.0) * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_quantiles() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
    }

    #[test]
    fn results_round_trip_as_json() {
        let r = Results {
            version: RESULTS_VERSION,
            packet: vec![PacketCost {
                program: "svc_xdp".into(),
                case: "established".into(),
                services: 10,
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = serde_json::to_string(&r).unwrap();
        let back: Results = serde_json::from_str(&text).unwrap();
        assert_eq!(back.packet[0].case, "established");
    }
}
