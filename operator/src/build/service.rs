//! The two Services: a headless one that gives each queue pod a stable DNS name, and the
//! client Service applications send to.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Component, Instance, LABEL_SERVING};
use crate::resource::SERVER_PORT;

pub const PORT_NAME: &str = "http";

/// Headless Service of the StatefulSet: `<pod>.<name>-headless` resolves to each pod,
/// ready or not, so replicas can reach one another while starting.
pub fn headless_service(instance: &Instance<'_>) -> Service {
    Service {
        metadata: instance.metadata(instance.headless_service_name(), Component::QueueServer),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(instance.selector_labels()),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.into()),
                port: SERVER_PORT,
                target_port: Some(IntOrString::String(PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Client Service: routes to ready pods that are serving (not being drained).
pub fn client_service(instance: &Instance<'_>) -> Service {
    let mut selector = instance.selector_labels();
    selector.insert(LABEL_SERVING.into(), "true".into());
    Service {
        metadata: instance.metadata(instance.client_service_name(), Component::QueueServer),
        spec: Some(ServiceSpec {
            type_: Some(instance.service_type().as_str().into()),
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.into()),
                port: instance.service_port(),
                target_port: Some(IntOrString::String(PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}
