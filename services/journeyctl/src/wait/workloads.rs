//! The watch phase: one watch per target plus one on the namespace's Pods (for the reasons),
//! followed in one loop until every target is Ready, a 403 outlasts its grace, or the deadline
//! passes.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::stream::BoxStream;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{ParseExpressionError, Selector, SelectorExt as _};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, Resource, ResourceExt as _};
use serde::de::DeserializeOwned;
use tracing::instrument;

use super::readiness::{WorkloadState, deployment_state, pod_not_ready_reason, statefulset_state};
use super::target::{Kind, Target};
use super::{Deadline, Progress, Repeats, WaitError};

/// How long a 403 may last before `wait` gives up with [`WaitError::Forbidden`] (a Role or
/// RoleBinding created at the same time gets this long to appear).
pub const FORBIDDEN_GRACE: Duration = Duration::from_secs(10);

/// How long the first progress line waits while every watch is still listing.
const QUIET_START: Duration = Duration::from_secs(3);

/// The objects one target's watch has seen.
enum TargetStore {
    Sts(Store<StatefulSet>),
    Deploy(Store<Deployment>),
}

/// One workload as its target's store has it.
struct Workload {
    name: String,
    state: WorkloadState,
    /// The selector of its pods (invalid only if the API server let a bad one through).
    pods: Result<Selector, ParseExpressionError>,
}

fn workloads<K>(
    store: &Store<K>,
    state: fn(&K) -> WorkloadState,
    selector: fn(&K) -> &LabelSelector,
) -> Vec<Workload>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .state()
        .iter()
        .map(|o| Workload {
            name: o.name_any(),
            state: state(o),
            pods: Selector::try_from(selector(o).clone()),
        })
        .collect()
}

impl TargetStore {
    fn workloads(&self) -> Vec<Workload> {
        match self {
            TargetStore::Sts(s) => workloads(s, statefulset_state, |o| &o.spec.selector),
            TargetStore::Deploy(s) => workloads(s, deployment_state, |o| &o.spec.selector),
        }
    }
}

struct Watched {
    target: Target,
    store: TargetStore,
    synced: bool,
    error: Option<String>,
}

/// Why a workload's pods are not Ready: `pod: reason` for each, or `no pods yet`.
fn pod_reasons(selector: &Selector, pods: &Store<Pod>) -> Vec<String> {
    let mut matching: Vec<Arc<Pod>> = pods
        .state()
        .into_iter()
        .filter(|p| selector.matches(p.labels()))
        .collect();
    if matching.is_empty() {
        return vec!["no pods yet".into()];
    }
    matching.sort_by_key(|p| p.name_any());
    matching
        .iter()
        .filter_map(|p| pod_not_ready_reason(p).map(|r| format!("{}: {r}", p.name_any())))
        .collect()
}

/// One line for a not-ready workload: `kind/name: summary (pod reasons)`.
fn workload_line(kind: Kind, w: &Workload, pods: Option<&Store<Pod>>) -> String {
    let reasons = match (&w.pods, pods) {
        (Ok(selector), Some(pods)) => pod_reasons(selector, pods),
        (Err(e), Some(_)) => vec![format!("pod selector: {e}")],
        (_, None) => Vec::new(),
    };
    let why = if reasons.is_empty() {
        String::new()
    } else {
        format!(" ({})", reasons.join(", "))
    };
    format!("{}/{}: {}{why}", kind.as_str(), w.name, w.state.summary)
}

/// What is still pending, one line per not-ready workload (empty when all are Ready); `pods`
/// once the pods' watch has listed them.
fn pending_lines(watched: &[Watched], pods: Option<&Store<Pod>>) -> Vec<String> {
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
        let listed = w.store.workloads();
        if listed.is_empty() {
            out.push(format!("{}: not found", w.target));
        }
        out.extend(
            listed
                .iter()
                .filter(|o| !o.state.ready)
                .map(|o| workload_line(w.target.kind(), o, pods)),
        );
    }
    out
}

/// Whether a watch error is a 403, and the text the pending line shows.
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

/// A reflector on the namespace's `K`s that `cfg` selects: its store and its tagged events.
fn watch<K>(
    client: &Client,
    namespace: &str,
    cfg: watcher::Config,
    source: Source,
) -> (Store<K>, BoxStream<'static, Tagged>)
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
    K: Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store::<K>();
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let events = reflector::reflector(writer, watcher(api, cfg))
        .default_backoff()
        .map(tag(source))
        .boxed();
    (reader, events)
}

/// The state of the watch phase: what each watch has said so far.
struct Watching {
    watched: Vec<Watched>,
    pods: Store<Pod>,
    pods_synced: bool,
    pods_error: Option<String>,
    /// The first 403 of the current run of errors, and since when.
    forbidden: Option<(String, watcher::Error, Instant)>,
}

impl Watching {
    fn pending(&self) -> Vec<String> {
        let mut p = pending_lines(&self.watched, self.pods_synced.then_some(&self.pods));
        if let Some(e) = &self.pods_error {
            // Reasons are a nicety: waiting goes on without them, but say why they are missing.
            p.iter_mut()
                .for_each(|l| l.push_str(&format!(" [pods: {e}]")));
        }
        p
    }

    /// Every target's watch is still on its first list.
    fn only_listing(&self) -> bool {
        self.watched.iter().all(|w| !w.synced && w.error.is_none())
    }

    /// Takes in one event. Errors are cleared only by real data (a restarted watch first says
    /// `Init`).
    fn apply(&mut self, source: Source, result: Result<Seen, watcher::Error>) {
        match (source, result) {
            (_, Ok(Seen::Listing)) => {}
            (Source::Target(i), Ok(Seen::Data)) => {
                self.watched[i].error = None;
                self.watched[i].synced = true;
            }
            (Source::Pods, Ok(Seen::Data)) => {
                self.pods_error = None;
                self.pods_synced = true;
            }
            (source, Err(e)) => {
                let (is_forbidden, text) = describe_watch_error(&e);
                let what = match source {
                    Source::Target(i) => self.watched[i].target.to_string(),
                    Source::Pods => "pods".to_string(),
                };
                match source {
                    Source::Target(i) => self.watched[i].error = Some(text),
                    Source::Pods => self.pods_error = Some(text),
                }
                if is_forbidden && self.forbidden.is_none() {
                    self.forbidden = Some((what, e, Instant::now()));
                }
            }
        }
        if self.watched.iter().all(|w| w.error.is_none()) && self.pods_error.is_none() {
            self.forbidden = None;
        }
    }

    /// The 403 that has lasted past its grace (or the deadline), as the error to end with.
    fn forbidden_for_good(&mut self, deadline: &Deadline) -> Option<WaitError> {
        let lasting = self.forbidden.as_ref().is_some_and(|(_, _, since)| {
            since.elapsed() >= FORBIDDEN_GRACE || Instant::now() >= deadline.at
        });
        if !lasting {
            return None;
        }
        let (what, source, _) = self.forbidden.take()?;
        Some(WaitError::Forbidden { what, source })
    }
}

/// Waits for the workloads only (the kube part of [`super::wait`]), until the deadline.
#[instrument(name = "wait for workloads", skip_all, fields(namespace = %namespace, targets = targets.len()))]
pub async fn wait_workloads(
    client: Client,
    namespace: &str,
    targets: &[Target],
    deadline: &Deadline,
    progress: Progress<'_>,
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
            Target::Selected { selector, .. } => watcher::Config::default().labels_from(selector),
        };
        let source = Source::Target(i);
        let store = match t.kind() {
            Kind::StatefulSet => {
                let (store, events) = watch(&client, namespace, cfg, source);
                streams.push(events);
                TargetStore::Sts(store)
            }
            Kind::Deployment => {
                let (store, events) = watch(&client, namespace, cfg, source);
                streams.push(events);
                TargetStore::Deploy(store)
            }
        };
        watched.push(Watched {
            target: t.clone(),
            store,
            synced: false,
            error: None,
        });
    }
    let (pods, pod_events) = watch(&client, namespace, watcher::Config::default(), Source::Pods);
    streams.push(pod_events);
    let mut events = futures::stream::select_all(streams);
    let mut state = Watching {
        watched,
        pods,
        pods_synced: false,
        pods_error: None,
        forbidden: None,
    };

    let started = Instant::now();
    let mut repeats = Repeats::default();
    loop {
        if let Some(e) = state.forbidden_for_good(deadline) {
            return Err(e);
        }
        let pending = state.pending();
        if pending.is_empty() {
            let names: Vec<String> = targets.iter().map(ToString::to_string).collect();
            progress(&format!("workloads ready: {}", names.join(", ")));
            return Ok(());
        }
        if !(state.only_listing() && started.elapsed() < QUIET_START) {
            repeats.show(progress, format!("waiting: {}", pending.join("; ")));
        }
        let now = Instant::now();
        if now >= deadline.at {
            return Err(deadline.timed_out(pending, None));
        }
        // Wake up at least every second: the forbidden grace and the periodic re-print.
        let wake = (deadline.at - now).min(Duration::from_secs(1));
        let Ok(next) = tokio::time::timeout(wake, events.next()).await else {
            continue;
        };
        let Some((source, result)) = next else {
            return Err(WaitError::WatchesEnded);
        };
        state.apply(source, result);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use k8s_openapi::api::apps::v1::{StatefulSetSpec, StatefulSetStatus};
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};

    use super::*;

    fn store_of<K>(objects: Vec<K>) -> Store<K>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        let (reader, mut writer) = reflector::store::<K>();
        for o in objects {
            writer.apply_watcher_event(&watcher::Event::Apply(o));
        }
        reader
    }

    fn labelled<K: Resource + Default>(name: &str, app: &str) -> K {
        let mut o = K::default();
        o.meta_mut().name = Some(name.into());
        o.meta_mut().labels = Some([("app".to_string(), app.to_string())].into());
        o
    }

    fn unschedulable_pod(name: &str, app: &str) -> Pod {
        let mut p: Pod = labelled(name, app);
        p.status = Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                ..Default::default()
            }]),
            ..Default::default()
        });
        p
    }

    fn kafka_statefulset() -> StatefulSet {
        let mut s: StatefulSet = labelled("kafka", "kafka");
        s.spec = StatefulSetSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some([("app".to_string(), "kafka".to_string())].into()),
                match_expressions: None,
            },
            ..Default::default()
        };
        s.status = Some(StatefulSetStatus {
            observed_generation: Some(0),
            replicas: 1,
            ..Default::default()
        });
        s
    }

    fn watched(target: &str, store: TargetStore) -> Watched {
        Watched {
            target: target.parse().unwrap(),
            store,
            synced: true,
            error: None,
        }
    }

    #[test]
    fn a_pending_workload_names_its_selected_pods_and_why_they_are_not_ready() {
        let pods = store_of(vec![
            unschedulable_pod("kafka-0", "kafka"),
            unschedulable_pod("zipkin-1", "zipkin"),
        ]);
        let w = [watched(
            "statefulset/kafka",
            TargetStore::Sts(store_of(vec![kafka_statefulset()])),
        )];
        assert_eq!(
            pending_lines(&w, Some(&pods)),
            ["statefulset/kafka: 0/1 ready (kafka-0: Unschedulable)"]
        );
        // Before the pods' watch has listed them, the line has no reasons.
        assert_eq!(pending_lines(&w, None), ["statefulset/kafka: 0/1 ready"]);
    }

    #[test]
    fn a_target_that_selects_nothing_is_not_found_and_one_still_listing_says_so() {
        let pods = store_of(Vec::<Pod>::new());
        let mut listing = watched("deployment/zipkin", TargetStore::Deploy(store_of(vec![])));
        listing.synced = false;
        let w = [
            watched(
                "deployment[app=missing]",
                TargetStore::Deploy(store_of(vec![])),
            ),
            listing,
        ];
        assert_eq!(
            pending_lines(&w, Some(&pods)),
            [
                "deployment[app=missing]: not found",
                "deployment/zipkin: listing"
            ]
        );
    }
}
