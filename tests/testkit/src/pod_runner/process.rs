//! The container runtime's part: start a container's process in its pod's network namespace and
//! a mount namespace of its own, with the pod's volumes and its termination-message file
//! bind-mounted where the pod spec puts them, inside its memory cgroup, in a process group of its
//! own, and tied to the life of the runner; and signal it.

use std::{
    ffi::CString,
    fs::{self, File},
    io,
    os::{
        fd::{AsRawFd, BorrowedFd, RawFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
};

use tokio::process::{Child, Command};

use super::netns;

/// A host path to bind-mount at `target` inside the container's mount namespace.
#[derive(Clone, Debug)]
pub(super) struct BindMount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// One container process to start.
pub(super) struct Launch<'a> {
    /// Program and arguments; the program is looked up in the `PATH` of `env`.
    pub argv: &'a [String],
    pub env: &'a [(String, String)],
    pub working_dir: &'a str,
    pub mounts: &'a [BindMount],
    /// Receives stdout and stderr.
    pub log: &'a Path,
    /// `cgroup.procs` of the container's memory cgroup.
    pub cgroup_procs: Option<File>,
    /// The pod's network namespace; `None`: the host's.
    pub netns: Option<BorrowedFd<'a>>,
}

/// Starts the process. An error is what the runtime reports as a `StartError`: a missing
/// program, an environment too large for `execve` (`E2BIG`), a mount that failed.
pub(super) fn spawn(launch: Launch<'_>) -> io::Result<Child> {
    let Some((program, args)) = launch.argv.split_first() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no command specified",
        ));
    };
    for mount in launch.mounts {
        create_mount_point(mount)?;
    }
    let log = File::options().create(true).append(true).open(launch.log)?;
    let setup = Setup {
        mounts: launch
            .mounts
            .iter()
            .map(|m| Ok((c_path(&m.source)?, c_path(&m.target)?, m.read_only)))
            .collect::<io::Result<_>>()?,
        working_dir: CString::new(launch.working_dir)?,
        cgroup_procs: launch.cgroup_procs,
        netns: launch.netns.map(|fd| fd.as_raw_fd()),
        runner: std::process::id(),
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group, so that the container's children can be killed with it.
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: `Setup::enter` runs between fork and exec and only makes async-signal-safe system
    // calls on data prepared before the fork; it allocates nothing.
    unsafe {
        command.pre_exec(move || setup.enter());
    }
    command.spawn()
}

/// What the child does between fork and exec.
struct Setup {
    mounts: Vec<(CString, CString, bool)>,
    working_dir: CString,
    cgroup_procs: Option<File>,
    /// Borrowed from the pod's network, which outlives `spawn`; the child inherits it at fork.
    netns: Option<RawFd>,
    runner: u32,
}

impl Setup {
    fn enter(&self) -> io::Result<()> {
        // SAFETY (whole block): plain system calls on NUL-terminated strings owned by `self`.
        unsafe {
            // Die with the runner however it ends (the kernel sends SIGKILL when the thread
            // that forked us exits), and do not outlive a runner that died before this line.
            check(libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
            ))?;
            if libc::getppid() as u32 != self.runner {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            if let Some(procs) = &self.cgroup_procs {
                // "0" is the writing process: move into the container's memory cgroup.
                let written = libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1);
                check(written as libc::c_int)?;
            }
            if let Some(fd) = self.netns {
                netns::join(fd)?;
            }
            check(libc::unshare(libc::CLONE_NEWNS))?;
            // Mounts made from here on stay in this namespace.
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            for (source, target, read_only) in &self.mounts {
                let flags = libc::MS_BIND | libc::MS_REC;
                check(libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    flags,
                    std::ptr::null(),
                ))?;
                if *read_only {
                    check(libc::mount(
                        std::ptr::null(),
                        target.as_ptr(),
                        std::ptr::null(),
                        flags | libc::MS_REMOUNT | libc::MS_RDONLY,
                        std::ptr::null(),
                    ))?;
                }
            }
            check(libc::chdir(self.working_dir.as_ptr()))
        }
    }
}

/// The error of a system call that returned -1 (errno), or success.
pub(super) fn check(result: libc::c_int) -> io::Result<()> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    Ok(CString::new(path.as_os_str().as_bytes())?)
}

/// A bind mount needs something to mount over: an empty directory, or an empty file for a
/// file (the termination-message file, a `subPath` file). Created on the host where missing;
/// inside the container the mount hides it.
fn create_mount_point(mount: &BindMount) -> io::Result<()> {
    if mount.target.exists() {
        return Ok(());
    }
    if mount.source.is_dir() {
        return fs::create_dir_all(&mount.target);
    }
    if let Some(parent) = mount.target.parent() {
        fs::create_dir_all(parent)?;
    }
    match File::options()
        .write(true)
        .create_new(true)
        .open(&mount.target)
    {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// Sends `signal` to one process.
pub(super) fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}

/// SIGKILLs a container's whole process group (its process is the group leader).
pub(super) fn kill_group(pid: u32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
}

/// The exit code a container runtime reports: the process's own, or 128 + the signal that
/// killed it.
pub(super) fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}
