//! What svcctl shows: the pinned maps read into a plain, serializable [`Snapshot`] and
//! rendered as text tables. Nothing here writes to a map; every raw value is decoded
//! through the dataplane's [`layout`](crate::dataplane::layout).
//!
//! | file | what |
//! |---|---|
//! | `schema.rs` | the snapshot and the JSON / YAML documents, each field documented |
//! | `decode.rs` | raw map contents to the snapshot |
//! | `consistency.rs` | the map states a packet could trip over (also used by the reconciler's tests) |
//! | `filter.rs` | `-n NAMESPACE [NAME]` |
//! | `render.rs` | the text tables |
//! | `lb.rs` | `svcctl lb`: the agent's LoadBalancer report as text |
//!
//! # JSON and YAML documents
//!
//! svcctl prints one of these documents with `-o json` (or the hidden alias `--json`) and
//! the same document as YAML with `-o yaml`; every field is documented in [`schema`]:
//!
//! | command | document |
//! |---|---|
//! | `svcctl dump` | [`Snapshot`] |
//! | `svcctl dump services` | [`ServicesDocument`]: `{"version", "services", "unserved", "service_cidrs", "problems", "inconsistencies"}` |
//! | `svcctl dump backends` | [`BackendsDocument`]: `{"version", "backends"}` |
//! | `svcctl dump conntrack` | [`ConntrackDocument`]: `{"version", "now_ns", "conntrack"}` |
//! | `svcctl dump affinity` | [`AffinityDocument`]: `{"version", "now_ns", "affinity"}` |
//! | `svcctl dump stats` | [`StatsDocument`]: `{"version", "stats"}` |
//! | `svcctl stats` | [`RatesDocument`]: `{"version", "interval_s", "stats", "services"}`, totals and rates per verdict and per Service frontend |
//!
//! Every field of a section document has the meaning and form of the snapshot field of the
//! same name (filtered the same way). `svcctl dump [SECTION] -n NAMESPACE [NAME]` keeps the
//! services, unserved Services, conntrack and affinity entries (by rev_nat_id) of the
//! matching Services, and the backends those services and flows use (each with all its
//! references); frontends without a name entry are left out. `stats`, `service_cidrs`,
//! `problems` and `inconsistencies` are not filtered. Expired conntrack and affinity
//! entries are left out (and counted in `expired_hidden`) unless `--show-expired`. See
//! [`Filter`].
pub mod consistency;
mod decode;
mod filter;
mod lb;
mod render;
pub mod schema;

pub use decode::{decode, decode_ct, service_rates, verdict_rates};
pub use filter::Filter;
pub use lb::render_lb;
pub use render::*;
pub use schema::*;

pub use crate::dataplane::Parts;
use crate::dataplane::{DataplaneError, Maps};

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of bpf_ktime_get_ns().
pub fn monotonic_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass; CLOCK_MONOTONIC always exists.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    ts.tv_sec as u64 * decode::NS_PER_SEC + ts.tv_nsec as u64
}

/// Reads every map and decodes it.
pub fn snapshot(maps: &Maps) -> Result<Snapshot, InspectError> {
    snapshot_of(maps, Parts::ALL)
}

/// Reads the maps `parts` asks for (and the small ones) and decodes them; what is not read
/// is empty in the snapshot.
pub fn snapshot_of(maps: &Maps, parts: Parts) -> Result<Snapshot, InspectError> {
    Ok(decode(&maps.read_raw(parts)?, monotonic_now_ns()))
}

/// The session affinity table only (no walk over the conntrack table), of the Services
/// `filter` selects: a snapshot whose conntrack and stats are empty.
pub fn affinity(maps: &Maps, filter: &Filter) -> Result<Snapshot, InspectError> {
    let parts = Parts {
        affinity: true,
        ..Parts::NONE
    };
    let mut snap = decode(&maps.read_raw(parts)?, monotonic_now_ns());
    filter.apply(&mut snap);
    Ok(snap)
}

/// Verdict totals only (no walk over the conntrack table).
pub fn verdict_totals(maps: &Maps) -> Result<Vec<VerdictTotal>, InspectError> {
    Ok(decode::decode_stats(&maps.verdict_totals()?))
}

#[cfg(test)]
use decode::{decode_stats, round3};

#[cfg(test)]
mod tests;
