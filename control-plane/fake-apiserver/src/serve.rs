//! Serving over TCP (plain HTTP/1.1 and h2c) and the kubeconfig that points at it.
//!
//! ```text
//!  TcpListener (127.0.0.1:0) ──accept──► [fault: close-connection? drop it]
//!                                     └► hyper auto connection ──► FakeService (shared state)
//!  RunningServer ── kubeconfig_yaml() / write_kubeconfig(path) / client()
//!                └─ dropped or shutdown(): stop accepting, close every connection
//! ```
//!
//! The kubeconfig has one cluster (`server: http://ADDR`), one user with a dummy bearer token
//! (the server accepts any credentials) and one context with namespace `default`.

use std::net::SocketAddr;
use std::path::Path;

use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;

use crate::FakeApiServer;
use crate::error::Error;
use crate::faults::Refusal;

/// A server listening on TCP. Dropping it stops the listener and closes every connection.
#[derive(Debug)]
pub struct RunningServer {
    address: SocketAddr,
    server: FakeApiServer,
    task: JoinHandle<()>,
}

impl RunningServer {
    /// Binds `address` and serves `server` on it.
    pub(crate) async fn start(server: FakeApiServer, address: SocketAddr) -> Result<Self, Error> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| Error::Bind {
                address: address.to_string(),
                source,
            })?;
        let address = listener.local_addr().map_err(|source| Error::Bind {
            address: address.to_string(),
            source,
        })?;
        let task = tokio::spawn(accept_loop(listener, server.clone()));
        Ok(Self {
            address,
            server,
            task,
        })
    }

    /// The address actually bound (the port is real even when 0 was asked for).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://ADDRESS`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The server this listener serves (faults, store, kinds).
    pub fn server(&self) -> &FakeApiServer {
        &self.server
    }

    /// A kubeconfig pointing at this server.
    pub fn kubeconfig_yaml(&self) -> String {
        kubeconfig_yaml(&self.url())
    }

    /// Writes the kubeconfig to `path` (atomically: written beside it, then renamed, so a
    /// process polling for the file never reads half of it).
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), Error> {
        write_atomically(path, &self.kubeconfig_yaml())
    }

    /// A kube client connected over HTTP through the generated kubeconfig, exactly as a
    /// separate process using `--kubeconfig` would connect.
    pub async fn client(&self) -> Result<kube::Client, Error> {
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&self.kubeconfig_yaml())
            .map_err(|e| Error::Kubeconfig(Box::new(e)))?;
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .map_err(|e| Error::Kubeconfig(Box::new(e)))?;
        kube::Client::try_from(config).map_err(|e| Error::Kubeconfig(Box::new(e)))
    }

    /// Stops listening and closes every connection.
    pub fn shutdown(self) {
        self.task.abort();
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, server: FakeApiServer) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if server.faults().refusing() == Some(Refusal::CloseConnection) {
            drop(stream);
            continue;
        }
        let service = server.service();
        connections.spawn(async move {
            let hyper_service = hyper::service::service_fn(move |request: Request<Incoming>| {
                service.clone().oneshot(request)
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection(TokioIo::new(stream), hyper_service)
                .await
            {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}

/// A kubeconfig for a server at `url` (no TLS, a dummy token, namespace `default`).
pub fn kubeconfig_yaml(url: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: fake-apiserver
  cluster:
    server: {url}
users:
- name: fake-apiserver
  user:
    token: fake-token
contexts:
- name: fake-apiserver
  context:
    cluster: fake-apiserver
    user: fake-apiserver
    namespace: default
current-context: fake-apiserver
"
    )
}

/// Writes `text` to a temporary file beside `path`, then renames it over `path`.
pub(crate) fn write_atomically(path: &Path, text: &str) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
