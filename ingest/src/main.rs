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
    /// what the graph API would return for the same data; or, with --events, over a file of
    /// events, printing the rows a live subscription would deliver.
    ///
    /// The file holds `{"step": <ms>, "series": [{"tags": {...}, "start": <ms>, "values":
    /// [<number or "NaN">, ...]}]}`; value i of a series is at start + i*step. Times take the
    /// graph API's syntax; `now` is the end of the data.
    Eval(EvalArgs),
    /// Run a live query on a server and stream its rows as they happen (NDJSON on standard
    /// output; counts of events matched and rows dropped on standard error): MQL, or the
    /// Stack Language over events (:table rows, :sample and data expressions per step).
    /// Ctrl-C cancels the query.
    ///
    /// Examples: argus live "select path, latency from requests where status >= 500"
    ///           argus live "name,requests,:eq,status,500,:ge,:and,(,path,latency,),:table"
    ///           argus live --step 10s "name,requests,:eq,:count,(,path,),:by"
    Live(LiveCliArgs),
    /// Run an MQL query over a file of events (NDJSON, one JSON object per line) as a
    /// finite stream, with no server, and print the result rows as NDJSON: the same rows
    /// the live path delivers.
    ///
    /// Windows use a virtual clock that starts at 0 and advances --interval-ms before each
    /// event (the first event arrives at that time), or the event-time field given by
    /// --time-field. The stream ends after the last event, closing its window.
    Mql(MqlArgs),
    /// Ask a server an aggregate question and print the answer as a table, CSV or JSON: a
    /// Stack Language expression (the graph API), or PromQL with --promql (an instant query,
    /// or a range query with --from).
    ///
    /// Examples: argus query "name,sys.cpu.utilization,:eq,:max,(,nf.app,),:by" --from e-1h
    ///           argus query --promql 'sum by (nf_app) (rate(http_requests_total[5m]))'
    Query(QueryCliArgs),
    /// List a server's tag keys, or the values of one key (the tag browser), optionally over
    /// the series of a Stack Language query, with --counts the series each has.
    ///
    /// Examples: argus tags; argus tags nf.app; argus tags name -q nf.app,www,:eq --counts
    Tags(TagsCliArgs),
    /// Ask a cluster node about its cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

/// Where a client command asks.
#[derive(clap::Args)]
struct TargetArgs {
    /// The server's HTTP API.
    #[arg(long, env = "ARGUS_SERVER", default_value = "http://127.0.0.1:7101")]
    server: String,
    /// PEM file of the CA that signed an https:// server's certificate [default: the
    /// system's].
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
}

impl TargetArgs {
    fn target(self) -> argus_ingest::query_client::Target {
        argus_ingest::query_client::Target {
            server: self.server,
            ca: self.ca,
            token: self.token,
        }
    }
}

#[derive(clap::Args)]
struct QueryCliArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// The expression is PromQL (default: the Stack Language).
    #[arg(long)]
    promql: bool,
    /// Start of the window: the graph API's times (e-3h, now-1h, epoch, ISO dates) for the
    /// Stack Language [default: e-3h]; for PromQL now, now-<duration>, epoch seconds or RFC
    /// 3339, making it a range query [default: an instant query].
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    from: Option<String>,
    /// End of the window, or a PromQL instant query's time [default: now].
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    to: Option<String>,
    /// Step between points [default: the stored step; 60s for PromQL].
    #[arg(long, value_name = "DURATION")]
    step: Option<String>,
    /// How to print the answer.
    #[arg(long, short, value_enum, default_value = "table")]
    output: argus_ingest::query_client::Output,
    /// The expression.
    #[arg(value_name = "EXPR", allow_hyphen_values = true)]
    expr: String,
}

#[derive(clap::Args)]
struct TagsCliArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Only over the series of this Stack Language query (e.g. name,sps,:eq).
    #[arg(long, short, value_name = "QUERY")]
    query: Option<String>,
    /// With the number of series of each key or value.
    #[arg(long)]
    counts: bool,
    /// A tag key: list its values (default: list the keys).
    #[arg(value_name = "KEY")]
    key: Option<String>,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// The nodes with their roles and heartbeats, and the partitions' streams with their
    /// NATS leader, last sequence and how far the node asked has applied them.
    Status(ClusterStatusArgs),
}

#[derive(clap::Args)]
struct ClusterStatusArgs {
    /// A node's HTTP API.
    #[arg(long, env = "ARGUS_SERVER", default_value = "http://127.0.0.1:7101")]
    server: String,
    /// PEM file of the CA that signed an https:// server's certificate.
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
    /// Print the node's JSON as it is.
    #[arg(long)]
    json: bool,
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
    /// The query's language: mql or asl [default: MQL if it starts with select, else the
    /// Stack Language].
    #[arg(long, value_name = "LANG")]
    lang: Option<String>,
    /// The step of a Stack Language :sample or data expression over events (e.g. 10s)
    /// [default: the server's step].
    #[arg(long, value_name = "DURATION")]
    step: Option<String>,
    /// Stop after this long (e.g. 30s); default: until Ctrl-C or the query ends.
    #[arg(long = "for", value_name = "DURATION")]
    duration: Option<String>,
    /// Do not print the running counts.
    #[arg(long, short)]
    quiet: bool,
    /// The query: MQL ("select * from requests where status >= 500") or a Stack Language
    /// expression over events ("name,requests,:eq,:count,(,path,),:by").
    #[arg(value_name = "QUERY", allow_hyphen_values = true)]
    query: String,
}

/// How a file of events is timed and split into streams (`argus mql`, `argus eval
/// --events`).
#[derive(clap::Args)]
struct EventFileArgs {
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
    /// Name each event's stream by this top-level field (a string, removed from the event);
    /// events without it are of the query's (first) stream.
    #[arg(long, value_name = "FIELD")]
    stream_field: Option<String>,
}

impl EventFileArgs {
    fn clock(&self) -> argus_ingest::offline::MqlClock {
        match &self.time_field {
            Some(f) => argus_ingest::offline::MqlClock::Field(f.clone()),
            None => argus_ingest::offline::MqlClock::Interval(self.interval_ms),
        }
    }
}

#[derive(clap::Args)]
struct MqlArgs {
    /// NDJSON file of events ("-" for standard input).
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    #[command(flatten)]
    file: EventFileArgs,
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
    #[arg(long, value_name = "FILE", required_unless_present = "events")]
    input: Option<PathBuf>,
    /// Instead of series: an NDJSON file of events ("-" for standard input), over which the
    /// expression runs as over a live stream (a query, :table, :sample, or :sum, :count,
    /// :max, :min with :by), printing its rows as NDJSON, as `argus mql` does.
    #[arg(long, value_name = "FILE", conflicts_with = "input")]
    events: Option<PathBuf>,
    /// With --events: the events' clock and streams.
    #[command(flatten)]
    file: EventFileArgs,
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
    /// TOML file with settings. Its keys are the flags' names without the leading `--`
    /// (`http-addr = "0.0.0.0:7101"`, `step = "10s"`); flags and `ARGUS_*` variables win
    /// over it.
    #[arg(long, env = "ARGUS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: ConfigLayer,
}

impl ServerArgs {
    fn into_config(self) -> anyhow::Result<argus_ingest::config::ServerConfig> {
        let file = match &self.config {
            Some(path) => ConfigLayer::from_file(path)?,
            None => ConfigLayer::default(),
        };
        self.settings.over(file).resolve()
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
        Command::Query(args) => run_client(argus_ingest::query_client::query(
            argus_ingest::query_client::QueryArgs {
                target: args.target.target(),
                expr: args.expr,
                promql: args.promql,
                from: args.from,
                to: args.to,
                step: args.step,
                output: args.output,
            },
        )),
        Command::Tags(args) => run_client(argus_ingest::query_client::tags(
            argus_ingest::query_client::TagsArgs {
                target: args.target.target(),
                key: args.key,
                query: args.query,
                counts: args.counts,
            },
        )),
        Command::Cluster(ClusterCommand::Status(args)) => run_cluster_status(args),
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
    if let Some(events) = &args.events {
        return run_eval_events(&args, events);
    }
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
    let input = args.input.context("--input or --events is required")?;
    let body = argus_ingest::offline::run(&input, &params)?;
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

fn read_input(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .context("reading standard input")?;
        Ok(buf)
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    }
}

fn print_rows(rows: Vec<serde_json::Value>) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for row in rows {
        writeln!(out, "{row}").context("writing the output")?;
    }
    out.flush().context("writing the output")
}

/// `argus eval --events`: the expression over a file of events.
fn run_eval_events(args: &EvalArgs, events: &std::path::Path) -> anyhow::Result<()> {
    let step_ms = match &args.step {
        Some(s) => argus_ingest::config::parse_duration_ms(s)
            .with_context(|| format!("--step {s:?}: expected a duration such as 10s"))?,
        None => 60_000,
    };
    let input = read_input(events)?;
    let rows = argus_ingest::offline::run_events(
        &args.expr,
        &input,
        args.file.clock(),
        args.file.stream_field.as_deref(),
        step_ms,
    )?;
    print_rows(rows)
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
            language: args.lang,
            step: args.step,
            duration,
            progress: !args.quiet,
            token: args.token,
        },
    ))
}

/// Runs a client command's request and prints its text.
fn run_client(
    request: impl std::future::Future<Output = anyhow::Result<String>>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let text = runtime.block_on(request)?;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing the output")
}

fn run_cluster_status(args: ClusterStatusArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let text = runtime.block_on(argus_ingest::cluster_client::status(
        argus_ingest::cluster_client::StatusArgs {
            server: args.server,
            ca: args.ca,
            token: args.token,
            json: args.json,
        },
    ))?;
    print!("{text}");
    Ok(())
}

fn run_mql(args: MqlArgs) -> anyhow::Result<()> {
    let input = read_input(&args.input)?;
    let rows = argus_ingest::offline::run_mql(
        &args.query,
        &input,
        args.file.clock(),
        args.file.stream_field.as_deref(),
        args.seed,
    )?;
    print_rows(rows)
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
        // Room for a query nested as deeply as the languages allow (PromQL's evaluation,
        // printing and dropping take a frame per level); only touched pages take memory.
        .thread_stack_size(16 << 20)
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(argus_ingest::server::run(
        cfg,
        argus_ingest::server::shutdown_signal(),
    ))
}
