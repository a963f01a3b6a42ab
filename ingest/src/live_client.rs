//! `argus live 'select …'`: runs a live query on a server and streams its rows to the
//! terminal as NDJSON (standard output), with a running count of events matched and rows
//! dropped (standard error). Ctrl-C cancels: closing the connection ends the subscription on
//! the server, which stops the agents' traffic for it.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use argus_proto::http_client::{self, Endpoint};
use http_body_util::BodyExt;
use serde_json::Value;

/// What `argus live` needs.
pub struct LiveArgs {
    /// Base URL of the server's HTTP API, e.g. `http://127.0.0.1:7101` or `https://…`.
    pub server: String,
    /// PEM file of the CA that signed an `https://` server's certificate; without it, the
    /// system's (`SSL_CERT_FILE`, else Debian's bundle).
    pub ca: Option<std::path::PathBuf>,
    pub query: String,
    pub time_field: Option<String>,
    /// `mql` or `asl`; `None`: the server recognises it.
    pub language: Option<String>,
    /// The step of a stepped Stack Language expression (e.g. `10s`).
    pub step: Option<String>,
    /// Stop after this long (for scripts); `None`: until Ctrl-C or the query ends.
    pub duration: Option<Duration>,
    /// Print the running counts (to standard error).
    pub progress: bool,
    /// Bearer token (a `read` token when the server has `--auth-file`).
    pub token: Option<String>,
}

/// Characters a query-string value keeps as they are: RFC 3986's unreserved ones.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a query-string value.
pub fn encode_component(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}

/// Runs the query until it ends, Ctrl-C, or `duration`.
pub async fn run(args: LiveArgs) -> anyhow::Result<()> {
    let target = Endpoint::parse(&args.server).context("--server")?;
    let prefix = target.path.trim_end_matches('/');
    let mut path = format!(
        "{prefix}/api/v1/live?q={}&client=argus-live",
        encode_component(&args.query)
    );
    for (name, value) in [
        ("time-field", &args.time_field),
        ("lang", &args.language),
        ("step", &args.step),
    ] {
        if let Some(v) = value {
            path.push_str(&format!("&{name}={}", encode_component(v)));
        }
    }
    let tls = match target.tls {
        true => Some(http_client::tls_config(args.ca.as_deref())?),
        false => None,
    };
    let mut sender = http_client::connect(&target, tls.as_ref()).await?;
    let bearer = args.token.as_ref().map(|t| format!("Bearer {t}"));
    let mut headers = vec![(hyper::header::ACCEPT, "text/event-stream")];
    if let Some(b) = &bearer {
        headers.push((hyper::header::AUTHORIZATION, b.as_str()));
    }
    let req = http_client::get(&target, &path, &headers)?;
    let resp = sender.send_request(req).await.with_context(|| {
        if target.tls {
            "sending the query".to_string()
        } else {
            "sending the query (if the server uses TLS, its address starts with https://)"
                .to_string()
        }
    })?;
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        bail!("the server refused the query ({status}): {message}");
    }

    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let stop = async {
        match deadline {
            Some(t) => tokio::time::sleep_until(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stop);
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut parser = SseParser::default();
    let mut out = Printer::new(args.progress);
    loop {
        tokio::select! {
            frame = body.frame() => match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        for (event, data) in parser.push(&data) {
                            if out.message(&event, &data)? {
                                out.finish();
                                return Ok(());
                            }
                        }
                    }
                }
                Some(Err(e)) => {
                    out.finish();
                    return Err(anyhow!(e).context("the live stream broke"));
                }
                None => {
                    out.finish();
                    bail!("the server closed the live stream");
                }
            },
            _ = &mut stop => break,
            _ = &mut interrupted => break,
        }
    }
    out.finish();
    Ok(())
}

/// Server-Sent Events from a byte stream: (event, data) pairs.
#[derive(Default)]
pub struct SseParser {
    buf: Vec<u8>,
    event: String,
    data: String,
}

impl SseParser {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<(String, String)> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() || !self.event.is_empty() {
                    let event = std::mem::take(&mut self.event);
                    let event = if event.is_empty() {
                        "message".into()
                    } else {
                        event
                    };
                    out.push((event, std::mem::take(&mut self.data)));
                }
            } else if let Some(v) = line.strip_prefix("event:") {
                self.event = v.trim_start().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        out
    }
}

/// Rows to standard output; counts and diagnostics to standard error.
struct Printer {
    progress: bool,
    terminal: bool,
    status_shown: bool,
}

impl Printer {
    fn new(progress: bool) -> Printer {
        Printer {
            progress,
            terminal: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            status_shown: false,
        }
    }

    /// Handles one message; true when the stream is over.
    fn message(&mut self, event: &str, data: &str) -> anyhow::Result<bool> {
        match event {
            "row" => {
                self.clear_status();
                let mut stdout = std::io::stdout().lock();
                writeln!(stdout, "{data}").context("writing a row")?;
                stdout.flush().context("writing a row")?;
            }
            "stats" if self.progress => {
                let v: Value = serde_json::from_str(data).unwrap_or_default();
                let line = format!(
                    "-- {} events matched, {} rows, {} dropped",
                    v["matched"], v["rows"], v["dropped"]
                );
                if self.terminal {
                    eprint!("\r\x1b[2K{line}");
                    self.status_shown = true;
                } else {
                    eprintln!("{line}");
                }
            }
            "diagnostic" => {
                self.clear_status();
                let v: Value = serde_json::from_str(data).unwrap_or_default();
                eprintln!("argus live: {}", v["message"].as_str().unwrap_or(data));
            }
            "subscribed" if self.progress => {
                let v: Value = serde_json::from_str(data).unwrap_or_default();
                eprintln!(
                    "-- subscribed (id {}) to {}; Ctrl-C to stop",
                    v["id"], v["streams"]
                );
            }
            "end" => return Ok(true),
            _ => {}
        }
        Ok(false)
    }

    fn clear_status(&mut self) {
        if self.status_shown {
            eprint!("\r\x1b[2K");
            self.status_shown = false;
        }
    }

    fn finish(&mut self) {
        if self.status_shown {
            eprintln!();
            self.status_shown = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_frames_split_anywhere() {
        let mut p = SseParser::default();
        let mut got = p.push(b"event: row\ndata: {\"a\"");
        assert!(got.is_empty());
        got.extend(p.push(b":1}\n\nevent: stats\r\ndata: {}\r\n\r\n: keep-alive\n\n"));
        assert_eq!(
            got,
            [
                ("row".to_string(), "{\"a\":1}".to_string()),
                ("stats".to_string(), "{}".to_string())
            ]
        );
    }

    #[test]
    fn components() {
        assert_eq!(encode_component("a b&c='x'"), "a%20b%26c%3D%27x%27");
    }
}
