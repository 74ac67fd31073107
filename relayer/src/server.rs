//! The server: [`serve`] runs the HTTP application on a listener through the process's
//! lifecycle, and [`shutdown_signal`] resolves on SIGTERM or Ctrl-C.
//!
//! Connections (HTTP/1, hyper): a client has `limits.headerReadTimeoutMs` to send a request's
//! headers, from when the connection opens or its previous response went out, else the
//! connection is closed (slowloris, and keep-alive connections idle between requests); a
//! connection on which no byte moves for `limits.idleTimeoutMs` is closed (a stalled upload, a
//! client that stops reading); at most `limits.maxConnections` are served at once. At the cap
//! the server stops accepting: new connections wait in the kernel's listen backlog (their
//! connect succeeds, their request waits) until an open one closes, rather than being reset.
//!
//! Shutdown, in order: the signal arrives → `/ready` answers 503 while requests are still
//! served (`shutdown.readinessDelayMs`, so load balancers stop routing here) → the listener
//! closes, new requests on open connections get 503, in-flight requests run to completion →
//! the order sagas this process drives (they run detached from requests) are waited for →
//! after `shutdown.drainTimeoutMs` in all the process stops waiting and hands the sagas left
//! over ([`crate::order_saga::OrderSagas::hand_over`]: their leases end, so any replica's
//! recovery takes them from the saga log at once instead of waiting the leases out).
//!
//! Room: after `http`, before `main`; uses [`crate::http`] (the application, its state and
//! lifecycle flags) and [`crate::config`] (the connection limits).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::ServiceExt as _;

use crate::config::LimitsConfig;
use crate::http::{AppState, app};

/// How long the accept loop pauses after an error that is not one connection's (out of file
/// descriptors, say): retrying at once would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// The "connection cap reached" warning is logged at most this often: a flood that keeps the
/// server at its cap would otherwise log once per connection it closes.
const CAP_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// The bounds on connections, from `limits`.
#[derive(Debug, Clone, Copy)]
struct ConnectionLimits {
    header_read_timeout: Duration,
    idle_timeout: Duration,
    max_connections: usize,
}

impl ConnectionLimits {
    fn new(limits: &LimitsConfig) -> Self {
        Self {
            header_read_timeout: Duration::from_millis(limits.header_read_timeout_ms),
            idle_timeout: limits.idle_timeout(),
            max_connections: usize::try_from(limits.max_connections).unwrap_or(usize::MAX),
        }
    }
}

/// Serves `state` on `listener` until `shutdown` resolves, then drains as described in the
/// module docs.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let readiness_delay = Duration::from_millis(state.config().shutdown.readiness_delay_ms);
    let drain_timeout = Duration::from_millis(state.config().shutdown.drain_timeout_ms);
    let limits = ConnectionLimits::new(&state.config().limits);
    let (close_tx, close_rx) = tokio::sync::oneshot::channel::<()>();
    let server = accept_loop(listener, app(state.clone()), limits, async move {
        let _ = close_rx.await;
    });
    tokio::pin!(server);

    tokio::select! {
        result = &mut server => return result,
        () = shutdown => {}
    }
    tracing::info!(?readiness_delay, "shutdown signal: readiness off");
    state.lifecycle().start_draining();
    tokio::select! {
        result = &mut server => return result,
        () = tokio::time::sleep(readiness_delay) => {}
    }
    tracing::info!(
        in_flight = state.metrics().in_flight(),
        ?drain_timeout,
        "closing the listener and draining"
    );
    state.lifecycle().start_stopping();
    let _ = close_tx.send(());
    let drained_by = tokio::time::Instant::now() + drain_timeout;
    match tokio::time::timeout(drain_timeout, &mut server).await {
        Ok(result) => {
            let left = drained_by.saturating_duration_since(tokio::time::Instant::now());
            if !state.exchange().sagas().wait_idle(left).await {
                let sagas = state.exchange().sagas().hand_over().await;
                tracing::warn!(
                    sagas,
                    "drain timeout: order sagas still running are handed over to recovery"
                );
            }
            tracing::info!("drained");
            result
        }
        Err(_) => {
            let sagas = state.exchange().sagas().hand_over().await;
            tracing::warn!(
                in_flight = state.metrics().in_flight(),
                sagas,
                "drain timeout: abandoning in-flight requests, order sagas handed over to recovery"
            );
            Ok(())
        }
    }
}

/// Accepts connections and serves `router` on each until `close` resolves; then stops
/// accepting, asks every open connection to finish (in-flight requests complete, idle ones
/// close) and resolves once all are closed.
async fn accept_loop(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    close: impl Future<Output = ()>,
) -> io::Result<()> {
    // NB: one permit per open connection, held by its task: the cap counts sockets being
    // served, whatever state they are in (reading headers, handling, idle keep-alive).
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    tokio::pin!(close);
    let mut cap_warned: Option<Instant> = None;
    loop {
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if cap_warned.is_none_or(|at| at.elapsed() >= CAP_WARNING_INTERVAL) {
                    cap_warned = Some(Instant::now());
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection cap reached: new connections wait in the listen backlog"
                    );
                }
                tokio::select! {
                    permit = Arc::clone(&permits).acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    () = &mut close => break,
                }
            }
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) if is_connection_error(&error) => continue,
                Err(error) => {
                    tracing::error!(%error, "accept failed; pausing");
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                        () = &mut close => break,
                    }
                }
            },
            () = &mut close => break,
        };
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Tracked {
            inner: stream,
            activity: Arc::clone(&activity),
        });
        let service =
            router
                .clone()
                .map_request(move |mut request: axum::http::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(remote));
                    request
                });
        let connection =
            graceful.watch(builder.serve_connection(io, TowerToHyperService::new(service)));
        let idle_timeout = limits.idle_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            tokio::pin!(connection);
            loop {
                let deadline = activity.last() + idle_timeout;
                tokio::select! {
                    result = &mut connection => {
                        if let Err(error) = result {
                            tracing::debug!(%error, %remote, "connection ended with an error");
                        }
                        break;
                    }
                    () = tokio::time::sleep_until(deadline) => {
                        if activity.last() + idle_timeout <= Instant::now() {
                            tracing::debug!(%remote, ?idle_timeout, "idle connection closed");
                            break;
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Errors of one connection (the peer gave up before it was accepted): the listener is fine.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// When a connection last moved a byte, as ms after it opened (an atomic: the connection's
/// reads and writes store it, its task reads it).
#[derive(Debug)]
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

pin_project_lite::pin_project! {
    /// A socket that records in [`Activity`] each read or write that moves bytes.
    struct Tracked {
        #[pin]
        inner: TcpStream,
        activity: Arc<Activity>,
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &polled
            && *n > 0
        {
            this.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &polled
            && *n > 0
        {
            this.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
