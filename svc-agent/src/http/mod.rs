//! The agent's HTTP servers, as kube-proxy's pkg/proxy/healthcheck has them, all axum on
//! the agent's tokio runtime:
//!
//! - [`proxy_health`]: the agent's own `/healthz` and `/livez` ([`ProxyHealth`], kube-proxy's
//!   ProxyHealthServer) and the `/metrics` route (the registry is [`crate::metrics`]).
//! - [`service_health`]: one server per healthCheckNodePort ([`ServiceHealthServers`],
//!   kube-proxy's ServiceHealthServer).
//!
//! This module holds what they share: binding a listener, bounding its connections, and
//! running `axum::serve` on it until a stop signal.
use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, mpsc},
    task::{Context, Poll},
    time::Duration,
};

use axum::Router;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Sleep,
};
use tracing::{debug, warn};

pub mod lb;
pub mod proxy_health;
pub mod service_health;

pub use lb::LbStatus;
pub use proxy_health::{ProxyHealth, StatusAddrs};
pub use service_health::ServiceHealthServers;

/// Binds `addr` now, so that a port in use is the caller's error (with the address in the
/// message) rather than a task's. As Go's `net.Listen("tcp", addr)`, which kube-proxy's
/// servers use, an unspecified address (0.0.0.0 or [::]) means every address of both
/// families: one IPv6 socket on [::] that also takes IPv4 (IPV6_V6ONLY off, whatever
/// net.ipv6.bindv6only says), or 0.0.0.0 alone where IPv6 is not available (not in the
/// kernel, or disabled). SO_REUSEADDR as std sets it, so a port whose last connections are
/// still in TIME_WAIT binds again at once. Synchronous: the agent loop binds
/// healthCheckNodePorts from a blocking section.
///
/// # Panics
/// Outside a tokio runtime context (a task, or a thread that entered the runtime), as
/// `tokio::net::TcpListener::from_std` does.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let result = if addr.ip().is_unspecified() {
        let dual = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, addr.port()));
        match bind_socket(dual, true) {
            Err(e) if ipv6_unavailable(&e) => {
                let v4 = SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, addr.port()));
                bind_socket(v4, false).map_err(|e| (v4, e))
            }
            r => r.map_err(|e| (dual, e)),
        }
    } else {
        bind_socket(addr, false).map_err(|e| (addr, e))
    };
    let listener =
        result.map_err(|(at, e)| io::Error::new(e.kind(), format!("binding {at}: {e}")))?;
    TcpListener::from_std(listener)
}

/// A nonblocking listening socket on `addr`; `dual`: an IPv6 one that also takes IPv4.
fn bind_socket(addr: SocketAddr, dual: bool) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if dual {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The errors of an IPv6 socket on a kernel without IPv6 (or with it disabled).
fn ipv6_unavailable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL) | Some(libc::EPROTONOSUPPORT)
    )
}

/// Serves `router` on `listener` in a task of the current runtime until `stop` completes;
/// then it stops accepting, closes the listener, and lets connections in flight finish
/// (axum's graceful shutdown). `what` names the server in the log.
///
/// # Panics
/// Outside a tokio runtime context, as `tokio::spawn` does.
pub(crate) fn spawn<L>(
    listener: L,
    router: Router,
    stop: impl Future<Output = ()> + Send + 'static,
    what: &'static str,
) where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let addr = listener.local_addr().ok();
    tokio::spawn(async move {
        // Only the listener can fail, and axum retries its errors itself: an error here
        // means the server is gone, which the log must say.
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(stop)
            .await
        {
            warn!(addr = %crate::logfmt::comma_list(addr, "unknown"), error = %e, "{what} stopped");
        }
    });
}

/// What a [`Bounded`] listener allows each connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Connections served at once; further clients wait in the kernel's accept queue
    /// (itself bounded by the listen backlog) until one ends.
    pub max_connections: usize,
    /// How long a connection may stay open, reading the request and writing the answer
    /// included; past it, its reads and writes fail and hyper drops it. axum::serve sets no
    /// timer on hyper, so hyper's own header read timeout never fires: this is the bound
    /// on slow or silent clients.
    pub connection_time: Duration,
}

/// A TCP listener that serves at most [`Limits::max_connections`] connections at once,
/// each for at most [`Limits::connection_time`], and reports through [`Closed`] when it
/// is closed (axum drops it on a graceful stop before it waits for the connections).
pub(crate) struct Bounded {
    inner: TcpListener,
    limits: Limits,
    permits: Arc<Semaphore>,
    /// Dropped with the listener: what [`Closed::wait`] waits for.
    _closed: mpsc::Sender<()>,
}

/// Learns when a [`Bounded`] listener has been closed (its port is free again).
pub(crate) struct Closed(mpsc::Receiver<()>);

impl Closed {
    /// Blocks the calling thread until the listener is closed, at most `timeout`. False if
    /// it was still open then. Blocking: call it outside async code (the agent loop runs in
    /// `block_in_place`), while the runtime's workers run the server's task.
    pub fn wait(&self, timeout: Duration) -> bool {
        // Nothing is ever sent: the only way out other than the timeout is the sender
        // being dropped with the listener.
        matches!(
            self.0.recv_timeout(timeout),
            Err(mpsc::RecvTimeoutError::Disconnected)
        )
    }
}

impl Bounded {
    pub fn new(inner: TcpListener, limits: Limits) -> (Bounded, Closed) {
        let (tx, rx) = mpsc::channel();
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        (
            Bounded {
                inner,
                limits,
                permits,
                _closed: tx,
            },
            Closed(rx),
        )
    }
}

/// After an accept error other than a connection's own (e.g. EMFILE), wait this long
/// instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

impl axum::serve::Listener for Bounded {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        // Room first, then accept: waiting clients cost a queue entry in the kernel, not a
        // task here. The semaphore is never closed, so acquiring only waits.
        let permit = self.permits.clone().acquire_owned().await.ok();
        loop {
            match self.inner.accept().await {
                Ok((stream, peer)) => {
                    let deadline = Box::pin(tokio::time::sleep(self.limits.connection_time));
                    return (
                        Conn {
                            stream,
                            deadline,
                            _permit: permit,
                        },
                        peer,
                    );
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    debug!(error = %e, "accept: connection gone before it was accepted");
                }
                Err(e) => {
                    warn!(addr = %crate::logfmt::comma_list(self.inner.local_addr().ok(), "unknown"), error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An accepted connection of a [`Bounded`] listener: its reads and writes fail once its
/// time is up, and it holds its place among the listener's connections until dropped.
pub(crate) struct Conn {
    stream: TcpStream,
    deadline: Pin<Box<Sleep>>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Conn {
    /// Err once the connection's time is up. Polling the timer also registers the task's
    /// waker, so a connection waiting for a silent client wakes up at the deadline.
    fn check_time(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection time limit reached",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_time(cx)?;
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check_time(cx)?;
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check_time(cx)?;
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_time(cx)?;
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    /// Closing is always allowed, also past the deadline.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
