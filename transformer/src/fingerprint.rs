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
        hasher.update(format!("{}\t{}\t{}\n", input.path, input.size, input.etag.as_deref().unwrap_or("")));
    }
    hex(&hasher.finalize())
}

/// Hex SHA-256 over the parts of the spec that decide the output: source (URL, layout, CSV
/// options, schema), transform, sink (URL, compression) and bad-record handling. S3 settings
/// (endpoint, region, credentials) and the commit mode only decide how the same bytes are reached
/// or committed, so they are left out.
pub fn spec_hash(spec: &PipelineSpec) -> String {
    let data_path = serde_json::json!({
        "source": spec.source,
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
        InputObject { path: path.into(), size, etag: Some(etag.into()) }
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
