//! One forwarded port: connections accepted on a listener inside a pod's network are relayed to
//! the same port on the host's 127.0.0.1 (the API server, a test's S3 server), as a Service or
//! a node-local address would route them out of the pod on a real cluster.

use std::{net::Ipv4Addr, time::Duration};

use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    task::{AbortHandle, JoinSet},
};

/// Starts relaying what `listener` accepts to the host's `127.0.0.1:port`; abort the returned
/// handle to close the listener and every relayed connection.
pub(super) fn spawn(listener: TcpListener, port: u16) -> AbortHandle {
    tokio::spawn(serve(listener, port)).abort_handle()
}

async fn serve(listener: TcpListener, port: u16) {
    // Dropped with this task, which aborts the connections.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((inside, _)) => {
                    connections.spawn(relay(inside, port));
                }
                Err(e) => {
                    eprintln!("pod-runner: accepting on forwarded port {port}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next() => {}
        }
    }
}

async fn relay(mut inside: TcpStream, port: u16) {
    match TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await {
        Ok(mut outside) => {
            let _ = copy_bidirectional(&mut inside, &mut outside).await;
        }
        // Nothing listens on the host: reset the pod's connection, the nearest thing to the
        // refusal it would get from the host itself.
        Err(_) => {
            let _ = inside.set_zero_linger();
        }
    }
}
