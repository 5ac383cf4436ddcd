//! svc-agent: keeps the Service maps of svc-ebpf in sync with the cluster, and the library
//! behind svcctl. Data flows one way, top to bottom; no module imports one above it:
//!
//! | layer | modules | what |
//! |---|---|---|
//! | sources | [`kubernetes`], [`manifest`] | the Kubernetes watches and the manifest directory, each converting what it reads into the model |
//! | model | [`model`] | Services and endpoints, typed and validated; the [`Problem`](model::Problem)s of what was skipped |
//! | desired state | [`desired`] | the frontends, backends and policies this node must serve |
//! | reconciler | [`reconcile`] (with [`alloc`]) | the difference against what the maps hold, written in a safe order |
//! | dataplane | [`dataplane`] | the only module that touches BPF: map list and layouts, the store, loading and attaching |
//!
//! Beside the flow: [`agent`] runs it (the loop), [`http`] serves the agent's health and
//! metrics endpoints and the Services' healthCheckNodePorts ([`metrics`] is the registry),
//! and svcctl's views [`inspect`] and [`trace`] read through the dataplane; [`kubeproxy_config`]
//! reads kube-proxy's configuration file for `svc-agent --config`. [`addr`] (the
//! address types every layer shares), [`packet`] (a frame builder for tests, trace and
//! benchmarks) and [`logfmt`] (how log lines show lists and durations) are leaves.
pub mod addr;
pub mod agent;
pub mod alloc;
pub mod dataplane;
pub mod desired;
pub mod http;
pub mod inspect;
pub mod kubeproxy_config;
pub mod kubernetes;
pub mod l2;
pub mod lbipam;
pub mod logfmt;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod monitor;
pub mod packet;
pub mod reconcile;
pub mod trace;
