//! Watching a held leader-election Lease. The Lease manager renews it; this watch decides when
//! the leader must stop: the Lease names another holder, or this replica could not confirm a
//! fresh renewal of its own for a whole lease duration (an API outage or a failing renewal), after
//! which another replica may rightfully take it.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;

/// Resolves when this replica must consider the Lease lost, with the reason. Each read of the
/// Lease may take a fifth of the lease duration: an API server that accepts the request and never
/// answers must not keep the leader from noticing.
pub async fn lost(leases: &Api<Lease>, name: &str, identity: &str, duration: Duration) -> String {
    let mut confirmed = Instant::now();
    let mut last_problem = String::from("no renewal seen");
    let read_limit = duration / 5;
    loop {
        tokio::time::sleep(duration / 5).await;
        match tokio::time::timeout(read_limit, leases.get_opt(name)).await {
            Ok(Ok(lease)) => match judge(lease.as_ref(), identity, Timestamp::now(), duration) {
                Verdict::Held => confirmed = Instant::now(),
                Verdict::Taken(holder) => return format!("the Lease is held by {holder}"),
                Verdict::Stale(problem) => last_problem = problem,
            },
            Ok(Err(error)) => last_problem = format!("reading the Lease failed: {error}"),
            Err(_) => last_problem = format!("reading the Lease timed out after {} ms", read_limit.as_millis()),
        }
        if confirmed.elapsed() >= duration {
            return format!("the Lease was not confirmed for {} s: {last_problem}", duration.as_secs());
        }
    }
}

/// What one reading of the Lease says about this replica's leadership.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// Held by this replica and renewed within the lease duration.
    Held,
    /// Another replica holds it.
    Taken(String),
    /// Not (yet) confirmed: missing, released, or not renewed recently.
    Stale(String),
}

fn judge(lease: Option<&Lease>, identity: &str, now: Timestamp, duration: Duration) -> Verdict {
    let Some(spec) = lease.and_then(|lease| lease.spec.as_ref()) else {
        return Verdict::Stale("the Lease does not exist".into());
    };
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == identity => {}
        Some(holder) if !holder.is_empty() => return Verdict::Taken(holder.to_string()),
        _ => return Verdict::Stale("the Lease has no holder".into()),
    }
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()).map(|time| time.0);
    match renewed {
        Some(renewed) if now.duration_since(renewed).unsigned_abs() < duration => Verdict::Held,
        Some(renewed) => Verdict::Stale(format!("last renewed at {renewed}")),
        None => Verdict::Stale("the Lease carries no renewal time".into()),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    use super::*;

    fn lease(holder: &str, renewed: i64) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    /// An API server that accepts connections and never answers: without a time limit on each
    /// read of the Lease, the leader would wait forever and never notice it can no longer lead.
    #[tokio::test]
    async fn a_lease_read_that_never_answers_counts_as_unconfirmed() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", silent.local_addr().unwrap());
        let accepting = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((connection, _)) = silent.accept().await {
                held.push(connection);
            }
        });
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
        let leases: Api<Lease> = Api::namespaced(client, "default");
        let duration = Duration::from_secs(2);
        let reason = tokio::time::timeout(duration * 3, lost(&leases, "eventpipe", "a", duration)).await;
        accepting.abort();
        let reason = reason.expect("the leader gives up within about a lease duration");
        assert!(reason.contains("not confirmed") && reason.contains("timed out"), "{reason}");
    }

    #[test]
    fn only_a_fresh_renewal_by_this_replica_confirms_leadership() {
        let now = Timestamp::from_second(1_000).unwrap();
        let duration = Duration::from_secs(15);
        assert_eq!(judge(Some(&lease("a", 990)), "a", now, duration), Verdict::Held);
        assert_eq!(judge(Some(&lease("b", 999)), "a", now, duration), Verdict::Taken("b".into()));
        assert!(matches!(judge(Some(&lease("a", 900)), "a", now, duration), Verdict::Stale(_)));
        assert!(matches!(judge(Some(&lease("", 999)), "a", now, duration), Verdict::Stale(_)));
        assert!(matches!(judge(None, "a", now, duration), Verdict::Stale(_)));
    }
}
