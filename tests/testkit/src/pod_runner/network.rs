//! A pod's network, as the CNI plugin sets it up for a sandbox: a network namespace of its own
//! (the host's for `hostNetwork` pods) in which the runner's forwarded host ports answer on
//! 127.0.0.1; and TCP connections made from inside it, for probes and
//! [`super::PodRunner::http_get`]. Dropping it closes the forwards.

use std::net::{Ipv4Addr, SocketAddr};

use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    task::AbortHandle,
};

use super::{forward, netns::NetNs};

/// The network all containers of a pod share.
pub(super) struct PodNetwork {
    /// `None`: the host's network.
    netns: Option<NetNs>,
    forwards: Vec<AbortHandle>,
}

impl PodNetwork {
    /// The host's network, for `hostNetwork: true` pods.
    pub(super) fn host() -> PodNetwork {
        PodNetwork {
            netns: None,
            forwards: Vec::new(),
        }
    }

    /// A network namespace of the pod's own, where `127.0.0.1:P` reaches the host's
    /// `127.0.0.1:P` for each of `forwarded_ports`.
    pub(super) async fn isolated(forwarded_ports: &[u16]) -> std::io::Result<PodNetwork> {
        let netns = NetNs::create().await?;
        let ports = forwarded_ports.to_vec();
        let listeners = netns
            .run(move || {
                let bind = |port: u16| {
                    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
                    listener.set_nonblocking(true)?;
                    Ok((listener, port))
                };
                ports
                    .into_iter()
                    .map(bind)
                    .collect::<std::io::Result<Vec<_>>>()
            })
            .await?;
        let mut network = PodNetwork {
            netns: Some(netns),
            forwards: Vec::new(),
        };
        for (listener, port) in listeners {
            let listener = TcpListener::from_std(listener)?;
            network.forwards.push(forward::spawn(listener, port));
        }
        Ok(network)
    }

    /// The namespace the pod's containers join; `None` for the host's network.
    pub(super) fn netns(&self) -> Option<&NetNs> {
        self.netns.as_ref()
    }

    /// A TCP connection to `address` from inside the pod's network.
    pub(super) async fn connect(&self, address: SocketAddr) -> std::io::Result<TcpStream> {
        let new_socket = move || match address {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        };
        let socket = match &self.netns {
            Some(netns) => netns.run(new_socket).await?,
            None => new_socket()?,
        };
        socket.connect(address).await
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        for forward in &self.forwards {
            forward.abort();
        }
    }
}
