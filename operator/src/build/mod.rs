//! Desired state: pure functions from a `MessageQueue` (and the operator's defaults) to
//! the objects that run it. No I/O; the controller applies what these return.

mod config_map;
mod pod_disruption_budget;
mod secret;
mod service;
mod stateful_set;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

pub use config_map::{CONFIG_FILE, config_file_toml, config_map};
pub use pod_disruption_budget::pod_disruption_budget;
pub use secret::{TOKEN_KEY, check_user_secret, credentials_secret, generate_token, token_of};
pub use service::{client_service, headless_service};
pub use stateful_set::{DATA_VOLUME, RESTART_HASH_ANNOTATION, restart_hash, stateful_set};

use crate::resource::{DurabilityMode, MessageQueue, SERVER_PORT, ServiceType};

/// Settings the operator supplies where a `MessageQueue` leaves them out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Defaults {
    /// Image of the queue server.
    pub image: String,
    /// The cluster's DNS domain, used in the endpoint URL.
    pub cluster_domain: String,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            image: concat!("queuelet:", env!("CARGO_PKG_VERSION")).into(),
            cluster_domain: "cluster.local".into(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    #[error("the MessageQueue has no metadata.name")]
    MissingName,
    #[error("the MessageQueue {0} has no metadata.namespace")]
    MissingNamespace(String),
    #[error("Secret {secret} named by spec.auth.secretName has no non-empty `{TOKEN_KEY}` key")]
    UserSecretWithoutToken { secret: String },
}

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
/// On a queue pod: "true" while the client Service may route to it. The controller sets
/// "false" on a pod it is draining before a scale-down.
pub const LABEL_SERVING: &str = "queuelet.dev/serving";
pub const MANAGER: &str = "queuelet-operator";

/// What each object is, in the `app.kubernetes.io/component` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    QueueServer,
    Config,
    Credentials,
}

impl Component {
    fn as_str(self) -> &'static str {
        match self {
            Component::QueueServer => "queue-server",
            Component::Config => "config",
            Component::Credentials => "credentials",
        }
    }
}

/// One `MessageQueue`, checked to have what every builder needs.
#[derive(Clone, Debug)]
pub struct Instance<'a> {
    pub mq: &'a MessageQueue,
    pub name: &'a str,
    pub namespace: &'a str,
    /// Reference to `mq` set on every child, so deleting it garbage-collects them.
    pub owner: OwnerReference,
    pub defaults: &'a Defaults,
}

impl<'a> Instance<'a> {
    pub fn new(
        mq: &'a MessageQueue,
        owner: OwnerReference,
        defaults: &'a Defaults,
    ) -> Result<Self, BuildError> {
        let name = mq.metadata.name.as_deref().ok_or(BuildError::MissingName)?;
        let namespace = mq
            .metadata
            .namespace
            .as_deref()
            .ok_or_else(|| BuildError::MissingNamespace(name.into()))?;
        Ok(Instance {
            mq,
            name,
            namespace,
            owner,
            defaults,
        })
    }

    /// Labels that select this instance's queue pods; never change them (a StatefulSet's
    /// selector is immutable).
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_NAME.into(), "queuelet".into()),
            (LABEL_INSTANCE.into(), self.name.into()),
            (
                LABEL_COMPONENT.into(),
                Component::QueueServer.as_str().into(),
            ),
        ])
    }

    /// The selector as the scale subresource's `status.selector` wants it.
    pub fn selector_string(&self) -> String {
        self.selector_labels()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn labels(&self, component: Component) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_NAME.into(), "queuelet".into()),
            (LABEL_INSTANCE.into(), self.name.into()),
            (LABEL_MANAGED_BY.into(), MANAGER.into()),
            (LABEL_COMPONENT.into(), component.as_str().into()),
        ])
    }

    /// Metadata of a child: name, namespace, labels and the owner reference.
    fn metadata(&self, name: String, component: Component) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.into()),
            labels: Some(self.labels(component)),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }

    pub fn stateful_set_name(&self) -> String {
        self.name.into()
    }

    pub fn client_service_name(&self) -> String {
        self.name.into()
    }

    pub fn headless_service_name(&self) -> String {
        format!("{}-headless", self.name)
    }

    pub fn config_map_name(&self) -> String {
        format!("{}-config", self.name)
    }

    pub fn pod_disruption_budget_name(&self) -> String {
        self.name.into()
    }

    /// The user's Secret when `spec.auth.secretName` names one, else the operator's.
    pub fn credentials_secret_name(&self) -> String {
        self.user_secret_name()
            .map(String::from)
            .unwrap_or_else(|| format!("{}-credentials", self.name))
    }

    pub fn user_secret_name(&self) -> Option<&str> {
        self.mq.spec.auth.as_ref()?.secret_name.as_deref()
    }

    pub fn image(&self) -> &str {
        self.mq
            .spec
            .image
            .as_deref()
            .unwrap_or(&self.defaults.image)
    }

    pub fn durability(&self) -> (DurabilityMode, Option<i32>) {
        match &self.mq.spec.durability {
            Some(d) => (d.mode, d.interval_ms),
            None => (DurabilityMode::Fsync, None),
        }
    }

    pub fn ephemeral(&self) -> bool {
        self.mq.spec.ephemeral == Some(true)
    }

    pub fn service_port(&self) -> i32 {
        self.mq
            .spec
            .service
            .as_ref()
            .and_then(|s| s.port)
            .unwrap_or(SERVER_PORT)
    }

    pub fn service_type(&self) -> ServiceType {
        self.mq
            .spec
            .service
            .as_ref()
            .and_then(|s| s.type_)
            .unwrap_or_default()
    }

    /// URL of the client Service, for `status.endpoint`.
    pub fn endpoint(&self) -> String {
        format!(
            "http://{}.{}.svc.{}:{}",
            self.client_service_name(),
            self.namespace,
            self.defaults.cluster_domain,
            self.service_port()
        )
    }
}

/// Every object a `MessageQueue` needs. `None` where an object must not exist (the
/// controller deletes one left over).
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub config_map: ConfigMap,
    /// `None` when the user brings their own Secret.
    pub credentials_secret: Option<Secret>,
    pub headless_service: Service,
    pub client_service: Service,
    pub stateful_set: StatefulSet,
    /// `None` with a single replica: a budget would block every voluntary eviction.
    pub pod_disruption_budget: Option<PodDisruptionBudget>,
}

impl Desired {
    /// Builds everything. `existing_secret` is the credentials Secret found in the cluster,
    /// whose token is kept; `new_token` is called only when there is none to keep.
    pub fn build(
        instance: &Instance<'_>,
        existing_secret: Option<&Secret>,
        new_token: impl FnOnce() -> String,
    ) -> Desired {
        Desired {
            config_map: config_map(instance),
            credentials_secret: credentials_secret(instance, existing_secret, new_token),
            headless_service: headless_service(instance),
            client_service: client_service(instance),
            stateful_set: stateful_set(instance),
            pod_disruption_budget: pod_disruption_budget(instance),
        }
    }
}
