//! Pins left by an earlier agent: a compatible set is adopted as is; a map whose layout
//! differs from this build's is refused with the map, the attribute and what to do, before
//! anything is loaded or attached. Needs root and bpffs (like the fixtures).
mod support;
use support::*;

use svc_agent::dataplane::{self, Datapath, DataplaneError};
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
    assert!(!dir.0.exists());
    // Cleaning what is not there is fine.
    assert!(dataplane::cleanup(&dir.0).expect("again").maps.is_empty());
}
