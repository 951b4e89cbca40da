//! The termination message of an exited container, read as the kubelet reads it
//! (`getTerminationMessage` / `readLastStringFromContainerLogs` in kuberuntime): the last 4096
//! bytes of the termination-message file; with `FallbackToLogsOnError`, a failed container and an
//! empty file, the last 80 lines of its log, at most their last 2048 bytes.

use std::{
    fs::File,
    io::{self, Read, Seek, SeekFrom},
    path::Path,
};

const MAX_FILE_BYTES: u64 = 4096;
const MAX_LOG_LINES: usize = 80;
const MAX_LOG_BYTES: usize = 2048;

/// The message for `terminated.message`, `None` when there is nothing to say.
pub(super) fn message(
    message_file: &Path,
    fallback_to_logs: bool,
    exit_code: i32,
    log_file: &Path,
) -> Option<String> {
    let from_file = match read_tail(message_file, MAX_FILE_BYTES) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Some(format!(
                "Error on reading termination log {}: {e}",
                message_file.display()
            ));
        }
    };
    let bytes = if from_file.is_empty() && fallback_to_logs && exit_code != 0 {
        match read_tail(log_file, u64::MAX) {
            Ok(log) => log_tail(&log),
            Err(e) => {
                return Some(format!(
                    "Error on reading termination message from logs: {e}"
                ));
            }
        }
    } else {
        from_file
    };
    (!bytes.is_empty()).then(|| String::from_utf8_lossy(&bytes).into_owned())
}

/// The last `MAX_LOG_LINES` lines of a log, then at most its last `MAX_LOG_BYTES` bytes.
fn log_tail(log: &[u8]) -> Vec<u8> {
    // A final newline ends the last line rather than starting an empty one.
    let body = log.strip_suffix(b"\n").unwrap_or(log);
    let start = body
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, b)| **b == b'\n')
        .nth(MAX_LOG_LINES - 1)
        .map_or(0, |(i, _)| i + 1);
    let lines = &log[start..];
    lines[lines.len().saturating_sub(MAX_LOG_BYTES)..].to_vec()
}

fn read_tail(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(max)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_content_wins_and_is_capped_at_its_last_4096_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("termination-log");
        let log = dir.path().join("log");
        std::fs::write(&log, "log line\n").unwrap();
        std::fs::write(&file, "done").unwrap();
        assert_eq!(message(&file, true, 1, &log).as_deref(), Some("done"));

        let long = format!("{}{}", "a".repeat(100), "b".repeat(4096));
        std::fs::write(&file, long).unwrap();
        assert_eq!(message(&file, false, 0, &log), Some("b".repeat(4096)));
    }

    #[test]
    fn falls_back_to_the_log_only_on_error_with_an_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("termination-log");
        let log = dir.path().join("log");
        std::fs::write(&file, "").unwrap();
        let lines: String = (1..=100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, &lines).unwrap();

        assert_eq!(message(&file, true, 0, &log), None);
        assert_eq!(message(&file, false, 2, &log), None);
        let tail = message(&file, true, 2, &log).unwrap();
        assert!(tail.starts_with("line 21\n"), "{tail}");
        assert!(tail.ends_with("line 100\n"), "{tail}");
        assert_eq!(tail.lines().count(), 80);
    }

    #[test]
    fn log_fallback_keeps_the_last_2048_bytes() {
        let long_line = "x".repeat(5000) + "\nlast\n";
        let tail = log_tail(long_line.as_bytes());
        assert_eq!(tail.len(), 2048);
        assert!(tail.ends_with(b"x\nlast\n"));
    }

    #[test]
    fn a_missing_file_is_no_message() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert_eq!(message(&missing, false, 1, &missing), None);
    }
}
