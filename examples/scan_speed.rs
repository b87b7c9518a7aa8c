//! Throughput of the core's hot path on generated Live Stream records (~1.2 KB each,
//! CRLF, 0.5 % empty records, ~90 % of ids above 2^53, 10 % with non-Latin-1 text).
//!
//! Run natively: `cargo run --release --example scan_speed [records]`.
//! Prints MB/s for framing alone, the record scan alone (`scan_record`, and a stream's
//! `RecordScanner`, which predicts the names from the record before), the scan plus
//! the id quoting the web shell does (`write_with_quoted_ids`), framing + scan + quoting +
//! dedup together, and the same from a gzip body inflated in the core.

use livestream_wasm::core::dedup::Dedup;
use livestream_wasm::core::framer::{FrameSink, Framer};
use livestream_wasm::core::record::{scan_record, write_with_quoted_ids, RecordScanner};
use std::time::Instant;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn record(rng: &mut Rng, i: usize) -> String {
    let id = |rng: &mut Rng| {
        if rng.below(10) == 0 {
            rng.below(1 << 53)
        } else {
            rng.next() | (1 << 60)
        }
    };
    let city = if rng.below(10) == 0 {
        "Zürich — 東京 “Ωmega”"
    } else {
        "paris"
    };
    let t = 1_372_782_179 + rng.below(600);
    let mut r = format!(
        concat!(
            r#"{{"reportSuite":"examplecomprod","hitIdHigh":{},"hitIdLow":{},"visIdHigh":{},"visIdLow":{},"#,
            r#""mcVisIdHigh":{},"mcVisIdLow":{},"timeGMT":{},"receivedTimeGMT":{},"pageName":"Page #{}","#,
            r#""pageURL":"http://example.com/section/page{}.html?utm_source=news&utm_medium=email","#,
            r#""referrer":"http://example.com/page{}.html","geoCountry":"fra","geoCity":"{}","geoRegion":"idf","#,
            r#""browser":"Google Chrome 32.0","browserHeight":870,"browserWidth":1440,"operatingSystem":"Macintosh","#,
            r#""ip":"91.71.{}.{}","language":"fr-FR","connectionType":"LAN/Wifi","javaEnabled":false,"#,
            r#""evars":{{"evars":{{"campaign":"DFA:172612:21725632:182361","eVar1":"Summer Shoe Promo","eVar5":"logged in","eVar12":"\"shoes\""}}}},"#,
            r#""props":{{"prop1":"Search Results","prop2":"fr","prop7":"mobile|web"}},"#,
            r#""events":{{"event1":[{{"count":1,"exponent":0,"unique":""}}],"event12":[{{"count":3,"exponent":-2,"unique":"abc"}}]}},"#,
            r#""products":[{{"category":"Clothing","name":"Mens Black Running Shoes","revenue":1799,"units":15,"evars":{{}},"events":{{}}}},"#,
            r#"{{"category":"Clothing","name":"Socks","revenue":299,"units":2,"evars":{{"eVar3":"x"}},"events":{{}}}}],"#,
            r#""bot":"<Not a bot>","truncated":false,"visIdType":3,"hitSource":1,"pageEventType":0"#
        ),
        id(rng),
        id(rng),
        id(rng),
        id(rng),
        id(rng),
        id(rng),
        t,
        t + rng.below(5),
        i,
        i,
        rng.below(1000),
        city,
        rng.below(256),
        rng.below(256),
    );
    if rng.below(50) == 0 {
        r.push_str(r#","newField":{"a":[1,2,3],"b":null}"#);
    }
    r.push('}');
    r
}

struct Sink<'a> {
    out: Vec<u8>,
    records: usize,
    malformed: usize,
    dups: usize,
    dedup: Option<&'a mut Dedup>,
    scan: bool,
    scanner: RecordScanner,
}
impl FrameSink for Sink<'_> {
    fn record(&mut self, record: &[u8]) {
        self.records += 1;
        if !self.scan {
            return;
        }
        match self.scanner.scan(record) {
            Ok(s) => {
                if let (Some(d), Some(k)) = (self.dedup.as_deref_mut(), s.info.hit_key) {
                    if !d.insert(k) {
                        self.dups += 1;
                        return;
                    }
                }
                write_with_quoted_ids(s.text, &s.info, &mut self.out);
            }
            Err(_) => self.malformed += 1,
        }
        if self.out.len() > 1 << 20 {
            self.out.clear();
        }
    }
    fn oversized(&mut self, _: u64) {}
    fn gzip_error(&mut self, m: &str) {
        panic!("{m}")
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut crc = !0u32;
    let mut table = [0u32; 256];
    for (i, t) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *t = c;
    }
    for &b in data {
        crc = (crc >> 8) ^ table[((crc ^ b as u32) & 0xff) as usize];
    }
    let mut v = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    v.extend(miniz_oxide::deflate::compress_to_vec(data, 6));
    v.extend((!crc).to_le_bytes());
    v.extend((data.len() as u32).to_le_bytes());
    v
}

fn best_of<F: FnMut()>(runs: usize, mut f: F) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..runs {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let records: Vec<String> = (0..n).map(|i| record(&mut rng, i)).collect();
    let mut body = Vec::new();
    for (i, r) in records.iter().enumerate() {
        body.extend_from_slice(r.as_bytes());
        body.extend_from_slice(b"\r\n");
        if i % 200 == 0 {
            body.extend_from_slice(b"\r\n");
        }
    }
    if let Ok(path) = std::env::var("SCAN_SPEED_DUMP") {
        // The body for other harnesses (e.g. the same core compiled to wasm, run in Node).
        std::fs::write(path, &body).unwrap();
    }
    let mb = body.len() as f64 / 1e6;
    println!(
        "{n} records, {:.0} B average, {:.1} MB body",
        body.len() as f64 / n as f64,
        mb
    );

    // Scan alone (what a native relay does).
    let mut repaired = Vec::new();
    let t = best_of(5, || {
        for r in &records {
            let s = scan_record(r.as_bytes(), &mut repaired).unwrap();
            std::hint::black_box(s);
        }
    });
    println!(
        "record scan (scan_record):    {:7.0} MB/s  {:5.2} M records/s",
        mb / t,
        n as f64 / t / 1e6
    );

    // The same records as a stream's scanner sees them (names predicted from the last).
    let t = best_of(5, || {
        let mut scanner = RecordScanner::default();
        for r in &records {
            let s = scanner.scan(r.as_bytes()).unwrap();
            std::hint::black_box(s);
        }
    });
    println!(
        "record scan (RecordScanner):  {:7.0} MB/s  {:5.2} M records/s",
        mb / t,
        n as f64 / t / 1e6
    );

    // Scan + quoting of the ids (what the web shell does).
    let mut out = Vec::with_capacity(1 << 21);
    let t = best_of(5, || {
        for r in &records {
            out.clear();
            let s = scan_record(r.as_bytes(), &mut repaired).unwrap();
            write_with_quoted_ids(s.text, &s.info, &mut out);
            std::hint::black_box(&out);
        }
    });
    println!(
        "scan + quote ids:             {:7.0} MB/s  {:5.2} M records/s",
        mb / t,
        n as f64 / t / 1e6
    );

    if std::env::args().nth(2).as_deref() == Some("scan") {
        return;
    }

    // Framing alone, 64 KiB chunks.
    let chunk = 64 * 1024;
    let mut framer = Framer::new(1 << 20);
    let t = best_of(5, || {
        let mut s = Sink {
            out: Vec::new(),
            records: 0,
            malformed: 0,
            dups: 0,
            dedup: None,
            scan: false,
            scanner: RecordScanner::default(),
        };
        for c in body.chunks(chunk) {
            framer.push(c, &mut s);
        }
        assert_eq!(framer.finish(), 0);
        assert_eq!(s.records, n);
    });
    println!("framing alone (64 KiB chunks): {:7.0} MB/s", mb / t);

    // Framing + scan + dedup.
    let t = best_of(5, || {
        let mut d = Dedup::new(100_000, 0x5eed);
        let mut s = Sink {
            out: Vec::with_capacity(1 << 21),
            records: 0,
            malformed: 0,
            dups: 0,
            dedup: Some(&mut d),
            scan: true,
            scanner: RecordScanner::default(),
        };
        for c in body.chunks(chunk) {
            framer.push(c, &mut s);
        }
        framer.finish();
        assert_eq!((s.records, s.malformed, s.dups), (n, 0, 0));
    });
    println!("framing + scan + dedup:        {:7.0} MB/s", mb / t);

    // Same from gzip.
    let gz = gzip(&body);
    let t = best_of(3, || {
        let mut d = Dedup::new(100_000, 0x5eed);
        let mut s = Sink {
            out: Vec::with_capacity(1 << 21),
            records: 0,
            malformed: 0,
            dups: 0,
            dedup: Some(&mut d),
            scan: true,
            scanner: RecordScanner::default(),
        };
        for c in gz.chunks(chunk) {
            framer.push(c, &mut s);
        }
        framer.finish();
        assert_eq!(s.records, n);
    });
    println!(
        "gzip ({:.1}x) + framing + scan + dedup: {:5.0} MB/s of decoded records",
        body.len() as f64 / gz.len() as f64,
        mb / t
    );

    // Dedup alone.
    let keys: Vec<_> = (0..n)
        .map(|_| livestream_wasm::core::record::HitKey {
            high: rng.next(),
            low: rng.next(),
        })
        .collect();
    let t = best_of(5, || {
        let mut d = Dedup::new(n / 4, 0x5eed);
        for k in &keys {
            std::hint::black_box(d.insert(*k));
        }
    });
    println!(
        "dedup insert (window {}): {:.1} M keys/s",
        n / 4,
        n as f64 / t / 1e6
    );

    // Flooding (issue 13): ids crafted to share one hash under the old unkeyed hash
    // (`high * C ^ low` constant) against random ids, window 100 000 (the default).
    let crafted: Vec<_> = (1..=n as u64)
        .map(|i| livestream_wasm::core::record::HitKey {
            high: i,
            low: i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xdead_beef,
        })
        .collect();
    for (name, keys) in [("random", &keys), ("crafted", &crafted)] {
        let mut d = Dedup::new(100_000, 0x5eed);
        let t = Instant::now();
        for k in keys.iter() {
            std::hint::black_box(d.insert(*k));
        }
        let t = t.elapsed().as_secs_f64();
        let (longest, total) = d.probe_stats();
        println!(
            "dedup flood, {n} {name:7} ids: {:8.2} ms, probe distance longest {longest}, average {:.2}",
            t * 1e3,
            total as f64 / d.len() as f64
        );
    }
}
