//! The data-plane part of a pipeline: where the CSV comes from, how to read it, what SQL to run and
//! where the Parquet goes. The `EventPipeline` custom resource embeds these types unchanged, so their
//! doc comments are also the `kubectl explain` text of the CRD fields.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The data path of a pipeline: read, transform, write, and what to do with bad rows.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PipelineSpec {
    /// Where the raw CSV partitions are and how to read them.
    pub source: SourceSpec,
    /// The SQL that turns one partition's rows into output rows.
    #[serde(default)]
    pub transform: TransformSpec,
    /// Where the Parquet output goes.
    pub sink: SinkSpec,
    /// What happens to rows that cannot be read as the declared schema.
    #[serde(default)]
    pub bad_records: BadRecordsSpec,
    /// How to reach S3: region, endpoint, and where credentials come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Settings>,
}

/// Where the raw CSV partitions are and how to read them.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SourceSpec {
    /// Bucket and optional prefix holding the partitions, e.g. `s3://user-events/`. In local mode
    /// (`eventpipe run`) a local directory is accepted too.
    #[schemars(length(min = 1))]
    pub url: String,
    /// Path of one partition below `url`, with the placeholders `{year}`, `{month}`, `{day}` (all
    /// required) and `{hour}` (optional, for hourly data). Every object directly inside a matching
    /// directory belongs to that partition, except names starting with `_` or `.`.
    #[serde(default = "default_layout")]
    #[schemars(regex(pattern = r"^[^{}]*\{year\}[^{}]*\{month\}[^{}]*\{day\}[^{}]*(\{hour\}[^{}]*)?$"))]
    pub layout: String,
    /// How the CSV files are written.
    #[serde(default)]
    pub csv: CsvOptions,
    /// The columns of the CSV files, in file order, with their types; names are unique. When
    /// empty, every column of the header is read as a nullable string.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 512), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub schema: Vec<Column>,
    /// S3 event notifications of the source's bucket, read from an SQS queue (optional): a
    /// partition a notification names is listed and launched within `settleSeconds` instead of at
    /// the next listing. Not part of the data path: turning them on or off reprocesses nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<NotificationsSpec>,
    /// Output partitions by event time instead of by the source's directories (optional). A
    /// source such as Kinesis Data Firehose files objects by arrival time, so the last events of
    /// a day land in the next day's directory: with `eventTime`, output partition D holds exactly
    /// the rows whose event time falls in D (in the schedule's time zone), wherever they were
    /// filed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<EventTimeSpec>,
}

impl Default for SourceSpec {
    fn default() -> Self {
        Self { url: String::new(), layout: default_layout(), csv: CsvOptions::default(), schema: Vec::new(), notifications: None, event_time: None }
    }
}

/// Event-time output partitions. Output partition D reads the objects of source directory D,
/// those of D-1 (clocks ahead) and those of the directories after D up to `lateness` that arrived
/// (were last modified) no later than `lateness` after D ended; it keeps the rows whose event
/// time falls in D. Every row is accounted for once: kept by the partition of its event time,
/// counted as routed by the others that read it, or — when its partition does not read its
/// object (it arrived later than `lateness`), its event time is empty, or it lies more than one
/// partition ahead of its directory — rejected by its own directory's run as `late`, `no event
/// time` or `early`, and written to the rejected-rows location. Output D closes `lateness` (plus
/// the grace period) after D ends.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EventTimeSpec {
    /// The column holding the event time: a `timestamp` column of `schema`.
    #[schemars(length(min = 1))]
    pub column: String,
    /// How long after a partition's end its rows may still arrive: a number and a unit, `m`
    /// (minutes), `h` (hours) or `d` (days), at most 7 days; e.g. `2h`.
    #[schemars(length(max = 6), regex(pattern = r"^[0-9]{1,5}[mhd]$"))]
    pub lateness: String,
    /// The time zone the partitions' days and hours are in: the schedule's, filled in by the
    /// operator; UTC when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub time_zone: Option<String>,
}

impl EventTimeSpec {
    /// The lateness as a duration, `None` when it is not a number and a unit.
    pub fn lateness(&self) -> Option<chrono::Duration> {
        let text = &self.lateness;
        let unit = text.chars().last()?;
        let number: i64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
        match unit {
            'm' => chrono::Duration::try_minutes(number),
            'h' => chrono::Duration::try_hours(number),
            'd' => chrono::Duration::try_days(number),
            _ => None,
        }
    }
}

/// Where the source bucket's event notifications arrive: an SQS queue that the bucket sends
/// `s3:ObjectCreated:*` and `s3:ObjectRemoved:*` to, directly or through EventBridge. They are
/// at-least-once and occasionally lost: the whole window is still listed every
/// `listIntervalSeconds`, which catches what they miss.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NotificationsSpec {
    /// The queue's URL, e.g. `https://sqs.eu-west-1.amazonaws.com/123456789012/user-events`. It is
    /// read with the pipeline's AWS identity and `s3.region`; a URL outside AWS must be one of
    /// the namespace's allowed endpoints.
    #[schemars(length(min = 1), regex(pattern = r"^https?://[^/]+/.+"))]
    pub sqs_queue_url: String,
    /// Seconds to wait after a notification for the rest of its burst before listing, so that a
    /// burst of objects gives one Job.
    #[serde(default = "default_settle_seconds")]
    #[schemars(range(max = 300))]
    pub settle_seconds: u32,
    /// Seconds between two listings of the whole window while notifications are on; it replaces
    /// `schedule.pollIntervalSeconds`.
    #[serde(default = "default_list_interval_seconds")]
    #[schemars(range(min = 1, max = 86400))]
    pub list_interval_seconds: u32,
}

fn default_settle_seconds() -> u32 {
    5
}

fn default_list_interval_seconds() -> u32 {
    900
}

/// The default partition layout: Hive-style daily partitions.
pub fn default_layout() -> String {
    "year={year}/month={month}/day={day}/".to_string()
}

/// How the CSV files are written.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CsvOptions {
    /// Whether the first record of every file is a header naming its columns. Columns are then
    /// read by name, in whatever order a file has them; a file whose header does not name the
    /// columns (or that lacks one) is refused, naming the file. Without a header, columns are
    /// read by position.
    #[serde(default = "default_true")]
    pub header: bool,
    /// Field separator: a single ASCII character.
    #[serde(default = "default_delimiter")]
    #[schemars(length(min = 1, max = 1))]
    pub delimiter: String,
    /// Quote character: a single ASCII character. A quote inside a quoted field is doubled.
    #[serde(default = "default_quote")]
    #[schemars(length(min = 1, max = 1))]
    pub quote: String,
    /// Compression of the files: `auto` decides by file name (`.gz` is gzip), `gzip` or `none`
    /// force it for every file.
    #[serde(default)]
    pub compression: CsvCompression,
    /// The longest row read, in bytes, its line end left out (default 1 MiB). A longer row is a
    /// bad row: usually a quote left open, whose field would otherwise run on to the end of the
    /// file. Reading resumes on the line after it, and memory stays bounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024, max = 268435456))]
    pub max_row_bytes: Option<u32>,
}

/// The longest row read when `csv.maxRowBytes` is not set.
pub const DEFAULT_MAX_ROW_BYTES: u32 = 1024 * 1024;

impl CsvOptions {
    /// The longest row read, in bytes.
    pub fn max_row_bytes(&self) -> usize {
        self.max_row_bytes.unwrap_or(DEFAULT_MAX_ROW_BYTES) as usize
    }
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            header: true,
            delimiter: default_delimiter(),
            quote: default_quote(),
            compression: CsvCompression::default(),
            max_row_bytes: None,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_delimiter() -> String {
    ",".to_string()
}

fn default_quote() -> String {
    "\"".to_string()
}

/// Compression of the CSV files.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CsvCompression {
    /// By file name: `.gz` is gzip, anything else is plain text.
    #[default]
    Auto,
    /// Every file is gzip.
    Gzip,
    /// Every file is plain text.
    None,
}

/// One column of the CSV files.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Column {
    /// Column name as the SQL sees it.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Column type.
    #[serde(rename = "type")]
    pub data_type: ColumnType,
    /// Whether the column may be empty. An empty value in a non-nullable column makes the row bad.
    #[serde(default = "default_true")]
    pub nullable: bool,
    /// For `timestamp` columns holding numbers: `seconds` or `millis` since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<TimestampUnit>,
    /// For `timestamp` columns holding text: a chrono/strftime format such as
    /// `%Y-%m-%d %H:%M:%S`. The offset is the one the text gives (`%z`, `%:z`), UTC when the format
    /// has none; fields the format lacks are at their start (`%Y-%m-%d %H` is the hour's first
    /// second). A zone name (`%Z`) without an offset is refused: names are not converted. Without
    /// `unit` and `format`, ISO 8601 / RFC 3339 text is expected. Instants lie in the years 1 to
    /// 9999.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// The type of a column.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// UTF-8 text.
    String,
    /// 64-bit signed integer: decimal digits with an optional sign, no spaces.
    Int64,
    /// 64-bit floating point number: decimal or scientific notation (`-1.5`, `2e10`), `inf` or
    /// `NaN`; no spaces.
    Float64,
    /// `true` or `false` (any letter case).
    Bool,
    /// Instant in time, stored as a UTC timestamp with microsecond precision.
    Timestamp,
    /// Calendar date, exactly `YYYY-MM-DD`, in the years 1 to 9999.
    Date,
}

/// Unit of a numeric timestamp.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum TimestampUnit {
    /// Seconds since 1970-01-01T00:00:00Z.
    Seconds,
    /// Milliseconds since 1970-01-01T00:00:00Z.
    Millis,
}

/// The SQL that turns one partition's rows into output rows.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TransformSpec {
    /// One SELECT query over the table `events`, which has the schema's columns plus the partition
    /// values (`year`, `month`, `day` and, for hourly layouts, `hour`) as integers. Output columns
    /// named after partition values are not written into the files: their values are in the path.
    /// A CSV column with such a name is that column in `events` (the partition value is then not
    /// there) and must be selected under another name.
    /// Statements other than a query (DDL, DML, COPY, SET, ...) are refused.
    #[serde(default = "default_sql")]
    #[schemars(length(min = 1))]
    pub sql: String,
}

impl Default for TransformSpec {
    fn default() -> Self {
        Self { sql: default_sql() }
    }
}

fn default_sql() -> String {
    "SELECT * FROM events".to_string()
}

/// Where the Parquet output goes.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SinkSpec {
    /// Bucket and optional prefix of the output, e.g. `s3://output/user-settings/`. Each partition is
    /// written below it as `year=YYYY/month=MM/day=DD/` (plus `hour=HH/` for hourly layouts), with a
    /// `_manifest.json` that records the committed files.
    #[schemars(length(min = 1))]
    pub url: String,
    /// Parquet compression codec.
    #[serde(default)]
    pub compression: ParquetCompression,
    /// How the commit point (`_manifest.json`) is written.
    #[serde(default, skip_serializing_if = "CommitMode::is_conditional")]
    pub commit: CommitMode,
    /// `parquet`: Hive-partitioned Parquet with a `_manifest.json` per partition. `delta`: a Delta
    /// Lake table partitioned by the layout's columns, one commit per partition run, which Athena
    /// (engine v3) and Spark read atomically.
    #[serde(default, skip_serializing_if = "SinkFormat::is_parquet")]
    pub format: SinkFormat,
    /// How a Delta sink's table is kept (with `format: delta`).
    #[serde(default, skip_serializing_if = "DeltaSpec::is_default")]
    pub delta: DeltaSpec,
}

/// How a Delta sink's table is kept.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeltaSpec {
    /// Size in MiB of the files an append-mode partition's increments are rewritten into, in one
    /// commit, once the partition has closed.
    #[serde(default = "default_target_file_mib")]
    #[schemars(range(min = 1, max = 4096))]
    pub target_file_mib: u32,
    /// Hours a file taken out of the table stays for readers of earlier versions (queries that
    /// started before a reprocess, time travel) before the daily vacuum deletes it. Must be
    /// longer than a run may take (`execution.activeDeadlineSeconds`): a vacuum deletes files
    /// that no commit lists once they are this old, and a running Job's files are listed only
    /// when it commits.
    #[serde(default = "default_retention_hours")]
    #[schemars(range(min = 1, max = 87600))]
    pub retention_hours: u32,
}

impl Default for DeltaSpec {
    fn default() -> Self {
        Self { target_file_mib: default_target_file_mib(), retention_hours: default_retention_hours() }
    }
}

impl DeltaSpec {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The size compaction aims each file at, in bytes.
    pub fn target_file_bytes(&self) -> u64 {
        u64::from(self.target_file_mib) * 1024 * 1024
    }
}

fn default_target_file_mib() -> u32 {
    128
}

fn default_retention_hours() -> u32 {
    168
}

/// How the output is published.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SinkFormat {
    /// Parquet files and a `_manifest.json` per partition.
    #[default]
    Parquet,
    /// A Delta Lake table.
    Delta,
}

impl SinkFormat {
    fn is_parquet(&self) -> bool {
        *self == SinkFormat::Parquet
    }
}

/// How the commit point is written.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CommitMode {
    /// With `If-None-Match`/`If-Match`, so two runs of one partition can never both commit. The
    /// store must honour conditional writes (AWS S3, MinIO, Ceph RGW and LocalStack do); a run
    /// checks that first and stops with an error naming `sink.commit` when it does not.
    #[default]
    Conditional,
    /// Last writer wins, for stores that ignore or refuse conditional writes. Safe while one
    /// operator (one Job per partition at a time) writes the sink prefix.
    Unconditional,
}

impl CommitMode {
    fn is_conditional(&self) -> bool {
        *self == CommitMode::Conditional
    }
}

/// Parquet compression codec.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ParquetCompression {
    /// Zstandard, level 3.
    #[default]
    Zstd,
    /// Snappy.
    Snappy,
    /// Gzip, level 6.
    Gzip,
    /// No compression.
    None,
}

/// What happens to rows that cannot be read as the declared schema (wrong number of fields, a
/// value of any declared column that does not parse, an empty non-nullable value, invalid UTF-8,
/// a quote that never closes, a row longer than `source.csv.maxRowBytes`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BadRecordsSpec {
    /// `fail` stops the partition with an error naming object, line and reason; `skip` leaves bad
    /// rows out and counts them; `quarantine` also writes them, with the reason, under `url`.
    #[serde(default)]
    pub policy: BadRecordPolicy,
    /// Where quarantined rows go, as JSON lines (`object`, `line`, `reason`, `text`) under
    /// `year=YYYY/month=MM/day=DD/`. Defaults to the sink URL with `-rejected` appended to its last
    /// path segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// What happens to bad rows.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BadRecordPolicy {
    /// Stop the partition with an error naming the first bad row.
    #[default]
    Fail,
    /// Leave bad rows out and count them.
    Skip,
    /// Leave bad rows out, count them and write them with their reasons under `badRecords.url`.
    Quarantine,
}

/// How to reach S3. Credentials come from the standard AWS chain: environment variables, profile,
/// web identity (IRSA) or container credentials (EKS pod identity).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3Settings {
    /// AWS region; defaults to the chain's region or `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Endpoint of an S3-compatible service, e.g. `http://localstack:4566`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Address buckets as `endpoint/bucket` instead of `bucket.endpoint` (most S3-compatible
    /// services need this).
    #[serde(default)]
    pub force_path_style: bool,
    /// A Secret in the pipeline's namespace holding `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`
    /// and optionally `AWS_SESSION_TOKEN`. The operator lists the source with these keys and the
    /// Jobs receive them as environment variables. Leave it out to use the IAM role of the Jobs'
    /// service account (IRSA, EKS Pod Identity), which the operator then lists with too (unless
    /// it is installed to use its own identity). Local runs (`eventpipe run`) ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretReference>,
    /// Seconds a request may wait for the next bytes of its response before it is retried
    /// (default 60). Reading a large object has no overall time limit while data arrives; a read
    /// that stalls this long continues from the first byte it lacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub read_timeout_seconds: Option<u32>,
    /// Seconds a failing request is retried (connection errors, timeouts, throttling and 5xx
    /// answers) before the run fails (default 180).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub retry_timeout_seconds: Option<u32>,
}

impl S3Settings {
    /// How long a request may wait for the next bytes of its response.
    pub fn read_timeout(&self) -> Duration {
        Duration::from_secs(self.read_timeout_seconds.unwrap_or(60).into())
    }

    /// How long a failing request is retried.
    pub fn retry_timeout(&self) -> Duration {
        Duration::from_secs(self.retry_timeout_seconds.unwrap_or(180).into())
    }
}

/// Names a Secret in the pipeline's namespace.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
pub struct SecretReference {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}
