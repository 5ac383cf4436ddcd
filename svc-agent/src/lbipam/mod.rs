//! LoadBalancer address pools and the assignment of their addresses to Services ("LB
//! IPAM", as Cilium's and MetalLB's). This file is the pure logic; [`object`] is the pool
//! object (the `LoadBalancerIPPool` custom resource) and what a Service asks for.
//!
//! A pool holds blocks of addresses, CIDRs (`10.0.10.0/24`, `fd00:10::/120`) or ranges
//! (`10.0.10.5-10.0.10.9`), optionally a Service label selector, and can be disabled.
//! [`assign`] gives every LoadBalancer Service that asks the addresses it gets, one per
//! family it asks for, deterministically from the same input. Decisions:
//! - **A Service that has an address keeps it.** An address a Service already holds (its
//!   `status.loadBalancer.ingress`) stays its own while no other Service holds it, even if
//!   its pool was disabled, removed or became malformed, or no longer selects the Service:
//!   the change is reported, never applied to a working Service. (Cilium takes such
//!   addresses back; kube-proxy replacements should not move a Service's address behind
//!   its users' backs.)
//! - **Requested addresses** (`spec.loadBalancerIP`, or the annotation listing IPs) must be
//!   inside an enabled pool that selects the Service and free; otherwise the Service gets
//!   none of its family and the problem names why. A Service that holds an address and
//!   asks for another one of the family moves to it once it can be given (a deliberate
//!   change); until then it keeps the one it has.
//! - **Otherwise** the lowest free address of the first enabled pool, by name, that selects
//!   the Service and has addresses of the family. An IPv4 CIDR of 4 addresses or more leaves
//!   out its network and broadcast addresses (hosts on the LAN may treat them specially),
//!   an IPv6 one its first (the Subnet-Router anycast address); an explicit range is taken
//!   as written.
//! - **Disabled pools** hand out no new address; their addresses stay with their holders.
//! - **Overlapping pools** are reported (both named); an address in both belongs to the
//!   first by name.
//! - **A full pool** is reported with the Service that got nothing.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub mod object;
pub mod plan;

use crate::addr::{CidrError, Family, IpCidr};
use crate::model::ObjectRef;

/// One block of a pool: every address from `first` to `last` (inclusive) of `family`, as
/// numbers (an IPv4 address in the low 32 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Block {
    pub family: Family,
    pub first: u128,
    pub last: u128,
}

/// Why a block of a pool was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("{0:?} is neither a CIDR nor a range FIRST-LAST")]
    Malformed(String),
    #[error("range {0:?} ends before it starts")]
    Reversed(String),
    #[error("range {0:?} mixes IPv4 and IPv6")]
    MixedFamilies(String),
}

fn number(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn address(family: Family, n: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(n as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

impl Block {
    /// `a.b.c.d/n`, `v6/n`, or `FIRST-LAST` (whitespace around the parts allowed).
    pub fn parse(s: &str) -> Result<Block, BlockError> {
        let t = s.trim();
        if let Some((a, b)) = t.split_once('-') {
            let (a, b) = (a.trim(), b.trim());
            let bad = || BlockError::Malformed(s.to_string());
            let first: IpAddr = a.parse().map_err(|_| bad())?;
            let last: IpAddr = b.parse().map_err(|_| bad())?;
            if Family::of(first) != Family::of(last) {
                return Err(BlockError::MixedFamilies(s.to_string()));
            }
            let (first_n, last_n) = (number(first), number(last));
            if last_n < first_n {
                return Err(BlockError::Reversed(s.to_string()));
            }
            return Ok(Block {
                family: Family::of(first),
                first: first_n,
                last: last_n,
            });
        }
        let cidr: IpCidr = t
            .parse()
            .map_err(|_: CidrError| BlockError::Malformed(s.to_string()))?;
        let (family, base, bits) = match cidr {
            IpCidr::V4(c) => (Family::V4, u128::from(u32::from(c.addr)), 32u32),
            IpCidr::V6(c) => (Family::V6, u128::from(c.addr), 128u32),
        };
        let prefix = u32::from(match cidr {
            IpCidr::V4(c) => c.prefix_len,
            IpCidr::V6(c) => c.prefix_len,
        });
        let host_bits = bits - prefix;
        let span = if host_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        let (mut first, mut last) = (base, base + span);
        // Network and broadcast addresses of an IPv4 CIDR of 4 addresses or more; the
        // Subnet-Router anycast address (the first, RFC 4291 2.6.1) of an IPv6 one.
        if family == Family::V4 && host_bits >= 2 {
            first += 1;
            last -= 1;
        } else if family == Family::V6 && host_bits >= 2 {
            first += 1;
        }
        Ok(Block {
            family,
            first,
            last,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        Family::of(ip) == self.family && (self.first..=self.last).contains(&number(ip))
    }

    /// Number of addresses (saturating at u128::MAX).
    pub fn size(&self) -> u128 {
        (self.last - self.first).saturating_add(1)
    }

    fn overlaps(&self, other: &Block) -> bool {
        self.family == other.family && self.first <= other.last && other.first <= self.last
    }
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}",
            address(self.family, self.first),
            address(self.family, self.last)
        )
    }
}

/// An address pool, as the pool object describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub blocks: Vec<Block>,
    /// Which Services may get addresses from this pool; empty: every Service.
    pub selector: Selector,
    pub disabled: bool,
}

/// A label selector (`matchLabels` and `matchExpressions`), as Kubernetes evaluates it:
/// every term must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    pub match_labels: BTreeMap<String, String>,
    pub expressions: Vec<Expression>,
}

/// One `matchExpressions` term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expression {
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Selector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.expressions.iter().all(|e| match e {
                Expression::In(k, values) => labels.get(k).is_some_and(|v| values.contains(v)),
                // As Kubernetes: a Service without the label is "not in".
                Expression::NotIn(k, values) => labels.get(k).is_none_or(|v| !values.contains(v)),
                Expression::Exists(k) => labels.contains_key(k),
                Expression::DoesNotExist(k) => !labels.contains_key(k),
            })
    }

    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.expressions.is_empty()
    }
}

impl Pool {
    fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector.matches(labels)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.blocks.iter().any(|b| b.contains(ip))
    }

    /// Addresses of `family` in all blocks (saturating).
    pub fn size(&self, family: Family) -> u128 {
        self.blocks
            .iter()
            .filter(|b| b.family == family)
            .fold(0u128, |n, b| n.saturating_add(b.size()))
    }
}

/// A LoadBalancer Service asking for addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub service: ObjectRef,
    pub labels: BTreeMap<String, String>,
    /// The families it asks for, in order (`spec.ipFamilies`).
    pub families: Vec<Family>,
    /// Addresses it asks for by name (`spec.loadBalancerIP`, the annotation).
    pub requested: Vec<IpAddr>,
    /// Addresses it holds already (`status.loadBalancer.ingress`).
    pub current: Vec<IpAddr>,
}

/// Something about the pools or the assignment a person should know.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Problem {
    /// Two pools share addresses; the first by name hands them out.
    Overlap {
        pools: (String, String),
        block: String,
    },
    /// A Service keeps an address no enabled pool that selects it holds any more.
    KeptOutsidePools { service: ObjectRef, address: IpAddr },
    /// A requested address cannot be given.
    RequestRefused {
        service: ObjectRef,
        address: IpAddr,
        why: &'static str,
    },
    /// No enabled pool that selects the Service has a free address of the family.
    NoFreeAddress { service: ObjectRef, family: Family },
    /// Two Services hold the same address; the first by name keeps it.
    HeldTwice { address: IpAddr, loser: ObjectRef },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Overlap { pools, block } => write!(
                f,
                "pools {} and {} overlap ({block}): {} hands those addresses out",
                pools.0, pools.1, pools.0
            ),
            Problem::KeptOutsidePools { service, address } => write!(
                f,
                "{service} keeps {address}, which no enabled pool that selects it holds any more"
            ),
            Problem::RequestRefused {
                service,
                address,
                why,
            } => write!(f, "{service} asks for {address}: {why}"),
            Problem::NoFreeAddress { service, family } => write!(
                f,
                "{service} gets no {family} address: no enabled pool that selects it has a free one"
            ),
            Problem::HeldTwice { address, loser } => {
                write!(f, "{address} is held by two Services; {loser} loses it")
            }
        }
    }
}

/// The addresses each Service gets, in its families' order, and the problems met. Pure:
/// the same pools and requests give the same answer, whatever their order.
pub fn assign(
    pools: &[Pool],
    requests: &[Request],
) -> (BTreeMap<ObjectRef, Vec<IpAddr>>, Vec<Problem>) {
    let mut pools: Vec<&Pool> = pools.iter().collect();
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    let mut requests: Vec<&Request> = requests.iter().collect();
    requests.sort_by(|a, b| a.service.cmp(&b.service));
    let mut problems = overlaps(&pools);
    let mut used: BTreeSet<IpAddr> = BTreeSet::new();
    let mut out: BTreeMap<ObjectRef, Vec<IpAddr>> = BTreeMap::new();

    // Addresses held by a Service that now asks for another one of the family: held
    // (nobody else gets them) until the request is granted, kept if it is refused.
    let mut moving: BTreeMap<(ObjectRef, Family), IpAddr> = BTreeMap::new();
    // 1. What Services hold already stays theirs (first by name on a clash).
    for r in &requests {
        let mut kept = Vec::new();
        for &ip in &r.current {
            let family = Family::of(ip);
            let asks_other =
                r.requested.iter().any(|q| Family::of(*q) == family) && !r.requested.contains(&ip);
            if !r.families.contains(&Family::of(ip))
                || kept
                    .iter()
                    .any(|k: &IpAddr| Family::of(*k) == Family::of(ip))
            {
                continue;
            }
            if !used.insert(ip) {
                problems.push(Problem::HeldTwice {
                    address: ip,
                    loser: r.service.clone(),
                });
                continue;
            }
            if !pools
                .iter()
                .any(|p| !p.disabled && p.selects(&r.labels) && p.contains(ip))
            {
                problems.push(Problem::KeptOutsidePools {
                    service: r.service.clone(),
                    address: ip,
                });
            }
            if asks_other {
                moving.insert((r.service.clone(), family), ip);
            } else {
                kept.push(ip);
            }
        }
        out.insert(r.service.clone(), kept);
    }
    // 2. Requested addresses, then 3. the lowest free one, for each family still missing.
    for r in &requests {
        let have = out.get(&r.service).cloned().unwrap_or_default();
        let mut got = have.clone();
        for &family in &r.families {
            if have.iter().any(|ip| Family::of(*ip) == family) {
                continue;
            }
            let asked: Vec<IpAddr> = r
                .requested
                .iter()
                .copied()
                .filter(|ip| Family::of(*ip) == family)
                .collect();
            let held = moving.get(&(r.service.clone(), family)).copied();
            let picked = if let Some(&ip) = asked.first() {
                let why = if used.contains(&ip) {
                    Some("another Service holds it")
                } else if !pools
                    .iter()
                    .any(|p| !p.disabled && p.selects(&r.labels) && p.contains(ip))
                {
                    Some("no enabled pool that selects this Service holds it")
                } else {
                    None
                };
                match why {
                    Some(why) => {
                        problems.push(Problem::RequestRefused {
                            service: r.service.clone(),
                            address: ip,
                            why,
                        });
                        // Asking for another address never costs the one it has.
                        held
                    }
                    None => {
                        if let Some(old) = held {
                            used.remove(&old);
                        }
                        Some(ip)
                    }
                }
            } else {
                let free = pools
                    .iter()
                    .filter(|p| !p.disabled && p.selects(&r.labels))
                    .find_map(|p| lowest_free(p, family, &used));
                if free.is_none() {
                    problems.push(Problem::NoFreeAddress {
                        service: r.service.clone(),
                        family,
                    });
                }
                free
            };
            if let Some(ip) = picked {
                used.insert(ip);
                got.push(ip);
            }
        }
        // In the Service's family order.
        got.sort_by_key(|ip| r.families.iter().position(|f| *f == Family::of(*ip)));
        out.insert(r.service.clone(), got);
    }
    problems.sort();
    problems.dedup();
    (out, problems)
}

/// The lowest address of `family` in `pool` that is not in `used`: at most `used.len() + 1`
/// candidates per block are looked at, however large the block.
fn lowest_free(pool: &Pool, family: Family, used: &BTreeSet<IpAddr>) -> Option<IpAddr> {
    for b in pool.blocks.iter().filter(|b| b.family == family) {
        let mut n = b.first;
        loop {
            let ip = address(family, n);
            if !used.contains(&ip) {
                return Some(ip);
            }
            if n == b.last {
                break;
            }
            n += 1;
        }
    }
    None
}

/// Every pair of pools (in name order) sharing addresses.
fn overlaps(pools: &[&Pool]) -> Vec<Problem> {
    let mut out = Vec::new();
    for (i, a) in pools.iter().enumerate() {
        for b in &pools[i + 1..] {
            for x in &a.blocks {
                for y in &b.blocks {
                    if x.overlaps(y) {
                        let shared = Block {
                            family: x.family,
                            first: x.first.max(y.first),
                            last: x.last.min(y.last),
                        };
                        out.push(Problem::Overlap {
                            pools: (a.name.clone(), b.name.clone()),
                            block: shared.to_string(),
                        });
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn pool(name: &str, blocks: &[&str]) -> Pool {
        Pool {
            name: name.into(),
            blocks: blocks.iter().map(|b| Block::parse(b).unwrap()).collect(),
            selector: Selector::default(),
            disabled: false,
        }
    }

    fn req(name: &str, families: &[Family]) -> Request {
        Request {
            service: ObjectRef::new("default", name),
            labels: BTreeMap::new(),
            families: families.to_vec(),
            requested: Vec::new(),
            current: Vec::new(),
        }
    }

    fn got(out: &BTreeMap<ObjectRef, Vec<IpAddr>>, name: &str) -> Vec<IpAddr> {
        out[&ObjectRef::new("default", name)].clone()
    }

    #[test]
    fn blocks_parse_as_cidrs_and_ranges_and_refuse_nonsense() {
        let b = Block::parse("10.0.10.0/30").unwrap();
        assert_eq!(
            b.to_string(),
            "10.0.10.1-10.0.10.2",
            "network and broadcast left out"
        );
        assert_eq!(Block::parse("10.0.10.7/32").unwrap().size(), 1);
        assert_eq!(Block::parse("10.0.10.6/31").unwrap().size(), 2);
        let r = Block::parse(" 10.0.10.5 - 10.0.10.9 ").unwrap();
        assert_eq!((r.size(), r.contains(ip("10.0.10.9"))), (5, true));
        let v6 = Block::parse("fd00:10::/120").unwrap();
        assert_eq!(
            v6.size(),
            255,
            "IPv6 leaves out its Subnet-Router anycast address only"
        );
        assert!(!v6.contains(ip("fd00:10::")));
        assert!(v6.contains(ip("fd00:10::ff")) && !v6.contains(ip("10.0.10.5")));
        assert_eq!(Block::parse("::/0").unwrap().size(), u128::MAX);
        assert_eq!(Block::parse("fd00::1/128").unwrap().size(), 1);
        assert!(matches!(
            Block::parse("10.0.10.9-10.0.10.5"),
            Err(BlockError::Reversed(_))
        ));
        assert!(matches!(
            Block::parse("10.0.0.1-fd00::1"),
            Err(BlockError::MixedFamilies(_))
        ));
        for bad in ["", "pool", "10.0.0.0/33", "10.0.0.1-", "1.2.3"] {
            assert!(
                matches!(Block::parse(bad), Err(BlockError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn services_get_the_lowest_free_address_of_each_family_they_ask_for() {
        let pools = [pool("a", &["10.0.10.0/30", "fd00:10::/126"])];
        let requests = [
            req("one", &[Family::V4]),
            req("two", &[Family::V6, Family::V4]),
            req("three", &[Family::V4]),
        ];
        let (out, problems) = assign(&pools, &requests);
        assert_eq!(got(&out, "one"), [ip("10.0.10.1")]);
        // Name order decides: "three" before "two".
        assert_eq!(got(&out, "three"), [ip("10.0.10.2")]);
        assert_eq!(
            got(&out, "two"),
            [ip("fd00:10::1")],
            "the IPv4 block is full"
        );
        assert_eq!(
            problems,
            [Problem::NoFreeAddress {
                service: ObjectRef::new("default", "two"),
                family: Family::V4
            }]
        );
        // The same answer whatever the order of the input.
        let mut reversed = requests.to_vec();
        reversed.reverse();
        assert_eq!(assign(&pools, &reversed).0, out);
    }

    #[test]
    fn a_held_address_is_kept_even_when_its_pool_goes_away() {
        let mut r = req("web", &[Family::V4]);
        r.current = vec![ip("10.0.10.2")];
        let (out, problems) = assign(&[pool("a", &["10.0.10.0/24"])], std::slice::from_ref(&r));
        assert_eq!(
            (got(&out, "web"), problems.len()),
            (vec![ip("10.0.10.2")], 0)
        );
        // Pool disabled, then gone: the Service keeps its address, and it is reported.
        let mut disabled = pool("a", &["10.0.10.0/24"]);
        disabled.disabled = true;
        for pools in [vec![disabled], vec![]] {
            let (out, problems) = assign(&pools, std::slice::from_ref(&r));
            assert_eq!(got(&out, "web"), [ip("10.0.10.2")]);
            assert_eq!(
                problems,
                [Problem::KeptOutsidePools {
                    service: r.service.clone(),
                    address: ip("10.0.10.2")
                }]
            );
        }
        // A new Service never gets an address someone holds.
        let (out, _) = assign(
            &[pool("a", &["10.0.10.2/32"])],
            &[r.clone(), req("new", &[Family::V4])],
        );
        assert!(got(&out, "new").is_empty());
    }

    #[test]
    fn requests_selectors_disabled_pools_and_overlaps() {
        let mut gold = pool("gold", &["10.0.20.0/24"]);
        gold.selector
            .match_labels
            .insert("tier".into(), "gold".into());
        let mut off = pool("off", &["10.0.30.0/24"]);
        off.disabled = true;
        let general = pool("general", &["10.0.10.0/24", "10.0.20.128/25"]);
        let pools = [gold, off, general];
        let mut vip = req("vip", &[Family::V4]);
        vip.labels.insert("tier".into(), "gold".into());
        vip.requested = vec![ip("10.0.20.50")];
        let mut plain = req("plain", &[Family::V4]);
        plain.requested = vec![ip("10.0.20.60")];
        let mut cold = req("cold", &[Family::V4]);
        cold.requested = vec![ip("10.0.30.5")];
        let (out, problems) = assign(&pools, &[vip, plain, cold]);
        assert_eq!(got(&out, "vip"), [ip("10.0.20.50")]);
        assert!(got(&out, "plain").is_empty(), "gold does not select it");
        assert!(
            got(&out, "cold").is_empty(),
            "a disabled pool hands out nothing"
        );
        assert!(problems.contains(&Problem::RequestRefused {
            service: ObjectRef::new("default", "plain"),
            address: ip("10.0.20.60"),
            why: "no enabled pool that selects this Service holds it",
        }));
        assert!(problems.contains(&Problem::Overlap {
            pools: ("general".into(), "gold".into()),
            block: "10.0.20.129-10.0.20.254".into(),
        }));
    }

    #[test]
    fn two_services_holding_one_address_keep_it_for_the_first() {
        let mut a = req("a", &[Family::V4]);
        a.current = vec![ip("10.0.10.5")];
        let mut b = req("b", &[Family::V4]);
        b.current = vec![ip("10.0.10.5")];
        let (out, problems) = assign(&[pool("p", &["10.0.10.0/24"])], &[b, a]);
        assert_eq!(got(&out, "a"), [ip("10.0.10.5")]);
        assert_eq!(
            got(&out, "b"),
            [ip("10.0.10.1")],
            "the loser gets a free one"
        );
        assert!(problems.contains(&Problem::HeldTwice {
            address: ip("10.0.10.5"),
            loser: ObjectRef::new("default", "b"),
        }));
    }

    #[test]
    fn a_service_asking_for_another_address_moves_only_when_it_can_have_it() {
        let pools = [pool("p", &["10.0.10.0/24"])];
        let mut web = req("web", &[Family::V4]);
        web.current = vec![ip("10.0.10.1")];
        web.requested = vec![ip("10.0.10.9")];
        let (out, problems) = assign(&pools, std::slice::from_ref(&web));
        assert_eq!(
            (got(&out, "web"), problems.len()),
            (vec![ip("10.0.10.9")], 0)
        );
        // Asked for one outside every pool: it keeps the one it has.
        web.requested = vec![ip("10.9.9.9")];
        let (out, problems) = assign(&pools, std::slice::from_ref(&web));
        assert_eq!(got(&out, "web"), [ip("10.0.10.1")]);
        assert_eq!(problems.len(), 1);
        // Its old address is nobody else's meanwhile.
        let other = req("a-other", &[Family::V4]);
        web.requested = vec![ip("10.0.10.9")];
        let mut holder = req("a-holder", &[Family::V4]);
        holder.current = vec![ip("10.0.10.9")];
        let (out, _) = assign(&pools, &[web, other, holder]);
        assert_eq!(
            got(&out, "web"),
            [ip("10.0.10.1")],
            "10.0.10.9 is taken: keeps its own"
        );
        assert_eq!(got(&out, "a-other"), [ip("10.0.10.2")]);
    }

    #[test]
    fn selectors_follow_kubernetes_rules() {
        let labels: BTreeMap<String, String> = [("tier".to_string(), "gold".to_string())].into();
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let sel = |e: Expression| Selector {
            match_labels: BTreeMap::new(),
            expressions: vec![e],
        };
        assert!(sel(Expression::In("tier".into(), set(&["gold", "x"]))).matches(&labels));
        assert!(!sel(Expression::In("zone".into(), set(&["a"]))).matches(&labels));
        assert!(sel(Expression::NotIn("zone".into(), set(&["a"]))).matches(&labels));
        assert!(!sel(Expression::NotIn("tier".into(), set(&["gold"]))).matches(&labels));
        assert!(sel(Expression::Exists("tier".into())).matches(&labels));
        assert!(sel(Expression::DoesNotExist("zone".into())).matches(&labels));
        assert!(Selector::default().matches(&BTreeMap::new()));
    }
}
