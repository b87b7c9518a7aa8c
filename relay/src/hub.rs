//! Fan-out of one upstream stream to every downstream client, compressing once.
//!
//! All gzip clients share ONE deflate stream. The upstream driver hands each chunk's new
//! records to [`Hub::publish`], which compresses them with the hub's single compressor and
//! ends them with a *full flush*: the output is byte-aligned and the compressor forgets its
//! history, so the next segment never refers back to earlier data. A client can therefore
//! start decoding at any segment boundary: it gets a 10-byte gzip header, then the very same
//! deflate `Bytes` as every other client, and at a clean end a final empty block and a
//! trailer with the CRC-32 and length of exactly what it received (derived from the hub's
//! running CRC, so no per-client hashing). That is one ordinary single-member gzip stream,
//! which every decoder reads (curl and Chromium read only the first member of a
//! multi-member gzip body, so concatenated members would not do).
//!
//! The last segments are kept for replay: a joining client gets whole kept segments as they
//! are; only the part of the oldest one that falls inside the replay window is compressed
//! again (standalone, also ending in a full flush), for that client.
//!
//! Live segments go through a `tokio::sync::broadcast` channel of bounded capacity: a client
//! that falls more than that many segments behind (its socket does not drain) is cut, and
//! the upstream and the other clients never wait for it. A client whose socket is full is not
//! polled at all, so it would never see its own lag: [`Hub::cut_laggards`], run by a
//! watchdog, compares every client's position with the newest segment and cuts it from
//! outside (through its connection's [`Notify`]).

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress};
use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::{broadcast, Notify};

use crate::metrics::StreamMetrics;

/// The gzip member header every shared-stream client gets first (deflate, no name, mtime 0,
/// OS unknown).
pub const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// The records of one upstream chunk, ready for every client.
pub struct Segment {
    /// The records, each followed by CRLF.
    pub raw: Bytes,
    /// The same bytes as raw deflate blocks ending in a full flush (joinable boundary).
    pub deflate: Bytes,
    /// End offset in `raw` of each record (after its CRLF).
    pub ends: Vec<u32>,
    /// CRC-32 and length of the whole stream before this segment.
    pub before: (u32, u64),
    /// CRC-32 and length of the whole stream after this segment.
    pub after: (u32, u64),
    /// 1 for the first segment published, then 2, 3, …
    pub seq: u64,
}

/// One downstream client as the lag watchdog sees it.
pub struct ClientWatch {
    /// `seq` of the last live segment handed to the client (the hub's seq when it joined,
    /// before that).
    pub received: AtomicU64,
    /// Set once the client was cut (by the watchdog or by its own lag): counted once.
    pub cut: AtomicBool,
    /// Wakes the client's connection task, which then drops the connection.
    pub notify: Arc<Notify>,
}

impl ClientWatch {
    /// Marks the client cut; true the first time only (so it is counted once).
    pub fn mark_cut(&self) -> bool {
        !self.cut.swap(true, Relaxed)
    }
}

/// Compresses `raw` with `c` and ends with a full flush; appends to `out`.
fn deflate_full_flush(c: &mut Compress, raw: &[u8], out: &mut Vec<u8>) {
    let start_in = c.total_in();
    out.reserve(raw.len() / 2 + 64);
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(4096));
        }
        let consumed = (c.total_in() - start_in) as usize;
        c.compress_vec(&raw[consumed..], out, FlushCompress::Full)
            .expect("deflate of in-memory data cannot fail");
        // As with zlib: the flush is complete once all input is in and output space is left.
        if (c.total_in() - start_in) as usize == raw.len() && out.len() < out.capacity() {
            return;
        }
    }
}

/// `crc` advanced over `len` zero-free positions: the CRC-32 "shift" used to combine.
fn crc_shift(crc: u32, len: u64) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial_len(crc, 0);
    h.combine(&crc32fast::Hasher::new_with_initial_len(0, len));
    h.finalize()
}

/// The CRC-32 of the part of a stream between two points, from the running CRCs at both.
pub fn crc_between(start: (u32, u64), end: (u32, u64)) -> u32 {
    end.0 ^ crc_shift(start.0, end.1 - start.1)
}

/// The end of a shared-stream client's gzip: a final empty stored block, then CRC-32 and
/// length (mod 2^32) of what it received between `start` and `end`.
pub fn gzip_trailer(start: (u32, u64), end: (u32, u64)) -> Bytes {
    let mut t = vec![0x01, 0x00, 0x00, 0xff, 0xff];
    t.extend_from_slice(&crc_between(start, end).to_le_bytes());
    t.extend_from_slice(&((end.1 - start.1) as u32).to_le_bytes());
    Bytes::from(t)
}

/// One upstream stream's fan-out point.
pub struct Hub {
    level: u32,
    replay: usize,
    metrics: Arc<StreamMetrics>,
    queue: u64,
    compressor: Mutex<Compress>,
    inner: Mutex<Inner>,
    clients: Mutex<Vec<Weak<ClientWatch>>>,
}

struct Inner {
    ring: VecDeque<Arc<Segment>>,
    ring_records: usize,
    /// Running CRC-32 and length of the whole stream.
    position: (u32, u64),
    /// Segments published so far.
    seq: u64,
    tx: Option<broadcast::Sender<Arc<Segment>>>,
}

/// What a joining client gets: the replay, then the live receiver.
pub struct Join {
    /// Replay segments, oldest first; the first may be a re-compressed tail (see `Hub::join`).
    pub replay: Vec<Arc<Segment>>,
    /// Live segments from the moment of joining on (no gap, no overlap with `replay`).
    pub live: broadcast::Receiver<Arc<Segment>>,
    /// Records in `replay`.
    pub replayed: usize,
    /// The stream position (running CRC-32, length) where this client's data starts.
    pub start: (u32, u64),
    /// Segments published before `live` starts.
    pub seq: u64,
}

impl Hub {
    /// A hub keeping `replay` records for new clients and letting each client fall at most
    /// `queue` segments behind; gzip at `level`.
    pub fn new(replay: usize, queue: usize, level: u32, metrics: Arc<StreamMetrics>) -> Hub {
        let (tx, _) = broadcast::channel(queue.max(1));
        Hub {
            level,
            replay,
            metrics,
            queue: queue.max(1) as u64,
            compressor: Mutex::new(Compress::new(Compression::new(level), false)),
            inner: Mutex::new(Inner {
                ring: VecDeque::new(),
                ring_records: 0,
                position: (0, 0),
                seq: 0,
                tx: Some(tx),
            }),
            clients: Mutex::new(Vec::new()),
        }
    }

    /// Publishes one chunk's records (`raw`, each record ending at `ends[i]`). Compresses
    /// once for all clients; only the upstream driver calls it.
    pub fn publish(&self, raw: Vec<u8>, ends: Vec<u32>) {
        if ends.is_empty() {
            return;
        }
        let mut deflate = Vec::new();
        deflate_full_flush(
            &mut self.compressor.lock().expect("hub lock"),
            &raw,
            &mut deflate,
        );
        self.metrics.segments.fetch_add(1, Relaxed);
        let mut inner = self.inner.lock().expect("hub lock");
        let before = inner.position;
        let mut h = crc32fast::Hasher::new_with_initial_len(before.0, before.1);
        h.update(&raw);
        let after = (h.finalize(), before.1 + raw.len() as u64);
        inner.position = after;
        inner.seq += 1;
        let seg = Arc::new(Segment {
            raw: Bytes::from(raw),
            deflate: Bytes::from(deflate),
            ends,
            before,
            after,
            seq: inner.seq,
        });
        if self.replay > 0 {
            inner.ring_records += seg.ends.len();
            inner.ring.push_back(seg.clone());
            // Drop the oldest segments while the rest still cover the replay window.
            while let Some(front) = inner.ring.front() {
                let n = front.ends.len();
                if inner.ring_records - n >= self.replay {
                    inner.ring_records -= n;
                    inner.ring.pop_front();
                } else {
                    break;
                }
            }
        }
        if let Some(tx) = &inner.tx {
            // An error only means that no client is connected right now.
            let _ = tx.send(seg);
        }
    }

    /// A new client: the last `replay` records (at most) and a live receiver, taken under one
    /// lock so that nothing is lost or repeated between them. None once the hub is closed.
    pub fn join(&self) -> Option<Join> {
        let (segs, total, live, position, seq) = {
            let inner = self.inner.lock().expect("hub lock");
            let live = inner.tx.as_ref()?.subscribe();
            let segs: Vec<Arc<Segment>> = inner.ring.iter().cloned().collect();
            (segs, inner.ring_records, live, inner.position, inner.seq)
        };
        let mut skip = total.saturating_sub(self.replay);
        let mut replay = Vec::with_capacity(segs.len());
        for seg in segs {
            let n = seg.ends.len();
            if skip >= n {
                skip -= n;
                continue;
            }
            if skip > 0 {
                let from = seg.ends[skip - 1] as usize;
                let raw = seg.raw.slice(from..);
                let ends = seg.ends[skip..].iter().map(|e| e - from as u32).collect();
                let mut deflate = Vec::new();
                let mut c = Compress::new(Compression::new(self.level), false);
                deflate_full_flush(&mut c, &raw, &mut deflate);
                let mut h = crc32fast::Hasher::new_with_initial_len(seg.before.0, seg.before.1);
                h.update(&seg.raw[..from]);
                let before = (h.finalize(), seg.before.1 + from as u64);
                replay.push(Arc::new(Segment {
                    raw,
                    deflate: Bytes::from(deflate),
                    ends,
                    before,
                    after: seg.after,
                    seq: seg.seq,
                }));
                skip = 0;
            } else {
                replay.push(seg);
            }
        }
        let replayed = replay.iter().map(|s| s.ends.len()).sum();
        let start = replay.first().map_or(position, |s| s.before);
        Some(Join {
            replay,
            live,
            replayed,
            start,
            seq,
        })
    }

    /// Registers a joined client with the lag watchdog; `notify` ends its connection.
    pub fn watch(&self, join: &Join, notify: Arc<Notify>) -> Arc<ClientWatch> {
        let w = Arc::new(ClientWatch {
            received: AtomicU64::new(join.seq),
            cut: AtomicBool::new(false),
            notify,
        });
        let mut clients = self.clients.lock().expect("hub lock");
        clients.retain(|c| c.strong_count() > 0);
        clients.push(Arc::downgrade(&w));
        w
    }

    /// Cuts every client more than the queue length behind the newest segment (a client
    /// whose socket is full is never polled, so it cannot notice by itself). Returns how
    /// many were cut now.
    pub fn cut_laggards(&self) -> usize {
        let newest = self.inner.lock().expect("hub lock").seq;
        let mut cut = 0;
        let mut clients = self.clients.lock().expect("hub lock");
        clients.retain(|c| {
            let Some(c) = c.upgrade() else {
                return false;
            };
            if newest.saturating_sub(c.received.load(Relaxed)) > self.queue && c.mark_cut() {
                self.metrics.clients_cut.fetch_add(1, Relaxed);
                c.notify.notify_one();
                cut += 1;
                return false;
            }
            true
        });
        cut
    }

    /// Ends every client's stream cleanly (after what it already has queued); later joins
    /// get None.
    pub fn close(&self) {
        self.inner.lock().expect("hub lock").tx = None;
    }

    /// Records currently kept for replay.
    pub fn replay_len(&self) -> usize {
        let inner = self.inner.lock().expect("hub lock");
        inner.ring_records.min(self.replay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::sync::Arc;

    fn rec(i: u32) -> String {
        format!("{{\"hitIdHigh\":{i},\"hitIdLow\":1}}\r\n")
    }

    fn publish(hub: &Hub, from: u32, to: u32) {
        let mut raw = Vec::new();
        let mut ends = Vec::new();
        for i in from..to {
            raw.extend_from_slice(rec(i).as_bytes());
            ends.push(raw.len() as u32);
        }
        hub.publish(raw, ends);
    }

    /// A whole client body: header, deflate pieces, trailer; decoded by a strict
    /// single-member decoder (which checks CRC-32 and length).
    fn gunzip(start: (u32, u64), segs: &[Arc<Segment>]) -> String {
        let mut all = GZIP_HEADER.to_vec();
        for s in segs {
            all.extend_from_slice(&s.deflate);
        }
        let end = segs.last().map_or(start, |s| s.after);
        all.extend_from_slice(&gzip_trailer(start, end));
        let mut out = String::new();
        flate2::read::GzDecoder::new(&all[..])
            .read_to_string(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn replay_is_exactly_the_last_n_records_and_live_follows() {
        let hub = Hub::new(5, 16, 4, Arc::default());
        publish(&hub, 0, 3);
        publish(&hub, 3, 6);
        publish(&hub, 6, 9);
        assert_eq!(hub.replay_len(), 5);
        let mut j = hub.join().unwrap();
        assert_eq!(j.replayed, 5);
        let mut segs = j.replay.clone();
        let raw: Vec<u8> = j.replay.iter().flat_map(|s| s.raw.to_vec()).collect();
        let want: String = (4..9).map(rec).collect();
        assert_eq!(gunzip(j.start, &segs), want);
        assert_eq!(String::from_utf8(raw).unwrap(), want);
        publish(&hub, 9, 10);
        segs.push(j.live.try_recv().unwrap());
        assert_eq!(gunzip(j.start, &segs), (4..10).map(rec).collect::<String>());
        // A client joining later starts at a segment boundary of the same shared stream.
        let mut k = Hub::join(&hub).unwrap();
        publish(&hub, 10, 12);
        let live = vec![k.live.try_recv().unwrap()];
        assert!(
            Arc::ptr_eq(&live[0], &j.live.try_recv().unwrap()),
            "shared, not copied"
        );
        let got = gunzip(k.start, &[k.replay.clone(), live].concat());
        assert_eq!(got, (5..12).map(rec).collect::<String>());
        // No data at all is a valid empty gzip stream too.
        let empty = Hub::new(0, 4, 4, Arc::default()).join().unwrap();
        assert_eq!(gunzip(empty.start, &[]), "");
    }

    #[test]
    fn the_watchdog_cuts_a_client_that_is_not_polled_once() {
        let metrics = Arc::new(StreamMetrics::default());
        let hub = Hub::new(0, 2, 1, metrics.clone());
        let (a, b) = (hub.join().unwrap(), hub.join().unwrap());
        let (na, nb) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let (wa, wb) = (hub.watch(&a, na), hub.watch(&b, nb));
        for i in 0..3 {
            publish(&hub, i, i + 1);
            // b keeps up, a never reads.
            wb.received.store(u64::from(i) + 1, Relaxed);
        }
        assert_eq!(hub.cut_laggards(), 1);
        assert!(wa.cut.load(Relaxed) && !wb.cut.load(Relaxed));
        assert_eq!(hub.cut_laggards(), 0, "counted once");
        assert!(!wa.mark_cut());
        assert_eq!(metrics.clients_cut.load(Relaxed), 1);
    }

    #[test]
    fn a_receiver_that_falls_behind_lags_and_close_ends_it() {
        let hub = Hub::new(0, 2, 1, Arc::default());
        let mut j = hub.join().unwrap();
        assert_eq!(j.replayed, 0);
        for i in 0..3 {
            publish(&hub, i, i + 1);
        }
        assert!(matches!(
            j.live.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(1))
        ));
        hub.close();
        assert!(hub.join().is_none());
        while j.live.try_recv().is_ok() {}
        assert!(matches!(
            j.live.try_recv(),
            Err(broadcast::error::TryRecvError::Closed)
        ));
    }
}
