//! The state of one emulated stream: its hit log, its schedule, and its connection slots.
//!
//! Hits are generated lazily: [`Stream::advance`] generates every hit whose (virtual) due
//! time has passed, so the content and order of hits depend only on the seed, never on
//! when connections happen to poll. The last `backlog` hits are retained for resume and
//! `reset=smallest`.
//!
//! Slots model the real service's connection accounting (KA-16598): a stream opened with
//! `maxConnections=M` has M slots; visitors are partitioned over them (`visitor % M`); a
//! slot whose client dropped stays *held* for a while and refuses reconnects meanwhile.

use crate::generator::Generator;
use crate::rng::Rng;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most hits one [`Stream::advance`] generates (a few milliseconds of work).
pub const MAX_STEP: usize = 2048;

/// One retained hit.
#[derive(Debug)]
pub struct Entry {
    /// Position in the stream, from 0.
    pub seq: u64,
    /// Due time in milliseconds after the stream's creation (virtual collection time).
    pub due_ms: f64,
    /// Visitor index; the slot is `visitor % maxConnections`.
    pub visitor: u32,
    /// The JSON record, one line, without CRLF.
    pub line: String,
    /// An empty record precedes this one on the wire.
    pub empty_before: bool,
}

/// Who uses a slot.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SlotUse {
    /// Nobody; a connection may take it.
    Free,
    /// A live connection (by id).
    Live(u64),
    /// The client dropped; the slot frees at `until`.
    Held {
        /// When the hold ends.
        until: Instant,
        /// The connection that held it.
        conn: u64,
    },
}

/// One connection slot and what it remembers for a resume.
#[derive(Debug)]
pub struct Slot {
    /// Current use.
    pub usage: SlotUse,
    /// Seqs of the last records delivered through this slot (oldest first), for re-sending.
    pub delivered: VecDeque<u64>,
    /// Next seq to consider after the last delivered record.
    pub cursor: Option<u64>,
    /// When the last connection of this slot ended.
    pub last_drop: Option<Instant>,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            usage: SlotUse::Free,
            delivered: VecDeque::new(),
            cursor: None,
            last_drop: None,
        }
    }
}

/// Where a connection starts reading (the `reset` parameter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reset {
    /// The oldest retained record.
    Smallest,
    /// The newest: only hits from now on.
    Largest,
}

/// Timing and policy a stream applies when admitting a connection.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Seconds a slot stays held after its client dropped.
    pub hold: f64,
    /// Seconds after a drop within which a reconnect resumes.
    pub resume: f64,
    /// Records re-sent on resume.
    pub resend: usize,
}

/// A successful admission.
#[derive(Debug)]
pub struct Admission {
    /// The slot index.
    pub slot: usize,
    /// First seq to consider for new records.
    pub cursor: u64,
    /// Records to send first again (duplicates of a previous connection's last records).
    pub resend: Vec<Arc<Entry>>,
    /// Whether this connection resumes a previous one.
    pub resumed: bool,
    /// Whether a `reset` parameter took effect.
    pub reset_applied: Option<Reset>,
}

/// Why a connection was refused.
#[derive(Debug, PartialEq)]
pub enum Refusal {
    /// `maxConnections` differs from the one of the open (live or held) connections.
    Differs {
        /// The value the refused request asked for.
        requested: u8,
        /// The value in effect.
        current: u8,
        /// Live connections.
        live: usize,
        /// Held slots.
        held: usize,
    },
    /// All slots are live or held.
    Full {
        /// The value in effect.
        max: u8,
        /// Live connections.
        live: usize,
        /// Held slots.
        held: usize,
        /// Seconds until the earliest held slot frees (None when no slot is held).
        frees_in: Option<f64>,
    },
}

/// Per-stream request counters (kept for `/admin/stats?stream=`).
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Requests to this stream.
    pub requests: u64,
    /// Responses by status.
    pub status_counts: std::collections::BTreeMap<u16, u64>,
    /// Reconnects refused because a slot was still held.
    pub early_refused: u64,
}

/// One emulated stream.
pub struct Stream {
    /// Endpoint name.
    pub name: String,
    created: Instant,
    generator: Generator,
    sched: Rng,
    next_due_ms: f64,
    paused: bool,
    mult: f64,
    mult_second: i64,
    burst_until: i64,
    epoch_s: f64,
    /// Retained records, oldest first.
    pub log: VecDeque<Arc<Entry>>,
    /// Seq of the next generated record.
    pub next_seq: u64,
    backlog: usize,
    /// Records retained at most: `backlog`, or less when many streams share the emulator's
    /// budget (see [`Stream::set_cap`]).
    cap: usize,
    /// The `maxConnections` in effect.
    pub max_conn: u8,
    /// The slots (`max_conn` of them).
    pub slots: Vec<Slot>,
    /// Most connections live at once.
    pub peak_live: usize,
    /// Connections ever admitted (orders the per-connection chaos generators).
    pub admitted: u64,
    /// Last admission or release (for forgetting idle streams).
    pub last_active: Instant,
}

impl Stream {
    /// A new stream whose hits come from `seed`; its clock starts now at Unix time `epoch_s`.
    pub fn new(
        name: &str,
        seed: u64,
        report_suite: &str,
        epoch_s: f64,
        backlog: usize,
        now: Instant,
    ) -> Stream {
        Stream {
            name: name.to_string(),
            created: now,
            generator: Generator::new(
                Rng::derive(seed, &format!("records:{name}"), 0),
                report_suite,
            ),
            sched: Rng::derive(seed, &format!("schedule:{name}"), 0),
            next_due_ms: 0.0,
            paused: true,
            mult: 1.0,
            mult_second: -1,
            burst_until: -1,
            epoch_s,
            log: VecDeque::new(),
            next_seq: 0,
            backlog,
            cap: backlog,
            max_conn: 1,
            slots: vec![Slot::new()],
            peak_live: 0,
            admitted: 0,
            last_active: now,
        }
    }

    /// Milliseconds of stream time at `now`.
    pub fn t_ms(&self, now: Instant) -> f64 {
        now.saturating_duration_since(self.created).as_secs_f64() * 1000.0
    }

    /// The instant of stream time `ms`.
    pub fn instant_at(&self, ms: f64) -> Instant {
        self.created + Duration::from_secs_f64(ms.max(0.0) / 1000.0)
    }

    /// When the next hit is due (None while the rate is 0).
    pub fn next_due(&self) -> Option<Instant> {
        (!self.paused).then(|| self.instant_at(self.next_due_ms))
    }

    fn gap_ms(&mut self, rate: f64) -> f64 {
        let second = (self.next_due_ms / 1000.0) as i64;
        if second != self.mult_second {
            self.mult_second = second;
            if second >= self.burst_until {
                if self.sched.chance(0.03) {
                    self.burst_until = second + 1 + self.sched.below(3) as i64;
                    self.mult = self.sched.range_f64(3.0, 5.0);
                } else {
                    self.mult = self.sched.range_f64(0.5, 1.5);
                }
            }
        }
        let u = self.sched.f64();
        -(1.0 - u).ln() / (rate * self.mult) * 1000.0
    }

    /// Generates the hits due by `now` at `rate` hits/s (0 pauses generation), at most
    /// [`MAX_STEP`] per call: the caller holds the global lock, so one call must stay short
    /// whatever the rate; a stream that is behind catches up over the next calls.
    pub fn advance(&mut self, now: Instant, rate: f64) {
        let t = self.t_ms(now);
        if rate <= 0.0 {
            self.paused = true;
            return;
        }
        if self.paused {
            self.paused = false;
            self.next_due_ms = self.next_due_ms.max(t);
            if self.next_seq > 0 {
                self.next_due_ms += self.gap_ms(rate);
            }
        }
        // After a long idle period don't generate more than twice what the stream keeps.
        let horizon = self.cap as f64 * 2.0 / rate * 1000.0;
        if t - self.next_due_ms > horizon {
            self.next_due_ms = t - horizon;
        }
        let mut steps = 0;
        while self.next_due_ms <= t && steps < MAX_STEP {
            steps += 1;
            let hit = self
                .generator
                .next(self.epoch_s + self.next_due_ms / 1000.0);
            self.log.push_back(Arc::new(Entry {
                seq: self.next_seq,
                due_ms: self.next_due_ms,
                visitor: hit.visitor,
                line: hit.line,
                empty_before: hit.empty_before,
            }));
            self.next_seq += 1;
            while self.log.len() > self.cap {
                self.log.pop_front();
            }
            self.next_due_ms += self.gap_ms(rate);
        }
    }

    /// Retains at most `cap` records (at least 1, at most the backlog), forgetting the
    /// oldest ones now if needed.
    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap.clamp(1, self.backlog);
        while self.log.len() > self.cap {
            self.log.pop_front();
        }
    }

    /// The most records this stream retains now.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Oldest retained seq (or `next_seq` when nothing is retained).
    pub fn oldest_seq(&self) -> u64 {
        self.log.front().map_or(self.next_seq, |e| e.seq)
    }

    /// The retained entry with this seq.
    pub fn entry(&self, seq: u64) -> Option<&Arc<Entry>> {
        let front = self.log.front()?.seq;
        self.log.get(usize::try_from(seq.checked_sub(front)?).ok()?)
    }

    /// Frees held slots whose hold has ended.
    pub fn expire(&mut self, now: Instant) {
        for s in &mut self.slots {
            if let SlotUse::Held { until, .. } = s.usage {
                if until <= now {
                    s.usage = SlotUse::Free;
                }
            }
        }
    }

    /// (live, held) slot counts.
    pub fn usage(&self) -> (usize, usize) {
        let live = self
            .slots
            .iter()
            .filter(|s| matches!(s.usage, SlotUse::Live(_)))
            .count();
        let held = self
            .slots
            .iter()
            .filter(|s| matches!(s.usage, SlotUse::Held { .. }))
            .count();
        (live, held)
    }

    /// Admits connection `conn` with `maxConnections=max`, or says why not.
    pub fn admit(
        &mut self,
        conn: u64,
        max: u8,
        reset: Option<Reset>,
        policy: Policy,
        now: Instant,
    ) -> Result<Admission, Refusal> {
        self.expire(now);
        self.last_active = now;
        let (live, held) = self.usage();
        let idle = live == 0 && held == 0;
        if max != self.max_conn {
            if !idle {
                return Err(Refusal::Differs {
                    requested: max,
                    current: self.max_conn,
                    live,
                    held,
                });
            }
            // A new partition of visitors: what the old slots delivered no longer applies.
            self.max_conn = max;
            self.slots = (0..max).map(|_| Slot::new()).collect();
        }
        if live + held >= usize::from(max) {
            let frees_in = self
                .slots
                .iter()
                .filter_map(|s| match s.usage {
                    SlotUse::Held { until, .. } => {
                        Some(until.saturating_duration_since(now).as_secs_f64())
                    }
                    _ => None,
                })
                .reduce(f64::min);
            return Err(Refusal::Full {
                max,
                live,
                held,
                frees_in,
            });
        }
        let resume_window = Duration::from_secs_f64(policy.resume);
        let resumable = |s: &Slot| {
            s.cursor.is_some()
                && s.last_drop
                    .is_some_and(|d| now.saturating_duration_since(d) <= resume_window)
        };
        // Prefer the free slot most recently dropped within the resume window (the client
        // coming back), else the lowest free slot.
        let slot = (0..self.slots.len())
            .filter(|&i| self.slots[i].usage == SlotUse::Free)
            .max_by_key(|&i| {
                let s = &self.slots[i];
                (
                    resumable(s),
                    s.last_drop.filter(|_| resumable(s)),
                    std::cmp::Reverse(i),
                )
            })
            .expect("a free slot exists when live + held < max");
        self.admitted += 1;
        let oldest = self.oldest_seq();
        let next = self.next_seq;
        let s = &mut self.slots[slot];
        s.usage = SlotUse::Live(conn);
        let mut admission = Admission {
            slot,
            cursor: next,
            resend: Vec::new(),
            resumed: false,
            reset_applied: None,
        };
        match reset {
            Some(r) if idle => {
                admission.reset_applied = Some(r);
                admission.cursor = if r == Reset::Smallest { oldest } else { next };
                s.delivered.clear();
            }
            _ if resumable(s) => {
                admission.resumed = true;
                admission.cursor = s.cursor.unwrap_or(next).max(oldest);
                let from = s.delivered.len().saturating_sub(policy.resend);
                let seqs: Vec<u64> = s.delivered.iter().skip(from).copied().collect();
                admission.resend = seqs
                    .into_iter()
                    .filter_map(|q| self.entry(q).cloned())
                    .collect();
            }
            _ => {
                s.delivered.clear();
            }
        }
        let s = &mut self.slots[slot];
        s.cursor = Some(admission.cursor);
        let (live, _) = self.usage();
        self.peak_live = self.peak_live.max(live);
        Ok(admission)
    }

    /// Up to `limit` records for `slot` from `cursor` that are released by `now`. With
    /// smoothing (`bucket_s`), a record generated in bucket k is released during bucket
    /// k+1, evenly spread by its position in its bucket. Returns the records and the cursor
    /// after them.
    pub fn take(
        &self,
        slot: usize,
        mut cursor: u64,
        now: Instant,
        bucket_s: Option<u32>,
        limit: usize,
    ) -> (Vec<Arc<Entry>>, u64) {
        let t = self.t_ms(now);
        let m = u32::from(self.max_conn);
        cursor = cursor.max(self.oldest_seq());
        let mut out = Vec::new();
        while let Some(e) = self.entry(cursor) {
            if let Some(b) = bucket_s {
                if self.release_ms(e, f64::from(b) * 1000.0) > t {
                    break;
                }
            }
            cursor += 1;
            if e.visitor % m == slot as u32 {
                out.push(e.clone());
                if out.len() >= limit {
                    break;
                }
            }
        }
        (out, cursor)
    }

    fn release_ms(&self, e: &Entry, b_ms: f64) -> f64 {
        let k = (e.due_ms / b_ms).floor();
        let (start, end) = (k * b_ms, (k + 1.0) * b_ms);
        let first = self.log.partition_point(|x| x.due_ms < start);
        let last = self.log.partition_point(|x| x.due_ms < end);
        let idx = self.log.partition_point(|x| x.seq < e.seq);
        let n = (last - first).max(1) as f64;
        end + b_ms * ((idx.saturating_sub(first)) as f64 / n)
    }

    /// Records that `conn` delivered these seqs through `slot` (for resume).
    pub fn delivered(&mut self, slot: usize, conn: u64, seqs: &[u64], keep: usize) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        if s.usage != SlotUse::Live(conn) {
            return;
        }
        for &q in seqs {
            s.delivered.push_back(q);
            s.cursor = Some(q + 1);
        }
        while s.delivered.len() > keep {
            s.delivered.pop_front();
        }
    }

    /// Ends `conn`'s use of `slot`: the slot is held for `hold` seconds (freed if 0).
    pub fn release(&mut self, slot: usize, conn: u64, hold: f64, now: Instant) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        if s.usage != SlotUse::Live(conn) {
            return;
        }
        self.last_active = now;
        s.last_drop = Some(now);
        s.usage = if hold > 0.0 {
            SlotUse::Held {
                until: now + Duration::from_secs_f64(hold),
                conn,
            }
        } else {
            SlotUse::Free
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Policy = Policy {
        hold: 10.0,
        resume: 300.0,
        resend: 3,
    };

    fn stream() -> (Stream, Instant) {
        let now = Instant::now();
        (Stream::new("s", 1, "rs", 1.7e9, 100, now), now)
    }

    #[test]
    fn generation_is_lazy_and_bounded() {
        let (mut s, t0) = stream();
        s.advance(t0, 50.0);
        assert_eq!(s.next_seq, 1, "generation starts when first asked");
        s.advance(t0 + Duration::from_secs(2), 50.0);
        assert!(s.next_seq > 20, "{}", s.next_seq);
        s.advance(t0 + Duration::from_secs(3600), 50.0);
        assert_eq!(s.log.len(), 100);
        assert!(s.next_seq < 400, "fast-forwarded: {}", s.next_seq);
    }

    #[test]
    fn one_advance_is_bounded_whatever_the_rate() {
        let (mut s, t0) = stream();
        s.advance(t0, 1e17);
        let start = Instant::now();
        s.advance(t0 + Duration::from_secs(5), 1e17);
        assert!(s.next_seq <= 1 + MAX_STEP as u64, "{}", s.next_seq);
        assert!(start.elapsed() < Duration::from_secs(2));
        s.advance(t0 + Duration::from_secs(6), 1e17);
        assert!(
            s.next_seq > MAX_STEP as u64,
            "catches up over the next calls"
        );
    }

    #[test]
    fn slots_hold_and_conflict() {
        let (mut s, t0) = stream();
        let a = s.admit(1, 2, None, P, t0).unwrap();
        assert_eq!(a.slot, 0);
        assert!(matches!(
            s.admit(2, 1, None, P, t0),
            Err(Refusal::Differs { current: 2, .. })
        ));
        let b = s.admit(3, 2, None, P, t0).unwrap();
        assert_eq!(b.slot, 1);
        assert!(matches!(
            s.admit(4, 2, None, P, t0),
            Err(Refusal::Full {
                live: 2,
                held: 0,
                frees_in: None,
                ..
            })
        ));
        s.release(0, 1, 10.0, t0);
        match s.admit(5, 2, None, P, t0 + Duration::from_secs(4)) {
            Err(Refusal::Full {
                held: 1,
                frees_in: Some(f),
                ..
            }) => assert!((f - 6.0).abs() < 0.01),
            other => panic!("{other:?}"),
        }
        let c = s
            .admit(6, 2, None, P, t0 + Duration::from_secs(11))
            .unwrap();
        assert_eq!(c.slot, 0);
        assert!(c.resumed);
    }

    #[test]
    fn resume_resends_the_last_delivered() {
        let (mut s, t0) = stream();
        let t1 = t0 + Duration::from_secs(1);
        s.advance(t1, 50.0);
        let a = s.admit(1, 1, None, P, t1).unwrap();
        s.advance(t0 + Duration::from_secs(3), 50.0);
        let (recs, _) = s.take(0, a.cursor, t0 + Duration::from_secs(3), None, 10);
        assert_eq!(recs.len(), 10);
        let seqs: Vec<u64> = recs.iter().map(|e| e.seq).collect();
        s.delivered(0, 1, &seqs, 3);
        s.release(0, 1, 0.0, t0 + Duration::from_secs(3));
        let b = s.admit(2, 1, None, P, t0 + Duration::from_secs(4)).unwrap();
        assert!(b.resumed);
        let again: Vec<u64> = b.resend.iter().map(|e| e.seq).collect();
        assert_eq!(again, seqs[7..].to_vec());
        assert_eq!(b.cursor, seqs[9] + 1);
    }

    #[test]
    fn reset_smallest_replays_only_when_idle() {
        let (mut s, t0) = stream();
        let t = t0 + Duration::from_secs(1);
        s.advance(t, 50.0);
        let a = s.admit(1, 2, Some(Reset::Smallest), P, t).unwrap();
        assert_eq!(a.cursor, 0);
        assert_eq!(a.reset_applied, Some(Reset::Smallest));
        let b = s.admit(2, 2, Some(Reset::Smallest), P, t).unwrap();
        assert_eq!(b.reset_applied, None);
        assert_eq!(b.cursor, s.next_seq);
    }

    #[test]
    fn partition_by_visitor() {
        let (mut s, t0) = stream();
        let t = t0 + Duration::from_secs(2);
        s.advance(t0, 50.0);
        s.admit(1, 2, None, P, t0).unwrap();
        s.admit(2, 2, None, P, t0).unwrap();
        s.advance(t, 50.0);
        let (a, _) = s.take(0, 0, t, None, 1000);
        let (b, _) = s.take(1, 0, t, None, 1000);
        assert_eq!(a.len() + b.len(), s.log.len());
        assert!(a.iter().all(|e| e.visitor % 2 == 0));
        assert!(b.iter().all(|e| e.visitor % 2 == 1));
    }

    #[test]
    fn smoothing_delays_by_a_bucket() {
        let (mut s, t0) = stream();
        s.advance(t0, 50.0);
        s.admit(1, 1, None, P, t0).unwrap();
        let t = t0 + Duration::from_millis(1500);
        s.advance(t, 50.0);
        let (plain, _) = s.take(0, 0, t, None, 1000);
        let (smooth, _) = s.take(0, 0, t, Some(1), 1000);
        assert!(!plain.is_empty());
        // Only records of bucket 0 are released during bucket 1, about half of them by 1.5 s.
        assert!(smooth.len() < plain.len());
        assert!(smooth.iter().all(|e| e.due_ms < 1000.0));
    }
}
