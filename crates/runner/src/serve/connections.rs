//! The server's connections: the accept loop with a cap on open connections, a read deadline for each phase of
//! a connection (request headers, request body, idle keep-alive), and shutdown in three steps: stop accepting,
//! let the requests being answered finish, drop the connections still sending a request after a grace period.
//!
//! A connection's reads carry the deadline of its phase ([`ConnectionClock`]); when it passes, the read fails and
//! the connection is closed, so a client that sends a byte a second cannot hold a connection open. A request's
//! phase is "answering" once its body is read (the routes say so through the clock in the request's extensions),
//! and then its reads have no deadline: the model's time is bounded by the request deadline instead.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Result;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::{sleep, timeout, Instant, Sleep};

/// The most bytes a request line and its headers may take (hyper answers 431 beyond).
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The body deadline of a connection is this much later than the routes' own body timeout, which answers 408
/// first; the connection's deadline only catches what the routes do not read.
const BODY_DEADLINE_SLACK: Duration = Duration::from_secs(1);

/// The most time a connection over the cap is kept to be answered.
const TURN_AWAY_TIME: Duration = Duration::from_millis(100);

/// File descriptors kept free for the model's files, the listener and the runtime when the open-file limit caps
/// the number of connections.
const RESERVED_FILES: u64 = 32;

/// The connection cap and the time limits of `runner serve`.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Time for a request's line and headers, from its first byte (or from the connection's start).
    pub header_timeout: Duration,
    /// Time for a request's body, from the end of its headers.
    pub body_timeout: Duration,
    /// Time a keep-alive connection may wait, idle, for its next request.
    pub idle_timeout: Duration,
    /// After a shutdown signal, the time half-sent requests get to arrive before their connections are dropped.
    pub shutdown_grace: Duration,
}

/// Where a connection is in its request cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between requests on a keep-alive connection.
    Idle,
    /// Reading a request's line and headers.
    Headers,
    /// Reading a request's body.
    Body,
    /// The request is read and being answered.
    Answering,
}

/// A connection's phase and the deadline of its reads, shared by the connection's reader and its requests.
#[derive(Debug)]
pub struct ConnectionClock {
    limits: ConnectionLimits,
    state: Mutex<(Phase, Option<Instant>)>,
}

impl ConnectionClock {
    /// A new connection, which must send its first request's headers within the header timeout.
    fn new(limits: ConnectionLimits) -> Self {
        Self { limits, state: Mutex::new((Phase::Headers, Some(Instant::now() + limits.header_timeout))) }
    }

    fn enter(&self, phase: Phase) {
        let limit = match phase {
            Phase::Idle => Some(self.limits.idle_timeout),
            Phase::Headers => Some(self.limits.header_timeout),
            Phase::Body => Some(self.limits.body_timeout + BODY_DEADLINE_SLACK),
            Phase::Answering => None,
        };
        *self.lock() = (phase, limit.map(|l| Instant::now() + l));
    }

    /// The request's body is read: it is being answered, and its connection's reads have no deadline.
    pub fn answering(&self) {
        self.enter(Phase::Answering);
    }

    fn is_answering(&self) -> bool {
        self.lock().0 == Phase::Answering
    }

    /// Bytes came in: an idle connection is now reading a request's headers.
    fn bytes_arrived(&self) {
        if self.lock().0 == Phase::Idle {
            self.enter(Phase::Headers);
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.lock().1
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Phase, Option<Instant>)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A TCP stream whose reads fail with `TimedOut` once its connection's deadline has passed.
struct DeadlineStream {
    stream: TcpStream,
    clock: Arc<ConnectionClock>,
    timer: Pin<Box<Sleep>>,
}

impl DeadlineStream {
    fn new(stream: TcpStream, clock: Arc<ConnectionClock>) -> Self {
        let first = clock.deadline().unwrap_or_else(Instant::now);
        Self { stream, clock, timer: Box::pin(tokio::time::sleep_until(first)) }
    }
}

impl AsyncRead for DeadlineStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(deadline) = this.clock.deadline() {
            if this.timer.deadline() != deadline {
                this.timer.as_mut().reset(deadline);
            }
            // Polling the timer also wakes this read when the deadline comes.
            if this.timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client was too slow")));
            }
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.clock.bytes_arrived();
        }
        read
    }
}

impl AsyncWrite for DeadlineStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Hands each request of one connection to the router, with the connection's clock in its extensions, and
/// moves the clock through the request's phases.
#[derive(Clone)]
struct ConnectionService {
    router: Router,
    clock: Arc<ConnectionClock>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for ConnectionService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        self.clock.enter(Phase::Body);
        let mut request: Request = request.map(Body::new);
        request.extensions_mut().insert(Arc::clone(&self.clock));
        let mut router = self.router.clone();
        let clock = Arc::clone(&self.clock);
        Box::pin(async move {
            let response = tower_service::Service::call(&mut router, request).await;
            clock.enter(Phase::Idle);
            response
        })
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting and returns once every
/// connection is closed (see the module's documentation).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop, stopping) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted: wait, go on.
                    eprintln!("runner serve: cannot accept a connection: {e}");
                    sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small requests and answers go out at once instead of waiting to be coalesced.
        let _ = stream.set_nodelay(true);
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => {
                tokio::spawn(serve_connection(stream, router.clone(), limits, stopping.clone(), slot));
            }
            Err(_) => {
                tokio::spawn(turn_away(stream, limits.max_connections));
            }
        }
    }
    drop(listener);
    stop.send_replace(true);
    // Each connection gives its slot back when it ends.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _closed = slots.acquire_many(all).await;
    Ok(())
}

/// One connection, from its first request to its close (see the module's documentation for shutdown).
async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: ConnectionLimits,
    mut stopping: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let clock = Arc::new(ConnectionClock::new(limits));
    let io = TokioIo::new(DeadlineStream::new(stream, Arc::clone(&clock)));
    let service = ConnectionService { router, clock: Arc::clone(&clock) };
    let connection =
        hyper::server::conn::http1::Builder::new().max_buf_size(MAX_HEAD_BYTES).serve_connection(io, service);
    tokio::pin!(connection);
    // Errors here are the client's (reset, too slow, malformed): the connection just ends.
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = stopping.wait_for(|stop| *stop) => {}
    }
    // Idle connections close now; one answering a request closes after its answer.
    connection.as_mut().graceful_shutdown();
    tokio::select! {
        _ = connection.as_mut() => return,
        () = sleep(limits.shutdown_grace) => {}
    }
    // Past the grace period, a request still arriving is dropped; one being answered still finishes.
    while clock.is_answering() {
        tokio::select! {
            _ = connection.as_mut() => return,
            () = sleep(Duration::from_millis(20)) => {}
        }
    }
}

/// Answers a connection over the cap with a 503 in the OpenAI error shape, and closes it.
async fn turn_away(mut stream: TcpStream, max_connections: usize) {
    let body = serde_json::json!({"error": {
        "message": format!("the server has its limit of {max_connections} connections open; retry later"),
        "type": "server_error",
        "code": "too_many_connections",
    }})
    .to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = timeout(TURN_AWAY_TIME, async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        // Reading what the client sent lets the answer arrive instead of a reset; briefly, as the connection's
        // file descriptor is one the cap is short of.
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    })
    .await;
}

/// `wanted` connections, or fewer where the process's open-file limit would run out first (each connection
/// takes a file descriptor); says so when it lowers the cap.
pub fn fit_to_open_files(wanted: usize) -> usize {
    let Some(limit) = open_file_limit() else { return wanted };
    let room = usize::try_from(limit.saturating_sub(RESERVED_FILES).max(1)).unwrap_or(usize::MAX);
    if room < wanted {
        eprintln!(
            "runner serve: the open-file limit is {limit}, so at most {room} connections are kept open (not {wanted})"
        );
        return room;
    }
    wanted
}

/// The soft limit on open files (`ulimit -n`), where the system tells it (Linux's `/proc/self/limits`).
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            max_connections: 8,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(5),
        }
    }

    /// Seconds from now to the clock's deadline.
    fn left(clock: &ConnectionClock) -> Option<f64> {
        clock.deadline().map(|d| d.saturating_duration_since(Instant::now()).as_secs_f64())
    }

    #[test]
    fn each_phase_has_its_deadline_and_answering_has_none() {
        let near = |got: Option<f64>, want: f64| got.is_some_and(|g| (want - 0.5..=want).contains(&g));
        let clock = ConnectionClock::new(limits());
        assert!(near(left(&clock), 10.0), "a new connection: {:?}", left(&clock));
        clock.enter(Phase::Body);
        assert!(near(left(&clock), 31.0), "a body: {:?}", left(&clock));
        clock.answering();
        assert!(clock.is_answering() && clock.deadline().is_none());
        clock.enter(Phase::Idle);
        assert!(near(left(&clock), 60.0), "idle: {:?}", left(&clock));
        clock.bytes_arrived();
        assert!(near(left(&clock), 10.0), "the headers' clock starts at the first byte: {:?}", left(&clock));
        let deadline = clock.deadline();
        std::thread::sleep(Duration::from_millis(5));
        clock.bytes_arrived();
        assert_eq!(clock.deadline(), deadline, "later bytes do not extend it");
    }

    #[test]
    fn the_open_file_limit_is_read() {
        if std::path::Path::new("/proc/self/limits").exists() {
            assert!(open_file_limit().is_some_and(|n| n > 0));
        }
        assert!(fit_to_open_files(1) == 1);
    }
}
