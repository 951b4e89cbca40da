//! Memory cgroups, as the kubelet gives every container one: a child of this process's own memory
//! cgroup per runner, and below it one per container instance with the container's memory limit.
//! Over the limit the kernel OOM-kills the process, and the cgroup's `oom_kill` counter says so.
//! Works with cgroup v1 (`memory.limit_in_bytes`) and v2 (`memory.max`).

use std::{
    fs::{self, File},
    io,
    path::{Path, PathBuf},
    sync::OnceLock,
    time::{Duration, Instant},
};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Version {
    V1,
    V2,
}

/// The memory cgroup directory this process runs in, if it can be found.
fn own() -> Option<(PathBuf, Version)> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let path = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "memory") {
            return Some((Path::new("/sys/fs/cgroup/memory").join(path), Version::V1));
        }
        let unified = Path::new("/sys/fs/cgroup");
        if controllers.is_empty() && unified.join("cgroup.controllers").exists() {
            return Some((unified.join(path), Version::V2));
        }
    }
    None
}

/// Whether containers can get memory limits here: a memory cgroup can be created below this
/// process's own one (needs root, and on cgroup v2 a parent that delegates the memory
/// controller).
pub(super) fn supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let probe = format!("{}probe", super::leftover_prefix());
        match Group::create_below_own(&probe) {
            Ok(Some(group)) => {
                let ok = group.child("probe", Some(1 << 30)).is_ok();
                group.remove();
                ok
            }
            _ => false,
        }
    })
}

/// A memory cgroup directory; removed by [`Group::remove`].
#[derive(Debug)]
pub(super) struct Group {
    dir: PathBuf,
    version: Version,
}

impl Group {
    /// A new child of this process's own memory cgroup, `None` where memory cgroups cannot be
    /// used.
    pub(super) fn create_below_own(name: &str) -> io::Result<Option<Group>> {
        let Some((parent, version)) = own() else {
            return Ok(None);
        };
        remove_stale(&parent, version);
        if version == Version::V2 {
            enable_memory_controller(&parent)?;
        }
        let group = Group {
            dir: parent.join(name),
            version,
        };
        fs::create_dir(&group.dir)?;
        if version == Version::V2 {
            // The runner's group only holds containers; let them have memory limits too.
            if let Err(e) = enable_memory_controller(&group.dir) {
                group.remove();
                return Err(e);
            }
        }
        Ok(Some(group))
    }

    /// A child group with an optional memory limit in bytes.
    pub(super) fn child(&self, name: &str, limit: Option<u64>) -> io::Result<Group> {
        let child = Group {
            dir: self.dir.join(name),
            version: self.version,
        };
        fs::create_dir(&child.dir)?;
        if let Some(limit) = limit
            && let Err(e) = child.set_limit(limit)
        {
            child.remove();
            return Err(e);
        }
        Ok(child)
    }

    fn set_limit(&self, limit: u64) -> io::Result<()> {
        let limit = limit.to_string();
        match self.version {
            Version::V1 => {
                fs::write(self.dir.join("memory.limit_in_bytes"), &limit)?;
                // A node runs without swap (the kubelet insists on it): keep the container
                // from swapping instead of being OOM-killed where the machine has swap.
                let memsw = self.dir.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    fs::write(memsw, &limit)?;
                }
            }
            Version::V2 => {
                fs::write(self.dir.join("memory.max"), &limit)?;
                let swap = self.dir.join("memory.swap.max");
                if swap.exists() {
                    fs::write(swap, "0")?;
                }
            }
        }
        Ok(())
    }

    /// `cgroup.procs` opened for writing: writing "0" moves the writer into the group.
    pub(super) fn procs_file(&self) -> io::Result<File> {
        File::options()
            .write(true)
            .open(self.dir.join("cgroup.procs"))
    }

    /// Whether the kernel OOM-killed a process of this group.
    pub(super) fn oom_killed(&self) -> bool {
        let file = match self.version {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        };
        fs::read_to_string(self.dir.join(file))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.strip_prefix("oom_kill "))
            .any(|count| count.trim().parse::<u64>().is_ok_and(|n| n > 0))
    }

    /// SIGKILLs every process left in the group and its children, then removes them; gives up
    /// (leaving the directory) if processes do not go away within a few seconds.
    pub(super) fn remove(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            self.kill_all();
            match remove_tree(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => {
                    eprintln!(
                        "pod-runner: cannot remove cgroup {}: {e}",
                        self.dir.display()
                    );
                    return;
                }
            }
        }
    }

    fn kill_all(&self) {
        let mut dirs = vec![self.dir.clone()];
        while let Some(dir) = dirs.pop() {
            let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            dirs.extend(subdirectories(&dir));
        }
    }
}

/// Removes the groups of runners whose process is gone: a test binary killed with SIGKILL
/// cannot clean up (its containers die with it, their cgroups stay). Their names end in the
/// runner's PID (see [`super::leftover_of_dead_process`]).
fn remove_stale(parent: &Path, version: Version) {
    for dir in subdirectories(parent) {
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        if super::leftover_of_dead_process(&name) {
            Group { dir, version }.remove();
        }
    }
}

/// Removes a cgroup and its descendants, deepest first (cgroup directories are removed with
/// rmdir; their files are virtual).
fn remove_tree(dir: &Path) -> io::Result<()> {
    for child in subdirectories(dir) {
        remove_tree(&child)?;
    }
    fs::remove_dir(dir)
}

fn subdirectories(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

/// cgroup v2: children get a memory controller only if the parent lists it in
/// `cgroup.subtree_control`.
fn enable_memory_controller(dir: &Path) -> io::Result<()> {
    let enabled = fs::read_to_string(dir.join("cgroup.subtree_control"))?;
    if enabled.split_whitespace().any(|c| c == "memory") {
        return Ok(());
    }
    fs::write(dir.join("cgroup.subtree_control"), "+memory")
}
