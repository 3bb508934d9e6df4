//! Accepting connections within caps: at most so many at once, and so many per peer address;
//! a connection that does not send its first bytes in time is closed.

use futures::Stream;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use trellis_xds::LimitHits;

/// Caps on one listener's connections.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once from one peer address.
    pub max_per_peer: usize,
    /// How long a new connection may take to send its first `first_bytes` bytes (an HTTP/2
    /// client's preface is 24 bytes; an HTTP/1 request line is longer).
    pub first_bytes_timeout: Duration,
    /// See `first_bytes_timeout`.
    pub first_bytes: usize,
    /// How long a connection may stay without sending anything (none: no limit).
    pub idle_timeout: Option<Duration>,
}

impl ConnectionLimits {
    /// For an xDS (HTTP/2) listener: streams live long and quiet, so no idle limit.
    pub fn xds() -> ConnectionLimits {
        ConnectionLimits {
            max_connections: 20_000,
            max_per_peer: 1_000,
            first_bytes_timeout: Duration::from_secs(10),
            first_bytes: 24,
            idle_timeout: None,
        }
    }

    /// For an HTTP/1 listener (admin, modules).
    pub fn http() -> ConnectionLimits {
        ConnectionLimits {
            max_connections: 256,
            max_per_peer: 64,
            first_bytes_timeout: Duration::from_secs(10),
            first_bytes: 16,
            idle_timeout: Some(Duration::from_secs(60)),
        }
    }
}

/// Who holds how many connections.
#[derive(Debug, Default)]
struct Occupancy {
    total: usize,
    per_peer: HashMap<IpAddr, usize>,
}

/// A slot taken by one connection; given back on drop.
#[derive(Debug)]
struct Slot {
    occupancy: Arc<Mutex<Occupancy>>,
    peer: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut o = self.occupancy.lock().unwrap_or_else(|e| e.into_inner());
        o.total = o.total.saturating_sub(1);
        if let Some(n) = o.per_peer.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                o.per_peer.remove(&self.peer);
            }
        }
    }
}

/// A connection within the caps: it holds its slot, and fails its reads when the peer says
/// nothing in time.
#[derive(Debug)]
pub struct Guarded<S> {
    inner: S,
    _slot: Slot,
    peer: SocketAddr,
    server: &'static str,
    hits: Arc<LimitHits>,
    /// Bytes still expected before the first-bytes deadline, and the deadline.
    first: Option<(usize, Pin<Box<tokio::time::Sleep>>)>,
    idle: Option<(Duration, Pin<Box<tokio::time::Sleep>>)>,
}

impl<S> Guarded<S> {
    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                if read > 0 {
                    if let Some((left, _)) = &mut this.first {
                        *left = left.saturating_sub(read);
                        if *left == 0 {
                            this.first = None;
                        }
                    }
                    if let Some((after, sleep)) = &mut this.idle {
                        sleep.as_mut().reset(tokio::time::Instant::now() + *after);
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if let Some((_, deadline)) = &mut this.first
                    && deadline.as_mut().poll(cx).is_ready()
                {
                    this.hits.hit(
                        this.server,
                        "first_bytes_timeout",
                        &format!("{} sent too little in time", this.peer),
                    );
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the connection sent too little in time",
                    )));
                }
                if let Some((_, sleep)) = &mut this.idle
                    && sleep.as_mut().poll(cx).is_ready()
                {
                    this.hits.hit(
                        this.server,
                        "idle_timeout",
                        &format!("{} was idle too long", this.peer),
                    );
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the connection was idle too long",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Guarded<TcpStream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// Accepts connections on `listener` within `limits`: one over a cap is closed at once and
/// counted (as `connections` or `connections_per_peer` of `server`). Accept errors (such as
/// running out of file descriptors) are logged and retried after a pause instead of ending
/// the listener.
pub fn guarded_incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
    server: &'static str,
    hits: Arc<LimitHits>,
) -> impl Stream<Item = io::Result<Guarded<TcpStream>>> + Send + 'static {
    let occupancy = Arc::new(Mutex::new(Occupancy::default()));
    futures::stream::unfold(
        (listener, limits, occupancy, hits),
        move |(listener, limits, occupancy, hits)| async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        hits.hit(server, "accept_errors", &format!("accept failed: {e}"));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let refused = {
                    let mut o = occupancy.lock().unwrap_or_else(|e| e.into_inner());
                    let from_peer = o.per_peer.get(&peer.ip()).copied().unwrap_or(0);
                    if o.total >= limits.max_connections {
                        Some(("connections", limits.max_connections))
                    } else if from_peer >= limits.max_per_peer {
                        Some(("connections_per_peer", limits.max_per_peer))
                    } else {
                        o.total += 1;
                        *o.per_peer.entry(peer.ip()).or_default() += 1;
                        None
                    }
                };
                if let Some((limit, max)) = refused {
                    hits.hit(
                        server,
                        limit,
                        &format!("a connection from {peer} was closed: {max} are open already"),
                    );
                    drop(stream);
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let guarded = Guarded {
                    inner: stream,
                    _slot: Slot {
                        occupancy: occupancy.clone(),
                        peer: peer.ip(),
                    },
                    peer,
                    server,
                    hits: hits.clone(),
                    first: Some((
                        limits.first_bytes.max(1),
                        Box::pin(tokio::time::sleep(limits.first_bytes_timeout)),
                    )),
                    idle: limits
                        .idle_timeout
                        .map(|after| (after, Box::pin(tokio::time::sleep(after)))),
                };
                return Some((Ok(guarded), (listener, limits, occupancy, hits)));
            }
        },
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn listen(limits: ConnectionLimits) -> (SocketAddr, Arc<LimitHits>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(LimitHits::default());
        let mut incoming = Box::pin(guarded_incoming(listener, limits, "test", hits.clone()));
        tokio::spawn(async move {
            while let Some(Ok(mut conn)) = incoming.next().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    loop {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if conn.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        (addr, hits)
    }

    /// Whether the server closed the connection within `within`.
    async fn closed(conn: &mut TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(within, conn.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    #[tokio::test]
    async fn connections_over_the_caps_are_closed_and_counted() {
        let (addr, hits) = listen(ConnectionLimits {
            max_connections: 3,
            max_per_peer: 2,
            ..ConnectionLimits::xds()
        })
        .await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(b"hello, this is more than 24 bytes")
                .await
                .unwrap();
            held.push(c);
        }
        let mut third = TcpStream::connect(addr).await.unwrap();
        assert!(closed(&mut third, Duration::from_secs(2)).await);
        assert_eq!(hits.count("test", "connections_per_peer"), 1);
        // Another peer address still gets in, up to the total.
        let local = tokio::net::TcpSocket::new_v4().unwrap();
        local.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut other = local.connect(addr).await.unwrap();
        other.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        other.read_exact(&mut buf).await.unwrap();
        let local = tokio::net::TcpSocket::new_v4().unwrap();
        local.bind("127.0.0.3:0".parse().unwrap()).unwrap();
        let mut over = local.connect(addr).await.unwrap();
        assert!(closed(&mut over, Duration::from_secs(2)).await);
        assert_eq!(hits.count("test", "connections"), 1);
        // A slot comes back when its connection closes.
        drop(held.pop());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut again = TcpStream::connect(addr).await.unwrap();
        again.write_all(b"ping").await.unwrap();
        again.read_exact(&mut buf).await.unwrap();
    }

    #[tokio::test]
    async fn a_connection_that_sends_too_little_in_time_is_closed() {
        let (addr, hits) = listen(ConnectionLimits {
            first_bytes_timeout: Duration::from_millis(300),
            ..ConnectionLimits::xds()
        })
        .await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut trickle = TcpStream::connect(addr).await.unwrap();
        trickle.write_all(b"PRI").await.unwrap();
        assert!(closed(&mut silent, Duration::from_secs(3)).await);
        // The trickle got its 3 bytes echoed, then was closed.
        let mut buf = [0u8; 3];
        trickle.read_exact(&mut buf).await.unwrap();
        assert!(closed(&mut trickle, Duration::from_secs(3)).await);
        assert_eq!(hits.count("test", "first_bytes_timeout"), 2);
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed() {
        let (addr, hits) = listen(ConnectionLimits {
            idle_timeout: Some(Duration::from_millis(300)),
            first_bytes: 1,
            ..ConnectionLimits::http()
        })
        .await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        for _ in 0..3 {
            c.write_all(b"x").await.unwrap();
            let mut buf = [0u8; 1];
            c.read_exact(&mut buf).await.unwrap();
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        assert!(closed(&mut c, Duration::from_secs(3)).await);
        assert_eq!(hits.count("test", "idle_timeout"), 1);
    }
}
