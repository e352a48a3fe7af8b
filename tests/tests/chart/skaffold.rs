//! skaffold.yaml.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, bail, ensure};
use journey_tests::chart::{find, render, seq};
use journey_tests::repo_root;
use journey_tests::tools::Tools;

use crate::dockerfile::{dockerfile_stages, parse_dockerfile};

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

pub(crate) fn skaffold_yaml_matches_skaffolds_schema_the_dockerfile_and_the_chart(
    _: &(),
) -> Result<()> {
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

/// `skaffold render` (offline, with the tags its tagger computes; nothing is built and no
/// cluster is asked) gives exactly what `helm template` gives with the same image values.
pub(crate) fn skaffold_render_is_what_helm_template_renders_with_the_same_values(
    _: &(),
) -> Result<()> {
    let tools = Tools::load()?;
    // skaffold 2.16 drives Helm 3 (it asks `helm version --client`, which Helm 4 dropped); its
    // state stays out of the user's home.
    let home = tempfile::Builder::new()
        .prefix("journey-skaffold-")
        .tempdir()?;
    let bin = home.path().join("bin");
    std::fs::create_dir_all(&bin)?;
    std::os::unix::fs::symlink(tools.path("HELM3", "helm")?, bin.join("helm"))?;
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new(tools.path("SKAFFOLD", "skaffold")?)
        .args([
            "render",
            "--digest-source=tag",
            "--offline=true",
            "--loud=false",
        ])
        .current_dir(repo_root())
        .env("PATH", path)
        .env("HOME", home.path())
        .env("KUBECONFIG", home.path().join("no-kubeconfig"))
        .env("SKAFFOLD_UPDATE_CHECK", "false")
        .env("SKAFFOLD_INTERACTIVE", "false")
        .output()?;
    ensure!(
        out.status.success(),
        "skaffold render failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = journey_tests::chart::parse_docs(&String::from_utf8_lossy(&out.stdout))
        .context("skaffold render's output")?;
    let key = |d: &yaml_serde::Value| {
        format!(
            "{}/{}",
            journey_tests::chart::kind_of(d),
            journey_tests::chart::name_of(d)
        )
    };
    // The image values skaffold set, read back from what it rendered.
    let image_of = |name: &str, list: &str| -> Result<(String, String)> {
        let d = rendered
            .iter()
            .find(|d| key(d) == format!("Deployment/{name}"))
            .with_context(|| format!("skaffold rendered no Deployment {name}"))?;
        let image = d["spec"]["template"]["spec"][list][0]["image"]
            .as_str()
            .unwrap_or("");
        let (repo, tag) = image.rsplit_once(':').context("an image without a tag")?;
        Ok((repo.to_string(), tag.to_string()))
    };
    let (p_repo, p_tag) = image_of("journey-producer", "containers")?;
    let (c_repo, c_tag) = image_of("journey-relay", "containers")?;
    let (j_repo, j_tag) = image_of("journey-relay", "initContainers")?;
    ensure!(
        p_repo == "journey/producer"
            && c_repo == "journey/consumer"
            && j_repo == "journey/journeyctl",
        "skaffold rendered the images {p_repo}, {c_repo}, {j_repo}"
    );
    let sets = [
        format!("producer.image.repository={p_repo}"),
        format!("producer.image.tag={p_tag}"),
        format!("relay.image.repository={c_repo}"),
        format!("relay.image.tag={c_tag}"),
        format!("sink.image.repository={c_repo}"),
        format!("sink.image.tag={c_tag}"),
        format!("journeyctl.image.repository={j_repo}"),
        format!("journeyctl.image.tag={j_tag}"),
    ];
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let helm = render(&[], &sets)?;
    // Compared as data (skaffold writes keys in another order).
    let mut a: Vec<(String, &yaml_serde::Value)> = rendered.iter().map(|d| (key(d), d)).collect();
    let mut b: Vec<(String, &yaml_serde::Value)> = helm.iter().map(|d| (key(d), d)).collect();
    a.sort_by(|x, y| x.0.cmp(&y.0));
    b.sort_by(|x, y| x.0.cmp(&y.0));
    let names =
        |v: &[(String, &yaml_serde::Value)]| v.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    ensure!(
        names(&a) == names(&b),
        "skaffold render and helm template render different objects:\n{:?}\n{:?}",
        names(&a),
        names(&b)
    );
    for ((k, x), (_, y)) in a.iter().zip(&b) {
        ensure!(
            x == y,
            "{k} differs:\nskaffold render:\n{}\nhelm template:\n{}",
            yaml_serde::to_string(x).unwrap_or_default(),
            yaml_serde::to_string(y).unwrap_or_default()
        );
    }
    Ok(())
}
