//! The address vocabulary every layer shares, from the model down to the maps: CIDRs of
//! either family, the protocol of a Service port, a frontend (an address a Service answers
//! on) and a backend address. A leaf: it imports nothing of the agent, so the model, the
//! desired state, the reconciler and the dataplane can all use it without reaching up.
//!
//! Frontends and backends hold an [`IpAddr`]: a dual-stack Service is two sets of
//! frontends to the datapath, one per family (docs/ipv6.md), and [`Family`] says which
//! maps (`SVC4_*` or `SVC6_*`) an address belongs in. `IpAddr` orders every IPv4 address
//! before every IPv6 one, so the IPv4 frontends keep the order they had.
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// TCP or UDP: svc-common's word (its number is the IPv4 header's protocol number).
pub use svc_common::Protocol;

/// An address family: which set of maps (`SVC4_*` or `SVC6_*`) an address goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// `IPv4` / `IPv6`, as Kubernetes spells the families.
    pub fn label(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// `addr:port`, with an IPv6 address in brackets (`[fd00::10]:80`), as a URL or a
/// `SocketAddr` writes it: the colons of the address would otherwise run into the port's.
pub struct HostPort(pub IpAddr, pub u16);

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.1),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.1),
        }
    }
}

/// An address a Service answers on: the identity of a frontend in the desired state and in
/// the services map (`SVC4_SERVICES` or `SVC6_SERVICES`, by the address's family).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frontend {
    pub vip: IpAddr,
    pub port: u16,
    pub proto: Protocol,
}

impl Frontend {
    pub fn family(&self) -> Family {
        Family::of(self.vip)
    }
}

impl fmt::Display for Frontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", HostPort(self.vip, self.port), self.proto)
    }
}

/// A backend a frontend translates to: a pod address and target port. A frontend's
/// backends are always of its own family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendAddr {
    pub addr: IpAddr,
    pub port: u16,
    pub proto: Protocol,
}

impl BackendAddr {
    pub fn family(&self) -> Family {
        Family::of(self.addr)
    }
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", HostPort(self.addr, self.port), self.proto)
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

/// An IPv6 CIDR (`addr/prefix_len`), host bits cleared as for [`Ipv4Cidr`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv6Cidr {
    pub addr: Ipv6Addr,
    pub prefix_len: u8,
}

impl Ipv6Cidr {
    /// The CIDR containing `addr` with `prefix_len` bits (clamped to 128).
    pub fn new(addr: Ipv6Addr, prefix_len: u8) -> Self {
        let prefix_len = prefix_len.min(128);
        Ipv6Cidr {
            addr: Ipv6Addr::from(u128::from(addr) & Self::mask(prefix_len)),
            prefix_len,
        }
    }

    fn mask(prefix_len: u8) -> u128 {
        if prefix_len == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(prefix_len.min(128)))
        }
    }

    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        let mask = Self::mask(self.prefix_len);
        u128::from(ip) & mask == u128::from(self.addr) & mask
    }
}

impl fmt::Display for Ipv6Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// A CIDR of either family (flags and fields that take both: `--node-port-addresses`,
/// `--external-ip-cidrs`, `--cluster-cidr`, loadBalancerSourceRanges). A CIDR never
/// contains an address of the other family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpCidr {
    V4(Ipv4Cidr),
    V6(Ipv6Cidr),
}

impl IpCidr {
    /// The CIDR containing `addr` with `prefix_len` bits (clamped to the family's width).
    pub fn new(addr: IpAddr, prefix_len: u8) -> Self {
        match addr {
            IpAddr::V4(a) => IpCidr::V4(Ipv4Cidr::new(a, prefix_len)),
            IpAddr::V6(a) => IpCidr::V6(Ipv6Cidr::new(a, prefix_len)),
        }
    }

    /// The CIDR of `addr` alone (/32 or /128).
    pub fn host(addr: IpAddr) -> Self {
        Self::new(addr, 128)
    }

    pub fn family(&self) -> Family {
        match self {
            IpCidr::V4(_) => Family::V4,
            IpCidr::V6(_) => Family::V6,
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip) {
            (IpCidr::V4(c), IpAddr::V4(a)) => c.contains(a),
            (IpCidr::V6(c), IpAddr::V6(a)) => c.contains(a),
            _ => false,
        }
    }

    /// The IPv4 CIDR, None for an IPv6 one.
    pub fn v4(&self) -> Option<Ipv4Cidr> {
        match self {
            IpCidr::V4(c) => Some(*c),
            IpCidr::V6(_) => None,
        }
    }
}

impl From<Ipv4Cidr> for IpCidr {
    fn from(c: Ipv4Cidr) -> Self {
        IpCidr::V4(c)
    }
}

impl From<Ipv6Cidr> for IpCidr {
    fn from(c: Ipv6Cidr) -> Self {
        IpCidr::V6(c)
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpCidr::V4(c) => c.fmt(f),
            IpCidr::V6(c) => c.fmt(f),
        }
    }
}

/// Why a string is not an IPv4 CIDR ([`Ipv4Cidr`]'s parse; [`IpCidr`]'s only fails with
/// `Invalid`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CidrError {
    /// A valid IPv6 CIDR, where only IPv4 is taken.
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

impl FromStr for IpCidr {
    type Err = CidrError;

    /// `a.b.c.d/n` (n <= 32) or `x:y::z/n` (n <= 128), with the rules of
    /// [`Ipv4Cidr`]'s parse.
    fn from_str(s: &str) -> Result<Self, CidrError> {
        let (addr, len) = split_cidr(s)?;
        match addr.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) if len <= 32 => Ok(IpCidr::V4(Ipv4Cidr::new(a, len))),
            Ok(IpAddr::V6(a)) if len <= 128 => Ok(IpCidr::V6(Ipv6Cidr::new(a, len))),
            _ => Err(CidrError::Invalid),
        }
    }
}

/// The address text and prefix length of `addr/len`. Go accepts only decimal digits,
/// without sign, for the prefix length, and requires it (`net.ParseCIDR`).
fn split_cidr(s: &str) -> Result<(&str, u8), CidrError> {
    let (addr, len) = s.split_once('/').ok_or(CidrError::Invalid)?;
    if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CidrError::Invalid);
    }
    let len: u8 = len.parse().map_err(|_| CidrError::Invalid)?;
    Ok((addr, len))
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    /// `a.b.c.d/n` with 0 <= n <= 32. The prefix length is required (as in Go's
    /// `net.ParseCIDR`); host bits are allowed and cleared. Surrounding whitespace is NOT
    /// trimmed here: callers that tolerate it (loadBalancerSourceRanges) trim first.
    fn from_str(s: &str) -> Result<Self, CidrError> {
        match s.parse::<IpCidr>()? {
            IpCidr::V4(c) => Ok(c),
            IpCidr::V6(_) => Err(CidrError::Ipv6),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_of_both_families_parse_and_contain() {
        let c: IpCidr = "fd00:10::7/64".parse().unwrap();
        assert_eq!(c.to_string(), "fd00:10::/64");
        assert!(c.contains("fd00:10::1".parse().unwrap()));
        assert!(!c.contains("fd00:11::1".parse().unwrap()));
        assert!(!c.contains("10.0.0.1".parse().unwrap()));
        assert_eq!("fd00::/129".parse::<IpCidr>(), Err(CidrError::Invalid));
        assert_eq!("fd00::/64".parse::<Ipv4Cidr>(), Err(CidrError::Ipv6));
        assert_eq!(
            "10.1.2.3/8".parse::<IpCidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            IpCidr::host("fd00::1".parse().unwrap()).to_string(),
            "fd00::1/128"
        );
        assert!(
            "::/0"
                .parse::<IpCidr>()
                .unwrap()
                .contains("2001:db8::1".parse().unwrap())
        );
    }

    #[test]
    fn ipv6_addresses_print_in_brackets() {
        let f = Frontend {
            vip: "fd00::10".parse().unwrap(),
            port: 80,
            proto: Protocol::Tcp,
        };
        assert_eq!(f.to_string(), "[fd00::10]:80/TCP");
        let b = BackendAddr {
            addr: "10.244.1.2".parse().unwrap(),
            port: 8080,
            proto: Protocol::Udp,
        };
        assert_eq!(b.to_string(), "10.244.1.2:8080/UDP");
    }
}
