//! NetworkPolicies (on by default): every connection the rendered stack makes is allowed, and
//! a pod outside the release reaches nothing but what `networkPolicy.extraIngress` opens.
//!
//! The connections are read from the rendered environment (every `host:port` naming one of the
//! chart's Services), mapped to the pods behind that Service and its target port, and checked
//! against the rendered policies with the NetworkPolicy rules for pod selectors in one
//! namespace. (Enforcement needs a policy-aware CNI, which this machine's node does not run;
//! kind's default CNI enforces them.)

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, ensure};
use journey_tests::chart::{
    CI_VALUES, PodFacts, all, containers, name_of, pods, render, render_ci, resolve_env, s, seq,
};
use yaml_serde::Value;

/// A pod template: its labels and its named container ports.
struct PodShape {
    component: String,
    labels: BTreeMap<String, String>,
    ports: BTreeMap<String, i64>,
}

/// A connection: from a component to a component's container port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Connection {
    from: String,
    to: String,
    port: i64,
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_mapping()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (s(k).to_string(), s(v).to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// `selector` (matchLabels) selects `labels`.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn shapes(docs: &[Value]) -> Vec<PodShape> {
    pods(docs)
        .into_iter()
        .map(|(_, meta, spec)| {
            let labels = string_map(&meta["labels"]);
            let ports = containers(spec)
                .iter()
                .flat_map(|c| seq(&c["ports"]).iter())
                .filter_map(|p| Some((s(&p["name"]).to_string(), p["containerPort"].as_i64()?)))
                .collect();
            PodShape {
                component: labels
                    .get("app.kubernetes.io/component")
                    .cloned()
                    .unwrap_or_default(),
                labels,
                ports,
            }
        })
        .collect()
}

/// The `host:port` endpoints in an environment value: URLs, `LISTENER://host:port` lists and
/// KRaft voters (`id@host:port`).
fn endpoints(value: &str) -> Vec<(String, i64)> {
    value
        .split([',', ' ', ';'])
        .filter_map(|token| {
            let token = token.rsplit("://").next()?;
            let token = token.rsplit('@').next()?;
            let authority = token.split('/').next()?;
            let (host, port) = authority.rsplit_once(':')?;
            Some((host.to_string(), port.parse().ok()?))
        })
        .collect()
}

/// Every connection the rendered stack makes to one of its own Services.
fn connections(docs: &[Value], shapes: &[PodShape]) -> Result<BTreeSet<Connection>> {
    let services: BTreeMap<&str, &Value> = all(docs, "Service")
        .into_iter()
        .map(|svc| (name_of(svc), svc))
        .collect();
    let mut out = BTreeSet::new();
    for (owner, meta, spec) in pods(docs) {
        let from = string_map(&meta["labels"])
            .get("app.kubernetes.io/component")
            .cloned()
            .unwrap_or_default();
        let facts = PodFacts::named(&format!("{}-0", owner.split('/').nth(1).unwrap_or("pod")));
        for c in containers(spec) {
            for (_, value) in resolve_env(c, &facts)? {
                for (host, port) in endpoints(&value) {
                    // `svc`, `svc.ns.svc.cluster.local` or `pod-0.svc.ns...` (headless).
                    let labels: Vec<&str> = host.split('.').collect();
                    let Some(svc) = labels.iter().take(2).find_map(|l| services.get(l)) else {
                        continue;
                    };
                    let selector = string_map(&svc["spec"]["selector"]);
                    let svc_port = seq(&svc["spec"]["ports"])
                        .iter()
                        .find(|p| p["port"].as_i64() == Some(port))
                        .with_context(|| {
                            format!("{owner}: {host}:{port} is no port of its Service")
                        })?;
                    for target in shapes.iter().filter(|t| selects(&selector, &t.labels)) {
                        let target_port = match &svc_port["targetPort"] {
                            Value::Number(n) => n.as_i64(),
                            Value::String(name) => target.ports.get(name).copied(),
                            _ => Some(port),
                        }
                        .with_context(|| {
                            format!("{owner}: no container port behind {host}:{port}")
                        })?;
                        out.insert(Connection {
                            from: from.clone(),
                            to: target.component.clone(),
                            port: target_port,
                        });
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Whether the policies let a pod labelled `from` reach `to` on `port` (in one namespace).
/// `None` when no policy selects `to` (then all traffic is allowed: the pod is not isolated).
fn admitted(
    policies: &[&Value],
    from: &BTreeMap<String, String>,
    to: &PodShape,
    port: i64,
) -> Option<bool> {
    let selecting: Vec<&&Value> = policies
        .iter()
        .filter(|p| {
            selects(
                &string_map(&p["spec"]["podSelector"]["matchLabels"]),
                &to.labels,
            )
        })
        .collect();
    if selecting.is_empty() {
        return None;
    }
    Some(selecting.iter().any(|p| {
        seq(&p["spec"]["ingress"]).iter().any(|rule| {
            let peer_ok = seq(&rule["from"]).iter().any(|peer| {
                peer["namespaceSelector"].is_null()
                    && selects(&string_map(&peer["podSelector"]["matchLabels"]), from)
            });
            let port_ok = seq(&rule["ports"]).iter().any(|p| match &p["port"] {
                Value::Number(n) => n.as_i64() == Some(port),
                Value::String(name) => to.ports.get(name) == Some(&port),
                _ => true,
            });
            peer_ok && port_ok
        })
    }))
}

fn check(docs: &[Value], what: &str) -> Result<BTreeSet<Connection>> {
    let shapes = shapes(docs);
    let policies = all(docs, "NetworkPolicy");
    let connections = connections(docs, &shapes)?;
    let mut problems = Vec::new();
    for c in &connections {
        let from = &shapes
            .iter()
            .find(|p| p.component == c.from)
            .context("the connecting pod")?
            .labels;
        for to in shapes.iter().filter(|p| p.component == c.to) {
            match admitted(&policies, from, to, c.port) {
                Some(true) => {}
                Some(false) => problems.push(format!("{c:?} is refused")),
                None => problems.push(format!("{}: no NetworkPolicy selects it", c.to)),
            }
        }
    }
    // A pod of another application in the namespace reaches none of the stack's ports.
    let stranger = BTreeMap::from([("app".to_string(), "stranger".to_string())]);
    for to in &shapes {
        for port in to.ports.values() {
            if admitted(&policies, &stranger, to, *port) != Some(false) {
                problems.push(format!("a foreign pod reaches {}:{port}", to.component));
            }
        }
    }
    ensure!(problems.is_empty(), "{what}: {problems:#?}");
    Ok(connections)
}

pub(crate) fn every_connection_the_stack_makes_passes_its_network_policies_and_no_other_does(
    _: &(),
) -> Result<()> {
    for name in CI_VALUES {
        let docs = render_ci(name)?;
        let found = check(&docs, &format!("ci/{name}"))?;
        if name == "default" {
            // The check found the journey's own connections (so it cannot pass on none).
            for (from, to, port) in [
                ("producer", "kafka", 9092),
                ("relay", "kafka", 9092),
                ("sink", "kafka", 9092),
                ("producer", "collector", 4317),
                ("collector", "zipkin", 9411),
                ("verify", "producer", 8080),
            ] {
                let c = Connection {
                    from: from.into(),
                    to: to.into(),
                    port,
                };
                ensure!(found.contains(&c), "{c:?} not among {found:#?}");
            }
        }
    }
    // extraIngress opens the producer and Zipkin (only) to the peers it names.
    let docs = render(
        &[],
        &["networkPolicy.extraIngress[0].podSelector.matchLabels.app=ingress"],
    )?;
    let shapes = shapes(&docs);
    let policies = all(&docs, "NetworkPolicy");
    let ingress = BTreeMap::from([("app".to_string(), "ingress".to_string())]);
    for to in &shapes {
        let open = matches!(to.component.as_str(), "producer" | "zipkin");
        for port in to.ports.values() {
            ensure!(
                admitted(&policies, &ingress, to, *port) == Some(open),
                "extraIngress to {}:{port}: expected open={open}",
                to.component
            );
        }
    }
    Ok(())
}
