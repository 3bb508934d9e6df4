//! The tonic adapter: ADS streams in, protocol state machines in the middle, responses out.
//!
//! Each stream is one task selecting over the proxy's requests and the cache's change
//! notifications; all decisions are made by [`SotwStream`]/[`DeltaStream`]. The first request
//! must carry the node; the [`NodeResolver`] turns it into the snapshot key the proxy is
//! served from.
//!
//! The gRPC service ([`AdsService`]) is written here rather than generated, for one reason:
//! memory per connected proxy. A stream lives as long as its proxy. tonic's encoder keeps one
//! buffer per stream that grows to the largest response ever sent (the first, complete
//! configuration: hundreds of KiB with a thousand routes) and never shrinks; [`AdsService`]
//! instead encodes each response into an allocation of its exact size, freed once written
//! ([`ResponseBody`]). Requests (ACKs, a few hundred bytes) are decoded with 1 KiB buffers
//! instead of 8 KiB.

use crate::limits::LimitHits;
use crate::protocol::{
    DeltaStream, Event, LimitExceeded, SotwStream, StreamLimits, SyncStatus, bounded_text,
};
use crate::registry::{Protocol, StreamHandle, SyncRegistry};
use crate::snapshot::{Snapshot, SnapshotCache};
use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::codec::BufferSettings;
use tonic::codegen::{Body, BoxFuture, Context, Poll, Service, StdError, http};
use tonic::server::NamedService;
use tonic::{Request, Status, Streaming};
use tonic_prost::ProstDecoder;
use tracing::{Instrument, debug, info, info_span, warn};

/// Maps a proxy's node to the key of the snapshot it is served, or explains why it cannot.
pub type NodeResolver = Arc<dyn Fn(&Node) -> Result<String, String> + Send + Sync>;

/// Bounds on what a client can make the ADS server hold or wait for.
#[derive(Clone, Debug)]
pub struct ServerLimits {
    /// How long a new stream may take to send its first request.
    pub first_request: std::time::Duration,
    /// The largest request message accepted.
    pub max_request_bytes: usize,
    /// The longest node id or node cluster accepted.
    pub max_node_bytes: usize,
    /// Bounds on each stream's subscriptions and NACK texts.
    pub stream: StreamLimits,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            first_request: std::time::Duration::from_secs(10),
            max_request_bytes: 4 << 20,
            max_node_bytes: 1024,
            stream: StreamLimits::default(),
        }
    }
}

/// Who is at the other end of an xDS connection, as the transport knows it: its address, and
/// with mutual TLS the identity (SPIFFE ID) of its verified client certificate. The transport
/// puts it in each request's extensions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// The client's address.
    pub remote: Option<std::net::SocketAddr>,
    /// The first URI SAN of its verified client certificate, if it presented one.
    pub identity: Option<String>,
}

/// Decides whether a stream may receive a snapshot key's configuration, given the identity of
/// its client certificate (`None`: it presented none); `Err` says why not.
pub type StreamAuthorizer = Arc<dyn Fn(Option<&str>, &str) -> Result<(), String> + Send + Sync>;

/// The ADS service.
#[derive(Clone)]
pub struct AdsServer {
    cache: SnapshotCache,
    registry: Arc<SyncRegistry>,
    resolver: NodeResolver,
    authorizer: Option<StreamAuthorizer>,
    limits: ServerLimits,
    hits: Arc<LimitHits>,
}

impl std::fmt::Debug for AdsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdsServer").finish_non_exhaustive()
    }
}

impl AdsServer {
    /// A server reading `cache`, recording into `registry`, keying proxies with `resolver`.
    pub fn new(cache: SnapshotCache, registry: Arc<SyncRegistry>, resolver: NodeResolver) -> Self {
        Self {
            cache,
            registry,
            resolver,
            authorizer: None,
            limits: ServerLimits::default(),
            hits: Arc::default(),
        }
    }

    /// Sets the bounds, and where hits of them are counted.
    pub fn with_limits(mut self, limits: ServerLimits, hits: Arc<LimitHits>) -> Self {
        self.limits = limits;
        self.hits = hits;
        self
    }

    /// Checks every stream's client identity against the proxy it claims to be (mutual TLS);
    /// a stream `authorizer` refuses ends with PERMISSION_DENIED.
    pub fn with_authorizer(mut self, authorizer: StreamAuthorizer) -> Self {
        self.authorizer = Some(authorizer);
        self
    }

    /// Counts a refused client and returns the status it gets.
    fn refuse(&self, limit: &'static str, message: String) -> Status {
        self.hits.hit("xds", limit, &message);
        Status::resource_exhausted(message)
    }

    /// Turns a failed read of the request stream into the status to end it with, counting an
    /// oversized message.
    fn read_failure(&self, status: Status) -> Status {
        if status.code() == tonic::Code::OutOfRange && status.message().contains("too large") {
            return self.refuse(
                "request_bytes",
                format!(
                    "request larger than {} bytes",
                    self.limits.max_request_bytes
                ),
            );
        }
        status
    }

    /// The gRPC service to add to a tonic router.
    pub fn into_service(self) -> AdsService {
        AdsService {
            server: Arc::new(self),
        }
    }

    /// The snapshot for `key`: `None` until the first publish, then the key's snapshot or an
    /// empty one (the proxy's Gateway is gone or not yet known).
    fn snapshot_for(cache: &SnapshotCache, key: &str) -> Option<Arc<Snapshot>> {
        let current = cache.current();
        if current.generation == 0 {
            return None;
        }
        Some(
            current
                .by_key
                .get(key)
                .cloned()
                .unwrap_or_else(|| Arc::new(Snapshot::new())),
        )
    }

    /// Opens a stream of either variant: reads the first request, finds the proxy's snapshot
    /// key and spawns the stream's task.
    async fn open<M: Machine>(
        self: &Arc<Self>,
        request: Request<Streaming<M::Req>>,
    ) -> Result<mpsc::Receiver<Outgoing<M::Resp>>, Status> {
        let peer = request.extensions().get::<PeerInfo>().cloned();
        let mut inbound = request.into_inner();
        let first =
            match tokio::time::timeout(self.limits.first_request, inbound.message()).await {
                Err(_) => {
                    return Err(Status::deadline_exceeded(self.refuse_text(
                        "first_request",
                        format!(
                            "no request within {:?} of opening the stream",
                            self.limits.first_request
                        ),
                    )));
                }
                Ok(read) => read.map_err(|s| self.read_failure(s))?,
            }
            .ok_or_else(|| Status::cancelled("stream closed before the first request"))?;
        let (node_id, node_cluster, key) = self.resolve(M::node(&first))?;
        if let Some(authorize) = &self.authorizer {
            let identity = peer.as_ref().and_then(|p| p.identity.as_deref());
            if let Err(why) = authorize(identity, &key) {
                let remote = peer.and_then(|p| p.remote);
                warn!(node = %node_id, %key, ?remote, "stream refused: {why}");
                self.hits.hit("xds", "unauthorized", &why);
                return Err(Status::permission_denied(why));
            }
        }
        let mut cache = self.cache.clone();
        cache.seen();
        let current = Self::snapshot_for(&cache, &key);
        let handle = self
            .registry
            .connect(&node_id, &node_cluster, &key, M::PROTOCOL);
        if let Some(build) = M::node(&first).and_then(node_build) {
            handle.set_build(build);
        }
        // Responses travel boxed: the channel's slots then take a pointer each, not a
        // response (a block of 32 slots is allocated per stream).
        let (tx, rx) = mpsc::channel::<Outgoing<M::Resp>>(16);
        let protocol = match M::PROTOCOL {
            Protocol::Sotw => "sotw",
            Protocol::Delta => "delta",
        };
        let span = info_span!("ads", node = %node_id, %key, protocol);
        span.in_scope(|| info!("proxy connected"));
        let task = StreamTask {
            machine: M::new(current.clone()),
            inbound,
            cache,
            current,
            key,
            handle,
            tx,
            server: self.clone(),
        };
        let first = Box::new(first);
        tokio::spawn(
            async move {
                drive(task, first).await;
                info!("proxy disconnected");
            }
            .instrument(span),
        );
        Ok(rx)
    }

    /// Counts a refused client and returns the message.
    fn refuse_text(&self, limit: &'static str, message: String) -> String {
        self.hits.hit("xds", limit, &message);
        message
    }

    fn resolve(&self, node: Option<&Node>) -> Result<(String, String, String), Status> {
        let node = node.ok_or_else(|| {
            Status::invalid_argument("the first request of a stream must carry the node")
        })?;
        let max = self.limits.max_node_bytes;
        for (field, value) in [("node id", &node.id), ("node cluster", &node.cluster)] {
            if value.len() > max {
                return Err(Status::invalid_argument(self.refuse_text(
                    "node_bytes",
                    format!("a {field} of {} bytes (the limit is {max})", value.len()),
                )));
            }
        }
        let key = (self.resolver)(node).map_err(Status::invalid_argument)?;
        Ok((node.id.clone(), node.cluster.clone(), key))
    }
}

/// How long a reconnecting SotW stream waits for the client's subscriptions before answering
/// CDS without them.
const RECONNECT_HOLD: std::time::Duration = std::time::Duration::from_millis(500);

/// The two variants' state machines behind one interface, so one loop drives both.
/// A node's build as `name/major.minor.patch` (`envoy/1.40.0`), bounded in length.
fn node_build(node: &Node) -> Option<String> {
    use envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType;
    let Some(UserAgentVersionType::UserAgentBuildVersion(b)) = &node.user_agent_version_type else {
        return None;
    };
    let v = b.version.as_ref()?;
    let name: String = node.user_agent_name.chars().take(32).collect();
    Some(format!(
        "{}/{}.{}.{}",
        if name.is_empty() { "unknown" } else { &name },
        v.major_number,
        v.minor_number,
        v.patch
    ))
}

trait Machine: Send + Sized + 'static {
    type Req: Send + 'static + std::fmt::Debug + prost::Message + Default;
    type Resp: Send + 'static + prost::Message;
    const PROTOCOL: Protocol;
    fn new(snapshot: Option<Arc<Snapshot>>) -> Self;
    fn node(req: &Self::Req) -> Option<&Node>;
    fn check(&self, req: &Self::Req, limits: &StreamLimits) -> Result<(), LimitExceeded>;
    fn on_request(&mut self, req: &Self::Req) -> (Vec<Self::Resp>, Vec<Event>);
    fn on_snapshot(&mut self, s: Option<Arc<Snapshot>>) -> (Vec<Self::Resp>, Vec<Event>);
    fn on_tick(&mut self) -> (Vec<Self::Resp>, Vec<Event>);
    fn sync(
        &self,
    ) -> (
        std::collections::BTreeMap<crate::ResourceType, SyncStatus>,
        Option<String>,
    );
}

impl Machine for SotwStream {
    type Req = DiscoveryRequest;
    type Resp = DiscoveryResponse;
    const PROTOCOL: Protocol = Protocol::Sotw;
    fn new(snapshot: Option<Arc<Snapshot>>) -> Self {
        SotwStream::new(snapshot)
    }
    fn node(req: &DiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }
    fn check(&self, req: &DiscoveryRequest, limits: &StreamLimits) -> Result<(), LimitExceeded> {
        self.check_request(req, limits)
    }
    fn on_request(&mut self, req: &DiscoveryRequest) -> (Vec<DiscoveryResponse>, Vec<Event>) {
        SotwStream::on_request(self, req)
    }
    fn on_snapshot(&mut self, s: Option<Arc<Snapshot>>) -> (Vec<DiscoveryResponse>, Vec<Event>) {
        SotwStream::on_snapshot(self, s)
    }
    fn on_tick(&mut self) -> (Vec<DiscoveryResponse>, Vec<Event>) {
        SotwStream::on_tick(self)
    }
    fn sync(
        &self,
    ) -> (
        std::collections::BTreeMap<crate::ResourceType, SyncStatus>,
        Option<String>,
    ) {
        SotwStream::sync(self)
    }
}

impl Machine for DeltaStream {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaDiscoveryResponse;
    const PROTOCOL: Protocol = Protocol::Delta;
    fn new(snapshot: Option<Arc<Snapshot>>) -> Self {
        DeltaStream::new(snapshot)
    }
    fn node(req: &DeltaDiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }
    fn check(
        &self,
        req: &DeltaDiscoveryRequest,
        limits: &StreamLimits,
    ) -> Result<(), LimitExceeded> {
        self.check_request(req, limits)
    }
    fn on_request(
        &mut self,
        req: &DeltaDiscoveryRequest,
    ) -> (Vec<DeltaDiscoveryResponse>, Vec<Event>) {
        DeltaStream::on_request(self, req)
    }
    fn on_snapshot(
        &mut self,
        s: Option<Arc<Snapshot>>,
    ) -> (Vec<DeltaDiscoveryResponse>, Vec<Event>) {
        DeltaStream::on_snapshot(self, s)
    }
    fn on_tick(&mut self) -> (Vec<DeltaDiscoveryResponse>, Vec<Event>) {
        DeltaStream::on_tick(self)
    }
    fn sync(
        &self,
    ) -> (
        std::collections::BTreeMap<crate::ResourceType, SyncStatus>,
        Option<String>,
    ) {
        DeltaStream::sync(self)
    }
}

fn log_events(events: &[Event]) {
    for event in events {
        match event {
            Event::Sent {
                resource_type,
                version,
                nonce,
                resources,
                removed,
                bytes,
            } => debug!(
                r#type = %resource_type, %version, %nonce, resources = resources.len(),
                removed = removed.len(), bytes, "sent"
            ),
            Event::Acked {
                resource_type,
                version,
                ..
            } => debug!(r#type = %resource_type, %version, "ACK"),
            Event::Nacked {
                resource_type,
                version,
                nonce,
                error,
                resources,
            } => warn!(
                r#type = %resource_type, %version, %nonce, ?resources, error = %error,
                "NACK: the proxy rejected the config and keeps its previous one"
            ),
            Event::Recovered { resource_type } => {
                info!(r#type = %resource_type, "the proxy's accepted config is current again; the earlier NACK no longer applies")
            }
            Event::UnknownType { type_url } => {
                warn!(%type_url, "request for a type Trellis does not serve; ignored")
            }
        }
    }
}

/// What a stream's task hands to its response body: a response, or the status that ends
/// the stream.
enum Outgoing<T> {
    Message(Box<T>),
    Close(Status),
}

/// One open stream: the proxy's requests in, the cache's snapshots, responses out.
struct StreamTask<M: Machine> {
    machine: M,
    inbound: Streaming<M::Req>,
    cache: SnapshotCache,
    current: Option<Arc<Snapshot>>,
    key: String,
    handle: StreamHandle,
    tx: mpsc::Sender<Outgoing<M::Resp>>,
    server: Arc<AdsServer>,
}

/// Runs one stream until the client or the cache goes away.
///
/// The task lives as long as its proxy, so its future is kept small: each event's work is
/// done synchronously inside the `select!`, and only the responses it produced are carried
/// (boxed, one at a time) across the awaits that send them. Requests never live across an
/// await (a request with its node is larger than everything else the task holds).
async fn drive<M: Machine>(task: StreamTask<M>, first: Box<M::Req>) {
    let StreamTask {
        mut machine,
        mut inbound,
        mut cache,
        mut current,
        key,
        handle,
        tx,
        server,
    } = task;
    let max_error = server.limits.stream.max_error_bytes;
    // Records what happened and returns the responses to send.
    let settle = |machine: &M, (responses, mut events): (Vec<M::Resp>, Vec<Event>)| {
        for event in &mut events {
            if let Event::Nacked { error, .. } = event
                && error.len() > max_error
            {
                *error = bounded_text(error, max_error);
            }
        }
        log_events(&events);
        handle.record(&events);
        let (status, synced) = machine.sync();
        handle.set_sync(&status, synced);
        responses
    };
    // Checks a request against the bounds; over one, the stream ends with the reason.
    let admit = |machine: &M, request: &M::Req| -> Result<(), Status> {
        machine
            .check(request, &server.limits.stream)
            .map_err(|e| server.refuse(e.limit, e.message))
    };
    if let Err(status) = admit(&machine, &first) {
        let _ = tx.send(Outgoing::Close(status)).await;
        return;
    }
    let out = machine.on_request(&first);
    drop(first);
    let mut due = settle(&machine, out);
    // Whatever a reconnect holds back waits at most this long for the client's other requests.
    let tick = tokio::time::sleep(RECONNECT_HOLD);
    tokio::pin!(tick);
    let mut ticked = false;
    loop {
        for response in due.drain(..) {
            if tx
                .send(Outgoing::Message(Box::new(response)))
                .await
                .is_err()
            {
                return;
            }
        }
        let out = tokio::select! {
            () = &mut tick, if !ticked => {
                ticked = true;
                machine.on_tick()
            }
            message = inbound.message() => match message {
                Ok(Some(request)) => {
                    tracing::trace!(?request, "request");
                    if let Err(status) = admit(&machine, &request) {
                        let _ = tx.send(Outgoing::Close(status)).await;
                        return;
                    }
                    machine.on_request(&request)
                }
                Ok(None) => {
                    debug!("stream closed by the proxy");
                    return;
                }
                Err(status) => {
                    let status = server.read_failure(status);
                    debug!(%status, "stream ended");
                    if status.code() == tonic::Code::ResourceExhausted {
                        let _ = tx.send(Outgoing::Close(status)).await;
                    }
                    return;
                }
            },
            alive = cache.changed() => {
                if !alive {
                    return;
                }
                cache.seen();
                let next = AdsServer::snapshot_for(&cache, &key);
                let same = match (&current, &next) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (None, None) => true,
                    _ => false,
                };
                if same {
                    continue;
                }
                current = next.clone();
                machine.on_snapshot(next)
            }
        };
        due = settle(&machine, out);
    }
}

/// The gRPC path of state-of-the-world ADS.
const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
/// The gRPC path of incremental ADS.
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// The request decoder's buffer: its initial size (it grows for larger messages) and how much
/// is decoded before yielding.
fn request_buffers() -> BufferSettings {
    BufferSettings::new(1024, 32 * 1024)
}

/// The ADS gRPC service (`envoy.service.discovery.v3.AggregatedDiscoveryService`), serving
/// both variants from one [`AdsServer`].
#[derive(Clone, Debug)]
pub struct AdsService {
    server: Arc<AdsServer>,
}

impl NamedService for AdsService {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

impl<B> Service<http::Request<B>> for AdsService
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let server = self.server.clone();
        match request.uri().path() {
            SOTW_PATH => Box::pin(async move { Ok(serve::<SotwStream, B>(server, request).await) }),
            DELTA_PATH => {
                Box::pin(async move { Ok(serve::<DeltaStream, B>(server, request).await) })
            }
            _ => {
                Box::pin(async move { Ok(Status::unimplemented("not an ADS method").into_http()) })
            }
        }
    }
}

/// Serves one ADS call: decodes the request stream, opens the stream's task, and answers with
/// its responses. A compressed request stream is refused (Trellis offers no compression).
async fn serve<M: Machine, B>(
    server: Arc<AdsServer>,
    request: http::Request<B>,
) -> http::Response<tonic::body::Body>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    let encoding = request.headers().get("grpc-encoding");
    if encoding.is_some_and(|e| e.as_bytes() != b"identity") {
        return Status::unimplemented("compressed ADS requests are not supported").into_http();
    }
    let request = Request::from_http(request.map(|body| {
        Streaming::new_request(
            ProstDecoder::<M::Req>::new(request_buffers()),
            body,
            None,
            Some(server.limits.max_request_bytes),
        )
    }));
    match server.open::<M>(request).await {
        Ok(responses) => {
            let mut response = http::Response::new(tonic::body::Body::new(ResponseBody {
                responses,
                done: false,
            }));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/grpc"),
            );
            response
        }
        Err(status) => status.into_http(),
    }
}

/// A stream's responses as a gRPC response body: each message framed and encoded into an
/// allocation of its exact size (freed once the connection wrote it), then the trailers when
/// the stream's task ends: `OK`, or the status it ended with.
struct ResponseBody<T> {
    responses: mpsc::Receiver<Outgoing<T>>,
    done: bool,
}

impl<T: prost::Message> Body for ResponseBody<T> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.responses.poll_recv(cx) {
            Poll::Ready(Some(Outgoing::Message(message))) => Poll::Ready(Some(frame(&*message))),
            Poll::Ready(Some(Outgoing::Close(status))) => {
                self.done = true;
                let mut trailers = http::HeaderMap::new();
                match status.add_header(&mut trailers) {
                    Ok(()) => Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers)))),
                    Err(_) => Poll::Ready(Some(Err(status))),
                }
            }
            Poll::Ready(None) => {
                self.done = true;
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// One message as a gRPC frame: the uncompressed flag, the length (big-endian), the message.
fn frame(message: &impl prost::Message) -> Result<http_body::Frame<Bytes>, Status> {
    let len = message.encoded_len();
    let len32 =
        u32::try_from(len).map_err(|_| Status::resource_exhausted("response larger than 4 GiB"))?;
    let mut buf = Vec::with_capacity(5 + len);
    buf.push(0);
    buf.extend_from_slice(&len32.to_be_bytes());
    message
        .encode(&mut buf)
        .map_err(|e| Status::internal(format!("encoding a response: {e}")))?;
    Ok(http_body::Frame::data(Bytes::from(buf)))
}
