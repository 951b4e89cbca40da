//! Object names that URL encoding changes — `#`, `%`, `+`, `~`, brackets, spaces, non-ASCII — in
//! object keys and in the source, sink and rejected-rows prefixes, on local files and on S3. Every
//! path reads them: the header check, the DataFusion read, the row-by-row pass over a bad row,
//! discovery and the fingerprint; quarantined rows name their object by its real key.

mod support;

use eventpipe_testkit::s3::S3Server;
use eventpipe_transformer::run::run;
use eventpipe_transformer::spec::BadRecordPolicy;
use support::{HEADER, TaskBuilder, gzip};
use tempfile::TempDir;

/// Object names S3 accepts that an encoding round trip can change. Keys with ASCII control
/// characters, empty segments (`a//b`) or `.`/`..` segments are left out: object_store refuses
/// them when it parses a listing.
const NAMES: &[&str] = &[
    "a+b é#1.csv",
    "50%41%.csv",
    "literal%20escape%2F.csv",
    "tilde~and space.csv",
    "[brackets]{braces}^caret`tick.csv",
    "question?star*pipe|.csv",
    "quote\"lt<gt>back\\slash.csv",
    "semi;comma,eq=amp&at@dollar$bang!paren().csv",
    "ünïcödé-日本語-🙂.csv",
    "gzipped #%+.csv.gz",
];

/// Location prefixes, with such characters too.
const SOURCE: &str = "raw é#~+[1]%25";
const SINK: &str = "curated 50%#";
const REJECTED: &str = "rejected ?+";

const PARTITION: &str = "year=2026/month=11/day=24/";

/// Where the test's objects live: a local directory or an S3 bucket.
enum Place {
    Local(TempDir),
    S3 { server: &'static S3Server, bucket: String },
}

impl Place {
    fn local() -> Self {
        Self::Local(TempDir::new().unwrap())
    }

    async fn s3() -> Self {
        let server = S3Server::get().unwrap();
        Self::S3 { server, bucket: server.bucket("names").await.unwrap() }
    }

    /// The URL of the prefix `dir`, spelled as a user writes it: the key verbatim.
    fn url(&self, dir: &str) -> String {
        match self {
            Self::Local(root) => format!("file://{}/{dir}/", std::fs::canonicalize(root.path()).unwrap().display()),
            Self::S3 { bucket, .. } => format!("s3://{bucket}/{dir}/"),
        }
    }

    fn builder(&self) -> TaskBuilder {
        let builder = TaskBuilder::new(&self.url(SOURCE), &self.url(SINK));
        match self {
            Self::Local(_) => builder,
            Self::S3 { server, .. } => builder.s3_endpoint(server.endpoint()),
        }
    }

    async fn put(&self, key: &str, body: Vec<u8>) {
        match self {
            Self::Local(root) => {
                let path = root.path().join(key);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, body).unwrap();
            }
            Self::S3 { server, bucket } => server.put(bucket, key, body).await.unwrap(),
        }
    }

    async fn read(&self, key: &str) -> Vec<u8> {
        match self {
            Self::Local(root) => std::fs::read(root.path().join(key)).unwrap(),
            Self::S3 { server, bucket } => server.read(bucket, key).await.unwrap(),
        }
    }

    /// Writes one object per name into the source partition, each with `rows`.
    async fn write_partition(&self, rows: impl Fn(usize) -> String) {
        for (index, name) in NAMES.iter().enumerate() {
            let text = format!("{HEADER}{}", rows(index));
            let body = if name.ends_with(".gz") { gzip(text.as_bytes()) } else { text.into_bytes() };
            self.put(&format!("{SOURCE}/{PARTITION}{name}"), body).await;
        }
    }

    async fn manifest(&self) -> serde_json::Value {
        serde_json::from_slice(&self.read(&format!("{SINK}/{PARTITION}_manifest.json")).await).unwrap()
    }
}

fn good_row(index: usize) -> String {
    format!("{index},name,value,1795478400\n")
}

/// A clean partition converts with every row; the manifest lists the real names, a second run
/// finds the same fingerprint and skips, and a run without declared columns reads a header.
async fn a_clean_partition_converts_every_object(place: Place) {
    place.write_partition(good_row).await;
    let summary = run(&place.builder().build()).await.unwrap();
    let objects = NAMES.len() as u64;
    assert_eq!((summary.rows_read, summary.rows_rejected, summary.rows_written), (objects, 0, objects));

    let manifest = place.manifest().await;
    let mut listed: Vec<&str> = manifest["inputs"].as_array().unwrap().iter().map(|i| i["path"].as_str().unwrap()).collect();
    listed.sort_unstable();
    let mut expected: Vec<String> = NAMES.iter().map(|name| format!("{PARTITION}{name}")).collect();
    expected.sort_unstable();
    assert_eq!(listed, expected);

    let again = run(&place.builder().build()).await.unwrap();
    assert!(again.skipped, "the fingerprint of the same objects is the same: {again:?}");
    assert_eq!(again.input_fingerprint, summary.input_fingerprint);

    // Without declared columns, the first object's header names them.
    let untyped = run(&place.builder().columns(Vec::new()).build()).await.unwrap();
    assert_eq!((untyped.skipped, untyped.rows_written), (false, objects));
}

/// Each object holds a good and a bad row: the row-by-row pass reads every object, and each
/// quarantined row names its object as the user sees it.
async fn bad_rows_are_quarantined_under_their_object_names(place: Place) {
    place.write_partition(|index| format!("{}bad-{index},name,value,1\n", good_row(index))).await;
    let task = place.builder().policy(BadRecordPolicy::Quarantine).rejected_url(&place.url(REJECTED)).build();
    let summary = run(&task).await.unwrap();
    let objects = NAMES.len() as u64;
    assert_eq!((summary.rows_read, summary.rows_rejected, summary.rows_written), (2 * objects, objects, objects));

    let rejected = place.read(&format!("{REJECTED}/{PARTITION}rejected-{}.jsonl", summary.run_id)).await;
    let mut named: Vec<String> = String::from_utf8(rejected)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["object"].as_str().unwrap().to_string())
        .collect();
    named.sort_unstable();
    let mut expected: Vec<String> = NAMES.iter().map(|name| format!("{}{PARTITION}{name}", place.url(SOURCE))).collect();
    expected.sort_unstable();
    assert_eq!(named, expected);
}

#[tokio::test]
async fn local_files_with_any_name_convert() {
    a_clean_partition_converts_every_object(Place::local()).await;
}

#[tokio::test]
async fn local_files_with_any_name_are_quarantined_by_name() {
    bad_rows_are_quarantined_under_their_object_names(Place::local()).await;
}

#[tokio::test]
async fn s3_objects_with_any_name_convert() {
    a_clean_partition_converts_every_object(Place::s3().await).await;
}

#[tokio::test]
async fn s3_objects_with_any_name_are_quarantined_by_name() {
    bad_rows_are_quarantined_under_their_object_names(Place::s3().await).await;
}
