//! eventpipe's data plane: turns one date partition of CSV objects into Parquet with Apache
//! DataFusion, exactly once, accounting for every input row.
//!
//! The entry point is [`run::run`], which takes a [`task::Task`] and returns a [`task::Summary`].
//! The same library backs the Kubernetes Job binary `eventpipe-transformer` and the local runner
//! `eventpipe run`.

// What a partition passes through, in order: the spec and its task, where its objects are
// (`store`), how they are read (`csv`), what the transform makes of them (`query`), how the
// output is committed (`commit`); `run` is the protocol over them all.
pub mod commit;
pub mod csv;
pub mod error;
pub mod event_time;
pub mod layout;
pub mod query;
pub mod run;
pub mod spec;
pub mod store;
pub mod task;
pub mod validate;

pub use error::{Error, Result};
