//! The names of a pipeline's Jobs: deterministic, so that a launch recorded in the status finds
//! its Job again after a restart, and short enough for Kubernetes.

use eventpipe_transformer::layout::PartitionKey;
use k8s_openapi::jiff::Timestamp;
use sha2::{Digest, Sha256};

/// The longest Job name: its pods carry it in the `job-name` label, whose values end at 63.
const MAX_JOB_NAME: usize = 63;

/// The version of a partition's output a Job makes: a short hash of the pipeline's UID, the input
/// fingerprint and the spec hash. A pipeline created again under the same name, new inputs and a
/// new spec each give new Job names.
pub fn version(pipeline_uid: &str, fingerprint: &str, spec_hash: &str) -> String {
    let digest = Sha256::digest(format!("{pipeline_uid}\n{fingerprint}\n{spec_hash}").as_bytes());
    hex(&digest[..5])
}

/// The Job name of one launch of a partition: `<pipeline>-<yyyymmdd[hh]>-<version>-<launch>`, at
/// most 63 characters. A long pipeline name is cut and a hash of it added, so names stay distinct.
/// The launch number alone makes the name unique within the partition; the version tells people
/// which inputs and spec the Job processes.
pub fn job_name(pipeline: &str, partition: &PartitionKey, version: &str, launch: u32) -> String {
    let hour = partition.hour.map(|h| format!("{h:02}")).unwrap_or_default();
    let version: String = version.chars().filter(char::is_ascii_alphanumeric).take(10).collect();
    let suffix = format!(
        "-{:04}{:02}{:02}{hour}-{}-{launch}",
        partition.year,
        partition.month,
        partition.day,
        version.to_ascii_lowercase()
    );
    with_pipeline(pipeline, &suffix)
}

/// The name of the vacuum Job launched at `started` (see `vacuum.rs`):
/// `<pipeline>-vacuum-<yyyymmddhhmm>`, at most 63 characters.
pub fn vacuum_job_name(pipeline: &str, started: Timestamp) -> String {
    with_pipeline(pipeline, &format!("-vacuum-{}", started.strftime("%Y%m%d%H%M")))
}

/// The pipeline's name followed by `suffix`, at most 63 characters: a long pipeline name is cut
/// and a hash of it added, so names stay distinct.
fn with_pipeline(pipeline: &str, suffix: &str) -> String {
    let room = MAX_JOB_NAME - suffix.len();
    let prefix = if pipeline.len() <= room {
        pipeline.to_string()
    } else {
        let hash = hex(&Sha256::digest(pipeline.as_bytes())[..3]);
        format!("{}-{hash}", pipeline[..room - hash.len() - 1].trim_end_matches(['-', '.']))
    };
    format!("{prefix}{suffix}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0b6c1f4e-0000-4000-8000-000000000001";

    fn day(day: u8) -> PartitionKey {
        PartitionKey { year: 2026, month: 11, day, hour: None }
    }

    #[test]
    fn names_are_deterministic_short_and_distinct() {
        assert_eq!(job_name("settings", &day(24), "9f86d081884c7d65", 1), "settings-20261124-9f86d08188-1");
        let hourly = PartitionKey { hour: Some(3), ..day(24) };
        assert_eq!(job_name("s", &hourly, "ab", 2), "s-2026112403-ab-2");
        let long_a = format!("{}-a", "x".repeat(60));
        let long_b = format!("{}-b", "x".repeat(60));
        let (a, b) = (job_name(&long_a, &day(1), "ff", 1), job_name(&long_b, &day(1), "ff", 1));
        assert!(a.len() <= 63 && b.len() <= 63, "{a} {b}");
        assert_ne!(a, b);
        assert_eq!(a, job_name(&long_a, &day(1), "ff", 1));
    }

    #[test]
    fn a_new_pipeline_new_inputs_or_a_new_spec_give_a_new_version() {
        let base = version(UID, "f", "s");
        assert_eq!(base.len(), 10);
        assert_eq!(base, version(UID, "f", "s"));
        let others = [version("another-uid", "f", "s"), version(UID, "g", "s"), version(UID, "f", "t")];
        assert!(others.iter().all(|other| *other != base), "{base} {others:?}");
    }

    #[test]
    fn vacuum_jobs_are_named_by_their_start_and_fit() {
        let at: Timestamp = "2026-12-05T04:30:00Z".parse().unwrap();
        assert_eq!(vacuum_job_name("settings", at), "settings-vacuum-202612050430");
        let long = vacuum_job_name(&"p".repeat(80), at);
        assert!(long.len() <= MAX_JOB_NAME && long.ends_with("-vacuum-202612050430"), "{long}");
    }
}
