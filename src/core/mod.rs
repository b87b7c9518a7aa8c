//! The sans-IO core: everything that decides, nothing that does I/O.
//!
//! Drive a [`Client`] like quinn-proto or str0m: feed it what happened with the current
//! time (`handle_*`), then carry out each [`Output`] of [`Client::poll_output`] until it says
//! [`Output::Wait`], and call [`Client::handle_timeout`] when that instant comes. Nothing here
//! knows about JavaScript, sockets or clocks; the wasm shell and the native relay are two
//! hosts of the same core.

pub mod client;
pub mod config;
pub mod dedup;
pub mod framer;
pub mod policy;
pub mod record;
pub mod time;

pub use client::{
    AttemptId, Client, ClientState, ConnectRequest, ErrorCode, ErrorEvent, Event, HitSink, Output,
    ResponseHead, SlotId, SlotState, SlotStats, Stats, StatusEvent,
};
pub use config::{Config, ConfigError, Options, TokenSource};
pub use record::RecordInfo;
pub use time::{Duration, Instant};
