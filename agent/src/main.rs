//! `argus-agent`: runs beside a service and streams to an Argus server over gRPC: the host's
//! metrics every step, the service's StatsD metrics, Prometheus scrapes and Atlas publish
//! payloads, and its raw events (HTTP intake, tailed JSON-lines files). Data waits in a
//! bounded buffer until the server acknowledges it, so a server restart loses nothing the
//! buffer can hold.

use argus_agent::{
    config, health, host, intake, outbox, pushdown, registry, scrape, sender, spectatord, statsd,
    tail,
};

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use config::{AgentConfig, FileConfig, Overrides};
use health::Health;
use intake::{EventBatcher, Intake};
use outbox::{Catalog, Outbox, Payload};
use registry::Registry;

/// argus-agent: streams a host's metrics and a service's metrics and raw events to an Argus
/// server over gRPC.
///
/// Every option can also be set in a TOML file (--config; keys spelled like the long options,
/// e.g. `statsd-addr = "127.0.0.1:8125"`, plus `[[scrape]] url = ...` and
/// `[[tail]] path = ... stream = ...` tables) or an ARGUS_AGENT_* environment variable.
/// Flags win over the environment, which wins over the file.
#[derive(Parser)]
#[command(name = "argus-agent", version)]
struct Cli {
    /// TOML file with settings.
    #[arg(long, env = "ARGUS_AGENT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// gRPC address of the Argus server [default: http://127.0.0.1:4317]; several,
    /// comma-separated (a cluster's nodes), are tried in turn, moving on when one fails.
    #[arg(long, env = "ARGUS_AGENT_SERVER", value_name = "URL")]
    server: Option<String>,
    /// Bearer token sent to the server (a `write` token when the server has --auth-file).
    /// Prefer the environment or the config file to keep it out of process listings.
    #[arg(
        long,
        env = "ARGUS_AGENT_TOKEN",
        value_name = "SECRET",
        hide_env_values = true
    )]
    token: Option<String>,
    /// PEM CA to trust for an https:// --server.
    #[arg(long, env = "ARGUS_AGENT_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// PEM client certificate, for a server that requires one (mutual TLS).
    #[arg(long, env = "ARGUS_AGENT_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "ARGUS_AGENT_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// HTTP intake for the service: POST /api/v1/publish (Atlas payloads), POST
    /// /v1/events/{stream} (NDJSON events), GET /v1/health [default: 127.0.0.1:7102].
    #[arg(long, env = "ARGUS_AGENT_HTTP_ADDR", value_name = "HOST:PORT")]
    http_addr: Option<String>,
    /// StatsD listener (UDP) [default: 127.0.0.1:8125].
    #[arg(long, env = "ARGUS_AGENT_STATSD_ADDR", value_name = "HOST:PORT")]
    statsd_addr: Option<String>,
    /// SpectatorD's line protocol on UDP, where Spectator clients write by default
    /// [default: 127.0.0.1:1234].
    #[arg(long, env = "ARGUS_AGENT_SPECTATORD_ADDR", value_name = "HOST:PORT")]
    spectatord_addr: Option<String>,
    /// SpectatorD's Unix datagram socket; `none` for none
    /// [default: /run/spectatord/spectatord.unix, skipped with a warning if it cannot be made].
    #[arg(long, env = "ARGUS_AGENT_SPECTATORD_SOCKET", value_name = "PATH")]
    spectatord_socket: Option<String>,
    /// A tag added to everything sent, KEY=VALUE (repeatable).
    #[arg(
        long = "tag",
        env = "ARGUS_AGENT_TAGS",
        value_delimiter = ',',
        value_name = "KEY=VALUE"
    )]
    tags: Vec<String>,
    /// Step over which metrics are aggregated and sent; should match the server's
    /// [default: 60s].
    #[arg(long, env = "ARGUS_AGENT_STEP", value_name = "DURATION")]
    step: Option<String>,
    /// Memory for data not yet acknowledged by the server; when full, the oldest batches are
    /// dropped and counted [default: 8388608].
    #[arg(long, env = "ARGUS_AGENT_BUFFER_BYTES", value_name = "BYTES")]
    buffer_bytes: Option<usize>,
    /// Memory the agent may use as a whole: the buffer, 48 MiB for itself, and the rest for
    /// the series it knows (past it new series are dropped and counted) [default: 268435456].
    #[arg(long, env = "ARGUS_AGENT_MEMORY_LIMIT", value_name = "BYTES")]
    memory_limit: Option<usize>,
    /// Series one step may hold (StatsD names, host metrics, ...); updates of further series
    /// are dropped and counted as argus.agent.dropped{reason=series_per_step}
    /// [default: 100000].
    #[arg(long, env = "ARGUS_AGENT_MAX_SERIES_PER_STEP", value_name = "N")]
    max_series_per_step: Option<usize>,
    /// This host's name, the `nf.node` tag [default: the kernel's host name].
    #[arg(long, env = "ARGUS_AGENT_NODE", value_name = "NAME")]
    node: Option<String>,
    /// The application served here, the `nf.app` tag [default: $NETFLIX_APP if set].
    #[arg(long, env = "NETFLIX_APP", value_name = "NAME")]
    app: Option<String>,
    /// The cluster, the `nf.cluster` tag [default: $NETFLIX_CLUSTER if set].
    #[arg(long, env = "NETFLIX_CLUSTER", value_name = "NAME")]
    cluster: Option<String>,
    /// Do not collect host metrics from /proc.
    #[arg(long, env = "ARGUS_AGENT_NO_HOST_METRICS")]
    no_host_metrics: bool,
    /// Where /proc is [default: /proc].
    #[arg(long, env = "ARGUS_AGENT_PROC_ROOT", value_name = "DIR")]
    proc_root: Option<PathBuf>,
    /// A Prometheus endpoint to scrape, http[s]://HOST:PORT/PATH (repeatable; the path
    /// defaults to /metrics; a CA for https:// goes in the config file's [[scrape]] ca).
    #[arg(long = "scrape", value_name = "URL")]
    scrape: Vec<String>,
    /// How often scrape targets are read [default: 10s].
    #[arg(long, env = "ARGUS_AGENT_SCRAPE_INTERVAL", value_name = "DURATION")]
    scrape_interval: Option<String>,
    /// A JSON-lines file to follow into an event stream, PATH or PATH=STREAM (repeatable;
    /// the stream defaults to `logs`).
    #[arg(long = "tail", value_name = "PATH[=STREAM]")]
    tail: Vec<String>,
}

impl Cli {
    fn into_config(self) -> anyhow::Result<AgentConfig> {
        let file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        Overrides {
            server: self.server,
            token: self.token,
            tls_ca: self.tls_ca,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            http_addr: self.http_addr,
            statsd_addr: self.statsd_addr,
            spectatord_addr: self.spectatord_addr,
            spectatord_socket: self.spectatord_socket,
            step: self.step,
            tags: self.tags,
            buffer_bytes: self.buffer_bytes,
            memory_limit: self.memory_limit,
            max_series_per_step: self.max_series_per_step,
            node: self.node,
            app: self.app,
            cluster: self.cluster,
            no_host_metrics: self.no_host_metrics,
            proc_root: self.proc_root,
            scrape: self.scrape,
            scrape_interval: self.scrape_interval,
            tail: self.tail,
        }
        .resolve(file)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ARGUS_AGENT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = cli.into_config().and_then(|cfg| {
        // Two threads: the agent must stay light beside the service it serves.
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(2)
            .enable_all()
            .thread_name("argus-agent")
            .build()
            .context("starting the async runtime")?
            .block_on(run(cfg))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("argus-agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Milliseconds until the next multiple of `step` (step boundaries are wall-clock aligned,
/// as Atlas's are).
fn until_next_step(step_ms: i64) -> (i64, Duration) {
    let now = intake::now_ms();
    let next = (now / step_ms + 1) * step_ms;
    (next, Duration::from_millis((next - now) as u64))
}

async fn run(cfg: AgentConfig) -> anyhow::Result<()> {
    let health = Arc::new(Health::default());
    let catalog = Arc::new(Catalog::with_budget(cfg.series_bytes()));
    let outbox = Arc::new(Outbox::new(
        cfg.buffer_bytes,
        health.clone(),
        catalog.clone(),
    ));
    let registry = Arc::new(
        Registry::new(catalog.clone(), cfg.tags.clone())
            .limited(cfg.max_series_per_step, health.clone()),
    );
    let pushdown = Arc::new(pushdown::Pushdown::default());
    let events = Arc::new(EventBatcher::new(
        outbox.clone(),
        pushdown.clone(),
        health.clone(),
    ));
    let sets = Arc::new(statsd::Sets::default());
    let node = cfg
        .tags
        .iter()
        .find(|(k, _)| k == "nf.node")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();

    let statsd_socket = statsd::bind(cfg.statsd_addr)
        .await
        .with_context(|| format!("binding the StatsD listener to {}", cfg.statsd_addr))?;
    let statsd_drops = statsd::KernelDrops::of(&statsd_socket);
    let http = tokio::net::TcpListener::bind(cfg.http_addr)
        .await
        .with_context(|| format!("binding the HTTP intake to {}", cfg.http_addr))?;
    // Tests start agents on port 0 and read the real addresses from here.
    println!(
        "argus-agent: HTTP intake listening on http://{}",
        http.local_addr().context("reading the intake address")?
    );
    println!(
        "argus-agent: StatsD listening on {}",
        statsd_socket
            .local_addr()
            .context("reading the StatsD address")?
    );

    tokio::spawn(statsd::run(
        statsd_socket,
        registry.clone(),
        sets.clone(),
        health.clone(),
    ));
    let distinct = Arc::new(spectatord::Distinct::default());
    let spectatord_udp = spectatord::bind_udp(cfg.spectatord_addr)
        .await
        .with_context(|| format!("binding the SpectatorD listener to {}", cfg.spectatord_addr))?;
    println!(
        "argus-agent: SpectatorD listening on {}",
        spectatord_udp
            .local_addr()
            .context("reading the SpectatorD address")?
    );
    let listener = || {
        spectatord::Listener::new(
            registry.clone(),
            distinct.clone(),
            health.spectatord.clone(),
        )
    };
    tokio::spawn(spectatord::run(
        spectatord::Source::Udp(spectatord_udp),
        listener(),
    ));
    if let Some(path) = &cfg.spectatord_socket {
        match spectatord::bind_unix(path) {
            Ok(socket) => {
                println!("argus-agent: SpectatorD socket at {}", path.display());
                tokio::spawn(spectatord::run(
                    spectatord::Source::Unix(socket),
                    listener(),
                ));
            }
            Err(e) if !cfg.spectatord_socket_explicit => tracing::warn!(
                path = %path.display(),
                error = %e,
                "SpectatorD's default Unix socket could not be made; UDP only (give --spectatord-socket)"
            ),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("binding the SpectatorD socket at {}", path.display())
                });
            }
        }
    }
    let intake = Arc::new(Intake {
        catalog: catalog.clone(),
        outbox: outbox.clone(),
        events: events.clone(),
        health: health.clone(),
        common: cfg.tags.clone(),
        registry: registry.clone(),
    });
    tokio::spawn(intake::serve(http, intake));
    for target in cfg.scrape.clone() {
        tokio::spawn(scrape::run(
            target,
            cfg.scrape_interval,
            cfg.tags.clone(),
            catalog.clone(),
            outbox.clone(),
            health.clone(),
        ));
    }
    let mut streams: Vec<String> = cfg.tail.iter().map(|t| t.stream.clone()).collect();
    for t in &cfg.tail {
        tokio::spawn(tail::run(
            t.path.clone(),
            t.stream.clone(),
            events.clone(),
            health.clone(),
        ));
    }
    // The HTTP intake takes events of any stream.
    streams.push("*".to_string());
    streams.sort();
    streams.dedup();
    {
        let events = events.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(intake::EVENT_FLUSH);
            loop {
                tick.tick().await;
                events.flush();
            }
        });
    }
    let (step_tx, mut step_rx) = tokio::sync::watch::channel(cfg.step.as_millis() as i64);
    let sender = sender::Sender {
        servers: cfg.servers.clone(),
        current: Default::default(),
        token: cfg.token.clone(),
        tls: cfg.tls.clone(),
        agent_id: format!("{node}/{:016x}", sender::random_u64()),
        node,
        streams,
        step_ms: step_tx,
        catalog: catalog.clone(),
        outbox: outbox.clone(),
        health: health.clone(),
        pushdown,
    };
    tokio::spawn(sender.run());

    // The step loop: at each wall-clock step boundary, collect the host, report the agent's
    // own health, and send the step's meters as one batch. The step is the server's once it
    // has said it (the meters of the step in progress then end at the new step's boundary).
    let mut step_ms = *step_rx.borrow();
    let mut step_can_change = true;
    let mut host = cfg
        .host_metrics
        .then(|| host::HostCollector::new(cfg.proc_root.clone()));
    // A first reading now, so that the first step already has the rates and percentages
    // that need two readings (CPU, disks, network): a new agent shows its host at once.
    if let Some(h) = host.as_mut() {
        h.collect(&registry);
    }
    let mut last_health: std::collections::HashMap<String, u64> = Default::default();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        health.step_ms.store(step_ms as u64, Ordering::Relaxed);
        let (boundary, wait) = until_next_step(step_ms);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            changed = step_rx.changed(), if step_can_change => {
                match changed {
                    Ok(()) => step_ms = *step_rx.borrow_and_update(),
                    Err(_) => step_can_change = false,
                }
                continue;
            }
            _ = &mut shutdown => break,
        }
        if let Some(h) = host.as_mut() {
            h.collect(&registry);
        }
        sets.flush_into(&registry);
        distinct.flush_into(&registry);
        if let Some(drops) = statsd_drops.read() {
            health.statsd_kernel_drops.store(drops, Ordering::Relaxed);
        }
        for s in health.series() {
            if s.gauge {
                registry.set(s.name, s.tags, s.value as f64);
            } else {
                let key = format!("{}{:?}", s.name, s.tags);
                let prev = last_health.insert(key, s.value).unwrap_or(0);
                registry.add(s.name, s.tags, s.value.saturating_sub(prev) as f64);
            }
        }
        let samples = registry.flush(boundary, step_ms as f64 / 1000.0);
        outbox.push("step", Payload::Metrics(samples));
    }
    events.flush();
    // Give the sender a moment to deliver what is buffered.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while outbox.pending() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
