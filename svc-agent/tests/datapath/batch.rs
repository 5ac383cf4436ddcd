//! Batched map writes against the kernel (`BPF_MAP_UPDATE_BATCH`, dataplane/batch.rs): the
//! backends of a sync go in one call, and a scope's slots and its slot-0 entry in one. When the map fills up in the middle
//! of a batch, the kernel keeps the prefix it wrote and the reconciler's mirror must take
//! exactly that prefix: no frontend is left counting slots it does not have, and the
//! report counts the entries the map really holds.
use std::collections::BTreeMap;

use svc_agent::dataplane::{MapStore, Parts, StoreError};
use svc_agent::desired::DesiredState;
use svc_agent::inspect::consistency::packet_hazards;
use svc_agent::reconcile::Reconciler;
use svc_common::map_names;

use crate::support::*;

/// SVC4_SERVICES (and the other load-balancing maps) sized for 40 entries.
const LB_ENTRIES: u32 = 40;

/// `n` ClusterIP frontends with the same 10 backends: 11 SVC4_SERVICES entries each.
fn frontends(n: u8) -> DesiredState {
    let backends: Vec<String> = (1..=10).map(|i| format!("10.244.7.{i}:8080")).collect();
    let backends: Vec<&str> = backends.iter().map(String::as_str).collect();
    DesiredState {
        frontends: (0..n)
            .map(|i| {
                fe(
                    &format!("10.96.7.{}:80", i + 1),
                    TCP,
                    CIP,
                    &format!("batch-{i}"),
                    &backends,
                    no_edit,
                )
            })
            .collect::<BTreeMap<_, _>>(),
        ..Default::default()
    }
}

#[test]
fn a_map_that_fills_mid_batch_keeps_a_whole_prefix() {
    let mut config = default_config();
    config.map_sizes.lb = LB_ENTRIES;
    let mut h = Harness::load("batch-full", &config);
    let mut reconciler = Reconciler::adopt(&h.maps).expect("adopt the empty maps");

    // 6 x 11 = 66 entries for 40 places: the fourth frontend's batch fails after 7 slots.
    let report = reconciler.sync(&frontends(6), &mut h.maps);
    assert!(
        report.errors.iter().any(|(_, e)| *e
            == StoreError::Full {
                map: map_names::SVC4_SERVICES
            }),
        "expected SVC4_SERVICES to fill up: {:?}",
        report.errors
    );
    let raw = h.maps.read_raw(Parts::NONE).expect("read the maps back");
    assert_eq!(
        raw.services.len(),
        LB_ENTRIES as usize,
        "the map is full to the last entry"
    );
    assert_eq!(
        report.slots_written + report.frontends_written,
        raw.services.len(),
        "the report counts exactly the entries the kernel wrote"
    );
    assert_eq!(report.frontends_written, 3, "three whole frontends fit");
    assert_eq!(packet_hazards(&raw), Vec::<String>::new());

    // The mirror took the written prefix: once the frontends that cannot fit are gone,
    // the next sync removes the partial slots (nothing else), and the maps hold exactly
    // what a reconciler adopting them sees.
    let report = reconciler.sync(&frontends(3), &mut h.maps);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.slots_written + report.frontends_written, 0);
    let raw = h.maps.read_raw(Parts::NONE).expect("read the maps back");
    assert_eq!(raw.services.len(), 33, "three frontends of 11 entries");
    let mut fresh = Reconciler::adopt(&h.maps).expect("adopt the maps");
    let again = fresh.sync(&frontends(3), &mut h.maps);
    assert!(again.errors.is_empty(), "{:?}", again.errors);
    assert_eq!(
        again.slots_written + again.frontends_written + again.slots_removed,
        0,
        "a fresh adoption finds nothing to change"
    );
    assert!(h.maps.read_services().is_ok());
}

/// SVC4_BACKENDS fills in the middle of the backends' batch: the ones written are counted
/// and used, the rest reported, and no slot points at a backend that is not there.
#[test]
fn backends_that_do_not_fit_are_reported_and_not_used() {
    let mut config = default_config();
    config.map_sizes.lb = LB_ENTRIES;
    let mut h = Harness::load("batch-backends", &config);
    let mut reconciler = Reconciler::adopt(&h.maps).expect("adopt the empty maps");
    let backends: Vec<String> = (1..=30).map(|i| format!("10.244.8.{i}:8080")).collect();
    let backends: Vec<&str> = backends.iter().map(String::as_str).collect();
    let desired = DesiredState {
        frontends: [
            fe("10.96.8.1:80", TCP, CIP, "wide-a", &backends[..15], no_edit),
            fe("10.96.8.2:80", TCP, CIP, "wide-b", &backends[15..], no_edit),
        ]
        .into_iter()
        .chain((0..2).map(|i| {
            fe(
                &format!("10.96.8.{}:80", i + 3),
                UDP,
                CIP,
                &format!("wide-u{i}"),
                &backends,
                no_edit,
            )
        }))
        .collect(),
        ..Default::default()
    };
    // 30 TCP + 30 UDP backends for 40 places.
    let report = reconciler.sync(&desired, &mut h.maps);
    assert!(
        report.errors.iter().any(|(_, e)| *e
            == StoreError::Full {
                map: map_names::SVC4_BACKENDS
            }),
        "expected SVC4_BACKENDS to fill up: {:?}",
        report.errors
    );
    let raw = h.maps.read_raw(Parts::NONE).expect("read the maps back");
    assert_eq!(raw.backends.len(), LB_ENTRIES as usize);
    assert_eq!(report.backends_added, raw.backends.len());
    assert_eq!(packet_hazards(&raw), Vec::<String>::new());
}
