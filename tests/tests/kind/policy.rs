//! The chart's NetworkPolicies, enforced by kind's CNI daemon (kindnetd; here Journey's
//! stand-in, whose policy controller compiles them to nftables rules), in both directions: the
//! release's own pods get through (the whole journey passed already), another app's pod in
//! the same namespace is refused at every port of the stack, `networkPolicy.extraIngress`
//! opens exactly the producer and Zipkin to the peer it names, and with the policies turned
//! off the same probes connect (so a refusal is the policies' doing, not a wrong address).
//!
//! The probes run in two pods of the Kafka image (it has bash and coreutils' `timeout`):
//! `other-app` (label `app: other`) and `friend` (the release's labels, as the chart's own
//! pods carry them). A probe is a TCP connect with a 3 s bound.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use journey_tests::kube::Kube;
use journey_tests::process::run_ok;
use journey_tests::say;

use crate::{Kind, NAMESPACE, RELEASE, component, eventually};

/// The probe pods: name and labels.
const OTHER: (&str, &str) = ("other-app", "app: other");
const FRIEND: (&str, &str) = (
    "friend",
    "app.kubernetes.io/instance: journey, app.kubernetes.io/name: journey",
);

/// How long a policy change may take to reach the node's rules.
const APPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// Every port of the stack a policy guards: (component, port). The producer is also probed
/// through its Service (kube-proxy's DNAT happens before the policy rules see the packet).
const PORTS: &[(&str, u16)] = &[
    ("kafka", 9092),
    ("kafka", 9093),
    ("collector", 4317),
    ("collector", 4318),
    ("zipkin", 9411),
    ("producer", 8080),
];

/// The ports `networkPolicy.extraIngress` opens (its value comment: the producer and Zipkin).
const EXTRA_INGRESS_OPENS: &[&str] = &["zipkin", "producer"];

pub fn kindnet_enforces_the_charts_network_policies_on_the_node(f: &Kind) -> Result<()> {
    let policies = f.cluster.kubectl_ok([
        "get",
        "networkpolicies",
        "-n",
        NAMESPACE,
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ])?;
    let count = policies.split_whitespace().count();
    ensure!(
        count == 6,
        "the release has {count} NetworkPolicies: {policies}"
    );
    // kindnetd's log reports each sync of the policy rules; the last one saw all six.
    let log = f.cluster.kubectl_ok([
        "logs",
        "-n",
        "kube-system",
        "daemonset/kindnet",
        "--tail=200",
    ])?;
    let last = log
        .lines()
        .rfind(|l| l.contains("network policies:"))
        .with_context(|| format!("kindnetd logged no policy sync:\n{log}"))?;
    ensure!(
        last.contains(&format!("{count} policies")),
        "kindnetd's last policy sync: {last}"
    );
    // And the node's kernel holds the rules.
    let table =
        f.cluster
            .node_exec(&["nft", "list", "table", "inet", "kindnet-network-policies"])?;
    let kafka_ip = pod_ip(f, "kafka")?;
    ensure!(
        table.contains(&kafka_ip),
        "the node's policy table does not name Kafka's pod {kafka_ip}:\n{table}"
    );
    say!("kind: kindnetd: {}", last.trim());
    Ok(())
}

pub fn another_apps_pod_is_refused_at_every_port_while_the_releases_pods_get_through(
    f: &Kind,
) -> Result<()> {
    start_probe_pod(f, FRIEND)?;
    start_probe_pod(f, OTHER)?;
    let targets = targets(f)?;
    expect(f, FRIEND.0, &targets, |_| true, "the release's labels")?;
    expect(
        f,
        OTHER.0,
        &targets,
        |_| false,
        "the chart's default policies",
    )
}

pub fn extra_ingress_opens_the_producer_and_zipkin_to_its_peer_and_nothing_else(
    f: &Kind,
) -> Result<()> {
    upgrade(
        f,
        &[
            "--set-json",
            r#"networkPolicy.extraIngress=[{"podSelector":{"matchLabels":{"app":"other"}}}]"#,
        ],
    )?;
    let targets = targets(f)?;
    let opened = expect(
        f,
        OTHER.0,
        &targets,
        |component| EXTRA_INGRESS_OPENS.contains(&component),
        "extraIngress naming app=other",
    );
    upgrade(f, &["--set-json", "networkPolicy.extraIngress=[]"])?;
    opened?;
    expect(f, OTHER.0, &targets, |_| false, "extraIngress back to []")
}

pub fn without_the_policies_the_other_apps_pod_reaches_every_port(f: &Kind) -> Result<()> {
    upgrade(f, &["--set", "networkPolicy.enabled=false"])?;
    let targets = targets(f)?;
    let reached = expect(
        f,
        OTHER.0,
        &targets,
        |_| true,
        "networkPolicy.enabled=false",
    );
    upgrade(f, &["--set", "networkPolicy.enabled=true"])?;
    reached?;
    let refused = expect(
        f,
        OTHER.0,
        &targets,
        |_| false,
        "networkPolicy.enabled=true again",
    );
    for (name, _) in [OTHER, FRIEND] {
        f.cluster
            .kubectl_ok(["delete", "pod", "-n", NAMESPACE, name, "--wait=false"])?;
    }
    refused
}

/// `helm upgrade --reuse-values` of the release with `args`, waiting for it.
fn upgrade(f: &Kind, args: &[&str]) -> Result<()> {
    let chart = journey_tests::chart::chart_dir();
    let mut cmd = f.cluster.helm_command()?;
    cmd.args(["upgrade", RELEASE])
        .arg(&chart)
        .args([
            "-n",
            NAMESPACE,
            "--reuse-values",
            "--wait",
            "--timeout",
            "5m",
        ])
        .args(args);
    say!(
        "kind: helm upgrade {RELEASE} --reuse-values {}",
        args.join(" ")
    );
    run_ok("helm upgrade", &mut cmd)?;
    Ok(())
}

/// A probe target: the component, its port, and the address to connect to.
#[derive(Debug, Clone)]
struct Target {
    component: &'static str,
    port: u16,
    host: String,
}

impl Target {
    fn label(&self) -> String {
        format!("{}:{} ({})", self.component, self.port, self.host)
    }
}

/// Every port of [`PORTS`] at its pod's address, plus the producer through its Service.
fn targets(f: &Kind) -> Result<Vec<Target>> {
    let mut out = Vec::new();
    for &(component, port) in PORTS {
        out.push(Target {
            component,
            port,
            host: pod_ip(f, component)?,
        });
    }
    out.push(Target {
        component: "producer",
        port: 8080,
        host: format!("{RELEASE}-producer.{NAMESPACE}.svc.cluster.local"),
    });
    Ok(out)
}

fn pod_ip(f: &Kind, component_name: &str) -> Result<String> {
    let pods = f.pods()?;
    let pod = pods
        .iter()
        .find(|p| component(p) == component_name && p["status"]["phase"] == "Running")
        .with_context(|| format!("no running {component_name} pod"))?;
    pod["status"]["podIP"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("the {component_name} pod has no IP"))
}

/// A pod that only sleeps, in the Kafka image, with `labels` (a YAML flow mapping body),
/// compliant with Pod Security `restricted`; waits until it runs.
fn start_probe_pod(f: &Kind, (name, labels): (&str, &str)) -> Result<()> {
    let image = f
        .third_party
        .iter()
        .find(|i| i.contains("kafka"))
        .context("no Kafka image among the chart's third-party images")?;
    f.cluster.kubectl_apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {NAMESPACE}
  labels: {{{labels}}}
spec:
  terminationGracePeriodSeconds: 0
  securityContext:
    runAsNonRoot: true
    runAsUser: 1000
    runAsGroup: 1000
    seccompProfile: {{type: RuntimeDefault}}
  containers:
    - name: probe
      image: {image}
      imagePullPolicy: Never
      command: ["sleep", "infinity"]
      resources: {{requests: {{cpu: 10m, memory: 16Mi}}, limits: {{memory: 64Mi}}}}
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities: {{drop: [ALL]}}
"#
    ))?;
    run_ok(
        "kubectl wait",
        f.cluster.kubectl_command().args([
            "wait",
            "-n",
            NAMESPACE,
            "--for=condition=Ready",
            &format!("pod/{name}"),
            "--timeout=120s",
        ]),
    )?;
    Ok(())
}

/// Connects from pod `from` to every target at once (3 s each); for each target, whether the
/// connection was made.
fn probe(f: &Kind, from: &str, targets: &[Target]) -> Result<BTreeMap<String, bool>> {
    let mut script = String::new();
    for (i, t) in targets.iter().enumerate() {
        script.push_str(&format!(
            "(timeout 3 bash -c 'exec 3<>/dev/tcp/{}/{}' 2>/dev/null; echo \"{i} $?\") & ",
            t.host, t.port
        ));
    }
    script.push_str("wait");
    let out = f
        .cluster
        .kubectl_ok(["exec", "-n", NAMESPACE, from, "--", "bash", "-c", &script])?;
    let mut result = BTreeMap::new();
    for line in out.lines() {
        let Some((i, code)) = line.split_once(' ') else {
            continue;
        };
        let t = &targets[i.parse::<usize>().context("probe output")?];
        result.insert(t.label(), code.trim() == "0");
    }
    ensure!(
        result.len() == targets.len(),
        "the probes from {from} answered {out:?}"
    );
    Ok(result)
}

/// Waits until the probes from `from` connect exactly where `open(component)` says; fails
/// naming each port that does not (under `why`).
fn expect(
    f: &Kind,
    from: &str,
    targets: &[Target],
    open: impl Fn(&str) -> bool,
    why: &str,
) -> Result<()> {
    let want: BTreeMap<String, bool> = targets
        .iter()
        .map(|t| (t.label(), open(t.component)))
        .collect();
    let mut last = BTreeMap::new();
    let done = eventually(
        &format!("kind: connections from {from} as {why} allows"),
        APPLY_TIMEOUT,
        || {
            last = probe(f, from, targets)?;
            Ok(last == want)
        },
    );
    if done.is_err() {
        let wrong: Vec<String> = want
            .iter()
            .filter(|(k, v)| last.get(*k) != Some(v))
            .map(|(k, v)| {
                format!(
                    "{k}: {} (expected {})",
                    if last.get(k) == Some(&true) {
                        "connected"
                    } else {
                        "refused"
                    },
                    if *v { "connected" } else { "refused" }
                )
            })
            .collect();
        anyhow::bail!("from {from} under {why}:\n  {}", wrong.join("\n  "));
    }
    say!(
        "kind: from {from} under {why}: {}",
        last.iter()
            .map(|(k, v)| format!("{k} {}", if *v { "connected" } else { "refused" }))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
