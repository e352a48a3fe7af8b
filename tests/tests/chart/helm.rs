//! Helm: lint, template, schema.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use journey_tests::chart::{
    CI_VALUES, NAMESPACE, PodFacts, RELEASE, all, chart_dir, ci_values, container, containers,
    find, helm, helm_template, kind_of, name_of, output, parse_docs, pods, render, render_ci,
    resolve_env, s, seq, text,
};
use journey_tests::repo_root;
use yaml_serde::Value;

pub(crate) fn helm_lint_strict_passes_with_every_ci_values_file(_: &()) -> Result<()> {
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

pub(crate) fn helm_template_renders_every_ci_values_file_with_the_expected_objects(
    _: &(),
) -> Result<()> {
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
                    &PodFacts::named("journey-producer-0"),
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
                "minimal: NetworkPolicies (on by default)"
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

pub(crate) fn the_values_schema_and_the_chart_reject_wrong_values(_: &()) -> Result<()> {
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
            &["journeyctl.reseedInterval=0s"],
            "/journeyctl/reseedInterval",
        ),
        (
            &["journeyctl.reseedInterval=0m0s"],
            "/journeyctl/reseedInterval",
        ),
        (
            &["producer.headerReadTimeout=soon"],
            "/producer/headerReadTimeout",
        ),
        (&["producer.maxConnections=0"], "/producer/maxConnections"),
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

pub(crate) fn an_image_digest_pins_that_image_and_leaves_the_others_on_their_tags(
    _: &(),
) -> Result<()> {
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

pub(crate) fn the_collectors_gomemlimit_is_80_percent_of_its_memory_limit_in_any_quantity_form(
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

pub(crate) fn the_chart_pins_the_kafka_zipkin_and_collector_versions_the_local_stack_runs(
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

pub(crate) fn every_workload_takes_its_node_selector_tolerations_and_affinity_from_its_values(
    _: &(),
) -> Result<()> {
    let components = ["producer", "relay", "sink", "kafka", "collector", "zipkin"];
    let sets: Vec<String> = components
        .iter()
        .flat_map(|c| {
            [
                format!("{c}.nodeSelector.pool={c}"),
                format!("{c}.tolerations[0].key={c}"),
                format!("{c}.tolerations[0].operator=Exists"),
                format!("{c}.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight=7"),
            ]
        })
        .collect();
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let placed = render(&[], &sets)?;
    let plain = render(&[], &[])?;
    for c in components {
        let owner = |docs: &[Value]| -> Result<Value> {
            pods(docs)
                .into_iter()
                .find(|(o, _, _)| o.ends_with(&format!("/{RELEASE}-{c}")))
                .map(|(_, _, spec)| spec.clone())
                .with_context(|| format!("no {c} workload rendered"))
        };
        let spec = owner(&placed)?;
        ensure!(
            s(&spec["nodeSelector"]["pool"]) == c
                && s(&seq(&spec["tolerations"])[0]["key"]) == c
                && spec["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
                    [0]["weight"]
                    .as_i64()
                    == Some(7),
            "{c}: its nodeSelector, tolerations and affinity values must reach its pod spec: {spec:?}"
        );
        let spec = owner(&plain)?;
        for key in ["nodeSelector", "tolerations", "affinity"] {
            ensure!(spec[key].is_null(), "{c}: {key} rendered although unset");
        }
    }
    Ok(())
}
