//! Network namespaces, as a container runtime makes one per pod sandbox: a new namespace with its
//! loopback interface up, held by a file descriptor (the kernel keeps a namespace while a
//! descriptor, a socket or a process refers to it, so nothing is left to clean up), and work done
//! inside it on a short-lived thread of its own — a socket belongs to the namespace it was created
//! in, wherever it is used afterwards.

use std::{
    fs::File,
    io,
    net::UdpSocket,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd},
};

use tokio::sync::oneshot;

use super::process::check;

/// A network namespace; it lives at least as long as this value.
pub(super) struct NetNs {
    fd: OwnedFd,
}

impl NetNs {
    /// A new network namespace whose only interface, `lo` (127.0.0.1), is up.
    pub(super) async fn create() -> io::Result<NetNs> {
        on_new_thread(|| {
            // SAFETY: unshare(2) only moves this (short-lived) thread into a new namespace.
            check(unsafe { libc::unshare(libc::CLONE_NEWNET) })?;
            let fd = File::open("/proc/thread-self/ns/net")?.into();
            set_loopback_up()?;
            Ok(NetNs { fd })
        })
        .await
    }

    /// Runs `work` on a new thread that joined this namespace, e.g. to create sockets in it.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let fd = self.fd.try_clone()?;
        on_new_thread(move || {
            join(fd.as_raw_fd())?;
            work()
        })
        .await
    }

    /// The namespace's descriptor, for [`join`].
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Moves the calling thread into the network namespace `fd`. Async-signal-safe: a container
/// process calls it between fork and exec.
pub(super) fn join(fd: RawFd) -> io::Result<()> {
    // SAFETY: setns(2) has no memory-safety preconditions.
    check(unsafe { libc::setns(fd, libc::CLONE_NEWNET) })
}

/// Runs `work` on a thread of its own, which ends with it: whatever namespace it joined is never
/// seen by another task.
async fn on_new_thread<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let (done, result) = oneshot::channel();
    std::thread::Builder::new()
        .name("pod-runner-netns".into())
        .spawn(move || {
            let _ = done.send(work());
        })?;
    result
        .await
        .map_err(|_| io::Error::other("a network namespace thread panicked"))?
}

/// `ip link set lo up` for the calling thread's network namespace.
fn set_loopback_up() -> io::Result<()> {
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    // SAFETY: an all-zero `ifreq` is valid (a C struct of integers and arrays).
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (to, from) in request.ifr_name.iter_mut().zip(b"lo") {
        *to = *from as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS and SIOCSIFFLAGS read and write the `ifreq` passed, which outlives
    // the calls; its flags member is the one both use.
    unsafe {
        check(libc::ioctl(
            socket.as_raw_fd(),
            libc::SIOCGIFFLAGS as _,
            &mut request,
        ))?;
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        check(libc::ioctl(
            socket.as_raw_fd(),
            libc::SIOCSIFFLAGS as _,
            &request,
        ))
    }
}
