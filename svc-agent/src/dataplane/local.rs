//! The detect-local maps (kube-proxy's detect-local modes, see svc-ebpf/src/local.rs):
//! SVC4_POD_CIDRS and SVC6_POD_CIDRS (detect-local by address: the pod CIDRs of each family) and SVC_POD_IFACES (by
//! interface: the ifindexes pod traffic enters through). Each is set as a whole: what is
//! new is written first, then what is gone is removed, so an entry that stays is never
//! missing in between.
use std::collections::BTreeSet;

use aya::maps::{LpmTrie, MapData, lpm_trie::Key as LpmKey};
use svc_common::map_names;

use super::{
    Maps,
    layout::{pod_cidr_key, pod_cidr_of, pod_cidr6_key, pod_cidr6_of},
    store::{StoreError, store_err},
};
use crate::addr::IpCidr;

/// Makes an LPM trie of 1s hold exactly the keys `want`. Returns whether anything changed.
fn set_keys<K: aya::Pod + Ord>(
    map: &mut LpmTrie<MapData, K, u8>,
    name: &'static str,
    want: &BTreeSet<(u32, K)>,
) -> Result<bool, StoreError> {
    let mut have = BTreeSet::new();
    for key in map.keys() {
        let key = key.map_err(store_err(name))?;
        have.insert((key.prefix_len(), key.data()));
    }
    for (len, addr) in want.difference(&have) {
        map.insert(&LpmKey::new(*len, *addr), 1, 0)
            .map_err(store_err(name))?;
    }
    for (len, addr) in have.difference(want) {
        map.remove(&LpmKey::new(*len, *addr))
            .map_err(store_err(name))?;
    }
    Ok(*want != have)
}

impl Maps {
    /// The pod CIDRs the programs test sources against (SVC4_POD_CIDRS, then
    /// SVC6_POD_CIDRS), sorted.
    pub fn read_pod_cidrs(&self) -> Result<Vec<IpCidr>, StoreError> {
        let mut out = BTreeSet::new();
        for key in self.pod_cidrs.keys() {
            let key = key.map_err(store_err(map_names::SVC4_POD_CIDRS))?;
            if let Some(c) = pod_cidr_of((key.prefix_len(), key.data())) {
                out.insert(IpCidr::V4(c));
            }
        }
        for key in self.pod_cidrs6.keys() {
            let key = key.map_err(store_err(map_names::SVC6_POD_CIDRS))?;
            if let Some(c) = pod_cidr6_of((key.prefix_len(), key.data())) {
                out.insert(IpCidr::V6(c));
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Makes SVC4_POD_CIDRS hold exactly the IPv4 `cidrs` and SVC6_POD_CIDRS the IPv6
    /// ones. Returns whether anything changed.
    pub fn set_pod_cidrs(&mut self, cidrs: &[IpCidr]) -> Result<bool, StoreError> {
        let want4 = cidrs
            .iter()
            .filter_map(|c| match c {
                IpCidr::V4(c) => Some(pod_cidr_key(c)),
                IpCidr::V6(_) => None,
            })
            .collect();
        let want6 = cidrs
            .iter()
            .filter_map(|c| match c {
                IpCidr::V6(c) => Some(pod_cidr6_key(c)),
                IpCidr::V4(_) => None,
            })
            .collect();
        let changed4 = set_keys(&mut self.pod_cidrs, map_names::SVC4_POD_CIDRS, &want4)?;
        let changed6 = set_keys(&mut self.pod_cidrs6, map_names::SVC6_POD_CIDRS, &want6)?;
        Ok(changed4 || changed6)
    }

    /// The interfaces (ifindexes) the programs take pod traffic from.
    pub fn read_pod_ifaces(&self) -> Result<BTreeSet<u32>, StoreError> {
        self.pod_ifaces
            .keys()
            .map(|k| k.map_err(store_err(map_names::SVC_POD_IFACES)))
            .collect()
    }

    /// Makes SVC_POD_IFACES hold exactly `ifindexes`. Returns whether anything changed.
    pub fn set_pod_ifaces(&mut self, ifindexes: &BTreeSet<u32>) -> Result<bool, StoreError> {
        let have = self.read_pod_ifaces()?;
        for i in ifindexes.difference(&have) {
            self.pod_ifaces
                .insert(i, 1, 0)
                .map_err(store_err(map_names::SVC_POD_IFACES))?;
        }
        for i in have.difference(ifindexes) {
            self.pod_ifaces
                .remove(i)
                .map_err(store_err(map_names::SVC_POD_IFACES))?;
        }
        Ok(*ifindexes != have)
    }
}
