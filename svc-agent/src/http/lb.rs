//! `/loadbalancers` on the metrics address: what the agent knows of LoadBalancer pools,
//! assignments and L2 announcements ([`LbReport`]), as JSON, for `svcctl lb`. kube-proxy
//! serves its own state (`/configz`, `/proxyMode`) on its metrics address too.
use std::{collections::BTreeMap, sync::Mutex};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

use crate::{l2::announcer::LEASE_PREFIX, lbipam::plan::LbReport};

/// The report, shared with the HTTP route; Lease holders are read when it is asked for.
#[derive(Default)]
pub struct LbStatus {
    report: Mutex<LbReport>,
    leases: Mutex<Option<Api<Lease>>>,
}

impl LbStatus {
    pub fn set(&self, report: LbReport) {
        *self.report.lock().unwrap_or_else(|p| p.into_inner()) = report;
    }

    /// Where the announcement Leases are (L2 announcements on).
    pub fn set_leases(&self, api: Api<Lease>) {
        *self.leases.lock().unwrap_or_else(|p| p.into_inner()) = Some(api);
    }

    /// The report, with who holds each announcement Lease read from the API now (only
    /// when asked: listing Leases on every node on a timer would load the API server for
    /// nothing).
    pub async fn snapshot(&self) -> LbReport {
        let mut report = self
            .report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let api = self
            .leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let (Some(api), Some(l2)) = (api, report.l2.as_mut()) {
            let holders: BTreeMap<String, String> = match api.list(&Default::default()).await {
                Ok(list) => list
                    .items
                    .into_iter()
                    .filter_map(|l| {
                        let name = l.metadata.name?;
                        let holder = l.spec?.holder_identity?;
                        name.starts_with(LEASE_PREFIX).then_some((name, holder))
                    })
                    .collect(),
                Err(_) => BTreeMap::new(),
            };
            for a in &mut l2.announcements {
                let service: Vec<&str> = a.service.splitn(2, '/').collect();
                if let [ns, name] = service[..] {
                    a.holder = holders.get(&format!("{LEASE_PREFIX}{ns}.{name}")).cloned();
                }
            }
        }
        report
    }
}
