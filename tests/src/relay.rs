//! A TCP relay a test puts between opush and a real service (Cassandra,
//! Dovecot, Postfix) to make that service slow on demand: it forwards
//! every byte both ways unchanged, and holds them when told —
//! [`Relay::stall`] (both ways: the service looks unreachable, its
//! connections stay open), [`Relay::hold_requests`] (the client's next
//! bytes wait), [`Relay::hold_request_containing`] (the first client
//! bytes containing a needle wait, e.g. an IMAP `APPEND`) — until
//! [`Relay::release`]. [`Relay::until_held`] waits for client bytes to be
//! held. Connections made meanwhile are accepted and held the same way.
//!
//! Nothing is faked: the service behind it is the real one; only the time
//! its bytes take changes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

#[derive(Debug)]
struct Ctl {
    /// Client to service bytes flow (false: held).
    up: watch::Sender<bool>,
    /// Service to client bytes flow (false: held).
    down: watch::Sender<bool>,
    /// Client bytes containing this are held (once: the needle is then
    /// cleared).
    needle: Mutex<Option<Vec<u8>>>,
    /// Notified (one permit kept) when client bytes are held.
    held: Notify,
}

/// A relay on a free loopback port in front of one service.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    ctl: Arc<Ctl>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Relay {
    /// Starts relaying to `upstream` (everything flows).
    pub async fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("relay: bind a loopback port");
        let addr = listener.local_addr().expect("relay: its address");
        let ctl = Arc::new(Ctl {
            up: watch::channel(true).0,
            down: watch::channel(true).0,
            needle: Mutex::new(None),
            held: Notify::new(),
        });
        let c = ctl.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(service) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = service.set_nodelay(true);
                let (client_r, client_w) = client.into_split();
                let (service_r, service_w) = service.into_split();
                tokio::spawn(pump(client_r, service_w, c.clone(), true));
                tokio::spawn(pump(service_r, client_w, c.clone(), false));
            }
        });
        Relay { addr, ctl, accept }
    }

    /// Where opush connects instead of the service.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Holds the bytes both ways from now on.
    pub fn stall(&self) {
        self.ctl.up.send_replace(false);
        self.ctl.down.send_replace(false);
    }

    /// Holds the client's bytes from now on.
    pub fn hold_requests(&self) {
        self.ctl.up.send_replace(false);
    }

    /// Holds, from the first client bytes containing `needle` on, the
    /// client's bytes.
    pub fn hold_request_containing(&self, needle: &[u8]) {
        *self.ctl.needle.lock().unwrap_or_else(|e| e.into_inner()) = Some(needle.to_vec());
    }

    /// Lets everything flow again (what was held first).
    pub fn release(&self) {
        self.ctl.up.send_replace(true);
        self.ctl.down.send_replace(true);
    }

    /// Waits until client bytes are held (returns at once when some were
    /// held since the last call).
    pub async fn until_held(&self) {
        self.ctl.held.notified().await;
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    ctl: Arc<Ctl>,
    up: bool,
) {
    let mut gate = if up {
        ctl.up.subscribe()
    } else {
        ctl.down.subscribe()
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        if up {
            let mut needle = ctl.needle.lock().unwrap_or_else(|e| e.into_inner());
            let hit = needle
                .as_ref()
                .is_some_and(|w| !w.is_empty() && chunk.windows(w.len()).any(|c| c == &w[..]));
            if hit {
                *needle = None;
                ctl.up.send_replace(false);
            }
        }
        if !*gate.borrow_and_update() {
            if up {
                ctl.held.notify_one();
            }
            if gate.wait_for(|open| *open).await.is_err() {
                break;
            }
        }
        if to.write_all(chunk).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
