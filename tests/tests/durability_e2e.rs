//! End-to-end durability: the real server killed with `kill -9` at random moments while an
//! HTTP client and an agent (gRPC) write; after every restart each acknowledged sample is
//! there exactly once. Damaged log segments and snapshots are reported and every good
//! sample served. A full disk refuses writes with a retryable error, keeps serving queries,
//! damages nothing, and writing resumes when space returns.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argus_tests::{Agent, Server, enc, eventually, free_port, now_ms, scratch_dir};
use serde_json::{Value, json};

/// Publishes one datapoint (dstype sum, value 1) of its own series `req=<k>`; true when the
/// server acknowledged it (200).
fn publish_one(agent: &ureq::Agent, base: &str, name: &str, k: u64) -> bool {
    let payload = json!({
        "tags": {"name": name, "req": k.to_string(), "atlas.dstype": "sum"},
        "metrics": [{"timestamp": now_ms() - 2_000, "value": 1.0}]
    });
    agent
        .post(&format!("{base}/api/v1/publish"))
        .send(payload.to_string().as_bytes())
        .is_ok_and(|r| r.status().as_u16() == 200)
}

/// Sum over the window of every line of `q` grouped by `key`: key value → total. (`:cf-sum`:
/// the graph may widen the step, and a widened step must add its values, not average them.)
fn totals_by(server: &Server, q: &str, key: &str) -> std::collections::HashMap<String, f64> {
    let v = server.get_json(&format!(
        "/api/v1/graph?q={}&s=e-15m&step=1s&format=stats.json&tz=UTC",
        enc(&format!("{q},:sum,(,{key},),:by,:cf-sum"))
    ));
    let mut out = std::collections::HashMap::new();
    let (Some(metrics), Some(stats)) = (v["metrics"].as_array(), v["stats"].as_array()) else {
        return out;
    };
    for (m, s) in metrics.iter().zip(stats) {
        if let (Some(k), Some(t)) = (m[key].as_str(), s["total"].as_f64()) {
            out.insert(k.to_string(), t);
        }
    }
    out
}

fn total(server: &Server, q: &str) -> f64 {
    let v = server.get_json(&format!(
        "/api/v1/graph?q={}&s=e-15m&step=1s&format=stats.json&tz=UTC",
        enc(&format!("{q},:sum,:cf-sum"))
    ));
    v["stats"][0]["total"].as_f64().unwrap_or(0.0)
}

#[test]
fn kill_9_at_random_moments_loses_nothing_acknowledged_and_stores_nothing_twice() {
    let rounds: u64 = std::env::var("ARGUS_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let seed = std::env::var("ARGUS_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| now_ms() as u64);
    eprintln!("crash test: {rounds} rounds, ARGUS_CRASH_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let http = format!("127.0.0.1:{}", free_port());
    let grpc = format!("127.0.0.1:{}", free_port());
    // Every acknowledged request is its own series, and the check reads them all.
    let flags = [
        "--step",
        "1s",
        "--snapshot-interval",
        "1s",
        "--graph-max-lines",
        "100000",
        "--graph-max-datapoints",
        "100000000",
    ];
    let mut server = Server::start_in(scratch_dir("crash").hand_over(), &http, &grpc, &flags);
    let agent = Agent::start(
        &format!("http://{grpc}"),
        &["--step", "1s", "--no-host-metrics"],
    );

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let base = server.base.clone();
    let writer = {
        let (stop, acked) = (stop.clone(), acked.clone());
        std::thread::spawn(move || {
            let client: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(5)))
                .build()
                .into();
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                if publish_one(&client, &base, "crash.http", k) {
                    acked.lock().unwrap().push(k);
                } else {
                    std::thread::sleep(Duration::from_millis(20));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            k
        })
    };
    // Through the agent: datapoints of value 1 on one step of a `sum` series, which adds
    // them, so the stored value counts them (a duplicate shows as one too many). The agent
    // acknowledges on intake and owns delivery from there.
    let step = (now_ms() / 1000) * 1000 - 60_000;
    let mut posted = 0i64;
    let mut post_agent = |n: i64| {
        let metrics: Vec<Value> = (0..n)
            .map(|_| json!({"timestamp": step, "value": 1.0}))
            .collect();
        let payload = json!({
            "tags": {"name": "crash.agent", "atlas.dstype": "sum"},
            "metrics": metrics
        });
        let (status, body) = agent.post("/api/v1/publish", payload.to_string().as_bytes());
        assert_eq!(status, 200, "{body}");
        posted += n;
    };

    for round in 0..rounds {
        let deadline = Instant::now() + Duration::from_millis(300 + rng.u64(..1500));
        while Instant::now() < deadline {
            post_agent(5);
            std::thread::sleep(Duration::from_millis(50 + rng.u64(..100)));
        }
        let dir = server.kill();
        post_agent(5);
        std::thread::sleep(Duration::from_millis(rng.u64(..500)));
        server = Server::start_in(dir, &http, &grpc, &flags);
        let report = server.recovery_report();
        assert!(
            report.iter().all(|l| !l.contains("DAMAGE")),
            "round {round}: a kill -9 must not damage anything: {report:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let attempts = writer.join().unwrap();
    let posted = posted as f64;
    eventually(60, "the agent's buffer delivered", || {
        (total(&server, "name,crash.agent,:eq") >= posted).then_some(())
    });
    // One more crash with everything delivered: it all comes back from disk.
    let dir = server.kill();
    let server = Server::start_in(dir, &http, &grpc, &flags);
    eprintln!("final recovery: {:?}", server.recovery_report());

    assert_eq!(
        total(&server, "name,crash.agent,:eq"),
        posted,
        "every datapoint the agent took, stored exactly once (seed {seed})"
    );
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "too few acknowledged requests to mean much: {}",
        acked.len()
    );
    let stored = totals_by(&server, "name,crash.http,:eq", "req");
    let lost: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|k| stored.get(&k.to_string()) != Some(&1.0))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged but missing or not exactly 1 (seed {seed}): {:?}",
        lost.iter()
            .map(|k| (k, stored.get(&k.to_string())))
            .collect::<Vec<_>>()
    );
    let doubled: Vec<(&String, &f64)> = stored.iter().filter(|(_, v)| **v != 1.0).collect();
    assert!(
        doubled.is_empty(),
        "stored twice (seed {seed}): {doubled:?}"
    );
    eprintln!(
        "crash test: {rounds} kills, {} of {attempts} HTTP requests acknowledged, {} stored; \
         {posted} agent datapoints stored once",
        acked.len(),
        stored.len()
    );
}

fn files(dir: &Path, sub: &str, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join(sub))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.to_string_lossy().ends_with(ext));
    v.sort();
    v
}

/// Publishes `n` series of `name` (dstype sum, value 1) two seconds back, so that their step
/// has ended and a query at once sees them.
fn publish_batch(server: &Server, name: &str, n: usize) {
    let metrics: Vec<Value> = (0..n)
        .map(|i| json!({"tags": {"node": format!("i-{i}")}, "timestamp": now_ms() - 2_000, "value": 1.0}))
        .collect();
    let payload = json!({"tags": {"name": name, "atlas.dstype": "sum"}, "metrics": metrics});
    let (status, body) = server.post("/api/v1/publish", payload.to_string().as_bytes(), None);
    assert_eq!(status, 200, "{body}");
}

#[test]
fn damaged_log_segments_and_snapshots_are_reported_and_the_good_data_served() {
    let flags = ["--step", "1s", "--snapshot-interval", "1s"];
    let server = Server::start_in(
        scratch_dir("damage").hand_over(),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &flags,
    );
    publish_batch(&server, "damage.early", 20);
    let dir = server.data_dir.clone();
    eventually(20, "two snapshots", || {
        (files(&dir, "snapshots", ".snap").len() == 2).then_some(())
    });
    publish_batch(&server, "damage.late", 20);
    publish_batch(&server, "damage.last", 20);
    let dir = server.kill();

    // The newest snapshot: one flipped byte in the middle.
    let snaps = files(&dir, "snapshots", ".snap");
    let newest = snaps.last().unwrap();
    let mut bytes = std::fs::read(newest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(newest, &bytes).unwrap();
    // The newest log segment: its last record torn (as a crash mid-write leaves it).
    let segments = files(&dir, "wal", ".wal");
    let last = segments
        .iter()
        .rev()
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 24))
        .expect("a segment with records");
    let len = std::fs::metadata(last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(len - 5)
        .unwrap();

    let server = Server::start_in(dir, "127.0.0.1:0", "127.0.0.1:0", &flags);
    let report = server.recovery_report().join("\n");
    assert!(report.contains("DAMAGE"), "{report}");
    assert!(
        report.contains(&newest.display().to_string()),
        "names the snapshot: {report}"
    );
    assert!(report.contains("torn"), "names the torn log tail: {report}");
    // Everything before the damage is served; the torn record (the last batch) is not.
    assert_eq!(total(&server, "name,damage.early,:eq"), 20.0, "{report}");
    assert_eq!(total(&server, "name,damage.late,:eq"), 20.0, "{report}");
    assert_eq!(total(&server, "name,damage.last,:eq"), 0.0, "{report}");
    // It goes on taking writes, and the damage is reported once, not at every start.
    publish_batch(&server, "damage.after", 5);
    let dir = server.kill();
    let server = Server::start_in(dir, "127.0.0.1:0", "127.0.0.1:0", &flags);
    let report = server.recovery_report().join("\n");
    assert!(!report.contains("DAMAGE"), "{report}");
    assert_eq!(total(&server, "name,damage.after,:eq"), 5.0);
    assert_eq!(total(&server, "name,damage.early,:eq"), 20.0);
}

/// A tmpfs of `mib` MiB mounted at a new directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(mib: u32) -> Result<Tmpfs, String> {
        let dir = scratch_dir("tmpfs");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&*dir)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(Tmpfs(dir.hand_over()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Fills the file system holding `path` until it has no room left.
fn fill(path: &Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0xA5u8; 64 << 10];
    let mut written = 0;
    loop {
        match f.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    let _ = f.sync_all();
    written
}

#[test]
fn a_full_disk_refuses_writes_retryably_and_recovers_when_space_returns() {
    let tmpfs = match Tmpfs::mount(8) {
        Ok(t) => t,
        // Mounting needs root (CAP_SYS_ADMIN), which CI and this project's machines have.
        Err(e) => panic!("cannot mount a tmpfs for the disk-full test: {e}"),
    };
    let data = tmpfs.0.join("data");
    let flags = ["--step", "1s", "--snapshot-interval", "1s"];
    let server = Server::start_in(data.clone(), "127.0.0.1:0", "127.0.0.1:0", &flags);
    publish_batch(&server, "full.before", 10);
    eventually(20, "a snapshot", || {
        (!files(&data, "snapshots", ".snap").is_empty()).then_some(())
    });
    let filler = tmpfs.0.join("filler");
    let filled = fill(&filler);
    assert!(filled > 0);

    // Writes are refused with 503 and Retry-After, and say why.
    let payload = json!({
        "tags": {"name": "full.during", "atlas.dstype": "sum"},
        "metrics": [{"timestamp": now_ms() - 2_000, "value": 1.0}]
    })
    .to_string();
    let mut accepted_while_filling = 0;
    // The segment's last page may still take a few records.
    let refused = (0..5000)
        .find_map(|_| {
            let resp = Server::agent()
                .post(&format!("{}/api/v1/publish", server.base))
                .send(payload.as_bytes())
                .unwrap();
            let status = resp.status().as_u16();
            let retry = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap_or("").to_string());
            let mut resp = resp;
            let body = resp.body_mut().read_to_string().unwrap_or_default();
            accepted_while_filling += usize::from(status == 200);
            (status != 200).then_some((status, retry, body))
        })
        .expect("a write refused on a full disk");
    assert_eq!(refused.0, 503, "{refused:?}");
    assert_eq!(refused.1.as_deref(), Some("1"), "{refused:?}");
    assert!(refused.2.contains("No space left"), "{refused:?}");
    // Queries go on, with everything stored before.
    assert_eq!(total(&server, "name,full.before,:eq"), 10.0);
    let metrics = server.get("/metrics").1;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("argus_wal_write_errors_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    // Snapshots fail meanwhile; give one a chance to, then free the space.
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::remove_file(&filler).unwrap();
    eventually(10, "writes accepted again", || {
        let (status, _) = server.post("/api/v1/publish", payload.as_bytes(), None);
        (status == 200).then_some(())
    });
    publish_batch(&server, "full.after", 10);

    // Nothing good was damaged: a kill -9 and restart brings back all of it, cleanly.
    let dir = server.kill();
    let server = Server::start_in(dir, "127.0.0.1:0", "127.0.0.1:0", &flags);
    let report = server.recovery_report().join("\n");
    assert!(!report.contains("DAMAGE"), "{report}");
    assert_eq!(total(&server, "name,full.before,:eq"), 10.0, "{report}");
    assert_eq!(total(&server, "name,full.after,:eq"), 10.0, "{report}");
    // The writes the disk still took, and the one after space returned; none refused.
    assert_eq!(
        total(&server, "name,full.during,:eq"),
        (accepted_while_filling + 1) as f64,
        "{report}"
    );
    drop(server);
}
