//! Fleet mode end to end: three relay processes (the real binary), one redis-server, the
//! emulator in-process with a 1 s slot hold and the relays' reconnect delay above it
//! (1.5 s), downstream raw-HTTP clients on every relay. Faults: SIGKILL of the owner,
//! SIGSTOP of the owner past its lease, Redis restarted empty (also while a reader is
//! behind, and with entry ids below the readers' last ones). Each test prints a hand-over
//! transcript and, per client, the records lost and duplicated.
//!
//! Skipped (with a message) when `redis-server` is not installed.

mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The tests share the machine's two cores: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const DELAY_MS: u64 = 1500;
const TTL_MS: &str = "1500";

fn redis_server() -> Option<&'static str> {
    let path = "/usr/bin/redis-server";
    if std::path::Path::new(path).exists() {
        Some(path)
    } else {
        eprintln!("SKIPPED: redis-server is not installed (apt-get install -y redis-server, or scripts/setup.sh)");
        None
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// A redis-server on a loopback port; killed on drop.
struct Redis {
    port: u16,
    child: Option<std::process::Child>,
}

impl Redis {
    async fn start(port: u16) -> Redis {
        let child = std::process::Command::new(redis_server().expect("checked"))
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let r = Redis {
            port,
            child: Some(child),
        };
        let deadline = tokio::time::Instant::now() + T;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(tokio::time::Instant::now() < deadline, "redis-server up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connection")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A relay process; SIGCONT then SIGKILL on drop (it may be stopped).
struct RelayProc {
    addr: SocketAddr,
    pid: i32,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl RelayProc {
    async fn start(emu: &Emu, redis: &Redis, extra: &[&str]) -> RelayProc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_livestream-relay"));
        cmd.args(["--upstream", &emu.url("demo"), "--redis", &redis.url()])
            .args(["--listen", "127.0.0.1:0", "--lease-ttl-ms", TTL_MS])
            .args(["--reconnect-delay-ms", &DELAY_MS.to_string()])
            .args([
                "--reconnect-jitter-ms",
                "100",
                "--max-reconnect-delay-ms",
                "3000",
            ])
            .args(["--replay", "100000", "--flush-ms", "20"])
            .args(extra)
            .env("LIVESTREAM_TOKEN", "test-token")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("relay binary starts");
        let pid = child.id().expect("pid") as i32;
        let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = tokio::time::timeout(T, out.next_line())
            .await
            .expect("relay prints its address")
            .expect("stdout")
            .expect("a first line");
        let addr = line
            .strip_prefix("livestream-relay listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("address");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (log2, mut err) = (
            log.clone(),
            BufReader::new(child.stderr.take().expect("stderr")).lines(),
        );
        tokio::spawn(async move {
            while let Ok(Some(l)) = err.next_line().await {
                log2.lock().unwrap().push(l);
            }
        });
        tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
        RelayProc {
            addr,
            pid,
            child,
            log,
        }
    }

    fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.pid, sig);
        }
    }

    async fn metric(&self, sample: &str) -> Option<f64> {
        let r = tokio::time::timeout(
            Duration::from_secs(2),
            send(self.addr, "GET", "/metrics", &[], b""),
        )
        .await
        .ok()?;
        let b = tokio::time::timeout(Duration::from_secs(2), r.body())
            .await
            .ok()?
            .ok()?;
        String::from_utf8(b)
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
    }

    async fn healthz(&self) -> String {
        let r = send(self.addr, "GET", "/healthz", &[], b"").await;
        String::from_utf8(r.body().await.expect("body")).expect("UTF-8")
    }

    /// Fleet log lines: (wall ms, text).
    fn fleet_lines(&self, who: &str) -> Vec<(u64, String)> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| {
                let rest = l.strip_prefix("livestream-relay: fleet t=")?;
                let (t, what) = rest.split_once(' ')?;
                let what = what.split(" relay=").next().unwrap_or(what);
                Some((t.parse().ok()?, format!("{who}: {what}")))
            })
            .collect()
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        self.signal(libc::SIGKILL);
        let _ = self.child.start_kill();
    }
}

/// A downstream client reading records in the background.
struct Client {
    name: String,
    lines: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    async fn start(name: String, addr: SocketAddr, gzip: bool) -> Client {
        let h: &[(&str, &str)] = if gzip {
            &[("Accept-Encoding", "gzip")]
        } else {
            &[]
        };
        let r = send(addr, "GET", "/api/1/stream/demo", h, b"").await;
        assert_eq!(r.status, 200, "{name}: stream status");
        let mut recs = r.records();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        let task = tokio::spawn(async move {
            loop {
                match recs.next(Duration::from_millis(200)).await {
                    Some(l) => l2.lock().unwrap().push(l),
                    None if recs.ended.is_some() => return,
                    None => {}
                }
            }
        });
        Client { name, lines, task }
    }

    fn len(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    fn keys(&self) -> Vec<(u64, u64)> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| hit_key(l))
            .collect()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The Prometheus sample that is 1 on the relay holding slot `slot`'s lease.
fn lease_held(slot: usize) -> String {
    format!("livestream_relay_fleet_lease_held{{stream=\"demo\",slot=\"{slot}\"}}")
}

/// One test's fleet, started in this order: redis-server, the emulator (1 s slot hold,
/// --resend 5) and three relay processes. Fields drop in order: the relays (killed), the
/// emulator, redis-server, and last the lock that runs the tests one at a time.
struct Fleet {
    relays: [RelayProc; 3],
    emu: Emu,
    redis: Redis,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

impl Fleet {
    /// Starts a fleet whose emulator generates with `seed` at `rate` records/s and whose
    /// relays get `extra` flags; None (the test is skipped) without redis-server.
    async fn start(seed: &str, rate: &str, extra: &[&str]) -> Option<Fleet> {
        redis_server()?;
        let serial = SERIAL.lock().await;
        let redis = Redis::start(free_port()).await;
        let emu = Emu::start(&[
            "--seed",
            seed,
            "--rate",
            rate,
            "--slot-hold-secs",
            "1",
            "--resend",
            "5",
        ])
        .await;
        let relays = [
            RelayProc::start(&emu, &redis, extra).await,
            RelayProc::start(&emu, &redis, extra).await,
            RelayProc::start(&emu, &redis, extra).await,
        ];
        Some(Fleet {
            relays,
            emu,
            redis,
            _serial: serial,
        })
    }

    /// A gzip client on each of relays `which` (named r{i}/gzip), each followed by an
    /// identity one (r{i}/plain) when `plain`.
    async fn clients(&self, which: &[usize], plain: bool) -> Vec<Client> {
        let mut clients = Vec::new();
        for &i in which {
            let addr = self.relays[i].addr;
            clients.push(Client::start(format!("r{i}/gzip"), addr, true).await);
            if plain {
                clients.push(Client::start(format!("r{i}/plain"), addr, false).await);
            }
        }
        clients
    }

    /// Which relay holds slot `slot`'s lease (index), waiting for one to.
    async fn owner(&self, slot: usize) -> usize {
        let sample = lease_held(slot);
        let deadline = tokio::time::Instant::now() + T;
        loop {
            for (i, r) in self.relays.iter().enumerate() {
                if r.metric(&sample).await == Some(1.0) {
                    return i;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no owner for slot {slot}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the emulator has exactly `n` live upstream connections, then lets
    /// records flow for `run`.
    async fn live_for(&self, what: &str, n: u64, run: Duration) {
        self.emu
            .wait_stats(what, |s| s["streams"]["demo"]["live"].as_u64() == Some(n))
            .await;
        tokio::time::sleep(run).await;
    }

    /// Stops generation, waits until every client has every record the emulator sent (or the
    /// counts stop moving), and returns the emulator's stats and its unique records sent.
    async fn settle(&self, clients: &[Client]) -> (Value, u64) {
        self.emu
            .admin("PUT", "/admin/streams/demo", Some(r#"{"rate":0}"#))
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut last = Vec::new();
        let mut stable = 0;
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let counts: Vec<usize> = clients.iter().map(|c| c.len()).collect();
            stable = if counts == last { stable + 1 } else { 0 };
            last = counts;
            if stable >= 5 || tokio::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (_, stats) = self
            .emu
            .admin("GET", "/admin/stats?stream=demo", None)
            .await;
        let unique = new_records_sent(&stats);
        (stats, unique)
    }

    /// The end of a Redis fault test: settles, prints the transcript from `t0` with `marks`,
    /// checks that the fleet held one live upstream connection at most and that no client
    /// lost or repeated a record, and stops the emulator.
    async fn conclude_redis_test(
        self,
        test: &str,
        clients: &[Client],
        t0: u64,
        marks: &[(u64, &str)],
    ) {
        let (stats, unique) = self.settle(clients).await;
        self.transcript(test, t0, marks);
        assert_polite(test, &stats, 1);
        let t = audit(test, clients, unique, "");
        assert_none_lost_or_duplicated(&t);
        self.emu.stop().await;
    }

    /// Prints the relays' fleet log lines (relay0..relay2) and the test's `marks`, in time
    /// order, relative to `t0` (the fault).
    fn transcript(&self, test: &str, t0: u64, marks: &[(u64, &str)]) {
        let mut lines: Vec<(u64, String)> = self
            .relays
            .iter()
            .enumerate()
            .flat_map(|(i, r)| r.fleet_lines(&format!("relay{i}")))
            .filter(|(_, l)| !l.contains("upstream-connecting") && !l.contains("upstream-waiting"))
            .collect();
        lines.extend(marks.iter().map(|(t, m)| (*t, format!("test: {m}"))));
        lines.sort();
        println!("--- {test}: hand-over transcript (ms relative to the fault) ---");
        for (t, l) in lines {
            println!("{test}: {:>+7} {l}", t as i64 - t0 as i64);
        }
    }
}

/// Per client: (lost, duplicated) against `reference` (every record the fleet should have
/// delivered); prints a line each.
fn tally(test: &str, clients: &[Client], reference: &HashSet<(u64, u64)>) -> Vec<(usize, usize)> {
    clients
        .iter()
        .map(|c| {
            let keys = c.keys();
            let set: HashSet<_> = keys.iter().copied().collect();
            let dup = keys.len() - set.len();
            let lost = reference.difference(&set).count();
            println!(
                "{test}: client {:<12} received {:>5}, lost {lost}, duplicated {dup}",
                c.name,
                keys.len()
            );
            (lost, dup)
        })
        .collect()
}

/// The union of what `clients` received (what the fleet delivered), and each client's
/// (lost, duplicated) against it; prints it next to the emulator's `unique` records sent and
/// the records lost fleet-wide (`lost_why`: where they went), which is reported, not
/// asserted.
fn audit(test: &str, clients: &[Client], unique: u64, lost_why: &str) -> Vec<(usize, usize)> {
    let mut reference = HashSet::new();
    for c in clients {
        reference.extend(c.keys());
    }
    println!(
        "{test}: emulator sent {unique} distinct records; the clients saw {}",
        reference.len()
    );
    let t = tally(test, clients, &reference);
    let lost_fleet = unique.saturating_sub(reference.len() as u64);
    println!("{test}: records lost fleet-wide{lost_why}: {lost_fleet}");
    t
}

/// Asserts that no client lost or duplicated a record (a `tally`).
fn assert_none_lost_or_duplicated(t: &[(usize, usize)]) {
    assert!(
        t.iter().all(|&(l, d)| l == 0 && d == 0),
        "lost or duplicated: {t:?}"
    );
}

/// The emulator's connections of stream demo: (opened, closed) ms.
fn connections(stats: &Value) -> Vec<(u64, Option<u64>)> {
    stats["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .map(|c| (c["opened_ms"].as_u64().unwrap(), c["closed_ms"].as_u64()))
        .collect()
}

/// Waits until every client has 50 records more than `before` (service resumed after a
/// fault); fails after `T` with the counts.
async fn await_resumed(clients: &[Client], before: &[usize]) {
    let deadline = tokio::time::Instant::now() + T;
    while clients.iter().zip(before).any(|(c, b)| c.len() < b + 50) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "service did not resume after Redis came back: {:?} -> {:?}",
            before,
            clients.iter().map(|c| c.len()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_polite(test: &str, stats: &Value, max_live: u64) {
    let s = &stats["streams"]["demo"];
    assert!(
        s["peak_live"].as_u64().unwrap() <= max_live,
        "{test}: more than {max_live} live upstream connections: {s:#}"
    );
    let codes = &s["status_counts"];
    assert!(
        codes.get("409").is_none() && codes.get("503").is_none(),
        "{test}: the emulator answered 409/503: {codes}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_state_one_upstream_connection_per_slot_and_every_record_once_everywhere() {
    let Some(f) = Fleet::start("12", "50", &["--max-connections", "2"]).await else {
        return;
    };
    let mut clients = f.clients(&[0, 1, 2], true).await;
    f.live_for("two live upstream connections", 2, Duration::from_secs(3))
        .await;
    // A late joiner gets the replay from the Stream-fed hub.
    clients.push(Client::start("r2/late".into(), f.relays[2].addr, true).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (stats, unique) = f.settle(&clients).await;
    let conns = connections(&stats);
    assert_eq!(
        conns.len(),
        2,
        "exactly `connections` upstream connections: {stats:#}"
    );
    assert_polite("steady", &stats, 2);
    let reference: HashSet<_> = clients[0].keys().into_iter().collect();
    assert_eq!(
        reference.len() as u64,
        unique,
        "the fleet delivered every record the emulator sent"
    );
    assert!(unique > 100, "records flowed: {unique}");
    assert_none_lost_or_duplicated(&tally("steady", &clients, &reference));
    // Exact ids, same bytes, same order on every relay.
    let first = clients[0].lines.lock().unwrap().clone();
    for c in &clients[1..] {
        assert_eq!(
            *c.lines.lock().unwrap(),
            first,
            "{} differs from r0/gzip",
            c.name
        );
    }
    let mut held = 0.0;
    for r in &f.relays {
        for slot in 0..2 {
            held += r.metric(&lease_held(slot)).await.unwrap_or(0.0);
        }
    }
    assert_eq!(held, 2.0, "each slot's lease held by exactly one relay");
    f.emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_owner_hands_over_after_the_delay_without_loss_or_duplicates() {
    let Some(f) = Fleet::start("12", "50", &[]).await else {
        return;
    };
    let o = f.owner(0).await;
    let survivors: Vec<usize> = (0..3).filter(|&i| i != o).collect();
    let clients = f.clients(&survivors, true).await;
    f.live_for("a live upstream connection", 1, Duration::from_secs(2))
        .await;
    let t_kill = now_ms();
    f.relays[o].signal(libc::SIGKILL);
    f.emu
        .wait_stats("the take-over connection", |s| {
            connections(s).len() == 2 && s["streams"]["demo"]["live"].as_u64() == Some(1)
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (stats, unique) = f.settle(&clients).await;
    f.transcript(
        "sigkill",
        t_kill,
        &[(t_kill, &format!("SIGKILL relay{o} (the owner)"))],
    );
    assert_polite("sigkill", &stats, 1);
    let conns = connections(&stats);
    let (_, closed) = conns[0];
    let (opened, _) = conns[1];
    let gap = opened - closed.expect("the killed relay's connection closed");
    println!("sigkill: upstream loss -> take-over connection: {gap} ms (delay {DELAY_MS} ms)");
    assert!(
        gap >= DELAY_MS - 20,
        "took over {gap} ms after the loss, sooner than the delay"
    );
    // Records the killed owner had read but not yet appended are gone with it, beyond what
    // the emulator re-sends on resume (--resend 5): reported, not asserted.
    let t = audit(
        "sigkill",
        &clients,
        unique,
        " (in flight in the killed owner)",
    );
    assert_none_lost_or_duplicated(&t);
    f.emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstopped_owner_past_its_lease_is_fenced_and_never_connects_as_stale_owner() {
    let Some(f) = Fleet::start("13", "200", &[]).await else {
        return;
    };
    let o = f.owner(0).await;
    let clients = f.clients(&[0, 1, 2], false).await;
    f.live_for("a live upstream connection", 1, Duration::from_secs(2))
        .await;
    let t_stop = now_ms();
    f.relays[o].signal(libc::SIGSTOP);
    tokio::time::sleep(Duration::from_millis(4000)).await;
    let t_cont = now_ms();
    f.relays[o].signal(libc::SIGCONT);
    // The stale owner finds out, and someone else reads upstream.
    let sample = "livestream_relay_fleet_lease_losses_total{stream=\"demo\"}";
    let deadline = tokio::time::Instant::now() + T;
    while f.relays[o].metric(sample).await.unwrap_or(0.0) < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stale owner never noticed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f.emu
        .wait_stats("the new owner's connection", |s| {
            connections(s).len() >= 2 && s["streams"]["demo"]["live"].as_u64() == Some(1)
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (stats, unique) = f.settle(&clients).await;
    f.transcript(
        "sigstop",
        t_stop,
        &[
            (t_stop, &format!("SIGSTOP relay{o} (the owner)")),
            (t_cont, &format!("SIGCONT relay{o}")),
        ],
    );
    // Never two connections for the slot at once.
    let s = &stats["streams"]["demo"];
    assert!(
        s["peak_live"].as_u64().unwrap() <= 1,
        "two live connections: {s:#}"
    );
    // The stale owner's writes were refused by the fencing check.
    let fenced = f.relays[o]
        .metric("livestream_relay_fleet_fenced_writes_total{stream=\"demo\"}")
        .await
        .unwrap_or(0.0);
    println!("sigstop: writes of the stale owner refused by fencing: {fenced}");
    assert!(
        fenced >= 1.0,
        "the stale owner's writes were not refused (fencing)"
    );
    // Audit of the Stream: no entry written with a token after a newer owner acquired.
    let mut conn = f.redis.conn().await;
    let owners: BTreeMap<u64, String> =
        redis::AsyncCommands::hgetall(&mut conn, "livestream-relay:{demo}:owners:0")
            .await
            .expect("owners");
    let acquired: BTreeMap<u64, u64> = owners
        .iter()
        .map(|(t, v)| (*t, v.rsplit(' ').next().unwrap().parse().unwrap()))
        .collect();
    let entries: redis::streams::StreamRangeReply =
        redis::AsyncCommands::xrange_all(&mut conn, "livestream-relay:{demo}:records")
            .await
            .expect("xrange");
    let mut stale = 0;
    for e in &entries.ids {
        let ms: u64 = e.id.split('-').next().unwrap().parse().unwrap();
        let token: u64 = e.get::<String>("token").unwrap().parse().unwrap();
        if acquired.range(token + 1..).any(|(_, &at)| at < ms) {
            stale += 1;
        }
    }
    println!(
        "sigstop: owners {owners:?}; {} Stream entries, {stale} written by a stale owner",
        entries.ids.len()
    );
    assert!(acquired.len() >= 2, "someone took over: {owners:?}");
    assert_eq!(stale, 0, "a stale owner's write reached the Stream");
    let t = audit(
        "sigstop",
        &clients,
        unique,
        " (read by the stale owner, refused)",
    );
    assert!(t.iter().all(|&(_, d)| d == 0), "duplicated: {t:?}");
    f.emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_run_service_resumes_and_nothing_is_delivered_twice() {
    let Some(mut f) = Fleet::start("12", "50", &[]).await else {
        return;
    };
    f.owner(0).await;
    let clients = f.clients(&[0, 1, 2], false).await;
    f.live_for("a live upstream connection", 1, Duration::from_secs(2))
        .await;
    let t_kill = now_ms();
    f.redis.kill();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let health = f.relays[0].healthz().await;
    let up = f.relays[0].metric("livestream_relay_fleet_redis_up").await;
    println!("redis-restart: during the outage /healthz says {health:?}, redis_up {up:?}");
    assert!(health.contains("Redis unavailable"), "/healthz: {health}");
    assert_eq!(up, Some(0.0));
    let before: Vec<usize> = clients.iter().map(|c| c.len()).collect();
    let t_back = now_ms();
    let _redis2 = Redis::start(f.redis.port).await;
    // Service resumes: every client gets new records.
    await_resumed(&clients, &before).await;
    // And upstream reading resumed (not only the batches queued during the outage).
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let n = clients[0].len();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let live = f.emu.stats().await["streams"]["demo"]["live"].as_u64();
        if live == Some(1) && clients[0].len() > n + 20 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "upstream reading did not resume"
        );
    }
    f.conclude_redis_test(
        "redis-restart",
        &clients,
        t_kill,
        &[
            (t_kill, "redis-server killed"),
            (t_back, "redis-server restarted (empty)"),
        ],
    )
    .await;
}

/// A relay whose reader is behind on the Stream when Redis dies (here frozen with SIGSTOP
/// for 300 ms, so that the owner appends several batches the others read and it does not):
/// those entries existed only in the Redis that was lost, and its clients must still get
/// them, once, after Redis comes back empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_while_a_reader_is_behind_it_still_gets_every_record_once() {
    let Some(mut f) = Fleet::start("14", "50", &[]).await else {
        return;
    };
    let o = f.owner(0).await;
    let behind = (o + 1) % 3;
    let clients = f.clients(&[0, 1, 2], false).await;
    f.live_for("a live upstream connection", 1, Duration::from_secs(2))
        .await;
    // Nothing the owner appends from now on reaches the frozen relay's reader before Redis
    // goes (at most the one reply already on its way, waiting in its socket).
    let t_stop = now_ms();
    f.relays[behind].signal(libc::SIGSTOP);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t_kill = now_ms();
    f.redis.kill();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t_cont = now_ms();
    f.relays[behind].signal(libc::SIGCONT);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before: Vec<usize> = clients.iter().map(|c| c.len()).collect();
    let t_back = now_ms();
    let _redis2 = Redis::start(f.redis.port).await;
    await_resumed(&clients, &before).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    f.conclude_redis_test(
        "reader-behind",
        &clients,
        t_kill,
        &[
            (t_stop, &format!("SIGSTOP relay{behind} (a reader)")),
            (t_kill, "redis-server killed"),
            (t_cont, &format!("SIGCONT relay{behind}")),
            (t_back, "redis-server restarted (empty)"),
        ],
    )
    .await;
}

/// Redis back empty with a clock behind the old one (restarted elsewhere, a failover): the
/// new entries get ids below the last one every reader read. Here an entry with an id an
/// hour ahead, added by hand, moves the ids of everything appended after it into the future,
/// so the entries after the restart have smaller ids. Service must resume all the same,
/// nothing lost or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_back_empty_with_smaller_entry_ids_readers_read_it_from_the_start() {
    let Some(mut f) = Fleet::start("15", "50", &[]).await else {
        return;
    };
    f.owner(0).await;
    let clients = f.clients(&[0, 1, 2], false).await;
    f.live_for("a live upstream connection", 1, Duration::from_secs(1))
        .await;
    let ahead = format!("{}-0", now_ms() + 3_600_000);
    let _: String = redis::cmd("XADD")
        .arg("livestream-relay:{demo}:records")
        .arg(&ahead)
        .arg("note")
        .arg("ids from a clock an hour ahead")
        .query_async(&mut f.redis.conn().await)
        .await
        .expect("XADD with an id ahead");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t_kill = now_ms();
    f.redis.kill();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before: Vec<usize> = clients.iter().map(|c| c.len()).collect();
    let t_back = now_ms();
    let _redis2 = Redis::start(f.redis.port).await;
    await_resumed(&clients, &before).await;
    f.conclude_redis_test(
        "ids-behind",
        &clients,
        t_kill,
        &[
            (t_kill, "redis-server killed"),
            (t_back, "redis-server restarted (empty)"),
        ],
    )
    .await;
}
