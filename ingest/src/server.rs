//! Starting and stopping the server: the store, the HTTP listener, and the maintenance loop
//! that seals finished blocks and drops data past the retention window.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use argus_tsdb::{Durability, Recovery, Store, StoreConfig, WalSync, system_clock};

use crate::config::{ServerConfig, WalFsync};
use crate::http::router;
use crate::resend::AgentRegistry;
use crate::state::AppState;

/// How long a cluster node keeps a series it named but holds no values of (a gateway's).
const GATEWAY_SERIES_KEPT_MS: i64 = 3_600_000;

/// How often freed heap pages are handed back to the OS, if requests or maintenance freed
/// any (see `memory.rs`).
const RECLAIM_EVERY: Duration = Duration::from_millis(250);

/// A state over an in-memory store (tests and throwaway use).
pub fn new_state(cfg: ServerConfig) -> AppState {
    let store = Store::new(StoreConfig::new(cfg.step_ms, cfg.retention_ms));
    AppState::new(cfg, Arc::new(store), AgentRegistry::default())
}

/// Freezes the clock of an in-memory store (`--ephemeral`, or a cluster node) at this many
/// milliseconds since the epoch. For tests only: the Stack Language's data-file cases run
/// against a real cluster with their data at fixed times, as `argus eval` runs them.
const FIXED_CLOCK_ENV: &str = "ARGUS_TEST_FIXED_CLOCK_MS";

/// An in-memory state, its store's clock frozen if [`FIXED_CLOCK_ENV`] says so.
fn in_memory_state(cfg: ServerConfig) -> anyhow::Result<AppState> {
    let Ok(text) = std::env::var(FIXED_CLOCK_ENV) else {
        return Ok(new_state(cfg));
    };
    let now: i64 = text.trim().parse().with_context(|| {
        format!("{FIXED_CLOCK_ENV}={text:?} is not a time in milliseconds since the epoch")
    })?;
    tracing::warn!(
        now_ms = now,
        "{FIXED_CLOCK_ENV} is set: the store's clock is frozen (tests only)"
    );
    let store = Store::with_clock(
        StoreConfig::new(cfg.step_ms, cfg.retention_ms),
        Arc::new(move || now),
    );
    Ok(AppState::new(
        cfg,
        Arc::new(store),
        AgentRegistry::default(),
    ))
}

/// The server's state: in memory with `--ephemeral`, else recovered from `--data-dir`
/// (newest whole snapshot, then the write-ahead log), with what recovery found.
pub fn open_state(cfg: ServerConfig) -> anyhow::Result<(AppState, Option<Recovery>)> {
    let tokens = Arc::new(crate::auth::TokenStore::open(cfg.auth_file.as_deref())?);
    let (mut state, recovery) = open_store(cfg)?;
    state.tokens = tokens;
    Ok((state, recovery))
}

fn open_store(cfg: ServerConfig) -> anyhow::Result<(AppState, Option<Recovery>)> {
    // In a cluster the partitions' streams are the log: a node's store lives in memory and
    // a restarted node rebuilds it from the streams.
    if cfg.ephemeral || cfg.cluster.is_some() {
        return Ok((in_memory_state(cfg)?, None));
    }
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    let agents = AgentRegistry::default();
    let durability = Durability {
        sync: match cfg.wal_fsync {
            WalFsync::Always => WalSync::EveryWrite,
            WalFsync::Every(_) => WalSync::Periodic,
        },
        ..Durability::new(&cfg.data_dir)
    };
    let (store, recovery) = Store::open(
        StoreConfig::new(cfg.step_ms, cfg.retention_ms),
        system_clock(),
        durability,
        &mut |origin| agents.restore_origin(origin),
    )
    .with_context(|| format!("opening the store in {}", cfg.data_dir.display()))?;
    if let Some(extra) = &recovery.extra {
        agents.restore_stored(extra);
    }
    Ok((AppState::new(cfg, Arc::new(store), agents), Some(recovery)))
}

/// Takes one snapshot: the log segment and the agents' stored batches are captured with no
/// agent batch between claim and store, then the store is written out.
pub fn snapshot(state: &AppState) -> anyhow::Result<argus_tsdb::SnapshotReport> {
    let (start, extra) = {
        let _gate = state.agents.snapshot_gate.write();
        let start = state.store.begin_snapshot()?;
        (start, state.agents.encode_stored())
    };
    Ok(state.store.write_snapshot(start, &extra)?)
}

/// Syncs the write-ahead log on its interval and snapshots the store on its own, logging
/// failures (a full disk) without stopping: writes fail with a retryable error meanwhile,
/// and both resume when the disk has room again.
async fn durability_loop(state: AppState) {
    let sync_every = match state.cfg.wal_fsync {
        WalFsync::Every(ms) => Duration::from_millis(ms.max(1) as u64),
        WalFsync::Always => Duration::from_secs(3600),
    };
    let snapshot_every = Duration::from_millis(state.cfg.snapshot_interval_ms.max(1) as u64);
    let mut sync_tick = tokio::time::interval(sync_every);
    sync_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut snapshot_tick =
        tokio::time::interval_at(tokio::time::Instant::now() + snapshot_every, snapshot_every);
    snapshot_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = sync_tick.tick() => {
                let store = state.store.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.sync_wal()).await {
                    tracing::error!(error = %e, "write-ahead log sync failed");
                }
            }
            _ = snapshot_tick.tick() => {
                let st = state.clone();
                match tokio::task::spawn_blocking(move || snapshot(&st)).await {
                    Ok(Ok(r)) => tracing::info!(
                        path = %r.path.display(),
                        series = r.series,
                        bytes = r.bytes,
                        elapsed_ms = r.elapsed.as_millis() as u64,
                        wal_segments_removed = r.wal_segments_removed,
                        "snapshot written"
                    ),
                    Ok(Err(e)) => tracing::error!(error = %format!("{e:#}"), "snapshot failed; the previous one and the log are intact"),
                    Err(e) => tracing::error!(error = %e, "snapshot task failed"),
                }
            }
        }
    }
}

/// Runs the server until `shutdown` completes. Prints the bound addresses on stdout as
/// Connections the kernel queues for a listener before the server accepts them. The usual
/// 128 (mio's) is a burst of new agents or clients: past it the kernel drops their SYNs and
/// each waits a second to try again (seen: 5,000 connections took 22 s to open).
const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr` with [`LISTEN_BACKLOG`] (the kernel caps it at `somaxconn`).
fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// `argus: HTTP API listening on http://ADDR` and `argus: gRPC listening on ADDR` (tests that
/// bind port 0 read them from there).
pub async fn run(
    cfg: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (mut state, recovery) = tokio::task::spawn_blocking(move || open_state(cfg))
        .await
        .context("the recovery task failed")??;
    match &recovery {
        None if state.cfg.cluster.is_some() => {
            println!("argus: in memory, rebuilt from the cluster's streams (the log) at start")
        }
        None => println!("argus: in memory only (--ephemeral): nothing is kept on disk"),
        Some(r) => {
            println!("argus: recovered {r}");
            for line in r.snapshots_rejected.iter().chain(&r.damage) {
                println!("argus: recovery: {line}");
                tracing::warn!(what = %line, "damage found at recovery");
            }
        }
    }
    let (http_addr, grpc_addr) = (state.cfg.http_addr, state.cfg.grpc_addr);
    let listener =
        listen(http_addr).with_context(|| format!("binding the HTTP API to {http_addr}"))?;
    let addr = listener
        .local_addr()
        .context("reading the bound HTTP address")?;
    let grpc_listener =
        listen(grpc_addr).with_context(|| format!("binding the gRPC services to {grpc_addr}"))?;
    let grpc_addr = grpc_listener
        .local_addr()
        .context("reading the bound gRPC address")?;
    // A cluster that refuses this node (another partition count) stops it before it
    // serves; an unreachable NATS does not: the node serves, not ready, and keeps trying.
    if let Some(settings) = state.cfg.cluster.clone() {
        // A gateway names in its store every series it takes, most of which other nodes
        // store: kept an hour, not recreated after every maintenance pass.
        let passes = GATEWAY_SERIES_KEPT_MS / state.cfg.maintenance_interval_ms.max(1);
        state
            .store
            .keep_unwritten_series(u32::try_from(passes).unwrap_or(u32::MAX));
        let membership = crate::cluster::Membership::new(
            settings,
            addr,
            grpc_addr,
            state.store.clone(),
            state.events.live.clone(),
        );
        membership
            .first_attempt()
            .await
            .context("joining the cluster")?;
        state.cluster = Some(membership);
    }
    tracing::info!(
        step_ms = state.cfg.step_ms,
        retention_ms = state.cfg.retention_ms,
        data_dir = %state.cfg.data_dir.display(),
        durable = state.store.is_durable(),
        "store ready"
    );
    let scheme = if state.cfg.tls.is_some() {
        "https"
    } else {
        "http"
    };
    println!("argus: HTTP API listening on {scheme}://{addr}");
    println!("argus: gRPC listening on {grpc_addr}");

    let live_ticker = tokio::spawn(state.events.live.clone().run_ticker());
    let loss_series = tokio::spawn(crate::loss::write_series(state.clone()));
    let reload_tokens = tokio::spawn(reload_tokens_on_hangup(state.tokens.clone()));
    let durability = state
        .store
        .is_durable()
        .then(|| tokio::spawn(durability_loop(state.clone())));
    let store = state.store.clone();
    let every = Duration::from_millis(state.cfg.maintenance_interval_ms as u64);
    let maintenance = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
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
    // A cluster that refuses the node later (it was unreachable at start) stops it too.
    let refused: Arc<parking_lot::Mutex<Option<anyhow::Error>>> = Arc::default();
    let membership = state.cluster.clone().map(|m| tokio::spawn(m.run()));
    let refused_by = refused.clone();
    let leaving = state.cluster.clone();
    tokio::spawn(async move {
        let refusal = async {
            match membership {
                Some(task) => task.await.ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown => {
                // A store node hands its partitions over before it stops serving.
                if let Some(membership) = leaving {
                    membership.leave().await;
                }
            }
            Some(e) = refusal => {
                tracing::error!(error = %format!("{e:#}"), "the cluster refused this node; stopping");
                *refused_by.lock() = Some(e);
            }
        }
        let _ = stop_tx.send(true);
    });
    let final_state = state.clone();
    let header_timeout = Duration::from_millis(state.cfg.http_header_timeout_ms.max(1) as u64);
    let tls = match &state.cfg.tls {
        Some(files) => Some(files.http_acceptor()?),
        None => None,
    };
    let connections = state.connections.clone();
    let app = router(state);
    let served =
        crate::http::serve::serve(listener, app, header_timeout, tls, connections, stop_rx)
            .await
            .context("serving the HTTP API");
    let grpc_served = grpc.await.context("the gRPC task failed")?;
    maintenance.abort();
    reclaim.abort();
    live_ticker.abort();
    loss_series.abort();
    reload_tokens.abort();
    if let Some(task) = durability {
        task.abort();
        // A clean stop leaves a snapshot, so the next start replays almost no log.
        match tokio::task::spawn_blocking(move || snapshot(&final_state)).await {
            Ok(Ok(r)) => tracing::info!(series = r.series, "final snapshot written"),
            Ok(Err(e)) => {
                tracing::error!(error = %format!("{e:#}"), "final snapshot failed; the log is kept")
            }
            Err(e) => tracing::error!(error = %e, "final snapshot task failed"),
        }
    }
    if let Some(e) = refused.lock().take() {
        return Err(e.context("the cluster refused this node"));
    }
    served?;
    grpc_served.context("serving gRPC")
}

/// Reloads `--auth-file` on every SIGHUP (token rotation without a restart). A file that
/// does not load is reported, and the tokens before it stay in force.
async fn reload_tokens_on_hangup(tokens: Arc<crate::auth::TokenStore>) {
    #[cfg(unix)]
    {
        let Ok(mut hangups) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hangups.recv().await.is_some() {
            match tokens.reload() {
                Ok(n) => tracing::info!(tokens = n, "auth file reloaded"),
                Err(e) => tracing::error!(
                    error = %format!("{e:#}"),
                    "auth file not reloaded; the tokens before it stay in force"
                ),
            }
        }
    }
    #[cfg(not(unix))]
    std::future::pending::<()>().await;
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
