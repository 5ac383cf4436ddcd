//! End to end: svc-agent run as deploy/base/svc-agent.yaml's DaemonSet runs it, in the lab.
//!
//! Everything the pod spec decides is read from the YAML, not copied: the container's
//! `args` and `env`, its capabilities (`drop: [ALL]`, `add: [...]`),
//! `allowPrivilegeEscalation: false` (no_new_privs), `readOnlyRootFilesystem`, its
//! `volumeMounts` with their `readOnly`, the probes' paths and port, and the ConfigMap's
//! `config.conf`. The agent runs in the lab node's network namespace (the DaemonSet's
//! `hostNetwork`), in a mount namespace of its own whose root is a read-only tmpfs holding
//! what a container of the image gives the agent: `/usr` (the image's, or this
//! machine's), the binaries at `/usr/local/bin`, `/proc` (with `/proc/sys` read-only, as
//! in a container), a read-only `/sys`, `/dev/null`, and every `volumeMounts` entry at its
//! `mountPath` (the image's `/etc` and `/var` are left out: the agent reads nothing there,
//! and the test would fail if it needed them). It is started by `setpriv` with the added capabilities as its inheritable,
//! ambient and bounding sets and nothing else, and no_new_privs.
//!
//! What the lab changes, and nothing else:
//! - the hostPath volumes' sources: `/sys/fs/bpf` is the lab node's bpffs directory (so
//!   the pins land in `<it>/svc-ebpf` and go with the lab), `/sys/fs/cgroup` the lab node's
//!   cgroup (so the socket programs see only the lab's processes, not the host's), and
//!   `/proc/sys/net` the host's, opened from the node's namespace (its sysctls, as on a
//!   node);
//! - the source: the lab has no API server, so `--manifests=/etc/svc-agent/manifests` is
//!   added (a read-only mount of the test's manifests) with `--node-ip=192.0.2.1` (what the
//!   Node object's InternalIP gives in Kubernetes mode: the masquerade address), and
//!   `NODE_NAME` is the lab node's name (the DaemonSet's `fieldRef: spec.nodeName`);
//! - the ConfigMap's file is used as it is: its `clusterCIDR` is the lab's pod range (the
//!   test checks it), `--device=eth0` and `--pod-device=lxc*` name the lab's interfaces.
//!
//! With `SVC_IMAGE=<image>` (what `cargo xtask image` sets), svc-agent and svcctl are taken
//! from that image's root filesystem (`podman image mount`) and the image's `/usr` is the
//! agent's `/usr` (its glibc); otherwise they are the workspace's binaries (`cargo xtask
//! test` builds them) on this machine's `/usr`.
//!
//! The agent must load and attach (XDP and TC on eth0, TC on every pod interface, the
//! cgroup socket programs), serve a Service (TC from a pod, XDP from outside on a
//! NodePort, the cgroup programs from a node process), answer `/healthz` and `/livez` on
//! the probes' port, stop at SIGTERM with status 0 leaving the datapath pinned, and
//! `svc-agent cleanup` (same capabilities) must remove it. Then, once per added
//! capability, the agent without it must exit non-zero naming that capability.
use std::{
    collections::BTreeMap,
    ffi::CString,
    io,
    net::{Ipv4Addr, SocketAddrV4},
    os::unix::{ffi::OsStrExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Mutex,
    time::Duration,
};

use k8s_openapi::api::{apps::v1::DaemonSet, core::v1::ConfigMap};
use svc_lab::{
    CLUSTER_POD_CIDR, EXT_IP, Lab, NODE_EXT_IF, NODE_EXT_IP, NodeProcess, P1_IP, P2_IP, P3_IP,
    agent::{wait_for, workspace_bin},
    http_get, tcp_request,
};

static SERIAL: Mutex<()> = Mutex::new(());

const MANIFEST: &str = "deploy/base/svc-agent.yaml";
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const SVC_PORT: u16 = 80;
const NODE_PORT: u16 = 30080;
const TIMEOUT: Duration = Duration::from_secs(3);
/// Where the lab's manifests are mounted in the agent's root (the lab's only addition).
const MANIFESTS_PATH: &str = "/etc/svc-agent/manifests";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One `volumeMounts` entry with its volume.
#[derive(Debug, Clone)]
struct Mount {
    path: String,
    read_only: bool,
    source: Volume,
}

#[derive(Debug, Clone, PartialEq)]
enum Volume {
    HostPath(String),
    ConfigMap(String),
}

/// What the test takes from the DaemonSet and its ConfigMap.
#[derive(Debug)]
struct PodSpec {
    args: Vec<String>,
    /// Literal values, and `fieldRef` paths as `fieldRef:<path>`.
    env: Vec<(String, String)>,
    /// Added capabilities, as the YAML names them (`BPF`, ...).
    caps: Vec<String>,
    no_new_privs: bool,
    read_only_root: bool,
    mounts: Vec<Mount>,
    /// The probes: (path, port).
    probes: Vec<(String, u16)>,
    /// ConfigMap name -> key -> text.
    config_maps: BTreeMap<String, BTreeMap<String, String>>,
}

fn read_pod_spec() -> PodSpec {
    let text = std::fs::read_to_string(repo().join(MANIFEST)).expect("read the manifest");
    let mut daemonset: Option<DaemonSet> = None;
    let mut config_maps = BTreeMap::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(doc).expect("a YAML document");
        match value.get("kind").and_then(|k| k.as_str()) {
            Some("DaemonSet") => {
                daemonset = Some(serde_yaml::from_value(value).expect("DaemonSet"))
            }
            Some("ConfigMap") => {
                let cm: ConfigMap = serde_yaml::from_value(value).expect("ConfigMap");
                config_maps.insert(
                    cm.metadata.name.clone().unwrap_or_default(),
                    cm.data.unwrap_or_default(),
                );
            }
            _ => {}
        }
    }
    let ds = daemonset.expect("a DaemonSet in the manifest");
    let pod = ds.spec.template.spec.expect("pod spec");
    assert_eq!(
        pod.host_network,
        Some(true),
        "the lab runs it in the node's namespace"
    );
    let c = pod
        .containers
        .iter()
        .find(|c| c.name == "svc-agent")
        .expect("container svc-agent");
    let sc = c.security_context.clone().expect("securityContext");
    assert_eq!(sc.run_as_user, Some(0), "runs as root");
    assert_ne!(sc.privileged, Some(true), "not privileged");
    let caps = sc.capabilities.expect("capabilities");
    assert_eq!(caps.drop, Some(vec!["ALL".to_string()]), "drops ALL");
    let caps = caps.add.unwrap_or_default();
    assert!(!caps.is_empty(), "adds capabilities");
    let volumes: BTreeMap<String, Volume> = pod
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| {
            let source = if let Some(h) = v.host_path {
                Volume::HostPath(h.path)
            } else if let Some(cm) = v.config_map {
                Volume::ConfigMap(cm.name)
            } else {
                panic!(
                    "volume {}: the test knows hostPath and configMap volumes",
                    v.name
                )
            };
            (v.name, source)
        })
        .collect();
    let mounts = c
        .volume_mounts
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|m| Mount {
            source: volumes
                .get(&m.name)
                .unwrap_or_else(|| panic!("volumeMount {} has no volume", m.name))
                .clone(),
            path: m.mount_path,
            read_only: m.read_only.unwrap_or(false),
        })
        .collect();
    let env = c
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| {
            let value = match (e.value, e.value_from) {
                (Some(v), _) => v,
                (None, Some(from)) => format!(
                    "fieldRef:{}",
                    from.field_ref.expect("env from a fieldRef").field_path
                ),
                (None, None) => String::new(),
            };
            (e.name, value)
        })
        .collect();
    let probe = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        let get = p
            .as_ref()
            .and_then(|p| p.http_get.clone())
            .expect("an httpGet probe");
        let port = match get.port {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => n as u16,
            other => panic!("probe port {other:?}: a number"),
        };
        (get.path.expect("probe path"), port)
    };
    PodSpec {
        args: c.args.clone().unwrap_or_default(),
        env,
        caps,
        no_new_privs: sc.allow_privilege_escalation == Some(false),
        read_only_root: sc.read_only_root_filesystem == Some(true),
        mounts,
        probes: vec![probe(&c.readiness_probe), probe(&c.liveness_probe)],
        config_maps,
    }
}

use serde::Deserialize as _;

/// One step of building the agent's root, run between fork and exec.
enum Op {
    Mkdir(CString),
    /// An empty file to bind a file onto.
    Touch(CString),
    Symlink {
        target: CString,
        link: CString,
    },
    Mount {
        source: CString,
        target: CString,
        fstype: Option<CString>,
        flags: libc::c_ulong,
    },
}

/// The steps that give the agent its root: see the module docs. `root` is an empty
/// directory of the host, the mount point of the root's tmpfs (visible only inside the
/// agent's mount namespace).
struct RootPlan {
    root: PathBuf,
    ops: Vec<Op>,
    /// What each step is, for a failure's message.
    steps: Vec<String>,
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in a path")
}

impl RootPlan {
    fn new(root: &Path) -> RootPlan {
        let mut plan = RootPlan {
            root: root.to_path_buf(),
            ops: Vec::new(),
            steps: Vec::new(),
        };
        plan.mount_fs("tmpfs", Path::new("/"), 0);
        plan
    }

    fn at(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }

    /// mkdir -p `path` inside the root.
    fn mkdirs(&mut self, path: &Path) {
        let mut p = PathBuf::from("/");
        for c in path.components().skip(1) {
            p.push(c);
            let at = self.at(&p);
            self.steps.push(format!("mkdir {}", at.display()));
            self.ops.push(Op::Mkdir(cstr(&at)));
        }
    }

    fn mount_fs(&mut self, fstype: &str, at: &Path, flags: libc::c_ulong) {
        let target = self.at(at);
        self.steps
            .push(format!("mount -t {fstype} {}", target.display()));
        self.ops.push(Op::Mount {
            source: CString::new(fstype).unwrap(),
            target: cstr(&target),
            fstype: Some(CString::new(fstype).unwrap()),
            flags: flags | libc::MS_NOSUID | libc::MS_NODEV,
        });
    }

    fn new_fs(&mut self, fstype: &str, at: &Path, read_only: bool) {
        self.mkdirs(at);
        let ro = if read_only { libc::MS_RDONLY } else { 0 };
        self.mount_fs(fstype, at, ro | libc::MS_NOEXEC);
    }

    /// A bind mount of the host's `source` at `at` (a directory or a file), read-only if
    /// asked (a bind mount takes MS_RDONLY only on a remount).
    fn bind(&mut self, source: &Path, at: &Path, read_only: bool) {
        let target = self.at(at);
        // A path that does not exist yet is one the steps before make: a directory.
        if source.is_dir() || !source.exists() {
            self.mkdirs(at);
        } else {
            self.mkdirs(at.parent().expect("a file's directory"));
            self.steps.push(format!("touch {}", target.display()));
            self.ops.push(Op::Touch(cstr(&target)));
        }
        self.steps.push(format!(
            "mount --bind {} {}",
            source.display(),
            target.display()
        ));
        self.ops.push(Op::Mount {
            source: cstr(source),
            target: cstr(&target),
            fstype: None,
            flags: libc::MS_BIND | libc::MS_REC,
        });
        if read_only {
            self.remount_ro_bind(at);
        }
    }

    fn remount_ro_bind(&mut self, at: &Path) {
        let target = self.at(at);
        self.steps
            .push(format!("mount -o remount,bind,ro {}", target.display()));
        self.ops.push(Op::Mount {
            source: CString::new("none").unwrap(),
            target: cstr(&target),
            fstype: None,
            flags: libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
        });
    }

    fn symlink(&mut self, target: &str, at: &Path) {
        let link = self.at(at);
        self.steps
            .push(format!("ln -s {target} {}", link.display()));
        self.ops.push(Op::Symlink {
            target: CString::new(target).unwrap(),
            link: cstr(&link),
        });
    }

    /// Runs the steps in a new mount namespace, then chroots into the root. Between fork
    /// and exec: only syscalls on what was prepared before the fork. Err: the failed
    /// step's index and errno.
    ///
    /// # Safety
    /// Only between fork and exec (it changes the calling process's mount namespace).
    unsafe fn enter(&self) -> Result<(), (usize, io::Error)> {
        let last = |i: usize| Err((i, io::Error::last_os_error()));
        // SAFETY: plain syscalls on C strings owned by self.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return last(usize::MAX);
            }
            let root = c"/";
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return last(usize::MAX);
            }
            for (i, op) in self.ops.iter().enumerate() {
                let rc = match op {
                    Op::Mkdir(p) => {
                        let rc = libc::mkdir(p.as_ptr(), 0o755);
                        if rc != 0 && *libc::__errno_location() == libc::EEXIST {
                            0
                        } else {
                            rc
                        }
                    }
                    Op::Touch(p) => {
                        let fd = libc::open(p.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644);
                        if fd >= 0 {
                            libc::close(fd);
                            0
                        } else {
                            -1
                        }
                    }
                    Op::Symlink { target, link } => libc::symlink(target.as_ptr(), link.as_ptr()),
                    Op::Mount {
                        source,
                        target,
                        fstype,
                        flags,
                    } => libc::mount(
                        source.as_ptr(),
                        target.as_ptr(),
                        fstype.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()),
                        *flags,
                        std::ptr::null(),
                    ),
                };
                if rc != 0 {
                    return last(i);
                }
            }
            let root = cstr(&self.root);
            if libc::chroot(root.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                return last(self.ops.len());
            }
        }
        Ok(())
    }
}

/// Where the pod's volumes come from in the lab (the module docs say why).
struct LabVolumes {
    bpffs: PathBuf,
    cgroup: PathBuf,
    /// ConfigMap name -> a directory holding its keys as files.
    config_dirs: BTreeMap<String, PathBuf>,
}

impl LabVolumes {
    fn source(&self, v: &Volume) -> PathBuf {
        match v {
            Volume::HostPath(p) if p == "/sys/fs/bpf" => self.bpffs.clone(),
            Volume::HostPath(p) if p == "/sys/fs/cgroup" => self.cgroup.clone(),
            Volume::HostPath(p) if p == "/proc/sys/net" => PathBuf::from(p),
            Volume::ConfigMap(name) => self
                .config_dirs
                .get(name)
                .unwrap_or_else(|| panic!("configMap volume {name}: no such ConfigMap"))
                .clone(),
            other => panic!("volume {other:?}: the lab does not know where it comes from"),
        }
    }
}

/// The agent's root, as the module docs describe it.
fn root_plan(
    root: &Path,
    spec: &PodSpec,
    usr: &Path,
    bins: &Path,
    volumes: &LabVolumes,
    manifests: &Path,
) -> RootPlan {
    let mut plan = RootPlan::new(root);
    // Debian's merged /usr.
    plan.bind(usr, Path::new("/usr"), true);
    for d in ["bin", "lib", "lib64", "sbin"] {
        if usr.join(d).exists() {
            plan.symlink(&format!("usr/{d}"), &Path::new("/").join(d));
        }
    }
    // The binaries, over whatever /usr/local holds.
    plan.new_fs("tmpfs", Path::new("/usr/local"), false);
    for b in ["svc-agent", "svcctl"] {
        plan.bind(&bins.join(b), &Path::new("/usr/local/bin").join(b), true);
    }
    plan.remount_ro_bind(Path::new("/usr/local"));
    // /dev: null only (what the runtime gives, minus devices the agent never opens).
    plan.new_fs("tmpfs", Path::new("/dev"), false);
    plan.bind(Path::new("/dev/null"), Path::new("/dev/null"), false);
    plan.remount_ro_bind(Path::new("/dev"));
    plan.new_fs("proc", Path::new("/proc"), false);
    // A container's /proc/sys is read-only (the reason for the /host/proc/sys/net mount).
    plan.bind(
        &plan.at(Path::new("/proc/sys")),
        Path::new("/proc/sys"),
        true,
    );
    // Made after the namespace switch: shows the node's interfaces.
    plan.new_fs("sysfs", Path::new("/sys"), true);
    plan.mkdirs(Path::new("/etc"));
    plan.mkdirs(Path::new("/tmp"));
    for m in &spec.mounts {
        plan.bind(&volumes.source(&m.source), Path::new(&m.path), m.read_only);
    }
    plan.bind(manifests, Path::new(MANIFESTS_PATH), true);
    if spec.read_only_root {
        plan.steps.push("mount -o remount,ro /".into());
        plan.ops.push(Op::Mount {
            source: CString::new("tmpfs").unwrap(),
            target: cstr(root),
            fstype: None,
            flags: libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
        });
    }
    plan
}

/// Removes a directory tree of the test's on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        // The root's mount point is only mounted inside the agents' namespaces: empty here.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `podman image unmount` on drop.
struct ImageMount(String);

impl Drop for ImageMount {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["image", "unmount", &self.0])
            .stdout(Stdio::null())
            .status();
    }
}

/// The binaries and the /usr the agent runs on: the image's (`SVC_IMAGE`) or this
/// workspace's on this machine's /usr.
struct Binaries {
    dir: PathBuf,
    usr: PathBuf,
    what: String,
    _mount: Option<ImageMount>,
}

fn binaries(tmp: &Path) -> Binaries {
    let Some(image) = std::env::var("SVC_IMAGE").ok().filter(|s| !s.is_empty()) else {
        let agent = workspace_bin("svc-agent").expect("the svc-agent binary");
        let dir = agent.parent().unwrap().to_path_buf();
        assert!(dir.join("svcctl").is_file(), "svcctl next to svc-agent");
        return Binaries {
            what: format!("the workspace's binaries in {}", dir.display()),
            dir,
            usr: PathBuf::from("/usr"),
            _mount: None,
        };
    };
    let out = Command::new("podman")
        .args(["image", "mount", &image])
        .output()
        .expect("podman (cargo xtask image installs it)");
    assert!(
        out.status.success(),
        "podman image mount {image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mount = ImageMount(image.clone());
    let rootfs = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    // Extracted: the files the image holds, copied out of its root filesystem.
    let dir = tmp.join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    for b in ["svc-agent", "svcctl"] {
        std::fs::copy(rootfs.join("usr/local/bin").join(b), dir.join(b))
            .unwrap_or_else(|e| panic!("{b} from {image}'s /usr/local/bin: {e}"));
    }
    Binaries {
        what: format!("{image}'s binaries on its own /usr ({})", rootfs.display()),
        dir,
        usr: rootfs.join("usr"),
        _mount: Some(mount),
    }
}

/// The DaemonSet's container, in the lab: see the module docs.
struct Pod<'a> {
    spec: &'a PodSpec,
    plan: std::sync::Arc<RootPlan>,
    node_name: String,
}

impl Pod<'_> {
    /// The command: setpriv with `caps` (as the YAML writes them) as the inheritable,
    /// ambient and bounding sets, no_new_privs if the spec says so, then `program args`.
    fn command(&self, caps: &[String], program: &str, args: &[String]) -> Command {
        let list = caps
            .iter()
            .map(|c| format!("+{}", c.to_lowercase()))
            .collect::<Vec<_>>()
            .join(",");
        let sets = if list.is_empty() {
            "-all".to_string()
        } else {
            format!("-all,{list}")
        };
        let mut cmd = Command::new("/usr/bin/setpriv");
        cmd.arg(format!("--inh-caps={sets}"))
            .arg(format!("--ambient-caps={sets}"))
            .arg(format!("--bounding-set={sets}"));
        if self.spec.no_new_privs {
            cmd.arg("--no-new-privs");
        }
        cmd.arg("--").arg(program).args(args);
        cmd.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("RUST_LOG", "info");
        for (name, value) in &self.spec.env {
            let value = match value.as_str() {
                "fieldRef:spec.nodeName" => self.node_name.clone(),
                "fieldRef:metadata.namespace" => "kube-system".into(),
                v if v.starts_with("fieldRef:") => panic!("env {name}: {v} unknown to the test"),
                v => v.into(),
            };
            cmd.env(name, value);
        }
        let plan = std::sync::Arc::clone(&self.plan);
        let steps = self.plan.steps.len();
        // SAFETY: the hook runs between fork and exec and only makes syscalls on what the
        // plan prepared (it allocates only to report a failure).
        unsafe {
            cmd.pre_exec(move || {
                plan.enter().map_err(|(i, e)| {
                    io::Error::new(
                        e.kind(),
                        format!("building the agent's root, step {i} of {steps}: {e}"),
                    )
                })
            });
        }
        cmd
    }

    /// The agent's command line: the DaemonSet's args, plus the lab's source.
    fn agent_args(&self) -> Vec<String> {
        let mut args = self.spec.args.clone();
        args.push(format!("--manifests={MANIFESTS_PATH}"));
        // What the Node object's InternalIP gives in Kubernetes mode (the masquerade
        // address and a NodePort address).
        args.push(format!("--node-ip={NODE_EXT_IP}"));
        args
    }

    /// The arg `--name=VALUE`'s value.
    fn arg(&self, name: &str) -> String {
        let prefix = format!("--{name}=");
        self.spec
            .args
            .iter()
            .find_map(|a| a.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("the DaemonSet passes {prefix}"))
            .to_string()
    }
}

const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  selector: {app: echo}
  ports:
    - {name: tcp, protocol: TCP, port: 80, targetPort: 8080, nodePort: 30080}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-1
  namespace: default
  labels: {kubernetes.io/service-name: echo}
addressType: IPv4
ports: [{name: tcp, protocol: TCP, port: 8080}]
endpoints:
  - {addresses: ["10.244.1.11"], conditions: {ready: true}}
  - {addresses: ["10.244.1.12"], conditions: {ready: true}}
  - {addresses: ["10.244.1.13"], conditions: {ready: true}}
"#;

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The capability bits of names as the YAML writes them (`BPF`, ...).
fn cap_mask(caps: &[String]) -> u64 {
    caps.iter()
        .map(|c| match c.as_str() {
            "NET_ADMIN" => 12,
            "NET_RAW" => 13,
            "SYS_ADMIN" => 21,
            "SYS_RESOURCE" => 24,
            "PERFMON" => 38,
            "BPF" => 39,
            other => panic!("capability {other}: add its number to the test"),
        })
        .fold(0, |m, bit| m | 1u64 << bit)
}

/// Runs `cmd` in node 1 to its end (bounded: SIGKILL after 20 s); (status code, output).
fn run_to_end(lab: &mut Lab, cmd: Command, log: &Path) -> (Option<i32>, String) {
    let _ = std::fs::remove_file(log);
    let p: NodeProcess = lab.spawn_in_logged(1, cmd, log).expect("spawn");
    let status = match p.wait_timeout(Duration::from_secs(20)).expect("wait") {
        Some(st) => st.code(),
        None => {
            let _ = p.kill();
            None
        }
    };
    (status, log_of(log))
}

#[test]
fn the_daemonsets_agent_serves_the_lab_with_only_its_capabilities() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let spec = read_pod_spec();
    let mut lab = Lab::up().expect("lab");
    let tmp = TempDir(std::env::temp_dir().join(format!("svl-{}-daemonset", lab.id())));
    std::fs::create_dir_all(&tmp.0).unwrap();
    let bins = binaries(&tmp.0);
    eprintln!("running {}", bins.what);

    // The ConfigMap's files, as the kubelet projects them.
    let mut config_dirs = BTreeMap::new();
    for (name, data) in &spec.config_maps {
        let dir = tmp.0.join("configmaps").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (key, text) in data {
            std::fs::write(dir.join(key), text).unwrap();
        }
        config_dirs.insert(name.clone(), dir);
    }
    let config = &spec.config_maps["svc-agent"]["config.conf"];
    let cidr = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("clusterCIDR:"))
        .map(str::trim)
        .expect("clusterCIDR in config.conf");
    assert_eq!(
        cidr, CLUSTER_POD_CIDR,
        "the shipped config fits the lab's pods as it is"
    );

    let manifests = tmp.0.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(manifests.join("echo.yaml"), SERVICE).unwrap();
    let volumes = LabVolumes {
        bpffs: lab.node_bpffs_dir(1),
        cgroup: lab.node_cgroup(1).expect("node cgroup"),
        config_dirs,
    };
    std::fs::create_dir_all(&volumes.bpffs).unwrap();
    let root = tmp.0.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let pod = Pod {
        plan: std::sync::Arc::new(root_plan(
            &root, &spec, &bins.usr, &bins.dir, &volumes, &manifests,
        )),
        spec: &spec,
        node_name: lab.node(1).name.clone(),
    };
    // The paths the args name, as the agent sees them, and where they are in the lab.
    let bpffs_arg = pod.arg("bpffs");
    let pins = volumes.bpffs.join(
        Path::new(&bpffs_arg)
            .strip_prefix("/sys/fs/bpf")
            .expect("--bpffs under the bpffs mount"),
    );
    assert_eq!(
        pod.arg("device"),
        NODE_EXT_IF,
        "the lab's external interface"
    );
    assert_eq!(pod.arg("cgroup"), "/sys/fs/cgroup");

    let log = tmp.0.join("agent.log");
    let agent = lab
        .spawn_in_logged(
            1,
            pod.command(&spec.caps, "/usr/local/bin/svc-agent", &pod.agent_args()),
            &log,
        )
        .expect("start the agent");
    let fail = |what: &str| -> ! {
        panic!(
            "{what}\nroot steps:\n  {}\nagent log:\n{}",
            pod.plan.steps.join("\n  "),
            log_of(&log)
        )
    };

    // Ready: both probes, on the probes' port, from outside the node (a load balancer's
    // health check) and from the node itself (the kubelet's).
    for (path, port) in &spec.probes {
        let ok = wait_for(Duration::from_secs(30), || {
            http_get(
                lab.ext_ns(),
                SocketAddrV4::new(NODE_EXT_IP, *port),
                path,
                TIMEOUT,
            )
            .is_ok_and(|(code, _)| code == 200)
        });
        if !ok {
            fail(&format!("{path} on :{port} never answered 200"));
        }
        let (code, _) = http_get(
            lab.node_ns(),
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, *port),
            path,
            TIMEOUT,
        )
        .unwrap_or_else(|e| fail(&format!("{path} from the node: {e}")));
        assert_eq!(code, 200, "{path} from the node");
    }

    // The agent's own privileges: exactly the added capabilities in every set, and
    // no_new_privs (allowPrivilegeEscalation: false).
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    let want_caps = cap_mask(&spec.caps);
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let have = status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{set}:")))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or_else(|| fail(&format!("no {set} in /proc/<agent>/status")));
        assert_eq!(
            have, want_caps,
            "{set} of the agent: {have:#x}, want {want_caps:#x}"
        );
    }
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().eq(["NoNewPrivs:", "1"])),
        "no_new_privs: {status}"
    );

    // Attached: XDP and TC on eth0, TC on every pod interface, the cgroup programs on the
    // mounted cgroup (their pin names carry the path the agent saw: /sys/fs/cgroup).
    let links: Vec<String> = std::fs::read_dir(pins.join("links"))
        .unwrap_or_else(|e| fail(&format!("{}/links: {e}", pins.display())))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut want = vec![
        format!("xdp@{NODE_EXT_IF}"),
        format!("tc-ingress@{NODE_EXT_IF}"),
    ];
    want.extend(
        lab.pods()
            .iter()
            .map(|p| format!("tc-ingress@{}", p.node_if)),
    );
    want.push(format!("tc-ingress@{}", lab.client().node_if));
    for w in &want {
        assert!(links.contains(w), "link {w} pinned: {links:?}");
    }
    for prog in ["svc_connect4", "svc_sendmsg4", "svc_recvmsg4"] {
        let w = format!("cgroup-{prog}@_sys_fs_cgroup");
        assert!(links.contains(&w), "link {w} pinned: {links:?}");
    }

    // Serving: a pod to the ClusterIP (TC), outside to the NodePort (XDP on eth0), the
    // node itself to the ClusterIP (the cgroup programs).
    let backends = [P1_IP, P2_IP, P3_IP];
    let vip = SocketAddrV4::new(VIP, SVC_PORT);
    let served = wait_for(Duration::from_secs(10), || {
        tcp_request(lab.client_ns(), vip, "hi", TIMEOUT).is_ok()
    });
    if !served {
        fail("the ClusterIP never answered a pod");
    }
    for _ in 0..6 {
        let r = tcp_request(lab.client_ns(), vip, "pod", TIMEOUT)
            .unwrap_or_else(|e| fail(&format!("pod -> {vip}: {e}")));
        assert!(backends.contains(&lab.pod_ip(&r.pod)), "{r:?}");
        let r = tcp_request(
            lab.ext_ns(),
            SocketAddrV4::new(NODE_EXT_IP, NODE_PORT),
            "ext",
            TIMEOUT,
        )
        .unwrap_or_else(|e| fail(&format!("ext -> NodePort: {e}")));
        // externalTrafficPolicy Cluster: masqueraded to the node.
        assert_ne!(*r.client.ip(), EXT_IP, "{r:?}");
    }
    for r in lab.node_requests(1, None, vip, false, 3, TIMEOUT) {
        let r = r.unwrap_or_else(|e| fail(&format!("node process -> {vip}: {e}")));
        assert!(backends.contains(&lab.pod_ip(&r.pod)), "{r:?}");
    }
    // Nothing written outside the mounts (a read-only root would have refused it), and
    // accept_local set through the /proc/sys/net mount.
    let text = log_of(&log);
    assert!(!text.contains("Read-only file system"), "{text}");
    let accept_local = lab
        .exec(
            lab.node_ns(),
            &[
                "cat",
                &format!("/proc/sys/net/ipv4/conf/{NODE_EXT_IF}/accept_local"),
            ],
        )
        .expect("read accept_local");
    assert_eq!(String::from_utf8_lossy(&accept_local.stdout).trim(), "1");

    // SIGTERM, as the kubelet stops the pod: status 0 within the grace period, the
    // datapath pinned and still serving.
    let status = agent.stop().expect("stop");
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exit status at SIGTERM\n{}",
        log_of(&log)
    );
    assert!(pins.join("links").is_dir(), "the links stay pinned");
    tcp_request(lab.client_ns(), vip, "after", TIMEOUT)
        .unwrap_or_else(|e| fail(&format!("the pinned datapath after SIGTERM: {e}")));

    // `svc-agent cleanup` (kube-proxy's --cleanup), in the same container: removes it all.
    let (code, out) = run_to_end(
        &mut lab,
        pod.command(
            &spec.caps,
            "/usr/local/bin/svc-agent",
            &["cleanup".into(), format!("--bpffs={bpffs_arg}")],
        ),
        &tmp.0.join("cleanup.log"),
    );
    assert_eq!(code, Some(0), "svc-agent cleanup:\n{out}");
    assert!(!pins.exists(), "{} removed:\n{out}", pins.display());
    // The links go with their last reference, which the kernel drops a moment after
    // the unpin.
    assert!(
        wait_for(Duration::from_secs(10), || {
            tcp_request(lab.client_ns(), vip, "gone", Duration::from_millis(300)).is_err()
        }),
        "the ClusterIP is no longer translated"
    );

    // Each added capability, left out: the agent exits non-zero and names it.
    for missing in &spec.caps {
        let fewer: Vec<String> = spec
            .caps
            .iter()
            .filter(|c| *c != missing)
            .cloned()
            .collect();
        let log = tmp.0.join(format!("without-{missing}.log"));
        let (code, out) = run_to_end(
            &mut lab,
            pod.command(&fewer, "/usr/local/bin/svc-agent", &pod.agent_args()),
            &log,
        );
        assert!(
            code.is_some_and(|c| c != 0),
            "without {missing}: exit {code:?}\n{out}"
        );
        eprintln!("without {missing}: exit {code:?}\n{out}");
        let name = format!("CAP_{missing}");
        // `...; this process runs as uid 0 and lacks CAP_X, CAP_Y`: exactly the one left out.
        let lacks = out
            .lines()
            .find_map(|l| l.rsplit_once(" and lacks ").map(|(_, what)| what.trim()))
            .unwrap_or_else(|| panic!("without {missing}: no line says what it lacks:\n{out}"));
        assert_eq!(
            lacks.split(", ").collect::<Vec<_>>(),
            [name.as_str()],
            "without {missing}:\n{out}"
        );
        // Whatever it left is removed before the next run.
        let _ = run_to_end(
            &mut lab,
            pod.command(
                &spec.caps,
                "/usr/local/bin/svc-agent",
                &["cleanup".into(), format!("--bpffs={bpffs_arg}")],
            ),
            &tmp.0.join("cleanup.log"),
        );
    }
    lab.teardown();
}
