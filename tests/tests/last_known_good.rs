//! End to end: a manifest file or object that goes bad never takes a live Service down.
//! The real svc-agent serves the echo Service (10.96.0.10, three pods) from a manifest
//! directory; a file broken by one unclosed `{` keeps serving its last good version, and a
//! duplicate of the Service in a new file does not move it. Real packets from a pod check
//! what is served; svcctl and the agent's log must say why.
//! Each test builds its own lab; they touch kernel state, so they run one at a time.
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    sync::Mutex,
    time::Duration,
};

use svc_common::{PROTO_TCP, PROTO_UDP};
use svc_lab::{
    Lab, UdpSession,
    agent::{LabAgent, example_manifests, wait_for, workspace_bin},
    tcp_request,
};

static SERIAL: Mutex<()> = Mutex::new(());

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const SVC: SocketAddrV4 = SocketAddrV4::new(VIP, 80);
/// The address a duplicate of the echo Service claims.
const COPY_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 99);
const COPY_SVC: SocketAddrV4 = SocketAddrV4::new(COPY_VIP, 80);
const TIMEOUT: Duration = Duration::from_secs(3);
const FILE: &str = "echo-clusterip.yaml";

/// The example's text (the echo Service and its EndpointSlice).
fn example() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples")
            .join(FILE),
    )
    .unwrap()
}

/// A lab with the agent serving a private copy of examples/echo-clusterip.yaml.
struct Env {
    agent: LabAgent,
    manifests: PathBuf,
    // Dropped last: tears the namespaces down after the agent is stopped.
    lab: Lab,
}

impl Env {
    fn up() -> Env {
        let mut lab = Lab::up().expect("lab up");
        let manifests = example_manifests(&lab, &[FILE]).unwrap();
        let log = std::env::temp_dir().join(format!("svl-{}-agent.log", lab.id()));
        let agent = LabAgent::start(&mut lab, &manifests, &log).expect("start agent");
        agent
            .wait_backends(VIP, 80, PROTO_TCP, 3, Duration::from_secs(20))
            .unwrap();
        Env {
            agent,
            manifests,
            lab,
        }
    }

    /// Writes a manifest file whole (write, then rename: the agent never reads half of it).
    fn write(&self, name: &str, text: &str) {
        let tmp = self.manifests.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.manifests.join(name)).unwrap();
    }

    /// `svcctl dump services -o json`'s problems.
    fn problems(&self) -> Vec<String> {
        let out = std::process::Command::new(workspace_bin("svcctl").unwrap())
            .arg("--bpffs")
            .arg(&self.agent.bpffs)
            .args(["dump", "services", "-o", "json"])
            .output()
            .expect("run svcctl");
        assert!(
            out.status.success(),
            "svcctl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("svcctl JSON");
        doc["problems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(str::to_string))
            .collect()
    }

    /// Waits until svcctl lists a problem for which `check` holds; fails with what it
    /// lists and the agent's log.
    fn wait_problem(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let mut found = None;
        wait_for(Duration::from_secs(10), || {
            found = self.problems().into_iter().find(|p| check(p));
            found.is_some()
        });
        found.unwrap_or_else(|| {
            panic!(
                "svcctl lists no problem {what}: {:?}\nagent log:\n{}",
                self.problems(),
                self.agent.log_text()
            )
        })
    }

    /// The echo Service answers real TCP and UDP requests from a pod, every time.
    fn assert_echo_answers(&self, when: &str) {
        for i in 0..20 {
            tcp_request(self.lab.client_ns(), SVC, "still there?", TIMEOUT)
                .unwrap_or_else(|e| panic!("{when}: TCP request {i} to {SVC}: {e}"));
        }
        for i in 0..5 {
            UdpSession::bind(self.lab.client_ns())
                .unwrap()
                .request(SVC, TIMEOUT)
                .unwrap_or_else(|e| panic!("{when}: UDP request {i} to {SVC}: {e}"));
        }
        assert_eq!(
            self.agent.backend_count(VIP, 80, PROTO_TCP),
            Some(3),
            "{when}"
        );
        assert_eq!(
            self.agent.backend_count(VIP, 80, PROTO_UDP),
            Some(3),
            "{when}"
        );
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- svc-agent log ---\n{}", self.agent.log_text());
        }
        let _ = self.agent.process.stop();
        let _ = std::fs::remove_dir_all(&self.manifests);
        let _ = std::fs::remove_file(&self.agent.log);
    }
}

/// One unclosed `{` in the Service's document: the Service keeps answering on its last
/// good version and svcctl and the log say so; fixed, the problem is gone; deleted, the
/// Service is gone.
#[test]
fn a_file_that_stops_parsing_keeps_serving_until_fixed_or_deleted() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up();
    env.assert_echo_answers("before");

    let good = example();
    let broken = good.replacen("selector:\n", "selector: {\n", 1);
    assert_ne!(broken, good);
    env.write(FILE, &broken);
    // Once the agent has read the broken file (it logs the syntax error either way) ...
    let read = wait_for(Duration::from_secs(10), || {
        env.agent.log_text().contains("invalid YAML")
    });
    assert!(
        read,
        "the agent did not report the broken file:\n{}",
        env.agent.log_text()
    );
    // (a pass that removed the Service would have run by now, with the next poll)
    std::thread::sleep(Duration::from_millis(500));
    // ... the Service keeps answering real requests.
    env.assert_echo_answers("with the file broken");
    // svcctl names the file, the error and that the last good version is served.
    let problem = env.wait_problem("for the broken file", |p| {
        p.contains(&format!(
            "{FILE}#1: still serving the last good version of this file"
        )) && p.contains("invalid YAML")
    });
    assert!(problem.contains("(read at 20"), "{problem}");
    let object = env.wait_problem("for the Service it keeps", |p| {
        p.contains(&format!(
            "{FILE} Service default/echo: still serving the last good version"
        ))
    });
    assert!(!object.is_empty());
    // The log says so too.
    let log = env.agent.log_text();
    assert!(
        log.contains(&format!(
            "{FILE}#1: still serving the last good version of this file"
        )),
        "the log does not say the last good version is served:\n{log}"
    );
    env.assert_echo_answers("after svcctl listed the problem");

    // Fixed (with one endpoint fewer): served as written, the problem is gone.
    let (head, _) = good.split_once("  - addresses: [\"10.244.1.13\"]").unwrap();
    env.write(FILE, head);
    env.agent
        .wait_backends(VIP, 80, PROTO_TCP, 2, Duration::from_secs(10))
        .unwrap();
    let gone = wait_for(Duration::from_secs(10), || {
        env.problems().iter().all(|p| !p.contains(FILE))
    });
    assert!(gone, "problems left after the fix: {:?}", env.problems());
    tcp_request(env.lab.client_ns(), SVC, "fixed", TIMEOUT).expect("after the fix");

    // Deleted: the Service is gone.
    std::fs::remove_file(env.manifests.join(FILE)).unwrap();
    let removed = wait_for(Duration::from_secs(10), || {
        env.agent.backend_count(VIP, 80, PROTO_TCP).is_none()
    });
    assert!(
        removed,
        "the Service of a deleted file is still served:\n{}",
        env.agent.log_text()
    );
    assert!(
        tcp_request(env.lab.client_ns(), SVC, "gone", Duration::from_secs(1)).is_err(),
        "the Service of a deleted file still answers"
    );
}

/// A new file, first in file order, defines the served echo Service again with another
/// clusterIP: the served one stays, the new address gets nothing, and the problem names
/// the new file. When the original file drops the Service, the other definition takes over.
#[test]
fn a_duplicate_in_a_new_file_never_moves_the_served_service() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::up();
    const COPY: &str = "00-echo-copy.yaml";
    let copy = example().replace("clusterIP: 10.96.0.10", "clusterIP: 10.96.0.99");
    env.write(COPY, &copy);

    let read = wait_for(Duration::from_secs(10), || {
        env.agent.log_text().contains("duplicate of")
    });
    assert!(
        read,
        "the agent did not report the duplicate:\n{}",
        env.agent.log_text()
    );
    std::thread::sleep(Duration::from_millis(500));
    env.assert_echo_answers("with a duplicate in a new file");
    assert_eq!(
        env.agent.backend_count(COPY_VIP, 80, PROTO_TCP),
        None,
        "the duplicate's address got an entry"
    );
    assert!(
        tcp_request(
            env.lab.client_ns(),
            COPY_SVC,
            "copy",
            Duration::from_secs(1)
        )
        .is_err(),
        "the duplicate's address answers"
    );
    let problem = env.wait_problem("naming the new file", |p| {
        p.contains(&format!("{COPY}#1 Service default/echo: duplicate of"))
    });
    assert!(
        problem.contains(&format!("{FILE}#1; ignored")),
        "the problem does not name the served one: {problem}"
    );
    assert!(
        env.problems()
            .iter()
            .all(|p| !p.starts_with(&format!("{}#", env.manifests.join(FILE).display()))),
        "a problem blames the original file: {:?}",
        env.problems()
    );

    // The original file gives the Service up: the other definition is served now.
    env.write(FILE, "# moved\n");
    env.agent
        .wait_backends(COPY_VIP, 80, PROTO_TCP, 3, Duration::from_secs(10))
        .unwrap();
    let moved = wait_for(Duration::from_secs(10), || {
        env.agent.backend_count(VIP, 80, PROTO_TCP).is_none()
    });
    assert!(moved, "10.96.0.10 is still served");
    tcp_request(env.lab.client_ns(), COPY_SVC, "copy", TIMEOUT).expect("the copy answers now");
}

/// The last good version lives in the agent's memory; a restarted agent whose first read
/// finds the file broken cannot serve it from there, but it must not take down what the
/// earlier agent served from it: it removes nothing from the maps until every object is
/// usable (the pinned state keeps serving), and says so.
#[test]
fn a_restart_while_a_file_is_broken_keeps_what_was_served() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut env = Env::up();
    env.assert_echo_answers("before");
    env.agent.process.kill().expect("kill the agent");
    env.write(FILE, &example().replacen("spec:\n", "spec: {\n", 1));
    env.agent.restart(&mut env.lab).expect("restart the agent");
    env.wait_problem("for the broken file", |p| p.contains(FILE));
    env.assert_echo_answers("after a restart with the file broken");
    assert!(
        wait_for(Duration::from_secs(10), || env
            .agent
            .log_text()
            .contains("not removing frontends the source does not have")),
        "the agent does not say it keeps what it cannot read:\n{}",
        env.agent.log_text()
    );
    // Fixed: served from the file again; removed with it.
    env.write(FILE, &example());
    assert!(
        wait_for(Duration::from_secs(10), || !env
            .problems()
            .iter()
            .any(|p| p.contains(FILE))),
        "the problem stays after the fix: {:?}",
        env.problems()
    );
    env.assert_echo_answers("after the fix");
    std::fs::remove_file(env.manifests.join(FILE)).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || env
            .agent
            .backend_count(VIP, 80, PROTO_TCP)
            .is_none()),
        "the Service stays after its file was deleted"
    );
}
