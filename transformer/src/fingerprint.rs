//! Input fingerprints: a partition's identity as data. The same objects with the same sizes and
//! ETags give the same fingerprint; a late, changed or removed file gives another.

use sha2::{Digest, Sha256};

use crate::task::InputObject;

/// Hex SHA-256 over the sorted `path size etag` lines of the inputs.
pub fn fingerprint(inputs: &[InputObject]) -> String {
    let mut sorted: Vec<&InputObject> = inputs.iter().collect();
    sorted.sort();
    let mut hasher = Sha256::new();
    for input in sorted {
        hasher.update(format!("{}\t{}\t{}\n", input.path, input.size, input.etag.as_deref().unwrap_or("")));
    }
    hasher.finalize().iter().map(|byte| format!("{byte:02x}")).collect()
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
        assert_ne!(base, fingerprint(&[a.clone()]));
        assert_ne!(base, fingerprint(&[a.clone(), input("d/b.csv", 21, "e2")]));
        assert_ne!(base, fingerprint(&[a.clone(), input("d/b.csv", 20, "e3")]));
        assert_ne!(base, fingerprint(&[a, b, input("d/c.csv", 1, "late")]));
    }
}
