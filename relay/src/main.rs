//! The `livestream-relay` binary: parses flags, reads secrets from the environment, runs
//! until SIGINT or SIGTERM, then shuts down cleanly (exit status 0).

use clap::Parser;
use livestream_relay::{start, Cli, Secrets};

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let quiet = cli.quiet;
    let relay = match start(cli, Secrets::from_env()).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("livestream-relay: {e}");
            std::process::exit(2);
        }
    };
    // Scripts parse this first line; with --listen 127.0.0.1:0 it carries the chosen port.
    println!("livestream-relay listening on http://{}", relay.addr());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    if !quiet {
        eprintln!("livestream-relay: shutting down");
    }
    relay.shutdown().await;
}
