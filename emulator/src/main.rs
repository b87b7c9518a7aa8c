//! The `livestream-emulator` binary: parses the command line, starts the server, prints
//! the address line scripts parse, and exits cleanly on SIGINT/SIGTERM.

use clap::Parser;
use livestream_emulator::{start, Options};
use std::io::Write;
use std::process::ExitCode;

fn summary(o: &Options, seed: u64) -> String {
    let mut lines = vec![
        format!(
            "  streams: {} at {} hits/s (±50 %, bursts), reportSuite {}, seed {seed}{}",
            if o.streams.is_empty() {
                "any name".to_string()
            } else {
                o.streams.join(", ")
            },
            o.rate,
            o.report_suite,
            o.epoch.map_or(String::new(), |e| format!(", epoch {e}")),
        ),
        format!(
            "  auth: {}{}",
            if o.token.is_some() {
                "Bearer token required (--token)"
            } else {
                "any Bearer token"
            },
            if o.api_key.is_some() {
                ", x-api-key required"
            } else {
                ""
            }
        ),
        format!(
            "  slots: held {} s after a drop (early reconnect -> {}), resume within {} s re-sending {} record(s)",
            o.slot_hold_secs, o.early_status, o.resume_secs, o.resend
        ),
    ];
    if let Some(id) = &o.ims_client_id {
        lines.push(format!(
            "  ims: POST /ims/token/v3 for client id {id} (secret from LIVESTREAM_EMULATOR_IMS_SECRET), tokens live {} s; the stream accepts only those tokens",
            o.token_ttl_secs
        ));
    }
    let mut modes = Vec::new();
    if o.redirect {
        modes.push("302 redirect (_lb=1)".to_string());
    }
    if o.no_traffic {
        modes.push("no traffic (503)".to_string());
    }
    if let Some(k) = o.keepalive_secs {
        modes.push(format!("CRLF keep-alive after {k} s"));
    }
    if o.chaos {
        let faults: Vec<String> = o
            .chaos_faults
            .iter()
            .map(|f| format!("{f:?}").to_lowercase())
            .collect();
        modes.push(format!(
            "chaos p={} per record ({})",
            o.chaos_rate,
            faults.join(",")
        ));
    }
    if !modes.is_empty() {
        lines.push(format!("  modes: {}", modes.join("; ")));
    }
    if let Some(w) = &o.www {
        lines.push(format!("  static: / -> {}", w.display()));
    }
    for (p, d) in &o.mounts {
        lines.push(format!("  static: {p} -> {}", d.display()));
    }
    lines.push("  admin: GET /admin/stats, POST /admin/drop, POST /admin/reset, PUT|GET|DELETE /admin/streams/{name}".into());
    lines.join("\n")
}

#[tokio::main]
async fn main() -> ExitCode {
    let opts = Options::parse().with_env();
    if let Err(e) = opts.validate() {
        eprintln!("livestream-emulator: {e}");
        return ExitCode::from(2);
    }
    // Install the signal handlers before announcing the address: a script may signal us
    // as soon as it has read the first line.
    let signals = Signals::install();
    let server = match start(opts.clone()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("livestream-emulator: cannot listen on {}: {e}", opts.listen);
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "livestream-emulator listening on http://{}",
        server.addr()
    );
    let _ = writeln!(out, "{}", summary(&opts, server.seed()));
    let _ = out.flush();
    drop(out);

    signals.wait().await;
    if !opts.quiet {
        eprintln!("livestream-emulator: shutting down");
    }
    server.shutdown().await;
    ExitCode::SUCCESS
}

/// SIGINT and SIGTERM, registered up front.
#[cfg(unix)]
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            int: signal(SignalKind::interrupt()).expect("install the SIGINT handler"),
            term: signal(SignalKind::terminate()).expect("install the SIGTERM handler"),
        }
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// Ctrl-C where there are no Unix signals.
#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> Signals {
        Signals
    }

    async fn wait(self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}
