//! End-to-end: the agent scrapes Debian's `prometheus-node-exporter`, once over HTTPS (a
//! private CA made with `openssl`, given as the target's `ca`) and once over plain HTTP,
//! and the values the exporter serves arrive at the server. Each target's connection is
//! kept alive across scrapes, bodies travel gzip-compressed, and a target that accepts
//! connections but never answers costs one timeout per scrape, counted.

use std::net::TcpListener;
use std::path::Path;

use argus_tests::{
    Agent, Running, Server, debian_packages, enc, eventually, free_port, issue_certificate,
    scratch_dir,
};

const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

/// A node exporter on `port` serving the textfile gauge `argus_e2e_value` = `value`, over
/// TLS when `web_config` is given.
fn exporter(dir: &Path, name: &str, port: u16, value: u64, web_config: Option<&Path>) -> Running {
    let textfiles = dir.join(format!("{name}-textfiles"));
    std::fs::create_dir_all(&textfiles).expect("textfile directory");
    std::fs::write(
        textfiles.join("value.prom"),
        format!("# TYPE argus_e2e_value gauge\nargus_e2e_value {value}\n"),
    )
    .expect("writing the textfile");
    let mut args = vec![
        format!("--web.listen-address=127.0.0.1:{port}"),
        format!("--collector.textfile.directory={}", textfiles.display()),
        "--no-collector.systemd".to_string(),
    ];
    if let Some(c) = web_config {
        args.push(format!("--web.config.file={}", c.display()));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Running::start(NODE_EXPORTER, &args, dir.join(format!("{name}.log")))
}

fn max_of(server: &Server, q: &str) -> Option<f64> {
    let body = server.get_json(&format!(
        "/api/v1/graph?q={}&s=e-2m&step=1s&format=stats.json",
        enc(q)
    ));
    body["stats"][0]["max"].as_f64()
}

fn counter(agent: &Agent, key: &str) -> u64 {
    agent.health()[key].as_u64().unwrap_or(0)
}

#[test]
fn the_agent_scrapes_over_https_and_http_with_keep_alive_and_gzip() {
    assert!(
        debian_packages(NODE_EXPORTER, &["prometheus-node-exporter"]),
        "installing Debian's prometheus-node-exporter"
    );
    let dir = scratch_dir("scrape");
    issue_certificate(&dir, "scrape", "exporter");
    let web_config = dir.join("web.yml");
    std::fs::write(
        &web_config,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
            dir.join("exporter.pem").display(),
            dir.join("exporter.key").display()
        ),
    )
    .expect("writing the exporter's web config");
    let (tls_port, plain_port) = (free_port(), free_port());
    let mut tls_exporter = exporter(&dir, "tls", tls_port, 42, Some(&web_config));
    let mut plain_exporter = exporter(&dir, "plain", plain_port, 7, None);
    // Every scrape must succeed, the first included.
    tls_exporter.wait_listening(tls_port, "the TLS exporter");
    plain_exporter.wait_listening(plain_port, "the plain exporter");

    let server = Server::start(&["--step", "1s"]);
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[[scrape]]\nurl = \"https://127.0.0.1:{tls_port}/metrics\"\n\
             tags = [[\"job\", \"tls\"]]\nca = \"{}\"\n\n\
             [[scrape]]\nurl = \"http://127.0.0.1:{plain_port}\"\ntags = [[\"job\", \"plain\"]]\n",
            dir.join("scrape-ca.pem").display()
        ),
    )
    .expect("writing the agent's config");
    let config = config.to_string_lossy().into_owned();
    let agent = Agent::start(
        &server.grpc,
        &[
            "--config",
            &config,
            "--scrape-interval",
            "1s",
            "--step",
            "1s",
            "--no-host-metrics",
        ],
    );

    for (job, value) in [("tls", 42.0), ("plain", 7.0)] {
        let q = format!("name,argus_e2e_value,:eq,job,{job},:eq,:and,:max");
        eventually(
            30,
            &format!("the {job} target's value at the server"),
            || {
                tls_exporter.assert_running("the TLS exporter");
                plain_exporter.assert_running("the plain exporter");
                (max_of(&server, &q) == Some(value)).then_some(())
            },
        );
    }
    // Several scrapes of each target, on one connection each.
    eventually(30, "eight scrapes", || {
        (counter(&agent, "scrape.count") >= 8).then_some(())
    });
    let health = agent.health();
    assert_eq!(health["scrape.failures"], 0, "{health}");
    assert_eq!(
        health["scrape.connections"], 2,
        "one kept-alive connection per target: {health}"
    );
    let (wire, decoded) = (
        counter(&agent, "scrape.bytes.id=wire"),
        counter(&agent, "scrape.bytes.id=decoded"),
    );
    assert!(
        wire > 0 && wire * 3 < decoded,
        "bodies travel gzip-compressed: {wire} bytes on the wire for {decoded}"
    );
}

#[test]
fn a_target_that_never_answers_times_out_each_scrape() {
    // Accepts connections (the kernel's backlog) and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("binding a listener");
    let port = silent.local_addr().expect("its address").port();
    let server = Server::start(&["--step", "1s"]);
    let url = format!("http://127.0.0.1:{port}/metrics");
    let agent = Agent::start(
        &server.grpc,
        &[
            "--scrape",
            &url,
            "--scrape-interval",
            "1s",
            "--no-host-metrics",
        ],
    );
    let started = std::time::Instant::now();
    eventually(15, "three timed-out scrapes", || {
        (counter(&agent, "scrape.failures") >= 3).then_some(())
    });
    // Each one took at most the interval: three in well under the 15 s allowed.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(counter(&agent, "scrape.count"), 0);
    // The agent stays healthy: its intake answers.
    assert!(agent.health().is_object());
    drop(silent);
}
