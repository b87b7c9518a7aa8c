//! Counters and the upstream's current state, shared by the upstream driver, the fan-out and
//! the HTTP handlers; rendered as Prometheus text (`/metrics`), JSON (`/status`) and a
//! health verdict (`/healthz`).

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One upstream slot as last reported by the core.
#[derive(Clone, Debug, Default)]
pub struct SlotView {
    /// `idle`, `connecting`, `open`, `waiting`, `closed` or `failed`.
    pub state: &'static str,
    /// Last HTTP status seen on this slot.
    pub http_status: Option<u16>,
    /// Why it is in this state (the core's `SlotStats::cause`: no schedule, see `retry_in_ms`).
    pub reason: String,
    /// While waiting: the wait scheduled, ms.
    pub retry_in_ms: Option<u64>,
}

/// The upstream side of one stream as the core reports it.
#[derive(Clone, Debug, Default)]
pub struct UpstreamView {
    /// One entry per slot.
    pub slots: Vec<SlotView>,
    /// Set when the core stopped for good (fatal status such as 400/403/404).
    pub failed: Option<String>,
    /// Attempts made after a loss.
    pub reconnects: u64,
    /// Requests made (redirect hops included).
    pub connects: u64,
    /// Duplicate hits dropped by the core.
    pub duplicates: u64,
    /// Malformed records skipped.
    pub malformed: u64,
    /// Oversized records skipped.
    pub oversized: u64,
}

/// Counters of one upstream stream and its downstream clients.
#[derive(Default)]
pub struct StreamMetrics {
    /// Downstream name (`/api/1/stream/{name}`).
    pub name: String,
    /// Records received from upstream and published (validated, de-duplicated).
    pub records_in: AtomicU64,
    /// Body bytes received from upstream (as on the wire, before inflating).
    pub bytes_in: AtomicU64,
    /// Segments published (one per upstream chunk with new records).
    pub segments: AtomicU64,
    /// Downstream clients connected now.
    pub clients_now: AtomicU64,
    /// Downstream clients ever connected.
    pub clients_total: AtomicU64,
    /// Downstream clients cut for falling behind.
    pub clients_cut: AtomicU64,
    /// Records sent as replay to joining clients.
    pub replayed_records: AtomicU64,
    /// Upstream HTTP statuses seen, by code.
    pub statuses: Mutex<BTreeMap<u16, u64>>,
    /// Upstream failures without a status (network errors, idle timeouts, token errors).
    pub upstream_errors: AtomicU64,
    /// The core's view of the slots.
    pub upstream: Mutex<UpstreamView>,
    /// Fleet mode (`--redis`): leases, fencing and the Redis Stream of this stream.
    pub fleet: FleetStats,
}

impl StreamMetrics {
    /// Empty counters for stream `name`.
    pub fn new(name: &str) -> StreamMetrics {
        StreamMetrics {
            name: name.to_string(),
            ..Default::default()
        }
    }

    /// Counts one upstream response status.
    pub fn saw_status(&self, status: u16) {
        *self
            .statuses
            .lock()
            .expect("metrics lock")
            .entry(status)
            .or_default() += 1;
    }
}

/// Fleet mode (`--redis`): one stream's leases, fencing and Redis Stream, as this relay
/// sees them.
#[derive(Default)]
pub struct FleetStats {
    /// Per slot: (this relay holds its lease, the fencing token last seen for it).
    pub leases: Mutex<Vec<(bool, u64)>>,
    /// Slots this relay took over from a previous owner.
    pub handovers: AtomicU64,
    /// Leases this relay lost (refused renewal, or no renewal in time).
    pub lease_losses: AtomicU64,
    /// Writes of this relay refused by the fencing check (it was a stale owner).
    pub fenced_refusals: AtomicU64,
    /// Records this relay appended to the Redis Stream as an owner.
    pub records_appended: AtomicU64,
    /// Records read from the Redis Stream and handed to the local fan-out.
    pub records_read: AtomicU64,
    /// Records read from the Redis Stream and dropped as already delivered.
    pub duplicates_dropped: AtomicU64,
    /// Records this relay appended again as an owner after Redis lost them.
    pub records_restored: AtomicU64,
    /// Batches dropped because the write queue to Redis was full.
    pub batches_dropped: AtomicU64,
    /// Entries in the Redis Stream (last `XLEN`).
    pub stream_length: AtomicU64,
    /// Milliseconds between the newest entry read and the moment it was read.
    pub stream_lag_ms: AtomicU64,
}

/// Writes one Prometheus family: name, type, help, (labels, value) rows.
type Family<'a> = dyn FnMut(&str, &str, &str, Vec<(String, String)>) + 'a;

/// Everything `/metrics`, `/status` and `/healthz` report.
pub struct RelayMetrics {
    /// Per upstream stream, in `--upstream` order.
    pub streams: Vec<Arc<StreamMetrics>>,
    /// Tokens obtained from IMS (the first one included).
    pub token_renewals: AtomicU64,
    /// Failed IMS requests.
    pub token_failures: AtomicU64,
    /// Set once shutdown began.
    pub shutting_down: AtomicBool,
    /// Where tokens come from: `ims` or `fixed`.
    pub token_source: &'static str,
    /// Fleet mode: this relay's id in the fleet (`None`: the relay runs alone).
    pub fleet_id: Option<String>,
    /// Fleet mode: Redis answered the last command.
    pub redis_up: AtomicBool,
    /// Fleet mode: why Redis is unavailable, while it is.
    pub redis_error: Mutex<Option<String>>,
    started: Instant,
}

const STATES: [&str; 7] = [
    "idle",
    "connecting",
    "open",
    "waiting",
    "closed",
    "failed",
    "standby",
];

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl RelayMetrics {
    /// Metrics for these streams.
    pub fn new(streams: Vec<Arc<StreamMetrics>>, token_source: &'static str) -> RelayMetrics {
        RelayMetrics {
            streams,
            token_renewals: AtomicU64::new(0),
            token_failures: AtomicU64::new(0),
            shutting_down: AtomicBool::new(false),
            token_source,
            fleet_id: None,
            redis_up: AtomicBool::new(false),
            redis_error: Mutex::new(None),
            started: Instant::now(),
        }
    }

    /// `(true, "ok")` while every upstream slot is open, connecting or waiting normally;
    /// `(false, reason)` once an upstream failed fatally or the relay is shutting down.
    pub fn health(&self) -> (bool, String) {
        if self.shutting_down.load(Relaxed) {
            return (false, "shutting down".into());
        }
        for s in &self.streams {
            if let Some(why) = &s.upstream.lock().expect("metrics lock").failed {
                return (false, format!("upstream {} failed: {why}", s.name));
            }
        }
        if self.fleet_id.is_some() && !self.redis_up.load(Relaxed) {
            // Still serving what it has (and an owner keeps reading while its lease is
            // valid), so not a reason for a load balancer to take this relay out.
            let why = self.redis_error.lock().expect("metrics lock").clone();
            return (
                true,
                format!(
                    "ok (degraded: Redis unavailable: {})",
                    why.unwrap_or_else(|| "not connected yet".into())
                ),
            );
        }
        (true, "ok".into())
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn prometheus(&self) -> String {
        let mut o = String::with_capacity(4096);
        let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, String)>| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in rows {
                let _ = writeln!(o, "{name}{labels} {v}");
            }
        };
        let per = |f: &dyn Fn(&StreamMetrics) -> u64| {
            self.streams
                .iter()
                .map(|s| {
                    (
                        format!("{{stream=\"{}\"}}", label(&s.name)),
                        f(s).to_string(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let ups: Vec<(String, UpstreamView)> = self
            .streams
            .iter()
            .map(|s| {
                (
                    label(&s.name),
                    s.upstream.lock().expect("metrics lock").clone(),
                )
            })
            .collect();
        let mut rows = Vec::new();
        for (name, u) in &ups {
            for (i, slot) in u.slots.iter().enumerate() {
                for st in STATES {
                    rows.push((
                        format!("{{stream=\"{name}\",slot=\"{i}\",state=\"{st}\"}}"),
                        u8::from(slot.state == st).to_string(),
                    ));
                }
            }
        }
        family(
            "livestream_relay_upstream_slot_state",
            "gauge",
            "1 for the current state of each upstream slot.",
            rows,
        );
        family(
            "livestream_relay_upstream_failed",
            "gauge",
            "1 when the upstream stopped for good (see /healthz for the reason).",
            ups.iter()
                .map(|(n, u)| {
                    (
                        format!("{{stream=\"{n}\"}}"),
                        u8::from(u.failed.is_some()).to_string(),
                    )
                })
                .collect(),
        );
        family(
            "livestream_relay_records_in_total",
            "counter",
            "Records received upstream (validated, de-duplicated) and published.",
            per(&|s| s.records_in.load(Relaxed)),
        );
        family(
            "livestream_relay_bytes_in_total",
            "counter",
            "Upstream body bytes received.",
            per(&|s| s.bytes_in.load(Relaxed)),
        );
        let core = |f: fn(&UpstreamView) -> u64| {
            ups.iter()
                .map(|(n, u)| (format!("{{stream=\"{n}\"}}"), f(u).to_string()))
                .collect::<Vec<_>>()
        };
        family(
            "livestream_relay_upstream_reconnects_total",
            "counter",
            "Upstream attempts made after a loss.",
            core(|u| u.reconnects),
        );
        family(
            "livestream_relay_upstream_requests_total",
            "counter",
            "Upstream requests made (redirect hops included).",
            core(|u| u.connects),
        );
        family(
            "livestream_relay_upstream_duplicates_total",
            "counter",
            "Duplicate hits dropped.",
            core(|u| u.duplicates),
        );
        family(
            "livestream_relay_upstream_malformed_total",
            "counter",
            "Malformed or oversized records skipped.",
            core(|u| u.malformed + u.oversized),
        );
        let mut rows = Vec::new();
        for s in &self.streams {
            let st = s.statuses.lock().expect("metrics lock");
            for code in [200u16, 401, 409, 503] {
                if !st.contains_key(&code) {
                    rows.push((
                        format!("{{stream=\"{}\",code=\"{code}\"}}", label(&s.name)),
                        "0".into(),
                    ));
                }
            }
            for (code, n) in st.iter() {
                rows.push((
                    format!("{{stream=\"{}\",code=\"{code}\"}}", label(&s.name)),
                    n.to_string(),
                ));
            }
        }
        family(
            "livestream_relay_upstream_responses_total",
            "counter",
            "Upstream responses by HTTP status (409/503: KA-16598 refusals; 401: token refused).",
            rows,
        );
        family(
            "livestream_relay_upstream_errors_total",
            "counter",
            "Upstream attempts that ended without a status (network error, idle timeout, token).",
            per(&|s| s.upstream_errors.load(Relaxed)),
        );
        family(
            "livestream_relay_segments_total",
            "counter",
            "Segments published downstream (each compressed once for all clients).",
            per(&|s| s.segments.load(Relaxed)),
        );
        family(
            "livestream_relay_clients",
            "gauge",
            "Downstream clients connected now.",
            per(&|s| s.clients_now.load(Relaxed)),
        );
        family(
            "livestream_relay_clients_total",
            "counter",
            "Downstream clients ever connected.",
            per(&|s| s.clients_total.load(Relaxed)),
        );
        family(
            "livestream_relay_clients_cut_total",
            "counter",
            "Downstream clients cut for falling behind.",
            per(&|s| s.clients_cut.load(Relaxed)),
        );
        family(
            "livestream_relay_replayed_records_total",
            "counter",
            "Records replayed to joining downstream clients.",
            per(&|s| s.replayed_records.load(Relaxed)),
        );
        family(
            "livestream_relay_token_renewals_total",
            "counter",
            "Access tokens obtained from IMS.",
            vec![(String::new(), self.token_renewals.load(Relaxed).to_string())],
        );
        family(
            "livestream_relay_token_failures_total",
            "counter",
            "Failed IMS token requests.",
            vec![(String::new(), self.token_failures.load(Relaxed).to_string())],
        );
        if self.fleet_id.is_some() {
            self.fleet_families(&mut family);
        }
        family(
            "livestream_relay_up",
            "gauge",
            "1 while healthy (see /healthz).",
            vec![(String::new(), u8::from(self.health().0).to_string())],
        );
        o
    }

    /// The `livestream_relay_fleet_*` families (fleet mode only).
    fn fleet_families(&self, family: &mut Family<'_>) {
        let per = |f: &dyn Fn(&FleetStats) -> u64| {
            self.streams
                .iter()
                .map(|s| {
                    (
                        format!("{{stream=\"{}\"}}", label(&s.name)),
                        f(&s.fleet).to_string(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let per_slot = |f: &dyn Fn(&(bool, u64)) -> u64| {
            let mut rows = Vec::new();
            for s in &self.streams {
                let leases = s.fleet.leases.lock().expect("metrics lock");
                for (i, l) in leases.iter().enumerate() {
                    rows.push((
                        format!("{{stream=\"{}\",slot=\"{i}\"}}", label(&s.name)),
                        f(l).to_string(),
                    ));
                }
            }
            rows
        };
        family(
            "livestream_relay_fleet_redis_up",
            "gauge",
            "1 while Redis answers (fleet mode).",
            vec![(
                String::new(),
                u8::from(self.redis_up.load(Relaxed)).to_string(),
            )],
        );
        family(
            "livestream_relay_fleet_lease_held",
            "gauge",
            "1 for each upstream slot whose lease this relay holds.",
            per_slot(&|l| u64::from(l.0)),
        );
        family(
            "livestream_relay_fleet_fencing_token",
            "gauge",
            "The fencing token of each slot's current owner, as last seen.",
            per_slot(&|l| l.1),
        );
        family(
            "livestream_relay_fleet_handovers_total",
            "counter",
            "Slots this relay took over from a previous owner.",
            per(&|f| f.handovers.load(Relaxed)),
        );
        family(
            "livestream_relay_fleet_lease_losses_total",
            "counter",
            "Leases this relay lost (renewal refused or not in time).",
            per(&|f| f.lease_losses.load(Relaxed)),
        );
        family(
            "livestream_relay_fleet_fenced_writes_total",
            "counter",
            "Writes of this relay refused by the fencing check (a stale owner).",
            per(&|f| f.fenced_refusals.load(Relaxed)),
        );
        family(
            "livestream_relay_fleet_records_appended_total",
            "counter",
            "Records this relay appended to the Redis Stream as a slot owner.",
            per(&|f| f.records_appended.load(Relaxed)),
        );
        family(
            "livestream_relay_fleet_records_read_total",
            "counter",
            "Records read from the Redis Stream and fanned out here.",
            per(&|f| f.records_read.load(Relaxed)),
        );
        family(
            "livestream_relay_fleet_duplicates_dropped_total",
            "counter",
            "Records read from the Redis Stream and dropped as already delivered.",
            per(&|f| f.duplicates_dropped.load(Relaxed)),
        );
        family(
            "livestream_relay_fleet_records_restored_total",
            "counter",
            "Records this relay appended again as a slot owner after Redis lost the Stream.",
            per(&|f| f.records_restored.load(Relaxed)),
        );
        family(
            "livestream_relay_fleet_batches_dropped_total",
            "counter",
            "Record batches dropped because the write queue to Redis was full.",
            per(&|f| f.batches_dropped.load(Relaxed)),
        );
        family(
            "livestream_relay_fleet_stream_length",
            "gauge",
            "Entries (record batches) in the Redis Stream.",
            per(&|f| f.stream_length.load(Relaxed)),
        );
        family(
            "livestream_relay_fleet_stream_lag_ms",
            "gauge",
            "Age of the newest Stream entry when this relay read it (ms).",
            per(&|f| f.stream_lag_ms.load(Relaxed)),
        );
    }

    /// The small JSON document the demo page shows.
    pub fn status_json(&self) -> Value {
        let (healthy, reason) = self.health();
        let streams: Vec<Value> = self
            .streams
            .iter()
            .map(|s| {
                let u = s.upstream.lock().expect("metrics lock").clone();
                let statuses: serde_json::Map<String, Value> = s
                    .statuses
                    .lock()
                    .expect("metrics lock")
                    .iter()
                    .map(|(k, v)| (k.to_string(), json!(v)))
                    .collect();
                json!({
                    "name": s.name,
                    "path": format!("/api/1/stream/{}", s.name),
                    "failed": u.failed,
                    "slots": u.slots.iter().enumerate().map(|(i, sl)| json!({
                        "slot": i, "state": sl.state, "httpStatus": sl.http_status,
                        "reason": sl.reason, "retryInMs": sl.retry_in_ms,
                    })).collect::<Vec<_>>(),
                    "recordsIn": s.records_in.load(Relaxed),
                    "bytesIn": s.bytes_in.load(Relaxed),
                    "reconnects": u.reconnects,
                    "statuses": statuses,
                    "clients": s.clients_now.load(Relaxed),
                    "clientsTotal": s.clients_total.load(Relaxed),
                    "clientsCut": s.clients_cut.load(Relaxed),
                    "replayedRecords": s.replayed_records.load(Relaxed),
                    "fleet": self.fleet_id.as_ref().map(|_| s.fleet.status_json()),
                })
            })
            .collect();
        json!({
            "relay": "livestream-relay",
            "version": env!("CARGO_PKG_VERSION"),
            "healthy": healthy,
            "reason": reason,
            "uptimeMs": self.started.elapsed().as_millis() as u64,
            "tokenSource": self.token_source,
            "tokenRenewals": self.token_renewals.load(Relaxed),
            "fleet": self.fleet_id.as_ref().map(|id| json!({
                "relayId": id,
                "redisUp": self.redis_up.load(Relaxed),
                "redisError": *self.redis_error.lock().expect("metrics lock"),
            })),
            "streams": streams,
        })
    }
}

impl FleetStats {
    /// This stream's fleet figures for `/status` (the same as the `livestream_relay_fleet_*`
    /// families of `/metrics`): which slot leases this relay holds, and the Redis traffic.
    fn status_json(&self) -> Value {
        let leases: Vec<Value> = self
            .leases
            .lock()
            .expect("metrics lock")
            .iter()
            .enumerate()
            .map(|(slot, (held, token))| json!({"slot": slot, "held": held, "fencingToken": token}))
            .collect();
        json!({
            "leases": leases,
            "handovers": self.handovers.load(Relaxed),
            "leaseLosses": self.lease_losses.load(Relaxed),
            "fencedWrites": self.fenced_refusals.load(Relaxed),
            "recordsAppended": self.records_appended.load(Relaxed),
            "recordsRead": self.records_read.load(Relaxed),
            "duplicatesDropped": self.duplicates_dropped.load(Relaxed),
            "recordsRestored": self.records_restored.load(Relaxed),
            "batchesDropped": self.batches_dropped.load(Relaxed),
            "streamLength": self.stream_length.load(Relaxed),
            "streamLagMs": self.stream_lag_ms.load(Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_has_fleet_figures_only_in_fleet_mode() {
        let stream = Arc::new(StreamMetrics::new("demo"));
        let mut metrics = RelayMetrics::new(vec![stream.clone()], "fixed");
        let alone = metrics.status_json();
        assert_eq!(alone["fleet"], Value::Null);
        assert_eq!(alone["streams"][0]["fleet"], Value::Null);

        metrics.fleet_id = Some("relay-a".into());
        metrics.redis_up.store(true, Relaxed);
        *stream.fleet.leases.lock().unwrap() = vec![(true, 7), (false, 3)];
        stream.fleet.records_appended.store(1200, Relaxed);
        stream.fleet.handovers.store(1, Relaxed);
        let fleet = metrics.status_json();
        assert_eq!(fleet["fleet"]["relayId"], "relay-a");
        assert_eq!(fleet["fleet"]["redisUp"], true);
        let f = &fleet["streams"][0]["fleet"];
        assert_eq!(
            f["leases"][0],
            json!({"slot": 0, "held": true, "fencingToken": 7})
        );
        assert_eq!(f["leases"][1]["held"], false);
        assert_eq!(f["recordsAppended"], 1200);
        assert_eq!(f["handovers"], 1);
    }
}
