//! The server: [`serve`] runs the HTTP application on a listener through the process's
//! lifecycle, and [`shutdown_signal`] resolves on SIGTERM or Ctrl-C.
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
//! lifecycle flags).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::http::{AppState, app};

/// Serves `state` on `listener` until `shutdown` resolves, then drains as described in the
/// module docs.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let readiness_delay = Duration::from_millis(state.config().shutdown.readiness_delay_ms);
    let drain_timeout = Duration::from_millis(state.config().shutdown.drain_timeout_ms);
    let (close_tx, close_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(
        listener,
        app(state.clone()).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = close_rx.await;
    })
    .into_future();
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
