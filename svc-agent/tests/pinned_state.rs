//! Pins left by an earlier agent: a compatible set is adopted as is; a map whose layout
//! differs from this build's is refused with the map, the attribute and what to do, before
//! anything is loaded or attached. One agent per directory: the lock refuses a second one and
//! a cleanup under it; cleanup of nothing is an error. Needs root and bpffs (like the
//! fixtures).
mod support;
use support::*;

use std::os::unix::fs::PermissionsExt as _;

use svc_agent::dataplane::{self, BpffsLock, Datapath, DataplaneError, IfRunning};
use svc_common::map_names::SVC4_BACKENDS;

/// A new, empty pin directory (removed on drop).
fn pin_dir(name: &str) -> PinDir {
    let dir = PinDir::unique(name);
    std::fs::create_dir_all(&dir.0).expect("pin dir");
    dir
}

#[test]
fn a_pinned_map_of_another_layout_is_refused_with_the_reason() {
    let _kernel = kernel_lock();
    let dir = pin_dir("incompatible");
    // What an older build could have pinned: the backends map with 12-byte values (this build: 8).
    let out = std::process::Command::new("bpftool")
        .args(["map", "create"])
        .arg(dir.0.join(SVC4_BACKENDS))
        .args([
            "type", "hash", "key", "4", "value", "12", "entries", "65536",
        ])
        .args(["name", SVC4_BACKENDS])
        .output()
        .expect("bpftool (installed by cargo xtask setup)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let err = match Datapath::load(&dir.0, &Default::default()) {
        Ok(_) => panic!("an incompatible pin was adopted"),
        Err(e) => e,
    };
    assert!(
        matches!(
            &err,
            DataplaneError::IncompatiblePin {
                what: "value size",
                pinned: 12,
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    for want in [
        SVC4_BACKENDS,
        "value size",
        "pinned 12",
        "svc-agent cleanup --bpffs",
    ] {
        assert!(text.contains(want), "{want:?} in {text:?}");
    }
    // Nothing else was created next to it: the refusal comes before loading.
    assert_eq!(
        std::fs::read_dir(&dir.0).unwrap().count(),
        1,
        "only the foreign map"
    );
    // svcctl reading the same pins says the same.
    assert!(matches!(
        svc_agent::dataplane::Maps::open_pinned(&dir.0),
        Err(DataplaneError::NotPinned { .. } | DataplaneError::IncompatiblePin { .. })
    ));
}

#[test]
fn a_compatible_set_is_adopted_and_cleanup_removes_it() {
    let _kernel = kernel_lock();
    let dir = pin_dir("adopt");
    {
        let (_datapath, mut maps) = Datapath::load(&dir.0, &Default::default()).expect("load");
        use svc_agent::dataplane::MapStore as _;
        maps.put_backend(
            7,
            &svc_common::Backend4 {
                addr_be: u32::from(ip("10.244.1.11")).to_be(),
                port_be: 8080u16.to_be(),
                proto: svc_common::PROTO_TCP,
                ..Default::default()
            },
        )
        .expect("write");
    }
    // A second load (a restarted agent) sees the entry the first one wrote.
    {
        let (_datapath, maps) = Datapath::load(&dir.0, &Default::default()).expect("reload");
        assert!(
            maps.backends.get(&7, 0).is_ok(),
            "backend 7 survived the reload"
        );
    }
    let done = dataplane::cleanup(&dir.0).expect("cleanup");
    assert_eq!(done.maps.len(), dataplane::MAP_SPECS.len());
    assert!(done.left.is_empty());
    assert!(!done.forced);
    assert!(!dir.0.exists());
    // Cleaning again finds nothing, and says so (exit status 3 in `svc-agent cleanup`).
    assert!(matches!(
        dataplane::cleanup(&dir.0),
        Err(DataplaneError::NothingToClean { missing: true, .. })
    ));
}

#[test]
fn cleanup_of_nothing_is_an_error_naming_the_path_and_touches_nothing() {
    let _kernel = kernel_lock();
    // A path that never existed: a mistyped --bpffs is not a successful uninstall.
    let never = PinDir::unique("never-existed");
    let err = dataplane::cleanup(&never.0).expect_err("nothing there");
    assert!(
        matches!(err, DataplaneError::NothingToClean { missing: true, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&never.0.display().to_string()) && text.contains("does not exist"),
        "{text}"
    );
    // A directory that exists but holds nothing of ours (here: one foreign pin): left as it
    // was.
    let dir = pin_dir("foreign-only");
    let foreign = dir.0.join("SOMEONE_ELSES_MAP");
    let out = std::process::Command::new("bpftool")
        .args(["map", "create"])
        .arg(&foreign)
        .args(["type", "hash", "key", "4", "value", "4", "entries", "4"])
        .args(["name", "foreign"])
        .output()
        .expect("bpftool");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = dataplane::cleanup(&dir.0).expect_err("nothing of ours");
    assert!(
        matches!(err, DataplaneError::NothingToClean { missing: false, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("none of svc-agent's pins"),
        "{err}"
    );
    assert!(foreign.exists() && dir.0.exists(), "nothing was removed");
}

#[test]
fn one_agent_per_directory_cleanup_refuses_under_it_and_readers_need_no_lock() {
    let _kernel = kernel_lock();
    let dir = PinDir::unique("lock");
    let me = Some(std::process::id());
    let lock = BpffsLock::acquire(&dir.0).expect("lock a new directory");
    assert_eq!(
        std::fs::metadata(&dir.0).unwrap().permissions().mode() & 0o777,
        0o700,
        "only root may open it (and so take the lock)"
    );
    let (datapath, _maps) = Datapath::load_locked(lock, &Default::default()).expect("load");

    // A second agent is refused, naming the holder (flock conflicts between open files,
    // also in one process, so the holder is this test's pid).
    match BpffsLock::acquire(&dir.0) {
        Err(e @ DataplaneError::Locked { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(&format!(
                    "another svc-agent (pid {}) holds {}",
                    std::process::id(),
                    dir.0.display()
                )),
                "{text}"
            );
        }
        other => panic!("a second lock: {:?}", other.map(|_| ())),
    }
    // svcctl reads under a running agent: it takes no lock.
    svc_agent::dataplane::Maps::open_pinned(&dir.0).expect("svcctl opens the pins");

    // cleanup refuses while the agent holds the directory, and changes nothing.
    match dataplane::cleanup(&dir.0) {
        Err(DataplaneError::CleanupWhileRunning { holder, .. }) => assert_eq!(holder, me),
        other => panic!("cleanup under an agent: {other:?}"),
    }
    assert_eq!(
        std::fs::read_dir(&dir.0).unwrap().count(),
        dataplane::MAP_SPECS.len() + 1,
        "every map and links/ still pinned"
    );
    // --force goes on, and says whom it went past.
    let done = dataplane::cleanup_with(&dir.0, IfRunning::Force).expect("forced cleanup");
    assert!(done.forced);
    assert_eq!(done.holder, me);
    assert_eq!(done.maps.len(), dataplane::MAP_SPECS.len());
    assert!(!dir.0.exists());
    drop(datapath);

    // Once the holder is gone, the directory can be locked again.
    let dir = PinDir::unique("lock-again");
    drop(BpffsLock::acquire(&dir.0).expect("lock"));
    BpffsLock::acquire(&dir.0).expect("free again after the first was dropped");
}
