//! Builds svc-ebpf for the BPF target with aya-build and leaves the object in OUT_DIR, where
//! `dataplane::loader` includes it (`EBPF_OBJECT`). Which toolchain builds it:
//! - `SVC_EBPF_TOOLCHAIN=<rustup toolchain>` if set;
//! - else rustup's `nightly` if it has the `rust-src` component (the usual aya set-up);
//! - else `debian-web`: Debian's rustc-web linked as a rustup toolchain by
//!   `cargo xtask setup`, with RUSTC_BOOTSTRAP=1 so aya-ebpf's `#![feature]`s are allowed
//!   and core is built from Debian's rust-web-src (`-Z build-std=core`, added by aya-build).
use std::{env, path::Path, process::Command};

fn nightly_has_rust_src() -> bool {
    Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            let sysroot = String::from_utf8_lossy(&o.stdout).trim().to_string();
            Path::new(&sysroot)
                .join("lib/rustlib/src/rust/library/core")
                .exists()
        })
        .unwrap_or(false)
}

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=SVC_EBPF_TOOLCHAIN");
    let out_dir = env::var("OUT_DIR")?;
    let object = Path::new(&out_dir).join("svc-ebpf");

    let toolchain = match env::var("SVC_EBPF_TOOLCHAIN") {
        Ok(t) if !t.is_empty() => t,
        _ if nightly_has_rust_src() => "nightly".to_string(),
        _ => "debian-web".to_string(),
    };
    if toolchain == "debian-web" {
        // SAFETY: build scripts are single-threaded; the variable is read by the child
        // cargo that aya-build spawns.
        unsafe { env::set_var("RUSTC_BOOTSTRAP", "1") };
    }

    let metadata = aya_build::Package {
        name: "svc-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../svc-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([metadata], aya_build::Toolchain::Custom(&toolchain)).map_err(|e| {
        anyhow::anyhow!(
            "building the eBPF programs with toolchain `{toolchain}` failed: {e:#}\n\
             Run `cargo xtask setup` (as root) to install the BPF toolchain, or set \
             AYA_BUILD_SKIP=1 to check the userspace code without it."
        )
    })?;
    // With AYA_BUILD_SKIP=1 nothing was built: leave an empty object so the crate still
    // compiles (for clippy/check); loading it then fails with a clear error.
    if !object.exists() {
        std::fs::write(&object, [])?;
    }
    Ok(())
}
