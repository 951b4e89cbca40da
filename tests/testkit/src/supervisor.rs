//! Server processes that live exactly as long as the test binary. Each runs under a supervisor
//! script that stops its servers when its stdin reaches end-of-file. This process holds the write
//! end: at exit an `atexit` hook closes it and waits (bounded) for the supervisors to finish; if the
//! test binary is killed, the kernel closes it instead.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

struct Supervised {
    child: Child,
    stdin: Option<ChildStdin>,
}

static RUNNING: Mutex<Vec<Supervised>> = Mutex::new(Vec::new());
static HOOK: Once = Once::new();

unsafe extern "C" {
    /// C library `atexit(3)`: runs `callback` when the process exits through `exit()`, which is
    /// how a Rust test binary ends (also when tests failed).
    fn atexit(callback: extern "C" fn()) -> std::ffi::c_int;
}

/// Starts a supervisor script that prints `ready <what>` on stdout once its servers answer, waits
/// for that line, keeps the supervisor running until this process exits, and returns `<what>`.
/// `name` says in errors what failed to start.
pub fn start_until_ready(mut command: Command, name: &str) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let mut ready = None;
    for line in BufReader::new(stdout).lines() {
        if let Some(what) = line.with_context(|| format!("reading the output of {name}"))?.strip_prefix("ready ") {
            ready = Some(what.trim().to_string());
            break;
        }
    }
    // The stdout pipe is closed here; the script prints nothing more on it.
    let Some(ready) = ready else {
        let status = child.wait().ok();
        anyhow::bail!("{name} did not start (it exited: {status:?}); see its messages above");
    };
    keep_until_exit(child);
    Ok(ready)
}

/// Keeps a started supervisor (spawned with a piped stdin) running until this process exits.
pub fn keep_until_exit(mut child: Child) {
    let stdin = child.stdin.take();
    assert!(stdin.is_some(), "a supervisor is spawned with a piped stdin");
    HOOK.call_once(|| {
        // SAFETY: registering a plain `extern "C" fn` that never unwinds.
        unsafe {
            atexit(stop_all_at_exit);
        }
    });
    RUNNING.lock().unwrap_or_else(|e| e.into_inner()).push(Supervised { child, stdin });
}

/// Closes every supervisor's stdin, then waits up to 10 s for them to stop their servers.
extern "C" fn stop_all_at_exit() {
    let Ok(mut running) = RUNNING.try_lock() else { return };
    for supervised in running.iter_mut() {
        drop(supervised.stdin.take());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for supervised in running.iter_mut() {
        while Instant::now() < deadline && matches!(supervised.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
