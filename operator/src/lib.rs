//! The eventpipe control plane: the `EventPipeline` custom resource, its controller and the
//! operator process around it, and the local runner that executes a pipeline manifest without a
//! cluster.

pub mod athena;
pub mod controller;
pub mod convert;
pub mod crd;
pub mod enforced;
pub mod lease;
pub mod local;
pub mod manifest_file;
pub mod metrics;
pub mod operator;
pub mod period;
pub mod pod_settings;
pub mod server;
