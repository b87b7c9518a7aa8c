//! A local emulator of the Adobe Analytics Live Stream API.
//!
//! It serves `GET /api/1/stream/{name}` the way the real service does — one long-lived
//! HTTP/1.1 response, chunked and gzip-compressed, JSON records separated by CRLF, flushed
//! as generated — including the status codes of the documentation (302, 400, 401, 404,
//! 405, 406, 409, 503, 505), the KA-16598 behaviour (a dropped client's slot stays held for
//! a while, so too-early reconnects are refused), resume with duplicates after a reconnect,
//! empty records, unknown fields, and optional seeded chaos. An admin API under `/admin/`
//! lets tests script exact situations and read statistics; static files can be served for
//! the demo page. See `emulator/README.md` for the reference.
//!
//! The binary is `livestream-emulator`; tests can run it in-process with [`start`].

#![warn(missing_docs)]

pub mod body;
pub mod cli;
pub mod generator;
pub mod ims;
pub mod net;
pub mod rng;
pub mod script;
pub mod server;
pub mod sha256;
pub mod static_files;
pub mod stream;
pub mod util;

pub use cli::Options;
pub use server::{start, Server};
