//! One upstream exchange: the caller's service boxed once, a request bounded in time up
//! to the response head, and upstream bodies read within a bound in size and time.

use std::{future::Future, pin::Pin, time::Duration};

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tower::{Service, ServiceExt, util::BoxCloneSyncService};

use super::error::{UpstreamError, classify};
use crate::body::{self, Body, BoxError};

/// The upstream service, whatever the caller supplied, boxed once.
#[derive(Clone)]
pub(crate) struct Upstream {
    service: BoxCloneSyncService<Request<Body>, Response<Body>, BoxError>,
}

impl Upstream {
    pub fn new<S, B>(inner: S) -> Upstream
    where
        S: Service<Request<Body>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Upstream {
            service: BoxCloneSyncService::new(
                inner
                    .map_response(|r: Response<B>| r.map(body::boxed))
                    .map_err(Into::into),
            ),
        }
    }

    /// Sends `req` and waits up to `within` for the response head.
    pub async fn send(&self, req: Request<Body>, within: Duration) -> Result<Response<Body>, UpstreamError> {
        let (method, uri) = (req.method().clone(), req.uri().clone());
        // Boxed as a `dyn Future + Send` so the compiler does not have to prove `Send`
        // for every lifetime of the boxed error type (a known inference limitation).
        let call: Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>> =
            Box::pin(self.service.clone().oneshot(req));
        let error = match tokio::time::timeout(within, call).await {
            Ok(Ok(response)) => return Ok(response),
            Ok(Err(e)) => classify(e.as_ref()),
            Err(_) => UpstreamError::Timeout,
        };
        error.log(Some((&method, &uri)));
        Err(error)
    }
}

/// Reads a whole upstream body, bounded by `limit` bytes and by `within`.
pub(crate) async fn read_body(body: Body, limit: u64, within: Duration) -> Result<Bytes, UpstreamError> {
    let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    let error = match tokio::time::timeout(within, body::collect(limited)).await {
        Ok(Ok(collected)) => return Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => UpstreamError::ResponseTooLarge { limit },
        Ok(Err(e)) => classify(e.as_ref()),
        Err(_) => UpstreamError::Timeout,
    };
    error.log(None);
    Err(error)
}

/// Reads an upstream body up to `limit` bytes within `within`, into a buffer with `room`
/// bytes to spare after it. A longer one comes back as a body that streams what was read
/// and the rest.
pub(crate) async fn read_or_stream(
    mut body: Body,
    limit: u64,
    room: usize,
    within: Duration,
) -> Result<Result<BytesMut, Body>, UpstreamError> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    // One allocation of the announced length instead of a doubling series: the
    // discarded halves would fragment the heap between long-lived cached bodies.
    let announced = hyper::body::Body::size_hint(&body)
        .exact()
        .and_then(|n| usize::try_from(n).ok());
    let capacity = announced.unwrap_or(0).min(limit.saturating_add(1));
    let mut buf = BytesMut::with_capacity(capacity.saturating_add(room));
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(None) => return Ok(Ok(buf)),
            Ok(Some(Err(e))) => {
                let error = classify(e.as_ref());
                error.log(None);
                return Err(error);
            }
            Err(_) => {
                UpstreamError::Timeout.log(None);
                return Err(UpstreamError::Timeout);
            }
        };
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() > limit {
                return Ok(Err(body::boxed(body::Prefixed::new(buf.freeze(), body))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_past_the_read_limit_is_a_response_too_large() {
        let err = read_body(body::full("12345"), 4, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(
            matches!(err, UpstreamError::ResponseTooLarge { limit: 4 }),
            "{err:?}"
        );
        let whole = read_body(body::full("1234"), 4, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(whole, "1234");
    }

    #[tokio::test]
    async fn a_body_past_the_keep_limit_streams_what_was_read_and_the_rest() {
        let short = read_or_stream(body::full("{}"), 4, 8, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(short.unwrap(), "{}");
        let Err(stream) = read_or_stream(body::full("123456"), 4, 8, Duration::from_secs(1))
            .await
            .unwrap()
        else {
            panic!("expected a stream");
        };
        assert_eq!(stream.collect().await.unwrap().to_bytes(), "123456");
    }
}
