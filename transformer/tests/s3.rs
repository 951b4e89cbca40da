//! The transformer against a real S3-compatible server (s3s-fs on 127.0.0.1): the same runs as on
//! local files, conditional commits, and the errors a user meets first — wrong credentials, a
//! missing bucket, an unreachable endpoint.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
use eventpipe_testkit::s3::{S3Server, SECRET_KEY};
use eventpipe_transformer::commit::manifest::{self, Manifest, ManifestFile};
use eventpipe_transformer::spec::{BadRecordPolicy, CommitMode};
use eventpipe_transformer::store::{Location, Retrying};
use eventpipe_transformer::{Error, run::run};
use support::{DAY, TaskBuilder, gzip};

const PARTITION: &str = "year=2026/month=11/day=24/";

struct Buckets {
    s3: &'static S3Server,
    source: String,
    sink: String,
}

impl Buckets {
    async fn new() -> Self {
        let s3 = S3Server::get().unwrap();
        Self { s3, source: s3.bucket("events").await.unwrap(), sink: s3.bucket("output").await.unwrap() }
    }

    fn builder(&self) -> TaskBuilder {
        TaskBuilder::new(&format!("s3://{}/raw/", self.source), &format!("s3://{}/curated/", self.sink))
            .s3_endpoint(self.s3.endpoint())
    }

    async fn upload(&self, name: &str, body: &[u8]) {
        self.s3.put(&self.source, &format!("raw/{PARTITION}{name}"), body.to_vec()).await.unwrap();
    }

    async fn output_keys(&self) -> Vec<String> {
        self.s3.keys(&self.sink, &format!("curated/{PARTITION}")).await.unwrap()
    }

    async fn manifest(&self) -> Manifest {
        let bytes = self.s3.read(&self.sink, &format!("curated/{PARTITION}_manifest.json")).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// Rows in a Parquet object, read from its footer by the parquet crate.
    async fn parquet_rows(&self, key: &str) -> i64 {
        let bytes = self.s3.read(&self.sink, key).await.unwrap();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&bytes).unwrap();
        SerializedFileReader::new(file).unwrap().metadata().file_metadata().num_rows()
    }
}

#[tokio::test]
async fn converts_a_partition_in_s3_exactly_once() {
    let buckets = Buckets::new().await;
    buckets.upload("a.csv", b"id,name,value,timestamp\n1,n,v,1795478400\n2,n,w,1795478401\n").await;
    buckets.upload("b.csv.gz", &gzip(b"id,name,value,timestamp\n3,n,x,1795478402\n")).await;

    let first = run(&buckets.builder().build()).await.unwrap();
    assert_eq!((first.rows_read, first.rows_written, first.skipped), (3, 3, false));
    let keys = buckets.output_keys().await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys[0].ends_with("_manifest.json"));
    assert_eq!(buckets.parquet_rows(&keys[1]).await, 3);
    let manifest = buckets.manifest().await;
    assert_eq!(manifest.input_fingerprint, first.input_fingerprint);
    assert_eq!(manifest.inputs.len(), 2);
    assert!(manifest.inputs.iter().all(|input| !input.version().is_empty()));

    let again = run(&buckets.builder().build()).await.unwrap();
    assert!(again.skipped);
    assert_eq!(buckets.output_keys().await, keys);

    buckets.upload("late.csv", b"id,name,value,timestamp\n4,n,y,1795478403\n").await;
    let late = run(&buckets.builder().build()).await.unwrap();
    assert_eq!((late.rows_read, late.rows_written, late.skipped), (4, 4, false));
    assert_eq!((late.by_run.read, late.increments), (1, 2), "the conversion appends the late file");
    let keys_after_late = buckets.output_keys().await;
    assert_eq!(keys_after_late.len(), 3, "the first run's file and the increment's: {keys_after_late:?}");
    assert!(keys_after_late.contains(&keys[1]) && keys_after_late.iter().any(|key| key.contains(&late.run_id)));
    let manifest = buckets.manifest().await;
    assert_eq!((manifest.run_id, manifest.inputs.len(), manifest.files.len()), (late.run_id, 3, 2));

    // Replaced, a committed object makes the next run convert the whole partition again.
    buckets.upload("a.csv", b"id,name,value,timestamp\n1,n,v,1795478400\n").await;
    let replaced = run(&buckets.builder().build()).await.unwrap();
    assert_eq!((replaced.rows_read, replaced.by_run.read, replaced.increments), (3, 3, 1));
    assert_eq!(buckets.output_keys().await.len(), 2, "superseded files are deleted");
}

#[tokio::test]
async fn quarantined_rows_land_in_s3() {
    let buckets = Buckets::new().await;
    buckets.upload("a.csv", b"id,name,value,timestamp\n1,n,v,1795478400\nbad,n,v,1\n").await;
    let rejected = format!("s3://{}/rejected/", buckets.sink);
    let task = buckets.builder().policy(BadRecordPolicy::Quarantine).rejected_url(&rejected).build();
    let summary = run(&task).await.unwrap();
    assert_eq!((summary.rows_read, summary.rows_rejected, summary.rows_written), (2, 1, 1));
    let key = format!("rejected/{PARTITION}rejected-{}.jsonl", summary.run_id);
    let line: serde_json::Value = serde_json::from_slice(&buckets.s3.read(&buckets.sink, &key).await.unwrap()).unwrap();
    assert_eq!(line["object"], format!("s3://{}/raw/{PARTITION}a.csv", buckets.source));
    assert_eq!(line["line"], 3);
    assert_eq!(buckets.manifest().await.rejected_rows_url, Some(format!("s3://{}/{key}", buckets.sink)));
}

#[tokio::test]
async fn a_commit_never_overwrites_a_manifest_it_did_not_read() {
    let buckets = Buckets::new().await;
    buckets.upload("a.csv", b"id,name,value,timestamp\n1,n,v,1795478400\n").await;
    run(&buckets.builder().build()).await.unwrap();
    let sink = Location::parse(&format!("s3://{}/curated/", buckets.sink))
        .unwrap()
        .open(buckets.builder().build().pipeline.s3.as_ref(), Retrying::Patiently)
        .await
        .unwrap();
    let directory = sink.child(&DAY.sink_path());
    let committed = manifest::read(&sink, &directory).await.unwrap().unwrap();

    // Each run commits files of its own.
    let of_run = |run_id: &str| {
        let files = vec![ManifestFile { name: format!("part-{run_id}-000.parquet"), rows: 1, bytes: 1 }];
        Manifest { run_id: run_id.into(), files, ..committed.manifest.clone() }
    };
    // A run that started before the first commit (it saw no manifest) loses.
    let late = of_run("late");
    let error = manifest::commit(&sink, &directory, &late, None, CommitMode::Conditional).await.unwrap_err();
    assert!(matches!(error, Error::ConcurrentCommit(_)), "{error}");
    // Retrying a commit that landed (its response was lost) is recognised as done.
    manifest::commit(&sink, &directory, &committed.manifest, None, CommitMode::Conditional).await.unwrap();

    // Two runs that read the same manifest: the second to commit loses.
    let (first, second) = (of_run("first"), of_run("second"));
    manifest::commit(&sink, &directory, &first, Some(&committed), CommitMode::Conditional).await.unwrap();
    let error = manifest::commit(&sink, &directory, &second, Some(&committed), CommitMode::Conditional).await.unwrap_err();
    assert!(matches!(error, Error::ConcurrentCommit(_)), "{error}");
    // The S3 server honours conditional writes, so the sink passes the check.
    manifest::check_conditional_writes(&sink, CommitMode::Conditional).await.unwrap();
}

#[tokio::test]
async fn a_missing_bucket_is_named() {
    let s3 = S3Server::get().unwrap();
    let settings = eventpipe_transformer::spec::S3Settings {
        endpoint: Some(s3.endpoint().into()),
        force_path_style: true,
        ..Default::default()
    };
    let source = Location::parse("s3://no-such-bucket/raw/").unwrap().open(Some(&settings), Retrying::Briefly).await.unwrap();
    let layout = eventpipe_transformer::layout::Layout::parse(PARTITION.replace("2026", "{year}").replace("=11", "={month}").replace("=24", "={day}").as_str()).unwrap();
    let message = eventpipe_transformer::store::discovery::discover(&source, &layout).await.unwrap_err().to_string();
    assert!(message.starts_with("s3://no-such-bucket/raw: "), "{message}");
    assert!(message.contains("NoSuchBucket"), "{message}");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_named() {
    let buckets = Buckets::new().await;
    buckets.upload("a.csv", b"id,name,value,timestamp\n1,n,v,1795478400\n").await;
    let mut task = buckets.builder().build();
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let s3 = task.pipeline.s3.as_mut().unwrap();
    s3.endpoint = Some(format!("http://127.0.0.1:{closed_port}"));
    s3.retry_timeout_seconds = Some(2);
    let message = run(&task).await.unwrap_err().to_string();
    assert!(message.starts_with(&format!("s3://{}/raw", buckets.source)), "{message}");
    assert!(message.contains(&format!("127.0.0.1:{closed_port}")), "{message}");
}

/// The Job binary: task on stdin, summary on stdout and in the termination log; with a wrong
/// secret, one error line and a non-zero exit.
#[tokio::test]
async fn the_job_binary_reports_its_outcome() {
    let buckets = Buckets::new().await;
    buckets.upload("a.csv", b"id,name,value,timestamp\n1,n,v,1795478400\n").await;
    let task = serde_json::to_vec(&buckets.builder().build()).unwrap();
    let run_binary = |secret: &str| {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("termination-log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_eventpipe-transformer"))
            .args(["--task", "-", "--termination-log"])
            .arg(&log)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&task).unwrap();
        let output = child.wait_with_output().unwrap();
        let stdout: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let termination: serde_json::Value = serde_json::from_slice(&std::fs::read(&log).unwrap()).unwrap();
        assert_eq!(stdout, termination);
        (output.status.code(), stdout, String::from_utf8(output.stderr).unwrap())
    };

    let (code, outcome, stderr) = run_binary("wrong-secret");
    assert_eq!(code, Some(1), "a storage error is transient: {outcome}");
    let error = outcome["error"].as_str().unwrap();
    assert!(error.contains("SignatureDoesNotMatch") || error.contains("403"), "{error}");
    let error_lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(error_lines.len(), 1, "{stderr}");

    let (code, outcome, _) = run_binary(SECRET_KEY);
    assert_eq!(code, Some(0), "{outcome}");
    assert_eq!(outcome["summary"]["rowsWritten"], 1);
    assert_eq!(outcome["summary"]["partition"], "year=2026/month=11/day=24");
}
