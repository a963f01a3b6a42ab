//! `argus-agent`: the process that runs beside a service and streams its host metrics, its
//! own metrics and its raw events to an Argus server. Collectors, receivers and the gRPC
//! client arrive with the agent work; this binary only explains that, honestly.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let help = "argus-agent: the Argus agent (runs beside a service, streams its metrics and \
events to an Argus server over gRPC)\n\nUsage: argus-agent [--help]\n\n\
Not implemented yet: host metrics, the StatsD and HTTP intakes and the gRPC client come with \
the agent work. Until then, publish to the server's HTTP API (see the README).";
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{help}");
        return ExitCode::SUCCESS;
    }
    eprintln!("{help}");
    ExitCode::from(2)
}
