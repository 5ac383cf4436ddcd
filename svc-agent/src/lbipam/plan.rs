//! From the cluster model to what the pools mean for it: which Services ask for addresses,
//! what each gets ([`super::assign`]), which `status.loadBalancer` writes that takes, how
//! full each pool is, and which addresses a node may announce on the LAN. Pure: the agent
//! runs it on every change of Services or pools, in both sources, on every node (only the
//! elected one writes).
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
};

use serde::{Deserialize, Serialize};

use super::{Pool, Problem, Request, assign};
use crate::{
    addr::Family,
    model::{Cluster, IpMode, LoadBalancerIngress, ObjectRef, ServiceKind},
};

/// A Service's `status.loadBalancer.ingress` to write: exactly these addresses (empty:
/// release them all).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusWrite {
    pub service: ObjectRef,
    pub ips: Vec<IpAddr>,
}

/// How full a pool is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolUsage {
    pub name: String,
    pub disabled: bool,
    /// Its blocks, as `FIRST-LAST`.
    pub blocks: Vec<String>,
    /// Addresses per family (saturating: an IPv6 /64 is "18446744073709551616").
    pub size_v4: u128,
    pub size_v6: u128,
    /// Addresses of the pool Services hold.
    pub used: u64,
}

/// One Service the pools serve.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub service: String,
    /// What it gets (in its families' order).
    pub ips: Vec<IpAddr>,
    /// The pool each address comes from ("" for an address no pool holds, kept).
    pub pools: Vec<String>,
    /// What its status holds now.
    pub status: Vec<IpAddr>,
}

/// The pools' answer for one view of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub assignments: Vec<Assignment>,
    pub problems: Vec<Problem>,
    /// Status writes that bring the cluster to the assignment: new and moved addresses, and
    /// addresses of a Service that is no longer of type LoadBalancer (released).
    pub writes: Vec<StatusWrite>,
    pub pools: Vec<PoolUsage>,
}

fn status_ips(ingress: &[LoadBalancerIngress]) -> Vec<IpAddr> {
    ingress.iter().filter_map(|i| i.ip).collect()
}

/// The LoadBalancer Services the pools serve (`classless`: also those without a class).
pub fn requests(cluster: &Cluster, classless: bool) -> Vec<Request> {
    cluster
        .services
        .values()
        .filter(|s| s.kind == ServiceKind::LoadBalancer && s.lb_request.is_ours(classless))
        .map(|s| Request {
            service: s.id.clone(),
            labels: s.lb_request.labels.clone(),
            families: s.lb_request.families.clone(),
            requested: s.lb_request.requested.clone(),
            current: status_ips(&s.load_balancer_ingress),
        })
        .collect()
}

/// The pool (first by name) that holds `ip`.
fn pool_of<'a>(pools: &'a [&Pool], ip: IpAddr) -> Option<&'a Pool> {
    pools.iter().copied().find(|p| p.contains(ip))
}

pub fn plan(cluster: &Cluster, classless: bool) -> Plan {
    let mut pools: Vec<&Pool> = cluster.lb_pools.values().collect();
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    if pools.is_empty() {
        // No pool: nothing is given, nothing is released (addresses other controllers
        // wrote stay theirs).
        return Plan::default();
    }
    let owned: Vec<Pool> = pools.iter().map(|p| (*p).clone()).collect();
    let requests = requests(cluster, classless);
    let (assigned, problems) = assign(&owned, &requests);
    let mut plan = Plan {
        problems,
        ..Plan::default()
    };
    let mut used: BTreeMap<String, u64> = BTreeMap::new();
    for r in &requests {
        let ips = assigned.get(&r.service).cloned().unwrap_or_default();
        if ips != r.current {
            plan.writes.push(StatusWrite {
                service: r.service.clone(),
                ips: ips.clone(),
            });
        }
        let names: Vec<String> = ips
            .iter()
            .map(|ip| pool_of(&pools, *ip).map_or(String::new(), |p| p.name.clone()))
            .collect();
        for n in names.iter().filter(|n| !n.is_empty()) {
            *used.entry(n.clone()).or_default() += 1;
        }
        plan.assignments.push(Assignment {
            service: r.service.to_string(),
            ips,
            pools: names,
            status: r.current.clone(),
        });
    }
    // Addresses of our pools left on a Service that stopped being a LoadBalancer.
    for s in cluster.services.values() {
        if s.kind == ServiceKind::LoadBalancer {
            continue;
        }
        let held = status_ips(&s.load_balancer_ingress);
        if held.iter().any(|ip| pool_of(&pools, *ip).is_some()) {
            plan.writes.push(StatusWrite {
                service: s.id.clone(),
                ips: Vec::new(),
            });
        }
    }
    plan.pools = pools
        .iter()
        .map(|p| PoolUsage {
            name: p.name.clone(),
            disabled: p.disabled,
            blocks: p.blocks.iter().map(|b| b.to_string()).collect(),
            size_v4: p.size(Family::V4),
            size_v6: p.size(Family::V6),
            used: used.get(&p.name).copied().unwrap_or(0),
        })
        .collect();
    plan
}

/// Manifest mode: there is no API to write status to, so the addresses the pools give are
/// added to the Services' `load_balancer_ingress` in the model (the datapath serves them
/// as if a controller had written them). Returns how many addresses were added.
pub fn apply_to_model(cluster: &mut Cluster, plan: &Plan) -> usize {
    let mut added = 0;
    for w in &plan.writes {
        let Some(svc) = cluster.services.get_mut(&w.service) else {
            continue;
        };
        if svc.kind != ServiceKind::LoadBalancer {
            // Nothing to release in a model: the manifest's own status stays as written.
            continue;
        }
        svc.load_balancer_ingress.retain(|i| i.ip.is_none());
        for ip in &w.ips {
            svc.load_balancer_ingress.push(LoadBalancerIngress {
                ip: Some(*ip),
                hostname: None,
                ip_mode: IpMode::Vip,
            });
            added += 1;
        }
    }
    added
}

/// What the agent serves at `/loadbalancers` and `svcctl lb` shows: the pools, the
/// assignments, and the L2 announcements, as this agent sees them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbReport {
    /// `manifests` (assignments applied to the model here) or `kubernetes` (written into
    /// the Services' status by the elected agent).
    pub mode: String,
    /// Class-less LoadBalancer Services get addresses too.
    pub classless: bool,
    /// Kubernetes mode: this agent holds the IPAM Lease (writes status).
    pub writer: Option<bool>,
    /// Status writes made and failed by this agent.
    pub status_writes: u64,
    pub status_write_failures: u64,
    pub pools: Vec<PoolUsage>,
    pub assignments: Vec<Assignment>,
    pub problems: Vec<String>,
    /// L2 announcements; `None` when off (`l2_off` says why).
    pub l2: Option<L2Report>,
    pub l2_off: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct L2Report {
    pub node: String,
    pub devices: Vec<String>,
    pub announcements: Vec<Announcement>,
    /// ARP replies and gratuitous ARPs this node sent.
    pub arp_replies: u64,
    pub gratuitous_arps: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    pub service: String,
    pub ips: Vec<Ipv4Addr>,
    /// This node may announce them (eTP Local: it has a ready endpoint).
    pub eligible: bool,
    /// This node announces them now.
    pub here: bool,
    /// Who holds the Service's Lease, as last read (any node).
    pub holder: Option<String>,
}

/// Manifest mode's memory of what the pools gave (the status a controller would have
/// written): per Service, its addresses. Put back into the model before each plan, so a
/// pool that is removed, disabled or broken takes no address from a Service (the plan
/// keeps held addresses, as it keeps a status). Lives as long as the agent: a restarted
/// agent assigns again, deterministically, from the files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Held(BTreeMap<ObjectRef, Vec<IpAddr>>);

impl Held {
    /// Adds the held addresses to the LoadBalancer Services (of the pools' class) whose
    /// model has no address of its own; forgets Services that are gone or no longer ask.
    pub fn restore(&mut self, cluster: &mut Cluster, classless: bool) {
        self.0.retain(|id, ips| {
            let Some(svc) = cluster.services.get_mut(id) else {
                return false;
            };
            if svc.kind != ServiceKind::LoadBalancer || !svc.lb_request.is_ours(classless) {
                return false;
            }
            if svc.load_balancer_ingress.iter().all(|i| i.ip.is_none()) {
                svc.load_balancer_ingress
                    .extend(ips.iter().map(|ip| LoadBalancerIngress {
                        ip: Some(*ip),
                        hostname: None,
                        ip_mode: IpMode::Vip,
                    }));
            }
            true
        });
    }

    /// Remembers what the plan gave (a plan without pools gives nothing: what is held
    /// stays held).
    pub fn remember(&mut self, plan: &Plan) {
        for a in &plan.assignments {
            if a.ips.is_empty() {
                self.0.remove(&parse_ref(&a.service));
            } else {
                self.0.insert(parse_ref(&a.service), a.ips.clone());
            }
        }
    }
}

/// `namespace/name` back to a reference.
fn parse_ref(s: &str) -> ObjectRef {
    match s.split_once('/') {
        Some((ns, name)) => ObjectRef::new(ns, name),
        None => ObjectRef::new("", s),
    }
}

/// An address this node may answer ARP for, and whether it is eligible to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceTarget {
    pub service: ObjectRef,
    pub ips: Vec<Ipv4Addr>,
    /// This node may announce them: any node for externalTrafficPolicy Cluster, only a
    /// node with a ready endpoint of the Service for Local (announcing from a node without
    /// one would draw traffic it drops).
    pub eligible: bool,
}

/// The Services whose LoadBalancer addresses are announced on the LAN: type LoadBalancer,
/// served by this dataplane, with IPv4 `status.loadBalancer.ingress` addresses (ipMode
/// VIP) that one of the pools holds. Only pool addresses: announcing never claims an
/// address a cloud or another controller manages. IPv4 only (ARP); see [`crate::l2`].
pub fn announce_targets(cluster: &Cluster, node_name: Option<&str>) -> Vec<AnnounceTarget> {
    let pools: Vec<&Pool> = cluster.lb_pools.values().collect();
    let mut out = Vec::new();
    for s in cluster.services.values() {
        if s.kind != ServiceKind::LoadBalancer || !s.is_proxied() {
            continue;
        }
        let ips: Vec<Ipv4Addr> = s
            .load_balancer_ingress
            .iter()
            .filter(|i| i.ip_mode == IpMode::Vip)
            .filter_map(|i| match i.ip {
                Some(IpAddr::V4(v4)) if pool_of(&pools, IpAddr::V4(v4)).is_some() => Some(v4),
                _ => None,
            })
            .collect();
        if ips.is_empty() {
            continue;
        }
        let eligible = !s.external_traffic_policy.is_local()
            || node_name.is_some_and(|node| {
                cluster.endpoints.get(&s.id).is_some_and(|groups| {
                    groups.iter().any(|g| {
                        g.endpoints
                            .iter()
                            .any(|e| e.ready && e.node_name.as_deref() == Some(node))
                    })
                })
            });
        out.push(AnnounceTarget {
            service: s.id.clone(),
            ips,
            eligible,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest;

    const YAML: &str = "
apiVersion: svc-ebpf.dev/v1alpha1
kind: LoadBalancerIPPool
metadata: {name: lan}
spec: {blocks: [{start: 192.0.2.200, stop: 192.0.2.202}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.10
  externalTrafficPolicy: Local
  ports: [{port: 80, nodePort: 30080}]
---
apiVersion: v1
kind: Service
metadata: {name: cloud, namespace: default}
spec:
  type: LoadBalancer
  loadBalancerClass: example.com/cloud
  clusterIP: 10.96.0.11
  ports: [{port: 80, nodePort: 30081}]
status: {loadBalancer: {ingress: [{ip: 203.0.113.5}]}}
---
apiVersion: v1
kind: Service
metadata: {name: was-lb, namespace: default}
spec:
  type: ClusterIP
  clusterIP: 10.96.0.12
  ports: [{port: 80}]
status: {loadBalancer: {ingress: [{ip: 192.0.2.202}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.244.2.11], conditions: {ready: true}, nodeName: node2}]
";

    #[test]
    fn a_plan_gives_writes_releases_and_counts_pool_use() {
        let mut cluster = manifest::load_str(YAML, "t.yaml").cluster;
        let p = plan(&cluster, true);
        let web = ObjectRef::new("default", "web");
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            p.writes,
            [
                StatusWrite {
                    service: web.clone(),
                    ips: vec![ip("192.0.2.200")]
                },
                StatusWrite {
                    service: ObjectRef::new("default", "was-lb"),
                    ips: vec![]
                },
            ],
            "another class is left alone; a pool address on a non-LoadBalancer is released"
        );
        assert_eq!(p.pools[0].size_v4, 3);
        assert_eq!(p.pools[0].used, 1);
        assert_eq!(p.assignments.len(), 1);
        assert!(
            plan(&cluster, false).writes.len() == 1,
            "class-less not served"
        );
        // Manifest mode: the model serves it.
        assert_eq!(apply_to_model(&mut cluster, &p), 1);
        assert_eq!(
            cluster.services[&web].load_balancer_ingress[0].ip,
            Some(ip("192.0.2.200"))
        );
        // Once there, nothing more to write for it.
        assert_eq!(plan(&cluster, true).writes.len(), 1);
        // Announced: web only (the cloud address is no pool's), eligible only on node2
        // (externalTrafficPolicy Local, its endpoint is there).
        let t = announce_targets(&cluster, Some("node1"));
        assert_eq!(t.len(), 1);
        assert_eq!(
            (t[0].ips.clone(), t[0].eligible),
            (vec!["192.0.2.200".parse().unwrap()], false)
        );
        assert!(announce_targets(&cluster, Some("node2"))[0].eligible);
    }

    #[test]
    fn no_pool_means_no_write() {
        let cluster = manifest::load_str(
            &YAML.replace("kind: LoadBalancerIPPool", "kind: Other"),
            "t.yaml",
        )
        .cluster;
        assert_eq!(plan(&cluster, true), Plan::default());
    }

    #[test]
    fn manifest_mode_holds_what_the_pools_gave() {
        let web = ObjectRef::new("default", "web");
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut held = Held::default();
        let mut cluster = manifest::load_str(YAML, "t.yaml").cluster;
        held.restore(&mut cluster, true);
        let p = plan(&cluster, true);
        apply_to_model(&mut cluster, &p);
        held.remember(&p);
        // The pool goes: the next read's model has no pool, the address stays.
        let mut next = manifest::load_str(
            &YAML.replace("kind: LoadBalancerIPPool", "kind: SomethingElse"),
            "t.yaml",
        )
        .cluster;
        held.restore(&mut next, true);
        let p = plan(&next, true);
        apply_to_model(&mut next, &p);
        held.remember(&p);
        assert_eq!(
            next.services[&web].load_balancer_ingress[0].ip,
            Some(ip("192.0.2.200"))
        );
        // The Service stops asking (another class): forgotten.
        let mut other = manifest::load_str(
            &YAML.replace(
                "  externalTrafficPolicy: Local",
                "  loadBalancerClass: example.com/x",
            ),
            "t.yaml",
        )
        .cluster;
        held.restore(&mut other, true);
        assert!(other.services[&web].load_balancer_ingress.is_empty());
        assert_eq!(held, Held::default());
    }
}
