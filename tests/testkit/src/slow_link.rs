//! A TCP proxy that plays a slow or broken network between a client and a server on 127.0.0.1:
//! it throttles what the server sends, and can stall or cut one connection once it has carried a
//! given number of response bytes — a large object's body, not the small answers around it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What happens to the first connection whose responses pass `after_bytes`.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Nothing: every connection is only throttled.
    None,
    /// The connection stops carrying data, without closing, until the client gives up on it.
    Stall { after_bytes: usize },
    /// The connection is closed in the middle of the response.
    Cut { after_bytes: usize },
}

/// How the proxy treats the server's responses.
#[derive(Clone, Copy, Debug)]
pub struct LinkSettings {
    /// Bytes per second from the server to the client, per connection.
    pub bytes_per_second: usize,
    /// The fault played once.
    pub fault: Fault,
}

/// A running proxy; it stops when dropped.
pub struct SlowLink {
    address: SocketAddr,
    faults_played: Arc<AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
}

impl SlowLink {
    /// Starts a proxy to `upstream` (e.g. `127.0.0.1:9000`) on a free port.
    pub async fn start(upstream: SocketAddr, settings: LinkSettings) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("binding the proxy port")?;
        let address = listener.local_addr()?;
        let faults_played = Arc::new(AtomicUsize::new(0));
        let fault_pending = Arc::new(AtomicBool::new(!matches!(settings.fault, Fault::None)));
        let played = Arc::clone(&faults_played);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (pending, played) = (Arc::clone(&fault_pending), Arc::clone(&played));
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        carry(client, server, settings, pending, played).await;
                    }
                });
            }
        });
        Ok(Self { address, faults_played, accept })
    }

    /// The proxy's endpoint, `http://127.0.0.1:port`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// How many times the fault was played (0 or 1).
    pub fn faults_played(&self) -> usize {
        self.faults_played.load(Ordering::SeqCst)
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Carries one connection: requests unchanged, responses throttled in chunks of a tenth of a
/// second's allowance, and the fault played when this connection is the first to pass its mark.
async fn carry(client: TcpStream, server: TcpStream, settings: LinkSettings, pending: Arc<AtomicBool>, played: Arc<AtomicUsize>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let requests = tokio::spawn(async move { tokio::io::copy(&mut client_read, &mut server_write).await });
    let chunk = (settings.bytes_per_second / 10).max(1);
    let mut buffer = vec![0; chunk];
    let mut carried = 0;
    loop {
        let read = match server_read.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        carried += read;
        let fault_mark = match settings.fault {
            Fault::Stall { after_bytes } | Fault::Cut { after_bytes } => Some(after_bytes),
            Fault::None => None,
        };
        if fault_mark.is_some_and(|mark| carried > mark) && pending.swap(false, Ordering::SeqCst) {
            played.fetch_add(1, Ordering::SeqCst);
            if let Fault::Stall { .. } = settings.fault {
                // Hold the connection open and silent until the client closes it.
                let _ = requests.await;
            }
            break;
        }
        if client_write.write_all(&buffer[..read]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = client_write.shutdown().await;
}
