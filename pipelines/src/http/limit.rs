//! A bound on the HTTP connections open at once: past it, a new connection is answered 503 and
//! closed, so a client that opens connections without end cannot take the file descriptors the
//! sinks write with (psql has the same bound, `server.max_connections`). Refusals are bounded
//! too: as many are told 503 at once as there are slots, and past that a connection is closed
//! unanswered, since a refusal keeps its descriptor until the client has read the answer.
//!
//! Written here because neither axum nor tower has it: `axum::serve` accepts without limit,
//! and tower's `ConcurrencyLimit` counts requests, not the idle keep-alive and event-stream
//! connections that hold descriptors between requests.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use vigil_engine::tally::Tally;

/// What a connection past the bound is told before it is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Type: text/plain\r\n\
Content-Length: 58\r\nConnection: close\r\n\r\nToo many connections to this vigil; retry in a few seconds.";

/// A listener that hands out at most `slots` connections at a time.
pub struct Limited {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    /// Refusals being told 503 (each holds a descriptor for up to 3 s).
    refusing: Arc<Semaphore>,
    most: usize,
    /// Refusals, logged once per 10 s whatever their rate.
    refused: Tally,
}

impl Limited {
    /// `inner` bounded to `most` connections open at once.
    pub fn new(inner: TcpListener, most: usize) -> Self {
        let most = most.max(1);
        Self {
            inner,
            slots: Arc::new(Semaphore::new(most)),
            refusing: Arc::new(Semaphore::new(most)),
            most,
            refused: Tally::new(Duration::from_secs(10)),
        }
    }
}

/// A connection holding its slot: the slot is freed when the connection is dropped.
pub struct Slotted {
    io: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl Listener for Limited {
    type Io = Slotted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Slotted, SocketAddr) {
        loop {
            let (mut io, addr) = Listener::accept(&mut self.inner).await;
            match Arc::clone(&self.slots).try_acquire_owned() {
                Ok(slot) => return (Slotted { io, _slot: slot }, addr),
                Err(_) => {
                    if let Some(refused) = self.refused.count() {
                        tracing::warn!(
                            "HTTP: {} connections open, the most allowed (server.http_max_connections); {refused} refused so far, the last from {addr}",
                            self.most,
                        );
                    }
                    // Past the refusals in flight, closed unanswered: the descriptor goes now.
                    let Ok(telling) = Arc::clone(&self.refusing).try_acquire_owned() else {
                        drop(io);
                        continue;
                    };
                    // Told and closed off the accept loop, with a bound on how long a client
                    // that does not read can keep the descriptor.
                    tokio::spawn(async move {
                        let _telling = telling;
                        let _ = tokio::time::timeout(Duration::from_secs(1), io.write_all(BUSY)).await;
                        let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
                        // What the client sent is read before the close, or the close would
                        // reset the connection and the answer could be lost.
                        let mut sink = [0u8; 1024];
                        let _ = tokio::time::timeout(Duration::from_secs(1), async {
                            while let Ok(1..) = io.read(&mut sink).await {}
                        })
                        .await;
                    });
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl AsyncRead for Slotted {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Slotted {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::get;

    async fn get_status(addr: SocketAddr, stream: Option<TcpStream>) -> (String, TcpStream) {
        let mut s = match stream {
            Some(s) => s,
            None => TcpStream::connect(addr).await.unwrap(),
        };
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = vec![0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        (text.lines().next().unwrap_or("").to_owned(), s)
    }

    /// A server answering "ok", bounded to `most` connections; its address.
    async fn serve_bounded(most: usize) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", get(|| async { "ok" }));
        tokio::spawn(async move {
            axum::serve(Limited::new(listener, most), app).await.unwrap();
        });
        addr
    }

    #[tokio::test]
    async fn connections_past_the_bound_are_told_503_and_a_closed_one_frees_its_slot() {
        let addr = serve_bounded(2).await;
        // Two keep-alive connections hold both slots, idle between requests.
        let (a, first) = get_status(addr, None).await;
        let (b, second) = get_status(addr, None).await;
        assert_eq!((a.as_str(), b.as_str()), ("HTTP/1.1 200 OK", "HTTP/1.1 200 OK"));
        // A third is told why, whatever it asks.
        let (c, _) = get_status(addr, None).await;
        assert_eq!(c, "HTTP/1.1 503 Service Unavailable");
        // The held connections still work.
        let (again, second) = get_status(addr, Some(second)).await;
        assert_eq!(again, "HTTP/1.1 200 OK");
        // Closing one frees its slot for a newcomer (the server sees the close asynchronously).
        drop(first);
        let mut answer = String::new();
        for _ in 0..50 {
            answer = get_status(addr, None).await.0;
            if answer == "HTTP/1.1 200 OK" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(answer, "HTTP/1.1 200 OK");
        drop(second);
    }

    /// Descriptors this process has open (Linux).
    fn open_descriptors() -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }

    #[tokio::test]
    async fn a_storm_of_idle_connections_past_the_bound_holds_few_descriptors() {
        let addr = serve_bounded(2).await;
        let (a, held) = get_status(addr, None).await;
        assert_eq!(a, "HTTP/1.1 200 OK");
        // 200 clients connect and neither send nor read nor close: each refusal told 503 would
        // keep its descriptor until the client reads, a second or more.
        let before = open_descriptors();
        let mut idle = Vec::new();
        for _ in 0..200 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The server's side: the one slot left, the refusals in flight (2), a few in passing;
        // with room for the other tests of this process opening and closing theirs meanwhile
        // (unbounded, the refusals held 193).
        let server_side = open_descriptors() as i64 - before as i64 - idle.len() as i64;
        assert!(server_side <= 40, "{server_side} descriptors held for 200 idle connections");
        drop(idle);
        drop(held);
    }
}
