//! What the server knows about one TCP connection: when it was last active, whether a
//! request is in progress, and how much of a streamed body has really reached the socket.
//!
//! [`TrackedIo`] wraps the socket hyper writes to. hyper keeps a write buffer of its own,
//! and it discards that buffer when a body fails (a chaos drop, an admin drop), so a
//! chunk handed to hyper is not yet a chunk sent. hyper calls `poll_flush` on the socket
//! only once its buffer is empty, so every body frame yielded before a flush has been
//! written to the socket by then: [`Activity::flushed_frames`] is exact, and the stream
//! statistics count records only up to it.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Shared state of one TCP connection.
#[derive(Debug)]
pub struct Activity {
    started: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
    yielded: AtomicU64,
    flushed: AtomicU64,
    closed: AtomicBool,
}

impl Activity {
    /// A fresh connection, active now.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            yielded: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        })
    }

    fn touch(&self) {
        self.last_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Milliseconds since bytes were last read or written.
    pub fn idle_ms(&self) -> u64 {
        (self.started.elapsed().as_millis() as u64)
            .saturating_sub(self.last_ms.load(Ordering::Relaxed))
    }

    /// Whether a request is being handled or its response body is still being sent.
    pub fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// Marks a request in progress until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        InFlight(self.clone())
    }

    /// Counts one streamed body frame handed to hyper.
    pub fn frame_yielded(&self) {
        self.yielded.fetch_add(1, Ordering::AcqRel);
    }

    /// Streamed body frames handed to hyper so far (on this connection).
    pub fn yielded_frames(&self) -> u64 {
        self.yielded.load(Ordering::Acquire)
    }

    /// Streamed body frames known to be written to the socket.
    pub fn flushed_frames(&self) -> u64 {
        self.flushed.load(Ordering::Acquire)
    }

    /// Whether the socket has been dropped (the connection is over).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// A request in progress (see [`Activity::begin`]).
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A socket that reports its activity and flushes to an [`Activity`].
pub struct TrackedIo<T> {
    inner: T,
    act: Arc<Activity>,
}

impl<T> TrackedIo<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, act: Arc<Activity>) -> TrackedIo<T> {
        act.touch();
        TrackedIo { inner, act }
    }
}

impl<T> Drop for TrackedIo<T> {
    fn drop(&mut self) {
        self.act.closed.store(true, Ordering::Release);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.act.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.act.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.act.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // hyper flushes the socket only with its own buffer empty: every frame yielded so
        // far has been written.
        let yielded = self.act.yielded.load(Ordering::Acquire);
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        if matches!(r, Poll::Ready(Ok(()))) {
            self.act.flushed.fetch_max(yielded, Ordering::AcqRel);
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
