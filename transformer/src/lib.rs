//! eventpipe's data plane: turns one date partition of CSV objects into Parquet with Apache
//! DataFusion, exactly once, accounting for every input row.
//!
//! The entry point is [`run::run`], which takes a [`task::Task`] and returns a [`task::Summary`].
//! The same library backs the Kubernetes Job binary `eventpipe-transformer` and the local runner
//! `eventpipe run`.

pub mod badrows;
pub mod cleanup;
pub mod credentials;
pub mod csv_decoder;
pub mod csv_source;
pub mod discovery;
pub mod engine;
pub mod error;
pub mod fingerprint;
pub mod header;
pub mod latest_map;
pub mod layout;
pub mod manifest;
pub mod mode;
pub mod resuming;
pub mod row_count;
pub mod run;
pub mod sandbox;
pub mod schema;
pub mod single_phase;
pub mod spec;
pub mod storage;
pub mod task;
#[cfg(test)]
mod test_store;
pub mod timestamps;
pub mod validate;
pub mod values;
pub mod writer;

pub use error::{Error, Result};
