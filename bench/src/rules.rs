//! kube-proxy's rule layouts as text, the same Services as manifests, and loading them.
//!
//! The two baselines of `cargo xtask bench` are kube-proxy's iptables and nftables modes. This
//! module writes, for a list of [`BenchService`]s (one TCP service port each, ClusterIP only),
//! the rules kube-proxy would program for them (`pkg/proxy/iptables/proxier.go` and
//! `pkg/proxy/nftables/proxier.go`), so the rule walk a new connection pays is the one a real
//! node pays; and the same Services as Kubernetes YAML ([`manifests`]) so svc-agent serves the
//! identical set in manifest mode.
//!
//! # Names
//!
//! Chain names follow kube-proxy's real scheme, checked in the tests against chain names from
//! kube-proxy's own test tables:
//!
//! - iptables: `KUBE-SVC-` + the first 16 characters of base32(sha256(servicePortName +
//!   protocol)), `KUBE-SEP-` + the same of base32(sha256(servicePortName + protocol +
//!   "ip:port")), where servicePortName is `namespace/name:portName` and protocol is `tcp`;
//! - nftables: `service-` + `HASH-namespace/name/tcp/portName` and `endpoint-` +
//!   `HASH-namespace/name/tcp/portName__ip/port`, HASH being the first 8 characters of
//!   base32(sha256(the rest)).
//!
//! Every service port here is named [`PORT_NAME`] (`http`), as in the manifests, so the names
//! are the ones kube-proxy would compute for those manifests.
//!
//! # What is laid out, and what is left out
//!
//! The `nat` side of a ClusterIP Service with endpoints, with kube-proxy's options
//! `--cluster-cidr 10.244.0.0/16` (so off-cluster sources to a ClusterIP are masqueraded, one
//! extra rule per service chain, [`CLUSTER_CIDR`]) and the default masquerade mark 0x4000.
//! Left out: the `filter` side (iptables KUBE-FORWARD / KUBE-PROXY-FIREWALL / KUBE-SERVICES
//! REJECTs; nftables' filter-* base chains with their `ct state new` checks), NodePorts,
//! externalIPs, LoadBalancer IPs, session affinity. kube-proxy adds those per packet or per new
//! connection on a real node, so leaving them out makes the baselines, if anything, a little
//! faster than the real thing. A Service without endpoints gets no nat rules (kube-proxy only
//! REJECTs it in the filter table), so it is skipped.
//!
//! Services are written in the order given: [`services`] puts the measured one last, the worst
//! case for iptables' linear walk of KUBE-SERVICES (kube-proxy's own order is a Go map's, i.e.
//! random). For nftables the position does not matter (one verdict-map lookup).
//!
//! ## iptables (`iptables-restore` input, the whole `nat` table)
//!
//! For `default/measured` at 10.96.0.10:80 with endpoints 10.244.1.11:8080 and
//! 10.244.1.12:8080 (as [`iptables_layout`] writes it; a unit test checks this text):
//!
//! ```text
//! *nat
//! :PREROUTING ACCEPT [0:0]
//! :INPUT ACCEPT [0:0]
//! :OUTPUT ACCEPT [0:0]
//! :POSTROUTING ACCEPT [0:0]
//! :KUBE-SERVICES - [0:0]
//! :KUBE-NODEPORTS - [0:0]
//! :KUBE-POSTROUTING - [0:0]
//! :KUBE-MARK-MASQ - [0:0]
//! :KUBE-SVC-6VABJLKZHENL7B56 - [0:0]
//! :KUBE-SEP-5YQPA2UGGAYNAB3P - [0:0]
//! :KUBE-SEP-AG5IS5UBMZWHC3EO - [0:0]
//! -A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
//! -A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
//! -A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
//! -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
//! -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
//! -A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
//! -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
//! -A KUBE-SERVICES -m comment --comment "default/measured:http cluster IP" -m tcp -p tcp -d 10.96.0.10/32 --dport 80 -j KUBE-SVC-6VABJLKZHENL7B56
//! -A KUBE-SVC-6VABJLKZHENL7B56 -m comment --comment "default/measured:http cluster IP" -m tcp -p tcp -d 10.96.0.10/32 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
//! -A KUBE-SVC-6VABJLKZHENL7B56 -m comment --comment "default/measured:http -> 10.244.1.11:8080" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-5YQPA2UGGAYNAB3P
//! -A KUBE-SVC-6VABJLKZHENL7B56 -m comment --comment "default/measured:http -> 10.244.1.12:8080" -j KUBE-SEP-AG5IS5UBMZWHC3EO
//! -A KUBE-SEP-5YQPA2UGGAYNAB3P -m comment --comment default/measured:http -s 10.244.1.11/32 -j KUBE-MARK-MASQ
//! -A KUBE-SEP-5YQPA2UGGAYNAB3P -m comment --comment default/measured:http -m tcp -p tcp -j DNAT --to-destination 10.244.1.11:8080
//! -A KUBE-SEP-AG5IS5UBMZWHC3EO -m comment --comment default/measured:http -s 10.244.1.12/32 -j KUBE-MARK-MASQ
//! -A KUBE-SEP-AG5IS5UBMZWHC3EO -m comment --comment default/measured:http -m tcp -p tcp -j DNAT --to-destination 10.244.1.12:8080
//! -A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
//! COMMIT
//! ```
//!
//! With n endpoints the KUBE-SVC chain has n jumps, the i-th (from 0) matching with
//! probability 1/(n-i) printed as kube-proxy prints it (`%0.10f`), the last one unconditional.
//! As kube-proxy does, the per-endpoint comments are dropped once the set has more than 1,000
//! endpoints in all ("large cluster mode"); the KUBE-SERVICES comments stay. Differences from
//! kube-proxy's own restore: it restores with `--noflush` and installs the PREROUTING / OUTPUT /
//! POSTROUTING jumps with separate `iptables -I` calls; here the lab node's nat table belongs to
//! us, so the whole table (jumps included) is replaced in one restore.
//!
//! The layout is loaded with **`iptables-legacy-restore`**: through the nft backend
//! (`iptables-nft-restore`, Debian's default `iptables`) 10,000 Services took 22 minutes to
//! load on this kind of machine, against 4.3 s for legacy
//! (shared/notes/bench-baselines.md). Legacy is also what most kube-proxy iptables-mode nodes
//! run on.
//!
//! ## nftables (`nft -f` input, table `ip kube-proxy`)
//!
//! The same Service, as [`nft_layout`] writes it (a unit test checks this text):
//!
//! ```text
//! add table ip kube-proxy
//! delete table ip kube-proxy
//! add table ip kube-proxy { comment "rules for kube-proxy" ; }
//! add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }
//! add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }
//! add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority 100 ; }
//! add chain ip kube-proxy services
//! add chain ip kube-proxy masquerading
//! add chain ip kube-proxy mark-for-masquerade
//! add rule ip kube-proxy nat-output jump services
//! add rule ip kube-proxy nat-prerouting jump services
//! add rule ip kube-proxy nat-postrouting jump masquerading
//! add rule ip kube-proxy mark-for-masquerade mark set mark or 0x4000
//! add rule ip kube-proxy masquerading mark and 0x4000 == 0 return
//! add rule ip kube-proxy masquerading mark set mark xor 0x4000
//! add rule ip kube-proxy masquerading masquerade fully-random
//! add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }
//! add map ip kube-proxy service-nodeports { type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }
//! add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips
//! add rule ip kube-proxy services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports
//! add chain ip kube-proxy endpoint-OLYMXQBV-default/measured/tcp/http__10.244.1.11/8080
//! flush chain ip kube-proxy endpoint-OLYMXQBV-default/measured/tcp/http__10.244.1.11/8080
//! add chain ip kube-proxy endpoint-YHENJCVU-default/measured/tcp/http__10.244.1.12/8080
//! flush chain ip kube-proxy endpoint-YHENJCVU-default/measured/tcp/http__10.244.1.12/8080
//! add chain ip kube-proxy service-OMBPGRZ3-default/measured/tcp/http
//! flush chain ip kube-proxy service-OMBPGRZ3-default/measured/tcp/http
//! add rule ip kube-proxy service-OMBPGRZ3-default/measured/tcp/http ip daddr 10.96.0.10 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
//! add rule ip kube-proxy service-OMBPGRZ3-default/measured/tcp/http numgen random mod 2 vmap { 0 : goto endpoint-OLYMXQBV-default/measured/tcp/http__10.244.1.11/8080 , 1 : goto endpoint-YHENJCVU-default/measured/tcp/http__10.244.1.12/8080 }
//! add rule ip kube-proxy endpoint-OLYMXQBV-default/measured/tcp/http__10.244.1.11/8080 ip saddr 10.244.1.11 jump mark-for-masquerade
//! add rule ip kube-proxy endpoint-OLYMXQBV-default/measured/tcp/http__10.244.1.11/8080 meta l4proto tcp dnat to 10.244.1.11:8080
//! add rule ip kube-proxy endpoint-YHENJCVU-default/measured/tcp/http__10.244.1.12/8080 ip saddr 10.244.1.12 jump mark-for-masquerade
//! add rule ip kube-proxy endpoint-YHENJCVU-default/measured/tcp/http__10.244.1.12/8080 meta l4proto tcp dnat to 10.244.1.12:8080
//! add element ip kube-proxy service-ips { 10.96.0.10 . tcp . 80 : goto service-OMBPGRZ3-default/measured/tcp/http }
//! ```
//!
//! This is the transaction kube-proxy's full sync sends through knftables (its `add chain` +
//! `flush chain` per service and endpoint chain included), minus the filter side. The leading
//! `add table` + `delete table` makes a load replace whatever an earlier load left. Base chain
//! priorities are written as numbers (-100 is `dstnat`, 100 `srcnat`): nft 1.0.6 (Debian 12)
//! refuses the `dstnat` keyword on the output hook.
//!
//! # Loading
//!
//! [`load`] runs `iptables-legacy-restore -w 60` or `nft -f -` inside the given network
//! namespace (entered before exec, as `nsenter --net` would), with the text on stdin, and
//! returns the wall time from spawn to exit: what kube-proxy waits for on each full sync.
//! [`flush`] removes a layout again ([`flush_iptables`], [`flush_nft`]); big nft loads use
//! about 1 GB of memory, so flush and let the machine settle before measuring the next layout.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use data_encoding::BASE32;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Name of the (only) port of every Service here, in the manifests and in the chain names.
pub const PORT_NAME: &str = "http";
/// Protocol of every service port, lower-case as kube-proxy uses it in names and rules.
pub const PROTOCOL: &str = "tcp";
/// kube-proxy's `--cluster-cidr` for the layouts: the lab's pod range.
pub const CLUSTER_CIDR: &str = svc_lab::CLUSTER_POD_CIDR;
/// kube-proxy's default `--iptables-masquerade-bit` 14.
pub const MASQUERADE_MARK: &str = "0x4000";
/// Above this many endpoints in all, kube-proxy's iptables mode drops per-endpoint comments
/// (`largeClusterEndpointsThreshold`).
pub const LARGE_CLUSTER_ENDPOINTS: usize = 1000;
/// Namespace of the generated filler Services.
pub const FILLER_NAMESPACE: &str = "bench";
/// Service port of the filler Services.
pub const FILLER_PORT: u16 = 80;
/// Endpoint (target) port of the filler Services.
pub const FILLER_TARGET_PORT: u16 = 8080;
/// Most endpoints per generated EndpointSlice (the EndpointSlice controller's default).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// Longest nftables chain-name base kube-proxy makes (knftables' 256 minus a 16-byte prefix).
pub const NFT_CHAIN_BASE_MAX: usize = 240;
/// Bound on one [`load`] or [`flush`]; far above the slowest load measured (113 s).
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// One single-port TCP ClusterIP Service and its (ready) endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenchService {
    pub namespace: String,
    pub name: String,
    /// The ClusterIP.
    pub vip: Ipv4Addr,
    /// The service port (its name is [`PORT_NAME`]).
    pub port: u16,
    /// Pod IP and target port of each endpoint.
    pub endpoints: Vec<SocketAddrV4>,
}

impl BenchService {
    pub fn new(
        namespace: &str,
        name: &str,
        vip: Ipv4Addr,
        port: u16,
        endpoints: Vec<SocketAddrV4>,
    ) -> BenchService {
        BenchService {
            namespace: namespace.into(),
            name: name.into(),
            vip,
            port,
            endpoints,
        }
    }

    /// kube-proxy's ServicePortName string: `namespace/name:http`.
    pub fn service_port_name(&self) -> String {
        format!("{}/{}:{PORT_NAME}", self.namespace, self.name)
    }

    /// The Service's address `vip:port`.
    pub fn frontend(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.vip, self.port)
    }

    /// `KUBE-SVC-<hash>`.
    pub fn iptables_service_chain(&self) -> String {
        format!(
            "KUBE-SVC-{}",
            port_proto_hash(&self.service_port_name(), PROTOCOL)
        )
    }

    /// `KUBE-SEP-<hash>` of one endpoint.
    pub fn iptables_endpoint_chain(&self, ep: SocketAddrV4) -> String {
        format!(
            "KUBE-SEP-{}",
            endpoint_hash(&self.service_port_name(), PROTOCOL, &ep.to_string())
        )
    }

    /// `service-<HASH>-namespace/name/tcp/http`.
    pub fn nft_service_chain(&self) -> String {
        format!(
            "service-{}",
            nft_chain_base(&format!(
                "{}/{}/{PROTOCOL}/{PORT_NAME}",
                self.namespace, self.name
            ))
        )
    }

    /// `endpoint-<HASH>-namespace/name/tcp/http__ip/port` of one endpoint.
    pub fn nft_endpoint_chain(&self, ep: SocketAddrV4) -> String {
        format!(
            "endpoint-{}",
            nft_chain_base(&format!(
                "{}/{}/{PROTOCOL}/{PORT_NAME}__{}/{}",
                self.namespace,
                self.name,
                ep.ip(),
                ep.port()
            ))
        )
    }

    /// The endpoints without repeats, in order (kube-proxy keys endpoints by `ip:port`).
    fn unique_endpoints(&self) -> Vec<SocketAddrV4> {
        let mut seen = HashSet::new();
        self.endpoints
            .iter()
            .copied()
            .filter(|e| seen.insert(*e))
            .collect()
    }
}

fn sha256_base32(s: &str) -> String {
    BASE32.encode(&Sha256::digest(s.as_bytes()))
}

/// kube-proxy's `portProtoHash`: base32(sha256(servicePortName + protocol))[:16].
pub fn port_proto_hash(service_port_name: &str, protocol: &str) -> String {
    sha256_base32(&format!("{service_port_name}{protocol}"))[..16].to_string()
}

/// The hash of kube-proxy's `servicePortEndpointChainName`:
/// base32(sha256(servicePortName + protocol + endpoint))[:16], endpoint being `ip:port`.
pub fn endpoint_hash(service_port_name: &str, protocol: &str, endpoint: &str) -> String {
    sha256_base32(&format!("{service_port_name}{protocol}{endpoint}"))[..16].to_string()
}

/// kube-proxy's nftables `hashAndTruncate`: `base32(sha256(name))[:8] + "-" + name`, cut to
/// [`NFT_CHAIN_BASE_MAX`] bytes with a `...` ending when longer.
pub fn nft_chain_base(name: &str) -> String {
    let mut s = format!("{}-{name}", &sha256_base32(name)[..8]);
    if s.len() > NFT_CHAIN_BASE_MAX {
        let mut cut = NFT_CHAIN_BASE_MAX - 3;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// kube-proxy's `probability(n)`: `1/n` as `%0.10f`.
pub fn probability(n: usize) -> String {
    format!("{:.10}", 1.0 / n as f64)
}

/// The `iptables-restore` input for the `nat` table: see the [module docs](self).
pub fn iptables_layout(services: &[BenchService]) -> String {
    let total_endpoints: usize = services.iter().map(|s| s.unique_endpoints().len()).sum();
    let large_cluster = total_endpoints > LARGE_CLUSTER_ENDPOINTS;
    let mut chains = String::new();
    let mut rules = String::new();
    for c in ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"] {
        chains.push_str(&format!(":{c} ACCEPT [0:0]\n"));
    }
    for c in [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-MARK-MASQ",
    ] {
        chains.push_str(&format!(":{c} - [0:0]\n"));
    }
    rules.push_str(concat!(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
        "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
        "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n",
    ));
    let m = MASQUERADE_MARK;
    let _ = writeln!(
        rules,
        "-A KUBE-POSTROUTING -m mark ! --mark {m}/{m} -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --xor-mark {m}\n\
         -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" \
         -j MASQUERADE --random-fully\n\
         -A KUBE-MARK-MASQ -j MARK --or-mark {m}"
    );

    for svc in services {
        let eps = svc.unique_endpoints();
        if eps.is_empty() {
            continue;
        }
        let spn = svc.service_port_name();
        let svc_chain = svc.iptables_service_chain();
        let (vip, port) = (svc.vip, svc.port);
        let _ = writeln!(chains, ":{svc_chain} - [0:0]");
        let cluster_ip_match = format!(
            "-m comment --comment \"{spn} cluster IP\" -m {PROTOCOL} -p {PROTOCOL} \
             -d {vip}/32 --dport {port}"
        );
        let _ = writeln!(rules, "-A KUBE-SERVICES {cluster_ip_match} -j {svc_chain}");
        let _ = writeln!(
            rules,
            "-A {svc_chain} {cluster_ip_match} ! -s {CLUSTER_CIDR} -j KUBE-MARK-MASQ"
        );
        let n = eps.len();
        for (i, ep) in eps.iter().enumerate() {
            let mut r = format!("-A {svc_chain}");
            if !large_cluster {
                let _ = write!(r, " -m comment --comment \"{spn} -> {ep}\"");
            }
            if i + 1 < n {
                let _ = write!(
                    r,
                    " -m statistic --mode random --probability {}",
                    probability(n - i)
                );
            }
            let _ = writeln!(rules, "{r} -j {}", svc.iptables_endpoint_chain(*ep));
        }
        for ep in &eps {
            let sep = svc.iptables_endpoint_chain(*ep);
            let _ = writeln!(chains, ":{sep} - [0:0]");
            let head = if large_cluster {
                format!("-A {sep}")
            } else {
                format!("-A {sep} -m comment --comment {spn}")
            };
            let _ = writeln!(rules, "{head} -s {}/32 -j KUBE-MARK-MASQ", ep.ip());
            let _ = writeln!(
                rules,
                "{head} -m {PROTOCOL} -p {PROTOCOL} -j DNAT --to-destination {ep}"
            );
        }
    }
    rules.push_str(
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must \
         be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n",
    );
    format!("*nat\n{chains}{rules}COMMIT\n")
}

/// `iptables-restore` input that empties the `nat` table (and deletes its user chains).
pub fn flush_iptables() -> String {
    "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
     :POSTROUTING ACCEPT [0:0]\nCOMMIT\n"
        .to_string()
}

/// The table kube-proxy's nftables mode owns.
pub const NFT_TABLE: &str = "ip kube-proxy";

/// The `nft -f` input: see the [module docs](self).
pub fn nft_layout(services: &[BenchService]) -> String {
    let t = NFT_TABLE;
    let m = MASQUERADE_MARK;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "add table {t}\n\
         delete table {t}\n\
         add table {t} {{ comment \"rules for kube-proxy\" ; }}\n\
         add chain {t} nat-prerouting {{ type nat hook prerouting priority -100 ; }}\n\
         add chain {t} nat-output {{ type nat hook output priority -100 ; }}\n\
         add chain {t} nat-postrouting {{ type nat hook postrouting priority 100 ; }}\n\
         add chain {t} services\n\
         add chain {t} masquerading\n\
         add chain {t} mark-for-masquerade\n\
         add rule {t} nat-output jump services\n\
         add rule {t} nat-prerouting jump services\n\
         add rule {t} nat-postrouting jump masquerading\n\
         add rule {t} mark-for-masquerade mark set mark or {m}\n\
         add rule {t} masquerading mark and {m} == 0 return\n\
         add rule {t} masquerading mark set mark xor {m}\n\
         add rule {t} masquerading masquerade fully-random\n\
         add map {t} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; \
         comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }}\n\
         add map {t} service-nodeports {{ type inet_proto . inet_service : verdict ; \
         comment \"NodePort traffic\" ; }}\n\
         add rule {t} services ip daddr . meta l4proto . th dport vmap @service-ips\n\
         add rule {t} services fib daddr type local ip daddr != 127.0.0.0/8 \
         meta l4proto . th dport vmap @service-nodeports"
    );
    for svc in services {
        let eps = svc.unique_endpoints();
        if eps.is_empty() {
            continue;
        }
        let svc_chain = svc.nft_service_chain();
        let ep_chains: Vec<String> = eps.iter().map(|e| svc.nft_endpoint_chain(*e)).collect();
        for c in ep_chains.iter().chain(std::iter::once(&svc_chain)) {
            let _ = writeln!(out, "add chain {t} {c}\nflush chain {t} {c}");
        }
        let _ = writeln!(
            out,
            "add rule {t} {svc_chain} ip daddr {} {PROTOCOL} dport {} ip saddr != {CLUSTER_CIDR} \
             jump mark-for-masquerade",
            svc.vip, svc.port
        );
        let vmap: Vec<String> = ep_chains
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{i} : goto {c}"))
            .collect();
        let _ = writeln!(
            out,
            "add rule {t} {svc_chain} numgen random mod {} vmap {{ {} }}",
            eps.len(),
            vmap.join(" , ")
        );
        for (ep, c) in eps.iter().zip(&ep_chains) {
            let _ = writeln!(
                out,
                "add rule {t} {c} ip saddr {} jump mark-for-masquerade\n\
                 add rule {t} {c} meta l4proto {PROTOCOL} dnat to {ep}",
                ep.ip()
            );
        }
        let _ = writeln!(
            out,
            "add element {t} service-ips {{ {} . {PROTOCOL} . {} : goto {svc_chain} }}",
            svc.vip, svc.port
        );
    }
    out
}

/// `nft -f` input that removes table `ip kube-proxy` (a no-op when it does not exist).
pub fn flush_nft() -> String {
    format!("add table {NFT_TABLE}\ndelete table {NFT_TABLE}\n")
}

/// Which of kube-proxy's modes a layout is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Backend {
    /// iptables mode, loaded with `iptables-legacy-restore`.
    IptablesLegacy,
    /// nftables mode, loaded with `nft -f -`.
    Nftables,
}

impl Backend {
    pub const ALL: [Backend; 2] = [Backend::IptablesLegacy, Backend::Nftables];

    /// Short name for reports: `iptables-legacy`, `nftables`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::IptablesLegacy => "iptables-legacy",
            Backend::Nftables => "nftables",
        }
    }

    /// [`iptables_layout`] or [`nft_layout`].
    pub fn layout(self, services: &[BenchService]) -> String {
        match self {
            Backend::IptablesLegacy => iptables_layout(services),
            Backend::Nftables => nft_layout(services),
        }
    }

    /// [`flush_iptables`] or [`flush_nft`].
    pub fn flush_text(self) -> String {
        match self {
            Backend::IptablesLegacy => flush_iptables(),
            Backend::Nftables => flush_nft(),
        }
    }

    /// The program and arguments that read a layout on stdin.
    fn loader(self) -> (&'static str, &'static [&'static str]) {
        match self {
            // -w: wait for the xtables lock (shared by every namespace) instead of failing.
            Backend::IptablesLegacy => ("iptables-legacy-restore", &["-w", "60"]),
            Backend::Nftables => ("nft", &["-f", "-"]),
        }
    }

    /// The program and arguments that print what is loaded.
    fn dumper(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Backend::IptablesLegacy => ("iptables-legacy-save", &["-t", "nat"]),
            Backend::Nftables => ("nft", &["list", "ruleset"]),
        }
    }
}

/// Load `text` (a [`Backend::layout`]) into network namespace `ns`; the wall time from
/// spawning the loader to its exit. Fails with the loader's stderr if it fails, or after
/// [`LOAD_TIMEOUT`] (the loader is killed).
pub fn load(ns: &str, backend: Backend, text: &str) -> anyhow::Result<Duration> {
    let (prog, args) = backend.loader();
    let (took, out) = run_in_netns(ns, prog, args, text.as_bytes(), LOAD_TIMEOUT)
        .with_context(|| format!("loading the {} layout in {ns}", backend.name()))?;
    check(prog, ns, &out)?;
    Ok(took)
}

/// Remove what [`load`] put into `ns` for `backend`; the time it took.
pub fn flush(ns: &str, backend: Backend) -> anyhow::Result<Duration> {
    let (prog, args) = backend.loader();
    let (took, out) = run_in_netns(
        ns,
        prog,
        args,
        backend.flush_text().as_bytes(),
        LOAD_TIMEOUT,
    )
    .with_context(|| format!("flushing the {} layout in {ns}", backend.name()))?;
    check(prog, ns, &out)?;
    Ok(took)
}

/// What is loaded in `ns`: `iptables-legacy-save -t nat` or `nft list ruleset`.
pub fn dump(ns: &str, backend: Backend) -> anyhow::Result<String> {
    let (prog, args) = backend.dumper();
    let (_, out) = run_in_netns(ns, prog, args, b"", Duration::from_secs(120))?;
    check(prog, ns, &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn check(prog: &str, ns: &str, out: &CmdOutput) -> anyhow::Result<()> {
    if !out.success {
        bail!(
            "`{prog}` in {ns} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

struct CmdOutput {
    success: bool,
    status: String,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Run `prog args` inside `ns` with `input` on stdin, collecting stdout and stderr; the wall
/// time from spawn to exit. Killed (SIGKILL) once `timeout` has passed.
fn run_in_netns(
    ns: &str,
    prog: &str,
    args: &[&str],
    input: &[u8],
    timeout: Duration,
) -> anyhow::Result<(Duration, CmdOutput)> {
    let mut cmd = Command::new(crate::program(prog));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    svc_lab::netns::command_in_netns(&mut cmd, ns)?;
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| {
        let hint = if e.kind() == io::ErrorKind::NotFound {
            " (not installed? `cargo xtask setup` installs iptables and nftables)"
        } else {
            ""
        };
        anyhow::anyhow!("spawning `{prog}` in {ns}: {e}{hint}")
    })?;
    let pid = child.id() as libc::pid_t;
    let mut stdin = child.stdin.take().context("child stdin")?;
    let mut stdout = child.stdout.take().context("child stdout")?;
    let mut stderr = child.stderr.take().context("child stderr")?;

    // `done` is set, under the lock, after the child has exited but before it is reaped, so
    // the watchdog can never signal a recycled pid.
    let done = Arc::new(Mutex::new(false));
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let result = std::thread::scope(|s| {
        let writer = s.spawn(move || {
            // A loader that fails early closes its stdin: EPIPE here is not the error to report.
            let _ = stdin.write_all(input);
        });
        let out_reader = s.spawn(move || {
            let mut v = Vec::new();
            let _ = stdout.read_to_end(&mut v);
            v
        });
        let err_reader = s.spawn(move || {
            let mut v = Vec::new();
            let _ = stderr.read_to_end(&mut v);
            v
        });
        let done_w = done.clone();
        let watchdog = s.spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(timeout) {
                let d = done_w.lock().unwrap_or_else(|p| p.into_inner());
                if !*d {
                    // SAFETY: pid is our child, exited-but-unreaped at worst (see `done`).
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    return true;
                }
            }
            false
        });
        // Wait for the exit without reaping (WNOWAIT), note the time, then reap.
        loop {
            // SAFETY: waitid fills a zeroed siginfo_t we own.
            let rc = unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                libc::waitid(
                    libc::P_PID,
                    pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT,
                )
            };
            if rc == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break;
            }
        }
        let took = start.elapsed();
        *done.lock().unwrap_or_else(|p| p.into_inner()) = true;
        let status = child.wait();
        let _ = stop_tx.send(());
        let killed = watchdog.join().unwrap_or(false);
        let _ = writer.join();
        let stdout = out_reader.join().unwrap_or_default();
        let stderr = err_reader.join().unwrap_or_default();
        (took, status, killed, stdout, stderr)
    });
    let (took, status, killed, stdout, stderr) = result;
    let status = status.with_context(|| format!("waiting for `{prog}`"))?;
    if killed {
        bail!("`{prog}` in {ns} did not finish within {timeout:?} and was killed");
    }
    Ok((
        took,
        CmdOutput {
            success: status.success(),
            status: status.to_string(),
            stdout,
            stderr,
        },
    ))
}

/// The i-th filler ClusterIP: 10.97.0.0 + i (inside 10.96.0.0/12, clear of the 10.96.0.x
/// addresses the lab's examples use).
fn filler_vip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 97, 0, 0)) + i)
}

/// Number of filler endpoint addresses: 10.244.128.1 up to 10.244.255.254, a range no lab pod
/// uses (the lab's pods are in 10.244.1.0/24 and 10.244.2.0/24). They are reused round-robin
/// when a set needs more.
const FILLER_EP_ADDRS: u32 = 128 * 256 - 2;

fn filler_endpoint(k: u32) -> SocketAddrV4 {
    let ip = u32::from(Ipv4Addr::new(10, 244, 128, 1)) + k % FILLER_EP_ADDRS;
    SocketAddrV4::new(Ipv4Addr::from(ip), FILLER_TARGET_PORT)
}

/// Most Services [`services`] can make (the filler ClusterIPs must stay in 10.96.0.0/12).
pub const MAX_SERVICES: usize = 900_000;

/// `n` Services in all: `n - 1` fillers `bench/filler-00001`... (ClusterIPs from 10.97.0.0 on,
/// port 80, `endpoints_per_service` endpoints each in 10.244.128.0/17 on port 8080, addresses
/// nothing in the lab answers on), then `measured`, last. `n == 0` is taken as 1.
///
/// Panics if `n` exceeds [`MAX_SERVICES`] (a caller bug).
pub fn services(
    n: usize,
    endpoints_per_service: usize,
    measured: BenchService,
) -> Vec<BenchService> {
    assert!(
        n <= MAX_SERVICES,
        "at most {MAX_SERVICES} services, not {n}"
    );
    let fillers = n.saturating_sub(1);
    let mut out = Vec::with_capacity(fillers + 1);
    let mut vip_index = 0u32;
    let mut ep_index = 0u32;
    for i in 0..fillers {
        let mut vip = filler_vip(vip_index);
        vip_index += 1;
        if vip == measured.vip {
            vip = filler_vip(vip_index);
            vip_index += 1;
        }
        let endpoints = (0..endpoints_per_service)
            .map(|_| {
                let e = filler_endpoint(ep_index);
                ep_index = ep_index.wrapping_add(1);
                e
            })
            .collect();
        out.push(BenchService::new(
            FILLER_NAMESPACE,
            &format!("filler-{:05}", i + 1),
            vip,
            FILLER_PORT,
            endpoints,
        ));
    }
    out.push(measured);
    out
}

/// The same Services as Kubernetes YAML, `---`-separated: per Service a selector-less
/// ClusterIP `Service` (one TCP port named `http`, targetPort the first endpoint's port) and
/// its `EndpointSlice`s (one per distinct endpoint port, at most
/// [`MAX_ENDPOINTS_PER_SLICE`] endpoints each, all ready), as examples/echo-clusterip.yaml
/// shows. svc-agent serves these in manifest mode exactly as kube-proxy would.
pub fn manifests(services: &[BenchService]) -> String {
    let mut out = String::new();
    for svc in services {
        let eps = svc.unique_endpoints();
        let target_port = eps.first().map_or(svc.port, |e| e.port());
        if !out.is_empty() {
            out.push_str("---\n");
        }
        let _ = write!(
            out,
            "apiVersion: v1\n\
             kind: Service\n\
             metadata:\n  name: {name}\n  namespace: {ns}\n\
             spec:\n  type: ClusterIP\n  clusterIP: {vip}\n  ports:\n\
             \x20   - name: {PORT_NAME}\n      protocol: TCP\n      port: {port}\n      targetPort: {target_port}\n",
            name = svc.name,
            ns = svc.namespace,
            vip = svc.vip,
            port = svc.port,
        );
        let mut by_port: BTreeMap<u16, Vec<Ipv4Addr>> = BTreeMap::new();
        for e in &eps {
            by_port.entry(e.port()).or_default().push(*e.ip());
        }
        let mut slice_no = 0;
        for (port, ips) in &by_port {
            for chunk in ips.chunks(MAX_ENDPOINTS_PER_SLICE) {
                slice_no += 1;
                let _ = write!(
                    out,
                    "---\n\
                     apiVersion: discovery.k8s.io/v1\n\
                     kind: EndpointSlice\n\
                     metadata:\n  name: {name}-s{slice_no}\n  namespace: {ns}\n  labels:\n    \
                     kubernetes.io/service-name: {name}\n\
                     addressType: IPv4\n\
                     ports:\n  - name: {PORT_NAME}\n    protocol: TCP\n    port: {port}\n\
                     endpoints:\n",
                    name = svc.name,
                    ns = svc.namespace,
                );
                for ip in chunk {
                    let _ = writeln!(
                        out,
                        "  - addresses: [\"{ip}\"]\n    conditions: {{ready: true}}"
                    );
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(n_eps: u8) -> BenchService {
        BenchService::new(
            "default",
            "measured",
            Ipv4Addr::new(10, 96, 0, 10),
            80,
            (0..n_eps)
                .map(|i| SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 11 + i), 8080))
                .collect(),
        )
    }

    /// The text between "```text" and "```" of the `which`-th sample in the module docs.
    fn doc_sample(which: usize) -> String {
        let src = include_str!("rules.rs");
        let blocks: Vec<String> = src
            .split("//! ```text\n")
            .skip(1)
            .map(|b| {
                b.split("//! ```\n")
                    .next()
                    .unwrap()
                    .lines()
                    .map(|l| l.strip_prefix("//! ").unwrap_or(l))
                    .map(|l| format!("{l}\n"))
                    .collect()
            })
            .collect();
        blocks[which].clone()
    }

    #[test]
    fn hashes_match_kube_proxy_test_tables() {
        // Chain names from kube-proxy's pkg/proxy/{iptables,nftables}/proxier_test.go for
        // Service ns1/svc1, port p80/TCP, endpoint 10.180.0.1:80.
        assert_eq!(port_proto_hash("ns1/svc1:p80", "tcp"), "XPGD46QRK7WJZT7O");
        assert_eq!(
            endpoint_hash("ns1/svc1:p80", "tcp", "10.180.0.1:80"),
            "SXIVWICOYRO3J4NJ"
        );
        assert_eq!(
            nft_chain_base("ns1/svc1/tcp/p80"),
            "ULMVA6XW-ns1/svc1/tcp/p80"
        );
        assert_eq!(
            nft_chain_base("ns1/svc1/tcp/p80__10.180.0.1/80"),
            "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"
        );
        let svc = BenchService::new(
            "ns1",
            "svc1",
            Ipv4Addr::new(172, 30, 0, 41),
            80,
            vec![SocketAddrV4::new(Ipv4Addr::new(10, 180, 0, 1), 80)],
        );
        assert_eq!(svc.service_port_name(), "ns1/svc1:http");
        assert!(svc.iptables_service_chain().starts_with("KUBE-SVC-"));
        assert_eq!(svc.iptables_service_chain().len(), "KUBE-SVC-".len() + 16);
        assert!(
            svc.nft_endpoint_chain(svc.endpoints[0])
                .ends_with("-ns1/svc1/tcp/http__10.180.0.1/80")
        );
    }

    #[test]
    fn long_nft_names_are_cut_like_kube_proxy() {
        let long = "a".repeat(300);
        let b = nft_chain_base(&long);
        assert_eq!(b.len(), NFT_CHAIN_BASE_MAX);
        assert!(b.ends_with("..."));
        assert_eq!(&b[8..9], "-");
    }

    #[test]
    fn probabilities_are_kube_proxys() {
        assert_eq!(probability(2), "0.5000000000");
        assert_eq!(probability(3), "0.3333333333");
        assert_eq!(probability(9), "0.1111111111");
        assert_eq!(probability(10), "0.1000000000");
    }

    #[test]
    fn iptables_layout_matches_the_documented_sample() {
        assert_eq!(iptables_layout(&[measured(2)]), doc_sample(0));
    }

    #[test]
    fn nft_layout_matches_the_documented_sample() {
        assert_eq!(nft_layout(&[measured(2)]), doc_sample(1));
    }

    #[test]
    fn iptables_chain_counts_and_order() {
        let set = services(101, 10, measured(3));
        let text = iptables_layout(&set);
        let decl = |p: &str| {
            text.lines()
                .filter(|l| l.starts_with(&format!(":{p}")))
                .count()
        };
        assert_eq!(decl("KUBE-SVC-"), 101);
        assert_eq!(decl("KUBE-SEP-"), 100 * 10 + 3);
        assert_eq!(decl("KUBE-MARK-MASQ "), 1);
        assert_eq!(decl("KUBE-POSTROUTING "), 1);
        let kube_services: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("-A KUBE-SERVICES "))
            .collect();
        // One rule per service port, then the NodePorts tail call.
        assert_eq!(kube_services.len(), 102);
        assert!(kube_services[101].ends_with("-j KUBE-NODEPORTS"));
        let last = kube_services[100];
        assert!(
            last.contains("-d 10.96.0.10/32 --dport 80")
                && last.ends_with(&format!("-j {}", set[100].iptables_service_chain())),
            "measured service is not the last in KUBE-SERVICES: {last}"
        );
        assert!(
            kube_services[0].contains(&format!("-d {}/32 --dport 80", set[0].vip)),
            "{}",
            kube_services[0]
        );
        // All chain names are distinct.
        let names: Vec<&str> = text.lines().filter(|l| l.starts_with(':')).collect();
        let uniq: HashSet<&&str> = names.iter().collect();
        assert_eq!(names.len(), uniq.len());
        assert!(text.starts_with("*nat\n") && text.ends_with("COMMIT\n"));
        // 1,003 endpoints > 1,000: large-cluster mode, no per-endpoint comments.
        assert!(!text.contains("-> 10.244."));
    }

    #[test]
    fn iptables_statistic_probabilities_descend_to_an_unconditional_jump() {
        let svc = services(2, 10, measured(1)).remove(0);
        let text = iptables_layout(std::slice::from_ref(&svc));
        let chain = svc.iptables_service_chain();
        let jumps: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("-A {chain} ")) && l.contains("-j KUBE-SEP-"))
            .collect();
        assert_eq!(jumps.len(), 10);
        for (i, j) in jumps.iter().enumerate() {
            let want_sep = svc.iptables_endpoint_chain(svc.endpoints[i]);
            assert!(j.ends_with(&format!("-j {want_sep}")), "{j}");
            if i < 9 {
                let p = format!("--mode random --probability {} ", probability(10 - i));
                assert!(j.contains(&p), "rule {i}: {j}");
            } else {
                assert!(
                    !j.contains("statistic"),
                    "last rule must be unconditional: {j}"
                );
            }
        }
        assert!(jumps[0].contains("--probability 0.1000000000 "));
        assert!(jumps[1].contains("--probability 0.1111111111 "));
        assert!(jumps[8].contains("--probability 0.5000000000 "));
        // 10 endpoints: small cluster, comments kept.
        assert!(jumps[0].contains(&format!(
            "--comment \"bench/filler-00001:http -> {}\"",
            svc.endpoints[0]
        )));
        // Every endpoint chain: hairpin masquerade, then DNAT.
        for ep in &svc.endpoints {
            let sep = svc.iptables_endpoint_chain(*ep);
            let rules: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with(&format!("-A {sep} ")))
                .collect();
            assert_eq!(rules.len(), 2);
            assert!(rules[0].ends_with(&format!("-s {}/32 -j KUBE-MARK-MASQ", ep.ip())));
            assert!(rules[1].ends_with(&format!("-p tcp -j DNAT --to-destination {ep}")));
        }
    }

    #[test]
    fn nft_layout_pieces() {
        let set = services(50, 10, measured(3));
        let text = nft_layout(&set);
        let count = |p: &str| text.lines().filter(|l| l.starts_with(p)).count();
        let t = "add chain ip kube-proxy";
        assert_eq!(count(&format!("{t} service-")), 50);
        assert_eq!(count(&format!("{t} endpoint-")), 49 * 10 + 3);
        assert_eq!(count("add element ip kube-proxy service-ips "), 50);
        assert!(text.contains(
            "add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ;"
        ));
        assert!(text.contains(
            "add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips\n"
        ));
        assert!(text.contains("type nat hook prerouting priority -100"));
        assert!(text.contains("type nat hook output priority -100"));
        assert!(text.contains("type nat hook postrouting priority 100"));
        assert!(text.contains("add rule ip kube-proxy nat-prerouting jump services\n"));
        assert!(text.contains("add rule ip kube-proxy nat-output jump services\n"));
        // The measured service's element is the last line.
        let m = &set[49];
        assert_eq!(
            text.lines().last().unwrap(),
            format!(
                "add element ip kube-proxy service-ips {{ 10.96.0.10 . tcp . 80 : goto {} }}",
                m.nft_service_chain()
            )
        );
        assert!(
            m.nft_service_chain()
                .ends_with("-default/measured/tcp/http")
        );
        // A filler's numgen vmap names its 10 endpoint chains in order.
        let f = &set[0];
        let vmap = text
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "add rule ip kube-proxy {} numgen",
                    f.nft_service_chain()
                ))
            })
            .unwrap();
        assert!(vmap.contains("numgen random mod 10 vmap { 0 : goto endpoint-"));
        for (i, ep) in f.endpoints.iter().enumerate() {
            assert!(vmap.contains(&format!("{i} : goto {}", f.nft_endpoint_chain(*ep))));
        }
        assert!(vmap.ends_with(" }"));
        let ep = f.endpoints[3];
        assert!(text.contains(&format!(
            "add rule ip kube-proxy {} meta l4proto tcp dnat to {ep}\n",
            f.nft_endpoint_chain(ep)
        )));
        assert!(text.contains(&format!(
            "add rule ip kube-proxy {} ip saddr {} jump mark-for-masquerade\n",
            f.nft_endpoint_chain(ep),
            ep.ip()
        )));
    }

    #[test]
    fn services_without_endpoints_get_no_nat_rules() {
        let mut empty = measured(0);
        empty.name = "empty".into();
        let text = iptables_layout(&[empty.clone(), measured(1)]);
        assert!(!text.contains("default/empty"));
        assert!(!nft_layout(&[empty]).contains("default/empty"));
    }

    #[test]
    fn generator_makes_fillers_then_the_measured_one() {
        // The measured VIP collides with a filler VIP: the filler skips it.
        let mut m = measured(3);
        m.vip = Ipv4Addr::new(10, 97, 0, 1);
        let set = services(1000, 10, m.clone());
        assert_eq!(set.len(), 1000);
        assert_eq!(set.last(), Some(&m));
        let vips: HashSet<Ipv4Addr> = set.iter().map(|s| s.vip).collect();
        assert_eq!(vips.len(), 1000, "ClusterIPs must be distinct");
        let svc_range = (u32::from(Ipv4Addr::new(10, 96, 0, 0)), 12);
        for s in &set[..999] {
            assert_eq!(
                u32::from(s.vip) >> (32 - svc_range.1),
                svc_range.0 >> (32 - svc_range.1)
            );
            assert_eq!(s.endpoints.len(), 10);
            assert_eq!(s.namespace, FILLER_NAMESPACE);
            for e in &s.endpoints {
                let o = e.ip().octets();
                assert_eq!((o[0], o[1]), (10, 244));
                assert!(o[2] >= 128, "{e} could be a lab pod");
            }
        }
        assert_eq!(services(1, 10, m.clone()), vec![m.clone()]);
        assert_eq!(services(0, 10, m.clone()), vec![m]);
        // Endpoints stay distinct within a service even when addresses wrap.
        let big = services(3300, 10, measured(1));
        for s in &big {
            let u: HashSet<_> = s.endpoints.iter().collect();
            assert_eq!(u.len(), s.endpoints.len());
        }
    }

    #[test]
    fn manifests_parse_and_match_the_services() {
        let mut set = services(3, 2, measured(3));
        // 250 endpoints on two ports: three slices for port 8080, one for 9090.
        set[0].endpoints = (0..250u32)
            .map(|k| SocketAddrV4::new(Ipv4Addr::from(0x0af4_8001 + k), 8080))
            .collect();
        set[0]
            .endpoints
            .push(SocketAddrV4::new(Ipv4Addr::new(10, 244, 200, 1), 9090));
        let text = manifests(&set);
        let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde_yaml::Value::deserialize(d).unwrap())
            .collect();
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds.iter().filter(|k| **k == "Service").count(), 3);
        assert_eq!(
            kinds.iter().filter(|k| **k == "EndpointSlice").count(),
            4 + 1 + 1
        );
        let svc = &docs[0];
        assert_eq!(svc["metadata"]["name"], "filler-00001");
        assert_eq!(svc["metadata"]["namespace"], "bench");
        assert_eq!(svc["spec"]["clusterIP"], set[0].vip.to_string().as_str());
        assert_eq!(svc["spec"]["ports"][0]["name"], "http");
        assert_eq!(svc["spec"]["ports"][0]["port"], 80);
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
        let mut seen = Vec::new();
        for d in docs.iter().filter(|d| d["kind"] == "EndpointSlice") {
            let owner = d["metadata"]["labels"]["kubernetes.io/service-name"]
                .as_str()
                .unwrap();
            let port = d["ports"][0]["port"].as_u64().unwrap() as u16;
            assert_eq!(d["addressType"], "IPv4");
            assert_eq!(d["ports"][0]["name"], "http");
            let eps = d["endpoints"].as_sequence().unwrap();
            assert!(eps.len() <= MAX_ENDPOINTS_PER_SLICE);
            for e in eps {
                assert_eq!(e["conditions"]["ready"], true);
                let ip: Ipv4Addr = e["addresses"][0].as_str().unwrap().parse().unwrap();
                seen.push((owner.to_string(), SocketAddrV4::new(ip, port)));
            }
        }
        for s in &set {
            for e in &s.endpoints {
                assert!(
                    seen.contains(&(s.name.clone(), *e)),
                    "{} {e} missing",
                    s.name
                );
            }
        }
        assert_eq!(
            seen.len(),
            set.iter().map(|s| s.endpoints.len()).sum::<usize>()
        );
        // The measured service is the last Service document.
        let last_svc = docs.iter().rev().find(|d| d["kind"] == "Service").unwrap();
        assert_eq!(last_svc["metadata"]["name"], "measured");
        assert_eq!(last_svc["spec"]["clusterIP"], "10.96.0.10");
    }

    #[test]
    fn flush_texts() {
        assert!(flush_iptables().starts_with("*nat\n") && flush_iptables().ends_with("COMMIT\n"));
        assert!(!flush_iptables().contains("KUBE"));
        assert_eq!(
            flush_nft(),
            "add table ip kube-proxy\ndelete table ip kube-proxy\n"
        );
        assert_eq!(Backend::Nftables.flush_text(), flush_nft());
    }
}
