//! The scheduler's bind and the kubelet's pod source for one namespace: watches its pods, binds
//! the unscheduled ones to the runner's Node, and hands those bound to the Node to their pod
//! workers.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use kube::{
    Api,
    api::{ListParams, ObjectMeta, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use tokio::sync::mpsc;

use super::{
    Shared,
    worker::{self, Update},
};

/// Runs until the runner stops.
pub(super) async fn run(shared: Arc<Shared>, namespace: String) {
    let pods = Api::<Pod>::namespaced(shared.client.clone(), &namespace);
    let mut events = watcher(pods.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut workers: HashMap<String, mpsc::UnboundedSender<Update>> = HashMap::new();
    // UIDs listed since the watch (re)started, to find pods deleted while it was down.
    let mut listed: Option<HashSet<String>> = None;
    let mut ready = shared.ready.subscribe();
    loop {
        let event = tokio::select! {
            event = events.next() => match event {
                Some(event) => event,
                None => return,
            },
            Ok(()) = ready.changed() => {
                // Pods that arrived while the Node was not Ready are bound now.
                if *ready.borrow_and_update() {
                    bind_pending(&shared, &pods).await;
                }
                continue;
            }
        };
        match event {
            Ok(watcher::Event::Init) => listed = Some(HashSet::new()),
            Ok(watcher::Event::InitApply(pod)) => {
                if let Some(listed) = &mut listed {
                    listed.insert(pod.metadata.uid.clone().unwrap_or_default());
                }
                handle(&shared, &pods, &mut workers, pod).await;
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(listed) = listed.take() {
                    workers.retain(|uid, worker| {
                        listed.contains(uid) || {
                            let _ = worker.send(Update::Gone);
                            false
                        }
                    });
                }
            }
            Ok(watcher::Event::Apply(pod)) => handle(&shared, &pods, &mut workers, pod).await,
            Ok(watcher::Event::Delete(pod)) => {
                let uid = pod.metadata.uid.unwrap_or_default();
                if let Some(worker) = workers.remove(&uid) {
                    let _ = worker.send(Update::Gone);
                }
            }
            Err(e) => eprintln!("pod-runner: watching pods in {namespace}: {e}"),
        }
    }
}

async fn handle(
    shared: &Arc<Shared>,
    pods: &Api<Pod>,
    workers: &mut HashMap<String, mpsc::UnboundedSender<Update>>,
    pod: Pod,
) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if unbound(&pod) {
        if schedulable(shared, &pod) {
            bind(shared, pods, &pod).await;
        }
        return;
    }
    let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    if node != Some(shared.node_name.as_str()) {
        return;
    }
    if let Some(worker) = workers.get(&uid) {
        if worker.send(Update::Pod(Box::new(pod))).is_err() {
            workers.remove(&uid);
        }
        return;
    }
    // A pod that ended before this runner saw it needs nothing more, until it is deleted.
    if !ended(&pod) || pod.metadata.deletion_timestamp.is_some() {
        workers.insert(uid, worker::spawn(shared, pod));
    }
}

async fn bind_pending(shared: &Shared, pods: &Api<Pod>) {
    match pods.list(&ListParams::default()).await {
        Ok(list) => {
            for pod in list
                .items
                .iter()
                .filter(|p| unbound(p) && schedulable(shared, p))
            {
                bind(shared, pods, pod).await;
            }
        }
        Err(e) => eprintln!("pod-runner: listing pods to bind: {e}"),
    }
}

fn unbound(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| s.node_name.is_none())
}

fn ended(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

/// Whether the scheduler would put this pod on the runner's Node: it is pending, uses the
/// default scheduler, its `nodeSelector` matches the Node's labels, and the Node is Ready.
fn schedulable(shared: &Shared, pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let pending = pod.metadata.deletion_timestamp.is_none() && !ended(pod);
    let default_scheduler = spec
        .scheduler_name
        .as_deref()
        .is_none_or(|s| s == "default-scheduler");
    let selected = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| shared.node_labels.get(k) == Some(v));
    pending && default_scheduler && selected && *shared.ready.borrow()
}

/// Binds the pod through `pods/binding`, as kube-scheduler does.
async fn bind(shared: &Shared, pods: &Api<Pod>, pod: &Pod) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(shared.node_name.clone()),
            ..Default::default()
        },
    };
    let bound = pods
        .create_subresource::<_, serde_json::Value>(
            "binding",
            &name,
            &PostParams::default(),
            &binding,
        )
        .await;
    match bound {
        Ok(_) => {}
        // Already bound (by an earlier attempt or another runner), or gone.
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {}
        Err(e) => eprintln!(
            "pod-runner: binding pod {name} to {}: {e}",
            shared.node_name
        ),
    }
}
