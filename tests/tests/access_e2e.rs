//! End-to-end access control: every HTTP route and every gRPC method, asked with no token, an
//! unknown token, a token of the wrong role and the right one; a real agent with a `write`
//! token delivers, and `argus live` with a `read` token runs a query.

use argus_tests::{Agent, Server, enc, eventually, now_ms, python_with, scratch_dir};
use serde_json::{Value, json};

const READ: &str = "read-token-0123456789abcdef";
const WRITE: &str = "write-token-0123456789abcdef";
const ADMIN: &str = "admin-token-0123456789abcdef";
const UNKNOWN: &str = "not-a-token-0123456789abcdef";

fn auth_server(extra: &[&str]) -> (Server, argus_tests::ScratchDir) {
    let dir = scratch_dir("auth");
    let file = dir.join("tokens.toml");
    std::fs::write(
        &file,
        format!(
            "[[token]]\nname = \"dashboards\"\nrole = \"read\"\nsecret = \"{READ}\"\n\n\
             [[token]]\nname = \"agents\"\nrole = \"write\"\nsecret = \"{WRITE}\"\n\n\
             [[token]]\nname = \"ops\"\nrole = \"admin\"\nsecret = \"{ADMIN}\"\n"
        ),
    )
    .unwrap();
    let mut args = vec![
        "--ephemeral",
        "--step",
        "1s",
        "--auth-file",
        file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    (Server::start(&args), dir)
}

/// (status, body, www-authenticate) of one request with an optional bearer token.
fn call(
    server: &Server,
    method: &str,
    path: &str,
    body: &[u8],
    token: Option<&str>,
) -> (u16, String, Option<String>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(5)))
        .build()
        .into();
    let url = format!("{}{path}", server.base);
    let auth = token.map(|t| format!("Bearer {t}"));
    let result = if method == "POST" {
        let mut req = agent.post(&url);
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        req.send(body)
    } else {
        let mut req = agent.get(&url);
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        req.call()
    };
    let mut resp = result.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap_or("").to_string());
    // Streams (live, stream) never end: read their first bytes only.
    let mut text = String::new();
    let stream = path.starts_with("/api/v1/live?") || path.starts_with("/api/v1/stream");
    if !(stream && (200..300).contains(&status)) {
        text = resp.body_mut().read_to_string().unwrap_or_default();
    }
    (status, text, challenge)
}

#[test]
fn every_route_needs_its_role() {
    let (server, _dir) = auth_server(&[]);
    let publish = json!({"tags": {"name": "auth.test", "atlas.dstype": "gauge"},
        "metrics": [{"timestamp": now_ms() - 1000, "value": 1.0}]})
    .to_string();
    let remote_write = snap::raw::Encoder::new().compress_vec(&[]).unwrap();
    let events = b"{\"status\": 200}\n".to_vec();
    let q = enc("name,auth.test,:eq");
    let live = enc("select * from requests");
    let routes: Vec<(&str, String, Vec<u8>, &str)> = vec![
        (
            "POST",
            "/api/v1/publish".into(),
            publish.clone().into_bytes(),
            "write",
        ),
        (
            "POST",
            "/api/v1/publish-fast".into(),
            publish.clone().into_bytes(),
            "write",
        ),
        (
            "POST",
            "/api/v1/backfill".into(),
            publish.clone().into_bytes(),
            "write",
        ),
        ("POST", "/api/v1/write".into(), remote_write, "write"),
        ("POST", "/api/v1/events/requests".into(), events, "write"),
        ("GET", "/api/v1/tags".into(), vec![], "read"),
        ("GET", "/api/v1/tags/name".into(), vec![], "read"),
        (
            "GET",
            format!("/api/v1/graph?q={q}&format=json"),
            vec![],
            "read",
        ),
        ("GET", format!("/api/v1/expr?q={q}"), vec![], "read"),
        ("GET", format!("/api/v1/expr/debug?q={q}"), vec![], "read"),
        ("GET", format!("/api/v1/live?q={live}"), vec![], "read"),
        ("GET", "/api/v1/live/subscriptions".into(), vec![], "read"),
        ("GET", "/api/v1/agents".into(), vec![], "read"),
        ("GET", format!("/api/v1/stream?q={q},:sum"), vec![], "read"),
        ("GET", "/metrics".into(), vec![], "read"),
        ("GET", "/api/v1/cardinality".into(), vec![], "admin"),
        ("GET", "/api/v1/debug/storage".into(), vec![], "admin"),
    ];
    for (method, path, body, role) in &routes {
        let what = format!("{method} {path}");
        let (status, text, challenge) = call(&server, method, path, body, None);
        assert_eq!(status, 401, "{what} without a token: {text}");
        assert_eq!(
            challenge.as_deref(),
            Some("Bearer realm=\"argus\""),
            "{what}"
        );
        assert!(text.contains("no bearer token"), "{what}: {text}");
        let (status, text, _) = call(&server, method, path, body, Some(UNKNOWN));
        assert_eq!(status, 401, "{what} with an unknown token: {text}");
        assert!(!text.contains(UNKNOWN), "the token is not echoed: {text}");
        let wrong = if *role == "write" { READ } else { WRITE };
        let (status, text, _) = call(&server, method, path, body, Some(wrong));
        assert_eq!(status, 403, "{what} with the wrong role: {text}");
        assert!(
            text.contains(&format!("this needs {role}")),
            "{what}: {text}"
        );
        let right = match *role {
            "write" => WRITE,
            "read" => READ,
            _ => ADMIN,
        };
        for token in [right, ADMIN] {
            let (status, text, _) = call(&server, method, path, body, Some(token));
            assert!(
                (200..300).contains(&status),
                "{what} with a {role} token: {status} {text}"
            );
        }
    }
    // Open: the health check.
    assert_eq!(call(&server, "GET", "/healthz", b"", None).0, 200);
}

/// Calls each gRPC method with raw bytes and prints the status codes as JSON.
const GRPC_CLIENT: &str = r#"
import json, sys, grpc
endpoint = sys.argv[1]
tokens = {"none": None, "unknown": sys.argv[2], "read": sys.argv[3], "write": sys.argv[4], "admin": sys.argv[5]}
channel = grpc.insecure_channel(endpoint)
def meta(t):
    m = [("argus-agent-id", "auth-test")]
    if t: m.append(("authorization", "Bearer " + t))
    return m
def code(f):
    try:
        f()
        return "OK"
    except grpc.RpcError as e:
        return e.code().name
methods = {
    "otlp_metrics": lambda m: channel.unary_unary("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export")(b"", metadata=m, timeout=5),
    "otlp_logs": lambda m: channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")(b"", metadata=m, timeout=5),
    "push_metrics": lambda m: list(channel.stream_stream("/argus.v1.Ingest/PushMetrics")(iter([]), metadata=m, timeout=5)),
    "push_events": lambda m: list(channel.stream_stream("/argus.v1.Ingest/PushEvents")(iter([]), metadata=m, timeout=5)),
}
print(json.dumps({name: {who: code(lambda: f(meta(t))) for who, t in tokens.items()} for name, f in methods.items()}))
"#;

#[test]
fn every_grpc_service_needs_a_write_token_and_an_agent_with_one_delivers() {
    let (server, _dir) = auth_server(&[]);
    let python = python_with(&["grpcio-tools==1.85.1"]);
    let endpoint = server.grpc.trim_start_matches("http://").to_string();
    let out = std::process::Command::new(&python)
        .args(["-c", GRPC_CLIENT, &endpoint, UNKNOWN, READ, WRITE, ADMIN])
        .output()
        .expect("running the Python gRPC client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("the client's JSON");
    for method in ["otlp_metrics", "otlp_logs", "push_metrics", "push_events"] {
        let m = &r[method];
        assert_eq!(m["none"], "UNAUTHENTICATED", "{method}: {r}");
        assert_eq!(m["unknown"], "UNAUTHENTICATED", "{method}: {r}");
        assert_eq!(m["read"], "PERMISSION_DENIED", "{method}: {r}");
        assert_eq!(m["write"], "OK", "{method}: {r}");
        assert_eq!(m["admin"], "OK", "{method}: {r}");
    }

    // A real agent: with the write token its data arrives; with a read token it does not.
    let good = Agent::start(
        &server.grpc,
        &["--step", "1s", "--no-host-metrics", "--token", WRITE],
    );
    let bad = Agent::start(
        &server.grpc,
        &["--step", "1s", "--no-host-metrics", "--token", READ],
    );
    for (agent, name) in [(&good, "auth.good"), (&bad, "auth.bad")] {
        let payload = json!({"tags": {"name": name, "atlas.dstype": "gauge"},
            "metrics": [{"timestamp": now_ms() - 2000, "value": 7.0}]});
        let (status, body) = agent.post("/api/v1/publish", payload.to_string().as_bytes());
        assert_eq!(status, 200, "{body}");
    }
    let graph = |name: &str| {
        let (status, text, _) = call(
            &server,
            "GET",
            &format!(
                "/api/v1/graph?q={}&s=e-2m&step=1s&format=stats.json",
                enc(&format!("name,{name},:eq,:max"))
            ),
            b"",
            Some(READ),
        );
        assert_eq!(status, 200, "{text}");
        serde_json::from_str::<Value>(&text).unwrap()["stats"][0]["max"].as_f64()
    };
    eventually(20, "the agent with a write token delivered", || {
        (graph("auth.good") == Some(7.0)).then_some(())
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(
        graph("auth.bad"),
        None,
        "an agent with a read token must not write"
    );
    // It keeps the batch and retries: refused, not lost.
    let health = bad.health();
    assert!(health["reconnects"].as_u64().unwrap_or(0) >= 1, "{health}");
    assert!(health["buffer.bytes"].as_u64().unwrap_or(0) > 0, "{health}");
}

#[test]
fn tokens_rotate_on_sighup_without_a_restart() {
    let (server, dir) = auth_server(&[]);
    let file = dir.join("tokens.toml");
    assert_eq!(call(&server, "GET", "/api/v1/tags", b"", Some(READ)).0, 200);
    const ROTATED: &str = "rotated-read-token-0123456789";
    std::fs::write(
        &file,
        format!("[[token]]\nname = \"dashboards\"\nrole = \"read\"\nsecret = \"{ROTATED}\"\n"),
    )
    .unwrap();
    let hangup = || {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &server.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    hangup();
    eventually(10, "the rotated token in force", || {
        (call(&server, "GET", "/api/v1/tags", b"", Some(ROTATED)).0 == 200).then_some(())
    });
    assert_eq!(call(&server, "GET", "/api/v1/tags", b"", Some(READ)).0, 401);
    // A file that does not load leaves the tokens in force (and the server running): once
    // the server says it tried (and failed), the rotated token still works.
    let failed_reloads = || -> u64 {
        let (_, text, _) = call(&server, "GET", "/metrics", b"", Some(ROTATED));
        text.lines()
            .find_map(|l| {
                l.strip_prefix("argus_auth_reloads_total{outcome=\"failed\"}")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(u64::MAX)
    };
    assert_eq!(failed_reloads(), 0);
    std::fs::write(&file, "[[token]\nbroken").unwrap();
    hangup();
    eventually(10, "the failed reload", || {
        (failed_reloads() == 1).then_some(())
    });
    assert_eq!(
        call(&server, "GET", "/api/v1/tags", b"", Some(ROTATED)).0,
        200
    );
    assert_eq!(call(&server, "GET", "/healthz", b"", None).0, 200);
}

/// The bearer scheme is case-insensitive, as HTTP's schemes are: `BEARER` used to get a 401
/// while `bearer` worked.
#[test]
fn the_bearer_scheme_is_case_insensitive() {
    let (server, _dir) = auth_server(&[]);
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let mut resp = Server::agent()
            .get(&format!("{}/api/v1/tags", server.base))
            .header("authorization", &format!("{scheme} {READ}"))
            .call()
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        assert_eq!(status, 200, "{scheme}: {body}");
    }
    let mut resp = Server::agent()
        .get(&format!("{}/api/v1/tags", server.base))
        .header("authorization", &format!("Basic {READ}"))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let _ = resp.body_mut().read_to_string();
}
