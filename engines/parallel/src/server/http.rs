//! The HTTP side of `parallel.serve()` (WSGI): hyper parses HTTP/1.1 (keep-alive, pipelining,
//! chunked bodies, `Expect: 100-continue`, HEAD) on the server's tokio runtime (a thread per
//! core). Each request goes to whichever worker asks first (one queue for all), its body
//! following in chunks as it arrives (bounded: an upload is never held whole); the worker's
//! response comes back as a start (status, headers) then body chunks, streamed to the client
//! as they come. Malformed requests get hyper's 400/431; bodies over the limit 413; a request
//! with both Transfer-Encoding and Content-Length 400 (smuggling.rs, in front of hyper).

use super::smuggling::SmugglingGuard;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

/// One request, for a worker.
pub struct HttpRequest {
    pub method: String,
    /// The path as sent (still percent-encoded), and the query string.
    pub path: Vec<u8>,
    pub query: Vec<u8>,
    pub version: &'static str,
    pub headers: Headers,
    /// The body, as it arrives (None: the request has none).
    pub body: Option<mpsc::Receiver<BodyPart>>,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub reply: Reply,
}

/// A request's body as a worker reads it: chunks, then the end (the sender dropped).
pub enum BodyPart {
    Data(Bytes),
    /// More than the server's `max_body` came: the worker answers 413.
    TooLarge,
    /// The client's connection failed (the error's text).
    Failed(String),
}

/// Body chunks read ahead of a worker (a 1 GB upload is never held whole).
const BODY_CHUNKS_AHEAD: usize = 8;

/// A response's body as a worker sends it (after the status and headers): chunks, then the end
/// (the sender dropped).
pub enum Part {
    Chunk(Bytes),
    /// The application failed after the headers went out: the connection is cut.
    Abort,
}

/// Response headers: (name, value) pairs.
pub type Headers = Vec<(String, Vec<u8>)>;

/// A response's body as the connection receives it with the status and headers.
enum StartBody {
    /// The whole body, known when the response started (a WSGI list): one hand-over, no
    /// channel, so the connection's thread wakes once per response.
    Whole(Bytes),
    /// Chunks as the worker sends them.
    Stream(mpsc::Receiver<Part>),
}

/// A response's start as the connection receives it: status, headers, and its body.
type Start = (u16, Headers, StartBody);

/// The worker's side of one response.
pub struct Reply {
    start: Option<oneshot::Sender<Start>>,
    body: Option<mpsc::Sender<Part>>,
}

/// Chunks a worker may have queued for a slow client before it waits (backpressure).
const CHUNKS_QUEUED: usize = 16;

impl Reply {
    /// Sends the status and headers (once), with the whole body when it is known (the
    /// response is then complete); false if the client is gone.
    pub fn start(&mut self, status: u16, headers: Headers, whole: Option<Bytes>) -> bool {
        let Some(start) = self.start.take() else { return false };
        let body = match whole {
            Some(whole) => StartBody::Whole(whole),
            None => {
                let (sender, receiver) = mpsc::channel(CHUNKS_QUEUED);
                self.body = Some(sender);
                StartBody::Stream(receiver)
            }
        };
        start.send((status, headers, body)).is_ok()
    }

    pub fn started(&self) -> bool {
        self.start.is_none()
    }

    /// Sends a body chunk, waiting while the client is slow (call without the GIL); false if
    /// the client is gone.
    pub fn send(&mut self, part: Part) -> bool {
        match &self.body {
            Some(body) => body.blocking_send(part).is_ok(),
            None => false,
        }
    }

    /// The response is complete.
    pub fn finish(&mut self) {
        self.body = None;
        self.start = None;
    }
}

/// Limits and timeouts of a server.
#[derive(Clone, Copy)]
pub struct Limits {
    pub max_body: usize,
    pub header_timeout: Duration,
    pub max_header_bytes: usize,
}

pub struct HttpServer {
    pub address: SocketAddr,
    requests: flume::Receiver<HttpRequest>,
    stop: watch::Sender<bool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    open: Arc<AtomicUsize>,
}

impl HttpServer {
    pub fn start(host: &str, port: u16, backlog: u32, limits: Limits) -> std::io::Result<Arc<HttpServer>> {
        // HTTP parsing and writing take a thread per core (hyper, as granian runs it).
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (runtime, listener) = super::network::bind(host, port, backlog, threads)?;
        // Requests wait here for a worker; a full queue makes connections wait in turn.
        let (queue, requests) = flume::bounded(1024);
        let (stop, stopped) = watch::channel(false);
        let open = Arc::new(AtomicUsize::new(0));
        let server = Arc::new(HttpServer {
            address: listener.local_addr()?,
            requests,
            stop,
            thread: Mutex::new(None),
            open: Arc::clone(&open),
        });
        let thread = std::thread::Builder::new()
            .name("parallel-http".into())
            .spawn(move || runtime.block_on(accept(listener, queue, stopped, limits, open)))?;
        *server.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(thread);
        Ok(server)
    }

    /// The next request for a worker (call without the GIL); None once the server stopped.
    pub fn next(&self) -> Option<HttpRequest> {
        self.requests.recv().ok()
    }

    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Stops accepting, lets requests in flight finish (within a grace period), then ends.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

async fn accept(
    listener: TcpListener,
    queue: flume::Sender<HttpRequest>,
    mut stopped: watch::Receiver<bool>,
    limits: Limits,
    open: Arc<AtomicUsize>,
) {
    let local = listener.local_addr().ok();
    let mut last_said = None;
    // The largest request head hyper buffers, and the smuggling check holds back.
    let max_head = limits.max_header_bytes.max(8192);
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        super::accept_failed(error, &mut last_said).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let local = stream.local_addr().ok().or(local).unwrap_or(peer);
                let (queue, open, mut stopped) = (queue.clone(), Arc::clone(&open), stopped.clone());
                open.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        handle(request, queue.clone(), peer, local, limits)
                    });
                    let mut builder = hyper::server::conn::http1::Builder::new();
                    builder
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(limits.header_timeout)
                        .max_buf_size(max_head);
                    let connection = builder.serve_connection(
                        hyper_util::rt::TokioIo::new(SmugglingGuard::new(stream, max_head)),
                        service,
                    );
                    tokio::pin!(connection);
                    tokio::select! {
                        _ = connection.as_mut() => {}
                        _ = stopped.changed() => {
                            // Stopping: finish the request in flight, then close.
                            connection.as_mut().graceful_shutdown();
                            let _ = tokio::time::timeout(Duration::from_secs(10), connection).await;
                        }
                    }
                    open.fetch_sub(1, Ordering::Relaxed);
                });
            }
        }
    }
    drop(listener);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while open.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

type ResponseBody = http_body_util::Either<Full<Bytes>, ChannelBody>;

fn plain(status: StatusCode, text: &'static str) -> Response<ResponseBody> {
    let mut response =
        Response::new(http_body_util::Either::Left(Full::new(Bytes::from_static(text.as_bytes()))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain"));
    response
}

async fn handle(
    request: Request<Incoming>,
    queue: flume::Sender<HttpRequest>,
    peer: SocketAddr,
    local: SocketAddr,
    limits: Limits,
) -> Result<Response<ResponseBody>, Infallible> {
    let declared = request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limits.max_body as u64) {
        return Ok(plain(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large\n"));
    }
    let (parts, body) = request.into_parts();
    // The body streams to the worker as it comes (hyper answers `Expect: 100-continue` when it
    // is first read, here, as soon as the request is queued).
    let body = if body.is_end_stream() { None } else { Some(feed_body(body, limits.max_body)) };
    let (path, query) = match parts.uri.path_and_query() {
        Some(target) => (target.path().as_bytes().to_vec(), target.query().unwrap_or("").as_bytes().to_vec()),
        None => (b"/".to_vec(), Vec::new()),
    };
    let version = match parts.version {
        hyper::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| (name.as_str().to_string(), value.as_bytes().to_vec()))
        .collect();
    let (start_sender, start) = oneshot::channel();
    let request = HttpRequest {
        method: parts.method.as_str().to_string(),
        path,
        query,
        version,
        headers,
        body,
        peer,
        local,
        reply: Reply { start: Some(start_sender), body: None },
    };
    if queue.send_async(request).await.is_err() {
        return Ok(plain(StatusCode::SERVICE_UNAVAILABLE, "Server stopping\n"));
    }
    let Ok((status, headers, body)) = start.await else {
        // The worker dropped the request without a response (it failed before starting one).
        return Ok(plain(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n"));
    };
    let mut response = Response::new(match body {
        StartBody::Whole(bytes) => http_body_util::Either::Left(Full::new(bytes)),
        StartBody::Stream(chunks) => http_body_util::Either::Right(ChannelBody(chunks)),
    });
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in headers {
        let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(name.as_bytes()),
            hyper::header::HeaderValue::from_bytes(&value),
        ) else {
            continue; // checked by the worker before it sends them
        };
        response.headers_mut().append(name, value);
    }
    Ok(response)
}

/// Reads a request's body into a channel, at most `max_body` bytes.
fn feed_body(mut body: Incoming, max_body: usize) -> mpsc::Receiver<BodyPart> {
    let (sender, receiver) = mpsc::channel(BODY_CHUNKS_AHEAD);
    tokio::spawn(async move {
        let mut total = 0usize;
        while let Some(frame) = body.frame().await {
            let part = match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(data) => {
                        total += data.len();
                        if total > max_body {
                            BodyPart::TooLarge
                        } else {
                            BodyPart::Data(data)
                        }
                    }
                    Err(_) => continue, // trailers
                },
                Err(error) => BodyPart::Failed(error.to_string()),
            };
            let last = !matches!(part, BodyPart::Data(_));
            // A worker that stopped reading (it answered already) drops the receiver: the
            // rest is not read, and hyper closes the connection after the response.
            if sender.send(part).await.is_err() || last {
                return;
            }
        }
    });
    receiver
}

/// A response body fed by a worker, chunk by chunk.
pub struct ChannelBody(mpsc::Receiver<Part>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.0.poll_recv(context) {
            Poll::Ready(Some(Part::Chunk(bytes))) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
            Poll::Ready(Some(Part::Abort)) => Poll::Ready(Some(Err(std::io::Error::other(
                "the application failed while sending its response",
            )))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}
