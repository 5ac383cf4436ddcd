//! kube-proxy's configuration file (`KubeProxyConfiguration`, apiVersion
//! `kubeproxy.config.k8s.io/v1alpha1`), as `svc-agent --config FILE` reads it: the file a
//! kubeadm cluster keeps in the ConfigMap `kube-system/kube-proxy` (key `config.conf`).
//!
//! Pure: [`parse`] takes the text (YAML, or JSON, which is YAML too) and gives the
//! [`Settings`] it maps to svc-agent's own, and a [`Report`] of every field svc-agent does
//! not act on. Each field of the type falls in one of three groups:
//!
//! * mapped: clusterCIDR, nodePortAddresses, iptables/nftables.masqueradeAll,
//!   iptables.localhostNodePorts, bindAddress, healthzBindAddress, metricsBindAddress,
//!   detectLocalMode, detectLocal.{bridgeInterface, interfaceNamePrefix},
//!   hostnameOverride, clientConnection.kubeconfig, and the syncPeriod of the file's mode;
//! * known but not acted on (conntrack, ipvs, winkernel, masqueradeBit, featureGates,
//!   logging, ...): a [`Notice`] each, with the reason, when the file gives it a value
//!   other than kube-proxy's "unset" (kubeadm writes every field, with zero values such as
//!   `""`, `0s`, `null`: those are no setting and no notice);
//! * unknown (not a field of the type, e.g. misspelt): a [`Notice`] each, never dropped
//!   silently. Like kube-proxy (which falls back to lenient decoding and logs the strict
//!   decoding error), an unknown field does not stop the agent.
//!
//! What is an error, and stops the agent before it changes anything: text that is not
//! YAML, a document that is not an object, an apiVersion or kind other than
//! kube-proxy's, a field of the wrong type, and a value svc-agent would have to guess
//! about (an invalid CIDR, address, mode or duration). A broken file must not start a
//! half-configured proxy: a node that keeps kube-proxy's settings only in part (say, no
//! clusterCIDR, so pod traffic is masqueraded differently) is worse than one whose agent
//! refuses to start and says which field is wrong. Every error names the field
//! ([`ConfigError`]).
//!
//! The file gives defaults: main.rs lets every flag given on the command line (or by its
//! environment variable) override the file's value.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use serde_json::{Map, Value};

use crate::addr::IpCidr;
use crate::agent::DetectLocalMode;

pub const API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";
pub const KIND: &str = "KubeProxyConfiguration";

/// kube-proxy's default ports, appended to a bind address given without one (as
/// kube-proxy's defaulting does).
const HEALTHZ_PORT: u16 = 10256;
const METRICS_PORT: u16 = 10249;

/// What the file sets, in svc-agent's terms. `None` (or empty): the file leaves it unset
/// (absent, or kube-proxy's zero value), and svc-agent's own default applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// clientConnection.kubeconfig (`--kubeconfig`).
    pub kubeconfig: Option<PathBuf>,
    /// hostnameOverride (`--node-name`).
    pub node_name: Option<String>,
    /// bindAddress when it is a specific address (`--bind-address`): this node's primary
    /// address of its family. 0.0.0.0 and :: are kube-proxy's "unset".
    pub bind_address: Option<IpAddr>,
    /// healthzBindAddress (`--healthz-bind-address`).
    pub healthz_bind_address: Option<SocketAddr>,
    /// metricsBindAddress (`--metrics-bind-address`).
    pub metrics_bind_address: Option<SocketAddr>,
    /// clusterCIDR, comma-separated, both families (`--cluster-cidr`).
    pub cluster_cidrs: Vec<IpCidr>,
    /// nodePortAddresses (`--node-port-addresses`).
    pub node_port_addresses: Option<NodePortAddresses>,
    /// iptables.masqueradeAll or nftables.masqueradeAll (`--masquerade-all`).
    pub masquerade_all: Option<bool>,
    /// iptables.localhostNodePorts (`--localhost-nodeports`).
    pub localhost_nodeports: Option<bool>,
    /// detectLocalMode (`--detect-local-mode`).
    pub detect_local_mode: Option<DetectLocalMode>,
    /// detectLocal.interfaceNamePrefix (`--pod-interface-name-prefix`).
    pub pod_interface_name_prefix: Option<String>,
    /// detectLocal.bridgeInterface (`--pod-bridge-interface`).
    pub pod_bridge_interface: Option<String>,
    /// The syncPeriod of the file's mode (iptables.syncPeriod for "" and iptables,
    /// nftables.syncPeriod, ipvs.syncPeriod), in whole seconds rounded up
    /// (`--resync-interval`): how often kube-proxy re-synchronizes everything, as svc-agent's
    /// full resync.
    pub resync_interval_secs: Option<u64>,
}

/// nodePortAddresses: CIDRs and kube-proxy's keywords (`all` and `localhost` expand to
/// CIDRs here; `primary` needs the node's addresses, which main.rs knows).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodePortAddresses {
    pub cidrs: Vec<IpCidr>,
    /// `primary`: the node's primary address of each family (the first --node-ip of
    /// each family, or bindAddress).
    pub primary: bool,
}

/// A field svc-agent does not act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The field's path, e.g. `conntrack.maxPerCore`.
    pub field: String,
    pub kind: NoticeKind,
    /// Why, for the log.
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    /// Known to kube-proxy, given a value, and not what svc-agent does or has.
    Unsupported,
    /// Not a field of KubeProxyConfiguration v1alpha1.
    Unknown,
    /// Accepted, with nothing to do: e.g. `mode: ipvs` (this dataplane replaces it).
    Info,
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            NoticeKind::Unsupported => write!(
                f,
                "config field {} is not supported: {}",
                self.field, self.reason
            ),
            NoticeKind::Unknown => write!(
                f,
                "config field {} is unknown (not a field of {KIND} {API_VERSION}){}",
                self.field, self.reason
            ),
            NoticeKind::Info => write!(f, "config field {}: {}", self.field, self.reason),
        }
    }
}

/// The notices of a file, in the order of the fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub notices: Vec<Notice>,
}

impl Report {
    /// The fields of notices of `kind`.
    pub fn fields(&self, kind: NoticeKind) -> Vec<&str> {
        self.notices
            .iter()
            .filter(|n| n.kind == kind)
            .map(|n| n.field.as_str())
            .collect()
    }

    fn push(&mut self, field: String, kind: NoticeKind, reason: impl Into<String>) {
        self.notices.push(Notice {
            field,
            kind,
            reason: reason.into(),
        });
    }
}

/// A file svc-agent refuses, naming the field (empty for the document as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.field.is_empty() {
            write!(f, "field {}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

fn err(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_string(),
        message: message.into(),
    }
}

/// Reads a KubeProxyConfiguration (YAML or JSON).
pub fn parse(text: &str) -> Result<(Settings, Report), ConfigError> {
    let yaml: serde_yaml::Value = serde_yaml::from_str(text)
        .map_err(|e| err("", format!("not a YAML or JSON document: {e}")))?;
    let json = serde_json::to_value(&yaml)
        .map_err(|e| err("", format!("not representable as JSON: {e}")))?;
    from_value(&json)
}

/// [`parse`], from the document as JSON.
pub fn from_value(doc: &Value) -> Result<(Settings, Report), ConfigError> {
    let Value::Object(map) = doc else {
        return Err(err(
            "",
            format!("expected a {KIND} object, found {}", type_name(doc)),
        ));
    };
    let mut report = Report::default();
    let mut s = Settings::default();
    let mut top = Obj::new("", map);

    let api_version = top.str("apiVersion")?.unwrap_or_default();
    if api_version != API_VERSION {
        return Err(err(
            "apiVersion",
            format!("{api_version:?}: expected {API_VERSION:?} (kube-proxy's configuration)"),
        ));
    }
    let kind = top.str("kind")?.unwrap_or_default();
    if kind != KIND {
        return Err(err("kind", format!("{kind:?}: expected {KIND:?}")));
    }

    // mode decides which section's syncPeriod (and masqueradeAll) kube-proxy reads.
    let mode = top.str("mode")?.unwrap_or_default();
    match mode {
        "" | "iptables" | "ipvs" | "nftables" => {
            if !mode.is_empty() {
                report.push(
                    "mode".into(),
                    NoticeKind::Info,
                    format!(
                        "{mode:?} accepted and ignored: svc-agent's eBPF dataplane replaces \
                         kube-proxy's {mode} mode (run one or the other, not both)"
                    ),
                );
            }
        }
        "kernelspace" => {
            return Err(err(
                "mode",
                "\"kernelspace\" is kube-proxy's Windows mode; svc-agent runs on Linux only",
            ));
        }
        other => {
            return Err(err(
                "mode",
                format!("{other:?} is not a proxy mode (\"\", iptables, ipvs, nftables)"),
            ));
        }
    }

    if let Some(gates) = top.object("featureGates")? {
        for (k, v) in gates.map {
            let field = format!("featureGates.{k}");
            if !v.is_boolean() {
                return Err(err(
                    &field,
                    format!("expected a boolean, found {}", type_name(v)),
                ));
            }
        }
        for k in gates.map.keys() {
            report.push(
                format!("featureGates.{k}"),
                NoticeKind::Unsupported,
                "svc-agent has no feature gates (kube-proxy's gate changes kube-proxy only)",
            );
        }
    }

    if let Some(mut cc) = top.object("clientConnection")? {
        s.kubeconfig = cc
            .str("kubeconfig")?
            .filter(|k| !k.is_empty())
            .map(PathBuf::from);
        for k in ["acceptContentTypes", "contentType"] {
            cc.unsupported(
                k,
                Ty::Str,
                "svc-agent's client always speaks JSON",
                &mut report,
            )?;
        }
        for k in ["qps", "burst"] {
            cc.unsupported(
                k,
                Ty::Number,
                "svc-agent's client is not rate-limited (it only watches, and patches LoadBalancer status)",
                &mut report,
            )?;
        }
        cc.finish(&mut report);
    }
    top.unsupported(
        "logging",
        Ty::Object,
        "svc-agent's logging is set with RUST_LOG (e.g. RUST_LOG=debug)",
        &mut report,
    )?;

    s.node_name = top
        .str("hostnameOverride")?
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_string);
    if let Some(b) = top.str("bindAddress")?.filter(|b| !b.is_empty()) {
        let ip: IpAddr = b
            .trim()
            .parse()
            .map_err(|_| err("bindAddress", format!("{b:?} is not an IP address")))?;
        s.bind_address = (!ip.is_unspecified()).then_some(ip);
    }
    s.healthz_bind_address = bind_address(&mut top, "healthzBindAddress", HEALTHZ_PORT)?;
    s.metrics_bind_address = bind_address(&mut top, "metricsBindAddress", METRICS_PORT)?;
    // svc-agent always behaves as with `true` (a status port it cannot bind stops it);
    // `false` is kube-proxy's default, which kubeadm writes: no notice for it.
    top.bool("bindAddressHardFail")?;
    top.unsupported(
        "enableProfiling",
        Ty::Bool,
        "svc-agent serves no /debug/pprof",
        &mut report,
    )?;
    top.unsupported(
        "showHiddenMetricsForVersion",
        Ty::Str,
        "svc-agent's metrics are its own (svc_*), with no hidden ones",
        &mut report,
    )?;

    let mut masquerade_all = false;
    let mut sync_period = None;
    let sync_section = match mode {
        "" | "iptables" => "iptables",
        m => m,
    };
    for section in ["iptables", "nftables", "ipvs"] {
        let Some(mut sec) = top.object(section)? else {
            continue;
        };
        if section != "ipvs" && sec.bool("masqueradeAll")? == Some(true) {
            masquerade_all = true;
        }
        let period = sec.duration("syncPeriod")?;
        if section == sync_section {
            sync_period = period.filter(|d| !d.is_zero());
        } else if period.is_some_and(|d| !d.is_zero()) {
            report.push(
                format!("{section}.syncPeriod"),
                NoticeKind::Info,
                format!("ignored: mode is {mode:?}, whose section is {sync_section}"),
            );
        }
        sec.unsupported(
            "minSyncPeriod",
            Ty::Duration,
            "svc-agent writes each change as it arrives (map entries, not a rule reload)",
            &mut report,
        )?;
        match section {
            "iptables" | "nftables" => {
                sec.unsupported(
                    "masqueradeBit",
                    Ty::Number,
                    "svc-agent marks no packet: its masquerading is decided in the eBPF programs",
                    &mut report,
                )?;
            }
            _ => {}
        }
        match section {
            "iptables" => {
                s.localhost_nodeports = sec.bool("localhostNodePorts")?;
                if sec.bool("snatNodeInternalIP")? == Some(false) {
                    report.push(
                        "iptables.snatNodeInternalIP".into(),
                        NoticeKind::Unsupported,
                        "svc-agent always masquerades to the node's primary address (--node-ip, \
                         else the Node's InternalIP), as with true",
                    );
                }
            }
            "ipvs" => {
                for (k, ty) in [
                    ("scheduler", Ty::Str),
                    ("excludeCIDRs", Ty::StrList),
                    ("strictARP", Ty::Bool),
                    ("tcpTimeout", Ty::Duration),
                    ("tcpFinTimeout", Ty::Duration),
                    ("udpTimeout", Ty::Duration),
                ] {
                    sec.unsupported(
                        k,
                        ty,
                        "an IPVS setting; svc-agent uses no IPVS (its backends are chosen in \
                         the eBPF programs, and it creates no kube-ipvs0 to answer ARP for)",
                        &mut report,
                    )?;
                }
            }
            _ => {}
        }
        sec.finish(&mut report);
    }
    s.masquerade_all = masquerade_all.then_some(true);
    s.resync_interval_secs = sync_period.map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0));

    if let Some(mut wk) = top.object("winkernel")? {
        for (k, ty) in [
            ("networkName", Ty::Str),
            ("sourceVip", Ty::Str),
            ("enableDSR", Ty::Bool),
            ("rootHnsEndpointName", Ty::Str),
            ("forwardHealthCheckVip", Ty::Bool),
        ] {
            wk.unsupported(
                k,
                ty,
                "a Windows setting; svc-agent runs on Linux",
                &mut report,
            )?;
        }
        wk.finish(&mut report);
    }
    top.unsupported(
        "windowsRunAsService",
        Ty::Bool,
        "a Windows setting; svc-agent runs on Linux",
        &mut report,
    )?;

    if let Some(m) = top.str("detectLocalMode")?.filter(|m| !m.is_empty()) {
        s.detect_local_mode = Some(
            m.parse::<DetectLocalMode>()
                .map_err(|e| err("detectLocalMode", e))?,
        );
    }
    if let Some(mut dl) = top.object("detectLocal")? {
        s.pod_bridge_interface = dl
            .str("bridgeInterface")?
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        s.pod_interface_name_prefix = dl
            .str("interfaceNamePrefix")?
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        dl.finish(&mut report);
    }
    if let Some(c) = top.str("clusterCIDR")? {
        for part in c.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let cidr = part.parse::<IpCidr>().map_err(|e| {
                err(
                    "clusterCIDR",
                    format!("{part:?} is {e} (expected e.g. 10.244.0.0/16,fd00:10:244::/56)"),
                )
            })?;
            s.cluster_cidrs.push(cidr);
        }
    }
    if let Some(list) = top.str_list("nodePortAddresses")? {
        let mut npa = NodePortAddresses::default();
        for a in list.iter().map(|a| a.trim()) {
            match a {
                "primary" => npa.primary = true,
                "all" => npa
                    .cidrs
                    .extend(["0.0.0.0/0", "::/0"].map(|c| c.parse::<IpCidr>().unwrap())),
                "localhost" => npa
                    .cidrs
                    .extend(["127.0.0.0/8", "::1/128"].map(|c| c.parse::<IpCidr>().unwrap())),
                cidr => npa.cidrs.push(cidr.parse::<IpCidr>().map_err(|e| {
                    err(
                        "nodePortAddresses",
                        format!("{cidr:?} is {e} (expected a CIDR, or primary, localhost or all)"),
                    )
                })?),
            }
        }
        if !list.is_empty() {
            s.node_port_addresses = Some(npa);
        }
    } else if mode == "nftables" {
        report.push(
            "nodePortAddresses".into(),
            NoticeKind::Info,
            "unset: kube-proxy's nftables mode then serves NodePorts on the node's primary \
             addresses only, svc-agent on every node address (set [primary] for the former)",
        );
    }
    top.unsupported(
        "oomScoreAdj",
        Ty::Number,
        "svc-agent leaves its OOM score to the kubelet (system-node-critical pods get -997)",
        &mut report,
    )?;
    if let Some(mut ct) = top.object("conntrack")? {
        for (k, ty) in [
            ("maxPerCore", Ty::Number),
            ("min", Ty::Number),
            ("tcpEstablishedTimeout", Ty::Duration),
            ("tcpCloseWaitTimeout", Ty::Duration),
            ("tcpBeLiberal", Ty::Bool),
            ("udpTimeout", Ty::Duration),
            ("udpStreamTimeout", Ty::Duration),
        ] {
            ct.unsupported(
                k,
                ty,
                "svc-agent sets no nf_conntrack sysctl: Service flows are tracked in its own \
                 eBPF connection table (sized with --ct-map-max), not by the kernel's conntrack",
                &mut report,
            )?;
        }
        ct.finish(&mut report);
    }
    top.unsupported(
        "configSyncPeriod",
        Ty::Duration,
        "svc-agent's watches have no informer resync (--resync-interval re-reads everything)",
        &mut report,
    )?;
    top.unsupported(
        "portRange",
        Ty::Str,
        "unused by kube-proxy itself since its userspace mode was removed",
        &mut report,
    )?;
    top.unsupported(
        "udpIdleTimeout",
        Ty::Duration,
        "a setting of kube-proxy's removed userspace mode",
        &mut report,
    )?;
    top.finish(&mut report);
    Ok((s, report))
}

fn bind_address(
    obj: &mut Obj<'_>,
    key: &'static str,
    default_port: u16,
) -> Result<Option<SocketAddr>, ConfigError> {
    let field = obj.path(key);
    let Some(v) = obj.str(key)?.map(str::trim).filter(|v| !v.is_empty()) else {
        // kube-proxy's "unset": its default, which is svc-agent's.
        return Ok(None);
    };
    if let Ok(a) = v.parse::<SocketAddr>() {
        return Ok(Some(a));
    }
    // An address without a port takes kube-proxy's default port.
    let ip = v.trim_start_matches('[').trim_end_matches(']');
    ip.parse::<IpAddr>()
        .map(|ip| Some(SocketAddr::new(ip, default_port)))
        .map_err(|_| {
            err(
                &field,
                format!("{v:?} is not IP:PORT (e.g. 0.0.0.0:{default_port})"),
            )
        })
}

/// The JSON type a known field must have.
#[derive(Clone, Copy)]
enum Ty {
    Str,
    Bool,
    Number,
    /// A Go duration string (`30s`, `1m30s`, `0s`).
    Duration,
    StrList,
    /// Any object (not looked into: logging's options vary by version).
    Object,
}

/// One object of the document, with the keys read so far: what is left is unknown.
struct Obj<'a> {
    prefix: String,
    map: &'a Map<String, Value>,
    used: BTreeSet<&'a str>,
}

impl<'a> Obj<'a> {
    fn new(prefix: &str, map: &'a Map<String, Value>) -> Self {
        Obj {
            prefix: prefix.to_string(),
            map,
            used: BTreeSet::new(),
        }
    }

    fn path(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    /// The value of `key`; `None` when absent or null (Go's zero value of a pointer).
    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.used.insert(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn wrong(&self, key: &str, want: &str, v: &Value) -> ConfigError {
        err(
            &self.path(key),
            format!("expected {want}, found {}", type_name(v)),
        )
    }

    fn str(&mut self, key: &'static str) -> Result<Option<&'a str>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong(key, "a string", v)),
        }
    }

    fn bool(&mut self, key: &'static str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.wrong(key, "a boolean", v)),
        }
    }

    fn duration(&mut self, key: &'static str) -> Result<Option<Duration>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => go_duration(s)
                .map(Some)
                .map_err(|e| err(&self.path(key), format!("{s:?}: {e}"))),
            Some(v) => Err(self.wrong(key, "a duration string (e.g. \"30s\")", v)),
        }
    }

    fn str_list(&mut self, key: &'static str) -> Result<Option<Vec<&'a str>>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .ok_or_else(|| self.wrong(key, "a list of strings", i))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(v) => Err(self.wrong(key, "a list of strings", v)),
        }
    }

    fn object(&mut self, key: &'static str) -> Result<Option<Obj<'a>>, ConfigError> {
        let path = self.path(key);
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(Obj::new(&path, m))),
            Some(v) => Err(self.wrong(key, "an object", v)),
        }
    }

    /// A field svc-agent does not act on: its type is checked, and a value other than
    /// kube-proxy's zero value is reported with `reason`.
    fn unsupported(
        &mut self,
        key: &'static str,
        ty: Ty,
        reason: &str,
        report: &mut Report,
    ) -> Result<(), ConfigError> {
        let Some(v) = self.get(key) else {
            return Ok(());
        };
        let set = match ty {
            Ty::Str => self.str(key)?.is_some_and(|s| !s.is_empty()),
            Ty::Bool => self.bool(key)? == Some(true),
            Ty::Number => match v {
                Value::Number(_) => !is_zero(v),
                _ => return Err(self.wrong(key, "a number", v)),
            },
            Ty::Duration => self.duration(key)?.is_some_and(|d| !d.is_zero()),
            Ty::StrList => self.str_list(key)?.is_some_and(|l| !l.is_empty()),
            Ty::Object => match v {
                Value::Object(_) => !is_zero(v),
                _ => return Err(self.wrong(key, "an object", v)),
            },
        };
        if set {
            report.push(self.path(key), NoticeKind::Unsupported, reason);
        }
        Ok(())
    }

    /// Reports the keys no one read as unknown.
    fn finish(self, report: &mut Report) {
        for k in self.map.keys() {
            if !self.used.contains(k.as_str()) {
                let hint = UNKNOWN_HINTS
                    .iter()
                    .find(|(path, _)| *path == self.path(k))
                    .map(|(_, h)| format!(": {h}"))
                    .unwrap_or_default();
                report.push(self.path(k), NoticeKind::Unknown, hint);
            }
        }
    }
}

/// Fields of kube-proxy's internal configuration that v1alpha1 spells differently: a file
/// that has them is not one kube-proxy reads them from either.
const UNKNOWN_HINTS: &[(&str, &str)] = &[
    (
        "masqueradeAll",
        "v1alpha1 spells it iptables.masqueradeAll (or nftables.masqueradeAll)",
    ),
    (
        "syncPeriod",
        "v1alpha1 spells it iptables.syncPeriod (or that of the file's mode)",
    ),
    (
        "detectLocal.clusterCIDRs",
        "v1alpha1 has clusterCIDR (comma-separated, both families)",
    ),
];

/// kube-proxy's zero value: what kubeadm writes for a field it leaves to the default.
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty() || s == "0" || go_duration(s).is_ok_and(|d| d.is_zero()),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.values().all(is_zero),
    }
}

fn type_name(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// A Go duration (`time.ParseDuration`): `0`, or a sequence of decimal numbers each with
/// a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), e.g. `1m30s`, `1.5h`. Negative ones are
/// refused (no kube-proxy duration may be negative).
pub fn go_duration(s: &str) -> Result<Duration, String> {
    const BAD: &str = "not a duration (e.g. 30s, 1m30s, 500ms)";
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.starts_with('-') {
        return Err("a negative duration".into());
    }
    if s.is_empty() {
        return Err(BAD.into());
    }
    let units: BTreeMap<&str, f64> = [
        ("ns", 1e-9),
        ("us", 1e-6),
        ("µs", 1e-6),
        ("μs", 1e-6),
        ("ms", 1e-3),
        ("s", 1.0),
        ("m", 60.0),
        ("h", 3600.0),
    ]
    .into_iter()
    .collect();
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or(BAD)?;
        let num: f64 = rest[..num_len].parse().map_err(|_| BAD)?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = units.get(&rest[..unit_len]).ok_or(BAD)?;
        total += num * unit;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| BAD.into())
}

#[cfg(test)]
mod tests;
