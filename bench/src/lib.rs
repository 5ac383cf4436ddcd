//! svc-bench: the pieces of `cargo xtask bench`, which compares svc-ebpf with kube-proxy's
//! iptables and nftables modes in the network-namespace lab (`svc_lab`).
//!
//! - [`rules`]: kube-proxy's rule layouts for a set of Services, as `iptables-restore` and
//!   `nft -f` input, the same Services as manifests for our agent, and loading/flushing them
//!   inside a namespace with the time it took.
//! - [`load`]: a bounded HTTP load generator (new connection per request, or keep-alive) that
//!   runs from threads inside a namespace, or as a process of its own (`svc-bench-load`, a
//!   pod's process), and reports rates, latency percentiles and, paced, CPU per connection.
//! - [`cpu`]: the CPU time a lab spends (its cgroup and the softirq threads), to the µs.
//! - [`nginx`]: an nginx backend (`return 200`) in a pod namespace, stopped on drop.
//! - [`scratch`]: a throw-away network namespace for tests that need one without a lab.
//! - [`socklb`]: socket-level load balancing for pods on and off, as BPF time per connection.
//!
//! Nothing here touches the root network namespace: rules are loaded with the tools run inside
//! the given namespace, sockets are opened from threads that entered it, and nginx is started
//! in it.

pub mod cpu;
pub mod e2e;
pub mod load;
pub mod nginx;
pub mod prog;
pub mod programming;
pub mod report;
pub mod results;
pub mod rules;
pub mod scratch;
pub mod socklb;

use std::path::PathBuf;

/// Where `name` is: the first executable of that name in PATH, else in the sbin dirs (which
/// a root shell's PATH usually has, but a test harness's may not), else `name` itself.
pub fn program(name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| PathBuf::from(name))
}
