//! The transformer's errors. Each renders as one line that says what is wrong and where.

use datafusion::error::DataFusionError;

/// A transformer result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop a partition.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pipeline spec or task is unusable (layout, schema, URLs).
    #[error("invalid pipeline: {0}")]
    Config(String),
    /// The SQL is refused by the sandbox or does not plan against the `events` table.
    #[error("invalid transform.sql: {0}")]
    Sql(String),
    /// A bad row under the `fail` policy.
    #[error("bad record in {object} line {line}: {reason} ({total} bad rows in the partition; set badRecords.policy to skip or quarantine to leave them out)")]
    BadRecord {
        /// URL of the object holding the row.
        object: String,
        /// 1-based line on which the row starts.
        line: u64,
        /// What is wrong with it.
        reason: String,
        /// How many bad rows the partition holds in all.
        total: u64,
    },
    /// Reading or writing an object failed.
    #[error("{url}: {}", one_line(source))]
    Storage {
        /// URL of the object or prefix.
        url: String,
        /// The store's error.
        source: object_store::Error,
    },
    /// The conversion took longer than `engine.timeoutSeconds`.
    #[error("the conversion did not finish within {0} s (the time limit); nothing was committed")]
    Timeout(u64),
    /// Another run committed the same partition while this one ran.
    #[error("{0}: another run committed this partition concurrently; this run's output was discarded")]
    ConcurrentCommit(String),
    /// The query engine failed.
    #[error("query failed: {}", one_line(.0))]
    Engine(#[from] DataFusionError),
    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl From<datafusion::parquet::errors::ParquetError> for Error {
    fn from(error: datafusion::parquet::errors::ParquetError) -> Self {
        Error::Engine(error.into())
    }
}

/// How a failed run ends the transformer process. The Job's `podFailurePolicy` fails the Job at
/// once on the exit codes of errors that another try cannot fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitClass {
    /// Storage, network, resources or a concurrent commit: another try may succeed.
    Transient = 1,
    /// The input data or the spec is wrong: the same inputs and spec fail again.
    Data = 2,
    /// The task itself is unreadable.
    BadTask = 3,
}

impl Error {
    /// Whether another try of the same task may succeed.
    pub fn exit_class(&self) -> ExitClass {
        match self {
            Error::Config(_) | Error::Sql(_) | Error::BadRecord { .. } => ExitClass::Data,
            Error::Storage { .. } | Error::ConcurrentCommit(_) | Error::Timeout(_) | Error::Engine(_) | Error::Io { .. } => {
                ExitClass::Transient
            }
        }
    }

    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io { context: context.into(), source }
    }
}

/// An error and all its causes on one line, without repeating a cause its parent already quotes.
pub fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text.replace('\n', " ")
}
