//! The one body type patchgate hands to clients and upstreams.
//!
//! Boxed so that streamed pass-through bodies, cached `Bytes` and problem documents
//! share one type across the tower stack.
//!
//! Invariants: a client's request body is read within `server.body_read_timeout` of its
//! first poll, or it ends with [`ReadTimeout`] (mapped once to 408). A leaf module: it
//! uses nothing from the crate.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{
    BodyExt, Collected, Empty, Full, LengthLimitError, Limited, combinators::UnsyncBoxBody,
};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Request and response body used throughout the crate.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Boxes any body whose error converts into [`BoxError`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A response with the given status and no body.
pub fn status_only(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(empty());
    *response.status_mut() = status;
    response
}

/// Collects a body behind a `dyn Future + Send`, which spares the compiler proving
/// `Send` for every lifetime of the boxed error type.
pub fn collect(
    body: Limited<Body>,
) -> Pin<Box<dyn Future<Output = Result<Collected<Bytes>, BoxError>> + Send>> {
    Box::pin(body.collect())
}

/// Bounds a body to `max` bytes; a longer one ends with [`TooLarge`], which carries the
/// bound so that whoever sees the error (hyper's client, wrapping it) can answer 413 with it.
pub fn limited(body: Body, max: u64) -> Body {
    Limited::new(body, usize::try_from(max).unwrap_or(usize::MAX))
        .map_err(move |e| {
            if e.is::<LengthLimitError>() {
                Box::new(TooLarge { max })
            } else {
                e
            }
        })
        .boxed_unsync()
}

/// The error a [`limited`] body yields past its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge {
    pub max: u64,
}

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the body exceeds {} bytes", self.max)
    }
}

impl std::error::Error for TooLarge {}

/// A body that yields bytes already read, then the rest of another body: lets the read
/// path look at the start of a response and still stream it when it is too large to keep.
pub struct Prefixed {
    prefix: Option<Bytes>,
    rest: Body,
}

impl Prefixed {
    pub fn new(prefix: Bytes, rest: Body) -> Prefixed {
        Prefixed {
            prefix: Some(prefix),
            rest,
        }
    }
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        if let Some(prefix) = self.prefix.take() {
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(prefix))));
        }
        std::pin::Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.is_end_stream()
    }
}

/// The error a [`Deadline`] body yields when the whole body took too long: distinct, so
/// the places that read client bodies can answer 408 rather than 400 (RFC 9110 §15.5.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadTimeout;

impl std::fmt::Display for ReadTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body was not read within server.body_read_timeout")
    }
}

impl std::error::Error for ReadTimeout {}

/// True when `err`, or any error it wraps, is a [`ReadTimeout`] (hyper's client reports a
/// failed request body as its own error with the body's error as its source).
pub fn is_read_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(err), |e| e.source()).any(|e| e.is::<ReadTimeout>())
}

/// A body that must end within `limit` of its first poll, else yields [`ReadTimeout`].
///
/// The clock starts on the first poll, not on arrival, so time the request spends waiting
/// for a lock or an upstream connection is not counted against the client.
pub struct Deadline {
    inner: Body,
    limit: std::time::Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Deadline {
    /// Bounds `body`; an already finished body (a GET's) is returned as it is.
    pub fn bound(body: Body, limit: std::time::Duration) -> Body {
        if http_body::Body::is_end_stream(&body) {
            return body;
        }
        Deadline {
            inner: body,
            limit,
            timer: None,
        }
        .boxed_unsync()
    }
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let limit = this.limit;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(ReadTimeout)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A client that sends headers and then nothing.
    struct Silent;

    impl http_body::Body for Silent {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
            Poll::Pending
        }
    }

    /// Stands for hyper's client error: its source is the request body's error.
    #[derive(Debug)]
    struct Wrapper(BoxError);

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("error from user's Body stream")
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[tokio::test]
    async fn a_silent_body_ends_with_read_timeout_and_a_finished_one_is_untouched() {
        let limit = std::time::Duration::from_millis(20);
        let err = Deadline::bound(boxed(Silent), limit)
            .frame()
            .await
            .expect("a frame")
            .expect_err("a timeout");
        assert!(err.is::<ReadTimeout>(), "{err}");
        assert!(is_read_timeout(&Wrapper(err)));
        assert!(!is_read_timeout(&Wrapper("reset".into())));

        let done = Deadline::bound(full("{}"), limit).collect().await.unwrap();
        assert_eq!(done.to_bytes(), "{}");
        assert!(http_body::Body::is_end_stream(&Deadline::bound(empty(), limit)));
    }

    #[tokio::test]
    async fn a_limited_body_past_its_bound_ends_with_too_large_naming_it() {
        let err = limited(full("12345"), 4).collect().await.expect_err("too large");
        assert_eq!(err.downcast_ref::<TooLarge>(), Some(&TooLarge { max: 4 }));
        let done = limited(full("1234"), 4).collect().await.unwrap();
        assert_eq!(done.to_bytes(), "1234");
    }
}
