//! The storm of KA-16598, replayed in virtual time against a model of the service whose
//! load balancer keeps a dropped client's slot for 60 s. Prints the attempt schedule of
//! this client and compares it with a naive client that reconnects after 1 s.
//! Run with `cargo test --test storm -- --nocapture` to see the schedule.

mod support;

use livestream_wasm::core::{Event, Options, ResponseHead, SlotState};
use support::{ms, options, record, Harness};

/// How long the model keeps a slot after its client vanished.
const SLOT_HOLD_MS: u64 = 60_000;
/// The simulated period.
const END_MS: u64 = 30 * 60_000;

/// A service with `maxConnections=1`: a slot is busy while a connection is open and for
/// SLOT_HOLD_MS after it dropped; it answers 503 during a "no hits yet" window; it drops
/// open connections at the given times.
struct Model {
    held_until: u64,
    open: bool,
    drops: Vec<u64>,
    no_traffic: (u64, u64),
}

impl Model {
    fn new() -> Self {
        Model {
            // A previous run of the dashboard crashed 10 s before we start: its slot is held.
            held_until: SLOT_HOLD_MS - 10_000,
            open: false,
            drops: vec![
                5 * 60_000,
                9 * 60_000,
                10 * 60_000 + 10_000,
                12 * 60_000 + 30_000,
                20 * 60_000,
            ],
            no_traffic: (12 * 60_000, 15 * 60_000),
        }
    }

    fn answer(&mut self, now: u64) -> u16 {
        if self.open || now < self.held_until {
            409
        } else if (self.no_traffic.0..self.no_traffic.1).contains(&now) {
            503
        } else {
            self.open = true;
            200
        }
    }

    fn drop_connection(&mut self, now: u64) {
        self.open = false;
        self.held_until = now + SLOT_HOLD_MS;
    }
}

struct Outcome {
    attempts: Vec<(u64, u16, Option<u64>)>,
    conflicts: usize,
    connected_ms: u64,
}

fn run(o: Options, print: bool) -> Outcome {
    let mut h = Harness::new(Options {
        reconnect_jitter: ms(5_000),
        ..o
    });
    let mut model = Model::new();
    let mut out = Outcome {
        attempts: Vec::new(),
        conflicts: 0,
        connected_ms: 0,
    };
    h.start();
    let mut answered = 0;
    let mut opened_at = None;
    let mut n = 0;
    while h.now < END_MS {
        // Answer every request made so far.
        while answered < h.connects.len() {
            let (t, _) = h.connects[answered];
            answered += 1;
            let status = model.answer(t);
            let body = if status == 409 {
                r#"{"error":"conflict","error_description":"maxConnections=1 exceeded"}"#
            } else {
                ""
            };
            h.respond_body(
                0,
                ResponseHead {
                    status,
                    ..Default::default()
                },
                body,
            );
            if status == 409 {
                out.conflicts += 1;
            }
            if status == 200 {
                opened_at = Some(h.now);
            }
            let wait = h.retry_in_ms(0);
            out.attempts.push((t, status, wait));
            if print {
                let verdict = match status {
                    200 => "200 open".to_string(),
                    s => format!("{s} -> waiting {:.1} s", wait.unwrap_or(0) as f64 / 1000.0),
                };
                println!(
                    "  t={:>7.1} s  attempt {:>2}: {verdict}",
                    t as f64 / 1000.0,
                    out.attempts.len()
                );
            }
        }
        // Hits flow while open; the service drops the connection at its drop times.
        let step = 1_000;
        // A drop time that passed while the client was not connected drops nothing.
        if h.state(0) != SlotState::Open {
            model.drops.retain(|&d| d > h.now);
        }
        if h.state(0) == SlotState::Open {
            n += 1;
            h.data(0, format!("{}\r\n", record(7, n)).as_bytes());
            if let Some(pos) = model.drops.iter().position(|&d| d <= h.now) {
                model.drops.remove(pos);
                model.drop_connection(h.now);
                out.connected_ms += h.now - opened_at.take().unwrap();
                h.fail(0, "connection reset by peer");
                if print {
                    let wait = h.retry_in_ms(0).unwrap_or(0);
                    println!(
                        "  t={:>7.1} s  the service drops the connection -> waiting {:.1} s",
                        h.now as f64 / 1000.0,
                        wait as f64 / 1000.0
                    );
                }
            }
        }
        h.advance(step);
    }
    if let Some(t) = opened_at {
        out.connected_ms += h.now - t;
    }
    assert!(
        h.events
            .iter()
            .all(|e| !matches!(e, Event::Error(x) if x.fatal)),
        "no fatal error in a storm"
    );
    out
}

#[test]
fn ka_16598_storm_schedule() {
    println!("\nKA-16598 storm, this client (reconnectDelayMs 60 000, jitter 5 000, 30 min):");
    let ours = run(options(), true);
    println!("\nsame storm, a naive client that reconnects after 1 s:");
    let naive = run(
        Options {
            reconnect_delay: ms(1_000),
            max_reconnect_delay: ms(1_000),
            ..options()
        },
        false,
    );
    println!(
        "  {} attempts, {} answered 409 (this client: {} attempts, {} answered 409)",
        naive.attempts.len(),
        naive.conflicts,
        ours.attempts.len(),
        ours.conflicts
    );
    println!(
        "  connected {:.0} % of the time (this client: {:.0} %)\n",
        naive.connected_ms as f64 / END_MS as f64 * 100.0,
        ours.connected_ms as f64 / END_MS as f64 * 100.0
    );
    // Every wait after a failure is at least the minimum delay...
    for (t, status, wait) in &ours.attempts {
        if *status != 200 {
            assert!(wait.unwrap() >= 60_000, "wait after {status} at {t}");
        }
    }
    // ...so the only 409 is the stale slot of the crashed predecessor: after each drop the
    // client comes back once the service has freed the slot.
    assert_eq!(ours.conflicts, 1, "{:?}", ours.attempts);
    assert!(
        naive.conflicts >= 50,
        "the naive client storms: {}",
        naive.conflicts
    );
    assert!(ours.attempts.len() * 5 < naive.attempts.len());
    assert!(ours.connected_ms as f64 > 0.6 * END_MS as f64);
}
