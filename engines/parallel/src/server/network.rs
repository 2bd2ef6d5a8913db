//! The network side of a server: one thread per server runs a tokio runtime that accepts
//! connections and moves bytes; Python runs only in the workers (see mod.rs). Each connection
//! belongs to one worker, chosen in turn at accept, so that its callbacks run in order there.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};

/// What a worker learns about its connections, in order.
pub enum Event {
    Made {
        id: u64,
        outbox: Arc<Outbox>,
        peer: SocketAddr,
    },
    Data {
        id: u64,
        bytes: Vec<u8>,
    },
    /// The peer closed its side, the connection failed (the error), or the worker closed it.
    Lost {
        id: u64,
        error: Option<String>,
    },
    /// The bytes queued to send fell to the low-water mark after going over the high one.
    Drained {
        id: u64,
    },
}

/// What a worker asks of one of its connections.
pub enum Command {
    Write(Vec<u8>),
    /// Send what is queued, then close.
    Close,
}

/// A connection's way out: the worker queues writes here, and how many bytes wait to be sent
/// decides backpressure. Over the high-water mark the connection is not read from (a client
/// that sends without reading the answers is slowed by TCP itself) and the worker is told to
/// pause its writes (the protocol's `pause_writing()`); back at the low one, `Drained`.
pub struct Outbox {
    commands: mpsc::UnboundedSender<Command>,
    queued: AtomicUsize,
    paused: AtomicBool,
    high_water: AtomicUsize,
    low_water: AtomicUsize,
}

/// asyncio's default write-buffer limits.
const HIGH_WATER: usize = 64 * 1024;
const LOW_WATER: usize = HIGH_WATER / 4;

impl Outbox {
    fn new() -> (Arc<Outbox>, mpsc::UnboundedReceiver<Command>) {
        let (commands, receiver) = mpsc::unbounded_channel();
        let outbox = Outbox {
            commands,
            queued: AtomicUsize::new(0),
            paused: AtomicBool::new(false),
            high_water: AtomicUsize::new(HIGH_WATER),
            low_water: AtomicUsize::new(LOW_WATER),
        };
        (Arc::new(outbox), receiver)
    }

    /// Queues bytes to send: None if the connection is gone, else whether this write took the
    /// queue over the high-water mark (the writer should pause).
    pub fn write(&self, bytes: Vec<u8>) -> Option<bool> {
        let length = bytes.len();
        let queued = self.queued.fetch_add(length, Ordering::AcqRel) + length;
        if self.commands.send(Command::Write(bytes)).is_err() {
            self.queued.fetch_sub(length, Ordering::AcqRel);
            return None;
        }
        Some(queued > self.high_water.load(Ordering::Relaxed) && !self.paused.swap(true, Ordering::AcqRel))
    }

    pub fn close(&self) {
        let _ = self.commands.send(Command::Close);
    }

    /// Bytes queued and not yet sent.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    pub fn set_limits(&self, high: usize, low: usize) {
        self.high_water.store(high, Ordering::Relaxed);
        self.low_water.store(low, Ordering::Relaxed);
    }

    fn over_high_water(&self) -> bool {
        self.queued() > self.high_water.load(Ordering::Relaxed)
    }

    /// Counts `length` bytes as sent: whether the writer should resume now.
    fn sent(&self, length: usize) -> bool {
        let queued = self.queued.fetch_sub(length, Ordering::AcqRel) - length;
        queued <= self.low_water.load(Ordering::Relaxed) && self.paused.swap(false, Ordering::AcqRel)
    }
}

/// Events a worker may have waiting before a connection's reader waits for it (backpressure).
const EVENTS_PER_WORKER: usize = 1024;
/// How much one read takes from a socket.
const READ_SIZE: usize = 64 * 1024;
/// How long a stopping server waits for its connections to finish their writes.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

pub struct Server {
    pub address: SocketAddr,
    /// The joined workers' event channels.
    workers: Mutex<Vec<mpsc::Sender<Event>>>,
    joined: Condvar,
    next_worker: AtomicUsize,
    next_connection: AtomicU64,
    /// Every open connection's outbox (to close them all on stop).
    connections: Mutex<HashMap<u64, Arc<Outbox>>>,
    connections_done: tokio::sync::Notify,
    stop: watch::Sender<bool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl Server {
    /// Binds `host:port` and starts accepting on a thread of its own; the error is the
    /// operating system's (a port in use, an unknown host).
    pub fn start(host: &str, port: u16, backlog: u32) -> std::io::Result<Arc<Server>> {
        let (runtime, listener) = bind(host, port, backlog, 1)?;
        let (stop, stopped) = watch::channel(false);
        let server = Arc::new(Server {
            address: listener.local_addr()?,
            workers: Mutex::new(Vec::new()),
            joined: Condvar::new(),
            next_worker: AtomicUsize::new(0),
            next_connection: AtomicU64::new(1),
            connections: Mutex::new(HashMap::new()),
            connections_done: tokio::sync::Notify::new(),
            stop,
            thread: Mutex::new(None),
        });
        let serving = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name("parallel-server".into())
            .spawn(move || runtime.block_on(accept(serving, listener, stopped)))?;
        *lock(&server.thread) = Some(thread);
        Ok(server)
    }

    /// A worker joins: its event channel's receiving end.
    pub fn join(&self) -> mpsc::Receiver<Event> {
        let (sender, receiver) = mpsc::channel(EVENTS_PER_WORKER);
        lock(&self.workers).push(sender);
        self.joined.notify_all();
        receiver
    }

    /// Waits until `count` workers joined (false on timeout).
    pub fn wait_joined(&self, count: usize, timeout: Duration) -> bool {
        let workers = lock(&self.workers);
        let (workers, _) = self
            .joined
            .wait_timeout_while(workers, timeout, |workers| workers.len() < count)
            .unwrap_or_else(|poison| poison.into_inner());
        workers.len() >= count
    }

    pub fn open_connections(&self) -> usize {
        lock(&self.connections).len()
    }

    /// Stops accepting, closes every connection once its queued writes are sent (within a
    /// grace period) and ends the workers' event channels; returns when the network thread
    /// has ended.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
        lock(&self.workers).clear();
        lock(&self.connections).clear();
    }

    /// The worker for a new connection: each joined worker in turn.
    fn pick_worker(&self) -> Option<mpsc::Sender<Event>> {
        let workers = lock(&self.workers);
        if workers.is_empty() {
            return None;
        }
        let index = self.next_worker.fetch_add(1, Ordering::Relaxed) % workers.len();
        Some(workers[index].clone())
    }
}

/// A listening socket on `host:port` and the runtime that will serve it: on the calling
/// thread only (`threads` 1), or with that many threads more.
pub fn bind(
    host: &str,
    port: u16,
    backlog: u32,
    threads: usize,
) -> std::io::Result<(tokio::runtime::Runtime, TcpListener)> {
    let address = resolve(host, port)?;
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("parallel-http")
            .enable_io()
            .enable_time()
            .build()?
    };
    let listener = runtime.block_on(async {
        let socket = if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.set_nodelay(true)?;
        socket.bind(address)?;
        socket.listen(backlog)
    })?;
    Ok((runtime, listener))
}

fn resolve(host: &str, port: u16) -> std::io::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    (host, port).to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::AddrNotAvailable, format!("no address for host {host:?}"))
    })
}

async fn accept(server: Arc<Server>, listener: TcpListener, mut stopped: watch::Receiver<bool>) {
    let mut last_said = None;
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(connection(Arc::clone(&server), stream, peer));
                }
                Err(error) => super::accept_failed(error, &mut last_said).await,
            },
        }
    }
    drop(listener);
    let closing: Vec<_> = lock(&server.connections).values().cloned().collect();
    for outbox in closing {
        outbox.close();
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while server.open_connections() > 0 {
            server.connections_done.notified().await;
        }
    })
    .await;
}

async fn connection(server: Arc<Server>, stream: TcpStream, peer: SocketAddr) {
    let Some(worker) = server.pick_worker() else { return };
    let id = server.next_connection.fetch_add(1, Ordering::Relaxed);
    let (outbox, mut commands) = Outbox::new();
    lock(&server.connections).insert(id, Arc::clone(&outbox));
    if worker.send(Event::Made { id, outbox: Arc::clone(&outbox), peer }).await.is_ok() {
        exchange(&worker, id, stream, &outbox, &mut commands).await;
    }
    lock(&server.connections).remove(&id);
    server.connections_done.notify_one();
}

/// Moves bytes both ways until the connection ends; the worker hears `Lost` exactly once.
async fn exchange(
    worker: &mpsc::Sender<Event>,
    id: u64,
    stream: TcpStream,
    outbox: &Outbox,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) {
    let (mut reader, mut writer) = stream.into_split();
    let mut buffer = vec![0u8; READ_SIZE];
    let mut lost = false;
    loop {
        tokio::select! {
            // Over the high-water mark, reading waits for the client to take the answers.
            read = reader.read(&mut buffer), if !lost && !outbox.over_high_water() => {
                let event = match read {
                    Ok(0) => Event::Lost { id, error: None },
                    Ok(count) => Event::Data { id, bytes: buffer[..count].to_vec() },
                    Err(error) => Event::Lost { id, error: Some(error.to_string()) },
                };
                // After Lost the worker's connection_lost runs, then its Close ends this.
                lost = matches!(event, Event::Lost { .. });
                if worker.send(event).await.is_err() {
                    return;
                }
            }
            command = commands.recv() => match command {
                Some(Command::Write(bytes)) => {
                    if let Err(error) = writer.write_all(&bytes).await {
                        if !lost {
                            let _ = worker.send(Event::Lost { id, error: Some(error.to_string()) }).await;
                        }
                        return;
                    }
                    if outbox.sent(bytes.len()) && !lost && worker.send(Event::Drained { id }).await.is_err() {
                        return;
                    }
                }
                Some(Command::Close) | None => {
                    let _ = writer.shutdown().await;
                    break;
                }
            },
        }
    }
    if !lost {
        let _ = worker.send(Event::Lost { id, error: None }).await;
    }
}
