//! ServiceCIDR objects (networking.k8s.io/v1).
use super::*;
use k8s_openapi::api::networking::v1::{ServiceCIDR, ServiceCIDRSpec};

fn service_cidr(name: &str, cidrs: &[&str]) -> ServiceCIDR {
    ServiceCIDR {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(ServiceCIDRSpec {
            cidrs: Some(cidrs.iter().map(|c| c.to_string()).collect()),
        }),
        ..Default::default()
    }
}

#[test]
fn a_service_cidr_gives_its_cidrs_of_both_families() {
    let (id, cidrs, warnings) = service_cidr_from_k8s(&service_cidr(
        "kubernetes",
        &["10.96.0.0/12", "fd00:10:96::/112"],
    ))
    .unwrap();
    assert_eq!(id, ObjectRef::new("", "kubernetes"));
    assert_eq!(id.to_string(), "kubernetes", "cluster-scoped: no namespace");
    assert_eq!(
        cidrs,
        [
            "10.96.0.0/12".parse::<IpCidr>().unwrap(),
            "fd00:10:96::/112".parse().unwrap()
        ]
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    let (_, cidrs, warnings) =
        service_cidr_from_k8s(&service_cidr("v6", &["fd00::1:7/108"])).unwrap();
    assert_eq!(cidrs, ["fd00::/108".parse::<IpCidr>().unwrap()]);
    assert!(warnings.is_empty());
    // Host bits are cleared, duplicates counted once.
    let (_, cidrs, _) =
        service_cidr_from_k8s(&service_cidr("x", &["10.96.1.1/16", "10.96.0.0/16"])).unwrap();
    assert_eq!(cidrs, ["10.96.0.0/16".parse::<IpCidr>().unwrap()]);
}

#[test]
fn a_bad_service_cidr_names_the_field() {
    let e = service_cidr_from_k8s(&service_cidr("x", &["10.96.0.0/12", "10.96.0.0"]))
        .unwrap_err()
        .to_string();
    assert_eq!(e, "spec.cidrs[1] \"10.96.0.0\" is not a CIDR");
    let mut nameless = service_cidr("", &["10.96.0.0/12"]);
    assert_eq!(
        service_cidr_from_k8s(&nameless).unwrap_err(),
        InvalidObject::MissingName
    );
    nameless.metadata.name = None;
    assert!(service_cidr_from_k8s(&nameless).is_err());
    let (_, cidrs, warnings) = service_cidr_from_k8s(&ServiceCIDR {
        metadata: ObjectMeta {
            name: Some("empty".into()),
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    assert!(cidrs.is_empty());
    assert_eq!(warnings, ["spec.cidrs is empty: no service CIDR"]);
}
