//! The contract between the control plane and a transformer run: the task it is given and the
//! summary it returns (printed as JSON and written to the pod's termination message).

use serde::{Deserialize, Serialize};

use crate::layout::PartitionKey;
use crate::spec::PipelineSpec;

/// One partition to transform.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// Identifies this run; output files are named after it. Unique per attempt.
    pub run_id: String,
    /// The partition.
    pub partition: PartitionKey,
    /// The partition's input objects, as discovered.
    pub inputs: Vec<InputObject>,
    /// The pipeline's data path.
    pub pipeline: PipelineSpec,
    /// Resources for the query engine.
    #[serde(default)]
    pub engine: EngineSettings,
    /// Process the partition even when its committed output has the same input fingerprint.
    #[serde(default)]
    pub force: bool,
}

/// One input object of a partition.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct InputObject {
    /// Path relative to the source URL.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// ETag, or the last-modified time where the store lists no ETag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

/// Resources for the query engine.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EngineSettings {
    /// Parallel partitions of the query; defaults to the CPUs available to the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_partitions: Option<usize>,
    /// Memory the query may hold before it spills to disk, in MiB; defaults to 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_mib: Option<u64>,
    /// Directory for spill files and for the row-by-row pass over bad input; defaults to the
    /// system temporary directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch_dir: Option<String>,
}

/// What a run did. Always: `rows_read = rows_accepted + rows_rejected`, where accepted rows are the
/// rows the SQL saw.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The partition, `year=YYYY/month=MM/day=DD`.
    pub partition: String,
    /// The run that produced the committed output.
    pub run_id: String,
    /// Fingerprint of the inputs the output was made from.
    pub input_fingerprint: String,
    /// Input rows read.
    pub rows_read: u64,
    /// Input rows left out as bad.
    pub rows_rejected: u64,
    /// Output rows written.
    pub rows_written: u64,
    /// Output bytes written.
    pub bytes_written: u64,
    /// Output files, relative to the sink URL.
    pub files: Vec<String>,
    /// Bytes the query spilled to disk to stay within its memory limit (0 when skipped).
    pub spilled_bytes: u64,
    /// True when the committed output already matched the inputs and nothing was done.
    pub skipped: bool,
    /// Wall-clock seconds the run took.
    pub seconds: f64,
}

/// A new run id: the UTC time to the second and eight random hex digits, e.g.
/// `20261124T031500-1a2b3c4d`. Sorts by start time; unique per attempt.
pub fn new_run_id() -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{}-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S"), &random[..8])
}
