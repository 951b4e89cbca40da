//! Harnesses that start real servers for integration tests: S3-compatible object stores (`s3s-fs`,
//! and SeaweedFS where identities and policies matter), an SQS-compatible queue server (moto's), and
//! a Kubernetes control plane (`etcd` +
//! `kube-apiserver`), all on 127.0.0.1, and
//! a pod runner that plays the node for that control plane (binds pods, runs their containers as
//! local processes and reports their status like the kubelet).
//! The binaries are installed by the scripts in `scripts/`; a missing binary is an error that names
//! the script to run, and under `CI=true` nothing is ever skipped.

pub mod kube_env;
pub mod pod_runner;
pub mod s3;
pub mod seaweedfs;
pub mod slow_link;
pub mod sqs;
pub mod supervisor;
