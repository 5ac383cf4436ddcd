//! End to end: one agent per bpffs directory, and commands that say what happened.
//!
//! - A second svc-agent on the same `--bpffs` exits 1 naming the first one's pid, before it
//!   changes anything (the first keeps serving: same links, same programs, packets flow).
//! - `svc-agent cleanup` refuses while the agent runs (and svcctl still reads), removes
//!   everything once it stopped (listing what it removed), exits 3 when there is nothing to
//!   clean up, and with `--force` unpins under a running agent, naming it.
//! - Run without root or without the capabilities, svc-agent, `svc-agent cleanup` and svcctl
//!   name the missing privilege, with no backtrace even under RUST_BACKTRACE=1 and no cause
//!   said twice.
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::Mutex,
    time::Duration,
};

use svc_common::{PROTO_TCP, map_names};
use svc_lab::{
    Lab, TcpSession,
    agent::{LabAgent, example_manifests, workspace_bin},
};

static SERIAL: Mutex<()> = Mutex::new(());

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const SVC: SocketAddrV4 = SocketAddrV4::new(VIP, 80);
const TIMEOUT: Duration = Duration::from_secs(3);
/// `svc-agent cleanup`'s documented exit status for "nothing to clean up".
const NOTHING_TO_CLEAN: i32 = 3;

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `svc-agent cleanup --bpffs DIR [extra]`, with RUST_BACKTRACE=1.
fn cleanup(dir: &Path, extra: &[&str]) -> Output {
    Command::new(workspace_bin("svc-agent").unwrap())
        .arg("cleanup")
        .arg("--bpffs")
        .arg(dir)
        .args(extra)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run svc-agent cleanup")
}

/// What every user-facing failure must look like: a message, no backtrace.
fn assert_no_backtrace(stderr: &str) {
    for word in [
        "Stack backtrace",
        "stack backtrace",
        "Caused by:",
        "panicked",
    ] {
        assert!(!stderr.contains(word), "{word:?} in:\n{stderr}");
    }
}

#[test]
fn a_second_agent_is_refused_and_cleanup_waits_for_the_agent_to_stop() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut lab = Lab::up().expect("lab up");
    let manifests = example_manifests(&lab, &["echo-clusterip.yaml"]).unwrap();
    let log = std::env::temp_dir().join(format!("svl-{}-agent.log", lab.id()));
    let log2 = std::env::temp_dir().join(format!("svl-{}-agent2.log", lab.id()));
    let first = LabAgent::start(&mut lab, &manifests, &log).expect("start agent");
    first
        .wait_backends(VIP, 80, PROTO_TCP, 3, Duration::from_secs(20))
        .unwrap();
    let bpffs = first.bpffs.clone();
    let links_before = first.links();
    assert!(links_before.contains_key("xdp@eth0"), "{links_before:?}");
    let mut tcp = TcpSession::connect(lab.client_ns(), SVC, TIMEOUT).expect("connect");
    tcp.exchange("before").expect("exchange");

    // --- A second agent on the same directory: exit 1, the holder's pid, nothing changed.
    // Once without status ports (without the lock it would run, and swap its programs into
    // the first one's links), once with the first one's ports (the lock comes first, or it
    // would fail on those instead).
    let no_ports: &[&str] = &["--healthz-bind-address", "", "--metrics-bind-address", ""];
    for extra in [no_ports, &[][..]] {
        let _ = std::fs::remove_file(&log2);
        let second =
            LabAgent::start_in(&mut lab, 1, &manifests, &log2, extra).expect("start second agent");
        let status = second
            .process
            .wait_timeout(Duration::from_secs(15))
            .unwrap()
            .unwrap_or_else(|| {
                let _ = second.process.stop();
                panic!(
                    "{extra:?}: the second agent still runs:\n{}",
                    second.log_text()
                )
            });
        let second_log = second.log_text();
        assert_eq!(status.code(), Some(1), "{second_log}");
        let want = format!(
            "error: another svc-agent (pid {}) holds {}",
            first.process.pid(),
            bpffs.display()
        );
        assert!(second_log.contains(&want), "no {want:?} in:\n{second_log}");
        assert!(!second_log.contains("address in use"), "{second_log}");
        assert_no_backtrace(&second_log);
    }
    assert!(first.process.is_running(), "the first agent keeps running");
    assert_eq!(
        first.links(),
        links_before,
        "the same links run the same programs: the second agent swapped nothing in"
    );
    tcp.exchange("after").expect("the established flow goes on");
    let mut fresh = TcpSession::connect(lab.client_ns(), SVC, TIMEOUT).expect("new connection");
    fresh.exchange("new").expect("a new connection is served");
    drop(fresh);
    drop(tcp);

    // --- cleanup while the agent runs: refused, naming it; nothing removed. svcctl reads.
    let out = cleanup(&bpffs, &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let want = format!(
        "another svc-agent (pid {}) holds {}",
        first.process.pid(),
        bpffs.display()
    );
    assert!(
        stderr.contains(&want) && stderr.contains("--force"),
        "{stderr}"
    );
    assert_no_backtrace(&stderr);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(bpffs.join(map_names::SVC4_CT).exists(), "maps still pinned");
    assert_eq!(
        first.links().len(),
        links_before.len(),
        "links still pinned"
    );
    let dump = Command::new(workspace_bin("svcctl").unwrap())
        .arg("--bpffs")
        .arg(&bpffs)
        .args(["dump", "services", "-o", "json"])
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "svcctl needs no lock: {}",
        text(&dump).1
    );

    // --- Stopped, the agent's directory is cleaned, and the output lists what went.
    first.process.stop().expect("stop agent");
    let out = cleanup(&bpffs, &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    for want in [
        "detached and unpinned link xdp@eth0".to_string(),
        "detached and unpinned link tc-ingress@lxc-client".to_string(),
        format!("unpinned map {}", map_names::SVC4_SERVICES),
        format!("unpinned map {}", map_names::SVC4_CT),
        format!(
            "removed {} ({} links, ",
            bpffs.display(),
            links_before.len()
        ),
    ] {
        assert!(stdout.contains(&want), "no {want:?} in:\n{stdout}");
    }
    assert!(!bpffs.exists());

    // --- Nothing there: exit 3 with the path, for the same path again and for a mistyped one.
    let never = PathBuf::from(format!("/sys/fs/bpf/svl-{}-never-existed", lab.id()));
    for dir in [&bpffs, &never] {
        let out = cleanup(dir, &[]);
        let (stdout, stderr) = text(&out);
        assert_eq!(
            out.status.code(),
            Some(NOTHING_TO_CLEAN),
            "{stdout}{stderr}"
        );
        assert!(
            stderr.contains(&format!(
                "nothing to clean up at {}: the directory does not exist",
                dir.display()
            )),
            "{stderr}"
        );
        assert!(!stdout.contains("removed"), "{stdout}");
    }

    // --- --force under a running agent: done, and the agent it went past is named.
    let third = LabAgent::start(&mut lab, &manifests, &log).expect("start a third agent");
    third
        .wait_backends(VIP, 80, PROTO_TCP, 3, Duration::from_secs(20))
        .unwrap();
    let out = cleanup(&bpffs, &["--force"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "warning: svc-agent (pid {}) still runs on {}",
            third.process.pid(),
            bpffs.display()
        )),
        "{stderr}"
    );
    assert!(stdout.contains("removed"), "{stdout}");
    assert!(!bpffs.exists());
    let _ = third.process.stop();
    for f in [&log, &log2] {
        let _ = std::fs::remove_file(f);
    }
    let _ = std::fs::remove_dir_all(&manifests);
}

/// A bpffs directory of this test (`svl-<pid>-...`, so a crashed run's leftover is removed by
/// the next lab's stale cleanup), removed on drop.
struct BpffsDir(PathBuf);

impl Drop for BpffsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A root-owned pin directory (mode `mode`) holding one map pinned as SVC4_SERVICES with
/// this build's key and value sizes.
fn root_pins(tag: &str, mode: u32) -> BpffsDir {
    use std::os::unix::fs::PermissionsExt as _;
    svc_lab::ensure_bpffs().expect("bpffs");
    let dir = BpffsDir(PathBuf::from(format!(
        "/sys/fs/bpf/svl-{}-{tag}",
        std::process::id()
    )));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(mode)).unwrap();
    let key = size_of::<svc_common::Svc4Key>().to_string();
    let value = size_of::<svc_common::Svc4Value>().to_string();
    let out = Command::new("bpftool")
        .args(["map", "create"])
        .arg(dir.0.join(map_names::SVC4_SERVICES))
        .args([
            "type", "hash", "key", &key, "value", &value, "entries", "16",
        ])
        .args(["name", "svl_test"])
        .output()
        .expect("bpftool (installed by cargo xtask setup)");
    assert!(out.status.success(), "{}", text(&out).1);
    dir
}

/// `program args` as uid/gid 65534 without groups (and so without capabilities), with
/// RUST_BACKTRACE=1.
fn as_nobody(program: &str, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .arg(workspace_bin(program).unwrap())
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("setpriv (util-linux)")
}

/// Exit 1, no backtrace, each cause once, and `want` in stderr.
fn fails_naming(out: &Output, want: &[&str]) {
    let (stdout, stderr) = text(out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert_no_backtrace(&stderr);
    for w in want {
        assert!(stderr.contains(w), "no {w:?} in:\n{stderr}");
    }
    assert!(
        stderr.matches("Permission denied").count() + stderr.matches("not permitted").count() <= 1,
        "the cause is said once:\n{stderr}"
    );
    assert!(
        stderr.matches("`BPF_OBJ_GET` failed").count() <= 1,
        "no doubled text:\n{stderr}"
    );
}

#[test]
fn without_privileges_every_command_names_what_is_missing() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // As the agent leaves it: root's directory, mode 0700.
    let closed = root_pins("privileges-closed", 0o700);
    let dir = closed.0.to_str().unwrap();
    let need_root = "lacks root (uid 0)";

    // svcctl: cannot even look into the directory; not "nothing is pinned".
    let out = as_nobody("svcctl", &["--bpffs", dir, "dump"]);
    fails_naming(
        &out,
        &[
            "svcctl: cannot open",
            "Permission denied",
            "svcctl needs root",
            "runs as uid 65534",
            need_root,
        ],
    );
    assert!(
        !text(&out).1.contains("nothing is pinned"),
        "{}",
        text(&out).1
    );

    // svcctl on a directory others may enter: the pin itself (mode 0600) is refused, by
    // BPF_OBJ_GET, said once.
    let open = root_pins("privileges-open", 0o755);
    let out = as_nobody(
        "svcctl",
        &["--bpffs", open.0.to_str().unwrap(), "dump", "-o", "json"],
    );
    fails_naming(
        &out,
        &[
            "map SVC4_SERVICES: `BPF_OBJ_GET` failed: Permission denied",
            "svcctl needs root",
        ],
    );

    // cleanup as nobody: not "cannot create", and the pins stay.
    let out = as_nobody("svc-agent", &["cleanup", "--bpffs", dir]);
    fails_naming(
        &out,
        &[
            &format!("error: cannot open {dir}: Permission denied"),
            "svc-agent cleanup needs root",
            need_root,
        ],
    );
    assert!(!text(&out).1.contains("cannot create"), "{}", text(&out).1);
    assert!(closed.0.join(map_names::SVC4_SERVICES).exists());

    // The agent as nobody: refused at its directory (before anything else), and told what
    // it needs. No device, no ports: it must not get far, but if it did it would touch
    // nothing.
    let manifests = std::env::temp_dir().join(format!("svl-{}-no-manifests", std::process::id()));
    std::fs::create_dir_all(&manifests).unwrap();
    let agent_args = |bpffs: &str| -> Vec<String> {
        [
            "--manifests",
            manifests.to_str().unwrap(),
            "--bpffs",
            bpffs,
            "--pod-device",
            "svl-none",
            "--healthz-bind-address",
            "",
            "--metrics-bind-address",
            "",
        ]
        .map(String::from)
        .to_vec()
    };
    let args = agent_args(dir);
    let out = as_nobody(
        "svc-agent",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    fails_naming(
        &out,
        &[
            &format!("error: cannot open {dir}: Permission denied"),
            "svc-agent needs root",
            "lacks root (uid 0), CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON",
        ],
    );

    // The agent as root without the capabilities (none of BPF, NET_ADMIN, PERFMON,
    // SYS_ADMIN in its bounding set): it gets its directory, then creating the first map
    // fails; the message names exactly those capabilities.
    let fresh = BpffsDir(PathBuf::from(format!(
        "/sys/fs/bpf/svl-{}-privileges-caps",
        std::process::id()
    )));
    let args = agent_args(fresh.0.to_str().unwrap());
    let out = Command::new("setpriv")
        .args([
            "--bounding-set",
            "-bpf,-net_admin,-perfmon,-sys_admin",
            "--",
        ])
        .arg(workspace_bin("svc-agent").unwrap())
        .args(&args)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .output()
        .expect("setpriv");
    fails_naming(
        &out,
        &[
            "error: loading the eBPF object",
            "Operation not permitted",
            "runs as uid 0 and lacks CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON",
        ],
    );
    assert!(
        !text(&out).1.contains("lacks root"),
        "root is not what is missing: {}",
        text(&out).1
    );
    let _ = std::fs::remove_dir_all(&manifests);
}
