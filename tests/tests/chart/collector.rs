//! The Collector.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use journey_tests::chart::{
    CI_VALUES, PodFacts, chart_dir, container, find, output, render_ci, resolve_env, s, seq, text,
};
use journey_tests::tools::Tools;

use crate::expansion_helpers;

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

pub(crate) fn the_collector_mounts_exactly_the_config_files_and_gets_every_variable_they_read(
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

pub(crate) fn the_rendered_collector_config_passes_otelcol_validate(_: &()) -> Result<()> {
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
        let env = resolve_env(c, &PodFacts::named("journey-collector-0"))?;
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
