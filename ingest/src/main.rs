//! `argus`: the Argus server and command-line client. Parses arguments, runs the subcommand,
//! and maps errors to an exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use argus_ingest::config::ConfigLayer;
use clap::{Parser, Subcommand};

/// Argus: an in-memory dimensional time-series store with the Atlas Stack Language, and live
/// queries over raw events.
#[derive(Parser)]
#[command(name = "argus", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: the HTTP API (publish, tags, graph, live queries) and gRPC ingest
    /// over an in-memory store kept durable in --data-dir.
    ///
    /// Every option can also come from a TOML file (--config, keys spelled as the long
    /// options, e.g. `step = "10s"`) or an ARGUS_* environment variable. Flags win over the
    /// environment, which wins over the file.
    Server(Box<ServerArgs>),
    /// Evaluate a Stack Language expression over series in a file, with no server, and print
    /// what the graph API would return for the same data.
    ///
    /// The file holds `{"step": <ms>, "series": [{"tags": {...}, "start": <ms>, "values":
    /// [<number or "NaN">, ...]}]}`; value i of a series is at start + i*step. Times take the
    /// graph API's syntax; `now` is the end of the data.
    Eval(EvalArgs),
    /// Run a live MQL query on a server and stream its rows as they happen (NDJSON on
    /// standard output; counts of events matched and rows dropped on standard error).
    /// Ctrl-C cancels the query.
    ///
    /// Example: argus live "select path, latency from requests where status >= 500"
    Live(LiveCliArgs),
    /// Run an MQL query over a file of events (NDJSON, one JSON object per line) as a
    /// finite stream, with no server, and print the result rows as NDJSON: the same rows
    /// the live path delivers.
    ///
    /// Windows use a virtual clock that starts at 0 and advances --interval-ms before each
    /// event (the first event arrives at that time), or the event-time field given by
    /// --time-field. The stream ends after the last event, closing its window.
    Mql(MqlArgs),
}

#[derive(clap::Args)]
struct LiveCliArgs {
    /// The server's HTTP API.
    #[arg(long, env = "ARGUS_SERVER", default_value = "http://127.0.0.1:7101")]
    server: String,
    /// PEM file of the CA that signed an https:// server's certificate [default: the
    /// system's, from SSL_CERT_FILE or /etc/ssl/certs/ca-certificates.crt].
    #[arg(long, env = "ARGUS_CA", value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Bearer token for a server with --auth-file (a read token).
    #[arg(
        long,
        env = "ARGUS_TOKEN",
        value_name = "SECRET",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Windows follow this event field (epoch ms) instead of arrival time.
    #[arg(long, value_name = "FIELD")]
    time_field: Option<String>,
    /// Stop after this long (e.g. 30s); default: until Ctrl-C or the query ends.
    #[arg(long = "for", value_name = "DURATION")]
    duration: Option<String>,
    /// Do not print the running counts.
    #[arg(long, short)]
    quiet: bool,
    /// The MQL query, e.g. "select * from requests where status >= 500".
    #[arg(value_name = "QUERY")]
    query: String,
}

#[derive(clap::Args)]
struct MqlArgs {
    /// NDJSON file of events ("-" for standard input).
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// Milliseconds the virtual clock advances before each event.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 10,
        conflicts_with = "time_field"
    )]
    interval_ms: i64,
    /// Take each event's time (epoch ms) from this field instead of the virtual clock.
    #[arg(long, value_name = "FIELD")]
    time_field: Option<String>,
    /// Name each event's stream by this top-level field (a string, removed from the event),
    /// for queries that join streams; events without it are of the query's first stream.
    #[arg(long, value_name = "FIELD")]
    stream_field: Option<String>,
    /// Seed for random sampling, so that a run can be repeated.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The MQL query.
    #[arg(value_name = "QUERY")]
    query: String,
}

#[derive(clap::Args)]
struct EvalArgs {
    /// JSON file with the series.
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// Start of the window [default: e-3h].
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    s: Option<String>,
    /// End of the window [default: now, the end of the data].
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    e: Option<String>,
    /// Step of the output [default: the file's step, grown to fit the width].
    #[arg(long, value_name = "DURATION")]
    step: Option<String>,
    /// Time zone for dates without a zone and for csv/txt/png times [default: US/Pacific].
    #[arg(long, value_name = "ZONE")]
    tz: Option<String>,
    /// Output format: json, std.json, csv, txt, stats.json or png.
    #[arg(long, default_value = "json")]
    format: String,
    /// Further graph parameters as KEY=VALUE (e.g. w=800, title=..., theme=dark).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// Write the output to this file instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// The expression, e.g. name,sps,:eq,:sum,(,nf.app,),:by
    #[arg(value_name = "EXPR", allow_hyphen_values = true)]
    expr: String,
}

#[derive(clap::Args)]
struct ServerArgs {
    /// TOML file with settings (keys: http-addr, grpc-addr, data-dir, step, retention,
    /// publish-max-age, max-body-bytes, graph-max-lines, graph-max-datapoints,
    /// grpc-max-message-bytes, ephemeral, wal-fsync, snapshot-interval,
    /// maintenance-interval, max-series,
    /// max-series-per-metric, http-header-timeout, http-body-timeout, auth-file, tls-cert,
    /// tls-key, tls-client-ca, query-timeout, query-max-series, query-max-memory,
    /// max-concurrent-queries, max-connections,
    /// live-max-per-client).
    #[arg(long, env = "ARGUS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address of the HTTP API [default: 127.0.0.1:7101].
    #[arg(long, env = "ARGUS_HTTP_ADDR", value_name = "HOST:PORT")]
    http_addr: Option<String>,
    /// Address of the gRPC services: the agent protocol and OTLP [default: 127.0.0.1:4317].
    #[arg(long, env = "ARGUS_GRPC_ADDR", value_name = "HOST:PORT")]
    grpc_addr: Option<String>,
    /// Directory for the server's files (created if missing) [default: argus-data].
    #[arg(long, env = "ARGUS_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Step of stored series; timestamps are normalized to step ends [default: 60s].
    #[arg(long, env = "ARGUS_STEP", value_name = "DURATION")]
    step: Option<String>,
    /// How long data is kept in memory [default: 6h].
    #[arg(long, env = "ARGUS_RETENTION", value_name = "DURATION")]
    retention: Option<String>,
    /// How far from now a published datapoint may be, either way (backfill accepts
    /// anything inside the retention window) [default: 60s].
    #[arg(long, env = "ARGUS_PUBLISH_MAX_AGE", value_name = "DURATION")]
    publish_max_age: Option<String>,
    /// Largest request body accepted, after decompression [default: 67108864].
    #[arg(long, env = "ARGUS_MAX_BODY_BYTES", value_name = "BYTES")]
    max_body_bytes: Option<usize>,
    /// Most lines one graph request may return [default: 1024, as Atlas].
    #[arg(long, env = "ARGUS_GRAPH_MAX_LINES", value_name = "N")]
    graph_max_lines: Option<usize>,
    /// Most datapoints one graph request may return over all lines [default: 500000].
    #[arg(long, env = "ARGUS_GRAPH_MAX_DATAPOINTS", value_name = "N")]
    graph_max_datapoints: Option<usize>,
    /// Largest gRPC message accepted, after decompression; larger ones are refused with
    /// RESOURCE_EXHAUSTED [default: 16777216].
    #[arg(long, env = "ARGUS_GRPC_MAX_MESSAGE_BYTES", value_name = "BYTES")]
    grpc_max_message_bytes: Option<usize>,
    /// Keep everything in memory only: no write-ahead log, no snapshots; a restart loses
    /// all data. By default data is kept in --data-dir.
    #[arg(long, env = "ARGUS_EPHEMERAL")]
    ephemeral: bool,
    /// When the write-ahead log is forced to disk: "always" (before every acknowledgement)
    /// or an interval; power loss may lose up to one interval of acknowledged data, a
    /// crash of the process nothing [default: 1s].
    #[arg(long, env = "ARGUS_WAL_FSYNC", value_name = "always|DURATION")]
    wal_fsync: Option<String>,
    /// How often the store is snapshotted, and the log behind the snapshot removed
    /// [default: 15m].
    #[arg(long, env = "ARGUS_SNAPSHOT_INTERVAL", value_name = "DURATION")]
    snapshot_interval: Option<String>,
    /// How often maintenance seals finished blocks, drops data past the retention and
    /// removes series left empty [default: 10s].
    #[arg(long, env = "ARGUS_MAINTENANCE_INTERVAL", value_name = "DURATION")]
    maintenance_interval: Option<String>,
    /// Most series in the store: over it, new series are refused (existing ones keep
    /// ingesting), counted as series_limit [default: 5000000].
    #[arg(long, env = "ARGUS_MAX_SERIES", value_name = "N")]
    max_series: Option<u64>,
    /// Most series sharing one name tag: over it, that metric's new series are refused
    /// [default: 1000000].
    #[arg(long, env = "ARGUS_MAX_SERIES_PER_METRIC", value_name = "N")]
    max_series_per_metric: Option<u64>,
    /// A request's headers must arrive within this; also how long an idle kept-alive
    /// connection stays open [default: 10s].
    #[arg(long, env = "ARGUS_HTTP_HEADER_TIMEOUT", value_name = "DURATION")]
    http_header_timeout: Option<String>,
    /// A request's body must arrive within this, else 408 [default: 60s].
    #[arg(long, env = "ARGUS_HTTP_BODY_TIMEOUT", value_name = "DURATION")]
    http_body_timeout: Option<String>,
    /// TOML file of bearer tokens with roles (read, write, admin) for the HTTP API and gRPC;
    /// without it the server is open. See the README.
    #[arg(long, env = "ARGUS_AUTH_FILE", value_name = "FILE")]
    auth_file: Option<PathBuf>,
    /// PEM certificate chain: serve HTTP and gRPC over TLS (with --tls-key).
    #[arg(long, env = "ARGUS_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "ARGUS_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// PEM CA: gRPC clients (agents) must present a certificate it signed (mutual TLS).
    #[arg(long, env = "ARGUS_TLS_CLIENT_CA", value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// A graph query stops after this long (503) [default: 30s].
    #[arg(long, env = "ARGUS_QUERY_TIMEOUT", value_name = "DURATION")]
    query_timeout: Option<String>,
    /// Most series one graph query may read (400 past it) [default: 1000000].
    #[arg(long, env = "ARGUS_QUERY_MAX_SERIES", value_name = "N")]
    query_max_series: Option<u64>,
    /// Most memory one query may hold at once: its lines, read buffers and accumulators
    /// (400 past it) [default: 268435456].
    #[arg(long, env = "ARGUS_QUERY_MAX_MEMORY", value_name = "BYTES")]
    query_max_memory: Option<usize>,
    /// Graph queries running at once; more wait for a slot, up to their time limit
    /// [default: 16].
    #[arg(long, env = "ARGUS_MAX_CONCURRENT_QUERIES", value_name = "N")]
    max_concurrent_queries: Option<usize>,
    /// Live queries one client address may run at once [default: 16].
    #[arg(long, env = "ARGUS_LIVE_MAX_PER_CLIENT", value_name = "N")]
    live_max_per_client: Option<usize>,
    /// Connections each listener (HTTP, gRPC) holds at once; more are refused at once and
    /// counted. Lowered to what the open-file limit allows [default: 8192].
    #[arg(long, env = "ARGUS_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<usize>,
}

impl ServerArgs {
    fn into_config(self) -> anyhow::Result<argus_ingest::config::ServerConfig> {
        let file = match &self.config {
            Some(path) => ConfigLayer::from_file(path)?,
            None => ConfigLayer::default(),
        };
        let flags = ConfigLayer {
            http_addr: self.http_addr,
            grpc_addr: self.grpc_addr,
            data_dir: self.data_dir,
            step: self.step,
            retention: self.retention,
            publish_max_age: self.publish_max_age,
            max_body_bytes: self.max_body_bytes,
            graph_max_lines: self.graph_max_lines,
            graph_max_datapoints: self.graph_max_datapoints,
            grpc_max_message_bytes: self.grpc_max_message_bytes,
            ephemeral: self.ephemeral.then_some(true),
            wal_fsync: self.wal_fsync,
            snapshot_interval: self.snapshot_interval,
            maintenance_interval: self.maintenance_interval,
            max_series: self.max_series,
            max_series_per_metric: self.max_series_per_metric,
            http_header_timeout: self.http_header_timeout,
            http_body_timeout: self.http_body_timeout,
            auth_file: self.auth_file,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            tls_client_ca: self.tls_client_ca,
            query_timeout: self.query_timeout,
            query_max_series: self.query_max_series,
            query_max_memory: self.query_max_memory,
            max_concurrent_queries: self.max_concurrent_queries,
            live_max_per_client: self.live_max_per_client,
            max_connections: self.max_connections,
        };
        flags.over(file).resolve()
    }
}

fn main() -> ExitCode {
    argus_ingest::memory::tune_allocator();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ARGUS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Server(args) => run_server(*args),
        Command::Eval(args) => run_eval(args),
        Command::Live(args) => run_live(args),
        Command::Mql(args) => run_mql(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("argus: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_eval(args: EvalArgs) -> anyhow::Result<()> {
    let mut params = vec![
        ("q".to_string(), args.expr),
        ("format".to_string(), args.format),
    ];
    for (k, v) in [
        ("s", args.s),
        ("e", args.e),
        ("step", args.step),
        ("tz", args.tz),
    ] {
        if let Some(v) = v {
            params.push((k.to_string(), v));
        }
    }
    for p in args.params {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("--param {p:?}: expected KEY=VALUE"))?;
        params.push((k.to_string(), v.to_string()));
    }
    let body = argus_ingest::offline::run(&args.input, &params)?;
    match args.output {
        Some(path) => {
            std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?
        }
        None => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(&body).context("writing the output")?;
            if !body.ends_with(b"\n") && !body.starts_with(b"\x89PNG") {
                out.write_all(b"\n").context("writing the output")?;
            }
        }
    }
    Ok(())
}

fn run_live(args: LiveCliArgs) -> anyhow::Result<()> {
    let duration = args
        .duration
        .as_deref()
        .map(|d| {
            argus_ingest::config::parse_duration_ms(d)
                .map(|ms| std::time::Duration::from_millis(ms.max(0) as u64))
                .with_context(|| format!("--for {d:?}: expected a duration such as 30s"))
        })
        .transpose()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(argus_ingest::live_client::run(
        argus_ingest::live_client::LiveArgs {
            server: args.server,
            ca: args.ca,
            query: args.query,
            time_field: args.time_field,
            duration,
            progress: !args.quiet,
            token: args.token,
        },
    ))
}

fn run_mql(args: MqlArgs) -> anyhow::Result<()> {
    let clock = match &args.time_field {
        Some(f) => argus_ingest::offline::MqlClock::Field(f.clone()),
        None => argus_ingest::offline::MqlClock::Interval(args.interval_ms),
    };
    let input = if args.input.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .context("reading standard input")?;
        buf
    } else {
        std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?
    };
    let rows = argus_ingest::offline::run_mql(
        &args.query,
        &input,
        clock,
        args.stream_field.as_deref(),
        args.seed,
    )?;
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for row in rows {
        writeln!(out, "{row}").context("writing the output")?;
    }
    out.flush().context("writing the output")
}

fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    let cfg = args.into_config()?;
    // CPU-heavy request work (decoding, queries) runs on a small, long-lived blocking pool:
    // it bounds concurrent work on small machines, and threads that never retire keep the
    // store's allocations on a few allocator heaps instead of stranding partly used pages.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(4)
        .thread_keep_alive(std::time::Duration::from_secs(24 * 3600))
        .thread_name("argus")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(argus_ingest::server::run(
        cfg,
        argus_ingest::server::shutdown_signal(),
    ))
}
