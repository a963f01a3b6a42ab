//! One duration grammar: the same strings are taken by the server's settings, the agent's
//! and the command line (`1d` used to work on the server and fail on the agent).

use std::process::{Command, Stdio};

use argus_tests::{Agent, Server, binary};

const DURATIONS: [&str; 7] = ["500ms", "10s", "1m", "6h", "1d", "1w", "PT1M"];

#[test]
fn the_server_the_agent_and_the_cli_take_the_same_durations() {
    for d in DURATIONS {
        // The server starts (and answers) with it as a setting.
        let server = Server::start(&["--ephemeral", "--snapshot-interval", d]);
        // So does the agent.
        let agent = Agent::start(&server.grpc, &["--no-host-metrics", "--scrape-interval", d]);
        assert!(agent.health().is_object(), "{d}");
        // The CLI takes it as `--for`: whatever else happens, it is not refused.
        let out = Command::new(binary("argus"))
            .args(["live", "--server", "http://127.0.0.1:9", "--for", d])
            .arg("select * from requests")
            .stdin(Stdio::null())
            .output()
            .expect("running argus live");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("duration"),
            "argus live --for {d}: {stderr}"
        );
    }
    // And all three refuse the same things, saying why.
    let out = Command::new(binary("argus-agent"))
        .args(["--no-host-metrics", "--scrape-interval", "1x"])
        .output()
        .expect("running argus-agent");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid duration \"1x\""), "{stderr}");
    let out = Command::new(binary("argus"))
        .args(["server", "--ephemeral", "--snapshot-interval", "1x"])
        .output()
        .expect("running argus server");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid duration \"1x\""), "{stderr}");
}
