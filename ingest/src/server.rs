//! Starting and stopping the server: the store, the HTTP listener, and the maintenance loop
//! that seals finished blocks and drops data past the retention window.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use argus_tsdb::{Store, StoreConfig};

use crate::config::ServerConfig;
use crate::http::{AppState, router};

/// How often finished heads are sealed and expired data dropped.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(10);
/// How often freed heap pages are handed back to the OS, if requests or maintenance freed
/// any (see `memory.rs`).
const RECLAIM_EVERY: Duration = Duration::from_secs(1);

pub fn new_state(cfg: ServerConfig) -> AppState {
    let store = Store::new(StoreConfig::new(cfg.step_ms, cfg.retention_ms));
    AppState::new(cfg, Arc::new(store))
}

/// Runs the server until `shutdown` completes. Prints the bound addresses on stdout as
/// `argus: HTTP API listening on http://ADDR` and `argus: gRPC listening on ADDR` (tests that
/// bind port 0 read them from there).
pub async fn run(
    cfg: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(cfg.http_addr)
        .await
        .with_context(|| format!("binding the HTTP API to {}", cfg.http_addr))?;
    let addr = listener
        .local_addr()
        .context("reading the bound HTTP address")?;
    let grpc_listener = tokio::net::TcpListener::bind(cfg.grpc_addr)
        .await
        .with_context(|| format!("binding the gRPC services to {}", cfg.grpc_addr))?;
    let grpc_addr = grpc_listener
        .local_addr()
        .context("reading the bound gRPC address")?;
    let state = new_state(cfg);
    tracing::info!(
        step_ms = state.cfg.step_ms,
        retention_ms = state.cfg.retention_ms,
        data_dir = %state.cfg.data_dir.display(),
        "store ready (in memory; the write-ahead log and snapshots are not written yet)"
    );
    println!("argus: HTTP API listening on http://{addr}");
    println!("argus: gRPC listening on {grpc_addr}");

    let live_ticker = tokio::spawn(state.events.live.clone().run_ticker());
    let store = state.store.clone();
    let maintenance = tokio::spawn(async move {
        let mut tick = tokio::time::interval(MAINTENANCE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let store = store.clone();
            let pass = tokio::task::spawn_blocking(move || {
                let report = store.maintain();
                crate::memory::note_churn();
                report
            });
            match pass.await {
                Ok(r) if r.series_dropped > 0 || r.heads_sealed > 0 => {
                    tracing::debug!(
                        sealed = r.heads_sealed,
                        dropped = r.series_dropped,
                        "maintenance"
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "maintenance task failed"),
            }
        }
    });

    let reclaim = tokio::spawn(async move {
        let mut tick = tokio::time::interval(RECLAIM_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let started = std::time::Instant::now();
            if let Ok(true) = tokio::task::spawn_blocking(crate::memory::reclaim_if_churned).await {
                tracing::trace!(
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "heap trimmed"
                );
            }
        }
    });

    // One shutdown signal for both listeners.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut grpc_stop = stop_rx.clone();
    let grpc = tokio::spawn(crate::grpc::serve(
        state.clone(),
        grpc_listener,
        async move {
            let _ = grpc_stop.wait_for(|stop| *stop).await;
        },
    ));
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut http_stop = stop_rx;
    let app = router(state);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = http_stop.wait_for(|stop| *stop).await;
        })
        .await
        .context("serving the HTTP API");
    let grpc_served = grpc.await.context("the gRPC task failed")?;
    maintenance.abort();
    reclaim.abort();
    live_ticker.abort();
    served?;
    grpc_served.context("serving gRPC")
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
