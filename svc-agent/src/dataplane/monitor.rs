//! svcctl monitor's side of the maps: the SVC_MONITOR switch (read, written whole) and the
//! SVC_EVENTS ring buffer (read through `Maps::events`, aya's `RingBuf`). The events'
//! meaning is in svc-common (`MonitorEvent`), their decoding and printing in
//! `crate::monitor`.
use svc_common::{MonitorControl, map_names};

use super::{DataplaneError, Maps, map_err};

/// CLOCK_MONOTONIC now, in ns: the clock of `MonitorControl::until_ns` and of the events
/// (the programs read its coarse variant, which is never ahead of it).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Maps {
    /// SVC_MONITOR's entry.
    pub fn monitor_control(&self) -> Result<MonitorControl, DataplaneError> {
        self.monitor
            .get(&0, 0)
            .map_err(map_err(map_names::SVC_MONITOR))
    }

    /// Writes SVC_MONITOR's entry (svcctl monitor: on, refreshed, off).
    pub fn set_monitor_control(&mut self, control: &MonitorControl) -> Result<(), DataplaneError> {
        self.monitor
            .set(0, *control, 0)
            .map_err(map_err(map_names::SVC_MONITOR))
    }

    /// The agent at start: records the node's name for svcctl monitor's events, keeping
    /// what a running svcctl monitor wrote (read, then written whole: a monitor's refresh
    /// in between is lost, and made again within a second).
    pub fn set_monitor_node(&mut self, node: &str) -> Result<(), DataplaneError> {
        let mut control = self.monitor_control()?;
        control.set_node_name(node);
        self.set_monitor_control(&control)
    }
}
