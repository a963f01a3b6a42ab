//! End-to-end protection against slow and oversized clients: a thousand connections trickling
//! header bytes do not stop normal requests and are closed at the header timeout; a body
//! trickled past the body timeout gets 408; a 100 MiB body is refused without being read
//! into memory.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use argus_tests::{Server, now_ms, rss_kib, still_open};
use serde_json::json;

fn addr(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_string()
}

#[test]
fn a_thousand_trickling_connections_do_not_stop_normal_requests() {
    let server = Server::start(&[
        "--ephemeral",
        "--http-header-timeout",
        "3s",
        "--http-body-timeout",
        "2s",
    ]);
    let target = addr(&server);
    let mut slow: Vec<TcpStream> = (0..1000)
        .map(|i| {
            let mut s =
                TcpStream::connect(&target).unwrap_or_else(|e| panic!("connection {i}: {e}"));
            s.write_all(b"POST /api/v1/publish HTTP/1.1\r\nHost: argus\r\n")
                .unwrap();
            s
        })
        .collect();
    // While they trickle a header byte each 200 ms, normal requests are served promptly.
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut round = 0;
    while started.elapsed() < Duration::from_secs(2) {
        for s in slow.iter_mut() {
            let _ = s.write_all(b"X");
        }
        round += 1;
        let t = Instant::now();
        let payload = json!({"tags": {"name": "slow.ok", "atlas.dstype": "gauge"},
            "metrics": [{"timestamp": now_ms() - 1000, "value": f64::from(round)}]});
        let (status, body) = server.post("/api/v1/publish", payload.to_string().as_bytes(), None);
        assert_eq!(status, 200, "{body}");
        assert_eq!(server.get("/healthz").0, 200);
        latencies.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(200));
    }
    latencies.sort();
    let worst = *latencies.last().unwrap();
    assert!(
        worst < Duration::from_millis(500),
        "a publish and a health check took up to {worst:?} beside 1,000 slow connections"
    );
    // By the header timeout (and a little), the server has closed every one of them.
    let deadline = started + Duration::from_secs(5);
    assert_eq!(
        still_open(&mut slow, deadline),
        0,
        "connections the header timeout should have closed"
    );
    eprintln!(
        "1,000 trickling connections: {} normal round trips, worst {worst:?}, all closed by \
         the header timeout",
        latencies.len()
    );

    // A body trickled past the body timeout: 408.
    let mut s = TcpStream::connect(&target).unwrap();
    s.write_all(
        b"POST /api/v1/publish HTTP/1.1\r\nHost: argus\r\nContent-Length: 1000\r\n\r\n{\"tags\":",
    )
    .unwrap();
    let t = Instant::now();
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("--http-body-timeout"), "{response}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn a_100_mib_body_is_refused_without_being_read() {
    let server = Server::start(&["--ephemeral", "--max-body-bytes", "8388608"]);
    let target = addr(&server);
    let before = rss_kib(server.pid());
    // Declared: refused from the headers alone, before a byte of body is sent.
    let mut s = TcpStream::connect(&target).unwrap();
    s.write_all(
        b"POST /api/v1/publish HTTP/1.1\r\nHost: argus\r\nContent-Length: 104857600\r\n\r\n",
    )
    .unwrap();
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    let response = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("refused before reading it"), "{response}");

    // Chunked, so no length to check: read up to the limit, then refused.
    let mut s = TcpStream::connect(&target).unwrap();
    s.write_all(
        b"POST /api/v1/publish HTTP/1.1\r\nHost: argus\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let mut sent = 0usize;
    for _ in 0..100 {
        let head = format!("{:x}\r\n", chunk.len());
        if s.write_all(head.as_bytes())
            .and_then(|()| s.write_all(&chunk))
            .and_then(|()| s.write_all(b"\r\n"))
            .is_err()
        {
            break; // the server stopped reading and closed
        }
        sent += chunk.len();
    }
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut response = vec![0u8; 4096];
    let n = s.read(&mut response).unwrap_or(0);
    let response = String::from_utf8_lossy(&response[..n]).to_string();
    assert!(
        response.starts_with("HTTP/1.1 413"),
        "after {sent} bytes sent: {response}"
    );
    let after = rss_kib(server.pid());
    assert!(
        after < before + 40 * 1024,
        "resident memory went from {before} KiB to {after} KiB for a refused 100 MiB body"
    );
    assert_eq!(server.get("/healthz").0, 200);
}

#[test]
fn silent_and_trickling_grpc_connections_are_closed_and_agents_still_deliver() {
    let server = Server::start(&["--ephemeral", "--step", "1s", "--http-header-timeout", "2s"]);
    let target = server.grpc.trim_start_matches("http://").to_string();
    let mut silent: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(&target).unwrap())
        .collect();
    let mut trickling: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(&target).unwrap())
        .collect();
    let agent = argus_tests::Agent::start(&server.grpc, &["--step", "1s", "--no-host-metrics"]);
    let payload = json!({"tags": {"name": "grpc.slow", "atlas.dstype": "gauge"},
        "metrics": [{"timestamp": now_ms() - 2000, "value": 3.0}]});
    let (status, body) = agent.post("/api/v1/publish", payload.to_string().as_bytes());
    assert_eq!(status, 200, "{body}");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        for s in trickling.iter_mut() {
            // The HTTP/2 preface, one byte at a time.
            let _ = s.write_all(b"P");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let open = still_open(
        silent.iter_mut().chain(trickling.iter_mut()),
        Instant::now(),
    );
    assert_eq!(
        open, 0,
        "gRPC connections without a preface in time must be closed"
    );
    let q = argus_tests::enc("name,grpc.slow,:eq,:max");
    argus_tests::eventually(
        20,
        "the agent's datapoint beside 600 slow connections",
        || {
            let v = server.get_json(&format!(
                "/api/v1/graph?q={q}&s=e-2m&step=1s&format=stats.json"
            ));
            (v["stats"][0]["max"].as_f64() == Some(3.0)).then_some(())
        },
    );
}
