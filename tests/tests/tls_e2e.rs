//! End-to-end TLS: the server's HTTP API and gRPC port over TLS (certificates made with
//! Debian's `openssl`), and mutual TLS between a real agent and the server: an agent with a
//! certificate from the client CA delivers; one without a certificate, or with one from
//! another CA, cannot connect.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use argus_tests::{Agent, Server, enc, eventually, now_ms, scratch_dir};
use serde_json::{Value, json};

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

/// A CA (`{name}-ca.pem`), and a certificate and key signed by it (`{name}.pem`,
/// `{name}.key`) for 127.0.0.1.
fn issue(dir: &Path, ca: &str, name: &str) {
    if !dir.join(format!("{ca}-ca.pem")).exists() {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{ca}-ca.key"),
                "-out",
                &format!("{ca}-ca.pem"),
                "-days",
                "2",
                "-subj",
                &format!("/CN={ca} test CA"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
    }
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
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

fn path(dir: &Path, file: &str) -> String {
    dir.join(file).to_string_lossy().into_owned()
}

/// curl over TLS trusting `ca`: (HTTP status, body); status 0 when TLS or the connection
/// failed.
fn curl(url: &str, ca: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "5", "-w", "\n%{http_code}"]);
    if let Some(ca) = ca {
        cmd.args(["--cacert", ca]);
    }
    let out = cmd.arg(url).output().expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn max_of(base: &str, ca: &str, name: &str) -> Option<f64> {
    let q = enc(&format!("name,{name},:eq,:max"));
    let (status, body) = curl(
        &format!("{base}/api/v1/graph?q={q}&s=e-2m&step=1s&format=stats.json"),
        Some(ca),
    );
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).ok()?["stats"][0]["max"].as_f64()
}

fn publish(agent: &Agent, name: &str) {
    let payload = json!({"tags": {"name": name, "atlas.dstype": "gauge"},
        "metrics": [{"timestamp": now_ms() - 2000, "value": 5.0}]});
    let (status, body) = agent.post("/api/v1/publish", payload.to_string().as_bytes());
    assert_eq!(status, 200, "{body}");
}

#[test]
fn tls_and_mutual_tls_between_a_real_agent_and_the_server() {
    let dir: PathBuf = scratch_dir("tls");
    issue(&dir, "argus", "server");
    issue(&dir, "agents", "agent");
    issue(&dir, "rogue", "rogue");
    let server = Server::start(&[
        "--ephemeral",
        "--step",
        "1s",
        "--tls-cert",
        &path(&dir, "server.pem"),
        "--tls-key",
        &path(&dir, "server.key"),
        "--tls-client-ca",
        &path(&dir, "agents-ca.pem"),
    ]);
    assert!(server.base.starts_with("https://"), "{}", server.base);
    let ca = path(&dir, "argus-ca.pem");
    let health = format!("{}/healthz", server.base);
    eventually(10, "health over TLS", || {
        (curl(&health, Some(&ca)).0 == 200).then_some(())
    });
    // An untrusted server certificate, and plain HTTP on the TLS port, both fail.
    assert_eq!(
        curl(&health, None).0,
        0,
        "curl must not trust the private CA"
    );
    let plain = health.replacen("https://", "http://", 1);
    assert_ne!(curl(&plain, None).0, 200, "plain HTTP on the TLS port");

    let grpc = server.grpc.replacen("http://", "https://", 1);
    // An agent trusting the server's CA, with the client certificate `name` if any.
    let agent = |name: Option<&str>| {
        let mut args = vec!["--step", "1s", "--no-host-metrics", "--tls-ca", &ca];
        let files = name.map(|n| {
            (
                path(&dir, &format!("{n}.pem")),
                path(&dir, &format!("{n}.key")),
            )
        });
        if let Some((cert, key)) = &files {
            args.extend(["--tls-cert", cert.as_str(), "--tls-key", key.as_str()]);
        }
        Agent::start(&grpc, &args)
    };
    let with_cert = agent(Some("agent"));
    let without_cert = agent(None);
    let rogue = agent(Some("rogue"));
    publish(&with_cert, "tls.trusted");
    publish(&without_cert, "tls.nocert");
    publish(&rogue, "tls.rogue");
    eventually(
        20,
        "the agent with a client certificate delivered over mutual TLS",
        || (max_of(&server.base, &ca, "tls.trusted") == Some(5.0)).then_some(()),
    );
    std::thread::sleep(Duration::from_secs(2));
    for (agent, name) in [(&without_cert, "tls.nocert"), (&rogue, "tls.rogue")] {
        assert_eq!(
            max_of(&server.base, &ca, name),
            None,
            "{name} must not get through"
        );
        let h = agent.health();
        assert!(h["reconnects"].as_u64().unwrap_or(0) >= 1, "{name}: {h}");
        assert!(
            h["buffer.bytes"].as_u64().unwrap_or(0) > 0,
            "{name} keeps its batch: {h}"
        );
    }
}
