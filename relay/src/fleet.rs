//! Fleet mode (`--redis`): several relays share one upstream connection per slot, through
//! Redis (or Valkey).
//!
//! ```text
//! Adobe ──(1 connection per slot)── owner relay ──XADD (fenced)──▶ Redis Stream
//!                                                                    │ XREAD BLOCK
//!                                         every relay (owner too) ◀──┘ ──▶ its hub ──▶ browsers
//! ```
//!
//! Per upstream slot there is one lease (`SET lease relay NX PX ttl`) and a fencing token
//! that grows with every new owner (`INCR fence` when acquiring). Only the lease holder runs
//! a core [`Client`] (one slot, the same `maxConnections`) for that slot. It renews the
//! lease every third of its TTL with a script that checks the owner; when it cannot renew
//! before the lease may have expired on its own clock (last renewal sent + TTL − margin) it
//! aborts its upstream connection first, and the driver refuses to read any data once that
//! moment passed. Every write of an owner (record batches, connection marks) goes through a
//! script that compares its token with the slot's fence, so a stale owner (paused, cut off)
//! is refused.
//!
//! Hand-over timing: before each upstream request the owner records `conn <ms> <token>`,
//! after each loss `lost <ms> <token>`. A new owner whose predecessor's last word was `lost`
//! waits `reconnectDelayMs` from that moment; when the predecessor vanished without a word
//! (its last word is `conn`, or nothing while it existed) it waits from the moment of
//! acquiring (≈ the lease's expiry): `Client::start_after(now, Some(last_loss))`.
//!
//! Records: the owner appends each batch of decoded records to the stream's Redis Stream
//! (`XADD … MAXLEN ~ N`, one entry per batch, with a batch id unique in the fleet and the
//! Stream's generation, below); every relay reads the Stream and feeds its own hub, dropping
//! entries (by batch id) and hit ids it already delivered. A new owner seeds its core's
//! de-duplication from the Stream's tail and from what this relay read, so records Live
//! Stream re-sends after the reconnect are not appended again.
//!
//! Redis unavailable: relays keep serving; an owner keeps reading only while its lease is
//! valid by its own clock; batches wait in a bounded queue and are written when Redis
//! returns. Each connection makes one attempt per reconnect and its callers retry at their
//! own pace (renewals every 100 ms), so an owner renews as soon as Redis is back. If Redis
//! comes back empty (restarted without persistence), an owner whose lease is still valid
//! re-creates it with its token (nothing newer can exist), and the fence adopts the writer's
//! token.
//!
//! Redis back empty also lost the entries some reader had not read yet when it went (the
//! others had them and delivered them). So the Stream has a generation (a key the first
//! owner write after the loss creates anew, entries carry it), every relay keeps the entries
//! it read or appended in the last 10 s of the Stream's activity (its `Tail`), and an owner
//! whose append finds another generation than the one its slot's entries were in appends
//! those entries again first, oldest first, fenced with its own token, batch ids kept: a
//! reader that missed them delivers them, the others drop them by batch id. A new ownership
//! and a renewal that re-created the lease check the same before any append. A reader that
//! finds, after an error, that the Stream no longer holds the last entry it read (lost, or
//! trimmed past it) reads it from the start: the new Redis's ids may be below that entry's.

use bytes::Bytes;
use livestream_wasm::core::dedup::Dedup;
use livestream_wasm::core::record::{scan_record, HitKey};
use livestream_wasm::core::{Client, Config};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamId, StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, Script, Value};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, Mutex as AsyncMutex};
use tokio::task::JoinHandle;
use tokio::time::Instant as TokioInstant;

use crate::hub::Hub;
use crate::metrics::{RelayMetrics, SlotView, StreamMetrics};
use crate::tokens::Tokens;
use crate::upstream::{wall_ms, Upstream};

/// The fencing check every owner write goes through: true when `token` is the slot's
/// current fence. A missing fence means Redis lost its data (restarted empty) and no owner
/// acquired since: the writer's token is adopted, so nothing older can follow.
/// `get_or_set(key, value)`: the key's value, set to `value` first when the key is missing
/// (also the Stream's generation, [`GENERATION_LUA`]).
const FENCE_LUA: &str = r#"
local function get_or_set(key, value)
  local v = redis.call('GET', key)
  if v == false then
    redis.call('SET', key, value)
    return value
  end
  return v
end
local function fenced(fence_key, token)
  return tonumber(get_or_set(fence_key, token)) == tonumber(token)
end
"#;

/// KEYS: lease, fence, last word, owners. ARGV: relay id, ttl ms, lowest acceptable token.
/// `{0, current lease value}` or `{1, token, previous token, last word, redis ms}`.
const ACQUIRE_LUA: &str = r#"
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {'0', redis.call('GET', KEYS[1]) or ''}
end
local prev = tonumber(redis.call('GET', KEYS[2]) or '0')
local token = redis.call('INCR', KEYS[2])
if token < tonumber(ARGV[3]) then
  token = tonumber(ARGV[3])
  redis.call('SET', KEYS[2], token)
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. token, 'PX', ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[4], token, ARGV[1] .. ' ' .. now)
return {'1', tostring(token), tostring(prev), redis.call('GET', KEYS[3]) or '', tostring(now)}
"#;

/// KEYS: lease, fence. ARGV: lease value, ttl ms, token. 1 renewed, 2 re-created after Redis
/// lost it (and no newer owner exists), 0 refused.
const RENEW_LUA: &str = r#"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if v == false then
  local f = redis.call('GET', KEYS[2])
  if f == false or tonumber(f) == tonumber(ARGV[3]) then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    redis.call('SET', KEYS[2], ARGV[3])
    return 2
  end
end
return 0
"#;

/// The Stream's generation: a value no generation before had (the proposal of the first
/// writer to find none). Redis restarted empty has none, so the first owner write after it
/// starts a new one; every entry carries the generation it was appended in, so a relay can
/// tell which of the entries it remembers were lost with the old one. Needs [`FENCE_LUA`]
/// before it (for `get_or_set`).
const GENERATION_LUA: &str = r#"
local function generation(gen_key, proposal)
  return get_or_set(gen_key, proposal)
end
"#;

/// KEYS: fence, stream, generation. ARGV: token, maxlen, raw, ends, slot, relay, batch id,
/// generation expected ('' = any), generation proposal. Nil when fenced; `{'gen', g}` (and
/// nothing appended) when the Stream is no longer of the expected generation; else
/// `{'ok', entry id, g}`.
const APPEND_LUA: &str = r#"
if not fenced(KEYS[1], ARGV[1]) then return false end
local g = generation(KEYS[3], ARGV[9])
if ARGV[8] ~= '' and ARGV[8] ~= g then return {'gen', g} end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
  'raw', ARGV[3], 'ends', ARGV[4], 'slot', ARGV[5], 'token', ARGV[1], 'relay', ARGV[6],
  'batch', ARGV[7], 'gen', g)
return {'ok', id, g}
"#;

/// KEYS: fence, generation. ARGV: token, generation proposal. The generation, or nil when
/// fenced.
const CHECK_LUA: &str = r#"
if not fenced(KEYS[1], ARGV[1]) then return false end
return generation(KEYS[2], ARGV[2])
"#;

/// KEYS: fence, last word. ARGV: token, word (`conn <ms> <token>` / `lost <ms> <token>`).
const MARK_LUA: &str = r#"
if not fenced(KEYS[1], ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"#;

/// KEYS: lease. ARGV: lease value.
const RELEASE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// The writer's scripts that append.
struct Scripts {
    append: Script,
    check: Script,
}

/// Batches waiting for Redis (per stream); beyond this the oldest are dropped and counted.
const QUEUE: usize = 4096;

/// How long a batch may wait for Redis before it is dropped (counted).
const APPEND_PATIENCE: Duration = Duration::from_secs(30);

/// How long a connection mark or a release may wait for Redis.
const MARK_PATIENCE: Duration = Duration::from_secs(2);

/// Entries of the Stream's tail read to seed a new owner's de-duplication.
const SEED_ENTRIES: usize = 2000;

/// How long this relay keeps the Stream entries it read or appended, so that a slot's owner
/// can append them again when Redis lost them (restarted empty) before every reader had them.
const RESTORE_WINDOW: Duration = Duration::from_secs(10);

/// At most this many bytes (records) of such entries; the oldest go first.
const RESTORE_BYTES: usize = 16 << 20;

/// At most this many such entries.
const RESTORE_ENTRIES: usize = 1 << 15;

/// Batch ids a reader remembers, to drop an entry it already read when it comes again
/// (appended again after Redis lost it, or twice when an append's answer was lost).
const BATCH_WINDOW: usize = 1 << 16;

/// Records per `XREAD`.
const READ_COUNT: usize = 256;

/// How long an `XREAD` blocks.
const READ_BLOCK_MS: usize = 500;

/// Settings shared by every stream of this relay's fleet mode.
#[derive(Clone)]
pub struct FleetOptions {
    /// `redis://HOST:PORT[/DB]`.
    pub url: String,
    /// Key prefix of the fleet.
    pub prefix: String,
    /// Lease lifetime.
    pub lease_ttl: Duration,
    /// `MAXLEN ~` of each Redis Stream (entries).
    pub stream_max: u64,
    /// Records a joining downstream client gets first.
    pub replay: usize,
    /// `--flush-ms`.
    pub flush: Duration,
    /// No log on stderr.
    pub quiet: bool,
}

/// A unique id for this relay in the fleet: host, pid and random bits.
pub fn relay_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let mut x = wall_ms() ^ (u64::from(std::process::id()) << 40);
    let r = crate::fleet::splitmix(&mut x);
    format!("{host}-{}-{:08x}", std::process::id(), r as u32)
}

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Checks a `--redis` URL.
pub fn check_url(url: &str) -> Result<(), String> {
    if !url.starts_with("redis://") {
        return Err(format!(
            "--redis {url:?}: expected redis://HOST:PORT[/DB] (TLS, rediss://, is not built in)"
        ));
    }
    redis::Client::open(url)
        .map(|_| ())
        .map_err(|e| format!("--redis {url:?}: {e}"))
}

/// A lazily (re)connected Redis connection; every answer updates the relay's health.
///
/// The manager makes ONE connection attempt per reconnect, without retrying on its own: its
/// backoff waits `min_delay` (1 s, which `set_max_delay` does not cap) plus up to 100 %
/// jitter before a second attempt, and every command waits for that attempt. Redis back
/// after a restart would then stay unreachable for 1–2 s, longer than a short lease's
/// validity, so an owner would always lose its lease to an outage it could have ridden out.
/// The callers retry at their own pace instead (renewals every 100 ms, the writer's backoff
/// of 50–500 ms, the reader's 200 ms).
struct Conn {
    client: redis::Client,
    config: ConnectionManagerConfig,
    manager: AsyncMutex<Option<ConnectionManager>>,
    metrics: Arc<RelayMetrics>,
}

impl Conn {
    fn new(url: &str, response_timeout: Duration, metrics: Arc<RelayMetrics>) -> Conn {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(1))
            .set_response_timeout(response_timeout)
            .set_number_of_retries(0);
        Conn {
            client: redis::Client::open(url).expect("checked by check_url"),
            config,
            manager: AsyncMutex::new(None),
            metrics,
        }
    }

    async fn get(&self) -> redis::RedisResult<ConnectionManager> {
        let mut m = self.manager.lock().await;
        if let Some(c) = &*m {
            return Ok(c.clone());
        }
        let c = ConnectionManager::new_with_config(self.client.clone(), self.config.clone())
            .await
            .inspect_err(|e| self.saw::<()>(Err(e)))?;
        *m = Some(c.clone());
        Ok(c)
    }

    /// Records whether Redis answered.
    fn saw<T>(&self, r: Result<T, &redis::RedisError>) {
        match r {
            Ok(_) => {
                if !self.metrics.redis_up.swap(true, Relaxed) {
                    *self.metrics.redis_error.lock().expect("metrics lock") = None;
                }
            }
            Err(e) => {
                self.metrics.redis_up.store(false, Relaxed);
                *self.metrics.redis_error.lock().expect("metrics lock") = Some(e.to_string());
            }
        }
    }

    /// Runs a Lua script (EVALSHA, loaded again after a Redis restart).
    async fn eval<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        keys: &[String],
        args: &[Vec<u8>],
    ) -> redis::RedisResult<T> {
        self.run(|mut c| async move {
            let mut inv = script.prepare_invoke();
            for k in keys {
                inv.key(k);
            }
            for a in args {
                inv.arg(a.as_slice());
            }
            inv.invoke_async(&mut c).await
        })
        .await
    }

    /// Runs `f` on the connection and records the outcome.
    async fn run<T, F, Fut>(&self, f: F) -> redis::RedisResult<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let c = self.get().await?;
        let r = f(c).await;
        self.saw(r.as_ref());
        r
    }
}

/// The Redis keys of one stream (one hash tag, so a cluster keeps them on one node).
struct Keys {
    base: String,
}

impl Keys {
    fn slot(&self, what: &str, slot: usize) -> String {
        format!("{}{what}:{slot}", self.base)
    }
    fn records(&self) -> String {
        format!("{}records", self.base)
    }
    fn generation(&self) -> String {
        format!("{}generation", self.base)
    }
}

/// The id of one appended batch (one Stream entry), unique in the fleet: the writing
/// relay's random nonce and a counter. An entry appended again keeps it, so a reader drops
/// the second copy whole, records without a hit id included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct BatchId {
    nonce: u64,
    seq: u64,
}

impl BatchId {
    fn encode(self) -> String {
        format!("{:016x}{:016x}", self.nonce, self.seq)
    }

    fn parse(b: &[u8]) -> Option<BatchId> {
        let s = std::str::from_utf8(b).ok().filter(|s| s.len() == 32)?;
        Some(BatchId {
            nonce: u64::from_str_radix(&s[..16], 16).ok()?,
            seq: u64::from_str_radix(&s[16..], 16).ok()?,
        })
    }

    /// As a key of a [`Dedup`].
    fn key(self) -> HitKey {
        HitKey {
            high: self.nonce,
            low: self.seq,
        }
    }
}

/// A Stream entry this relay read or appended lately.
#[derive(Clone, Debug)]
struct TailEntry {
    slot: usize,
    batch: BatchId,
    /// The Stream generation it is known to be in ('' = unknown: never restored).
    generation: String,
    raw: Bytes,
    ends: Vec<u32>,
    /// When this relay first had it.
    at: TokioInstant,
}

/// The entries of the last [`RESTORE_WINDOW`] of the Stream's activity (measured from the
/// newest, so an outage of Redis ages nothing) this relay read or appended, in Stream order
/// (per slot), each once (by batch id). When Redis loses the Stream, a slot's owner appends
/// again those of its slot that are of a lost generation, so a reader that had not read
/// them yet still gets them, and one that had drops them by batch id.
struct Tail {
    entries: VecDeque<TailEntry>,
    /// Batch id -> absolute position (`base` is the position of `entries[0]`).
    index: std::collections::HashMap<BatchId, u64>,
    base: u64,
    bytes: usize,
    window: Duration,
    max_bytes: usize,
    max_entries: usize,
}

impl Tail {
    fn new(window: Duration, max_bytes: usize, max_entries: usize) -> Tail {
        Tail {
            entries: VecDeque::new(),
            index: std::collections::HashMap::new(),
            base: 0,
            bytes: 0,
            window,
            max_bytes,
            max_entries,
        }
    }

    /// Remembers an entry; one already known only takes the newer generation (it was
    /// appended again, or read back), keeping its place.
    fn record(&mut self, e: TailEntry) {
        if let Some(&pos) = self.index.get(&e.batch) {
            if !e.generation.is_empty() {
                self.entries[(pos - self.base) as usize].generation = e.generation;
            }
            return;
        }
        self.bytes += e.raw.len() + 4 * e.ends.len();
        self.index
            .insert(e.batch, self.base + self.entries.len() as u64);
        self.entries.push_back(e);
        self.prune();
    }

    /// Forgets the entries more than the window older than the newest, and the oldest
    /// beyond the bounds.
    fn prune(&mut self) {
        let newest = self.entries.back().map(|e| e.at);
        while let (Some(front), Some(newest)) = (self.entries.front(), newest) {
            let old = newest.saturating_duration_since(front.at) > self.window;
            if !old && self.bytes <= self.max_bytes && self.entries.len() <= self.max_entries {
                break;
            }
            let e = self.entries.pop_front().expect("front exists");
            self.bytes -= e.raw.len() + 4 * e.ends.len();
            self.index.remove(&e.batch);
            self.base += 1;
        }
    }

    /// The generation of the newest entry of `slot` whose generation is known: the Stream
    /// an owner of `slot` expects to append to (None: no expectation).
    fn generation(&self, slot: usize) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.slot == slot && !e.generation.is_empty())
            .map(|e| e.generation.as_str())
    }

    /// The entries of `slot` of a generation other than `current` (lost with it), oldest
    /// first.
    fn lost(&self, slot: usize, current: &str) -> Vec<TailEntry> {
        self.entries
            .iter()
            .filter(|e| e.slot == slot && !e.generation.is_empty() && e.generation != current)
            .cloned()
            .collect()
    }

    /// Marks an entry as appended again in `generation`.
    fn moved(&mut self, batch: BatchId, generation: &str) {
        if let Some(&pos) = self.index.get(&batch) {
            self.entries[(pos - self.base) as usize].generation = generation.to_string();
        }
    }
}

/// What an append script answered.
enum Appended {
    /// Appended, in this generation.
    Done(String),
    /// Refused by the fencing check.
    Fenced,
    /// Nothing appended: the Stream is of this other generation than expected.
    Generation(String),
}

/// The time an owner may still act on its lease.
pub(crate) struct LeaseClock {
    base: TokioInstant,
    until_ms: AtomicU64,
    /// Set the first time the lease was found expired: final (a later renewal that Redis
    /// accepts does not revive an ownership whose connection was already stopped).
    lapsed: AtomicBool,
}

impl LeaseClock {
    fn new(until: TokioInstant) -> LeaseClock {
        let base = TokioInstant::now();
        let c = LeaseClock {
            base,
            until_ms: AtomicU64::new(0),
            lapsed: AtomicBool::new(false),
        };
        c.extend(until);
        c
    }

    fn extend(&self, until: TokioInstant) {
        if self.lapsed.load(Relaxed) {
            return;
        }
        let ms = until.saturating_duration_since(self.base).as_millis() as u64;
        self.until_ms.fetch_max(ms, Relaxed);
    }

    /// The moment the lease may have expired (by this relay's clock, with the margin).
    pub(crate) fn deadline(&self) -> TokioInstant {
        self.base + Duration::from_millis(self.until_ms.load(Relaxed))
    }

    /// True while the lease is surely still this relay's.
    pub(crate) fn valid(&self) -> bool {
        if self.lapsed.load(Relaxed) {
            return false;
        }
        if TokioInstant::now() >= self.deadline() {
            self.lapsed.store(true, Relaxed);
            return false;
        }
        true
    }
}

/// One write the stream's writer task carries out, in order.
enum Op {
    Append {
        slot: usize,
        token: u64,
        batch: BatchId,
        raw: Bytes,
        ends: Vec<u32>,
        at: TokioInstant,
    },
    /// A new or re-created ownership: append again, first, the slot's entries Redis lost.
    Restore {
        slot: usize,
        token: u64,
        at: TokioInstant,
    },
    Mark {
        slot: usize,
        token: u64,
        word: String,
        at: TokioInstant,
        done: Option<oneshot::Sender<Result<(), String>>>,
    },
    Release {
        slot: usize,
        value: String,
        done: oneshot::Sender<()>,
    },
}

/// One stream's fleet state in this relay.
pub(crate) struct FleetStream {
    opts: FleetOptions,
    id: String,
    name: String,
    keys: Keys,
    control: Conn,
    hub: Arc<Hub>,
    sm: Arc<StreamMetrics>,
    ops: mpsc::Sender<Op>,
    /// Recent hit keys read from the Stream (seeds a new local owner).
    recent: Mutex<VecDeque<HitKey>>,
    recent_cap: usize,
    /// Per slot: the highest token seen, the last loss of this relay, whether another
    /// relay was seen holding it.
    slots: Mutex<Vec<SlotMemory>>,
    first_append: Vec<AtomicBool>,
    /// The entries read or appended lately (see [`Tail`]).
    tail: Mutex<Tail>,
    /// This relay's part of the batch ids it gives (random), and the last counter used.
    nonce: u64,
    batch_seq: AtomicU64,
}

#[derive(Clone, Copy, Default)]
struct SlotMemory {
    max_token: u64,
    own_loss_ms: Option<u64>,
    seen_other: bool,
}

/// What an owner's driver holds: where its records and marks go, and its lease clock.
pub(crate) struct OwnerLink {
    /// The slot (0-based).
    pub slot: usize,
    /// This ownership's fencing token.
    pub token: u64,
    /// Until when the lease is surely held.
    pub lease: Arc<LeaseClock>,
    /// Wall-clock ms of the loss to wait from (`None`: connect at once).
    pub last_loss_wall_ms: Option<u64>,
    fs: Arc<FleetStream>,
}

impl OwnerLink {
    /// Queues a batch of records (fenced append).
    pub(crate) fn append(&self, raw: Vec<u8>, ends: Vec<u32>) {
        self.fs.queue(Op::Append {
            slot: self.slot,
            token: self.token,
            batch: self.fs.next_batch(),
            raw: Bytes::from(raw),
            ends,
            at: TokioInstant::now(),
        });
    }

    /// Records the loss of this slot's upstream connection (fenced).
    pub(crate) fn record_loss(&self, ms: u64) {
        self.fs.slots.lock().expect("fleet lock")[self.slot].own_loss_ms = Some(ms);
        self.fs
            .log(self.slot, &format!("upstream-lost token={}", self.token));
        self.fs.queue(Op::Mark {
            slot: self.slot,
            token: self.token,
            word: format!("lost {ms} {}", self.token),
            at: TokioInstant::now(),
            done: None,
        });
    }

    /// Records that a request is about to be made; the request waits for it.
    pub(crate) fn mark_connecting(
        &self,
    ) -> impl Future<Output = Result<(), String>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        self.fs
            .log(self.slot, &format!("connect token={}", self.token));
        self.fs.queue(Op::Mark {
            slot: self.slot,
            token: self.token,
            word: format!("conn {} {}", wall_ms(), self.token),
            at: TokioInstant::now(),
            done: Some(tx),
        });
        async move {
            rx.await
                .unwrap_or_else(|_| Err("fleet: the Redis writer stopped".into()))
        }
    }

    /// Logs a state change of the owned slot.
    pub(crate) fn log_status(&self, state: &str, http: Option<u16>) {
        let code = http.map(|c| format!(" http={c}")).unwrap_or_default();
        self.fs.log(
            self.slot,
            &format!("upstream-{state} token={}{code}", self.token),
        );
    }
}

impl FleetStream {
    fn log(&self, slot: usize, what: &str) {
        if !self.opts.quiet {
            eprintln!(
                "livestream-relay: fleet t={} {} slot {slot} {what} relay={}",
                wall_ms(),
                self.name,
                self.id
            );
        }
    }

    fn log_stream(&self, what: &str) {
        if !self.opts.quiet {
            eprintln!(
                "livestream-relay: fleet t={} {} {what} relay={}",
                wall_ms(),
                self.name,
                self.id
            );
        }
    }

    fn queue(&self, op: Op) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.ops.try_send(op) {
            self.sm.fleet.batches_dropped.fetch_add(1, Relaxed);
        }
    }

    fn set_lease(&self, slot: usize, held: bool, token: u64) {
        let mut l = self.sm.fleet.leases.lock().expect("metrics lock");
        if l.len() <= slot {
            l.resize(slot + 1, (false, 0));
        }
        l[slot] = (held, token);
    }

    fn set_standby(&self, slot: usize, reason: String) {
        let mut u = self.sm.upstream.lock().expect("metrics lock");
        if u.slots.len() <= slot {
            u.slots.resize(slot + 1, SlotView::default());
        }
        u.slots[slot] = SlotView {
            state: "standby",
            http_status: None,
            reason,
            retry_in_ms: None,
        };
    }

    fn next_batch(&self) -> BatchId {
        BatchId {
            nonce: self.nonce,
            seq: self.batch_seq.fetch_add(1, Relaxed) + 1,
        }
    }

    /// The writer: carries out the owners' writes in order, retrying while Redis is away.
    async fn writer(self: Arc<Self>, mut rx: mpsc::Receiver<Op>) {
        let scripts = Scripts {
            append: Script::new(&format!("{FENCE_LUA}{GENERATION_LUA}{APPEND_LUA}")),
            check: Script::new(&format!("{FENCE_LUA}{GENERATION_LUA}{CHECK_LUA}")),
        };
        let mark = Script::new(&format!("{FENCE_LUA}{MARK_LUA}"));
        let release = Script::new(RELEASE_LUA);
        while let Some(mut op) = rx.recv().await {
            let mut backoff = Duration::from_millis(50);
            loop {
                let r: redis::RedisResult<bool> = match &op {
                    Op::Append {
                        slot,
                        token,
                        batch,
                        raw,
                        ends,
                        ..
                    } => {
                        self.append(&scripts, *slot, *token, *batch, raw, ends)
                            .await
                    }
                    Op::Restore { slot, token, .. } => {
                        self.check_generation(&scripts, *slot, *token).await
                    }
                    Op::Mark {
                        slot, token, word, ..
                    } => {
                        let keys = [
                            self.keys.slot("fence", *slot),
                            self.keys.slot("word", *slot),
                        ];
                        let args = [num(*token), word.clone().into_bytes()];
                        self.control
                            .eval::<i64>(&mark, &keys, &args)
                            .await
                            .map(|n| n == 1)
                    }
                    Op::Release { slot, value, .. } => {
                        let keys = [self.keys.slot("lease", *slot)];
                        let args = [value.clone().into_bytes()];
                        self.control
                            .eval::<i64>(&release, &keys, &args)
                            .await
                            .map(|_| true)
                    }
                };
                match r {
                    Ok(accepted) => {
                        self.done(op, accepted);
                        break;
                    }
                    Err(e) => {
                        let (at, patience) = match &op {
                            Op::Append { at, .. } | Op::Restore { at, .. } => {
                                (*at, APPEND_PATIENCE)
                            }
                            Op::Mark { at, .. } => (*at, MARK_PATIENCE),
                            Op::Release { .. } => (TokioInstant::now(), Duration::ZERO),
                        };
                        if at.elapsed() >= patience {
                            match &mut op {
                                Op::Append { .. } => {
                                    self.sm.fleet.batches_dropped.fetch_add(1, Relaxed);
                                }
                                Op::Mark { done, .. } => {
                                    if let Some(d) = done.take() {
                                        let _ = d.send(Err(format!(
                                            "fleet: cannot record the connection in Redis: {e}"
                                        )));
                                    }
                                }
                                Op::Restore { .. } | Op::Release { .. } => {}
                            }
                            break;
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(500));
                    }
                }
            }
        }
    }

    /// One run of the append script: `expected` is the generation the writer believes the
    /// Stream is in ('' = any).
    #[allow(clippy::too_many_arguments)]
    async fn append_once(
        &self,
        scripts: &Scripts,
        slot: usize,
        token: u64,
        batch: BatchId,
        raw: &[u8],
        ends: &[u32],
        expected: &str,
    ) -> redis::RedisResult<Appended> {
        let mut e = Vec::with_capacity(ends.len() * 4);
        for v in ends {
            e.extend_from_slice(&v.to_le_bytes());
        }
        let keys = [
            self.keys.slot("fence", slot),
            self.keys.records(),
            self.keys.generation(),
        ];
        let args = [
            num(token),
            num(self.opts.stream_max),
            raw.to_vec(),
            e,
            num(slot as u64),
            self.id.clone().into_bytes(),
            batch.encode().into_bytes(),
            expected.as_bytes().to_vec(),
            self.next_batch().encode().into_bytes(),
        ];
        let r: Option<Vec<String>> = self.control.eval(&scripts.append, &keys, &args).await?;
        Ok(match r.as_deref() {
            None => Appended::Fenced,
            Some([what, g]) if what == "gen" => Appended::Generation(g.clone()),
            Some([what, _id, g]) if what == "ok" => Appended::Done(g.clone()),
            Some(other) => {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::TypeError,
                    "unexpected answer of the append script",
                    format!("{other:?}"),
                )))
            }
        })
    }

    /// A fenced append of one batch; when Redis lost the Stream since this relay last saw
    /// it, the entries of the slot it remembers from the lost generation go first. False
    /// when refused by the fencing check.
    async fn append(
        &self,
        scripts: &Scripts,
        slot: usize,
        token: u64,
        batch: BatchId,
        raw: &Bytes,
        ends: &[u32],
    ) -> redis::RedisResult<bool> {
        loop {
            let expected = self.tail_lock().generation(slot).unwrap_or("").to_string();
            match self
                .append_once(scripts, slot, token, batch, raw, ends, &expected)
                .await?
            {
                Appended::Fenced => return Ok(false),
                Appended::Done(generation) => {
                    let e = TailEntry {
                        slot,
                        batch,
                        generation,
                        raw: raw.clone(),
                        ends: ends.to_vec(),
                        at: TokioInstant::now(),
                    };
                    self.tail_lock().record(e);
                    return Ok(true);
                }
                Appended::Generation(g) => {
                    if !self.restore(scripts, slot, token, &g).await? {
                        return Ok(false);
                    }
                }
            }
        }
    }

    /// After acquiring or re-creating a lease: when the Stream is of another generation than
    /// the entries of `slot` this relay remembers, appends them again. False when fenced.
    async fn check_generation(
        &self,
        scripts: &Scripts,
        slot: usize,
        token: u64,
    ) -> redis::RedisResult<bool> {
        let Some(expected) = self.tail_lock().generation(slot).map(str::to_string) else {
            return Ok(true);
        };
        let keys = [self.keys.slot("fence", slot), self.keys.generation()];
        let args = [num(token), self.next_batch().encode().into_bytes()];
        let g: Option<String> = self.control.eval(&scripts.check, &keys, &args).await?;
        match g {
            None => Ok(false),
            Some(g) if g == expected => Ok(true),
            Some(g) => self.restore(scripts, slot, token, &g).await,
        }
    }

    /// Appends again, oldest first and with their batch ids, the entries of `slot` this
    /// relay remembers from a generation of the Stream other than `current` (Redis lost
    /// them). False when fenced.
    async fn restore(
        &self,
        scripts: &Scripts,
        slot: usize,
        token: u64,
        current: &str,
    ) -> redis::RedisResult<bool> {
        let lost = self.tail_lock().lost(slot, current);
        let (mut entries, mut records) = (0, 0);
        let mut fenced = false;
        for e in &lost {
            match self
                .append_once(scripts, slot, token, e.batch, &e.raw, &e.ends, current)
                .await?
            {
                Appended::Done(_) => {
                    self.tail_lock().moved(e.batch, current);
                    entries += 1;
                    records += e.ends.len();
                }
                Appended::Fenced => {
                    fenced = true;
                    break;
                }
                // Lost again meanwhile: the caller starts over with the new generation.
                Appended::Generation(_) => break,
            }
        }
        if entries > 0 {
            self.sm
                .fleet
                .records_restored
                .fetch_add(records as u64, Relaxed);
        }
        self.log(
            slot,
            &format!(
                "restored token={token} entries={entries}/{} records={records} generation={current}",
                lost.len()
            ),
        );
        Ok(!fenced)
    }

    fn tail_lock(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail.lock().expect("fleet lock")
    }

    /// After a write was answered.
    fn done(&self, op: Op, accepted: bool) {
        match op {
            Op::Append {
                slot, token, ends, ..
            } => {
                if accepted {
                    self.sm
                        .fleet
                        .records_appended
                        .fetch_add(ends.len() as u64, Relaxed);
                    if !self.first_append[slot].swap(true, Relaxed) {
                        self.log(slot, &format!("first-record token={token}"));
                    }
                } else {
                    self.sm.fleet.fenced_refusals.fetch_add(1, Relaxed);
                    self.log(
                        slot,
                        &format!("fenced token={token} what=append records={}", ends.len()),
                    );
                }
            }
            Op::Restore { slot, token, .. } => {
                if !accepted {
                    self.sm.fleet.fenced_refusals.fetch_add(1, Relaxed);
                    self.log(slot, &format!("fenced token={token} what=restore"));
                }
            }
            Op::Mark {
                slot,
                token,
                done,
                word,
                ..
            } => {
                if !accepted {
                    self.sm.fleet.fenced_refusals.fetch_add(1, Relaxed);
                    self.log(slot, &format!("fenced token={token} what=mark"));
                }
                if let Some(d) = done {
                    let _ = d.send(if accepted {
                        Ok(())
                    } else {
                        Err(format!(
                            "fleet: refused by the fencing check ({word:?}): another relay owns the slot now"
                        ))
                    });
                }
            }
            Op::Release { done, .. } => {
                let _ = done.send(());
            }
        }
    }

    /// The reader: the Stream into the local hub, every record once.
    async fn reader(
        self: Arc<Self>,
        conn: Conn,
        window: usize,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut dedup = Dedup::new(window, wall_ms() ^ 0x5eed);
        let mut batches = Dedup::new(BATCH_WINDOW, wall_ms() ^ 0xba7c);
        let mut last_id: Option<String> = None;
        let mut last_len = TokioInstant::now() - Duration::from_secs(10);
        // After an error: whether the Stream may have been lost (Redis restarted empty)
        // since `last_id` was read, to be checked before reading on.
        let mut verify = false;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let key = self.keys.records();
            if let (true, Some(id)) = (verify, &last_id) {
                // A Stream that no longer holds the last entry read was lost (or trimmed past
                // it): everything in it now is new to this relay, whatever its ids (a Redis
                // with a clock behind would give the new entries ids below `last_id`). Read
                // it from the start; what comes again is dropped by batch id.
                let (k, i) = (key.clone(), id.clone());
                let r = conn
                    .run(|mut c| async move {
                        let r: StreamRangeReply = c.xrange_count(&k, &i, &i, 1).await?;
                        Ok(r.ids.is_empty())
                    })
                    .await;
                match r {
                    Ok(gone) => {
                        verify = false;
                        if gone && id != "0-0" {
                            self.log_stream(&format!(
                                "read-from-start last-read={id} (no longer in the Stream)"
                            ));
                            last_id = Some("0-0".into());
                        }
                    }
                    Err(_) => {
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                            _ = shutdown.changed() => break,
                        }
                        continue;
                    }
                }
            }
            let r = match &last_id {
                None => {
                    // Start: the tail that covers the replay window, oldest first.
                    let k = key.clone();
                    let n = self.opts.replay.clamp(1, 10_000);
                    conn.run(|mut c| async move {
                        let r: StreamRangeReply = c.xrevrange_count(&k, "+", "-", n).await?;
                        Ok(r.ids.into_iter().rev().collect::<Vec<_>>())
                    })
                    .await
                }
                Some(id) => {
                    let (k, id) = (key.clone(), id.clone());
                    let read = conn.run(|mut c| async move {
                        let o = StreamReadOptions::default()
                            .block(READ_BLOCK_MS)
                            .count(READ_COUNT);
                        let r: Option<StreamReadReply> = c.xread_options(&[&k], &[&id], &o).await?;
                        Ok(
                            r.map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect::<Vec<_>>())
                                .unwrap_or_default(),
                        )
                    });
                    tokio::select! {
                        r = read => r,
                        _ = shutdown.changed() => break,
                    }
                }
            };
            let entries = match r {
                Ok(e) => e,
                Err(_) => {
                    verify = true;
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = shutdown.changed() => break,
                    }
                    continue;
                }
            };
            if last_id.is_none() {
                // Keep only the newest entries covering the replay window.
                let mut keep = 0;
                let mut records = 0;
                for e in entries.iter().rev() {
                    if records >= self.opts.replay {
                        break;
                    }
                    records += entry_records(e).map_or(0, |(_, ends)| ends.len());
                    keep += 1;
                }
                let skip = entries.len() - keep;
                self.feed(&entries[skip..], &mut dedup, &mut batches);
                last_id = Some(entries.last().map_or("0-0".into(), |e| e.id.clone()));
            } else if let Some(e) = entries.last() {
                self.feed(&entries, &mut dedup, &mut batches);
                last_id = Some(e.id.clone());
                let ms = e.id.split('-').next().and_then(|m| m.parse::<u64>().ok());
                if let Some(ms) = ms {
                    self.sm
                        .fleet
                        .stream_lag_ms
                        .store(wall_ms().saturating_sub(ms), Relaxed);
                }
            }
            if last_len.elapsed() >= Duration::from_secs(1) {
                last_len = TokioInstant::now();
                let k = key.clone();
                match conn
                    .run(|mut c| async move { c.xlen::<_, u64>(&k).await })
                    .await
                {
                    Ok(n) => self.sm.fleet.stream_length.store(n, Relaxed),
                    Err(_) => verify = true,
                }
            }
        }
        self.hub.close();
    }

    /// Hands Stream entries to the hub, dropping entries (by batch id) and records (by hit
    /// id) already delivered; remembers the entries in the tail.
    fn feed(&self, entries: &[StreamId], dedup: &mut Dedup, batches: &mut Dedup) {
        let mut raw = Vec::new();
        let mut ends = Vec::new();
        let mut scratch = Vec::new();
        let now = TokioInstant::now();
        let mut recent = self.recent.lock().expect("fleet lock");
        let mut tail = self.tail_lock();
        for e in entries {
            let Some((data, e_ends)) = entry_records(e) else {
                continue;
            };
            let (slot, batch, generation) = entry_origin(e);
            if let Some(batch) = batch {
                // Remembered (or its generation updated) even when it comes again: an
                // entry appended again by a new owner is now in this generation.
                if let Some(slot) = slot {
                    let t = TailEntry {
                        slot,
                        batch,
                        generation,
                        raw: data.clone(),
                        ends: e_ends.clone(),
                        at: now,
                    };
                    tail.record(t);
                }
                if !batches.insert(batch.key()) {
                    self.sm
                        .fleet
                        .duplicates_dropped
                        .fetch_add(e_ends.len() as u64, Relaxed);
                    continue;
                }
            }
            for rec in split_records(&data, &e_ends) {
                if let Some(k) = hit_key(rec, &mut scratch) {
                    if !dedup.insert(k) {
                        self.sm.fleet.duplicates_dropped.fetch_add(1, Relaxed);
                        continue;
                    }
                    if recent.len() >= self.recent_cap {
                        recent.pop_front();
                    }
                    recent.push_back(k);
                }
                raw.extend_from_slice(rec);
                ends.push(raw.len() as u32);
            }
        }
        drop(tail);
        drop(recent);
        self.sm
            .fleet
            .records_read
            .fetch_add(ends.len() as u64, Relaxed);
        self.sm.records_in.fetch_add(ends.len() as u64, Relaxed);
        self.hub.publish(raw, ends);
    }

    /// Hit keys of the Stream's tail and of what this relay read: a new owner's
    /// de-duplication seed.
    async fn seed_keys(&self) -> Vec<HitKey> {
        let k = self.keys.records();
        let tail = self
            .control
            .run(|mut c| async move {
                let r: StreamRangeReply = c.xrevrange_count(&k, "+", "-", SEED_ENTRIES).await?;
                Ok(r.ids)
            })
            .await
            .unwrap_or_default();
        let mut keys: Vec<HitKey> = self
            .recent
            .lock()
            .expect("fleet lock")
            .iter()
            .copied()
            .collect();
        let mut scratch = Vec::new();
        for e in tail.iter().rev() {
            let Some((data, ends)) = entry_records(e) else {
                continue;
            };
            keys.extend(split_records(&data, &ends).filter_map(|rec| hit_key(rec, &mut scratch)));
        }
        keys
    }
}

/// A number as a Redis argument.
fn num(n: u64) -> Vec<u8> {
    n.to_string().into_bytes()
}

/// The records of a Stream entry: the raw bytes and the end offset of each record.
fn entry_records(e: &StreamId) -> Option<(Bytes, Vec<u32>)> {
    let raw = match e.map.get("raw")? {
        Value::BulkString(b) => Bytes::from(b.clone()),
        _ => return None,
    };
    let ends = match e.map.get("ends")? {
        Value::BulkString(b) => b
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        _ => return None,
    };
    Some((raw, ends))
}

/// Where a Stream entry comes from: its slot, batch id and generation ('' when it has none:
/// written by a relay of an older version).
fn entry_origin(e: &StreamId) -> (Option<usize>, Option<BatchId>, String) {
    let field = |name: &str| match e.map.get(name) {
        Some(Value::BulkString(b)) => Some(b.as_slice()),
        _ => None,
    };
    let slot = field("slot")
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.parse().ok());
    let batch = field("batch").and_then(BatchId::parse);
    let generation = field("gen")
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    (slot, batch, generation)
}

/// The records of a Stream entry's raw bytes, each with its CRLF, cut at `ends`: an end
/// past the bytes is cut to them, and an end before its record's start ends the list.
fn split_records<'a>(data: &'a [u8], ends: &'a [u32]) -> impl Iterator<Item = &'a [u8]> + 'a {
    ends.iter().scan(0usize, move |start, &end| {
        let end = (end as usize).min(data.len());
        if end < *start {
            return None;
        }
        let rec = &data[*start..end];
        *start = end;
        Some(rec)
    })
}

/// The hit key of a record as a Stream entry holds it (with its CRLF), when it has one.
fn hit_key(rec: &[u8], scratch: &mut Vec<u8>) -> Option<HitKey> {
    let body = rec.strip_suffix(b"\r\n").unwrap_or(rec);
    scan_record(body, scratch).ok().and_then(|s| s.info.hit_key)
}

/// Everything a slot's ownership needs to build its driver.
#[derive(Clone)]
pub(crate) struct DriverParts {
    /// The stream's validated configuration (all slots).
    pub config: Config,
    /// Upstream tokens.
    pub tokens: Tokens,
    /// The HTTPS client.
    pub http: reqwest::Client,
}

/// A granted lease.
struct Grant {
    token: u64,
    prev: u64,
    word: String,
    sent: TokioInstant,
}

enum Acquired {
    Granted(Grant),
    Held(String),
}

impl FleetStream {
    async fn acquire(&self, slot: usize) -> redis::RedisResult<Acquired> {
        let floor = self.slots.lock().expect("fleet lock")[slot].max_token + 1;
        let keys = [
            self.keys.slot("lease", slot),
            self.keys.slot("fence", slot),
            self.keys.slot("word", slot),
            self.keys.slot("owners", slot),
        ];
        let args = [
            self.id.clone().into_bytes(),
            num(self.opts.lease_ttl.as_millis() as u64),
            num(floor),
        ];
        let sent = TokioInstant::now();
        let r: Vec<String> = self
            .control
            .eval(&Script::new(ACQUIRE_LUA), &keys, &args)
            .await?;
        if r.first().map(String::as_str) != Some("1") {
            return Ok(Acquired::Held(r.get(1).cloned().unwrap_or_default()));
        }
        let num = |i: usize| r.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        Ok(Acquired::Granted(Grant {
            token: num(1),
            prev: num(2),
            word: r.get(3).cloned().unwrap_or_default(),
            sent,
        }))
    }

    /// The current holder of `slot`'s lease (relay id, token), if any.
    async fn holder(&self, slot: usize) -> redis::RedisResult<Option<(String, u64)>> {
        let k = self.keys.slot("lease", slot);
        let v: Option<String> = self
            .control
            .run(|mut c| async move { c.get(&k).await })
            .await?;
        Ok(v.map(|v| match v.rsplit_once(' ') {
            Some((o, t)) => (o.to_string(), t.parse().unwrap_or(0)),
            None => (v, 0),
        }))
    }

    async fn renew(&self, slot: usize, value: &str, token: u64) -> redis::RedisResult<i64> {
        let keys = [self.keys.slot("lease", slot), self.keys.slot("fence", slot)];
        let args = [
            value.as_bytes().to_vec(),
            num(self.opts.lease_ttl.as_millis() as u64),
            num(token),
        ];
        self.control
            .eval(&Script::new(RENEW_LUA), &keys, &args)
            .await
    }

    fn margin(&self) -> Duration {
        self.opts.lease_ttl / 5
    }

    /// A slot's life in this relay: stand by, acquire when free, own until lost or shutdown.
    async fn slot_loop(
        self: Arc<Self>,
        slot: usize,
        parts: DriverParts,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let every = self.opts.lease_ttl / 3;
        self.set_standby(slot, "looking for the slot's lease in Redis".into());
        // When this relay last saw another relay hold the lease: that lease may live until
        // then + TTL even if Redis forgot it (restarted empty), and its owner may re-create
        // it; so no attempt to acquire before.
        let mut held_seen: Option<TokioInstant> = None;
        loop {
            if *shutdown.borrow() {
                return;
            }
            if held_seen.is_some_and(|t| t.elapsed() < self.opts.lease_ttl) {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = shutdown.changed() => {}
                }
                // Still look (a renewal by the owner keeps it fresh).
                if let Ok(Some((owner, token))) = self.holder(slot).await {
                    if owner != self.id {
                        held_seen = Some(TokioInstant::now());
                        self.set_lease(slot, false, token);
                    }
                }
                continue;
            }
            match self.acquire(slot).await {
                Ok(Acquired::Granted(g)) => {
                    if self.clone().own(slot, g, &parts, &mut shutdown).await {
                        return;
                    }
                }
                Ok(Acquired::Held(v)) => {
                    let (owner, token) = v.rsplit_once(' ').unwrap_or((v.as_str(), "0"));
                    let token = token.parse().unwrap_or(0);
                    if owner != self.id {
                        held_seen = Some(TokioInstant::now());
                    }
                    {
                        let mut m = self.slots.lock().expect("fleet lock");
                        m[slot].max_token = m[slot].max_token.max(token);
                        if owner != self.id {
                            m[slot].seen_other = true;
                        }
                    }
                    self.set_lease(slot, false, token);
                    self.set_standby(
                        slot,
                        format!("relay {owner} holds this slot (fencing token {token}); its records arrive through Redis"),
                    );
                }
                Err(e) => {
                    self.set_standby(slot, format!("Redis unavailable: {e}"));
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Owns `slot` until the lease is lost (false) or the relay shuts down (true).
    async fn own(
        self: Arc<Self>,
        slot: usize,
        g: Grant,
        parts: &DriverParts,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let ttl = self.opts.lease_ttl;
        let lease = Arc::new(LeaseClock::new(g.sent + ttl - self.margin()));
        let value = format!("{} {}", self.id, g.token);
        let now = wall_ms();
        let mem = {
            let mut m = self.slots.lock().expect("fleet lock");
            m[slot].max_token = m[slot].max_token.max(g.token);
            m[slot]
        };
        // When may the first request go out? (KA-16598: the old connection's slot is held.)
        let mut parts_w = g.word.split(' ');
        let word = (
            parts_w.next().unwrap_or(""),
            parts_w.next().and_then(|v| v.parse::<u64>().ok()),
            parts_w.next().and_then(|v| v.parse::<u64>().ok()),
        );
        let mut last_loss = match word {
            ("lost", Some(ms), Some(t)) if t == g.prev => Some(ms),
            _ if g.prev > 0 || mem.seen_other || !g.word.is_empty() => Some(now),
            _ => None,
        };
        if let Some(own) = mem.own_loss_ms {
            last_loss = Some(last_loss.map_or(own, |l| l.max(own)));
        }
        if g.prev > 0 {
            self.sm.fleet.handovers.fetch_add(1, Relaxed);
        }
        self.set_lease(slot, true, g.token);
        let delay = parts.config.reconnect_delay.as_millis() as u64;
        let wait = last_loss.map_or(0, |l| (l + delay).saturating_sub(now));
        self.log(
            slot,
            &format!(
                "acquired token={} prev={} last_word={:?} wait_ms={wait}",
                g.token, g.prev, g.word
            ),
        );
        let mut config = parts.config.clone();
        config.connections = 1;
        if g.token > 1 {
            config.reset = None;
        }
        // Before the first append: entries of the slot Redis lost (restarted empty) go back
        // to the Stream, so that no reader misses them.
        self.queue(Op::Restore {
            slot,
            token: g.token,
            at: TokioInstant::now(),
        });
        let mut client = Client::new(config, wall_ms() ^ ((slot as u64) << 48) ^ g.token);
        client.remember_hits(self.seed_keys().await);
        let link = OwnerLink {
            slot,
            token: g.token,
            lease: lease.clone(),
            last_loss_wall_ms: last_loss,
            fs: self.clone(),
        };
        let up = Upstream::new(
            client,
            parts.tokens.clone(),
            parts.http.clone(),
            self.hub.clone(),
            self.sm.clone(),
            self.opts.quiet,
            self.opts.flush,
        )
        .owned(link);
        let (stop, stop_rx) = watch::channel(false);
        let mut driver = tokio::spawn(up.run(stop_rx));
        let mut driver_done = false;
        let every = ttl / 3;
        let mut next_renewal = TokioInstant::now() + every;
        let why = loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next_renewal) => {
                    next_renewal = TokioInstant::now() + every;
                    let sent = TokioInstant::now();
                    match self.renew(slot, &value, g.token).await {
                        Ok(1) => lease.extend(sent + ttl - self.margin()),
                        Ok(2) => {
                            // Re-created: Redis may have lost everything, the Stream too.
                            lease.extend(sent + ttl - self.margin());
                            self.queue(Op::Restore {
                                slot,
                                token: g.token,
                                at: TokioInstant::now(),
                            });
                        }
                        Ok(_) => break Some("renewal refused: another relay holds the lease"),
                        Err(_) if !lease.valid() => break Some("no renewal in time: Redis did not answer"),
                        // Redis away: try again soon, the lease's clock is running.
                        Err(_) => next_renewal = TokioInstant::now() + Duration::from_millis(100),
                    }
                    if !lease.valid() {
                        break Some("no renewal in time");
                    }
                }
                _ = tokio::time::sleep_until(lease.deadline()) => {
                    if !lease.valid() {
                        break Some("no renewal in time");
                    }
                }
                _ = &mut driver, if !driver_done => {
                    driver_done = true;
                    if !lease.valid() {
                        break Some("no renewal in time");
                    }
                }
                _ = shutdown.changed() => break None,
            }
        };
        // Stop the upstream connection first (the driver aborts its request at once).
        let _ = stop.send(true);
        if !driver_done {
            let _ = (&mut driver).await;
        }
        self.set_lease(slot, false, g.token);
        match why {
            Some(why) => {
                self.sm.fleet.lease_losses.fetch_add(1, Relaxed);
                self.log(slot, &format!("lease-lost token={} why={why:?}", g.token));
                self.set_standby(slot, format!("lost the lease: {why}"));
                // If Redis still has it as ours, free it (the next owner, maybe this relay,
                // then waits from the recorded loss rather than from the lease's expiry).
                let (tx, _rx) = oneshot::channel();
                self.queue(Op::Release {
                    slot,
                    value,
                    done: tx,
                });
                false
            }
            None => {
                let (tx, rx) = oneshot::channel();
                self.queue(Op::Release {
                    slot,
                    value,
                    done: tx,
                });
                let _ = tokio::time::timeout(MARK_PATIENCE + Duration::from_secs(1), rx).await;
                self.log(slot, &format!("released token={}", g.token));
                true
            }
        }
    }
}

/// Starts fleet mode for one stream: the reader, the writer and one loop per slot. Returns
/// the tasks to await at shutdown (slot loops and reader) and the writer (to abort after).
#[allow(clippy::too_many_arguments)]
pub(crate) fn start_stream(
    opts: &FleetOptions,
    id: &str,
    name: &str,
    hub: Arc<Hub>,
    sm: Arc<StreamMetrics>,
    metrics: Arc<RelayMetrics>,
    parts: DriverParts,
    shutdown: watch::Receiver<bool>,
) -> (Vec<JoinHandle<()>>, JoinHandle<()>) {
    let slots = usize::from(parts.config.connections);
    let (ops, ops_rx) = mpsc::channel(QUEUE);
    let ttl = opts.lease_ttl;
    let fs = Arc::new(FleetStream {
        opts: opts.clone(),
        id: id.to_string(),
        name: name.to_string(),
        keys: Keys {
            base: format!("{}:{{{name}}}:", opts.prefix),
        },
        control: Conn::new(
            &opts.url,
            (ttl / 4).max(Duration::from_millis(100)),
            metrics.clone(),
        ),
        hub,
        sm,
        ops,
        recent: Mutex::new(VecDeque::new()),
        recent_cap: parts.config.dedup_window.min(100_000),
        slots: Mutex::new(vec![SlotMemory::default(); slots]),
        first_append: (0..slots).map(|_| AtomicBool::new(false)).collect(),
        tail: Mutex::new(Tail::new(RESTORE_WINDOW, RESTORE_BYTES, RESTORE_ENTRIES)),
        nonce: {
            let mut x = wall_ms() ^ u64::from(std::process::id()).rotate_left(32);
            for b in id.bytes() {
                x = x.rotate_left(8) ^ u64::from(b);
                splitmix(&mut x);
            }
            splitmix(&mut x)
        },
        batch_seq: AtomicU64::new(0),
    });
    for i in 0..slots {
        fs.set_lease(i, false, 0);
    }
    let writer = tokio::spawn(fs.clone().writer(ops_rx));
    let mut tasks = Vec::new();
    let reader_conn = Conn::new(
        &opts.url,
        Duration::from_millis(READ_BLOCK_MS as u64 + 1000),
        metrics,
    );
    let window = parts.config.dedup_window;
    tasks.push(tokio::spawn(fs.clone().reader(
        reader_conn,
        window,
        shutdown.clone(),
    )));
    for i in 0..slots {
        tasks.push(tokio::spawn(fs.clone().slot_loop(
            i,
            parts.clone(),
            shutdown.clone(),
        )));
    }
    (tasks, writer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry's records as the reader and a new owner's seed both cut them.
    #[test]
    fn split_records_and_their_hit_keys() {
        let data = b"{\"hitIdHigh\":1,\"hitIdLow\":2}\r\nnot json\r\n{\"a\":1}\r\n";
        let ends = [30, 40, 49];
        let recs: Vec<&[u8]> = split_records(data, &ends).collect();
        assert_eq!(
            recs,
            [
                &b"{\"hitIdHigh\":1,\"hitIdLow\":2}\r\n"[..],
                b"not json\r\n",
                b"{\"a\":1}\r\n"
            ]
        );
        let mut scratch = Vec::new();
        let keys: Vec<_> = recs.iter().map(|r| hit_key(r, &mut scratch)).collect();
        assert_eq!(keys, [Some(HitKey { high: 1, low: 2 }), None, None]);
        // An end past the bytes is cut to them; one that goes back ends the list.
        assert_eq!(
            split_records(b"abcd", &[2, 9, 1]).collect::<Vec<_>>(),
            [&b"ab"[..], b"cd"]
        );
        assert_eq!(split_records(b"abcd", &[3, 1, 4]).count(), 1);
    }

    fn entry(slot: usize, seq: u64, generation: &str, at: TokioInstant) -> TailEntry {
        TailEntry {
            slot,
            batch: BatchId { nonce: 7, seq },
            generation: generation.into(),
            raw: Bytes::from(format!("r{seq}\r\n")),
            ends: vec![4],
            at,
        }
    }

    fn seqs(v: &[TailEntry]) -> Vec<u64> {
        v.iter().map(|e| e.batch.seq).collect()
    }

    /// What an owner appends again when Redis lost the Stream: the entries of its slot this
    /// relay read or appended in a generation other than the current one, oldest first,
    /// each once; and which generation it expects the Stream to be in.
    #[test]
    fn the_tail_gives_back_the_entries_of_a_lost_generation() {
        let t0 = TokioInstant::now();
        let mut t = Tail::new(Duration::from_secs(10), 1 << 20, 100);
        assert_eq!(t.generation(0), None, "nothing known: no expectation");
        for seq in 1..=4 {
            t.record(entry(0, seq, "g1", t0));
        }
        t.record(entry(1, 5, "g1", t0));
        // An entry known without a generation (written by an older relay) is never given back.
        t.record(entry(0, 6, "", t0));
        assert_eq!(t.generation(0), Some("g1"));
        assert!(t.lost(0, "g1").is_empty(), "nothing lost while g1 lasts");
        // Redis restarted empty: g2. Slot 0's entries of g1 come back in order, slot 1's not.
        assert_eq!(seqs(&t.lost(0, "g2")), [1, 2, 3, 4]);
        assert_eq!(seqs(&t.lost(1, "g2")), [5]);
        // Appended again (some of them, then Redis went once more): only the others remain.
        t.moved(BatchId { nonce: 7, seq: 1 }, "g2");
        t.moved(BatchId { nonce: 7, seq: 2 }, "g2");
        assert_eq!(seqs(&t.lost(0, "g2")), [3, 4]);
        assert_eq!(t.generation(0), Some("g1"), "the newest is still of g1");
        assert_eq!(seqs(&t.lost(0, "g3")), [1, 2, 3, 4]);
        // Read back from the Stream (another owner appended them again): known, same place,
        // its generation updated; nothing added twice.
        t.record(entry(0, 3, "g2", t0));
        t.record(entry(0, 4, "g2", t0));
        assert_eq!(t.entries.len(), 6);
        assert!(t.lost(0, "g2").is_empty());
        assert_eq!(t.generation(0), Some("g2"));
    }

    #[test]
    fn the_tail_forgets_by_age_bytes_and_count() {
        let t0 = TokioInstant::now();
        let mut t = Tail::new(Duration::from_secs(10), 1 << 20, 3);
        for seq in 1..=5 {
            t.record(entry(0, seq, "g", t0));
        }
        assert_eq!(seqs(&t.lost(0, "h")), [3, 4, 5], "at most 3 entries");
        // Age counts from the newest entry, not from now: a Redis outage ages nothing.
        let later = t0 + Duration::from_secs(11);
        t.prune();
        assert_eq!(t.entries.len(), 3);
        t.record(entry(0, 6, "g", later));
        assert_eq!(seqs(&t.lost(0, "h")), [6], "older than the window");
        assert_eq!(t.bytes, 4 + 4);
        // A forgotten entry comes back as new (its place and index are right).
        t.record(entry(0, 1, "g", later));
        t.moved(BatchId { nonce: 7, seq: 1 }, "h");
        assert_eq!(seqs(&t.lost(0, "h")), [6]);
        let mut t = Tail::new(Duration::from_secs(10), 20, 100);
        for seq in 1..=5 {
            t.record(entry(0, seq, "g", t0));
        }
        assert_eq!(seqs(&t.lost(0, "h")), [4, 5], "at most 20 bytes (8 each)");
    }

    #[test]
    fn batch_ids_and_entry_origins() {
        let b = BatchId {
            nonce: 0x0123_4567_89ab_cdef,
            seq: 42,
        };
        assert_eq!(b.encode().len(), 32);
        assert_eq!(BatchId::parse(b.encode().as_bytes()), Some(b));
        assert_eq!(BatchId::parse(b"42"), None);
        assert_eq!(BatchId::parse(&[b'z'; 32]), None);
        let mut e = StreamId {
            id: "1-0".into(),
            map: Default::default(),
        };
        let put = |e: &mut StreamId, k: &str, v: &str| {
            e.map
                .insert(k.into(), Value::BulkString(v.as_bytes().to_vec()))
        };
        assert_eq!(entry_origin(&e), (None, None, String::new()));
        put(&mut e, "slot", "2");
        put(&mut e, "batch", &b.encode());
        put(&mut e, "gen", "g7");
        assert_eq!(entry_origin(&e), (Some(2), Some(b), "g7".into()));
    }
}
