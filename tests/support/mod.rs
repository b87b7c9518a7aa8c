//! A virtual-time driver for the sans-IO client, shared by the client tests.

#![allow(dead_code)]

use livestream_wasm::core::{
    Action, Client, Config, ConnectRequest, Event, Options, ResponseHead, SlotState, StatusEvent,
};

/// Plays the shell: keeps the clock, records every action and event.
pub struct Harness {
    pub client: Client,
    pub now: u64,
    pub connects: Vec<(u64, ConnectRequest)>,
    pub aborts: Vec<(u64, u64)>,
    pub events: Vec<Event>,
    /// For each event: (drain number, time) — the order in which the shell would see it.
    pub event_marks: Vec<(u64, u64)>,
    /// For each connect: the drain number.
    pub connect_marks: Vec<u64>,
    drains: u64,
}

pub const URL: &str = "https://livestream.example/api/1/stream/ep";

pub fn options() -> Options {
    Options {
        url: Some(URL.to_string()),
        ..Options::default()
    }
}

impl Harness {
    pub fn new(o: Options) -> Self {
        Self::with_seed(o, 7)
    }

    pub fn with_seed(o: Options, seed: u64) -> Self {
        let config = Config::new(o).expect("valid options");
        Harness {
            client: Client::new(config, seed),
            now: 0,
            connects: Vec::new(),
            aborts: Vec::new(),
            events: Vec::new(),
            event_marks: Vec::new(),
            connect_marks: Vec::new(),
            drains: 0,
        }
    }

    /// Collects what the client produced since the last call.
    pub fn drain(&mut self) {
        self.drains += 1;
        while let Some(a) = self.client.poll_action() {
            match a {
                Action::Connect(c) => {
                    self.connects.push((self.now, c));
                    self.connect_marks.push(self.drains);
                }
                Action::Abort { id, .. } => self.aborts.push((self.now, id)),
            }
        }
        while let Some(e) = self.client.poll_event() {
            self.events.push(e);
            self.event_marks.push((self.drains, self.now));
        }
    }

    pub fn start(&mut self) {
        assert!(self.client.start(self.now));
        self.drain();
    }

    /// Moves the clock forward, firing timers on the way as a shell would.
    pub fn advance(&mut self, ms: u64) {
        let end = self.now + ms;
        while let Some(t) = self.client.poll_timeout() {
            if t > end {
                break;
            }
            self.now = self.now.max(t);
            self.client.handle_timeout(self.now);
            self.drain();
        }
        self.now = end;
        self.client.handle_timeout(self.now);
        self.drain();
    }

    /// Advances to the next timer and fires it.
    pub fn fire_next_timer(&mut self) {
        let t = self.client.poll_timeout().expect("a timer is set");
        self.now = self.now.max(t);
        self.client.handle_timeout(self.now);
        self.drain();
    }

    pub fn last_connect(&self) -> &ConnectRequest {
        &self.connects.last().expect("a connect").1
    }

    /// The latest attempt id of `slot`.
    pub fn attempt(&self, slot: usize) -> u64 {
        self.connects
            .iter()
            .rev()
            .find(|(_, c)| c.slot == slot)
            .expect("slot connected")
            .1
            .id
    }

    pub fn respond(&mut self, slot: usize, status: u16) {
        self.respond_with(
            slot,
            ResponseHead {
                status,
                ..ResponseHead::default()
            },
        );
    }

    pub fn respond_with(&mut self, slot: usize, head: ResponseHead) {
        let id = self.attempt(slot);
        self.client.handle_response(id, head, self.now);
        self.drain();
    }

    pub fn data(&mut self, slot: usize, bytes: &[u8]) {
        let id = self.attempt(slot);
        self.client.handle_data(id, bytes, self.now);
        self.drain();
    }

    pub fn end(&mut self, slot: usize) {
        let id = self.attempt(slot);
        self.client.handle_end(id, self.now);
        self.drain();
    }

    pub fn fail(&mut self, slot: usize, msg: &str) {
        let id = self.attempt(slot);
        self.client.handle_failure(id, msg, self.now);
        self.drain();
    }

    pub fn statuses(&self) -> Vec<&StatusEvent> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Status(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    pub fn last_status(&self, slot: usize) -> &StatusEvent {
        self.statuses()
            .into_iter()
            .rev()
            .find(|s| s.slot == slot)
            .expect("a status for the slot")
    }

    pub fn state(&self, slot: usize) -> SlotState {
        self.client.stats().slots[slot].state
    }

    /// All hits delivered so far, as record texts.
    pub fn hits(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Hits(b) => Some(
                    (0..b.len())
                        .map(|i| b.record(i).to_string())
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            })
            .flatten()
            .collect()
    }

    pub fn errors(&self) -> Vec<&livestream_wasm::core::ErrorEvent> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Error(x) => Some(x),
                _ => None,
            })
            .collect()
    }
}

/// A realistic record line with the given ids (no terminator).
pub fn record(high: u64, low: u64) -> String {
    format!(
        r#"{{"reportSuite":"examplecomprod","hitIdHigh":{high},"hitIdLow":{low},"visIdHigh":1944017885723175213,"visIdLow":2512895455560210216,"timeGMT":1372782179,"receivedTimeGMT":1372782180,"pageName":"Page #8552","geoCity":"paris","evars":{{"evars":{{"eVar1":"Summer"}}}},"newField":[1,2,{{"x":null}}]}}"#
    )
}

/// Bit-by-bit CRC-32 (IEEE): an independent reference for building gzip trailers in tests.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}
