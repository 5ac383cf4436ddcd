//! The one harness of the tests that run the real programs (tests/datapath/, trace.rs,
//! pinned_state.rs): `harness` loads the datapath and runs and checks cases, `state` builds
//! the desired state the maps are filled from, `frames` the input and expected frames.
// Each test binary uses a part of it.
#![allow(dead_code, unused_imports)]

pub mod frames;
pub mod harness;
pub mod state;

pub use frames::*;
pub use harness::*;
pub use state::*;

use std::net::{Ipv4Addr, SocketAddrV4};

pub fn ip(s: &str) -> Ipv4Addr {
    s.parse()
        .unwrap_or_else(|e| panic!("{s:?} is no IPv4 address: {e}"))
}

pub fn sa(s: &str) -> SocketAddrV4 {
    s.parse()
        .unwrap_or_else(|e| panic!("{s:?} is no IPv4 address:port: {e}"))
}
