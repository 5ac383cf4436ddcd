//! svc-agent: keeps the Service maps of svc-ebpf in sync with the desired state, and the
//! library behind svcctl. Data flows one way: sources (the manifest directory) -> `model`
//! -> `desired` -> `reconcile` -> `dataplane` (the only module that touches BPF).
pub mod addr;
pub mod agent;
pub mod alloc;
pub mod dataplane;
pub mod desired;
pub mod health;
pub mod inspect;
pub mod kubernetes;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod packet;
pub mod reconcile;
pub mod status;
pub mod trace;
