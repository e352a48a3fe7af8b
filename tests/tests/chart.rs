//! The Kubernetes packaging — charts/journey, the Dockerfile, skaffold.yaml, k8s/ — checked with
//! everything that runs without a cluster or Docker:
//!
//! - Helm itself: `helm lint --strict` and `helm template` with every `ci/*-values.yaml`, and
//!   values.schema.json rejecting wrong values;
//! - the rendered objects: Pod Security `restricted` rules, journeyctl's RBAC, pinned versions;
//! - the rendered configuration against the real programs: the Collector config through
//!   `otelcol validate`, every service/journeyctl environment through the binaries'
//!   `--print-config`, the Kafka environment through the apache/kafka image's own env→properties
//!   code (`kafka.docker.KafkaDockerWrapper`, shipped in the Kafka jar) and then a real broker
//!   (one node, and a three-voter quorum);
//! - k8s/ is what scripts/render-k8s.sh renders now;
//! - skaffold.yaml against skaffold's JSON schema, and against the Dockerfile and the chart;
//!   the Dockerfile through hadolint and its stages, users and build flags.
//!
//! What needs a real API server (objects accepted, admission, `helm install --wait`) is in the
//! control-plane tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use journey_tests::chart::{
    CI_VALUES, NAMESPACE, PodFacts, RELEASE, all, chart_dir, ci_values, container, containers,
    find, helm, helm_template, kind_of, name_of, output, parse_docs, pods, render, render_ci,
    resolve_env, s, seq, text,
};
use journey_tests::process::{Managed, free_port, wait_until};
use journey_tests::runner::{self, block_on};
use journey_tests::stack::{Kafka, READY_TIMEOUT, broker_count};
use journey_tests::tools::Tools;
use journey_tests::{repo_root, say, tests};
use serde::Deserialize;
use yaml_serde::Value;

fn main() -> std::process::ExitCode {
    runner::main(
        || Ok(()),
        tests![
            helm_lint_strict_passes_with_every_ci_values_file,
            helm_template_renders_every_ci_values_file_with_the_expected_objects,
            the_values_schema_and_the_chart_reject_wrong_values,
            an_image_digest_pins_that_image_and_leaves_the_others_on_their_tags,
            the_collectors_gomemlimit_is_80_percent_of_its_memory_limit_in_any_quantity_form,
            the_chart_pins_the_kafka_zipkin_and_collector_versions_the_local_stack_runs,
            every_pod_meets_pod_security_restricted_and_has_resources_and_probes,
            journeyctl_may_only_get_list_and_watch_workloads_and_pods_and_only_it_holds_the_token,
            the_collector_mounts_exactly_the_config_files_and_gets_every_variable_they_read,
            the_rendered_collector_config_passes_otelcol_validate,
            every_variable_the_chart_sets_is_accepted_by_its_binary_and_print_config_succeeds,
            the_kafka_env_becomes_the_same_properties_in_the_image_wrapper_and_by_the_convention,
            the_rendered_kafka_settings_boot_a_real_single_node_kafka,
            the_rendered_three_broker_settings_form_a_three_voter_quorum,
            the_k8s_manifests_are_what_render_k8s_renders_now,
            skaffold_yaml_matches_skaffolds_schema_the_dockerfile_and_the_chart,
            the_dockerfile_builds_every_binary_locked_into_nonroot_distroless_stages,
        ],
    )
}

/// Variables filled from the downward API only to be expanded into others (`$(NAME)`): the
/// program never reads them itself.
fn expansion_helpers(c: &Value) -> BTreeSet<String> {
    let vars = seq(&c["env"]);
    vars.iter()
        .filter(|e| !e["valueFrom"]["fieldRef"].is_null())
        .map(|e| s(&e["name"]).to_string())
        .filter(|n| {
            let needle = format!("$({n})");
            vars.iter().any(|e| s(&e["value"]).contains(&needle))
        })
        .collect()
}

/// A container's environment, in order.
type Env = Vec<(String, String)>;

/// Dockerfile instructions: (INSTRUCTION, arguments).
type Instructions = Vec<(String, String)>;

// ---------------------------------------------------------------------------------------------
// Helm: lint, template, schema

fn helm_lint_strict_passes_with_every_ci_values_file(_: &()) -> Result<()> {
    let helm = helm()?;
    let mut failures = Vec::new();
    for name in CI_VALUES {
        let out = output(
            Command::new(&helm)
                .args(["lint", "--strict"])
                .arg(chart_dir())
                .arg("-f")
                .arg(ci_values(name)),
        )?;
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        if !out.status.success() || !all.contains("0 chart(s) failed") || all.contains("[WARNING]")
        {
            failures.push(format!("ci/{name}-values.yaml:\n{all}"));
        }
    }
    ensure!(
        failures.is_empty(),
        "helm lint --strict failed:\n{}",
        failures.join("\n")
    );
    Ok(())
}

fn helm_template_renders_every_ci_values_file_with_the_expected_objects(_: &()) -> Result<()> {
    let cluster_scoped = ["ClusterRole", "ClusterRoleBinding", "Namespace"];
    for name in CI_VALUES {
        let docs = render_ci(name)?;
        let mut seen = BTreeSet::new();
        for d in &docs {
            let key = format!("{}/{}", kind_of(d), name_of(d));
            ensure!(seen.insert(key.clone()), "ci/{name}: {key} rendered twice");
            if !cluster_scoped.contains(&kind_of(d)) {
                ensure!(
                    d["metadata"]["namespace"].as_str() == Some(NAMESPACE),
                    "ci/{name}: {key} has no metadata.namespace (k8s/ users apply without -n)"
                );
            }
            let labels = &d["metadata"]["labels"];
            for l in [
                "app.kubernetes.io/name",
                "app.kubernetes.io/instance",
                "app.kubernetes.io/component",
                "helm.sh/chart",
            ] {
                ensure!(!labels[l].is_null(), "ci/{name}: {key} lacks label {l}");
            }
        }
        for (owner, _, pod) in pods(&docs) {
            for c in containers(pod) {
                for e in seq(&c["env"]) {
                    let v = s(&e["value"]);
                    let sci = v.contains("e+")
                        && v.replace("e+", "")
                            .chars()
                            .all(|ch| ch.is_ascii_digit() || ch == '.');
                    ensure!(
                        !sci,
                        "ci/{name} {owner}: {} = {v} (a number Helm printed as a float)",
                        s(&e["name"])
                    );
                }
            }
        }
        let deployments: BTreeSet<&str> =
            all(&docs, "Deployment").into_iter().map(name_of).collect();
        for c in ["producer", "relay", "sink"] {
            ensure!(
                deployments.contains(format!("{RELEASE}-{c}").as_str()),
                "ci/{name}: no {c} Deployment"
            );
        }
        let kafka = all(&docs, "StatefulSet");
        match name {
            "external-kafka" => {
                ensure!(
                    kafka.is_empty(),
                    "external-kafka renders a Kafka StatefulSet"
                );
                let producer = find(&docs, "Deployment", "journey-producer")?;
                let env = resolve_env(
                    container(&producer["spec"]["template"]["spec"], "producer")?,
                    &facts("journey-producer-0"),
                )?;
                let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                ensure!(
                    get("KAFKA_SECURITY_PROTOCOL").as_deref() == Some("SASL_SSL"),
                    "external: security protocol"
                );
                ensure!(
                    get("KAFKA_SASL_PASSWORD").is_some(),
                    "external: SASL password from the Secret"
                );
                ensure!(
                    get("KAFKA_SSL_CA_LOCATION").is_some(),
                    "external: CA location"
                );
            }
            "three-broker" => {
                ensure!(
                    kafka.len() == 1 && kafka[0]["spec"]["replicas"].as_i64() == Some(3),
                    "three-broker: 3 replicas"
                );
                ensure!(
                    !all(&docs, "PodDisruptionBudget").is_empty(),
                    "three-broker: PDBs"
                );
                ensure!(
                    !kafka[0]["spec"]["volumeClaimTemplates"].is_null(),
                    "three-broker: persistence"
                );
            }
            "minimal" => ensure!(
                !all(&docs, "NetworkPolicy").is_empty(),
                "minimal: NetworkPolicies"
            ),
            _ => {
                ensure!(kafka.len() == 1, "default: one Kafka StatefulSet");
                for c in ["collector", "zipkin"] {
                    ensure!(
                        deployments.contains(format!("{RELEASE}-{c}").as_str()),
                        "default: no {c} Deployment"
                    );
                }
                ensure!(!all(&docs, "Pod").is_empty(), "default: the helm test pod");
            }
        }
        // NOTES.txt (rendered by a client-side dry run, no cluster): its commands name real Services.
        let out = output(
            Command::new(helm()?)
                .args(["install", RELEASE])
                .arg(chart_dir())
                .args(["--namespace", NAMESPACE, "--dry-run=client", "-f"])
                .arg(ci_values(name))
                .env("KUBECONFIG", "/nonexistent"),
        )?;
        ensure!(
            out.status.success(),
            "ci/{name}: helm install --dry-run=client: {}",
            text(&out.stderr)
        );
        let stdout = text(&out.stdout);
        let notes = stdout
            .split_once("NOTES:")
            .map(|(_, n)| n)
            .context("no NOTES")?;
        for svc in notes.split("port-forward svc/").skip(1) {
            let svc = svc.split_whitespace().next().unwrap_or("");
            find(&docs, "Service", svc)
                .with_context(|| format!("ci/{name}: NOTES.txt port-forwards {svc}"))?;
        }
        ensure!(
            notes.contains("port-forward svc/journey-producer")
                && notes.contains("helm test journey"),
            "ci/{name}: NOTES.txt"
        );
    }
    Ok(())
}

fn facts(pod: &str) -> PodFacts {
    PodFacts::named(pod)
}

fn the_values_schema_and_the_chart_reject_wrong_values(_: &()) -> Result<()> {
    // (flags, what the error must mention)
    let cases: &[(&[&str], &str)] = &[
        (&["bogus=1"], "additional properties 'bogus'"),
        (
            &["producer.replicaCount=2"],
            "additional properties 'replicaCount'",
        ),
        (&["producer.replicas=-1"], "/producer/replicas"),
        (&["relay.replicas=lots"], "/relay/replicas"),
        (&["kafka.replicas=2"], "/kafka/replicas"),
        (&["relay.traceMode=sideways"], "/relay/traceMode"),
        (
            &["producer.image.pullPolicy=Sometimes"],
            "/producer/image/pullPolicy",
        ),
        (
            &["kafka.client.securityProtocol=SASL"],
            "/kafka/client/securityProtocol",
        ),
        (&["zipkin.memMaxSpans=-5"], "/zipkin/memMaxSpans"),
        (&["sink.image.digest=latest"], "/sink/image/digest"),
        (&["topics[0].partitions=0"], "/topics/0/partitions"),
        (&["kafka.clusterId=short"], "/kafka/clusterId"),
        (
            &["producer.resources.limits.memory=lots"],
            "/producer/resources/limits/memory",
        ),
        (&["kafka.enabled=false"], "/kafka/external/bootstrapServers"),
        (
            &["collector.enabled=false"],
            "/collector/external/otlpEndpoint",
        ),
        (
            &["kafka.config.log\\.retention\\.hours=72"],
            "/kafka/config/log.retention.hours",
        ),
        // Rules the templates enforce, beyond the schema:
        (
            &["producer.topic=nowhere"],
            "\"nowhere\" is used by a service but is not in topics",
        ),
        (
            &[
                "kafka.client.securityProtocol=SASL_SSL",
                "kafka.client.sasl.mechanism=PLAIN",
                "kafka.client.sasl.username=u",
            ],
            "set existingSecret (or password)",
        ),
    ];
    let mut problems = Vec::new();
    for (sets, expected) in cases {
        match helm_template(&[], sets) {
            Ok(_) => problems.push(format!("{sets:?} was accepted")),
            Err(e) if !format!("{e:#}").contains(expected) => problems.push(format!(
                "{sets:?} failed without mentioning {expected:?}: {e:#}"
            )),
            Err(_) => {}
        }
    }
    // Topics replicated more often than there are brokers (a values file: --set cannot edit
    // one field of a list item).
    let dir = tempfile::tempdir()?;
    let replicated = dir.path().join("replicated.yaml");
    let mut topics = std::fs::read_to_string(ci_values("three-broker"))?;
    topics = topics[topics
        .find("topics:")
        .context("topics in three-broker values")?..]
        .to_string();
    std::fs::write(&replicated, &topics)?;
    match helm_template(std::slice::from_ref(&replicated), &[]) {
        Ok(_) => {
            problems.push("topics with replicationFactor 3 on one broker were accepted".into())
        }
        Err(e) if !format!("{e:#}").contains("has replicationFactor 3 but kafka.replicas is 1") => {
            problems.push(format!(
                "replicationFactor 3 on one broker failed for another reason: {e:#}"
            ))
        }
        Err(_) => {}
    }
    // And the control: valid overrides of the same keys pass.
    helm_template(
        &[replicated],
        &[
            "producer.replicas=0",
            "kafka.replicas=3",
            "relay.traceMode=link",
        ],
    )
    .context("valid overrides must render")?;
    ensure!(
        problems.is_empty(),
        "wrong values not rejected as they should be:\n{}",
        problems.join("\n")
    );
    Ok(())
}

fn an_image_digest_pins_that_image_and_leaves_the_others_on_their_tags(_: &()) -> Result<()> {
    let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
    let docs = parse_docs(&helm_template(
        &[],
        &[
            &format!("relay.image.digest={digest}"),
            "relay.image.tag=dev",
        ],
    )?)?;
    let image_of = |owner: &str| -> Result<String> {
        let (_, _, spec) = pods(&docs)
            .into_iter()
            .find(|(o, _, _)| o == owner)
            .with_context(|| format!("no {owner} rendered"))?;
        Ok(s(&seq(&spec["containers"])[0]["image"]).to_string())
    };
    let relay = image_of(&format!("Deployment/{RELEASE}-relay"))?;
    ensure!(
        relay == format!("journey/consumer@{digest}"),
        "relay image with a digest (and a tag): {relay}"
    );
    let sink = image_of(&format!("Deployment/{RELEASE}-sink"))?;
    ensure!(
        sink.starts_with("journey/consumer:") && !sink.contains('@'),
        "the sink (no digest set) must keep its tag: {sink}"
    );
    Ok(())
}

fn the_collectors_gomemlimit_is_80_percent_of_its_memory_limit_in_any_quantity_form(
    _: &(),
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    // (the limit as written in a values file, GOMEMLIMIT)
    let cases = [
        ("512Mi", "409MiB"),
        ("'1.5Gi'", "1228MiB"),
        ("1G", "762MiB"),
        ("2000M", "1525MiB"),
        ("536870912", "409MiB"),
        ("'536870912'", "409MiB"),
        ("1048576k", "800MiB"),
        ("100Ki", "81920B"),
    ];
    let mut wrong = Vec::new();
    for (limit, expected) in cases {
        let values = dir.path().join("memory.yaml");
        std::fs::write(
            &values,
            format!("collector:\n  resources:\n    limits:\n      memory: {limit}\n"),
        )?;
        let docs = parse_docs(&helm_template(&[values], &[])?)?;
        let dep = find(&docs, "Deployment", "journey-collector")?;
        let c = container(&dep["spec"]["template"]["spec"], "collector")?;
        let got = seq(&c["env"])
            .iter()
            .find(|e| s(&e["name"]) == "GOMEMLIMIT")
            .map(|e| s(&e["value"]).to_string());
        if got.as_deref() != Some(expected) {
            wrong.push(format!(
                "memory {limit}: GOMEMLIMIT {got:?}, expected {expected}"
            ));
        }
    }
    ensure!(wrong.is_empty(), "{}", wrong.join("\n"));
    Ok(())
}

/// `KEY=VALUE` lines of tools/versions.env.
fn pinned_versions() -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(repo_root().join("tools/versions.env"))?;
    Ok(text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

fn the_chart_pins_the_kafka_zipkin_and_collector_versions_the_local_stack_runs(
    _: &(),
) -> Result<()> {
    let pins = pinned_versions()?;
    let docs = render_ci("default")?;
    let image = |kind: &str, name: &str, container_name: &str| -> Result<String> {
        let d = find(&docs, kind, name)?;
        Ok(s(&container(&d["spec"]["template"]["spec"], container_name)?["image"]).to_string())
    };
    let expect = [
        (
            image("StatefulSet", "journey-kafka", "kafka")?,
            format!("apache/kafka:{}", pins["KAFKA_VERSION"]),
        ),
        (
            image("Deployment", "journey-zipkin", "zipkin")?,
            format!("openzipkin/zipkin:{}", pins["ZIPKIN_VERSION"]),
        ),
        (
            image("Deployment", "journey-collector", "collector")?,
            format!(
                "otel/opentelemetry-collector-contrib:{}",
                pins["OTELCOL_VERSION"]
            ),
        ),
    ];
    for (got, want) in expect {
        ensure!(
            got == want,
            "image {got} differs from tools/versions.env ({want}): the tests would prove another version"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Pod Security, RBAC

fn every_pod_meets_pod_security_restricted_and_has_resources_and_probes(_: &()) -> Result<()> {
    let allowed_volumes = [
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    let mut problems = Vec::new();
    for values in CI_VALUES {
        let docs = render_ci(values)?;
        for (owner, _, pod) in pods(&docs) {
            let mut bad = |what: String| problems.push(format!("ci/{values} {owner}: {what}"));
            let psc = &pod["securityContext"];
            for host in ["hostNetwork", "hostPID", "hostIPC"] {
                if pod[host].as_bool() == Some(true) {
                    bad(host.to_string());
                }
            }
            for v in seq(&pod["volumes"]) {
                let kinds: Vec<&str> = v
                    .as_mapping()
                    .map(|m| {
                        m.keys()
                            .filter_map(Value::as_str)
                            .filter(|k| *k != "name")
                            .collect()
                    })
                    .unwrap_or_default();
                if kinds.iter().any(|k| !allowed_volumes.contains(k)) {
                    bad(format!("volume {} of type {kinds:?}", s(&v["name"])));
                }
            }
            if psc["seccompProfile"]["type"].as_str() != Some("RuntimeDefault") {
                bad("pod seccompProfile is not RuntimeDefault".into());
            }
            let is_init: BTreeSet<&str> = seq(&pod["initContainers"])
                .iter()
                .map(|c| s(&c["name"]))
                .collect();
            for c in containers(pod) {
                let n = s(&c["name"]);
                let sc = &c["securityContext"];
                let non_root = sc["runAsNonRoot"]
                    .as_bool()
                    .or(psc["runAsNonRoot"].as_bool());
                let uid = sc["runAsUser"].as_i64().or(psc["runAsUser"].as_i64());
                if non_root != Some(true) {
                    bad(format!("{n}: runAsNonRoot is not true"));
                }
                // A numeric non-root uid: images with a named USER (apache/kafka, zipkin) are
                // refused by the kubelet under runAsNonRoot without one.
                if !matches!(uid, Some(u) if u > 0) {
                    bad(format!("{n}: no numeric non-zero runAsUser"));
                }
                if sc["allowPrivilegeEscalation"].as_bool() != Some(false) {
                    bad(format!("{n}: allowPrivilegeEscalation is not false"));
                }
                if sc["privileged"].as_bool() == Some(true) {
                    bad(format!("{n}: privileged"));
                }
                if !seq(&sc["capabilities"]["drop"])
                    .iter()
                    .any(|d| s(d) == "ALL")
                {
                    bad(format!("{n}: capabilities do not drop ALL"));
                }
                if seq(&sc["capabilities"]["add"])
                    .iter()
                    .any(|a| s(a) != "NET_BIND_SERVICE")
                {
                    bad(format!("{n}: adds capabilities"));
                }
                if sc["readOnlyRootFilesystem"].as_bool() != Some(true) {
                    bad(format!("{n}: root filesystem is writable"));
                }
                if c["resources"]["limits"]["memory"].is_null()
                    || c["resources"]["requests"]["memory"].is_null()
                {
                    bad(format!("{n}: no memory request and limit"));
                }
                if !is_init.contains(n)
                    && kind_of_owner(&owner) != "Pod"
                    && c["readinessProbe"].is_null()
                {
                    bad(format!("{n}: no readinessProbe"));
                }
            }
            if !owner.starts_with("Pod/") && pod["enableServiceLinks"].as_bool() != Some(false) {
                bad("service links are on (KAFKA_* variables would leak into the Kafka image's config)".into());
            }
        }
    }
    ensure!(
        problems.is_empty(),
        "pods that break the restricted profile or the chart's rules:\n{}",
        problems.join("\n")
    );
    Ok(())
}

fn kind_of_owner(owner: &str) -> &str {
    owner.split('/').next().unwrap_or("")
}

fn journeyctl_may_only_get_list_and_watch_workloads_and_pods_and_only_it_holds_the_token(
    _: &(),
) -> Result<()> {
    let docs = render_ci("default")?;
    let sa = "journey-journeyctl";
    let role = find(&docs, "Role", sa)?;
    let mut grants = BTreeSet::new();
    for rule in seq(&role["rules"]) {
        for g in seq(&rule["apiGroups"]) {
            for r in seq(&rule["resources"]) {
                for v in seq(&rule["verbs"]) {
                    grants.insert(format!("{}/{}:{}", s(g), s(r), s(v)));
                }
            }
        }
    }
    let mut want = BTreeSet::new();
    for r in ["apps/statefulsets", "apps/deployments", "/pods"] {
        for v in ["get", "list", "watch"] {
            want.insert(format!("{r}:{v}"));
        }
    }
    ensure!(
        grants == want,
        "journeyctl's Role grants {grants:?}, expected exactly {want:?}"
    );
    let binding = find(&docs, "RoleBinding", sa)?;
    ensure!(
        s(&binding["roleRef"]["kind"]) == "Role" && s(&binding["roleRef"]["name"]) == sa,
        "RoleBinding roleRef"
    );
    let subjects = seq(&binding["subjects"]);
    ensure!(
        subjects.len() == 1
            && s(&subjects[0]["name"]) == sa
            && s(&subjects[0]["namespace"]) == NAMESPACE,
        "RoleBinding subjects: {subjects:?}"
    );
    ensure!(
        all(&docs, "ClusterRoleBinding")
            .iter()
            .all(|b| seq(&b["subjects"]).iter().all(|x| s(&x["name"]) != sa)),
        "journeyctl bound cluster-wide"
    );
    // Only journeyctl's container mounts the API token; the services have none.
    for c in ["producer", "relay", "sink"] {
        let d = find(&docs, "Deployment", &format!("journey-{c}"))?;
        let pod = &d["spec"]["template"]["spec"];
        ensure!(
            s(&pod["serviceAccountName"]) == sa,
            "{c}: serviceAccountName"
        );
        ensure!(
            pod["automountServiceAccountToken"].as_bool() == Some(false),
            "{c}: the pod automounts a token"
        );
        for k in containers(pod) {
            let mounts_token = seq(&k["volumeMounts"])
                .iter()
                .any(|m| s(&m["name"]) == "kube-api-access");
            ensure!(
                mounts_token == (s(&k["name"]) == "journeyctl-init"),
                "{c}: container {} token mount = {mounts_token}",
                s(&k["name"])
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The Collector

/// `${env:NAME}` / `${env:NAME:-default}` references in a Collector config: name → default.
fn env_references(config: &str) -> BTreeMap<String, Option<String>> {
    let mut refs = BTreeMap::new();
    let mut rest = config;
    while let Some(i) = rest.find("${env:") {
        rest = &rest[i + 6..];
        let end = rest.find('}').unwrap_or(rest.len());
        let body = &rest[..end];
        let (name, default) = match body.split_once(":-") {
            Some((n, d)) => (n, Some(d.to_string())),
            None => (body, None),
        };
        refs.insert(name.to_string(), default);
        rest = &rest[end..];
    }
    refs
}

fn the_collector_mounts_exactly_the_config_files_and_gets_every_variable_they_read(
    _: &(),
) -> Result<()> {
    let docs = render_ci("default")?;
    let cm = find(&docs, "ConfigMap", "journey-collector")?;
    let files = ["collector.yaml", "collector-k8s.yaml"];
    let mut all_config = String::new();
    for f in files {
        let on_disk = std::fs::read_to_string(chart_dir().join("files").join(f))?;
        ensure!(
            s(&cm["data"][f]) == on_disk,
            "ConfigMap data {f} differs from charts/journey/files/{f}"
        );
        all_config.push_str(&on_disk);
    }
    let dep = find(&docs, "Deployment", "journey-collector")?;
    let pod = &dep["spec"]["template"]["spec"];
    let c = container(pod, "collector")?;
    let args: Vec<&str> = seq(&c["args"]).iter().map(s).collect();
    ensure!(
        args == [
            "--config=/conf/collector.yaml",
            "--config=/conf/collector-k8s.yaml"
        ],
        "collector args: {args:?}"
    );
    let mount = seq(&c["volumeMounts"])
        .iter()
        .find(|m| s(&m["mountPath"]) == "/conf")
        .context("nothing mounted at /conf")?;
    let volume = seq(&pod["volumes"])
        .iter()
        .find(|v| s(&v["name"]) == s(&mount["name"]))
        .context("/conf volume")?;
    ensure!(
        s(&volume["configMap"]["name"]) == "journey-collector",
        "/conf is not the collector ConfigMap"
    );

    let set: BTreeSet<String> = seq(&c["env"])
        .iter()
        .map(|e| s(&e["name"]).to_string())
        .collect();
    let refs = env_references(&all_config);
    let mut problems = Vec::new();
    for (name, default) in &refs {
        // A missing variable with a loopback default would make the pod unreachable.
        let loopback = default
            .as_deref()
            .is_some_and(|d| d.contains("127.0.0.1") || d.contains("localhost"));
        if (default.is_none() || loopback) && !set.contains(name) {
            problems.push(format!(
                "the config reads {name} (default {default:?}) but the chart does not set it"
            ));
        }
    }
    let helpers = expansion_helpers(c);
    for name in &set {
        if !refs.contains_key(name) && !helpers.contains(name) && name != "GOMEMLIMIT" {
            problems.push(format!(
                "the chart sets {name}, which the config never reads"
            ));
        }
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

fn the_rendered_collector_config_passes_otelcol_validate(_: &()) -> Result<()> {
    let otelcol = Tools::load()?
        .path("OTELCOL", "collector")
        .context("the Collector is not built: run scripts/install-tools.sh collector (this test cannot run without it)")?;
    let dir = tempfile::tempdir()?;
    for values in CI_VALUES {
        let docs = render_ci(values)?;
        let Ok(cm) = find(&docs, "ConfigMap", "journey-collector") else {
            continue;
        };
        let conf = dir.path().join(values);
        std::fs::create_dir_all(&conf)?;
        for (k, v) in cm["data"].as_mapping().context("ConfigMap data")? {
            std::fs::write(conf.join(s(k)), s(v))?;
        }
        let dep = find(&docs, "Deployment", "journey-collector")?;
        let c = container(&dep["spec"]["template"]["spec"], "collector")?;
        let env = resolve_env(c, &facts("journey-collector-0"))?;
        // The container's own arguments, with /conf pointing at the rendered files.
        let args: Vec<String> = seq(&c["args"])
            .iter()
            .map(|a| s(a).replace("/conf/", &format!("{}/", conf.display())))
            .collect();
        let out = output(
            Command::new(&otelcol)
                .arg("validate")
                .args(&args)
                .env_clear()
                .envs(env),
        )?;
        ensure!(
            out.status.success(),
            "ci/{values}: otelcol validate {args:?} failed:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The services' and journeyctl's environment

/// Where the workspace's binaries are: next to this test's directory (target/<profile>/).
fn binaries_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("test exe has a parent")?.to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

#[derive(Debug, Deserialize)]
struct PrintedConfig {
    #[allow(dead_code)]
    config: serde_json::Value,
    accepted_env: Vec<String>,
}

fn print_config(bin: &str, args: &[String], env: &[(String, String)]) -> Result<PrintedConfig> {
    let exe = binaries_dir()?.join(bin);
    ensure!(
        exe.exists(),
        "{} is missing: build the workspace's binaries first (`cargo build --workspace --bins`; `cargo test --workspace` builds them too)",
        exe.display()
    );
    let out = output(
        Command::new(&exe)
            .args(args)
            .arg("--print-config")
            .env_clear()
            .envs(env.iter().cloned()),
    )?;
    let shown = format!("{bin} {} --print-config", args.join(" "));
    ensure!(
        out.status.success(),
        "`{shown}` with the chart's environment failed ({}): does {bin} support --print-config yet, and does it accept this environment?\nstderr: {}",
        out.status,
        text(&out.stderr).trim()
    );
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "`{shown}` printed no {{\"config\":…, \"accepted_env\":[…]}} JSON: {}",
            text(&out.stdout).trim()
        )
    })
}

fn every_variable_the_chart_sets_is_accepted_by_its_binary_and_print_config_succeeds(
    _: &(),
) -> Result<()> {
    let mut problems = Vec::new();
    let mut checked = 0;
    for values in CI_VALUES {
        let docs = render_ci(values)?;
        for (owner, _, pod) in pods(&docs) {
            for c in containers(pod) {
                let image = s(&c["image"]);
                let repo = image.rsplit_once(':').map(|(r, _)| r).unwrap_or(image);
                let Some(bin) = ["producer", "consumer", "journeyctl"]
                    .into_iter()
                    .find(|b| repo.ends_with(&format!("/{b}")))
                else {
                    continue;
                };
                let where_ = format!("ci/{values} {owner} container {}", s(&c["name"]));
                let env = resolve_env(
                    c,
                    &facts(&format!("{}-0", owner.split('/').nth(1).unwrap_or("pod"))),
                )?;
                let args: Vec<String> = seq(&c["args"]).iter().map(|a| s(a).to_string()).collect();
                checked += 1;
                match print_config(bin, &args, &env) {
                    Err(e) => problems.push(format!("{where_}: {e:#}")),
                    Ok(printed) => {
                        let accepted: BTreeSet<&str> =
                            printed.accepted_env.iter().map(String::as_str).collect();
                        let helpers = expansion_helpers(c);
                        for (name, _) in &env {
                            if !accepted.contains(name.as_str()) && !helpers.contains(name) {
                                problems.push(format!(
                                    "{where_}: sets {name}, which {bin} does not accept"
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    ensure!(
        checked > 0,
        "no producer/consumer/journeyctl container found in the rendered chart"
    );
    ensure!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
    say!("env contract: {checked} containers checked against their binaries");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Kafka

/// Variables the image's KafkaDockerWrapper (Kafka 4.3.1) does not turn into properties.
const WRAPPER_EXCLUDED: [&str; 11] = [
    "KAFKA_VERSION",
    "KAFKA_HEAP_OPTS",
    "KAFKA_LOG4J_OPTS",
    "KAFKA_OPTS",
    "KAFKA_JMX_OPTS",
    "KAFKA_JVM_PERFORMANCE_OPTS",
    "KAFKA_GC_LOG_OPTS",
    "KAFKA_LOG4J_ROOT_LOGLEVEL",
    "KAFKA_LOG4J_LOGGERS",
    "KAFKA_TOOLS_LOG4J_LOGLEVEL",
    "KAFKA_JMX_HOSTNAME",
];

/// The apache/kafka image convention: strip `KAFKA_`, `___`→`-`, `__`→`_`, `_`→`.`, lower case.
fn env_to_properties(env: &[(String, String)]) -> BTreeMap<String, String> {
    env.iter()
        .filter(|(k, _)| k.starts_with("KAFKA_") && !WRAPPER_EXCLUDED.contains(&k.as_str()))
        .map(|(k, v)| {
            let key = k["KAFKA_".len()..]
                .to_lowercase()
                .replace('_', ".")
                .replace("...", "-")
                .replace("..", "_");
            (key, v.clone())
        })
        .collect()
}

/// The Kafka StatefulSet's rendered env for node `index`, with every in-cluster address moved
/// to 127.0.0.1 (a pod's own empty-host listener stays empty: all interfaces) on ports shared
/// by all nodes of one cluster, and the data directory moved into `dir`. Anything else stays
/// exactly as rendered, so what boots is the chart's configuration.
struct KafkaCluster {
    sts: String,
    replicas: usize,
    container: Value,
    ports: BTreeMap<(usize, u16), u16>,
    dir: PathBuf,
}

impl KafkaCluster {
    fn from(docs: &[Value], dir: &Path) -> Result<KafkaCluster> {
        let sts = all(docs, "StatefulSet")
            .into_iter()
            .next()
            .context("no Kafka StatefulSet rendered")?;
        let replicas = sts["spec"]["replicas"].as_u64().context("replicas")? as usize;
        let container = container(&sts["spec"]["template"]["spec"], "kafka")?.clone();
        Ok(KafkaCluster {
            sts: name_of(sts).to_string(),
            replicas,
            container,
            ports: BTreeMap::new(),
            dir: dir.to_path_buf(),
        })
    }

    fn port(&mut self, node: usize, port: u16) -> u16 {
        *self.ports.entry((node, port)).or_insert_with(free_port)
    }

    /// `host:port` → local address; the node is named by the host (`<sts>-<i>.…`), or is
    /// `own` for an empty host.
    fn local(&mut self, own: usize, addr: &str) -> Result<String> {
        let (host, port) = addr
            .rsplit_once(':')
            .with_context(|| format!("no port in {addr}"))?;
        let port: u16 = port.parse().with_context(|| format!("port of {addr}"))?;
        if host.is_empty() {
            return Ok(format!(":{}", self.port(own, port)));
        }
        let prefix = format!("{}-", self.sts);
        let node: usize = host
            .strip_prefix(&prefix)
            .and_then(|r| r.split('.').next())
            .and_then(|i| i.parse().ok())
            .with_context(|| format!("{addr} is not the address of a node of {}", self.sts))?;
        Ok(format!("127.0.0.1:{}", self.port(node, port)))
    }

    fn node_env(&mut self, i: usize) -> Result<Vec<(String, String)>> {
        let env = resolve_env(
            &self.container,
            &PodFacts {
                name: format!("{}-{i}", self.sts),
                index: i,
                ip: "127.0.0.1".into(),
            },
        )?;
        let mut out = Vec::new();
        for (k, v) in env {
            let local = match k.as_str() {
                "KAFKA_LISTENERS" | "KAFKA_ADVERTISED_LISTENERS" => v
                    .split(',')
                    .map(|l| {
                        let (proto, addr) = l
                            .split_once("://")
                            .with_context(|| format!("listener {l}"))?;
                        Ok(format!("{proto}://{}", self.local(i, addr)?))
                    })
                    .collect::<Result<Vec<_>>>()?
                    .join(","),
                "KAFKA_CONTROLLER_QUORUM_VOTERS" => v
                    .split(',')
                    .map(|voter| {
                        let (id, addr) = voter
                            .split_once('@')
                            .with_context(|| format!("voter {voter}"))?;
                        Ok(format!("{id}@{}", self.local(i, addr)?))
                    })
                    .collect::<Result<Vec<_>>>()?
                    .join(","),
                "KAFKA_LOG_DIRS" => self
                    .dir
                    .join(format!("node-{i}/data"))
                    .display()
                    .to_string(),
                _ if k.starts_with("KAFKA_") => {
                    ensure!(
                        !v.contains(&format!("{}-", self.sts))
                            && !v.contains("/var/lib/kafka")
                            && !v.contains("/opt/kafka"),
                        "{k}={v} holds an address or path this test does not localize"
                    );
                    v
                }
                _ => v,
            };
            out.push((k, local));
        }
        Ok(out)
    }

    /// Runs the image's own env→config step (`KafkaDockerWrapper setup`, from the Kafka jar) for
    /// node `i`: writes `<node>/config/server.properties` and formats the node's storage with
    /// the chart's CLUSTER_ID, as the container's start script does. Returns its properties.
    fn wrapper_setup(
        &mut self,
        tools: &Tools,
        i: usize,
    ) -> Result<(Env, BTreeMap<String, String>)> {
        let env = self.node_env(i)?;
        let node = self.dir.join(format!("node-{i}"));
        let (defaults, mounted, config) = (
            node.join("defaults"),
            node.join("mounted"),
            node.join("config"),
        );
        for d in [&defaults, &mounted, &config] {
            std::fs::create_dir_all(d)?;
        }
        let libs = tools.path("KAFKA_LIBS", "kafka")?;
        let log4j = journey_tests::stack::kafka_log4j2();
        let mut cmd = Command::new("java");
        cmd.env_clear()
            .envs(std::env::vars().filter(|(k, _)| k == "PATH" || k == "JAVA_HOME"))
            .envs(env.iter().cloned())
            .args([
                "-Xmx256m",
                &format!("-Dlog4j2.configurationFile={}", log4j.display()),
            ])
            .arg("-cp")
            .arg(format!("{}/*", libs.display()))
            .args([
                "kafka.docker.KafkaDockerWrapper",
                "setup",
                "--default-configs-dir",
            ])
            .arg(&defaults)
            .arg("--mounted-configs-dir")
            .arg(&mounted)
            .arg("--final-configs-dir")
            .arg(&config);
        let out = output(&mut cmd)?;
        ensure!(
            out.status.success(),
            "node {i}: KafkaDockerWrapper setup failed ({}):\n{}{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        let written = std::fs::read_to_string(config.join("server.properties"))?;
        let props = written
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok((env, props))
    }
}

fn the_kafka_env_becomes_the_same_properties_in_the_image_wrapper_and_by_the_convention(
    _: &(),
) -> Result<()> {
    let tools = Tools::load()?;
    let dir = tempfile::tempdir()?;
    for values in ["default", "three-broker"] {
        let docs = render_ci(values)?;
        let mut cluster = KafkaCluster::from(&docs, &dir.path().join(values))?;
        let (env, wrapper) = cluster.wrapper_setup(&tools, 0)?;
        let ours = env_to_properties(&env);
        ensure!(
            wrapper == ours,
            "ci/{values}: the image's wrapper wrote\n{wrapper:#?}\nbut the convention gives\n{ours:#?}"
        );
        for key in [
            "node.id",
            "process.roles",
            "controller.quorum.voters",
            "advertised.listeners",
            "log.dirs",
        ] {
            ensure!(
                wrapper.contains_key(key),
                "ci/{values}: no {key} in the broker config"
            );
        }
        ensure!(
            !wrapper.contains_key("heap.opts"),
            "ci/{values}: KAFKA_HEAP_OPTS leaked into the properties"
        );
        let formatted = std::fs::read_to_string(cluster.dir.join("node-0/data/meta.properties"))
            .with_context(|| format!("ci/{values}: the wrapper did not format the storage"))?;
        let id = env
            .iter()
            .find(|(k, _)| k == "CLUSTER_ID")
            .map(|(_, v)| v.clone())
            .context("no CLUSTER_ID")?;
        ensure!(
            formatted.contains(&format!("cluster.id={id}")),
            "ci/{values}: storage not formatted with the chart's cluster id {id}"
        );
    }
    Ok(())
}

fn the_rendered_kafka_settings_boot_a_real_single_node_kafka(_: &()) -> Result<()> {
    let tools = Tools::load()?;
    let dir = tempfile::tempdir()?;
    let docs = render_ci("default")?;
    let mut cluster = KafkaCluster::from(&docs, dir.path())?;
    ensure!(cluster.replicas == 1, "default values: one Kafka node");
    let env = cluster.node_env(0)?;
    let mut props = env_to_properties(&env);
    // start_with formats its own storage: give it a fresh directory.
    props.insert(
        "log.dirs".into(),
        dir.path().join("boot-data").display().to_string(),
    );
    say!("kafka (chart settings): {props:?}");
    block_on(async {
        let kafka = Kafka::start_with(&tools, &dir.path().join("boot"), props).await?;
        let bootstrap = kafka.bootstrap().to_string();
        let brokers = tokio::task::spawn_blocking(move || broker_count(&bootstrap)).await??;
        ensure!(brokers == 1, "metadata reports {brokers} brokers");
        Ok(())
    })
}

fn the_rendered_three_broker_settings_form_a_three_voter_quorum(_: &()) -> Result<()> {
    let tools = Tools::load()?;
    let dir = tempfile::tempdir()?;
    let docs = render_ci("three-broker")?;
    let mut cluster = KafkaCluster::from(&docs, dir.path())?;
    ensure!(cluster.replicas == 3, "three-broker values: 3 nodes");
    let libs = tools.path("KAFKA_LIBS", "kafka")?;
    let log4j = journey_tests::stack::kafka_log4j2();
    let mut nodes: Vec<Managed> = Vec::new();
    let mut bootstrap = String::new();
    for i in 0..3 {
        // The container's path: the image's wrapper writes the config and formats the storage
        // with the chart's cluster id, then the broker starts on that config.
        let (_, props) = cluster.wrapper_setup(&tools, i)?;
        if i == 0 {
            bootstrap = props["advertised.listeners"]
                .split_once("://")
                .map(|(_, a)| a.to_string())
                .context("advertised")?;
        }
        let mut cmd = Command::new("java");
        cmd.args([
            "-Xms192m",
            "-Xmx256m",
            "-XX:+UseG1GC",
            &format!("-Dlog4j2.configurationFile={}", log4j.display()),
        ])
        .arg("-cp")
        .arg(format!("{}/*", libs.display()))
        .arg("kafka.Kafka")
        .arg(
            cluster
                .dir
                .join(format!("node-{i}/config/server.properties")),
        );
        nodes.push(Managed::spawn(
            &format!("kafka-{i}"),
            cmd,
            &dir.path().join("logs"),
            Duration::from_secs(5),
        )?);
    }
    let result = block_on(async {
        wait_until("three-node kafka", READY_TIMEOUT, || {
            let early: Result<()> = nodes.iter_mut().try_for_each(Managed::ensure_running);
            let bootstrap = bootstrap.clone();
            async move {
                early?;
                let n = tokio::task::spawn_blocking(move || broker_count(&bootstrap)).await??;
                Ok(n == 3)
            }
        })
        .await
    });
    if result.is_err() {
        for n in &nodes {
            eprintln!("----- {} -----\n{}", n.name(), n.tail(40));
        }
    }
    result
}

// ---------------------------------------------------------------------------------------------
// k8s/

fn the_k8s_manifests_are_what_render_k8s_renders_now(_: &()) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = output(
        Command::new(repo_root().join("scripts/render-k8s.sh"))
            .arg(dir.path())
            .env("HELM", helm()?),
    )?;
    ensure!(
        out.status.success(),
        "scripts/render-k8s.sh failed: {}",
        text(&out.stderr)
    );
    let fresh = std::fs::read_to_string(dir.path().join("journey.yaml"))?;
    let committed =
        std::fs::read_to_string(repo_root().join("k8s/journey.yaml")).unwrap_or_default();
    if fresh != committed {
        let line = fresh
            .lines()
            .zip(committed.lines())
            .position(|(a, b)| a != b)
            .map(|i| i + 1);
        bail!(
            "k8s/journey.yaml is stale (first difference at line {}): run scripts/render-k8s.sh",
            line.map(|l| l.to_string())
                .unwrap_or_else(|| "end of file".into())
        );
    }
    let docs = parse_docs(&fresh)?;
    ensure!(
        kind_of(&docs[0]) == "Namespace" && name_of(&docs[0]) == NAMESPACE,
        "k8s/journey.yaml starts with the Namespace"
    );
    ensure!(
        all(&docs, "Pod").is_empty(),
        "k8s/journey.yaml holds the helm test pod"
    );
    let kind: Value =
        yaml_serde::from_str(&std::fs::read_to_string(repo_root().join("k8s/kind.yaml"))?)?;
    ensure!(
        s(&kind["kind"]) == "Cluster" && s(&kind["name"]) == "journey",
        "k8s/kind.yaml: a Cluster named journey"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// skaffold.yaml

/// A JSON Schema (draft-07) checker for what skaffold's schemas use: $ref, type, properties,
/// additionalProperties, required, items, enum, const, anyOf/oneOf/allOf. (`pattern` is not
/// used by them.) Errors are collected as `path: message`.
fn check_schema(
    root: &serde_json::Value,
    schema: &serde_json::Value,
    v: &serde_json::Value,
    path: &str,
    errs: &mut Vec<String>,
) {
    use serde_json::Value as J;
    if let Some(r) = schema["$ref"].as_str() {
        match r
            .strip_prefix("#/definitions/")
            .map(|n| &root["definitions"][n])
        {
            Some(target) if !target.is_null() => check_schema(root, target, v, path, errs),
            _ => errs.push(format!("{path}: unresolvable $ref {r}")),
        }
        return;
    }
    let type_ok = |t: &str| match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => true,
    };
    match &schema["type"] {
        J::String(t) if !type_ok(t) => return errs.push(format!("{path}: expected {t}, got {v}")),
        J::Array(ts) if !ts.iter().filter_map(J::as_str).any(type_ok) => {
            return errs.push(format!("{path}: expected one of {ts:?}, got {v}"));
        }
        _ => {}
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(v)
    {
        errs.push(format!("{path}: {v} is not one of {options:?}"));
    }
    if !schema["const"].is_null() && schema["const"] != *v {
        errs.push(format!("{path}: {v} is not {}", schema["const"]));
    }
    if let Some(obj) = v.as_object() {
        let props = schema["properties"].as_object();
        for (k, child) in obj {
            let p = format!("{path}/{k}");
            match props.and_then(|m| m.get(k)) {
                Some(s) => check_schema(root, s, child, &p, errs),
                None => match &schema["additionalProperties"] {
                    J::Bool(false) => errs.push(format!("{p}: unknown key")),
                    J::Object(_) => {
                        check_schema(root, &schema["additionalProperties"], child, &p, errs)
                    }
                    _ => {}
                },
            }
        }
        for r in schema["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(J::as_str)
        {
            if !obj.contains_key(r) {
                errs.push(format!("{path}: missing required {r}"));
            }
        }
    }
    if let (Some(items), J::Object(_)) = (v.as_array(), &schema["items"]) {
        for (i, item) in items.iter().enumerate() {
            check_schema(root, &schema["items"], item, &format!("{path}/{i}"), errs);
        }
    }
    let passes = |alt: &J| {
        let mut e = Vec::new();
        check_schema(root, alt, v, path, &mut e);
        e
    };
    if let Some(alts) = schema["anyOf"].as_array() {
        let results: Vec<Vec<String>> = alts.iter().map(passes).collect();
        if !results.iter().any(Vec::is_empty) {
            let best = results.into_iter().min_by_key(Vec::len).unwrap_or_default();
            errs.push(format!(
                "{path}: matches none of anyOf; closest: {}",
                best.join("; ")
            ));
        }
    }
    if let Some(alts) = schema["oneOf"].as_array() {
        let ok = alts.iter().filter(|a| passes(a).is_empty()).count();
        if ok != 1 {
            errs.push(format!("{path}: matches {ok} of oneOf"));
        }
    }
    for alt in schema["allOf"].as_array().into_iter().flatten() {
        errs.extend(passes(alt));
    }
}

fn skaffold_yaml_matches_skaffolds_schema_the_dockerfile_and_the_chart(_: &()) -> Result<()> {
    let tools = Tools::load()?;
    let schema_path = tools.path("SKAFFOLD_SCHEMA", "skaffold").context(
        "skaffold's JSON schema is not installed: run scripts/install-tools.sh skaffold",
    )?;
    let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&schema_path)?)?;
    let version = tools.get("SKAFFOLD_SCHEMA_VERSION", "skaffold")?;
    let text = std::fs::read_to_string(repo_root().join("skaffold.yaml"))?;
    let config: serde_json::Value =
        yaml_serde::from_str(&text).context("skaffold.yaml is not YAML")?;
    ensure!(
        config["apiVersion"] == format!("skaffold/{version}"),
        "skaffold.yaml apiVersion is not skaffold/{version}"
    );
    let mut errs = Vec::new();
    check_schema(&schema, &schema, &config, "", &mut errs);
    ensure!(
        errs.is_empty(),
        "skaffold.yaml does not match skaffold's {version} schema:\n{}",
        errs.join("\n")
    );
    // The checker is not vacuous: a misspelt key is caught.
    let mut broken = config.clone();
    broken["build"]["artifacts"][0]["docker"]["targett"] = "producer".into();
    let mut errs = Vec::new();
    check_schema(&schema, &schema, &broken, "", &mut errs);
    ensure!(
        !errs.is_empty(),
        "the schema checker accepted an unknown key"
    );

    let stages = dockerfile_stages(&parse_dockerfile(&repo_root().join("Dockerfile"))?);
    let artifacts = config["build"]["artifacts"]
        .as_array()
        .context("build.artifacts")?;
    let mut images = BTreeMap::new();
    for a in artifacts {
        let image = a["image"].as_str().context("artifact image")?;
        let target = a["docker"]["target"]
            .as_str()
            .with_context(|| format!("{image}: no docker.target"))?;
        ensure!(
            stages.contains(target),
            "{image}: target {target} is not a Dockerfile stage ({stages:?})"
        );
        let dockerfile = a["docker"]["dockerfile"].as_str().unwrap_or("Dockerfile");
        ensure!(
            repo_root().join(dockerfile).exists(),
            "{image}: {dockerfile} missing"
        );
        // skaffold's template key: artifact name with `/ - . :` turned into `_`.
        images.insert(image.replace(['/', '-', '.', ':'], "_"), image.to_string());
    }
    // The base releases, and each profile's: its own `manifests`, or the base with its JSON
    // patches applied (how the minikube profile adds the minimal sizing).
    let mut variants = vec![config.clone()];
    for p in config["profiles"].as_array().into_iter().flatten() {
        let mut variant = config.clone();
        if p["manifests"].is_object() {
            variant["manifests"] = p["manifests"].clone();
        }
        for patch in p["patches"].as_array().into_iter().flatten() {
            apply_patch(&mut variant, patch)
                .with_context(|| format!("profile {}: patch {patch}", p["name"]))?;
        }
        variants.push(variant);
    }
    let releases: Vec<(bool, &serde_json::Value)> = variants
        .iter()
        .flat_map(|v| {
            // Only images pushed to a registry have a digest; kind/minikube load them without.
            let pushes = v["build"]["local"]["push"] == true;
            v["manifests"]["helm"]["releases"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |r| (pushes, r))
        })
        .collect();
    ensure!(!releases.is_empty(), "no helm release in skaffold.yaml");
    ensure!(
        releases.iter().any(|(_, r)| {
            r["valuesFiles"].as_array().is_some_and(|files| {
                files
                    .iter()
                    .any(|f| f.as_str() == Some("charts/journey/ci/minimal-values.yaml"))
            })
        }),
        "no skaffold profile installs the chart with ci/minimal-values.yaml (minikube)"
    );
    let mut pinned = false;
    for (pushes, r) in releases {
        ensure!(
            repo_root()
                .join(r["chartPath"].as_str().unwrap_or(""))
                .join("Chart.yaml")
                .exists(),
            "chartPath"
        );
        let templates = r["setValueTemplates"]
            .as_object()
            .context("setValueTemplates")?;
        let mut sets = Vec::new();
        for (key, tmpl) in templates {
            let tmpl = tmpl.as_str().unwrap_or("");
            let var = tmpl.trim_start_matches("{{.").trim_end_matches("}}");
            let (artifact, value) = if let Some(a) = var.strip_prefix("IMAGE_DIGEST_") {
                ensure!(
                    pushes && key.ends_with(".image.digest"),
                    "{key}: a digest where images are not pushed (kind/minikube load them without one)"
                );
                pinned = true;
                (Some(a), format!("sha256:{}", "0123456789abcdef".repeat(4)))
            } else {
                let a = var
                    .strip_prefix("IMAGE_REPO_")
                    .or_else(|| var.strip_prefix("IMAGE_TAG_"));
                (a, "stand-in".to_string())
            };
            ensure!(
                !tmpl.contains('@') && artifact.is_some_and(|a| images.contains_key(a)),
                "{key}: {tmpl} names no artifact"
            );
            sets.push(format!("{key}={value}"));
        }
        for component in ["producer", "relay", "sink", "journeyctl"] {
            for part in ["repository", "tag"] {
                ensure!(
                    templates.contains_key(&format!("{component}.image.{part}")),
                    "{component}.image.{part} is not set by skaffold"
                );
            }
        }
        let mut values = Vec::new();
        for f in r["valuesFiles"].as_array().into_iter().flatten() {
            values.push(repo_root().join(f.as_str().unwrap_or("")));
        }
        let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
        let docs =
            render(&values, &sets).context("the chart rejects skaffold's setValueTemplates")?;
        for pf in config["portForward"].as_array().into_iter().flatten() {
            let svc = find(&docs, "Service", pf["resourceName"].as_str().unwrap_or(""))?;
            ensure!(
                seq(&svc["spec"]["ports"])
                    .iter()
                    .any(|p| p["port"].as_u64() == pf["port"].as_u64()),
                "portForward {pf}: no such Service port"
            );
        }
    }
    ensure!(
        pinned,
        "no profile that pushes pins the images by digest: a rebuild of one image would roll every workload whose tag moved"
    );
    let profiles: BTreeSet<&str> = config["profiles"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .collect();
    ensure!(
        profiles.contains("kind") && profiles.contains("minikube"),
        "profiles kind and minikube"
    );
    Ok(())
}

/// Applies one skaffold profile JSON patch (`op: add` or `replace`, RFC 6902 pointer) to `doc`.
fn apply_patch(doc: &mut serde_json::Value, patch: &serde_json::Value) -> Result<()> {
    let op = patch["op"].as_str().unwrap_or("");
    ensure!(op == "add" || op == "replace", "unsupported op {op:?}");
    let path = patch["path"].as_str().context("patch without path")?;
    let mut parts: Vec<String> = path
        .split('/')
        .skip(1)
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect();
    let last = parts.pop().context("empty patch path")?;
    let mut target = &mut *doc;
    for part in &parts {
        target = match target {
            serde_json::Value::Array(a) => a
                .get_mut(part.parse::<usize>()?)
                .with_context(|| format!("{path}: no index {part}"))?,
            other => other
                .get_mut(part.as_str())
                .with_context(|| format!("{path}: no key {part}"))?,
        };
    }
    let value = patch["value"].clone();
    match target {
        serde_json::Value::Array(a) if last == "-" => a.push(value),
        serde_json::Value::Array(a) => a.insert(last.parse()?, value),
        serde_json::Value::Object(o) => {
            o.insert(last, value);
        }
        _ => bail!("{path}: parent is neither an object nor an array"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

/// A Dockerfile as (instruction, arguments) with continuations joined and comments dropped.
fn parse_dockerfile(path: &Path) -> Result<Vec<(String, String)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if current.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if t.starts_with('#') {
            continue;
        }
        if let Some(cont) = t.strip_suffix('\\') {
            current.push_str(cont);
            current.push(' ');
            continue;
        }
        current.push_str(t);
        let (instr, args) = current
            .split_once(char::is_whitespace)
            .unwrap_or((current.as_str(), ""));
        out.push((instr.to_uppercase(), args.trim().to_string()));
        current.clear();
    }
    Ok(out)
}

fn dockerfile_stages(instrs: &[(String, String)]) -> BTreeSet<String> {
    instrs
        .iter()
        .filter(|(i, _)| i == "FROM")
        .filter_map(|(_, a)| {
            let words: Vec<&str> = a.split_whitespace().collect();
            words
                .iter()
                .position(|w| w.eq_ignore_ascii_case("as"))
                .and_then(|p| words.get(p + 1))
                .map(|s| s.to_string())
        })
        .collect()
}

fn the_dockerfile_builds_every_binary_locked_into_nonroot_distroless_stages(_: &()) -> Result<()> {
    // hadolint first (its rules, minus the ignores .hadolint.yaml justifies).
    let hadolint = Tools::load()?
        .path("HADOLINT", "hadolint")
        .context("hadolint is not installed: run scripts/install-tools.sh hadolint")?;
    let out = output(
        Command::new(hadolint)
            .args(["--no-color", "--config"])
            .arg(repo_root().join(".hadolint.yaml"))
            .arg(repo_root().join("Dockerfile")),
    )?;
    ensure!(
        out.status.success(),
        "hadolint reports:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // A `# syntax=` line makes BuildKit pull a frontend image: no registry is reachable here,
    // and the builder's own frontend has everything the Dockerfile uses.
    let raw = std::fs::read_to_string(repo_root().join("Dockerfile"))?;
    ensure!(
        !raw.lines()
            .any(|l| l.trim_start().to_lowercase().starts_with("# syntax=")),
        "the Dockerfile names a frontend image (# syntax=)"
    );
    let instrs = parse_dockerfile(&repo_root().join("Dockerfile"))?;
    // Stages: name → (base, instructions).
    let mut args = BTreeMap::new();
    let mut stages: Vec<(String, String, Instructions)> = Vec::new();
    for (instr, a) in &instrs {
        match instr.as_str() {
            "ARG" if stages.is_empty() => {
                if let Some((k, v)) = a.split_once('=') {
                    args.insert(format!("${{{k}}}"), v.to_string());
                }
            }
            "FROM" => {
                let words: Vec<&str> = a
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let base = words
                    .first()
                    .map(|b| args.get(*b).cloned().unwrap_or(b.to_string()))
                    .unwrap_or_default();
                let name = words.get(2).map(|s| s.to_string()).unwrap_or_default();
                ensure!(
                    words.get(1).is_some_and(|w| w.eq_ignore_ascii_case("AS")) && !name.is_empty(),
                    "unnamed stage: FROM {a}"
                );
                stages.push((name, base, Vec::new()));
            }
            _ => stages
                .last_mut()
                .context("instruction before FROM")?
                .2
                .push((instr.clone(), a.clone())),
        }
    }
    let stage = |n: &str| stages.iter().find(|(name, _, _)| name == n);
    // The chain of a stage back to its external base image.
    let chain = |n: &str| {
        let mut out = Vec::new();
        let mut cur = stage(n);
        while let Some(st) = cur {
            out.push(st);
            cur = stage(&st.1);
        }
        out
    };
    let root = repo_root();
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).context(".dockerignore")?;
    let ignored: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for must in ["target/", ".git/"] {
        ensure!(
            ignored.contains(&must),
            ".dockerignore does not exclude {must}"
        );
    }
    let mut cargo_build = false;
    for (name, _, body) in &stages {
        for (instr, a) in body {
            if instr == "COPY" || instr == "ADD" {
                let words: Vec<&str> = a.split_whitespace().collect();
                if let Some(from) = words.iter().find_map(|w| w.strip_prefix("--from=")) {
                    ensure!(
                        stage(from).is_some(),
                        "{name}: COPY --from={from}: no such stage"
                    );
                } else {
                    let srcs = &words[..words.len().saturating_sub(1)];
                    for src in srcs.iter().filter(|w| !w.starts_with("--")) {
                        ensure!(
                            root.join(src).exists(),
                            "{name}: COPY source {src} does not exist"
                        );
                        ensure!(
                            !ignored
                                .iter()
                                .any(|p| p.trim_end_matches('/') == src.trim_end_matches('/')),
                            "{name}: COPY source {src} is excluded by .dockerignore"
                        );
                    }
                }
            }
            if instr == "RUN" && a.contains("cargo build") {
                for flag in ["--release", "--locked", "--mount=type=cache"] {
                    ensure!(a.contains(flag), "{name}: cargo build without {flag}");
                }
                cargo_build = true;
            }
        }
    }
    ensure!(cargo_build, "no `cargo build` in the Dockerfile");
    // The binaries link the builder's glibc: the runtime must be the same Debian release.
    let builder_base = &chain("builder").last().context("builder stage")?.1;
    let runtime_base = &chain("producer").last().context("producer stage")?.1;
    let pairs = [("bookworm", "debian12"), ("trixie", "debian13")];
    ensure!(
        pairs
            .iter()
            .any(|(b, r)| builder_base.contains(b) && runtime_base.contains(r)),
        "builder {builder_base} and runtime {runtime_base} are not the same Debian release"
    );
    for bin in ["producer", "consumer", "journeyctl"] {
        let st = stage(bin).with_context(|| format!("no stage {bin} (skaffold's --target)"))?;
        let links = chain(bin);
        let base = &links.last().context("chain")?.1;
        ensure!(
            base.contains("distroless/cc") && base.ends_with(":nonroot"),
            "{bin}: runtime base {base} is not distroless cc nonroot"
        );
        let user = links
            .iter()
            .flat_map(|s| s.2.iter())
            .find(|(i, _)| i == "USER")
            .map(|(_, a)| a.clone());
        ensure!(
            user.as_deref() == Some("65532:65532"),
            "{bin}: USER is {user:?}, expected the numeric nonroot 65532:65532"
        );
        let dest = format!("/usr/local/bin/{bin}");
        ensure!(
            st.2.iter()
                .any(|(i, a)| i == "COPY" && a.starts_with("--from=builder") && a.ends_with(&dest)),
            "{bin}: does not copy the binary to {dest}"
        );
        ensure!(
            st.2.iter()
                .any(|(i, a)| i == "ENTRYPOINT" && a.replace(' ', "") == format!("[\"{dest}\"]")),
            "{bin}: ENTRYPOINT is not exec-form [\"{dest}\"]"
        );
        ensure!(
            !st.2.iter().any(|(i, _)| i == "RUN"),
            "{bin}: a RUN in a runtime stage (distroless has no shell)"
        );
    }
    Ok(())
}
