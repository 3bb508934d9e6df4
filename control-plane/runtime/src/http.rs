//! Serving an HTTP/1 router within limits: the listener's connection caps, and a deadline for
//! each request's headers (hyper's `header_read_timeout`, which needs a timer to apply at all).

use crate::incoming::{ConnectionLimits, guarded_incoming};
use futures::StreamExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tower::ServiceExt;
use trellis_xds::LimitHits;

/// Limits of one HTTP server.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    /// The listener's connection caps and deadlines.
    pub connections: ConnectionLimits,
    /// How long a request's headers may take to arrive.
    pub header_read_timeout: Duration,
    /// The most bytes of request headers buffered.
    pub max_header_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            connections: ConnectionLimits::http(),
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
        }
    }
}

/// Serves `router` on `listener` until the listener fails; `server` names it in limit metrics
/// and logs.
pub async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    limits: HttpLimits,
    server: &'static str,
    hits: Arc<LimitHits>,
) {
    let mut incoming = Box::pin(guarded_incoming(
        listener,
        limits.connections.clone(),
        server,
        hits,
    ));
    while let Some(connection) = incoming.next().await {
        let Ok(connection) = connection else {
            continue;
        };
        let router = router.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                router.clone().oneshot(request.map(axum::body::Body::new))
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192));
            let _ = builder
                .serve_connection(TokioIo::new(connection), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(limits: HttpLimits) -> (std::net::SocketAddr, Arc<LimitHits>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(LimitHits::default());
        let router = axum::Router::new().route("/", get(|| async { "ok" }));
        tokio::spawn(serve_http(listener, router, limits, "test", hits.clone()));
        (addr, hits)
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_its_headers_is_disconnected() {
        let (addr, _) = start(HttpLimits {
            header_read_timeout: Duration::from_millis(500),
            ..HttpLimits::default()
        })
        .await;
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "still open after 5 s");
        assert!(started.elapsed() < Duration::from_secs(3));
        // A normal request is answered.
        let mut fine = tokio::net::TcpStream::connect(addr).await.unwrap();
        fine.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        fine.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("ok"), "{answer}");
    }

    #[tokio::test]
    async fn oversized_headers_are_refused() {
        let (addr, _) = start(HttpLimits::default()).await;
        let mut big = tokio::net::TcpStream::connect(addr).await.unwrap();
        let header = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(200 * 1024)
        );
        let _ = big.write_all(header.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), big.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(!answer.contains(" 200 "), "{answer}");
    }
}
