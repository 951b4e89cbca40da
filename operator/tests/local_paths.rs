//! `eventpipe run` with the local paths people type: relative ones with `..`, symbolic links, and
//! locations that overlap, which are refused before anything is read or written.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn example(relative: &str) -> String {
    workspace().join(relative).to_str().unwrap().to_string()
}

/// Runs `eventpipe run` on the typed-conversion example from `dir`.
fn run_in(dir: &Path, args: &[&str]) -> Output {
    let manifest = example("examples/user-events-parquet.yaml");
    Command::new(env!("CARGO_BIN_EXE_eventpipe"))
        .args(["run", "-f", &manifest, "--output", "json"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// The partitions of a successful JSON run.
fn partitions(output: &Output) -> Vec<serde_json::Value> {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let outcome: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    outcome["partitions"].as_array().unwrap().clone()
}

/// The one error line of a refused run.
fn refusal(output: &Output) -> String {
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr.clone()).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr
}

#[test]
fn a_relative_sink_with_dot_dot_is_resolved_against_the_working_directory() {
    let root = tempfile::tempdir().unwrap();
    let work = root.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let source = example("examples/data");

    let first = partitions(&run_in(&work, &["--source", &source, "--sink", "../out"]));
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|p| p["skipped"] == false && p["rowsWritten"].as_u64() > Some(0)), "{first:?}");
    assert!(root.path().join("out/year=2026/month=11/day=24/_manifest.json").is_file());
    assert!(!work.join("out").exists());

    // Another spelling of the same directory writes there too. (The spec hash covers the URL as
    // written, so the partitions are converted again rather than skipped.)
    let again = partitions(&run_in(&work, &["--source", &source, "--sink", "../work/./../out/"]));
    for partition in &again {
        let file = partition["files"][0].as_str().unwrap();
        assert!(root.path().join("out").join(file).is_file(), "{partition}");
    }
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 2, "only work/ and out/");
}

#[test]
fn overlapping_locations_are_refused_naming_both() {
    let root = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(root.path()).unwrap();
    std::fs::create_dir(root.join("raw")).unwrap();
    std::os::unix::fs::symlink(root.join("raw"), root.join("link")).unwrap();
    let url = |relative: &str| format!("file://{}/", root.join(relative).display());

    let sink_in_source = refusal(&run_in(&root, &["--source", "raw", "--sink", "link/../link/out"]));
    let expected = format!("sink.url {} lies inside source.url {}", url("raw/out"), url("raw"));
    assert!(sink_in_source.contains(&expected), "{sink_in_source}");

    let rejected_is_source = refusal(&run_in(&root, &["--source", "link", "--sink", "out", "--rejected", "raw"]));
    let expected = format!("badRecords.url {} is the same location as source.url {}", url("raw"), url("raw"));
    assert!(rejected_is_source.contains(&expected), "{rejected_is_source}");

    let rejected_in_sink = refusal(&run_in(&root, &["--source", "raw", "--sink", "out", "--rejected", "out/bad"]));
    let expected = format!("badRecords.url {} lies inside sink.url {}", url("out/bad"), url("out"));
    assert!(rejected_in_sink.contains(&expected), "{rejected_in_sink}");
    assert!(!root.join("out").exists(), "nothing is written");
}
