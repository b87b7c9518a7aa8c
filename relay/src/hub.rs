//! Fan-out of one upstream stream to every downstream client, compressing once.
//!
//! The upstream driver hands each chunk's new records to [`Hub::publish`], which makes one
//! [`Segment`]: the records as sent downstream (CRLF-terminated JSON, ids bare) and the same
//! bytes as one complete gzip member. Concatenated gzip members are one valid gzip stream
//! (RFC 1952 §2.2; zlib, curl, browsers and the core's framer all read them), so every
//! gzip client receives the very same `Bytes` and gzip work does not grow with the number of
//! clients. The last segments are kept for replay: a joining client gets whole kept segments
//! as they are, and only the part of the oldest one that falls inside the replay window is
//! compressed again, for that client.
//!
//! Live segments go through a `tokio::sync::broadcast` channel of bounded capacity: a client
//! that falls more than that many segments behind (its socket does not drain) is cut, and
//! the upstream and the other clients never wait for it.

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

use crate::metrics::StreamMetrics;

/// The records of one upstream chunk, ready for every client.
pub struct Segment {
    /// The records, each followed by CRLF.
    pub raw: Bytes,
    /// The same bytes as one complete gzip member.
    pub gz: Bytes,
    /// End offset in `raw` of each record (after its CRLF).
    pub ends: Vec<u32>,
}

/// Compresses `raw` into one complete gzip member.
pub fn gzip_member(raw: &[u8], level: u32) -> Bytes {
    let mut enc = GzEncoder::new(
        Vec::with_capacity(raw.len() / 3 + 64),
        Compression::new(level),
    );
    enc.write_all(raw).expect("writing to a Vec cannot fail");
    Bytes::from(enc.finish().expect("writing to a Vec cannot fail"))
}

/// One upstream stream's fan-out point.
pub struct Hub {
    level: u32,
    replay: usize,
    metrics: Arc<StreamMetrics>,
    inner: Mutex<Inner>,
}

struct Inner {
    ring: VecDeque<Arc<Segment>>,
    ring_records: usize,
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
}

impl Hub {
    /// A hub keeping `replay` records for new clients and letting each client fall at most
    /// `queue` segments behind.
    pub fn new(replay: usize, queue: usize, level: u32, metrics: Arc<StreamMetrics>) -> Hub {
        let (tx, _) = broadcast::channel(queue.max(1));
        Hub {
            level,
            replay,
            metrics,
            inner: Mutex::new(Inner {
                ring: VecDeque::new(),
                ring_records: 0,
                tx: Some(tx),
            }),
        }
    }

    /// Publishes one chunk's records (`raw`, each record ending at `ends[i]`). Compresses
    /// once, outside the lock.
    pub fn publish(&self, raw: Vec<u8>, ends: Vec<u32>) {
        if ends.is_empty() {
            return;
        }
        let gz = gzip_member(&raw, self.level);
        let seg = Arc::new(Segment {
            raw: Bytes::from(raw),
            gz,
            ends,
        });
        self.metrics.segments.fetch_add(1, Relaxed);
        let mut inner = self.inner.lock().expect("hub lock");
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
        let (segs, total, live) = {
            let inner = self.inner.lock().expect("hub lock");
            let live = inner.tx.as_ref()?.subscribe();
            let segs: Vec<Arc<Segment>> = inner.ring.iter().cloned().collect();
            (segs, inner.ring_records, live)
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
                replay.push(Arc::new(Segment {
                    gz: gzip_member(&raw, self.level),
                    raw,
                    ends,
                }));
                skip = 0;
            } else {
                replay.push(seg);
            }
        }
        let replayed = replay.iter().map(|s| s.ends.len()).sum();
        Some(Join {
            replay,
            live,
            replayed,
        })
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

    fn gunzip(parts: &[Bytes]) -> String {
        let all: Vec<u8> = parts.iter().flat_map(|b| b.iter().copied()).collect();
        let mut out = String::new();
        flate2::read::MultiGzDecoder::new(&all[..])
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
        let mut gz: Vec<Bytes> = j.replay.iter().map(|s| s.gz.clone()).collect();
        let raw: Vec<u8> = j.replay.iter().flat_map(|s| s.raw.to_vec()).collect();
        let want: String = (4..9).map(rec).collect();
        assert_eq!(gunzip(&gz), want);
        assert_eq!(String::from_utf8(raw).unwrap(), want);
        publish(&hub, 9, 10);
        gz.push(j.live.try_recv().unwrap().gz.clone());
        assert_eq!(gunzip(&gz), (4..10).map(rec).collect::<String>());
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
