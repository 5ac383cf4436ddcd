#![no_std]
// This file exists so svc-agent can name svc-ebpf as a build-dependency (cargo then rebuilds
// the agent when the eBPF sources change). The programs are in main.rs.
