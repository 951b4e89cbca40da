//! The pipeline's `Ready`, `Progressing` and `Degraded` conditions, derived from one summary of
//! its health, and with S3 event notifications, the `Notifications` condition of its queue. A condition keeps its `lastTransitionTime` while its status stays the same, so a
//! reconcile that finds nothing new produces identical conditions and writes nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::notifications::QueueHealth;

/// The pipeline's health, as the conditions report it.
#[derive(Clone, Debug, PartialEq)]
pub enum Health<'a> {
    /// Every partition in the window is processed.
    UpToDate { processed: usize, open: usize, newest: Option<&'a str> },
    /// No partition was found in the window: nothing is processed yet.
    NoPartitions { looked_in: &'a str },
    /// Partitions are waiting or running.
    Processing { pending: u32, running: u32 },
    /// Partitions are waiting but `spec.suspend` is set.
    Suspended { pending: u32 },
    /// Some partitions failed every attempt; `held` more wait because the status tracks as many
    /// partitions as it can.
    PartitionsFailed { count: usize, first: &'a str, message: &'a str, held: u32 },
    /// Partitions wait because as many as the status can track (`tracked`) are running,
    /// retrying or failed.
    Held { held: u32, tracked: usize },
    /// The pipeline cannot work at all: `reason` is a CamelCase word such as `InvalidSpec`.
    Degraded { reason: &'static str, message: &'a str },
}

/// The three conditions for `health`, reusing the transition times of `previous` where the
/// status did not change.
pub fn conditions(previous: &[Condition], health: &Health<'_>, generation: Option<i64>, now: Timestamp) -> Vec<Condition> {
    let (ready, progressing, degraded) = describe(health);
    [("Ready", ready), ("Progressing", progressing), ("Degraded", degraded)]
        .into_iter()
        .map(|(kind, (status, reason, message))| {
            let status = if status { "True" } else { "False" };
            let since = previous
                .iter()
                .find(|c| c.type_ == kind && c.status == status)
                .map_or_else(|| Time(now), |c| c.last_transition_time.clone());
            Condition {
                type_: kind.to_string(),
                status: status.to_string(),
                reason: reason.to_string(),
                message,
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect()
}

/// Adds the `Notifications` condition: `True`/`Receiving` with the last message's time while
/// the queue answers, `False`/`QueueUnavailable` with the error while it does not.
pub fn set_notifications(conditions: &mut Vec<Condition>, previous: &[Condition], health: &QueueHealth, generation: Option<i64>, now: Timestamp) {
    let (status, reason, message) = match &health.error {
        Some(error) => ("False", "QueueUnavailable", format!("receiving from the queue failed: {error}")),
        None => {
            let last = health.last_message.map_or_else(|| "no message yet".to_string(), |at| format!("last message at {at}"));
            ("True", "Receiving", format!("the queue answers; {last}"))
        }
    };
    let since = previous
        .iter()
        .find(|c| c.type_ == "Notifications" && c.status == status)
        .map_or_else(|| Time(now), |c| c.last_transition_time.clone());
    conditions.retain(|c| c.type_ != "Notifications");
    conditions.push(Condition {
        type_: "Notifications".to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    });
}

type Described = (bool, &'static str, String);

/// (Ready, Progressing, Degraded) as (status, reason, message).
fn describe(health: &Health<'_>) -> (Described, Described, Described) {
    let fine = (false, "AsExpected", "no partition failed".to_string());
    match *health {
        Health::UpToDate { processed, open, newest } => {
            let mut message = match newest {
                Some(newest) => format!("{processed} partitions in the window are processed; the newest done is {newest}"),
                None => format!("{processed} partitions in the window are processed"),
            };
            if open > 0 {
                message.push_str(&format!("; {open} open partitions wait for their period to close"));
            }
            ((true, "UpToDate", message.clone()), (false, "UpToDate", message), fine)
        }
        Health::NoPartitions { looked_in } => {
            let message = format!("no partition found under {looked_in}; waiting for data");
            ((false, "NoPartitions", message.clone()), (false, "NoPartitions", message), fine)
        }
        Health::Processing { pending, running } => {
            let message = format!("{running} Jobs running, {pending} partitions waiting");
            ((false, "Processing", message.clone()), (true, "Processing", message), fine)
        }
        Health::Suspended { pending } => {
            let message = format!("spec.suspend is set; {pending} partitions are waiting");
            ((false, "Suspended", message.clone()), (false, "Suspended", message), fine)
        }
        Health::PartitionsFailed { count, first, message, held } => {
            let mut message = format!(
                "{count} partitions failed every attempt; {first}: {message}. Fix the cause, then change the spec or the inputs to try again"
            );
            if held > 0 {
                message.push_str(&format!("; {held} more partitions wait until fewer are failed or retrying"));
            }
            ((false, "PartitionsFailed", message.clone()), (false, "PartitionsFailed", message.clone()), (true, "PartitionsFailed", message))
        }
        Health::Held { held, tracked } => {
            let message = format!(
                "{held} partitions are not processed: {tracked} partitions are running or retrying, as many as the status tracks; \
                 they are processed as those finish"
            );
            ((false, "TrackingLimit", message.clone()), (false, "TrackingLimit", message.clone()), (true, "TrackingLimit", message))
        }
        Health::Degraded { reason, message } => {
            (
                (false, reason, message.to_string()),
                (false, reason, message.to_string()),
                (true, reason, message.to_string()),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_times_move_only_when_a_status_flips() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(2_000).unwrap();
        let first = conditions(&[], &Health::Processing { pending: 1, running: 1 }, Some(1), t0);
        let same = conditions(&first, &Health::Processing { pending: 0, running: 2 }, Some(1), t1);
        assert!(same.iter().all(|c| c.last_transition_time.0 == t0));
        let done = conditions(&same, &Health::UpToDate { processed: 2, open: 0, newest: Some("year=2026/month=11/day=24") }, Some(1), t1);
        let time_of = |kind: &str| done.iter().find(|c| c.type_ == kind).unwrap().last_transition_time.0;
        assert_eq!((time_of("Ready"), time_of("Progressing"), time_of("Degraded")), (t1, t1, t0));
    }

    #[test]
    fn a_degraded_pipeline_is_neither_ready_nor_progressing() {
        let list = conditions(&[], &Health::Degraded { reason: "InvalidSpec", message: "transform.sql: no column nope" }, Some(3), Timestamp::UNIX_EPOCH);
        let shown: Vec<_> = list.iter().map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str())).collect();
        assert_eq!(
            shown,
            vec![("Ready", "False", "InvalidSpec"), ("Progressing", "False", "InvalidSpec"), ("Degraded", "True", "InvalidSpec")]
        );
        assert!(list.iter().all(|c| c.message.contains("nope") && c.observed_generation == Some(3)));
    }
}
