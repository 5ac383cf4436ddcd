//! Stopping `svc-bench` with a signal in the middle of a section (Ctrl-C) leaves nothing
//! behind: its child processes stop and its lab's namespaces, cgroups, bpffs dirs and temp
//! dirs (all named with its pid) are removed, as its Drop guards would have on a normal
//! end. Needs root and the release-or-debug svc-bench and svc-agent binaries
//! (`cargo build --workspace --exclude svc-ebpf --bins`).
use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use svc_lab::agent::{wait_for, workspace_bin};

/// Everything named with `pid` in the places the bench and its lab create things.
fn leftovers(pid: u32) -> Vec<String> {
    let prefixes = [format!("svl-{pid}-"), format!("svb-{pid}-")];
    let mine = |name: &str| prefixes.iter().any(|p| name.starts_with(p.as_str()));
    let mut out: Vec<String> = svc_lab::netns::list_netns()
        .into_iter()
        .filter(|n| mine(n))
        .map(|n| format!("netns {n}"))
        .collect();
    let cgroup_roots = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"];
    let temp = std::env::temp_dir();
    for dir in ["/sys/fs/bpf"]
        .iter()
        .map(std::path::Path::new)
        .chain(cgroup_roots.iter().map(std::path::Path::new))
        .chain([temp.as_path()])
    {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if mine(&name) {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

/// True if a process named `comm` has `pid` as its parent.
fn has_child(pid: u32, comm: &str) -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            std::fs::read_to_string(e.path().join("stat")).is_ok_and(|stat| {
                let name = stat.split_once('(').and_then(|(_, r)| r.rsplit_once(')'));
                name.is_some_and(|(name, rest)| {
                    name == comm && rest.split_whitespace().nth(1) == Some(pid.to_string().as_str())
                })
            })
        })
}

#[test]
fn sigint_mid_section_leaves_nothing_behind() {
    let out = std::env::temp_dir().join(format!("svb-test-{}-signal", std::process::id()));
    let mut bench = Command::new(workspace_bin("svc-bench").expect("svc-bench binary"))
        .args(["--quick", "--only", "socklb", "--out"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start svc-bench");
    let pid = bench.id();
    // The section is under way once its lab exists and an agent runs in it.
    let started = wait_for(Duration::from_secs(60), || {
        !leftovers(pid).is_empty() && has_child(pid, "svc-agent")
    });
    if !started {
        let _ = bench.kill();
        panic!("svc-bench never made its lab and started an agent");
    }
    // SAFETY: kill(2) with the child's pid and SIGINT.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = bench.try_wait().expect("wait for svc-bench") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = bench.kill();
            panic!("svc-bench did not stop within 30 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = std::fs::remove_dir_all(&out);
    assert_eq!(
        status.code(),
        Some(128 + libc::SIGINT),
        "exit status {status:?}"
    );
    let left = leftovers(pid);
    assert!(left.is_empty(), "left behind after SIGINT: {left:#?}");
}
