//! Response bodies: a fixed body, and a streamed body fed by a connection task.
//!
//! The streamed body is fed through a bounded channel, so a slow client slows the
//! connection task down (backpressure) instead of growing memory. It can end three ways:
//! cleanly (the sender is dropped: hyper writes the terminating chunk), abruptly in order
//! ([`Item::Abort`] after some data: hyper closes the socket mid-body), or abruptly at once
//! (the out-of-band abort, used by admin drop/reset and shutdown even when the channel is
//! full because the client stopped reading).

use crate::net::{Activity, InFlight};
use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::body::{Body, Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// The body type of every response.
pub type ResBody = UnsyncBoxBody<Bytes, io::Error>;

/// A complete body from bytes.
pub fn full(b: impl Into<Bytes>) -> ResBody {
    Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An item of a streamed body.
#[derive(Debug)]
pub enum Item {
    /// Bytes for the next chunk.
    Data(Bytes),
    /// End the response abruptly (no terminating chunk) after the data before it.
    Abort,
}

/// The receiving side of a streamed body.
pub struct ChannelBody {
    data: mpsc::Receiver<Item>,
    abort: mpsc::Receiver<()>,
    done: bool,
    /// Counts the frames handed to hyper (see [`crate::net`]).
    act: Arc<Activity>,
}

/// The sending side of a streamed body.
pub struct BodySender {
    /// In-order items.
    pub data: mpsc::Sender<Item>,
    /// Immediate abort, bypassing queued data.
    pub abort: mpsc::Sender<()>,
}

/// A streamed body and its sender; `act` (the connection's) counts the frames handed to
/// hyper.
pub fn channel(act: Arc<Activity>) -> (BodySender, ChannelBody) {
    let (dtx, drx) = mpsc::channel(4);
    let (atx, arx) = mpsc::channel(1);
    (
        BodySender {
            data: dtx,
            abort: atx,
        },
        ChannelBody {
            data: drx,
            abort: arx,
            done: false,
            act,
        },
    )
}

fn aborted() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "stream dropped by the emulator",
    )
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(Some(())) = self.abort.poll_recv(cx) {
            self.done = true;
            return Poll::Ready(Some(Err(aborted())));
        }
        match self.data.poll_recv(cx) {
            Poll::Ready(Some(Item::Data(b))) => {
                self.act.frame_yielded();
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Poll::Ready(Some(Item::Abort)) => {
                self.done = true;
                Poll::Ready(Some(Err(aborted())))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// A response body that keeps its connection marked busy (see [`Activity::begin`]) until
/// hyper has sent it and dropped it, so an open stream is never closed as idle.
pub struct Guarded {
    inner: ResBody,
    _busy: InFlight,
}

/// Wraps `body` so that `busy` lasts as long as it.
pub fn guarded(body: ResBody, busy: InFlight) -> ResBody {
    Guarded {
        inner: body,
        _busy: busy,
    }
    .boxed_unsync()
}

impl Body for Guarded {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
