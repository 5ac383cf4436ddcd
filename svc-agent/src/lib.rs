//! svc-agent: keeps the Service maps of svc-ebpf in sync with the desired state, and the
//! library behind svcctl. Data flows one way: sources (the manifest directory) -> `model`
//! -> `desired` -> `reconcile` -> `dataplane` (the only module that touches BPF). Beside
//! it, `http` serves the agent's own health and metrics endpoints and the Services'
//! healthCheckNodePorts (`metrics` is the registry).
pub mod addr;
pub mod agent;
pub mod alloc;
pub mod dataplane;
pub mod desired;
pub mod http;
pub mod inspect;
pub mod kubernetes;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod packet;
pub mod reconcile;
pub mod trace;
