//! The detect-local maps (kube-proxy's detect-local modes, see svc-ebpf/src/local.rs):
//! SVC4_POD_CIDRS (detect-local by address: the pod CIDRs) and SVC_POD_IFACES (by
//! interface: the ifindexes pod traffic enters through). Each is set as a whole: what is
//! new is written first, then what is gone is removed, so an entry that stays is never
//! missing in between.
use std::collections::BTreeSet;

use aya::maps::lpm_trie::Key as LpmKey;
use svc_common::map_names;

use super::{
    Maps,
    layout::{pod_cidr_key, pod_cidr_of},
    store::{StoreError, store_err},
};
use crate::addr::Ipv4Cidr;

impl Maps {
    /// The pod CIDRs the programs test sources against, sorted.
    pub fn read_pod_cidrs(&self) -> Result<Vec<Ipv4Cidr>, StoreError> {
        let mut out = BTreeSet::new();
        for key in self.pod_cidrs.keys() {
            let key = key.map_err(store_err(map_names::SVC4_POD_CIDRS))?;
            if let Some(c) = pod_cidr_of((key.prefix_len(), key.data())) {
                out.insert(c);
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Makes SVC4_POD_CIDRS hold exactly `cidrs`. Returns whether anything changed.
    pub fn set_pod_cidrs(&mut self, cidrs: &[Ipv4Cidr]) -> Result<bool, StoreError> {
        let want: BTreeSet<(u32, u32)> = cidrs.iter().map(pod_cidr_key).collect();
        let mut have = BTreeSet::new();
        for key in self.pod_cidrs.keys() {
            let key = key.map_err(store_err(map_names::SVC4_POD_CIDRS))?;
            have.insert((key.prefix_len(), key.data()));
        }
        for (len, addr) in want.difference(&have) {
            self.pod_cidrs
                .insert(&LpmKey::new(*len, *addr), 1, 0)
                .map_err(store_err(map_names::SVC4_POD_CIDRS))?;
        }
        for (len, addr) in have.difference(&want) {
            self.pod_cidrs
                .remove(&LpmKey::new(*len, *addr))
                .map_err(store_err(map_names::SVC4_POD_CIDRS))?;
        }
        Ok(want != have)
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
