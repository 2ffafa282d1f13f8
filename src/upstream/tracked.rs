//! A connection's IO that records its exchanges, so that [`super::retry`] can tell after a
//! failure whether the connection was reused and whether any byte of the request or of
//! an answer passed.
//!
//! HTTP/1.1 without pipelining: a write after an answer byte starts a new exchange.
//! The record is counted above TLS, in plaintext bytes.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    task::{Context, Poll},
};

use hyper_util::client::legacy::connect::{Connected, Connection};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a connection's IO records for the retry decision; published to the caller
/// through hyper's response channel, so relaxed atomics suffice.
#[derive(Debug, Default)]
struct Record {
    exchanges: AtomicU32,
    sent: AtomicBool,
    answered: AtomicBool,
}

/// The record as a connection extra (`Connected::extra` wants `Clone`).
#[derive(Clone, Debug)]
pub(super) struct Exchanges(Arc<Record>);

impl Exchanges {
    /// Exchanges begun on the connection, the current one included.
    pub(super) fn count(&self) -> u32 {
        self.0.exchanges.load(Ordering::Relaxed)
    }

    /// A byte of the current exchange's request was accepted for sending.
    pub(super) fn sent(&self) -> bool {
        self.0.sent.load(Ordering::Relaxed)
    }

    /// A byte of the current exchange's answer arrived.
    pub(super) fn answered(&self) -> bool {
        self.0.answered.load(Ordering::Relaxed)
    }
}

/// A connection's IO that records its exchanges.
pub(super) struct Tracked<T> {
    io: T,
    record: Arc<Record>,
    /// Within a run of request writes; an answer byte ends it, so that the next write
    /// starts an exchange.
    writing: bool,
}

impl<T> Tracked<T> {
    pub(super) fn new(io: T) -> Tracked<T> {
        Tracked {
            io,
            record: Arc::default(),
            writing: false,
        }
    }

    fn begin_write(&mut self) {
        if !self.writing {
            self.writing = true;
            self.record.exchanges.fetch_add(1, Ordering::Relaxed);
            self.record.sent.store(false, Ordering::Relaxed);
            self.record.answered.store(false, Ordering::Relaxed);
        }
    }

    fn wrote(&self, polled: &Poll<io::Result<usize>>) {
        if matches!(polled, Poll::Ready(Ok(n)) if *n > 0) {
            self.record.sent.store(true, Ordering::Relaxed);
        }
    }
}

impl<T: Connection> Connection for Tracked<T> {
    fn connected(&self) -> Connected {
        self.io.connected().extra(Exchanges(Arc::clone(&self.record)))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.writing = false;
            self.record.answered.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if !data.is_empty() {
            self.begin_write();
        }
        let polled = Pin::new(&mut self.io).poll_write(cx, data);
        self.wrote(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if bufs.iter().any(|b| !b.is_empty()) {
            self.begin_write();
        }
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn a_write_after_an_answer_byte_starts_the_next_exchange() {
        let (client, mut server) = tokio::io::duplex(1024);
        let mut io = Tracked::new(client);
        let record = Exchanges(Arc::clone(&io.record));
        assert_eq!((record.count(), record.sent()), (0, false));

        io.write_all(b"PUT /a HTTP/1.1\r\n").await.unwrap();
        io.write_all(b"\r\n{}").await.unwrap();
        assert_eq!(
            (record.count(), record.sent(), record.answered()),
            (1, true, false)
        );

        server.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        assert!(io.read(&mut buf).await.unwrap() > 0);
        assert!(record.answered());

        io.write_all(b"GET /b HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!(
            (record.count(), record.sent(), record.answered()),
            (2, true, false)
        );

        drop(server);
        assert_eq!(io.read(&mut buf).await.unwrap(), 0);
        assert!(!record.answered(), "the end of stream is no answer");
    }
}
