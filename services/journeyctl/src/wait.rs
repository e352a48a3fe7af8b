//! `wait`: until the named workloads are Ready (kube watches), then Kafka answers metadata
//! with the expected broker count, the Collector's health check and Zipkin's `/health` pass.
//!
//! Workloads are watched (`kube::runtime::watcher`, one watch per target plus one on the
//! namespace's Pods for the reasons), never polled; the Kafka/HTTP checks retry with capped
//! exponential backoff. Everything shares one deadline. Progress lines name what is pending
//! and why, e.g. `statefulset/kafka: 0/1 ready (kafka-0: ContainersNotReady)`.
//!
//! RBAC needed in the namespace: `get`, `list`, `watch` on `pods` and on `apps` `deployments`
//! and `statefulsets`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::stream::BoxStream;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, ResourceExt as _};
use rdkafka::ClientConfig;
use tracing::{info, instrument};

/// The kinds of workload `wait` understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    StatefulSet,
    Deployment,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::StatefulSet => "statefulset",
            Kind::Deployment => "deployment",
        }
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "statefulset" | "statefulsets" | "sts" => Ok(Kind::StatefulSet),
            "deployment" | "deployments" | "deploy" => Ok(Kind::Deployment),
            other => Err(format!(
                "unknown kind `{other}` (statefulset or deployment)"
            )),
        }
    }
}

/// What to wait for: one workload by name, or every workload of a kind matching a label
/// selector (at least one must exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `statefulset/kafka`
    Named { kind: Kind, name: String },
    /// `deployment[app.kubernetes.io/name=zipkin,tier!=test]` (selector syntax of `kubectl -l`)
    Selected { kind: Kind, selector: String },
}

impl Target {
    pub fn kind(&self) -> Kind {
        match self {
            Target::Named { kind, .. } | Target::Selected { kind, .. } => *kind,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Named { kind, name } => write!(f, "{}/{name}", kind.as_str()),
            Target::Selected { kind, selector } => write!(f, "{}[{selector}]", kind.as_str()),
        }
    }
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some((kind, rest)) = s.split_once('[') {
            let selector = rest
                .strip_suffix(']')
                .ok_or_else(|| format!("`{s}`: a selector target is KIND[SELECTOR]"))?
                .trim();
            if selector.is_empty() {
                return Err(format!("`{s}`: empty selector"));
            }
            return Ok(Target::Selected {
                kind: kind.parse()?,
                selector: selector.to_string(),
            });
        }
        let (kind, name) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is neither KIND/NAME nor KIND[SELECTOR]"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("`{s}`: empty name"));
        }
        Ok(Target::Named {
            kind: kind.parse()?,
            name: name.to_string(),
        })
    }
}

/// Parses a comma-separated list of targets; commas inside `[...]` belong to the selector.
pub fn parse_targets(list: &str) -> Result<Vec<Target>, String> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut cur = String::new();
    for c in list.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if c == ',' && depth == 0 {
            if !cur.trim().is_empty() {
                out.push(cur.parse()?);
            }
            cur.clear();
        } else {
            cur.push(c);
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.parse()?);
    }
    Ok(out)
}

/// Everything `wait` checks.
#[derive(Debug, Clone)]
pub struct WaitPlan {
    pub namespace: String,
    pub targets: Vec<Target>,
    /// Kafka client settings; `None` skips the Kafka check.
    pub kafka: Option<ClientConfig>,
    pub expected_brokers: usize,
    /// e.g. `http://collector:13133/`; `None` skips it.
    pub collector_health_url: Option<String>,
    /// Zipkin's base URL; `None` skips it.
    pub zipkin_url: Option<String>,
    pub timeout: Duration,
}

/// Why waiting failed. See [`WaitError::exit_code`].
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("timed out after {}; still not ready:\n  {}", humantime::format_duration(*.after), .pending.join("\n  "))]
    Timeout {
        after: Duration,
        pending: Vec<String>,
    },
    #[error(
        "the Kubernetes API refused access: {0} (does the service account's Role allow get/list/watch on pods, deployments and statefulsets?)"
    )]
    Forbidden(String),
    #[error(
        "workloads to wait for, but no Kubernetes client (is journeyctl running in a pod with a service account, or is a kubeconfig set?)"
    )]
    NoKubeClient,
    #[error("every Kubernetes watch ended before the workloads were ready")]
    WatchesEnded,
    #[error("cannot build the HTTP client for the Collector and Zipkin checks: {0}")]
    HttpClient(#[source] reqwest::Error),
}

impl WaitError {
    /// 3 for a timeout, 4 when the API refused access (RBAC), 5 without a usable client.
    pub fn exit_code(&self) -> u8 {
        match self {
            WaitError::Timeout { .. } => crate::exit::TIMEOUT,
            WaitError::Forbidden(_) => crate::exit::FORBIDDEN,
            WaitError::NoKubeClient | WaitError::WatchesEnded | WaitError::HttpClient(_) => {
                crate::exit::UNAVAILABLE
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Readiness of workloads and pods (pure functions, unit-tested).

/// Status of one workload: ready or not, and a short summary such as `1/3 ready`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadState {
    pub ready: bool,
    pub summary: String,
}

pub fn deployment_state(d: &Deployment) -> WorkloadState {
    let desired = d.spec.replicas.unwrap_or(1);
    let st = d.status.clone().unwrap_or_default();
    let observed = st.observed_generation.unwrap_or(-1) >= d.metadata.generation.unwrap_or(0);
    let ready = st.ready_replicas.unwrap_or(0);
    let available = st.available_replicas.unwrap_or(0);
    let updated = st.updated_replicas.unwrap_or(0);
    let total = st.replicas.unwrap_or(0);
    let mut summary = format!("{ready}/{desired} ready");
    if !observed {
        summary.push_str(", spec change not observed yet");
    } else if updated < desired {
        summary.push_str(&format!(", {updated}/{desired} updated"));
    } else if total > desired {
        summary.push_str(&format!(", {} old replicas terminating", total - desired));
    }
    for c in st.conditions.iter().flatten() {
        if c.type_.as_deref() == Some("Progressing")
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        {
            summary.push_str(", ProgressDeadlineExceeded");
        }
    }
    WorkloadState {
        ready: observed
            && ready >= desired
            && available >= desired
            && updated >= desired
            && total <= desired,
        summary,
    }
}

pub fn statefulset_state(s: &StatefulSet) -> WorkloadState {
    let desired = s.spec.replicas.unwrap_or(1);
    let st = s.status.clone().unwrap_or_default();
    let observed = st.observed_generation.unwrap_or(-1) >= s.metadata.generation.unwrap_or(0);
    let ready = st.ready_replicas.unwrap_or(0);
    let available = st.available_replicas.unwrap_or(ready);
    let mut summary = format!("{ready}/{desired} ready");
    if !observed {
        summary.push_str(", spec change not observed yet");
    }
    WorkloadState {
        ready: observed && ready >= desired && available >= desired,
        summary,
    }
}

/// Why a pod is not Ready (`None` when it is): the first waiting container's reason
/// (CrashLoopBackOff, ImagePullBackOff, ...), else the failing condition's reason
/// (Unschedulable, ContainersNotReady, ...), else the phase.
pub fn pod_not_ready_reason(p: &Pod) -> Option<String> {
    let st = p.status.clone().unwrap_or_default();
    let conds = st.conditions.unwrap_or_default();
    if conds
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
    {
        return None;
    }
    if p.metadata.deletion_timestamp.is_some() {
        return Some("Terminating".into());
    }
    let waiting = st
        .init_container_statuses
        .iter()
        .flatten()
        .chain(st.container_statuses.iter().flatten())
        .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
        .filter(|r| r != "ContainerCreating" && r != "PodInitializing");
    if let Some(w) = waiting {
        return Some(w);
    }
    for t in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        if let Some(c) = conds.iter().find(|c| c.type_ == t && c.status != "True") {
            return Some(
                c.reason
                    .clone()
                    .unwrap_or_else(|| format!("{t}={}", c.status)),
            );
        }
    }
    Some(st.phase.unwrap_or_else(|| "Pending".into()))
}

/// Whether `labels` match a Kubernetes LabelSelector (matchLabels and matchExpressions).
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

// ---------------------------------------------------------------------------------------------
// The watch phase.

enum TargetStore {
    Sts(Store<StatefulSet>),
    Deploy(Store<Deployment>),
}

struct Watched {
    target: Target,
    store: TargetStore,
    synced: bool,
    error: Option<String>,
}

/// What is still pending, one line per not-ready target (empty when all are Ready).
fn pending_lines(watched: &[Watched], pods: &Store<Pod>, pods_synced: bool) -> Vec<String> {
    let mut out = Vec::new();
    for w in watched {
        if let Some(e) = &w.error {
            out.push(format!("{}: {e}", w.target));
            continue;
        }
        if !w.synced {
            out.push(format!("{}: listing", w.target));
            continue;
        }
        let objects: Vec<(String, WorkloadState, Option<LabelSelector>)> = match &w.store {
            TargetStore::Sts(s) => s
                .state()
                .iter()
                .map(|o| {
                    (
                        o.name_any(),
                        statefulset_state(o),
                        Some(o.spec.selector.clone()),
                    )
                })
                .collect(),
            TargetStore::Deploy(s) => s
                .state()
                .iter()
                .map(|o| {
                    (
                        o.name_any(),
                        deployment_state(o),
                        Some(o.spec.selector.clone()),
                    )
                })
                .collect(),
        };
        if objects.is_empty() {
            out.push(format!("{}: not found", w.target));
            continue;
        }
        for (name, state, selector) in objects {
            if state.ready {
                continue;
            }
            let mut reasons: Vec<String> = Vec::new();
            if let (Some(sel), true) = (selector, pods_synced) {
                let mut pod_list: Vec<Arc<Pod>> = pods
                    .state()
                    .into_iter()
                    .filter(|p| selector_matches(&sel, p.labels()))
                    .collect();
                pod_list.sort_by_key(|p| p.name_any());
                for p in &pod_list {
                    if let Some(r) = pod_not_ready_reason(p) {
                        reasons.push(format!("{}: {r}", p.name_any()));
                    }
                }
                if pod_list.is_empty() {
                    reasons.push("no pods yet".into());
                }
            }
            let why = if reasons.is_empty() {
                String::new()
            } else {
                format!(" ({})", reasons.join(", "))
            };
            out.push(format!(
                "{}/{name}: {}{why}",
                w.target.kind().as_str(),
                state.summary
            ));
        }
    }
    out
}

fn describe_watch_error(e: &watcher::Error) -> (bool, String) {
    let status = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.as_ref()),
        watcher::Error::WatchError(s) => Some(s.as_ref()),
        _ => None,
    };
    match status {
        Some(s) if s.code == 403 => (true, format!("Forbidden: {}", s.message)),
        Some(s) => (false, format!("{} {}: {}", s.code, s.reason, s.message)),
        None => (false, e.to_string()),
    }
}

/// Which stream an event came from: a target (index) or the pods watch.
#[derive(Debug, Clone, Copy)]
enum Source {
    Target(usize),
    Pods,
}

/// What a watch event means for the waiting loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// A (re)list started or is in progress: no news yet.
    Listing,
    /// The initial list is complete, or an object changed: the store is usable.
    Data,
}

type Tagged = (Source, Result<Seen, watcher::Error>);

/// Maps a watch event to its source and what it means.
fn tag<K>(source: Source) -> impl Fn(Result<watcher::Event<K>, watcher::Error>) -> Tagged {
    move |r| {
        let seen = r.map(|e| match e {
            watcher::Event::Init | watcher::Event::InitApply(_) => Seen::Listing,
            _ => Seen::Data,
        });
        (source, seen)
    }
}

/// How long a 403 may last before `wait` gives up with [`WaitError::Forbidden`] (a Role or
/// RoleBinding created at the same time gets this long to appear).
pub const FORBIDDEN_GRACE: Duration = Duration::from_secs(10);

/// Waits for the workloads only (the kube part of [`wait`]), until `deadline`.
#[instrument(name = "wait for workloads", skip_all, fields(namespace = %namespace, targets = targets.len()))]
pub async fn wait_workloads(
    client: Client,
    namespace: &str,
    targets: &[Target],
    deadline: Instant,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(), WaitError> {
    if targets.is_empty() {
        return Ok(());
    }
    let mut streams: Vec<BoxStream<'static, Tagged>> = Vec::new();
    let mut watched = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let cfg = match t {
            Target::Named { name, .. } => {
                watcher::Config::default().fields(&format!("metadata.name={name}"))
            }
            Target::Selected { selector, .. } => watcher::Config::default().labels(selector),
        };
        let store = match t.kind() {
            Kind::StatefulSet => {
                let (reader, writer) = reflector::store::<StatefulSet>();
                let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
                streams.push(
                    reflector::reflector(writer, watcher(api, cfg))
                        .default_backoff()
                        .map(tag(Source::Target(i)))
                        .boxed(),
                );
                TargetStore::Sts(reader)
            }
            Kind::Deployment => {
                let (reader, writer) = reflector::store::<Deployment>();
                let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
                streams.push(
                    reflector::reflector(writer, watcher(api, cfg))
                        .default_backoff()
                        .map(tag(Source::Target(i)))
                        .boxed(),
                );
                TargetStore::Deploy(reader)
            }
        };
        watched.push(Watched {
            target: t.clone(),
            store,
            synced: false,
            error: None,
        });
    }
    let (pods, pods_writer) = reflector::store::<Pod>();
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    streams.push(
        reflector::reflector(pods_writer, watcher(pods_api, watcher::Config::default()))
            .default_backoff()
            .map(tag(Source::Pods))
            .boxed(),
    );
    let mut pods_synced = false;
    let mut pods_error: Option<String> = None;
    let mut events = futures::stream::select_all(streams);

    let started = Instant::now();
    let mut last_printed = String::new();
    let mut last_print_at = Instant::now();
    let mut forbidden: Option<(String, Instant)> = None;
    loop {
        if let Some((what, since)) = &forbidden
            && (since.elapsed() >= FORBIDDEN_GRACE || Instant::now() >= deadline)
        {
            return Err(WaitError::Forbidden(what.clone()));
        }
        let pending = {
            let mut p = pending_lines(&watched, &pods, pods_synced);
            if let Some(e) = &pods_error {
                // Reasons are a nicety: waiting goes on without them, but say why they are missing.
                p.iter_mut()
                    .for_each(|l| l.push_str(&format!(" [pods: {e}]")));
            }
            p
        };
        if pending.is_empty() {
            let names: Vec<String> = targets.iter().map(ToString::to_string).collect();
            progress(&format!("workloads ready: {}", names.join(", ")));
            return Ok(());
        }
        let line = pending.join("; ");
        let only_listing = watched.iter().all(|w| !w.synced && w.error.is_none());
        let quiet = only_listing && started.elapsed() < Duration::from_secs(3);
        if !quiet && (line != last_printed || last_print_at.elapsed() >= Duration::from_secs(15)) {
            progress(&format!("waiting: {line}"));
            last_printed = line;
            last_print_at = Instant::now();
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(WaitError::Timeout {
                after: Duration::ZERO,
                pending,
            });
        }
        // Wake up at least every second: the forbidden grace and the periodic re-print.
        let wake = (deadline - now).min(Duration::from_secs(1));
        let Ok(next) = tokio::time::timeout(wake, events.next()).await else {
            continue;
        };
        let Some((source, result)) = next else {
            return Err(WaitError::WatchesEnded);
        };
        // Errors are cleared only by real data (a restarted watch first says `Init`).
        match (source, result) {
            (_, Ok(Seen::Listing)) => {}
            (Source::Target(i), Ok(Seen::Data)) => {
                watched[i].error = None;
                watched[i].synced = true;
            }
            (Source::Pods, Ok(Seen::Data)) => {
                pods_error = None;
                pods_synced = true;
            }
            (source, Err(e)) => {
                let (is_forbidden, text) = describe_watch_error(&e);
                let what = match source {
                    Source::Target(i) => watched[i].target.to_string(),
                    Source::Pods => "pods".to_string(),
                };
                if is_forbidden && forbidden.is_none() {
                    forbidden = Some((format!("{what}: {text}"), Instant::now()));
                }
                match source {
                    Source::Target(i) => watched[i].error = Some(text),
                    Source::Pods => pods_error = Some(text),
                }
            }
        }
        if watched.iter().all(|w| w.error.is_none()) && pods_error.is_none() {
            forbidden = None;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The service checks.

/// Retries `check` with capped exponential backoff until it returns `Ok(None)` (ready) or the
/// deadline passes; `Ok(Some(reason))` and `Err` mean not yet. Returns the last reason.
async fn retry_until<F, Fut>(
    what: &str,
    deadline: Instant,
    progress: &mut (dyn FnMut(&str) + Send),
    mut check: F,
) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<String>, String>>,
{
    let mut delay = Duration::from_millis(200);
    let mut last = String::new();
    let mut last_print = Instant::now() - Duration::from_secs(60);
    loop {
        match check().await {
            Ok(None) => {
                progress(&format!("{what}: ready"));
                return Ok(());
            }
            Ok(Some(r)) | Err(r) => {
                if r != last || last_print.elapsed() >= Duration::from_secs(15) {
                    progress(&format!("waiting: {what}: {r}"));
                    last_print = Instant::now();
                }
                last = r;
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(format!("{what}: {last}"));
        }
        tokio::time::sleep(delay.min(deadline - now)).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// How many brokers a metadata request reports.
pub async fn broker_count(kafka: &ClientConfig) -> Result<usize, String> {
    let mut cfg = kafka.clone();
    cfg.set("log_level", "0");
    tokio::task::spawn_blocking(move || {
        let consumer: rdkafka::consumer::BaseConsumer = cfg.create().map_err(|e| e.to_string())?;
        let md =
            rdkafka::consumer::Consumer::fetch_metadata(&consumer, None, Duration::from_secs(5))
                .map_err(|e| format!("metadata request failed: {e}"))?;
        Ok(md.brokers().len())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Runs the whole plan: workloads (if any and a client is given), then Kafka, the Collector
/// and Zipkin (those configured), all within `plan.timeout`.
#[instrument(name = "wait", skip_all, fields(timeout = %humantime::format_duration(plan.timeout)))]
pub async fn wait(
    client: Option<Client>,
    plan: &WaitPlan,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(), WaitError> {
    let start = Instant::now();
    let deadline = start + plan.timeout;
    let with_after = |e: WaitError| match e {
        WaitError::Timeout { pending, .. } => WaitError::Timeout {
            after: plan.timeout,
            pending,
        },
        other => other,
    };
    if !plan.targets.is_empty() {
        let client = client.ok_or(WaitError::NoKubeClient)?;
        wait_workloads(client, &plan.namespace, &plan.targets, deadline, progress)
            .await
            .map_err(with_after)?;
    }
    let timeout = |r: String| WaitError::Timeout {
        after: plan.timeout,
        pending: vec![r],
    };
    if let Some(kafka) = &plan.kafka {
        let expected = plan.expected_brokers.max(1);
        let what = format!("kafka ({} brokers expected)", expected);
        retry_until(&what, deadline, progress, || async {
            let n = broker_count(kafka).await?;
            Ok((n < expected).then(|| format!("metadata lists {n}/{expected} brokers")))
        })
        .await
        .map_err(timeout)?;
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .map_err(WaitError::HttpClient)?;
    if let Some(url) = &plan.collector_health_url {
        retry_until(&format!("collector {url}"), deadline, progress, || async {
            let r = http
                .get(url)
                .send()
                .await
                .map_err(|e| short_http_error(&e))?;
            Ok((!r.status().is_success()).then(|| format!("answered {}", r.status())))
        })
        .await
        .map_err(timeout)?;
    }
    if let Some(base) = &plan.zipkin_url {
        let url = format!("{}/health", base.trim_end_matches('/'));
        retry_until(&format!("zipkin {url}"), deadline, progress, || async {
            let r = http
                .get(&url)
                .send()
                .await
                .map_err(|e| short_http_error(&e))?;
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            Ok(
                (!status.is_success() || !body.contains("UP"))
                    .then(|| format!("answered {status}")),
            )
        })
        .await
        .map_err(timeout)?;
    }
    info!(elapsed = ?start.elapsed(), "everything is ready");
    progress(&format!(
        "ready after {:.1}s",
        start.elapsed().as_secs_f64()
    ));
    Ok(())
}

fn short_http_error(e: &reqwest::Error) -> String {
    if e.is_connect() {
        "connection refused".into()
    } else if e.is_timeout() {
        "timed out".into()
    } else {
        e.to_string()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStatus, StatefulSetSpec, StatefulSetStatus,
    };
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateWaiting, ContainerStatus, PodCondition, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[tokio::test]
    async fn workloads_without_a_kubernetes_client_fail_at_once_with_exit_5_saying_so() {
        let plan = WaitPlan {
            namespace: "journey".into(),
            targets: vec!["deployment/journey-producer".parse().unwrap()],
            kafka: None,
            expected_brokers: 1,
            collector_health_url: None,
            zipkin_url: None,
            timeout: Duration::from_secs(60),
        };
        let started = Instant::now();
        let e = wait(None, &plan, &mut |_| {}).await.unwrap_err();
        assert!(matches!(e, WaitError::NoKubeClient), "{e:?}");
        assert_eq!(e.exit_code(), crate::exit::UNAVAILABLE);
        assert!(e.to_string().contains("no Kubernetes client"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn targets_parse_names_and_selectors_with_commas() {
        let t = parse_targets(
            "statefulset/kafka, deploy/zipkin,deployment[app=collector,tier in (a,b)]",
        )
        .unwrap();
        assert_eq!(
            t,
            vec![
                Target::Named {
                    kind: Kind::StatefulSet,
                    name: "kafka".into()
                },
                Target::Named {
                    kind: Kind::Deployment,
                    name: "zipkin".into()
                },
                Target::Selected {
                    kind: Kind::Deployment,
                    selector: "app=collector,tier in (a,b)".into()
                },
            ]
        );
        assert_eq!(t[2].to_string(), "deployment[app=collector,tier in (a,b)]");
        assert!(parse_targets("pod/x").is_err());
        assert!(parse_targets("kafka").is_err());
        assert!(parse_targets("sts/").is_err());
        assert!(parse_targets("").unwrap().is_empty());
    }

    #[test]
    fn deployments_are_ready_when_observed_updated_and_available() {
        let mut d = Deployment {
            spec: DeploymentSpec {
                replicas: Some(2),
                ..Default::default()
            },
            ..Default::default()
        };
        d.metadata.generation = Some(3);
        d.status = Some(DeploymentStatus {
            observed_generation: Some(3),
            replicas: Some(2),
            ready_replicas: Some(1),
            available_replicas: Some(1),
            updated_replicas: Some(2),
            ..Default::default()
        });
        assert_eq!(
            deployment_state(&d),
            WorkloadState {
                ready: false,
                summary: "1/2 ready".into()
            }
        );
        let st = d.status.as_mut().unwrap();
        st.ready_replicas = Some(2);
        st.available_replicas = Some(2);
        assert!(deployment_state(&d).ready);
        d.metadata.generation = Some(4);
        assert!(!deployment_state(&d).ready);
        assert!(deployment_state(&d).summary.contains("not observed"));
    }

    #[test]
    fn statefulsets_are_ready_when_all_replicas_are() {
        let mut s = StatefulSet {
            spec: StatefulSetSpec {
                replicas: Some(1),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(!statefulset_state(&s).ready);
        s.status = Some(StatefulSetStatus {
            observed_generation: Some(0),
            ready_replicas: Some(1),
            replicas: 1,
            ..Default::default()
        });
        assert!(statefulset_state(&s).ready);
    }

    #[test]
    fn pod_reasons_prefer_waiting_containers_then_conditions() {
        let cond = |t: &str, s: &str, r: Option<&str>| PodCondition {
            type_: t.into(),
            status: s.into(),
            reason: r.map(str::to_string),
            ..Default::default()
        };
        let mut p = Pod {
            status: Some(PodStatus {
                conditions: Some(vec![
                    cond("PodScheduled", "True", None),
                    cond("Ready", "False", Some("ContainersNotReady")),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            pod_not_ready_reason(&p).as_deref(),
            Some("ContainersNotReady")
        );
        p.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
            name: "kafka".into(),
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("CrashLoopBackOff".into()),
                    message: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        assert_eq!(
            pod_not_ready_reason(&p).as_deref(),
            Some("CrashLoopBackOff")
        );
        p.status.as_mut().unwrap().conditions =
            Some(vec![cond("PodScheduled", "False", Some("Unschedulable"))]);
        p.status.as_mut().unwrap().container_statuses = None;
        assert_eq!(pod_not_ready_reason(&p).as_deref(), Some("Unschedulable"));
        p.status.as_mut().unwrap().conditions = Some(vec![cond("Ready", "True", None)]);
        assert_eq!(pod_not_ready_reason(&p), None);
    }

    #[test]
    fn label_selectors_match() {
        let labels: BTreeMap<String, String> = [
            ("app".to_string(), "kafka".to_string()),
            ("tier".into(), "data".into()),
        ]
        .into();
        let mut sel = LabelSelector {
            match_labels: Some([("app".to_string(), "kafka".to_string())].into()),
            match_expressions: None,
        };
        assert!(selector_matches(&sel, &labels));
        sel.match_expressions = Some(vec![LabelSelectorRequirement {
            key: "tier".into(),
            operator: "NotIn".into(),
            values: Some(vec!["data".into()]),
        }]);
        assert!(!selector_matches(&sel, &labels));
    }
}
