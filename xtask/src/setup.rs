//! `cargo xtask setup [--check]`: installs, idempotently and only what is missing, what the
//! BPF side and the lab need on a Debian 12 machine (as root):
//!
//! - the eBPF toolchain `svc-agent/build.rs` will pick: `$SVC_EBPF_TOOLCHAIN` if set, else
//!   rustup's `nightly` if it has `rust-src`, else `debian-web` (Debian's rustc-web with a
//!   prebuilt BPF `core` and its library source, linked into rustup);
//! - `bpf-linker` (built from crates.io against Debian's LLVM 22);
//! - the lab tools (iproute2, bpftool, ethtool, nsenter, curl, nc, procps, python3), kubectl
//!   (Debian's kubernetes-client: the deploy/ test renders the kustomize layout with it) and
//!   the benchmark's (iptables, nftables, nginx, and the DejaVu Sans font of its report's
//!   plots);
//! - bpffs mounted at /sys/fs/bpf.
//!
//! Everything is checked first; when nothing is missing it succeeds without root, without
//! network and in well under 2 s. `--check` only reports and fails if anything is missing.
//! Other subcommands can call [`ensure`] before they need the toolchain.

use std::{
    collections::BTreeMap,
    env, fmt, fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

/// bpf-linker release known to build against Debian's LLVM 22 with this workspace's aya.
pub const BPF_LINKER_VERSION: &str = "0.13.0";
/// Where Debian's llvm-22 puts `llvm-config`, which llvm-sys needs to find.
const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";
/// Name of Debian's rustc-web as a rustup toolchain (same name as in svc-agent/build.rs).
pub const DEBIAN_TOOLCHAIN: &str = "debian-web";
const BPFFS: &str = "/sys/fs/bpf";

/// Debian's rustc-web 1.96 (LLVM 22), a prebuilt `core` for bpfel/bpfeb-unknown-none and the
/// matching library source for `-Z build-std=core`.
pub const DEBIAN_RUST_PKGS: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    "rust-web-src",
];
/// Needed only to build bpf-linker.
pub const LINKER_BUILD_PKGS: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];
/// Tools the lab (and people trying it by hand) use, each with a binary it provides (or, for a
/// path starting with `/`, a file it installs), which is what is checked where dpkg is not
/// available.
pub const LAB_PKGS: &[(&str, &str)] = &[
    ("iproute2", "ip"),
    ("bpftool", "bpftool"),
    ("ethtool", "ethtool"),
    ("util-linux", "nsenter"),
    ("curl", "curl"),
    ("netcat-openbsd", "nc"),
    ("procps", "ps"),
    // The two-node tests' "node itself" client.
    ("python3-minimal", "python3"),
    // `kubectl kustomize`, which svc-agent/tests/deploy_manifests.rs renders deploy/ with.
    ("kubernetes-client", "kubectl"),
    // `cargo xtask bench`: kube-proxy's iptables layout (loaded with iptables-legacy-restore),
    // its nftables layout (nft), and the nginx backends.
    ("iptables", "iptables-legacy-restore"),
    ("nftables", "nft"),
    ("nginx", "nginx"),
    // The font of the benchmark report's plots (read by svc-bench, no font library).
    (
        "fonts-dejavu-core",
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    ),
];

/// Lab packages whose binary, when another package (or no package) put it on PATH, is as
/// good: installing the package would then only clash with that one (Google's `kubectl`
/// package, for one, ships /usr/bin/kubectl too).
const ANY_PROVIDER_PKGS: &[&str] = &["kubernetes-client"];

/// The binary of `pkg` (one of [`ANY_PROVIDER_PKGS`]) found on PATH.
fn provided_elsewhere(pkg: &str) -> Option<PathBuf> {
    if !ANY_PROVIDER_PKGS.contains(&pkg) {
        return None;
    }
    let (_, tool) = LAB_PKGS.iter().find(|(p, _)| *p == pkg)?;
    find_tool(tool)
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct Opts {
    /// Only report what is present and what is missing; install nothing. Exits non-zero if
    /// anything is missing.
    #[arg(long)]
    pub check: bool,
}

/// Which toolchain builds svc-ebpf; mirrors the choice in svc-agent/build.rs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Toolchain {
    /// `SVC_EBPF_TOOLCHAIN=<name>` (other than `debian-web`): the user's own choice.
    Override(String),
    /// rustup's nightly with the rust-src component: the usual aya set-up.
    Nightly,
    /// Debian's rustc-web linked into rustup as `debian-web`.
    Debian,
}

impl Toolchain {
    pub fn choose(env_override: Option<&str>, nightly_has_rust_src: bool) -> Toolchain {
        match env_override.map(str::trim) {
            Some(DEBIAN_TOOLCHAIN) => Toolchain::Debian,
            Some(t) if !t.is_empty() => Toolchain::Override(t.to_string()),
            _ if nightly_has_rust_src => Toolchain::Nightly,
            _ => Toolchain::Debian,
        }
    }

    fn describe(&self) -> String {
        match self {
            Toolchain::Override(t) => format!("{t} (from SVC_EBPF_TOOLCHAIN)"),
            Toolchain::Nightly => {
                "nightly (rustup nightly with rust-src, -Z build-std=core)".into()
            }
            Toolchain::Debian => format!(
                "{DEBIAN_TOOLCHAIN} (Debian rustc-web linked into rustup; build.rs sets \
                 RUSTC_BOOTSTRAP=1, core from rust-web-src)"
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pure parsing, unit-tested below.

/// Effective uid from the text of /proc/self/status (`Uid:\treal\teffective\tsaved\tfs`).
pub fn parse_euid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
}

/// KEY=VALUE pairs of /etc/os-release, with quotes removed.
pub fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            (k.trim().to_string(), v.to_string())
        })
        .collect()
}

/// True if ID or ID_LIKE names debian (Debian, Ubuntu, Mint, ...).
pub fn os_release_is_debian_like(os: &BTreeMap<String, String>) -> bool {
    ["ID", "ID_LIKE"]
        .iter()
        .filter_map(|k| os.get(*k))
        .any(|v| {
            v.split_whitespace()
                .any(|w| w.eq_ignore_ascii_case("debian"))
        })
}

/// Output of `dpkg-query -W -f='${Package}\t${Status}\n' PKG...` to package -> installed.
/// A package is installed when its status is `<want> ok installed` (`install ok installed`,
/// or `hold ok installed` for a held one); packages dpkg does not know are absent from the
/// map. A package listed for several architectures counts as installed if any one is.
pub fn parse_dpkg_status(out: &str) -> BTreeMap<String, bool> {
    let mut map = BTreeMap::new();
    for line in out.lines() {
        let Some((pkg, status)) = line.split_once('\t') else {
            continue;
        };
        let words: Vec<&str> = status.split_whitespace().collect();
        let installed = matches!(words.as_slice(), [_, "ok", "installed"]);
        let pkg = pkg.trim().split(':').next().unwrap_or_default().to_string();
        *map.entry(pkg).or_insert(false) |= installed;
    }
    map
}

/// True if /proc/mounts (or /proc/self/mountinfo-free `mounts` format) has a bpf filesystem
/// mounted at `at`.
pub fn bpffs_mounted(mounts: &str, at: &str) -> bool {
    mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let _source = f.next();
        f.next() == Some(at) && f.next() == Some("bpf")
    })
}

/// True if `rustup toolchain list` output lists `name` (lines look like
/// `stable-x86_64-unknown-linux-gnu (active, default)` or `debian-web`).
pub fn toolchain_listed(list: &str, name: &str) -> bool {
    list.lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

// ---------------------------------------------------------------------------------------------
// Probing the machine.

/// A command line for messages: `prog arg arg`.
fn cmdline(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` with stdin closed, capturing its output; errors name the command.
pub(crate) fn output(cmd: &mut Command) -> Result<std::process::Output> {
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{}`", cmdline(cmd)))
}

/// Runs `cmd` and returns its trimmed stdout if it succeeded, None otherwise.
pub(crate) fn stdout_if_ok(cmd: &mut Command) -> Option<String> {
    output(cmd)
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Runs `cmd` with inherited stdout/stderr (so long installs show progress) and closed stdin;
/// fails, naming the command, unless it exits 0.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let line = cmdline(cmd);
    eprintln!("==> {line}");
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("cannot run `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

fn home_cargo_bin() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(root) = env::var_os("CARGO_INSTALL_ROOT") {
        dirs.push(PathBuf::from(root).join("bin"));
    }
    if let Some(home) = env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs
}

/// Executables named `name` in PATH, then in cargo's bin dirs and the sbin dirs (which a
/// non-root PATH may lack), in that order, without duplicates.
fn find_tools(name: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(home_cargo_bin());
    dirs.extend(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from));
    let mut found: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        let p = dir.join(name);
        let exec =
            fs::metadata(&p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if exec && !found.contains(&p) {
            found.push(p);
        }
    }
    found
}

pub(crate) fn find_tool(name: &str) -> Option<PathBuf> {
    find_tools(name).into_iter().next()
}

fn on_path(p: &Path) -> bool {
    let dir = p.parent();
    env::var_os("PATH")
        .is_some_and(|path| env::split_paths(&path).any(|d| Some(d.as_path()) == dir))
}

struct Host {
    euid: Option<u32>,
    debian_like: bool,
    name: String,
}

impl Host {
    fn probe() -> Host {
        let euid = fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| parse_euid(&s))
            .or_else(|| stdout_if_ok(Command::new("id").arg("-u")).and_then(|s| s.parse().ok()));
        let os = fs::read_to_string("/etc/os-release")
            .or_else(|_| fs::read_to_string("/usr/lib/os-release"))
            .map(|t| parse_os_release(&t))
            .unwrap_or_default();
        let debian_version = fs::read_to_string("/etc/debian_version").ok();
        let debian_like = debian_version.is_some() || os_release_is_debian_like(&os);
        let name = os
            .get("PRETTY_NAME")
            .cloned()
            .or_else(|| debian_version.map(|v| format!("Debian {}", v.trim())))
            .unwrap_or_else(|| "unknown system".into());
        Host {
            euid,
            debian_like,
            name,
        }
    }

    fn root(&self) -> bool {
        self.euid == Some(0)
    }
}

fn nightly_has_rust_src(rustup: &Path) -> bool {
    stdout_if_ok(Command::new(rustup).args(["run", "nightly", "rustc", "--print", "sysroot"]))
        .is_some_and(|sysroot| {
            Path::new(&sysroot)
                .join("lib/rustlib/src/rust/library/core")
                .exists()
        })
}

/// `rustc --version` of a rustup toolchain, if it runs.
fn toolchain_rustc(rustup: &Path, toolchain: &str) -> Option<String> {
    stdout_if_ok(Command::new(rustup).args(["run", toolchain, "rustc", "--version"]))
}

/// The first bpf-linker that runs `--version`: (path, version line).
fn probe_bpf_linker() -> Option<(PathBuf, String)> {
    find_tools("bpf-linker").into_iter().find_map(|p| {
        let v = stdout_if_ok(Command::new(&p).arg("--version"))?;
        Some((p, v.lines().next().unwrap_or_default().to_string()))
    })
}

/// Package -> installed, for `pkgs`, from one dpkg-query call.
pub(crate) fn dpkg_installed(pkgs: &[&str]) -> Result<BTreeMap<String, bool>> {
    if pkgs.is_empty() {
        return Ok(BTreeMap::new());
    }
    // dpkg-query exits 1 when some package is unknown to it; what it printed still holds.
    let out = output(
        Command::new("dpkg-query")
            .arg("-W")
            .arg("-f=${Package}\t${Status}\n")
            .args(pkgs),
    )?;
    Ok(parse_dpkg_status(&String::from_utf8_lossy(&out.stdout)))
}

fn bpffs_is_mounted() -> bool {
    fs::read_to_string("/proc/mounts").is_ok_and(|m| bpffs_mounted(&m, BPFFS))
}

// ---------------------------------------------------------------------------------------------
// Report.

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Ok(String),
    Installed(String),
    Missing(String),
    Failed(String),
    NotNeeded(String),
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (word, detail) = match self {
            State::Ok(d) => ("ok", d),
            State::Installed(d) => ("installed", d),
            State::Missing(d) => ("MISSING", d),
            State::Failed(d) => ("FAILED", d),
            State::NotNeeded(d) => ("not needed", d),
        };
        match (self, detail.is_empty()) {
            (_, true) => f.write_str(word),
            (State::Failed(_), false) => write!(f, "{word}: {detail}"),
            _ => write!(f, "{word} ({detail})"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Package(String),
    /// A lab tool checked by its binary (no dpkg).
    Tool(String),
    /// The packages only needed to build bpf-linker, when it is present.
    LinkerBuildDeps,
    BpfLinker,
    Toolchain,
    Bpffs,
}

struct Item {
    kind: Kind,
    state: State,
}

impl Item {
    fn label(&self) -> String {
        match &self.kind {
            Kind::Package(p) => format!("package {p}"),
            Kind::Tool(t) if t.starts_with('/') => format!("file {t}"),
            Kind::Tool(t) => format!("tool {t}"),
            Kind::BpfLinker => "bpf-linker".into(),
            Kind::LinkerBuildDeps => "bpf-linker build deps".into(),
            Kind::Toolchain => "eBPF toolchain".into(),
            Kind::Bpffs => format!("bpffs at {BPFFS}"),
        }
    }
}

fn print_report(host: &Host, items: &[Item]) {
    let euid = host.euid.map_or("unknown".into(), |u| u.to_string());
    let root = if host.root() {
        "yes".to_string()
    } else {
        format!("no (euid {euid})")
    };
    println!("{:<34} {}", "system", host.name);
    println!("{:<34} {root}", "root");
    for item in items {
        println!("{:<34} {}", item.label(), item.state);
    }
}

/// What to install by hand, for the error when we may not install (not root / not Debian).
fn manual_instructions() -> String {
    let all_pkgs: Vec<&str> = DEBIAN_RUST_PKGS
        .iter()
        .chain(LINKER_BUILD_PKGS)
        .copied()
        .chain(LAB_PKGS.iter().map(|(p, _)| *p))
        .collect();
    format!(
        "Install it yourself (as root), on Debian 12:\n  \
         apt-get update\n  \
         DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {pkgs}\n  \
         PATH={LLVM_BIN}:$PATH cargo install bpf-linker --version {BPF_LINKER_VERSION} --locked \
         --no-default-features --features llvm-22\n  \
         rustup toolchain link {DEBIAN_TOOLCHAIN} /usr\n  \
         mount -t bpf bpf {BPFFS}\n\
         or, with internet access, the usual aya set-up instead of Debian's rustc-web \
         (elsewhere, use your distribution's packages for the lab tools: iproute2, bpftool, \
         ethtool, nsenter (util-linux), curl, netcat, procps, python3, kubectl, iptables, \
         nftables, nginx, and the DejaVu Sans font at /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf):\n  \
         rustup toolchain install nightly --component rust-src\n  \
         cargo install bpf-linker",
        pkgs = all_pkgs.join(" ")
    )
}

// ---------------------------------------------------------------------------------------------
// The command.

/// Checks everything and installs what is missing (unless `opts.check`). Ok when, at the end,
/// nothing is missing.
pub fn ensure(opts: &Opts) -> Result<()> {
    let host = Host::probe();
    let rustup = find_tool("rustup");
    let env_override = env::var("SVC_EBPF_TOOLCHAIN").ok();
    let nightly_src = rustup.as_deref().is_some_and(nightly_has_rust_src);
    let toolchain = Toolchain::choose(env_override.as_deref(), nightly_src);
    let linker = probe_bpf_linker();

    // --- checks --------------------------------------------------------------------------
    let mut items: Vec<Item> = Vec::new();
    let mut wanted_pkgs: Vec<&str> = Vec::new();
    if host.debian_like {
        if toolchain == Toolchain::Debian {
            wanted_pkgs.extend(DEBIAN_RUST_PKGS);
        }
        if linker.is_none() {
            wanted_pkgs.extend(LINKER_BUILD_PKGS);
        }
        wanted_pkgs.extend(LAB_PKGS.iter().map(|(p, _)| *p));
        let status = dpkg_installed(&wanted_pkgs)?;
        for p in &wanted_pkgs {
            let state = if status.get(*p).copied().unwrap_or(false) {
                State::Ok(String::new())
            } else if let Some(path) = provided_elsewhere(p) {
                State::Ok(format!("{} from elsewhere, kept", path.display()))
            } else {
                State::Missing(String::new())
            };
            items.push(Item {
                kind: Kind::Package(p.to_string()),
                state,
            });
        }
        if linker.is_some() {
            items.push(Item {
                kind: Kind::LinkerBuildDeps,
                state: State::NotNeeded(format!(
                    "bpf-linker is present; {}",
                    LINKER_BUILD_PKGS.join(" ")
                )),
            });
        }
    } else {
        for (_, tool) in LAB_PKGS {
            let found = if tool.starts_with('/') {
                Path::new(tool).is_file().then(|| PathBuf::from(tool))
            } else {
                find_tool(tool)
            };
            let state = match found {
                Some(p) => State::Ok(p.display().to_string()),
                None => State::Missing(String::new()),
            };
            items.push(Item {
                kind: Kind::Tool(tool.to_string()),
                state,
            });
        }
    }

    let linker_state = match &linker {
        Some((path, version)) if on_path(path) => {
            State::Ok(format!("{version}, {}", path.display()))
        }
        Some((path, version)) => State::Ok(format!(
            "{version}, {}; not on PATH: add {} to PATH",
            path.display(),
            path.parent().unwrap_or(Path::new("")).display()
        )),
        None => State::Missing(String::new()),
    };
    items.push(Item {
        kind: Kind::BpfLinker,
        state: linker_state,
    });

    let toolchain_state = match (&toolchain, &rustup) {
        (Toolchain::Nightly, _) => State::Ok("rustup nightly has rust-src".into()),
        (_, None) => {
            State::Missing("rustup not found; it is needed to build the eBPF crate".into())
        }
        (Toolchain::Override(t), Some(r)) => match toolchain_rustc(r, t) {
            Some(v) => State::Ok(format!("{t}: {v}")),
            None => State::Missing(format!(
                "`rustup run {t} rustc --version` fails (SVC_EBPF_TOOLCHAIN={t})"
            )),
        },
        (Toolchain::Debian, Some(r)) => match toolchain_rustc(r, DEBIAN_TOOLCHAIN) {
            Some(v) => State::Ok(format!("{DEBIAN_TOOLCHAIN}: {v}")),
            None => State::Missing(format!(
                "rustup toolchain {DEBIAN_TOOLCHAIN} not linked or not working"
            )),
        },
    };
    items.push(Item {
        kind: Kind::Toolchain,
        state: toolchain_state,
    });

    let bpffs_state = if bpffs_is_mounted() {
        State::Ok(String::new())
    } else {
        State::Missing("not mounted".into())
    };
    items.push(Item {
        kind: Kind::Bpffs,
        state: bpffs_state,
    });

    let missing = |items: &[Item]| -> Vec<String> {
        items
            .iter()
            .filter(|i| matches!(i.state, State::Missing(_) | State::Failed(_)))
            .map(Item::label)
            .collect()
    };

    let missing_now = missing(&items);
    if missing_now.is_empty() {
        print_report(&host, &items);
        println!(
            "{:<34} {}",
            "eBPF build will use toolchain",
            toolchain.describe()
        );
        return Ok(());
    }
    if opts.check {
        print_report(&host, &items);
        bail!(
            "missing: {}; run `cargo xtask setup` as root to install",
            missing_now.join(", ")
        );
    }
    if !host.root() || !host.debian_like {
        print_report(&host, &items);
        let why = match (host.root(), host.debian_like) {
            (false, false) => "not running as root and not a Debian-like system",
            (false, true) => "not running as root",
            _ => {
                "not a Debian-like system (no /etc/debian_version, os-release ID/ID_LIKE lacks debian)"
            }
        };
        bail!(
            "cannot install what is missing ({}): {why}.\n{}",
            missing_now.join(", "),
            manual_instructions()
        );
    }

    // --- installs (root, Debian-like) -------------------------------------------------------
    install(&mut items, rustup.as_deref(), &toolchain);

    print_report(&host, &items);
    println!(
        "{:<34} {}",
        "eBPF build will use toolchain",
        toolchain.describe()
    );
    let still = missing(&items);
    if !still.is_empty() {
        bail!("setup incomplete, failed: {}", still.join(", "));
    }
    Ok(())
}

/// While it lives, /usr/sbin/policy-rc.d refuses every service start (exit 101), so
/// packages installed meanwhile start no daemon. Only created when none exists; removed on
/// drop.
struct NoServiceStarts(Option<PathBuf>);

impl NoServiceStarts {
    fn new() -> NoServiceStarts {
        let path = PathBuf::from("/usr/sbin/policy-rc.d");
        if path.exists() {
            return NoServiceStarts(None);
        }
        use std::os::unix::fs::PermissionsExt as _;
        let ok = std::fs::write(
            &path,
            "#!/bin/sh\n# cargo xtask setup: no service starts while installing\nexit 101\n",
        )
        .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)))
        .is_ok();
        NoServiceStarts(ok.then_some(path))
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn set_state(items: &mut [Item], kind: &Kind, state: State) {
    if let Some(i) = items.iter_mut().find(|i| &i.kind == kind) {
        i.state = state;
    }
}

fn install(items: &mut [Item], rustup: Option<&Path>, toolchain: &Toolchain) {
    // 1. Debian packages: one apt-get update, one apt-get install, then check again.
    let missing_pkgs: Vec<String> = items
        .iter()
        .filter_map(|i| match (&i.kind, &i.state) {
            (Kind::Package(p), State::Missing(_)) => Some(p.clone()),
            _ => None,
        })
        .collect();
    if !missing_pkgs.is_empty() {
        let apt = |args: &[&str]| {
            let mut c = Command::new("apt-get");
            c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
            c
        };
        if let Err(e) = run(&mut apt(&["update"])) {
            eprintln!("warning: {e:#}; trying to install from the current package lists");
        }
        let mut cmd = apt(&["install", "-y", "--no-install-recommends"]);
        cmd.args(&missing_pkgs);
        let err = {
            // Packages such as nginx start a service on install, which would listen in the
            // root network namespace: the workplace forbids that. Block service starts while
            // installing, and keep them from starting at boot.
            let _guard = NoServiceStarts::new();
            let err = run(&mut cmd).err();
            if missing_pkgs.iter().any(|p| p == "nginx") && Path::new("/bin/systemctl").exists() {
                let _ = Command::new("systemctl")
                    .args(["disable", "--now", "nginx"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            err
        };
        let refs: Vec<&str> = missing_pkgs.iter().map(String::as_str).collect();
        let status = dpkg_installed(&refs).unwrap_or_default();
        for p in &missing_pkgs {
            let state = if status.get(p).copied().unwrap_or(false) {
                State::Installed(String::new())
            } else {
                State::Failed(
                    err.as_ref()
                        .map_or("still not installed".into(), |e| format!("{e:#}")),
                )
            };
            set_state(items, &Kind::Package(p.clone()), state);
        }
    }

    // 2. bpf-linker, built against Debian's LLVM 22.
    let linker_missing = items
        .iter()
        .any(|i| i.kind == Kind::BpfLinker && matches!(i.state, State::Missing(_)));
    if linker_missing {
        let deps_failed: Vec<&str> = LINKER_BUILD_PKGS
            .iter()
            .copied()
            .filter(|p| {
                items.iter().any(|i| {
                    i.kind == Kind::Package(p.to_string()) && matches!(i.state, State::Failed(_))
                })
            })
            .collect();
        let state = if !deps_failed.is_empty() {
            State::Failed(format!(
                "not attempted: {} not installed",
                deps_failed.join(", ")
            ))
        } else {
            match install_bpf_linker() {
                Ok(()) => match probe_bpf_linker() {
                    Some((path, version)) => {
                        State::Installed(format!("{version}, {}", path.display()))
                    }
                    None => State::Failed(
                        "cargo install succeeded but `bpf-linker --version` does not run".into(),
                    ),
                },
                Err(e) => State::Failed(format!("{e:#}")),
            }
        };
        set_state(items, &Kind::BpfLinker, state);
    }

    // 3. The eBPF toolchain.
    let toolchain_missing = items
        .iter()
        .any(|i| i.kind == Kind::Toolchain && matches!(i.state, State::Missing(_)));
    if toolchain_missing {
        let state = match (toolchain, rustup) {
            (_, None) => State::Failed(
                "rustup not found: install it (https://rustup.rs; Debian 12 has no rustup package) and rerun".into(),
            ),
            (Toolchain::Override(t), Some(_)) => State::Failed(format!(
                "SVC_EBPF_TOOLCHAIN={t} does not run; install that toolchain (with rust-src) or unset SVC_EBPF_TOOLCHAIN"
            )),
            (Toolchain::Nightly, Some(_)) => State::Ok(String::new()),
            (Toolchain::Debian, Some(r)) => link_debian_toolchain(r),
        };
        set_state(items, &Kind::Toolchain, state);
    }

    // 4. bpffs.
    let bpffs_missing = items
        .iter()
        .any(|i| i.kind == Kind::Bpffs && matches!(i.state, State::Missing(_)));
    if bpffs_missing {
        let res = fs::create_dir_all(BPFFS)
            .with_context(|| format!("cannot create {BPFFS}"))
            .and_then(|()| run(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS])));
        let state = match res {
            Ok(()) if bpffs_is_mounted() => State::Installed("mounted".into()),
            Ok(()) => State::Failed(format!(
                "mount succeeded but /proc/mounts shows no bpf at {BPFFS}"
            )),
            Err(e) => State::Failed(format!("{e:#}")),
        };
        set_state(items, &Kind::Bpffs, state);
    }
}

fn install_bpf_linker() -> Result<()> {
    // The cargo running us (set by `cargo run`), else the one on PATH / in ~/.cargo/bin.
    let cargo = env::var_os("CARGO")
        .map(PathBuf::from)
        .or_else(|| find_tool("cargo"))
        .context("cargo not found (looked at $CARGO, PATH and ~/.cargo/bin)")?;
    let path = env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![PathBuf::from(LLVM_BIN)];
    dirs.extend(env::split_paths(&path));
    let path = env::join_paths(dirs).context("cannot build PATH")?;
    let cmd = |locked: bool| {
        let mut c = Command::new(&cargo);
        c.args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION]);
        if locked {
            c.arg("--locked");
        }
        c.args(["--no-default-features", "--features", "llvm-22"])
            .env("PATH", &path);
        c
    };
    // bpf-linker ships a Cargo.lock that builds here; should it ever stop building, retry with
    // fresh dependency versions as the recipe in the notes did.
    run(&mut cmd(true)).or_else(|e| {
        eprintln!("warning: {e:#}; retrying without --locked");
        run(&mut cmd(false))
    })
}

fn link_debian_toolchain(rustup: &Path) -> State {
    let listed = stdout_if_ok(Command::new(rustup).args(["toolchain", "list"]))
        .is_some_and(|l| toolchain_listed(&l, DEBIAN_TOOLCHAIN));
    let mut note = "already linked";
    if !listed {
        if let Err(e) =
            run(Command::new(rustup).args(["toolchain", "link", DEBIAN_TOOLCHAIN, "/usr"]))
        {
            return State::Failed(format!("{e:#}"));
        }
        note = "linked to /usr";
    }
    match toolchain_rustc(rustup, DEBIAN_TOOLCHAIN) {
        Some(v) if listed => State::Ok(format!("{DEBIAN_TOOLCHAIN}: {v}")),
        Some(v) => State::Installed(format!("{DEBIAN_TOOLCHAIN} {note}: {v}")),
        None => State::Failed(format!(
            "`{} run {DEBIAN_TOOLCHAIN} rustc --version` fails ({note}); is rustc-web installed?",
            rustup.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn euid_is_the_second_uid_field() {
        let status = "Name:\tcat\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t100\t100\t100\t100\n";
        assert_eq!(parse_euid(status), Some(0));
        assert_eq!(parse_euid("Uid:\t0\t1000\t1000\t1000\n"), Some(1000));
        assert_eq!(parse_euid("Name:\tx\n"), None);
    }

    #[test]
    fn os_release_debian_ubuntu_and_others() {
        let debian = parse_os_release(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n",
        );
        assert_eq!(debian["PRETTY_NAME"], "Debian GNU/Linux 12 (bookworm)");
        assert!(os_release_is_debian_like(&debian));

        let ubuntu = parse_os_release("NAME=\"Ubuntu\"\nID=ubuntu\nID_LIKE=debian\n");
        assert!(os_release_is_debian_like(&ubuntu));
        let mint = parse_os_release("ID=linuxmint\nID_LIKE='ubuntu debian'\n");
        assert!(os_release_is_debian_like(&mint));

        let fedora = parse_os_release("# comment\nNAME=\"Fedora Linux\"\nID=fedora\n");
        assert!(!os_release_is_debian_like(&fedora));
        let arch = parse_os_release("ID=arch\nID_LIKE=\"archlinux debianish\"\n");
        assert!(!os_release_is_debian_like(&arch));
        assert!(!os_release_is_debian_like(&parse_os_release("")));
    }

    #[test]
    fn dpkg_status_parsing() {
        let out = "procps\tinstall ok installed\n\
                   rustc-web\tinstall ok installed\n\
                   bpftool\tdeinstall ok config-files\n\
                   curl\tinstall ok unpacked\n\
                   ethtool\thold ok installed\n\
                   libzstd-dev:i386\tunknown ok not-installed\n\
                   libzstd-dev:amd64\tinstall ok installed\n\
                   zlib1g-dev\tunknown ok not-installed\n\
                   garbage line\n";
        let m = parse_dpkg_status(out);
        assert_eq!(m.get("procps"), Some(&true));
        assert_eq!(m.get("rustc-web"), Some(&true));
        assert_eq!(m.get("bpftool"), Some(&false));
        assert_eq!(m.get("curl"), Some(&false));
        assert_eq!(m.get("ethtool"), Some(&true));
        assert_eq!(m.get("libzstd-dev"), Some(&true));
        assert_eq!(m.get("zlib1g-dev"), Some(&false));
        // Unknown to dpkg (it prints nothing on stdout for those): absent.
        assert_eq!(m.get("rust-web-src"), None);
        assert!(parse_dpkg_status("").is_empty());
    }

    #[test]
    fn bpffs_mount_detection() {
        let mounts = "sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0\n\
                      proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\n";
        assert!(!bpffs_mounted(mounts, "/sys/fs/bpf"));
        let with =
            format!("{mounts}bpf /sys/fs/bpf bpf rw,nosuid,nodev,noexec,relatime,mode=700 0 0\n");
        assert!(bpffs_mounted(&with, "/sys/fs/bpf"));
        // bpf mounted elsewhere, or something else at /sys/fs/bpf, does not count.
        assert!(!bpffs_mounted("bpf /run/bpf bpf rw 0 0\n", "/sys/fs/bpf"));
        assert!(!bpffs_mounted(
            "none /sys/fs/bpf tmpfs rw 0 0\n",
            "/sys/fs/bpf"
        ));
    }

    #[test]
    fn rustup_toolchain_list() {
        let list = "stable-x86_64-unknown-linux-gnu (active, default)\n\
                    nightly-x86_64-unknown-linux-gnu\n\
                    debian-web\n";
        assert!(toolchain_listed(list, "debian-web"));
        assert!(toolchain_listed("debian-web (active)\n", "debian-web"));
        assert!(!toolchain_listed(
            "stable-x86_64-unknown-linux-gnu\ndebian-web-old\n",
            "debian-web"
        ));
    }

    #[test]
    fn toolchain_choice_mirrors_build_rs() {
        assert_eq!(Toolchain::choose(None, true), Toolchain::Nightly);
        assert_eq!(Toolchain::choose(None, false), Toolchain::Debian);
        assert_eq!(Toolchain::choose(Some(""), true), Toolchain::Nightly);
        assert_eq!(
            Toolchain::choose(Some("debian-web"), true),
            Toolchain::Debian
        );
        assert_eq!(
            Toolchain::choose(Some("my-nightly"), false),
            Toolchain::Override("my-nightly".into())
        );
    }

    #[test]
    fn state_display() {
        assert_eq!(State::Ok(String::new()).to_string(), "ok");
        assert_eq!(
            State::Installed("mounted".into()).to_string(),
            "installed (mounted)"
        );
        assert_eq!(
            State::Failed("`mount` failed".into()).to_string(),
            "FAILED: `mount` failed"
        );
    }

    #[test]
    fn manual_instructions_name_everything() {
        let m = manual_instructions();
        for p in DEBIAN_RUST_PKGS
            .iter()
            .chain(LINKER_BUILD_PKGS)
            .chain(LAB_PKGS.iter().map(|(p, _)| p))
        {
            assert!(m.contains(p), "{p} missing from instructions");
        }
        assert!(m.contains("rustup toolchain install nightly --component rust-src"));
        assert!(m.contains("cargo install bpf-linker --version 0.13.0"));
    }
}
