//! The sans-IO core: everything that decides, nothing that does I/O.
//!
//! Drive a [`Client`] like quinn-proto or str0m: feed it what happened with the current
//! time (`handle_*`), then carry out what it asks ([`Client::poll_action`]), deliver what it
//! produced ([`Client::poll_event`]) and wake it at [`Client::poll_timeout`].

pub mod client;
pub mod config;
pub mod dedup;
pub mod framer;
pub mod policy;
pub mod record;

pub use client::{
    Action, Batch, Client, ConnectRequest, ErrorCode, ErrorEvent, Event, ResponseHead, SlotState,
    SlotStats, Stats, StatusEvent,
};
pub use config::{Config, ConfigError, Options};

/// Milliseconds on a monotonic clock chosen by the shell (e.g. `performance.now()`).
/// Only differences matter; the core never reads a clock itself.
pub type Millis = u64;
