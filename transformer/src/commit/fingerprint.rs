//! A partition's output is a function of its inputs and of the data-path spec. Input fingerprints
//! identify the inputs: the same objects with the same sizes and ETags give the same fingerprint; a
//! late, changed or removed file gives another. Spec hashes identify the data-path spec: a changed
//! SQL, schema, CSV option, sink or bad-record policy gives another.

use sha2::{Digest, Sha256};

use crate::spec::PipelineSpec;
use crate::task::InputObject;

/// Hex SHA-256 over the sorted `path size etag` lines of the inputs.
pub fn fingerprint(inputs: &[InputObject]) -> String {
    let mut sorted: Vec<&InputObject> = inputs.iter().collect();
    sorted.sort();
    let mut hasher = Sha256::new();
    for input in sorted {
        hasher.update(format!("{}\t{}\t{}\n", input.path, input.size, input.version()));
    }
    hex(&hasher.finalize())
}

/// The meaning the data path gives to input bytes: how CSV is split into rows, how values are
/// parsed, which rows are bad, how output types are written. Raise it with every release that
/// reads the same bytes with the same spec into other output (the test
/// `the_data_path_semantics_are_pinned` fails until it is): committed partitions then no longer
/// match the spec hash and are processed again, and no output mixes increments of two meanings.
pub const DATA_PATH_SEMANTICS: u32 = 2;

/// Hex SHA-256 over the parts of the spec that decide the output: source (URL, layout, CSV
/// options, schema), transform, sink (URL, compression) and bad-record handling, and the
/// program's [`DATA_PATH_SEMANTICS`]. S3 settings (endpoint, region, credentials) and the commit
/// mode only decide how the same bytes are reached or committed, so they are left out.
pub fn spec_hash(spec: &PipelineSpec) -> String {
    // How partitions are discovered is not how they are read.
    let source = crate::spec::SourceSpec { notifications: None, ..spec.source.clone() };
    let data_path = serde_json::json!({
        "semantics": DATA_PATH_SEMANTICS,
        "source": source,
        "transform": spec.transform,
        "sink": {"url": spec.sink.url, "compression": spec.sink.compression},
        "badRecords": spec.bad_records,
    });
    hex(&Sha256::digest(data_path.to_string().as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(path: &str, size: u64, etag: &str) -> InputObject {
        InputObject { path: path.into(), size, etag: Some(etag.into()), modified: None }
    }

    #[test]
    fn order_does_not_matter_but_content_does() {
        let a = input("d/a.csv", 10, "e1");
        let b = input("d/b.csv", 20, "e2");
        let base = fingerprint(&[a.clone(), b.clone()]);
        assert_eq!(base.len(), 64);
        assert_eq!(base, fingerprint(&[b.clone(), a.clone()]));
        assert_ne!(base, fingerprint(std::slice::from_ref(&a)));
        assert_ne!(base, fingerprint(&[a.clone(), input("d/b.csv", 21, "e2")]));
        assert_ne!(base, fingerprint(&[a.clone(), input("d/b.csv", 20, "e3")]));
        assert_ne!(base, fingerprint(&[a, b, input("d/c.csv", 1, "late")]));
    }

    #[test]
    fn the_spec_hash_follows_the_data_path_only() {
        let spec = PipelineSpec::default();
        let base = spec_hash(&spec);
        assert_eq!(base, spec_hash(&spec.clone()));
        let mut sql = spec.clone();
        sql.transform.sql = "SELECT id FROM events".into();
        let mut sink = spec.clone();
        sink.sink.url = "s3://elsewhere/".into();
        let mut policy = spec.clone();
        policy.bad_records.policy = crate::spec::BadRecordPolicy::Skip;
        for changed in [&sql, &sink, &policy] {
            assert_ne!(base, spec_hash(changed));
        }
        let mut endpoint = spec.clone();
        endpoint.s3 = Some(crate::spec::S3Settings { endpoint: Some("http://127.0.0.1:9000".into()), ..Default::default() });
        let mut commit = spec.clone();
        commit.sink.commit = crate::spec::CommitMode::Unconditional;
        assert_eq!((spec_hash(&endpoint), spec_hash(&commit)), (base.clone(), base));
    }
}

/// The data path's meaning, pinned: a corpus of tricky inputs decoded and typed as a run does, and
/// output types normalised, reduced to one digest. A change to how bytes become rows or values
/// changes it; the test then asks for [`DATA_PATH_SEMANTICS`] to be raised with the new digest.
#[cfg(test)]
mod semantics {
    use std::sync::Arc;

    use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use sha2::{Digest, Sha256};

    use super::DATA_PATH_SEMANTICS;
    use crate::csv::decoder::tests::decode_with;
    use crate::csv::decoder::{BadRowHandling, DecoderOptions};
    use crate::csv::dialect::CsvDialect;
    use crate::spec::{Column, ColumnType, TimestampUnit};

    /// The semantics version and the digest of the corpus it reads.
    const PINNED: (u32, &str) = (2, "1ddce6f50ffc4e9290c59f5f4c8d9bcd248df7bbb083b33c79fcb611ceb0eab7");

    fn columns() -> Vec<Column> {
        let column = |name: &str, data_type, nullable, unit, format: Option<&str>| Column {
            name: name.into(),
            data_type,
            nullable,
            unit,
            format: format.map(str::to_string),
        };
        vec![
            column("id", ColumnType::Int64, false, None, None),
            column("text", ColumnType::String, true, None, None),
            column("amount", ColumnType::Float64, true, None, None),
            column("flag", ColumnType::Bool, true, None, None),
            column("on", ColumnType::Date, true, None, None),
            column("iso", ColumnType::Timestamp, true, None, None),
            column("epoch", ColumnType::Timestamp, true, Some(TimestampUnit::Millis), None),
            column("local", ColumnType::Timestamp, true, None, Some("%d/%m/%Y %H:%M %z")),
        ]
    }

    const CORPUS: &[&[u8]] = &[
        b"id,text,amount,flag,on,iso,epoch,local\n1,plain,1.5,true,2026-11-24,2026-11-24T10:00:00Z,1795478400123,24/11/2026 11:00 +0100\n",
        b"\xEF\xBB\xBFlocal,epoch,iso,on,flag,amount,text,id\r\n24/11/2026 11:00 -0130,,2026-11-24 10:00:00,,FALSE,-2e3,\"q,\"\"uoted\"\"\r\nline\",2\r\n",
        b"id,text,amount,flag,on,iso,epoch,local\n3,\xEF\xBB\xBFbom inside,NaN,True,0001-01-01,0001-01-01T00:00:00Z,-62135596800000,01/01/0001 00:00 +0000\n4,,,,,,,\n",
        b"id,text,amount,flag,on,iso,epoch,local\n 5,a,1,true,2026-11-24,x,1,x\n6,\"open,1,true,2026-11-24,2026-11-24T00:00:00Z,1,24/11/2026 00:00 +0000\n7,b,1,yes,2026-1-5,0000-01-01T00:00:00Z,1e3,24/11/2026 00:00 +2500\n8,c,1 ,true,2026-02-30,2026-11-24T00:00:00Z,1,24/11/2026 00:00\n",
        b"id,text,amount,flag,on,iso,epoch,local\n9,\xff,1,true,2026-11-24,2026-11-24T00:00:00Z,1,24/11/2026 00:00 +0000\r10,short\n\n11,\"a\"b,2,false,2026-11-24,2026-11-24T00:00:00+14:00,2,24/11/2026 00:00 +0000\n12,\"never closed",
    ];

    fn corpus_reading() -> String {
        let rules = crate::csv::values::rules(&columns()).unwrap();
        let mut reading = String::new();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        for input in CORPUS {
            let options = DecoderOptions {
                projection: (0..rules.len()).collect(),
                columns: Arc::clone(&rules),
                batch_size: 1024,
                dialect: CsvDialect { has_header: true, delimiter: b',', quote: b'"', max_row_bytes: 1 << 20 },
            };
            let dir = tempfile::tempdir().unwrap();
            let bad = Arc::new(crate::csv::bad_rows::BadRows::create(&dir.path().join("bad.jsonl")).unwrap());
            let good = runtime.block_on(decode_with(&options, input, &[], BadRowHandling::Separate(Arc::clone(&bad)))).unwrap();
            if let Some(batch) = good {
                reading.push_str(&pretty_format_batches(&[batch]).unwrap().to_string());
            }
            let mut lines: Vec<u64> = std::fs::read_to_string(bad.finish().unwrap())
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str::<crate::csv::bad_rows::BadRow>(line).unwrap().line)
                .collect();
            lines.sort();
            reading.push_str(&format!("\nbad lines {lines:?}\n"));
        }
        let nanos = DataType::Timestamp(TimeUnit::Nanosecond, None);
        let nested = DataType::List(Arc::new(Field::new("item", nanos.clone(), true)));
        for output in [nanos, DataType::Date64, nested, DataType::Utf8] {
            reading.push_str(&format!("{output} -> {}\n", crate::query::schema::output_expr("x", &output)));
        }
        reading
    }

    #[test]
    fn the_data_path_semantics_are_pinned() {
        let reading = corpus_reading();
        let digest: String = Sha256::digest(reading.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect();
        assert_eq!(
            (DATA_PATH_SEMANTICS, digest.as_str()),
            PINNED,
            "the data path reads its corpus differently now:\n{reading}\nIf that is meant, raise DATA_PATH_SEMANTICS \
             (committed partitions are then processed again) and pin it with this digest."
        );
    }

    #[test]
    fn notifications_are_not_part_of_the_data_path() {
        use crate::commit::fingerprint::spec_hash;
        let mut spec = crate::spec::PipelineSpec::default();
        let without = spec_hash(&spec);
        spec.source.notifications = Some(crate::spec::NotificationsSpec {
            sqs_queue_url: "https://sqs.eu-west-1.amazonaws.com/123456789012/events".into(),
            settle_seconds: 5,
            list_interval_seconds: 900,
        });
        assert_eq!(spec_hash(&spec), without);
    }
}
