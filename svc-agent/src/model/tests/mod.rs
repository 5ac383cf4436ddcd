//! The model's conversions, tested on k8s-openapi objects; the fixtures are shared here.
use super::*;
use k8s_openapi::api::core::v1::{ServicePort as KPort, ServiceSpec};

fn k8s_service(ports: Vec<KPort>) -> corev1::Service {
    corev1::Service {
        metadata: ObjectMeta {
            name: Some("web".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("10.96.0.10".into()),
            ports: Some(ports),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn kport(name: &str, port: i32, proto: &str) -> KPort {
    KPort {
        name: Some(name.into()),
        port,
        protocol: Some(proto.into()),
        ..Default::default()
    }
}

// ---- Service semantics fields ----

fn lb_service() -> corev1::Service {
    let mut s = k8s_service(vec![KPort {
        node_port: Some(30080),
        ..kport("http", 80, "TCP")
    }]);
    s.spec.as_mut().unwrap().type_ = Some("LoadBalancer".into());
    s
}

fn spec_mut(s: &mut corev1::Service) -> &mut ServiceSpec {
    s.spec.as_mut().unwrap()
}

fn ingress(
    ip: Option<&str>,
    hostname: Option<&str>,
    mode: Option<&str>,
) -> corev1::LoadBalancerIngress {
    corev1::LoadBalancerIngress {
        ip: ip.map(Into::into),
        hostname: hostname.map(Into::into),
        ip_mode: mode.map(Into::into),
        ..Default::default()
    }
}

fn with_ingress(
    mut s: corev1::Service,
    entries: Vec<corev1::LoadBalancerIngress>,
) -> corev1::Service {
    s.status = Some(corev1::ServiceStatus {
        load_balancer: Some(corev1::LoadBalancerStatus {
            ingress: Some(entries),
        }),
        ..Default::default()
    });
    s
}

fn err(s: &corev1::Service) -> String {
    Service::from_k8s(s).unwrap_err().to_string()
}

mod endpoints;
mod service;
mod service_cidrs;
mod topology;
