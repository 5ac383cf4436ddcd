//! `cargo xtask image`: builds the container image from deploy/Dockerfile with podman, here,
//! where no container registry is reachable, then tests the image's binary as the DaemonSet
//! runs it (tests/tests/daemonset.rs with `SVC_IMAGE`).
//!
//! 1. podman and mmdebstrap, from Debian, if missing (apt-get, as root).
//! 2. The base image: a Debian 12 root filesystem that mmdebstrap makes from Debian's
//!    packages (`--variant=minbase`, the package set of debootstrap's minbase, which the
//!    official debian images are made of; documentation, man pages and locales left out as
//!    in `debian:bookworm-slim`), imported with `podman import` as
//!    `localhost/svc-ebpf-base:bookworm-<key>`. The key is a hash of everything that makes
//!    the root filesystem (suite, variant, mirrors, dpkg options, mmdebstrap's version): the
//!    tarball is kept in the cache directory ([`cache_dir`]) and the image in podman's
//!    storage, so a second run reuses both (`--refresh-base` makes them again, for Debian's
//!    newer packages).
//! 3. The binaries (default, "prebuilt"): `cargo build --release` of svc-agent and svcctl on
//!    this machine, with the toolchain `cargo xtask setup` installs, copied into a small
//!    build context (`<target>/image-context/prebuilt/`). `--from-source` builds them
//!    inside the image build instead (the Dockerfile's `builder` stage: Debian's rustc-web
//!    and bpf-linker installed in the container, then the same cargo build), as a machine
//!    with only the Dockerfile does.
//! 4. `podman build --isolation=chroot` (podman's default isolation needs `podman run`'s
//!    OCI runtime, which fails on this host's hybrid cgroups) of deploy/Dockerfile with the
//!    base image as `BUILDER_IMAGE` and `RUNTIME_IMAGE` and `BINARIES=prebuilt` (or
//!    `builder`); the Dockerfile's defaults are the usual registry images.
//! 5. Unless `--no-test`: the DaemonSet test on the image (see tests/tests/daemonset.rs).
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail, ensure};

use crate::{build, setup, target_dir, verbose_env, workspace_root};

/// Debian release the base image is made of (the release `cargo xtask setup` targets and
/// the Dockerfile's default images are).
pub const SUITE: &str = "bookworm";
/// mmdebstrap's package set: Essential:yes, apt and Priority:required, as debootstrap's
/// minbase (what the official debian images hold).
pub const VARIANT: &str = "minbase";
/// The apt sources of the root filesystem: Debian 12 with its updates and security
/// updates (rustc-web, which the `builder` stage installs, is in those).
pub const MIRRORS: &[&str] = &[
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
];
/// dpkg options for the root filesystem: no documentation (copyright files kept), man
/// pages or translations, as debian:bookworm-slim.
pub const DPKG_OPTS: &[&str] = &[
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
];
/// Bumped when the recipe changes in a way the inputs above do not show.
const RECIPE_VERSION: u32 = 1;
/// The local name of the base image (its tag is `<suite>-<key>`).
pub const BASE_REPO: &str = "localhost/svc-ebpf-base";
/// Packages this command needs from Debian.
pub const PKGS: &[&str] = &["podman", "mmdebstrap"];
/// The Dockerfile's build arguments that name the base images and the binaries' stage
/// (the names must match deploy/Dockerfile's ARGs: a unit test checks).
pub const ARG_BUILDER_IMAGE: &str = "BUILDER_IMAGE";
pub const ARG_RUNTIME_IMAGE: &str = "RUNTIME_IMAGE";
pub const ARG_BINARIES: &str = "BINARIES";

/// The image's default name: the workspace's version, on podman's `localhost/` (the
/// DaemonSet's `ghcr.io/svc-ebpf/svc-agent` is a placeholder for your registry).
pub const DEFAULT_TAG: &str = concat!("localhost/svc-agent:", env!("CARGO_PKG_VERSION"));

#[derive(Debug, clap::Args)]
pub struct Opts {
    /// The image's name.
    #[arg(long, default_value = DEFAULT_TAG)]
    pub tag: String,

    /// Build svc-agent and svcctl inside the image build (the Dockerfile's `builder`
    /// stage: apt installs Debian's rustc-web and LLVM 22 in the container, cargo builds
    /// bpf-linker and the workspace from the Rust package registry) instead of copying
    /// the binaries `cargo build --release` makes here. Slow: see deploy/README.md.
    #[arg(long)]
    pub from_source: bool,

    /// Make the base image again (mmdebstrap, podman import), for Debian's newer packages.
    #[arg(long)]
    pub refresh_base: bool,

    /// Only build the image; do not run the DaemonSet test on it.
    #[arg(long)]
    pub no_test: bool,

    /// Show cargo's whole output while building the binaries (also: SVC_XTASK_VERBOSE=1).
    #[arg(short, long)]
    pub verbose: bool,
}

/// Where the base root filesystem tarballs are kept: `$SVC_IMAGE_CACHE`, else
/// /var/cache/svc-ebpf/image (outside the repository, so a fresh clone finds it).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("SVC_IMAGE_CACHE")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/var/cache/svc-ebpf/image"), PathBuf::from)
}

/// FNV-1a, 64 bits: a hash that stays the same across Rust releases (std's does not
/// promise to).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The cache key of a base root filesystem: 16 hex digits of a hash of every input of
/// mmdebstrap (and its version, which decides the rest).
pub fn base_key(mmdebstrap_version: &str) -> String {
    let recipe = format!(
        "v{RECIPE_VERSION}\nsuite={SUITE}\nvariant={VARIANT}\nmirrors={}\ndpkgopts={}\nmmdebstrap={}\n",
        MIRRORS.join("|"),
        DPKG_OPTS.join("|"),
        mmdebstrap_version.trim()
    );
    format!("{:016x}", fnv1a(recipe.as_bytes()))
}

/// The `podman build` command line (without the program): the base image stands for both
/// registry images, `binaries` is the Dockerfile's stage the binaries come from.
pub fn build_args(
    dockerfile: &Path,
    context: &Path,
    base: &str,
    binaries: &str,
    tag: &str,
) -> Vec<String> {
    let mut args: Vec<String> = ["build", "--isolation=chroot", "--pull=never", "-f"]
        .map(String::from)
        .to_vec();
    args.push(dockerfile.display().to_string());
    for (name, value) in [
        (ARG_BUILDER_IMAGE, base),
        (ARG_RUNTIME_IMAGE, base),
        (ARG_BINARIES, binaries),
    ] {
        args.push("--build-arg".into());
        args.push(format!("{name}={value}"));
    }
    args.extend(["-t".into(), tag.into(), context.display().to_string()]);
    args
}

fn euid() -> Option<u32> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| setup::parse_euid(&s))
}

/// podman and mmdebstrap: installed with apt-get when missing.
fn ensure_tools() -> anyhow::Result<()> {
    let status = setup::dpkg_installed(PKGS)?;
    let missing: Vec<&str> = PKGS
        .iter()
        .copied()
        .filter(|p| !status.get(*p).copied().unwrap_or(false))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    ensure!(
        euid() == Some(0),
        "{} missing; run as root to install (apt-get install {})",
        missing.join(", "),
        missing.join(" ")
    );
    let apt = |args: &[&str]| {
        let mut c = Command::new("apt-get");
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    if let Err(e) = setup::run(&mut apt(&["update"])) {
        eprintln!("warning: {e:#}; trying to install from the current package lists");
    }
    let mut install = apt(&["install", "-y", "--no-install-recommends"]);
    install.args(&missing);
    setup::run(&mut install)?;
    Ok(())
}

fn podman() -> Command {
    Command::new("podman")
}

fn image_exists(name: &str) -> bool {
    podman()
        .args(["image", "exists", name])
        .stdin(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The base image, made (or found in the cache) as the module docs say; returns its name.
fn base_image(refresh: bool) -> anyhow::Result<String> {
    let version = setup::stdout_if_ok(Command::new("mmdebstrap").arg("--version"))
        .context("`mmdebstrap --version` fails")?;
    let key = base_key(&version);
    let name = format!("{BASE_REPO}:{SUITE}-{key}");
    let cache = cache_dir();
    let tar = cache.join(format!("{SUITE}-{VARIANT}-{key}.tar"));
    if refresh {
        let _ = std::fs::remove_file(&tar);
        if image_exists(&name) {
            setup::run(podman().args(["rmi", &name]))?;
        }
    }
    if image_exists(&name) {
        println!(
            "base image {name}: cached (podman's storage; its root filesystem: {}; \
             --refresh-base makes both again)",
            tar.display()
        );
        return Ok(name);
    }
    if tar.is_file() {
        println!("base root filesystem: cached at {}", tar.display());
    } else {
        std::fs::create_dir_all(&cache).with_context(|| format!("mkdir {}", cache.display()))?;
        let partial = tar.with_extension("tar.partial");
        let started = Instant::now();
        println!(
            "making the base root filesystem (mmdebstrap {SUITE} {VARIANT}, about a minute) -> {}",
            tar.display()
        );
        let mut cmd = Command::new("mmdebstrap");
        cmd.args([
            "--quiet",
            &format!("--variant={VARIANT}"),
            "--mode=root",
            "--format=tar",
        ]);
        for opt in DPKG_OPTS {
            cmd.arg(format!("--dpkgopt={opt}"));
        }
        cmd.arg(SUITE).arg(&partial).args(MIRRORS);
        setup::run(&mut cmd)?;
        std::fs::rename(&partial, &tar)
            .with_context(|| format!("renaming {} to {}", partial.display(), tar.display()))?;
        println!("  made in {:.0} s", started.elapsed().as_secs_f64());
    }
    setup::run(
        podman()
            .args(["import", "--change", "CMD [\"/bin/bash\"]"])
            .arg(&tar)
            .arg(&name),
    )?;
    Ok(name)
}

/// The build context of the prebuilt path: `prebuilt/svc-agent` and `prebuilt/svcctl`,
/// fresh copies of the release binaries.
fn prebuilt_context() -> anyhow::Result<PathBuf> {
    let release = target_dir().join("release");
    let context = target_dir().join("image-context");
    let _ = std::fs::remove_dir_all(&context);
    let dir = context.join("prebuilt");
    std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
    for bin in ["svc-agent", "svcctl"] {
        std::fs::copy(release.join(bin), dir.join(bin))
            .with_context(|| format!("copying {}", release.join(bin).display()))?;
    }
    Ok(context)
}

/// Where Debian keeps a machine's own CA certificates (update-ca-certificates adds them).
const LOCAL_CAS: &str = "/usr/local/share/ca-certificates";

fn has_local_cas() -> bool {
    std::fs::read_dir(LOCAL_CAS).is_ok_and(|d| {
        d.flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "crt"))
    })
}

/// `podman image inspect`'s size of `name`, in bytes.
fn image_size(name: &str) -> Option<u64> {
    setup::stdout_if_ok(podman().args(["image", "inspect", "--format", "{{.Size}}", name]))
        .and_then(|s| s.parse().ok())
}

pub fn run(opts: &Opts) -> anyhow::Result<()> {
    let started = Instant::now();
    ensure_tools()?;
    ensure!(
        euid() == Some(0),
        "cargo xtask image runs as root (mmdebstrap --mode=root, podman's root storage)"
    );
    let base = base_image(opts.refresh_base)?;
    let (binaries, context) = if opts.from_source {
        ("builder", workspace_root())
    } else {
        setup::ensure(&setup::Opts::default())?;
        build(
            &[
                "--release",
                "--locked",
                "-p",
                "svc-agent",
                "--bin",
                "svc-agent",
                "--bin",
                "svcctl",
            ],
            "svc-agent and svcctl (release)",
            !target_dir().join("release/svc-agent").exists(),
            opts.verbose || verbose_env(),
        )?;
        ("prebuilt", prebuilt_context()?)
    };
    let dockerfile = workspace_root().join("deploy/Dockerfile");
    let mut args = build_args(&dockerfile, &context, &base, binaries, &opts.tag);
    if opts.from_source && has_local_cas() {
        // The machine's own CAs (Debian's place for them), for the builder's RUN steps:
        // installing ca-certificates there adds them, so cargo trusts what this machine
        // trusts (here: a TLS-intercepting egress proxy in front of the Rust registry).
        args.insert(1, format!("--volume={LOCAL_CAS}:{LOCAL_CAS}:ro"));
    }
    let build_started = Instant::now();
    setup::run(podman().args(&args))?;
    let size = image_size(&opts.tag);
    println!(
        "image {} built in {:.0} s (podman build {:.0} s){}",
        opts.tag,
        started.elapsed().as_secs_f64(),
        build_started.elapsed().as_secs_f64(),
        size.map_or(String::new(), |s| format!(
            ", {:.1} MB",
            s as f64 / 1_000_000.0
        ))
    );
    if opts.no_test {
        return Ok(());
    }
    test_image(&opts.tag)
}

/// The DaemonSet test (tests/tests/daemonset.rs) on the image `tag`'s binaries.
pub fn test_image(tag: &str) -> anyhow::Result<()> {
    println!("testing {tag}'s svc-agent as the DaemonSet runs it (tests/tests/daemonset.rs)");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "test",
            "-p",
            "svc-lab",
            "--test",
            "daemonset",
            "--",
            "--test-threads=1",
        ])
        .env("SVC_IMAGE", tag)
        .current_dir(workspace_root())
        .status()
        .context("running cargo test")?;
    if !status.success() {
        bail!("the DaemonSet test failed on {tag} ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `builder` stage copies every workspace member: cargo reads all of them to
    /// resolve the workspace, even for `-p svc-agent` (a member added without its COPY
    /// breaks the build from source, which only a machine with a registry runs).
    #[test]
    fn the_builder_copies_every_workspace_member() {
        let dockerfile =
            std::fs::read_to_string(workspace_root().join("deploy/Dockerfile")).unwrap();
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        let members = manifest
            .lines()
            .find_map(|l| l.trim().strip_prefix("members = "))
            .expect("members = [...] in Cargo.toml");
        let members: Vec<&str> = members
            .trim_matches(['[', ']'])
            .split(',')
            .map(|m| m.trim().trim_matches('"'))
            .filter(|m| !m.is_empty())
            .collect();
        assert!(members.len() >= 5, "{members:?}");
        for m in members {
            assert!(
                dockerfile
                    .lines()
                    .any(|l| l.trim() == format!("COPY {m} {m}")),
                "deploy/Dockerfile's builder stage lacks `COPY {m} {m}`"
            );
        }
    }

    #[test]
    fn the_key_follows_the_inputs() {
        let a = base_key("mmdebstrap 1.3.5");
        assert_eq!(a.len(), 16);
        assert_eq!(a, base_key("mmdebstrap 1.3.5\n"));
        assert_ne!(a, base_key("mmdebstrap 1.4.0"));
        // Known value: the key must not change between Rust releases.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    /// Every build argument the command passes is an ARG of deploy/Dockerfile, with a
    /// default from the usual registries, and `BINARIES` names a stage of it.
    #[test]
    fn build_arguments_are_the_dockerfiles() {
        let text = std::fs::read_to_string(workspace_root().join("deploy/Dockerfile")).unwrap();
        let default = |name: &str| -> String {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(&format!("ARG {name}=")))
                .unwrap_or_else(|| panic!("no `ARG {name}=<default>` in deploy/Dockerfile"))
                .trim()
                .to_string()
        };
        for arg in [ARG_BUILDER_IMAGE, ARG_RUNTIME_IMAGE] {
            let d = default(arg);
            assert!(
                d.starts_with("docker.io/") || d.starts_with("gcr.io/"),
                "{arg}={d}"
            );
        }
        let stages: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("FROM "))
            .filter_map(|l| l.split(" AS ").nth(1))
            .map(str::trim)
            .collect();
        assert!(
            stages.contains(&default(ARG_BINARIES).as_str()),
            "{stages:?}"
        );
        for s in ["builder", "prebuilt"] {
            assert!(stages.contains(&s), "stage {s} in {stages:?}");
        }
        let args = build_args(
            Path::new("deploy/Dockerfile"),
            Path::new("ctx"),
            "localhost/b:1",
            "prebuilt",
            "localhost/svc-agent:1",
        );
        assert!(args.contains(&"--isolation=chroot".to_string()));
        for a in [
            "BUILDER_IMAGE=localhost/b:1",
            "RUNTIME_IMAGE=localhost/b:1",
            "BINARIES=prebuilt",
        ] {
            assert!(args.contains(&a.to_string()), "{a} in {args:?}");
        }
        assert_eq!(args.last().map(String::as_str), Some("ctx"));
    }
}
