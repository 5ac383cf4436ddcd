//! The CPU time a lab spends, to the microsecond: what section 2's paced runs divide by the
//! connections they made.
//!
//! [`lab_cpu`] is the sum of two precise clocks, both the scheduler's own runtime accounting
//! (not the 4 ms ticks of /proc/stat, whose sampling made a first version of this figure
//! vary by hundreds of µs per connection between rounds here):
//!
//! - the lab node's cgroup (cgroup v2 `cpu.stat` `usage_usec`, kept whether or not the cpu
//!   controller is enabled), which holds every process of the lab (the client pod's load
//!   generator, the nginx pods) under its pods' cgroups. This kernel has no
//!   `CONFIG_IRQ_TIME_ACCOUNTING`, so the softirq work a process's own packets cause (on veth,
//!   the receive path runs when the sender's transmit enables bottom halves again), and with
//!   it every TC/XDP program, netfilter hook and NAT rule they cross, is charged to that
//!   process and so to the cgroup;
//! - the softirq threads (`ksoftirqd/N`, `/proc/PID/schedstat`'s first field, ns), which take
//!   over softirq work the interrupted context did not finish.
//!
//! [`program_stats`] reads the kernel's run time of our BPF programs, which the paced runs of
//! the ebpf layouts and the socket-LB section report as the translation's own share.
//!
//! Not counted: softirq work that ran while a CPU was otherwise idle (timers, e.g. TCP
//! retransmits) and kernel workers (e.g. netfilter conntrack's garbage collector); the same
//! for every layout, and small at a rate well below the ceiling.
use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

/// The cgroup's CPU usage so far (cgroup v2 `cpu.stat`, `usage_usec`), descendants included.
pub fn cgroup_usage(cgroup: &Path) -> io::Result<Duration> {
    let path = cgroup.join("cpu.stat");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", path.display())))?;
    usage_usec(&text).map(Duration::from_micros).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: no usage_usec line", path.display()),
        )
    })
}

fn usage_usec(cpu_stat: &str) -> Option<u64> {
    cpu_stat
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

/// The run time of every `ksoftirqd/N` thread so far (the first field of
/// `/proc/PID/schedstat`, ns).
pub fn softirq_threads_runtime() -> io::Result<Duration> {
    let mut total = Duration::ZERO;
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let name = entry.file_name();
        if !name
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("ksoftirqd/") {
            continue;
        }
        // A thread that went away between the two reads is skipped.
        if let Ok(s) = std::fs::read_to_string(entry.path().join("schedstat"))
            && let Some(ns) = s.split_whitespace().next().and_then(|f| f.parse().ok())
        {
            total += Duration::from_nanos(ns);
        }
    }
    Ok(total)
}

/// The lab's CPU time so far: `cgroup`'s usage plus the softirq threads' (see the
/// [module docs](self)). Only differences of two readings mean anything.
pub fn lab_cpu(cgroup: &Path) -> io::Result<Duration> {
    Ok(cgroup_usage(cgroup)? + softirq_threads_runtime()?)
}

/// Our programs, by the names the kernel shows (15 characters at most).
pub const OUR_PROGRAMS: [&str; 8] = [
    "svc_tc_ingress",
    "svc_xdp",
    "svc_connect4",
    "svc_sendmsg4",
    "svc_recvmsg4",
    "svc_connect6",
    "svc_sendmsg6",
    "svc_recvmsg6",
];

/// Run time and run count of each of our programs loaded now, by program id. The kernel
/// counts them only while some process holds BPF_ENABLE_STATS
/// (`aya::sys::enable_stats(aya::sys::Stats::RunTime)`): two clock reads per program run.
pub fn program_stats() -> anyhow::Result<BTreeMap<u32, (Duration, u64)>> {
    let mut out = BTreeMap::new();
    for info in aya::programs::loaded_programs() {
        let info = info.context("reading a loaded program's info")?;
        if info
            .name_as_str()
            .is_some_and(|n| OUR_PROGRAMS.contains(&n))
        {
            out.insert(info.id(), (info.run_time(), info.run_count()));
        }
    }
    Ok(out)
}

/// (run time, runs) between two [`program_stats`] snapshots, over the programs in both (a
/// previous agent's programs may still be unloading when the first is taken).
pub fn stats_delta(
    before: &BTreeMap<u32, (Duration, u64)>,
    after: &BTreeMap<u32, (Duration, u64)>,
) -> (Duration, u64) {
    let mut time = Duration::ZERO;
    let mut runs = 0;
    for (id, (t1, n1)) in after {
        if let Some((t0, n0)) = before.get(id) {
            time += t1.saturating_sub(*t0);
            runs += n1.saturating_sub(*n0);
        }
    }
    (time, runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_from_cpu_stat() {
        let text = "usage_usec 33576439248\nuser_usec 24632034897\nsystem_usec 8944404351\n";
        assert_eq!(usage_usec(text), Some(33_576_439_248));
        assert_eq!(usage_usec("user_usec 5\n"), None);
        assert_eq!(usage_usec("usage_usec x\n"), None);
    }

    #[test]
    fn the_softirq_threads_have_run() {
        // Every Linux machine has one per CPU, and they have run by the time a test does.
        let t = softirq_threads_runtime().unwrap();
        assert!(t > Duration::ZERO, "{t:?}");
    }
}
