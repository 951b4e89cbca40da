//! Making a partition's output count: writing Parquet, fingerprinting inputs and spec, the
//! committed manifest, and cleaning up what runs that did not commit left behind.

pub mod cleanup;
pub mod compaction;
pub mod conversion;
pub mod delta;
pub mod fingerprint;
pub mod manifest;
pub mod vacuum;
pub mod writer;
