#![allow(dead_code)]
//! A TCP proxy that a test can cut and restore, to simulate a network outage between
//! the service and a server (RabbitMQ, PostgreSQL) without stopping the server.
//!
//! ```ignore
//! let proxy = TcpProxy::start("127.0.0.1:5672".parse()?).await;
//! let url = format!("amqp://guest:guest@{}/%2f", proxy.addr());
//! // ... connect through `url` ...
//! proxy.cut().await;      // every open connection is closed, new ones are refused
//! proxy.restore();        // new connections go through again
//! proxy.stall();          // a hang: connections stay open but no byte goes through
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct TcpProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: JoinHandle<()>,
}

struct Shared {
    upstream: SocketAddr,
    is_cut: AtomicBool,
    /// While true, nothing is forwarded: a server that hangs without closing anything.
    stalled: watch::Sender<bool>,
    /// Bumped by every cut; connection tasks end when they see it change.
    cuts: watch::Sender<u64>,
    connections: Mutex<Vec<JoinHandle<()>>>,
}

impl TcpProxy {
    /// Listens on 127.0.0.1 (a free port) and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy listener");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream,
            is_cut: AtomicBool::new(false),
            stalled: watch::channel(false).0,
            cuts: watch::channel(0).0,
            connections: Mutex::new(Vec::new()),
        });
        let accept_task = tokio::spawn(accept_loop(listener, shared.clone()));
        TcpProxy {
            addr,
            shared,
            accept_task,
        }
    }

    /// Where clients should connect instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every current connection (both sides see the socket close) and, until
    /// [`restore`](Self::restore), closes new connections as soon as they are accepted.
    /// Returns once the current connections are closed.
    pub async fn cut(&self) {
        self.shared.is_cut.store(true, Ordering::SeqCst);
        self.shared.cuts.send_modify(|n| *n += 1);
        let connections = std::mem::take(&mut *self.shared.connections.lock().unwrap());
        for connection in connections {
            let _ = connection.await;
        }
    }

    /// Lets new connections through again. Connections closed by [`cut`](Self::cut) stay
    /// closed; clients must reconnect.
    pub fn restore(&self) {
        self.shared.stalled.send_replace(false);
        self.shared.is_cut.store(false, Ordering::SeqCst);
    }

    /// Stops forwarding without closing anything: open connections stay open with their
    /// bytes held, new connections are accepted and never reach the upstream. To the
    /// client the server hangs. Ended by [`cut`](Self::cut) (which closes the stalled
    /// connections, whose streams cannot be trusted after a stall) and `restore`.
    pub fn stall(&self) {
        self.shared.stalled.send_replace(true);
    }

    pub fn is_cut(&self) -> bool {
        self.shared.is_cut.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        for connection in self.shared.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if shared.is_cut.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let cuts = shared.cuts.subscribe();
        let stalled = shared.stalled.subscribe();
        let upstream = shared.upstream;
        let task = tokio::spawn(forward(client, upstream, cuts, stalled));
        let mut connections = shared.connections.lock().unwrap();
        connections.retain(|c| !c.is_finished());
        connections.push(task);
    }
}

async fn forward(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut cuts: watch::Receiver<u64>,
    mut stalled: watch::Receiver<bool>,
) {
    // Accepted during a stall: held, never connected, until the next cut.
    if *stalled.borrow() {
        let _ = cuts.changed().await;
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    // Both sockets are dropped when this returns, which closes them.
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
        _ = cuts.changed() => return,
        _ = stalled.wait_for(|stalled| *stalled) => {}
    }
    // Stalled: keep both sockets open, forward nothing, until the next cut.
    let _ = cuts.changed().await;
    drop((client, server));
}
