//! The desired-state builders, from the representative MessageQueues under `fixtures/`:
//! snapshots of every built object (under `snapshots/`, for reviewers to read) and the
//! behaviour each object must have.

mod common;

use common::{FIXTURES, defaults, desired, fixture, objects};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Container, PodSpec, Secret};
use kube::Resource;
use queuelet_operator::build::{
    self, BuildError, CONFIG_FILE, Desired, Instance, LABEL_SERVING, RESTART_HASH_ANNOTATION,
};
use queuelet_operator::resource::MessageQueue;

#[test]
fn built_objects_match_their_snapshots() {
    for name in FIXTURES {
        let desired = desired(&fixture(name));
        let toml = desired.config_map.data.as_ref().unwrap()[CONFIG_FILE].clone();
        insta::with_settings!({
            description => format!("objects built from tests/fixtures/{name}.yaml"),
            omit_expression => true,
        }, {
            insta::assert_yaml_snapshot!(name, objects(&desired));
            // The configuration file again, as the queue server reads it.
            insta::assert_snapshot!(format!("{name}-config"), toml);
        });
    }
}

fn pod_spec(desired: &Desired) -> &PodSpec {
    desired.stateful_set.spec.template.spec.as_ref().unwrap()
}

fn server(desired: &Desired) -> &Container {
    let spec = pod_spec(desired);
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == "queuelet")
        .expect("a queuelet container")
}

fn restart_hash(desired: &Desired) -> String {
    let meta = desired
        .stateful_set
        .spec
        .template
        .metadata
        .as_ref()
        .unwrap();
    meta.annotations.as_ref().unwrap()[RESTART_HASH_ANNOTATION].clone()
}

fn edited(name: &str, edit: impl FnOnce(&mut MessageQueue)) -> MessageQueue {
    let mut mq = fixture(name);
    edit(&mut mq);
    mq
}

#[test]
fn generated_config_is_what_the_queue_server_parses() {
    for name in FIXTURES {
        let mq = fixture(name);
        let toml = &desired(&mq).config_map.data.unwrap()[CONFIG_FILE];
        let file = queuelet::config::ConfigFile::parse(toml)
            .unwrap_or_else(|e| panic!("{name}: the server refuses the config: {e:#}\n{toml}"));
        let declared = file.declarations();
        let mut expected: Vec<&str> = mq.spec.queues.iter().map(|q| q.name.as_str()).collect();
        expected.sort();
        let names: Vec<&str> = declared.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, expected, "{name}");
        for (queue, attrs) in &declared {
            attrs
                .validate(queue)
                .unwrap_or_else(|e| panic!("{name}: queue {queue} refused by the engine: {e}"));
        }
    }
}

#[test]
fn config_carries_every_attribute_set_in_the_spec() {
    let toml = &desired(&fixture("dead-letter")).config_map.data.unwrap()[CONFIG_FILE];
    let file = queuelet::config::ConfigFile::parse(toml).unwrap();
    let orders = &file.queues["orders"];
    assert_eq!(orders.visibility_timeout_seconds, 60);
    assert_eq!(orders.max_message_bytes, 131_072);
    assert_eq!(orders.retention_seconds, 86_400);
    assert_eq!(orders.rewind_seconds, 3_600);
    let dead_letter = orders.dead_letter.as_ref().unwrap();
    assert_eq!(dead_letter.queue, "orders-dlq");
    assert_eq!(dead_letter.max_receive_count, Some(5));
    assert_eq!(dead_letter.max_time_to_live_seconds, Some(3_600));
    let audit = &file.queues["audit_log"];
    assert_eq!((audit.polling_wait_seconds, audit.delay_seconds), (20, 10));
    assert_eq!(audit.max_backlog, 1_000_000);
    // Attributes left out keep the server's defaults.
    assert_eq!(
        file.queues["orders-dlq"],
        queuelet::engine::QueueAttributes {
            retention_seconds: 1_296_000,
            ..Default::default()
        }
    );
}

#[test]
fn a_resource_without_queues_gives_an_empty_config() {
    let toml = &desired(&fixture("minimal")).config_map.data.unwrap()[CONFIG_FILE];
    let file = queuelet::config::ConfigFile::parse(toml).unwrap();
    assert!(file.queues.is_empty(), "{toml}");
}

#[test]
fn credentials_token_is_generated_once_and_kept() {
    let mq = fixture("minimal");
    let owner = mq.controller_owner_ref(&()).unwrap();
    let defaults = defaults();
    let instance = Instance::new(&mq, owner, &defaults).unwrap();
    let first = build::credentials_secret(&instance, None, || "first".into()).unwrap();
    let token = &first.data.as_ref().unwrap()[build::TOKEN_KEY];
    assert_eq!(token, &ByteString(b"first".to_vec()));
    let again = build::credentials_secret(&instance, Some(&first), || {
        panic!("a kept token must not be regenerated")
    })
    .unwrap();
    assert_eq!(again, first);
}

#[test]
fn an_existing_secret_without_token_gets_one() {
    let mq = fixture("minimal");
    let defaults = defaults();
    let instance = Instance::new(&mq, mq.controller_owner_ref(&()).unwrap(), &defaults).unwrap();
    let emptied = Secret::default();
    let secret = build::credentials_secret(&instance, Some(&emptied), || "fresh".into()).unwrap();
    assert_eq!(
        secret.data.unwrap()[build::TOKEN_KEY],
        ByteString(b"fresh".to_vec())
    );
}

#[test]
fn generated_tokens_are_long_and_distinct() {
    let (a, b) = (build::generate_token(), build::generate_token());
    assert_eq!(a.len(), 64);
    assert_ne!(a, b);
}

#[test]
fn a_user_secret_replaces_the_operators() {
    let desired = desired(&fixture("dead-letter"));
    assert_eq!(desired.credentials_secret, None);
    let spec = pod_spec(&desired);
    let auth = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "queuelet-auth")
        .unwrap();
    assert_eq!(
        auth.secret.as_ref().unwrap().secret_name.as_deref(),
        Some("orders-token")
    );
}

#[test]
fn a_user_secret_must_hold_a_token() {
    let mut secret = Secret::default();
    secret.metadata.name = Some("orders-token".into());
    assert_eq!(
        build::check_user_secret(&secret),
        Err(BuildError::UserSecretWithoutToken {
            secret: "orders-token".into()
        })
    );
    secret.data = Some([(build::TOKEN_KEY.into(), ByteString(b"s3cret".to_vec()))].into());
    assert_eq!(build::check_user_secret(&secret), Ok(()));
}

#[test]
fn queue_and_replica_changes_do_not_restart_pods() {
    let base = desired(&fixture("dead-letter"));
    let more_queues = desired(&edited("dead-letter", |mq| {
        mq.spec
            .queues
            .push(queuelet_operator::resource::QueueSpec::named("extra"));
        mq.spec.queues[0].visibility_timeout_seconds = Some(5);
        mq.spec.replicas = 5;
    }));
    assert_eq!(
        base.stateful_set.spec.template, more_queues.stateful_set.spec.template,
        "the pod template must not change"
    );
    assert_ne!(base.config_map, more_queues.config_map);
}

#[test]
fn image_resources_and_durability_changes_restart_pods() {
    let base = restart_hash(&desired(&fixture("replicas-3")));
    let image = restart_hash(&desired(&edited("replicas-3", |mq| {
        mq.spec.image = Some("registry.example/queuelet:0.2.0".into())
    })));
    let resources = restart_hash(&desired(&edited("replicas-3", |mq| {
        mq.spec.pod.as_mut().unwrap().resources = None
    })));
    let durability = restart_hash(&desired(&edited("replicas-3", |mq| {
        mq.spec.durability = serde_json::from_str(r#"{"mode": "interval"}"#).unwrap()
    })));
    for changed in [&image, &resources, &durability] {
        assert_ne!(&base, changed);
    }
    assert_ne!(image, resources);
}

#[test]
fn the_server_gets_its_flags_and_ordinal() {
    let desired = desired(&fixture("dead-letter"));
    let server = server(&desired);
    let args = server.args.as_ref().unwrap().join(" ");
    for expected in [
        "--listen 0.0.0.0:8080",
        "--data-dir /data",
        "--config /etc/queuelet/queuelet.toml",
        "--token-file /etc/queuelet-auth/token",
        "--durability interval",
        "--sync-interval-ms 20",
    ] {
        assert!(args.contains(expected), "{expected:?} missing from {args}");
    }
    let ordinal = &server.env.as_ref().unwrap()[0];
    assert_eq!(ordinal.name, "QUEUELET_REPLICA_ORDINAL");
    let field = ordinal
        .value_from
        .as_ref()
        .unwrap()
        .field_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        field.field_path,
        "metadata.labels['apps.kubernetes.io/pod-index']"
    );
    let probe = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .clone()
            .unwrap()
    };
    assert_eq!(probe(&server.readiness_probe), "/readyz");
    assert_eq!(probe(&server.liveness_probe), "/healthz");
}

#[test]
fn the_server_runs_locked_down() {
    for name in FIXTURES {
        let desired = desired(&fixture(name));
        let context = server(&desired).security_context.clone().unwrap();
        assert_eq!(context.run_as_non_root, Some(true), "{name}");
        assert_eq!(context.read_only_root_filesystem, Some(true), "{name}");
        assert_eq!(context.allow_privilege_escalation, Some(false), "{name}");
        assert_eq!(
            context.capabilities.unwrap().drop,
            Some(vec!["ALL".into()]),
            "{name}"
        );
        assert_eq!(
            context.seccomp_profile.unwrap().type_,
            "RuntimeDefault",
            "{name}"
        );
        let pod = pod_spec(&desired).security_context.clone().unwrap();
        assert!(
            pod.fs_group.is_some(),
            "{name}: the volume needs an fsGroup"
        );
        assert!(
            pod_spec(&desired).termination_grace_period_seconds >= Some(60),
            "{name}"
        );
    }
}

#[test]
fn persistent_storage_becomes_claim_templates() {
    let sts = desired(&fixture("dead-letter")).stateful_set.spec;
    let claim = &sts.volume_claim_templates.as_ref().unwrap()[0];
    let spec = claim.spec.as_ref().unwrap();
    assert_eq!(spec.storage_class_name.as_deref(), Some("fast-ssd"));
    assert_eq!(
        spec.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
        "5Gi"
    );
    let retention = sts.persistent_volume_claim_retention_policy.unwrap();
    assert_eq!(retention.when_deleted.as_deref(), Some("Delete"));
    assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));

    let minimal = desired(&fixture("minimal")).stateful_set.spec;
    let claim = &minimal.volume_claim_templates.as_ref().unwrap()[0];
    let requests = claim
        .spec
        .as_ref()
        .unwrap()
        .resources
        .as_ref()
        .unwrap()
        .requests
        .clone();
    assert_eq!(requests.unwrap()["storage"].0, "1Gi");
    let retention = minimal.persistent_volume_claim_retention_policy.unwrap();
    assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));
}

#[test]
fn ephemeral_storage_is_an_empty_dir() {
    let desired = desired(&fixture("ephemeral"));
    assert_eq!(desired.stateful_set.spec.volume_claim_templates, None);
    let data = pod_spec(&desired)
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "queuelet-data")
        .unwrap();
    assert!(data.empty_dir.is_some());
    assert_eq!(
        server(&desired).image.as_deref(),
        Some("registry.example/queuelet:edge")
    );
}

#[test]
fn a_consumer_runs_beside_a_native_sidecar() {
    let desired = desired(&fixture("consumer"));
    let spec = pod_spec(&desired);
    let init = spec.init_containers.as_ref().unwrap();
    assert_eq!(init[0].name, "queuelet");
    assert_eq!(init[0].restart_policy.as_deref(), Some("Always"));
    assert_eq!(spec.containers.len(), 1);
    let worker = &spec.containers[0];
    let env = worker.env.as_ref().unwrap();
    let url = env.iter().find(|e| e.name == "QUEUELET_URL").unwrap();
    assert_eq!(url.value.as_deref(), Some("http://127.0.0.1:8080"));
    let token = env.iter().find(|e| e.name == "QUEUELET_TOKEN").unwrap();
    let secret_ref = token
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (secret_ref.name.as_str(), secret_ref.key.as_str()),
        ("thumbnails-credentials", "token")
    );
    assert!(
        env.iter().any(|e| e.name == "QUEUE"),
        "the user's env is kept"
    );
    assert_eq!(spec.service_account_name.as_deref(), Some("thumbnailer"));
    assert_eq!(spec.termination_grace_period_seconds, Some(120));
    let volumes: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert!(
        volumes.contains(&"scratch") && volumes.contains(&"queuelet-config"),
        "{volumes:?}"
    );
    let labels = desired
        .stateful_set
        .spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    assert_eq!(labels["team"], "media");
    assert_eq!(labels[LABEL_SERVING], "true");
}

/// Beside a consumer the server serves on a Unix socket too, in a volume every consumer
/// container mounts, and the consumer is told where it is; a queue without a consumer
/// has neither.
#[test]
fn a_consumer_finds_the_server_on_a_shared_unix_socket() {
    let desired = desired(&fixture("consumer"));
    let spec = pod_spec(&desired);
    let args = server(&desired).args.clone().unwrap();
    let at = args
        .iter()
        .position(|a| a == "--unix-socket")
        .expect("--unix-socket");
    assert_eq!(args[at + 1], "/var/run/queuelet/queuelet.sock");
    let mounted_at = |container: &Container| {
        container
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == "queuelet-socket")
            .map(|m| (m.mount_path.clone(), m.read_only))
    };
    let shared = Some(("/var/run/queuelet".to_string(), None));
    assert_eq!(mounted_at(server(&desired)), shared);
    let worker = &spec.containers[0];
    assert_eq!(mounted_at(worker), shared);
    let socket = worker
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "QUEUELET_SOCKET")
        .expect("QUEUELET_SOCKET");
    assert_eq!(
        socket.value.as_deref(),
        Some("/var/run/queuelet/queuelet.sock")
    );
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "queuelet-socket")
        .expect("the socket's volume");
    assert!(volume.empty_dir.is_some(), "{volume:?}");

    let alone = common::desired(&fixture("minimal"));
    assert!(
        !server(&alone)
            .args
            .clone()
            .unwrap()
            .contains(&"--unix-socket".to_string())
    );
    assert!(
        !pod_spec(&alone)
            .volumes
            .iter()
            .flatten()
            .any(|v| v.name == "queuelet-socket")
    );
}

/// A consumer container that already mounts something at the socket's directory keeps
/// its own mount (two mounts at one path would make the pod invalid).
#[test]
fn a_consumer_mount_at_the_socket_directory_is_kept() {
    let mq = edited("consumer", |mq| {
        let template = &mut mq.spec.consumer.as_mut().unwrap().template;
        let worker = &mut template.spec.as_mut().unwrap().containers[0];
        worker.volume_mounts.get_or_insert_with(Vec::new).push(
            k8s_openapi::api::core::v1::VolumeMount {
                name: "scratch".into(),
                mount_path: "/var/run/queuelet".into(),
                ..Default::default()
            },
        );
    });
    let desired = desired(&mq);
    let worker = &pod_spec(&desired).containers[0];
    let at_dir: Vec<&str> = worker
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| m.mount_path == "/var/run/queuelet")
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(at_dir, ["scratch"]);
}

#[test]
fn user_labels_cannot_take_over_the_selector() {
    let mq = edited("replicas-3", |mq| {
        let pod = mq.spec.pod.as_mut().unwrap();
        pod.labels
            .insert("app.kubernetes.io/instance".into(), "hijack".into());
    });
    let sts = desired(&mq).stateful_set.spec;
    let labels = sts.template.metadata.unwrap().labels.unwrap();
    assert_eq!(labels["app.kubernetes.io/instance"], "payments");
    for (key, value) in sts.selector.match_labels.unwrap() {
        assert_eq!(labels[&key], value, "the template must match the selector");
    }
}

#[test]
fn a_disruption_budget_exists_only_with_several_replicas() {
    assert_eq!(desired(&fixture("minimal")).pod_disruption_budget, None);
    let pdb = desired(&fixture("replicas-3"))
        .pod_disruption_budget
        .unwrap();
    let spec = pdb.spec.unwrap();
    assert_eq!(
        spec.max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
}

#[test]
fn every_object_is_labelled_and_owned() {
    for name in FIXTURES {
        let mq = fixture(name);
        for object in objects(&desired(&mq)) {
            let kind = object["kind"].as_str().unwrap().to_owned();
            let meta = &object["metadata"];
            assert_eq!(
                meta["namespace"],
                mq.metadata.namespace.clone().unwrap().as_str(),
                "{name} {kind}"
            );
            let labels = &meta["labels"];
            assert_eq!(
                labels["app.kubernetes.io/name"], "queuelet",
                "{name} {kind}"
            );
            assert_eq!(
                labels["app.kubernetes.io/instance"],
                mq.metadata.name.clone().unwrap().as_str()
            );
            assert_eq!(labels["app.kubernetes.io/managed-by"], "queuelet-operator");
            assert!(
                labels["app.kubernetes.io/component"].is_string(),
                "{name} {kind}"
            );
            let owner = &meta["ownerReferences"][0];
            assert_eq!(owner["kind"], "MessageQueue", "{name} {kind}");
            assert_eq!(owner["uid"], mq.metadata.uid.clone().unwrap().as_str());
            assert_eq!(owner["controller"], true);
        }
    }
}

#[test]
fn the_client_service_routes_only_to_serving_pods() {
    let desired = desired(&fixture("dead-letter"));
    let client = desired.client_service.spec.unwrap();
    assert_eq!(client.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(client.ports.unwrap()[0].port, 80);
    assert_eq!(client.selector.unwrap()[LABEL_SERVING], "true");
    let headless = desired.headless_service.spec.unwrap();
    assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
    assert_eq!(
        desired.stateful_set.spec.service_name.as_deref(),
        Some("orders-headless")
    );
}

#[test]
fn a_resource_without_namespace_is_refused() {
    let mut mq = fixture("minimal");
    mq.metadata.namespace = None;
    let defaults = defaults();
    let owner = mq.controller_owner_ref(&()).unwrap();
    assert_eq!(
        Instance::new(&mq, owner, &defaults).unwrap_err(),
        BuildError::MissingNamespace("orders".into())
    );
}
