//! The StatefulSet of queue servers and its pod template: one volume per replica, the
//! queue server container (or native sidecar beside the user's consumer), a restrictive
//! security context, and a hash of the settings that need a restart.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount, VolumeResourceRequirements,
    WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::config_map::CONFIG_FILE;
use super::secret::TOKEN_KEY;
use super::service::PORT_NAME;
use super::{Component, Instance, LABEL_SERVING};
use crate::resource::{DEFAULT_STORAGE_SIZE, DurabilityMode, SERVER_PORT};

/// Pod annotation holding [`restart_hash`]: it changes exactly when the pods must restart.
pub const RESTART_HASH_ANNOTATION: &str = "queuelet.dev/restart-hash";

pub const CONTAINER_NAME: &str = "queuelet";
/// Name of the data volume, and so the prefix of each claim: `queuelet-data-<pod>`.
pub const DATA_VOLUME: &str = "queuelet-data";
const CONFIG_VOLUME: &str = "queuelet-config";
const AUTH_VOLUME: &str = "queuelet-auth";
const TMP_VOLUME: &str = "queuelet-tmp";
/// The CA certificates trusted for https pushes, when the MessageQueue names some.
const PUSH_CA_VOLUME: &str = "queuelet-push-ca";
const PUSH_CA_DIR: &str = "/etc/queuelet-push-ca";
const PUSH_CA_FILE: &str = "ca.crt";
/// Shared by the queue server and the consumer's containers: the server's Unix socket.
const SOCKET_VOLUME: &str = "queuelet-socket";
const SOCKET_DIR: &str = "/var/run/queuelet";
/// Where the consumer's containers find the queue server's Unix socket.
const SOCKET_PATH: &str = "/var/run/queuelet/queuelet.sock";
const DATA_DIR: &str = "/data";
const CONFIG_DIR: &str = "/etc/queuelet";
const AUTH_DIR: &str = "/etc/queuelet-auth";
/// The non-root user and group the queue server runs as (the distroless "nonroot" ids).
const RUN_AS: i64 = 65_532;
/// Long enough for the server to finish in-flight requests and sync its log.
const TERMINATION_GRACE_SECONDS: i64 = 60;
/// The label the StatefulSet controller puts on each pod: its ordinal.
const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

pub fn stateful_set(instance: &Instance<'_>) -> StatefulSet {
    let retention = if instance
        .mq
        .spec
        .storage
        .as_ref()
        .and_then(|s| s.delete_claims_on_delete)
        == Some(true)
    {
        "Delete"
    } else {
        "Retain"
    };
    StatefulSet {
        metadata: instance.metadata(instance.stateful_set_name(), Component::QueueServer),
        spec: StatefulSetSpec {
            replicas: Some(instance.mq.spec.replicas),
            service_name: Some(instance.headless_service_name()),
            selector: LabelSelector {
                match_labels: Some(instance.selector_labels()),
                ..LabelSelector::default()
            },
            // Replicas hold independent partitions: start and stop them together.
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                ..StatefulSetUpdateStrategy::default()
            }),
            // A scale-down never deletes a claim: its volume may still hold messages.
            persistent_volume_claim_retention_policy: (!instance.ephemeral()).then(|| {
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(retention.into()),
                    when_scaled: Some("Retain".into()),
                }
            }),
            volume_claim_templates: (!instance.ephemeral())
                .then(|| vec![volume_claim_template(instance)]),
            template: pod_template(instance),
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    }
}

fn volume_claim_template(instance: &Instance<'_>) -> PersistentVolumeClaim {
    let storage = instance.mq.spec.storage.as_ref();
    let size = storage
        .and_then(|s| s.size.clone())
        .unwrap_or_else(|| Quantity(DEFAULT_STORAGE_SIZE.into()));
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.into()),
            labels: Some(instance.selector_labels()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: storage.and_then(|s| s.storage_class_name.clone()),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".into(), size)])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

fn pod_template(instance: &Instance<'_>) -> PodTemplateSpec {
    let spec = &instance.mq.spec;
    let pod = spec.pod.clone().unwrap_or_default();
    let consumer = spec.consumer.as_ref().map(|c| &c.template);

    let mut labels = consumer
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.extend(pod.labels.clone());
    labels.extend(instance.labels(Component::QueueServer));
    labels.insert(LABEL_SERVING.into(), "true".into());

    let mut annotations = consumer
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default();
    annotations.extend(pod.annotations.clone());
    annotations.insert(RESTART_HASH_ANNOTATION.into(), restart_hash(instance));

    let user_spec = consumer.and_then(|t| t.spec.clone());
    let beside_consumer = user_spec.is_some();
    let server = server_container(instance, pod.resources.clone(), beside_consumer);
    let mut pod_spec = match user_spec {
        Some(mut user) => {
            for container in &mut user.containers {
                add_client_env(instance, container);
                add_socket_mount(container);
            }
            // A native sidecar: started (and ready) before the consumers, stopped after them.
            let mut sidecar = server;
            sidecar.restart_policy = Some("Always".into());
            let mut init = vec![sidecar];
            init.extend(user.init_containers.take().unwrap_or_default());
            user.init_containers = Some(init);
            user.termination_grace_period_seconds = Some(
                user.termination_grace_period_seconds
                    .unwrap_or(0)
                    .max(TERMINATION_GRACE_SECONDS),
            );
            user
        }
        None => PodSpec {
            containers: vec![server],
            // The queue server never calls the Kubernetes API.
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
            ..PodSpec::default()
        },
    };

    let mut volumes = pod_spec.volumes.take().unwrap_or_default();
    volumes.extend(server_volumes(instance, beside_consumer));
    pod_spec.volumes = Some(volumes);

    pod_spec.security_context = Some(pod_security_context(
        pod_spec.security_context.take(),
        consumer.is_none(),
    ));

    if !pod.node_selector.is_empty() {
        let mut selector = pod_spec.node_selector.take().unwrap_or_default();
        selector.extend(pod.node_selector.clone());
        pod_spec.node_selector = Some(selector);
    }
    if !pod.tolerations.is_empty() {
        let mut tolerations = pod_spec.tolerations.take().unwrap_or_default();
        tolerations.extend(pod.tolerations.clone());
        pod_spec.tolerations = Some(tolerations);
    }
    if let Some(priority) = &pod.priority_class_name {
        pod_spec.priority_class_name = Some(priority.clone());
    }
    pod_spec.affinity = pod
        .affinity
        .clone()
        .or(pod_spec.affinity.take())
        .or_else(|| Some(spread_over_nodes(instance)));

    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(pod_spec),
    }
}

/// The queue server. Beside a consumer it serves on a Unix socket in a volume the
/// consumer's containers mount too, as well as on TCP.
fn server_container(
    instance: &Instance<'_>,
    resources: Option<ResourceRequirements>,
    beside_consumer: bool,
) -> Container {
    let (mode, interval_ms) = instance.durability();
    let mut args: Vec<String> = [
        "--listen",
        "0.0.0.0:8080",
        "--data-dir",
        DATA_DIR,
        "--config",
        &format!("{CONFIG_DIR}/{CONFIG_FILE}"),
        "--token-file",
        &format!("{AUTH_DIR}/{TOKEN_KEY}"),
        "--durability",
        mode.as_flag(),
        "--log-format",
        "json",
    ]
    .map(String::from)
    .into();
    if let (DurabilityMode::Interval, Some(ms)) = (mode, interval_ms) {
        args.extend(["--sync-interval-ms".into(), ms.to_string()]);
    }
    let mut volume_mounts = vec![
        mount(DATA_VOLUME, DATA_DIR, false),
        mount(CONFIG_VOLUME, CONFIG_DIR, true),
        mount(AUTH_VOLUME, AUTH_DIR, true),
        mount(TMP_VOLUME, "/tmp", false),
    ];
    if beside_consumer {
        args.extend(["--unix-socket".into(), SOCKET_PATH.into()]);
        volume_mounts.push(mount(SOCKET_VOLUME, SOCKET_DIR, false));
    }
    if instance.mq.spec.push_ca.is_some() {
        args.extend([
            "--push-ca-file".into(),
            format!("{PUSH_CA_DIR}/{PUSH_CA_FILE}"),
        ]);
        volume_mounts.push(mount(PUSH_CA_VOLUME, PUSH_CA_DIR, true));
    }
    let http_get = |path: &str| HTTPGetAction {
        path: Some(path.into()),
        port: IntOrString::String(PORT_NAME.into()),
        ..HTTPGetAction::default()
    };
    Container {
        name: CONTAINER_NAME.into(),
        image: Some(instance.image().into()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(args),
        env: Some(vec![EnvVar {
            name: "QUEUELET_REPLICA_ORDINAL".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: format!("metadata.labels['{POD_INDEX_LABEL}']"),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }]),
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.into()),
            container_port: SERVER_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        // Recovery replays the log before /readyz answers; allow up to 30 minutes for it
        // before liveness checks begin. Consumers start only once it succeeds.
        startup_probe: Some(Probe {
            http_get: Some(http_get("/readyz")),
            period_seconds: Some(2),
            timeout_seconds: Some(2),
            failure_threshold: Some(900),
            ..Probe::default()
        }),
        readiness_probe: Some(Probe {
            http_get: Some(http_get("/readyz")),
            period_seconds: Some(5),
            timeout_seconds: Some(2),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        liveness_probe: Some(Probe {
            http_get: Some(http_get("/healthz")),
            period_seconds: Some(10),
            timeout_seconds: Some(5),
            failure_threshold: Some(6),
            ..Probe::default()
        }),
        resources,
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            seccomp_profile: Some(runtime_default_seccomp()),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(volume_mounts),
        ..Container::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn server_volumes(instance: &Instance<'_>, beside_consumer: bool) -> Vec<Volume> {
    let mut volumes = Vec::new();
    if beside_consumer {
        // Holds nothing but the socket. The pod's fsGroup owns it, so the consumer's
        // containers (in that group) may connect to the server's 0660 socket.
        volumes.push(Volume {
            name: SOCKET_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity("1Mi".into())),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    if let Some(ca) = &instance.mq.spec.push_ca {
        volumes.push(Volume {
            name: PUSH_CA_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: ca.config_map_name.clone(),
                items: Some(vec![KeyToPath {
                    key: ca.key.clone().unwrap_or_else(|| PUSH_CA_FILE.into()),
                    path: PUSH_CA_FILE.into(),
                    ..KeyToPath::default()
                }]),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    if instance.ephemeral() {
        volumes.push(Volume {
            name: DATA_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        });
    }
    volumes.extend([
        Volume {
            name: CONFIG_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: instance.config_map_name(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: AUTH_VOLUME.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(instance.credentials_secret_name()),
                items: Some(vec![KeyToPath {
                    key: TOKEN_KEY.into(),
                    path: TOKEN_KEY.into(),
                    ..KeyToPath::default()
                }]),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: TMP_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity("64Mi".into())),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        },
    ]);
    volumes
}

/// The consumer's environment: where the queue server is (its URL, and its Unix socket,
/// which costs less per request) and the token it accepts. Variables the user already
/// sets are left alone.
fn add_client_env(instance: &Instance<'_>, container: &mut Container) {
    let env = container.env.get_or_insert_with(Vec::new);
    let ours = [
        EnvVar {
            name: "QUEUELET_URL".into(),
            value: Some(format!("http://127.0.0.1:{SERVER_PORT}")),
            ..EnvVar::default()
        },
        EnvVar {
            name: "QUEUELET_SOCKET".into(),
            value: Some(SOCKET_PATH.into()),
            ..EnvVar::default()
        },
        EnvVar {
            name: "QUEUELET_TOKEN".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: instance.credentials_secret_name(),
                    key: TOKEN_KEY.into(),
                    ..SecretKeySelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
    ];
    for var in ours {
        if !env.iter().any(|e| e.name == var.name) {
            env.push(var);
        }
    }
}

/// Mounts the socket's volume into a consumer's container, unless it already mounts
/// something there.
fn add_socket_mount(container: &mut Container) {
    let mounts = container.volume_mounts.get_or_insert_with(Vec::new);
    if !mounts
        .iter()
        .any(|m| m.mount_path == SOCKET_DIR || m.name == SOCKET_VOLUME)
    {
        mounts.push(mount(SOCKET_VOLUME, SOCKET_DIR, false));
    }
}

/// The pod's security context. The queue server's own container is locked down in its
/// container context; with a consumer, the user's pod settings are kept and only what
/// the volume needs (fsGroup) and the seccomp default are filled in.
fn pod_security_context(user: Option<PodSecurityContext>, server_only: bool) -> PodSecurityContext {
    let mut context = user.unwrap_or_default();
    if server_only {
        context.run_as_non_root = Some(true);
        context.run_as_user = Some(RUN_AS);
        context.run_as_group = Some(RUN_AS);
    }
    context.fs_group.get_or_insert(RUN_AS);
    context
        .fs_group_change_policy
        .get_or_insert_with(|| "OnRootMismatch".into());
    context
        .seccomp_profile
        .get_or_insert_with(runtime_default_seccomp);
    context
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..SeccompProfile::default()
    }
}

/// Default affinity: prefer one queue pod per node, so a node failure takes one partition.
fn spread_over_nodes(instance: &Instance<'_>) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        topology_key: "kubernetes.io/hostname".into(),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(instance.selector_labels()),
                            ..LabelSelector::default()
                        }),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

/// Hash of the settings that only take effect when the queue server restarts: image,
/// resources, durability and ports. Queue declarations (re-read live from the ConfigMap)
/// and the replica count are left out, so changing them never rolls the pods.
pub fn restart_hash(instance: &Instance<'_>) -> String {
    #[derive(Serialize)]
    struct RestartSettings<'a> {
        image: &'a str,
        resources: Option<&'a ResourceRequirements>,
        durability: &'a str,
        sync_interval_ms: Option<i32>,
        port: i32,
    }
    let (mode, interval_ms) = instance.durability();
    let settings = RestartSettings {
        image: instance.image(),
        resources: instance
            .mq
            .spec
            .pod
            .as_ref()
            .and_then(|p| p.resources.as_ref()),
        durability: mode.as_flag(),
        sync_interval_ms: interval_ms.filter(|_| mode == DurabilityMode::Interval),
        port: SERVER_PORT,
    };
    let json = serde_json::to_vec(&settings).expect("restart settings serialize");
    hex::encode(&Sha256::digest(&json)[..8])
}
