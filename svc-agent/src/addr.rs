//! The address vocabulary every layer shares, from the model down to the maps: IPv4 CIDRs,
//! the protocol of a Service port, a frontend (an address a Service answers on) and a
//! backend address. A leaf: it imports nothing of the agent, so the model, the desired
//! state, the reconciler and the dataplane can all use it without reaching up.
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// TCP or UDP: svc-common's word (its number is the IPv4 header's protocol number).
pub use svc_common::Protocol;

/// An address a Service answers on: the identity of a frontend in the desired state and in
/// the services map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frontend {
    pub vip: Ipv4Addr,
    pub port: u16,
    pub proto: Protocol,
}

impl fmt::Display for Frontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.vip, self.port, self.proto)
    }
}

/// A backend a frontend translates to: a pod address and target port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendAddr {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub proto: Protocol,
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.addr, self.port, self.proto)
    }
}

/// An IPv4 CIDR (`addr/prefix_len`). `addr` is always the network address (host bits are
/// cleared on construction through [`Ipv4Cidr::new`] or parsing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

impl Ipv4Cidr {
    /// The CIDR containing `addr` with `prefix_len` bits (clamped to 32); host bits of
    /// `addr` are cleared, as Go's `net.ParseCIDR` does for kube-proxy.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Self {
        let prefix_len = prefix_len.min(32);
        Ipv4Cidr {
            addr: Ipv4Addr::from(u32::from(addr) & Self::mask(prefix_len)),
            prefix_len,
        }
    }

    /// The netmask, host order.
    pub fn netmask(&self) -> u32 {
        Self::mask(self.prefix_len)
    }

    fn mask(prefix_len: u8) -> u32 {
        if prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix_len.min(32)))
        }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = Self::mask(self.prefix_len);
        u32::from(ip) & mask == u32::from(self.addr) & mask
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// Why a string is not an IPv4 CIDR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CidrError {
    /// A valid IPv6 CIDR (datapath v1 ignores these).
    Ipv6,
    /// Not a CIDR at all.
    Invalid,
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CidrError::Ipv6 => "an IPv6 CIDR",
            CidrError::Invalid => "not a CIDR",
        })
    }
}

impl std::error::Error for CidrError {}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    /// `a.b.c.d/n` with 0 <= n <= 32. The prefix length is required (as in Go's
    /// `net.ParseCIDR`); host bits are allowed and cleared. Surrounding whitespace is NOT
    /// trimmed here: callers that tolerate it (loadBalancerSourceRanges) trim first.
    fn from_str(s: &str) -> Result<Self, CidrError> {
        let (addr, len) = s.split_once('/').ok_or(CidrError::Invalid)?;
        // Go accepts only decimal digits, without sign, for the prefix length.
        if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CidrError::Invalid);
        }
        let len: u8 = len.parse().map_err(|_| CidrError::Invalid)?;
        if let Ok(v4) = addr.parse::<Ipv4Addr>() {
            if len > 32 {
                return Err(CidrError::Invalid);
            }
            return Ok(Ipv4Cidr::new(v4, len));
        }
        match addr.parse::<Ipv6Addr>() {
            Ok(_) if len <= 128 => Err(CidrError::Ipv6),
            _ => Err(CidrError::Invalid),
        }
    }
}
