//! End-to-end: Debian's `prometheus` (agent mode) scrapes Debian's
//! `prometheus-node-exporter` every second and remote-writes into the real server; the
//! values are read back through the graph API and compared with what the exporter serves.

use argus_tests::{Running, Server, debian_packages, enc, eventually, free_port, scratch_dir};
use serde_json::Value;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

fn graph(server: &Server, q: &str, format: &str) -> Value {
    server.get_json(&format!(
        "/api/v1/graph?q={}&s=e-3m&e=now%2B5s&step=1s&format={format}&tz=UTC",
        enc(q)
    ))
}

/// The values of each line of an expression, step by step (NaN where there is no data).
fn lines(server: &Server, q: &str) -> Vec<Vec<f64>> {
    let g = graph(server, q, "json");
    let rows = g["values"].as_array().expect("values");
    let width = g["metrics"].as_array().map_or(0, Vec::len);
    (0..width)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].as_f64().unwrap_or(f64::NAN))
                .collect()
        })
        .collect()
}

/// A sample's value in the text exposition format, as the exporter serves it now.
fn scraped(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} is not in the exporter's output"))
}

/// The exporter's textfile collector serves a pair of counters the test drives: code=200
/// always at five times code=500.
fn write_counters(dir: &std::path::Path, k: u64) {
    let text = format!(
        "# TYPE argus_e2e_requests_total counter\n\
         argus_e2e_requests_total{{code=\"200\"}} {}\n\
         argus_e2e_requests_total{{code=\"500\"}} {k}\n",
        5 * k
    );
    let tmp = dir.join("requests.tmp");
    std::fs::write(&tmp, text).expect("writing the textfile");
    std::fs::rename(&tmp, dir.join("requests.prom")).expect("publishing the textfile");
}

#[test]
fn prometheus_remote_writes_node_exporter() {
    assert!(
        debian_packages(PROMETHEUS, &["prometheus", "prometheus-node-exporter"])
            && debian_packages(NODE_EXPORTER, &["prometheus-node-exporter"]),
        "installing Debian's prometheus and prometheus-node-exporter"
    );
    let server = Server::start(&["--step", "1s"]);
    let dir = scratch_dir("prometheus");
    let textfiles = dir.join("textfiles");
    std::fs::create_dir_all(&textfiles).expect("textfile directory");
    write_counters(&textfiles, 0);

    let exporter_port = free_port();
    let exporter_addr = format!("127.0.0.1:{exporter_port}");
    let mut exporter = Running::start(
        NODE_EXPORTER,
        &[
            &format!("--web.listen-address={exporter_addr}"),
            &format!("--collector.textfile.directory={}", textfiles.display()),
            "--no-collector.systemd",
        ],
        dir.join("node-exporter.log"),
    );
    let config = format!(
        "global:\n  scrape_interval: 1s\n\
         scrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['{exporter_addr}']\n\
         remote_write:\n  - url: {}/api/v1/write\n    queue_config:\n      batch_send_deadline: 1s\n    metadata_config:\n      send_interval: 1s\n",
        server.base
    );
    std::fs::write(dir.join("prometheus.yml"), config).expect("writing the config");
    let mut prometheus = Running::start(
        PROMETHEUS,
        &[
            &format!("--config.file={}", dir.join("prometheus.yml").display()),
            "--enable-feature=agent",
            &format!("--storage.agent.path={}", dir.join("wal").display()),
            &format!("--web.listen-address=127.0.0.1:{}", free_port()),
        ],
        dir.join("prometheus.log"),
    );

    // Drive the counters: 5 increments a second, so code=500 runs at 5/s, code=200 at 25/s.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let driver = {
        let stop = stop.clone();
        let textfiles = textfiles.clone();
        std::thread::spawn(move || {
            let mut k = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                k += 1;
                write_counters(&textfiles, k);
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        })
    };

    let counters = "name,argus_e2e_requests_total,:eq,job,node,:eq,:and,(,code,),:by";
    let steps = eventually(90, "remote-written counter rates on five steps", || {
        exporter.assert_running("prometheus-node-exporter");
        prometheus.assert_running("prometheus");
        let l = lines(&server, counters);
        if l.len() != 2 {
            return None;
        }
        let pairs: Vec<(f64, f64)> = l[0]
            .iter()
            .zip(&l[1])
            .filter(|(ok, err)| ok.is_finite() && err.is_finite() && **err > 0.0)
            .map(|(a, b)| (*a, *b))
            .collect();
        (pairs.len() >= 5).then_some(pairs)
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = driver.join();

    // A counter (the `_total` convention and the TYPE metadata agree) became a per-second
    // rate: code=200 stands exactly 5 to 1 on every step, near 25/s.
    for &(ok, err) in &steps {
        assert!((ok / err - 5.0).abs() < 1e-9, "{steps:?}");
    }
    let peak = steps.iter().map(|p| p.0).fold(0.0, f64::max);
    assert!(
        (15.0..=40.0).contains(&peak),
        "code=200 at {peak}/s: {steps:?}"
    );

    // Labels became tags: __name__ is `name`, `instance`'s ':' is not allowed by Atlas.
    let meta = graph(
        &server,
        "name,argus_e2e_requests_total,:eq,code,200,:eq,:and,:all",
        "json",
    );
    let tags = &meta["metrics"][0];
    assert_eq!(tags["code"], "200", "{meta}");
    assert_eq!(
        tags["instance"],
        format!("127.0.0.1_{exporter_port}"),
        "{meta}"
    );
    assert!(tags.get("__name__").is_none(), "{meta}");

    // A gauge is stored as it was scraped: total memory, to the byte.
    let metrics = Server::agent()
        .get(&format!("http://{exporter_addr}/metrics"))
        .call()
        .expect("scraping the exporter")
        .into_body()
        .read_to_string()
        .expect("the exporter's metrics");
    let mem_total = scraped(&metrics, "node_memory_MemTotal_bytes");
    let stored = graph(
        &server,
        "name,node_memory_MemTotal_bytes,:eq,:max",
        "stats.json",
    );
    assert_eq!(
        stored["stats"][0]["max"].as_f64(),
        Some(mem_total),
        "{stored}"
    );
    assert_eq!(
        stored["stats"][0]["min"].as_f64(),
        Some(mem_total),
        "{stored}"
    );

    // Host CPU, by mode, as the node exporter names it: busy plus idle is about one second
    // per second per CPU.
    let cpu = lines(&server, "name,node_cpu_seconds_total,:eq,:sum,(,cpu,),:by");
    let cpus = metrics
        .lines()
        .filter(|l| l.starts_with("node_cpu_seconds_total{") && l.contains("mode=\"idle\""))
        .count();
    assert_eq!(cpu.len(), cpus, "one line per CPU");
    let busy_and_idle: Vec<f64> = cpu[0].iter().copied().filter(|v| v.is_finite()).collect();
    assert!(
        busy_and_idle.iter().any(|v| (0.8..=1.2).contains(v)),
        "cpu 0 seconds per second: {busy_and_idle:?}"
    );
    drop(prometheus);
    drop(exporter);
    let _ = std::fs::remove_dir_all(&dir);
}
