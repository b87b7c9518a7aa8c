//! Benchmark-only entry points (cargo feature `bench`, off by default: the shipped package
//! never contains them). They run parts of the core from JavaScript without handing any hit
//! to JavaScript, so `npm run bench` can show what framing and the whole core chain cost
//! on their own, next to the full `onHits`/`onBatch` pipelines.

use wasm_bindgen::prelude::*;

use crate::core::framer::{FrameSink, Framer};
use crate::core::record::RecordScanner;
use crate::core::{AttemptId, Client, Config, Instant, Options, Output, ResponseHead};
use crate::crossing::Batch;

/// Counts what the framer finds.
#[derive(Default)]
struct Count {
    records: u32,
}

impl FrameSink for Count {
    fn record(&mut self, _record: &[u8]) {
        self.records += 1;
    }
    fn oversized(&mut self, _bytes: u64) {}
    fn gzip_error(&mut self, _message: &str) {}
}

/// Framing alone: bytes in, records counted.
#[doc(hidden)]
#[wasm_bindgen(skip_typescript)]
pub struct BenchFramer {
    framer: Framer,
}

#[wasm_bindgen]
impl BenchFramer {
    /// A framer with the default record size cap.
    #[wasm_bindgen(constructor)]
    pub fn new() -> BenchFramer {
        let max = Config::new(Options {
            url: Some("https://localhost/bench".into()),
            ..Options::default()
        })
        .map(|c| c.max_record_bytes)
        .unwrap_or(1 << 20);
        BenchFramer {
            framer: Framer::new(max),
        }
    }

    /// Frames one chunk; returns how many records it completed.
    pub fn push(&mut self, chunk: &[u8]) -> u32 {
        let mut count = Count::default();
        self.framer.push(chunk, &mut count);
        count.records
    }
}

impl Default for BenchFramer {
    fn default() -> Self {
        Self::new()
    }
}

/// Framing plus the scan of each record ([`RecordScanner`]: validation, ids read), nothing
/// else: what the record scanner costs next to framing alone and the whole chain.
#[doc(hidden)]
#[wasm_bindgen(skip_typescript)]
pub struct BenchScan {
    framer: Framer,
    scanner: RecordScanner,
}

struct ScanCount<'a> {
    records: u32,
    scanner: &'a mut RecordScanner,
}

impl FrameSink for ScanCount<'_> {
    fn record(&mut self, record: &[u8]) {
        if self.scanner.scan(record).is_ok() {
            self.records += 1;
        }
    }
    fn oversized(&mut self, _bytes: u64) {}
    fn gzip_error(&mut self, _message: &str) {}
}

#[wasm_bindgen]
impl BenchScan {
    /// A framer with the default record size cap.
    #[wasm_bindgen(constructor)]
    pub fn new() -> BenchScan {
        BenchScan {
            framer: BenchFramer::new().framer,
            scanner: RecordScanner::default(),
        }
    }

    /// Frames and scans one chunk; returns how many valid records it completed.
    pub fn push(&mut self, chunk: &[u8]) -> u32 {
        let mut count = ScanCount {
            records: 0,
            scanner: &mut self.scanner,
        };
        self.framer.push(chunk, &mut count);
        count.records
    }
}

impl Default for BenchScan {
    fn default() -> Self {
        Self::new()
    }
}

/// The whole core chain (framing, validation and id rewriting, de-duplication, the batch
/// for JavaScript) through a real [`Client`] with default options, with nothing handed to
/// JavaScript: each batch is recycled at once.
#[doc(hidden)]
#[wasm_bindgen(skip_typescript)]
pub struct BenchScanner {
    client: Client,
    attempt: AttemptId,
    batch: Batch,
}

#[wasm_bindgen]
impl BenchScanner {
    /// A client already "connected" (a 200 handled), ready for body chunks.
    #[wasm_bindgen(constructor)]
    pub fn new() -> BenchScanner {
        let config = Config::new(Options {
            url: Some("https://localhost/bench".into()),
            ..Options::default()
        })
        .expect("default options are valid");
        let mut client = Client::new(config, 1);
        client.start(Instant::ZERO);
        let mut attempt = AttemptId::from_raw(0);
        loop {
            match client.poll_output() {
                Output::Connect(req) => attempt = req.attempt,
                Output::Wait(_) => break,
                _ => {}
            }
        }
        let head = ResponseHead {
            status: 200,
            ..ResponseHead::default()
        };
        client.handle_response(attempt, head, Instant::ZERO);
        while !matches!(client.poll_output(), Output::Wait(_)) {}
        BenchScanner {
            client,
            attempt,
            batch: Batch::default(),
        }
    }

    /// Feeds one chunk of the body (framing, scan, dedup, the crossing layout); returns how
    /// many new hits it completed.
    pub fn push(&mut self, chunk: &[u8]) -> u32 {
        self.batch.clear();
        self.client
            .handle_data(self.attempt, chunk, Instant::ZERO, &mut self.batch);
        self.batch.finish();
        while !matches!(self.client.poll_output(), Output::Wait(_)) {}
        self.batch.len() as u32
    }
}

impl Default for BenchScanner {
    fn default() -> Self {
        Self::new()
    }
}
