//! The contract between the control plane and a transformer run: the task it is given and the
//! summary it returns (printed as JSON and written to the pod's termination message).

use serde::{Deserialize, Serialize};

use crate::layout::PartitionKey;
use crate::spec::PipelineSpec;

/// One partition to transform. The task never lists the partition's objects (a Firehose day holds
/// thousands, more than a pod's environment can carry): the run lists the partition itself and
/// commits the fingerprint of what it read.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// The partition.
    pub partition: PartitionKey,
    /// The input fingerprint the launcher saw when it listed the partition. The run processes what
    /// it lists itself; when that differs (an object landed since), it says so in its log and
    /// reports the fingerprint it committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_fingerprint: Option<String>,
    /// The pipeline's data path.
    pub pipeline: PipelineSpec,
    /// Resources for the query engine.
    #[serde(default)]
    pub engine: EngineSettings,
    /// Process the partition even when its committed output has the same inputs and spec; the
    /// whole partition, also in append mode.
    #[serde(default)]
    pub force: bool,
    /// Process the whole partition, not an increment, even in append mode.
    #[serde(default)]
    pub full: bool,
    /// Read no input: rewrite the files a Delta sink holds for the partition (the increments of
    /// an append-mode partition that has closed) into files of about `sink.delta.targetFileMib`,
    /// in one commit that removes them.
    #[serde(default)]
    pub compact: bool,
    /// Take only objects last modified at or before this time (RFC 3339): those older than the
    /// grace period when the run was planned. All objects when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_before: Option<String>,
}

/// One input object of a partition.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct InputObject {
    /// Path relative to the source URL.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// ETag, as the listing gave it; every read of the object asks for this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// When it was last modified (RFC 3339), for stores that list no ETag: reads then ask for
    /// the object unmodified since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<String>,
}

impl InputObject {
    /// What tells this version of the object from another: its ETag, or when it was modified.
    pub fn version(&self) -> &str {
        self.etag.as_deref().or(self.modified.as_deref()).unwrap_or("")
    }
}

/// Resources for the query engine.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EngineSettings {
    /// Parallel partitions of the query, and the files the output is written to; by default one
    /// writer per CPU available to the process, and queries over whole partitions in 8
    /// partitions per writer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_partitions: Option<usize>,
    /// Memory the query may hold before it spills to disk, in MiB; defaults to 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_mib: Option<u64>,
    /// Directory for spill files and for the row-by-row pass over bad input; defaults to the
    /// system temporary directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch_dir: Option<String>,
    /// Seconds the conversion may take; past it the run stops with an error and commits nothing.
    /// No limit when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

/// What a run did. Always: `rows_read = rows_accepted + rows_routed + rows_rejected`, where
/// accepted rows are the rows the SQL saw.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The partition, `year=YYYY/month=MM/day=DD`.
    pub partition: String,
    /// The run that produced the committed output.
    pub run_id: String,
    /// Fingerprint of the inputs the output was made from.
    pub input_fingerprint: String,
    /// Hash of the data-path spec the output was made with.
    #[serde(default)]
    pub spec_hash: String,
    /// Input rows read.
    pub rows_read: u64,
    /// Input rows left out as bad, or rejected for their event time.
    pub rows_rejected: u64,
    /// Input rows of other event-time partitions: read, and left to the partition that keeps or
    /// rejects them.
    #[serde(default)]
    pub rows_routed: u64,
    /// Output rows written.
    pub rows_written: u64,
    /// Output bytes written.
    pub bytes_written: u64,
    /// Output files, relative to the sink URL.
    pub files: Vec<String>,
    /// How many runs made the committed output: 1 for a whole partition, one more for each
    /// increment added in append mode.
    #[serde(default)]
    pub increments: u32,
    /// The rows this run itself handled: an increment's, the whole partition's, or none when
    /// skipped.
    #[serde(default)]
    pub by_run: RunRows,
    /// Bytes the query spilled to disk to stay within its memory limit (0 when skipped).
    pub spilled_bytes: u64,
    /// True when the committed output already matched the inputs and nothing was done.
    pub skipped: bool,
    /// Wall-clock seconds the run took.
    pub seconds: f64,
}

/// Rows one run read, rejected and wrote.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct RunRows {
    /// Input rows read.
    pub read: u64,
    /// Input rows left out as bad, or rejected for their event time.
    pub rejected: u64,
    /// Input rows of other event-time partitions.
    #[serde(default)]
    pub routed: u64,
    /// Output rows written.
    pub written: u64,
}

/// A Delta sink's table to vacuum (see [`crate::commit::vacuum`]): what a vacuum Job is given.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VacuumTask {
    /// The pipeline whose sink is vacuumed.
    pub pipeline: PipelineSpec,
}

/// What a run reports to the operator: the summary, or the error.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// The summary of a successful run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// What a successful vacuum did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vacuumed: Option<crate::commit::vacuum::Vacuumed>,
    /// Why the run failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The kubelet keeps at most this many bytes of a termination message.
pub const TERMINATION_MESSAGE_LIMIT: usize = 4096;

impl Outcome {
    /// The outcome as JSON that fits a termination message: a long error is shortened and, when
    /// still too long, the list of output files is left out (it is in the `_manifest.json`).
    pub fn termination_message(&self) -> String {
        let mut outcome = self.clone();
        if let Some(error) = &mut outcome.error {
            shorten(error, TERMINATION_MESSAGE_LIMIT / 2);
        }
        let json = serde_json::to_string(&outcome).expect("outcomes serialise");
        if json.len() <= TERMINATION_MESSAGE_LIMIT {
            return json;
        }
        if let Some(summary) = &mut outcome.summary {
            summary.files.clear();
        }
        serde_json::to_string(&outcome).expect("outcomes serialise")
    }
}

/// Cuts `text` to at most `limit` bytes at a character boundary, marking the cut with `…`.
pub fn shorten(text: &mut String, limit: usize) {
    if text.len() > limit {
        let mut end = limit.saturating_sub('…'.len_utf8());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
}

/// A new run id: the UTC time to the second and eight random hex digits, e.g.
/// `20261124T031500-1a2b3c4d`. Sorts by start time; every process draws its own, so two pods of
/// one Job never write the same file names.
pub fn new_run_id() -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{}-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S"), &random[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn termination_messages_fit_the_kubelet_limit() {
        let error = Outcome { error: Some("é".repeat(5000)), ..Outcome::default() };
        let message = error.termination_message();
        assert!(message.len() <= TERMINATION_MESSAGE_LIMIT && message.contains('…'), "{}", message.len());
        let files = (0..200).map(|i| format!("year=2026/month=11/day=24/part-{i:03}.parquet")).collect();
        let summary = Outcome { summary: Some(Summary { rows_read: 7, files, ..Summary::default() }), ..Outcome::default() };
        let parsed: Outcome = serde_json::from_str(&summary.termination_message()).unwrap();
        assert_eq!(parsed.summary.as_ref().map(|s| (s.rows_read, s.files.len())), Some((7, 0)));
    }
}
