//! The Helm chart rendered by the real Helm (`helm template`), and the pieces of it tests read:
//! objects by kind and name, the pods every workload would create, their containers, and a
//! container's environment as the kubelet resolves it.

use std::path::PathBuf;
use std::process::{Command, Output};

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use yaml_serde::Value;

use crate::repo_root;
use crate::tools::Tools;

/// The release name and namespace every rendering uses.
pub const RELEASE: &str = "journey";
pub const NAMESPACE: &str = "journey";
/// The files under charts/journey/ci/ (without `-values.yaml`).
pub const CI_VALUES: [&str; 4] = ["default", "external-kafka", "three-broker", "minimal"];

/// charts/journey.
pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/journey")
}

/// charts/journey/values.yaml, the chart's defaults (the local stack reads its topics and its
/// largest record from there too).
pub fn values_file() -> PathBuf {
    chart_dir().join("values.yaml")
}

/// charts/journey/ci/<name>-values.yaml.
pub fn ci_values(name: &str) -> PathBuf {
    chart_dir().join("ci").join(format!("{name}-values.yaml"))
}

/// The pinned Helm (`scripts/install-tools.sh helm`).
pub fn helm() -> Result<PathBuf> {
    Tools::load()?.path("HELM", "helm")
}

/// Runs a command, naming it when it cannot start.
pub fn output(cmd: &mut Command) -> Result<Output> {
    let shown = format!("{cmd:?}");
    cmd.output().with_context(|| format!("running {shown}"))
}

/// Bytes as (lossy) text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `helm template` with values files and `--set` flags; Err carries Helm's message.
pub fn helm_template(values: &[PathBuf], sets: &[&str]) -> Result<String> {
    let mut cmd = Command::new(helm()?);
    cmd.args(["template", RELEASE])
        .arg(chart_dir())
        .args(["--namespace", NAMESPACE]);
    for v in values {
        cmd.arg("-f").arg(v);
    }
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = output(&mut cmd)?;
    if !out.status.success() {
        bail!(
            "helm template {sets:?} failed: {}",
            text(&out.stderr).trim()
        );
    }
    Ok(text(&out.stdout))
}

/// The documents of a multi-document YAML stream (empty ones skipped).
pub fn parse_docs(yaml: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for doc in yaml_serde::Deserializer::from_str(yaml) {
        let v = Value::deserialize(doc).context("parsing rendered YAML")?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// `helm template` parsed.
pub fn render(values: &[PathBuf], sets: &[&str]) -> Result<Vec<Value>> {
    parse_docs(&helm_template(values, sets)?)
}

/// `helm template -f ci/<name>-values.yaml` parsed.
pub fn render_ci(name: &str) -> Result<Vec<Value>> {
    render(&[ci_values(name)], &[]).with_context(|| format!("rendering ci/{name}-values.yaml"))
}

/// `.kind`.
pub fn kind_of(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or("")
}

/// `.metadata.name`.
pub fn name_of(v: &Value) -> &str {
    v["metadata"]["name"].as_str().unwrap_or("")
}

/// The object of `kind` named `name`.
pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Result<&'a Value> {
    docs.iter()
        .find(|d| kind_of(d) == kind && name_of(d) == name)
        .ok_or_else(|| anyhow!("no {kind} {name} rendered"))
}

/// Every object of `kind`.
pub fn all<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| kind_of(d) == kind).collect()
}

/// A YAML sequence as a slice (empty when it is not one).
pub fn seq(v: &Value) -> &[Value] {
    v.as_sequence().map(Vec::as_slice).unwrap_or(&[])
}

/// A YAML string (empty when it is not one).
pub fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// Every pod the chart would create: (owner, pod template metadata, pod spec).
pub fn pods(docs: &[Value]) -> Vec<(String, &Value, &Value)> {
    let mut out = Vec::new();
    for d in docs {
        let owner = format!("{}/{}", kind_of(d), name_of(d));
        match kind_of(d) {
            "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => out.push((
                owner,
                &d["spec"]["template"]["metadata"],
                &d["spec"]["template"]["spec"],
            )),
            "Pod" => out.push((owner, &d["metadata"], &d["spec"])),
            _ => {}
        }
    }
    out
}

/// Init containers then containers.
pub fn containers(pod: &Value) -> Vec<&Value> {
    seq(&pod["initContainers"])
        .iter()
        .chain(seq(&pod["containers"]))
        .collect()
}

pub fn container<'a>(pod: &'a Value, name: &str) -> Result<&'a Value> {
    containers(pod)
        .into_iter()
        .find(|c| s(&c["name"]) == name)
        .ok_or_else(|| anyhow!("no container {name}"))
}

/// Stand-ins for what only a running pod knows.
#[derive(Debug, Clone)]
pub struct PodFacts {
    /// `metadata.name`.
    pub name: String,
    /// The StatefulSet pod index label.
    pub index: usize,
    /// `status.podIP`.
    pub ip: String,
}

impl PodFacts {
    /// A pod named `name` (index 0) on the loopback address.
    pub fn named(name: &str) -> PodFacts {
        PodFacts {
            name: name.to_string(),
            index: 0,
            ip: "127.0.0.1".into(),
        }
    }
}

/// A container's environment in order, as the kubelet resolves it: downward-API and Secret
/// values replaced by stand-ins, then `$(NAME)` references to earlier variables expanded.
pub fn resolve_env(c: &Value, pod: &PodFacts) -> Result<Vec<(String, String)>> {
    let mut env: Vec<(String, String)> = Vec::new();
    for e in seq(&c["env"]) {
        let name = s(&e["name"]).to_string();
        let raw = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else if let Some(v) = e["value"].as_i64() {
            v.to_string()
        } else if !e["valueFrom"].is_null() {
            let from = &e["valueFrom"];
            if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
                match path {
                    "metadata.name" => pod.name.clone(),
                    "metadata.namespace" => NAMESPACE.into(),
                    "metadata.uid" => "0b5e0a7c-0000-4000-8000-000000000001".into(),
                    "status.podIP" => pod.ip.clone(),
                    "spec.nodeName" => "kind-control-plane".into(),
                    "metadata.labels['apps.kubernetes.io/pod-index']" => pod.index.to_string(),
                    other => bail!("{name}: a fieldRef this test has no stand-in for: {other}"),
                }
            } else if !from["secretKeyRef"].is_null() {
                "stand-in-secret".into()
            } else if !from["resourceFieldRef"].is_null() {
                "268435456".into()
            } else {
                bail!("{name}: unsupported valueFrom {from:?}")
            }
        } else {
            String::new()
        };
        let expanded = expand(&raw, &env);
        env.retain(|(k, _)| *k != name);
        env.push((name, expanded));
    }
    Ok(env)
}

/// The kubelet's `$(NAME)` expansion: earlier variables only, `$$` escapes, unknown kept.
pub fn expand(raw: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = raw;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let key = &body[..end];
                    match env.iter().rev().find(|(k, _)| k == key) {
                        Some((_, v)) => out.push_str(v),
                        None => out.push_str(&format!("$({key})")),
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = body;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}
