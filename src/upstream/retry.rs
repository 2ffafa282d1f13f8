//! Retrying a request that failed on a reused pooled connection (RFC 9112 §9.3.1).
//!
//! An upstream may close an idle keep-alive connection at any time; a request the pool
//! hands to it in the same instant fails although the upstream never read it. hyper-util
//! retries only a request it had not begun to write. The binary's client retries once
//! more, on a new connection, when all of these hold:
//!
//! - the connection had carried an earlier exchange (a new one failing is the upstream's
//!   answer, not a race);
//! - the connection closed or reset, and no byte of an answer had arrived (any byte means
//!   the upstream read the request);
//! - the body can be sent again: empty, or a full buffer marked with [`ReplayBody`];
//! - either no byte of the request was accepted for sending, or the method is idempotent
//!   (RFC 9110 §9.2.2). A POST or PATCH whose bytes may have reached the upstream is
//!   never resent.
//!
//! An idempotent request the upstream may have processed can still be told apart by its
//! answer: a resent conditional write gets `412`, a resent DELETE `404`, because the
//! first one landed. Such an answer is not trusted; the first failure stands (502).
//!
//! The first two facts come from [`super::tracked`]: every connection's IO records its
//! exchanges, and hyper-util hands that record back with the error's connection info.

use std::io;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::client::legacy;

use super::tracked::Exchanges;
use crate::body::{self, Body};

/// A copy of a request's whole body, which lets the binary's client send the request
/// again on a new connection. Set it with [`set_body`].
#[derive(Clone, Debug)]
pub struct ReplayBody(Bytes);

/// Gives `req` the body `bytes`, marked as replayable.
pub fn set_body(req: &mut Request<Body>, bytes: Bytes) {
    req.extensions_mut().insert(ReplayBody(bytes.clone()));
    *req.body_mut() = body::full(bytes);
}

/// What is known of an attempt that failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Failure {
    /// The connection had carried an earlier exchange.
    reused: bool,
    /// A byte of the request was accepted for sending.
    sent: bool,
    /// A byte of an answer arrived.
    answered: bool,
    /// The connection closed or reset (rather than, say, a malformed answer).
    closed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    GiveUp,
    /// Nothing of the request left this host.
    Resend,
    /// The upstream may have processed the request; its method says a repeat is harmless.
    ResendIdempotent,
}

/// The rule of the module doc, over the facts of one failure of a request whose body
/// can be sent again.
fn verdict(method: &Method, failure: Failure) -> Verdict {
    if !failure.reused || failure.answered || !failure.closed {
        Verdict::GiveUp
    } else if !failure.sent {
        Verdict::Resend
    } else if is_idempotent(method) {
        Verdict::ResendIdempotent
    } else {
        Verdict::GiveUp
    }
}

/// RFC 9110 §9.2.2.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Whether a resent request's answer could be caused by the first attempt having landed.
fn echoes_first(method: &Method, headers: &HeaderMap, status: StatusCode) -> bool {
    let conditional = [
        header::IF_MATCH,
        header::IF_NONE_MATCH,
        header::IF_UNMODIFIED_SINCE,
    ]
    .iter()
    .any(|name| headers.contains_key(name));
    match *method {
        Method::PUT => conditional && status == StatusCode::PRECONDITION_FAILED,
        Method::DELETE => {
            (conditional && status == StatusCode::PRECONDITION_FAILED)
                || status == StatusCode::NOT_FOUND
                || status == StatusCode::GONE
        }
        _ => false,
    }
}

fn failure_of(err: &legacy::Error) -> Failure {
    let mut extras = http::Extensions::new();
    if let Some(connected) = err.connect_info() {
        connected.get_extras(&mut extras);
    }
    let Some(exchanges) = extras.get::<Exchanges>() else {
        return Failure::default();
    };
    Failure {
        reused: exchanges.count() >= 2,
        sent: exchanges.sent(),
        answered: exchanges.answered(),
        closed: is_closed(err),
    }
}

/// The connection ended under the request: end of stream, reset, broken pipe.
fn is_closed(err: &(dyn std::error::Error + 'static)) -> bool {
    super::error::chain(err).any(|e| {
        if let Some(hyper_err) = e.downcast_ref::<hyper::Error>() {
            return hyper_err.is_incomplete_message() || hyper_err.is_canceled() || hyper_err.is_closed();
        }
        e.downcast_ref::<io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::NotConnected
            )
        })
    })
}

/// Everything needed to send a request again.
pub(super) struct Replay {
    method: Method,
    uri: http::Uri,
    version: http::Version,
    headers: HeaderMap,
    extensions: http::Extensions,
    body: Bytes,
}

impl Replay {
    /// A copy of `req` if its body can be sent again: marked with [`ReplayBody`], or empty.
    pub(super) fn of(req: &Request<Body>) -> Option<Replay> {
        let body = match req.extensions().get::<ReplayBody>() {
            Some(ReplayBody(bytes)) => bytes.clone(),
            None if http_body::Body::is_end_stream(req.body()) => Bytes::new(),
            None => return None,
        };
        Some(Replay {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
            extensions: req.extensions().clone(),
            body,
        })
    }

    fn into_request(self) -> Request<Body> {
        let mut req = Request::new(body::full(self.body));
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers;
        *req.extensions_mut() = self.extensions;
        req
    }
}

/// After `err` on the pooled attempt, sends `replay` once on `fresh` (a client that
/// opens a new connection per request) if the module's rule allows; else gives `err`.
pub(super) async fn after_failure<C>(
    err: legacy::Error,
    replay: Replay,
    fresh: legacy::Client<C, Body>,
) -> Result<Response<Incoming>, legacy::Error>
where
    C: legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let verdict = verdict(&replay.method, failure_of(&err));
    if verdict == Verdict::GiveUp {
        return Err(err);
    }
    tracing::debug!(
        error = %err,
        method = %replay.method,
        "pooled connection closed under the request; resending on a new one"
    );
    let method = replay.method.clone();
    let headers = (verdict == Verdict::ResendIdempotent).then(|| replay.headers.clone());
    let response = fresh.request(replay.into_request()).await?;
    if let Some(headers) = headers
        && echoes_first(&method, &headers, response.status())
    {
        return Err(err);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RACE: Failure = Failure {
        reused: true,
        sent: true,
        answered: false,
        closed: true,
    };

    #[test]
    fn an_idempotent_request_on_a_reused_connection_closed_before_any_answer_is_resent() {
        for method in [
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ] {
            assert_eq!(verdict(&method, RACE), Verdict::ResendIdempotent, "{method}");
        }
    }

    #[test]
    fn a_post_or_patch_whose_bytes_went_out_is_never_resent() {
        for method in [Method::POST, Method::PATCH, Method::from_bytes(b"LOCK").unwrap()] {
            assert_eq!(verdict(&method, RACE), Verdict::GiveUp, "{method}");
        }
    }

    #[test]
    fn any_method_is_resent_when_no_byte_of_it_was_sent() {
        let unsent = Failure { sent: false, ..RACE };
        assert_eq!(verdict(&Method::POST, unsent), Verdict::Resend);
    }

    #[test]
    fn nothing_is_resent_on_a_new_connection_after_an_answer_began_or_when_it_did_not_close() {
        for (name, failure) in [
            (
                "new connection",
                Failure {
                    reused: false,
                    ..RACE
                },
            ),
            (
                "answer began",
                Failure {
                    answered: true,
                    ..RACE
                },
            ),
            (
                "not a close",
                Failure {
                    closed: false,
                    ..RACE
                },
            ),
        ] {
            assert_eq!(verdict(&Method::GET, failure), Verdict::GiveUp, "{name}");
            let unsent = Failure {
                sent: false,
                ..failure
            };
            assert_eq!(verdict(&Method::POST, unsent), Verdict::GiveUp, "{name}");
        }
    }

    #[test]
    fn only_a_marked_full_body_or_an_empty_one_can_be_sent_again() {
        let mut marked = Request::new(body::empty());
        set_body(&mut marked, Bytes::from_static(b"{}"));
        assert_eq!(
            Replay::of(&marked).map(|r| r.body),
            Some(Bytes::from_static(b"{}"))
        );
        let empty = Request::new(body::empty());
        assert_eq!(Replay::of(&empty).map(|r| r.body), Some(Bytes::new()));
        let unmarked = Request::new(body::full(Bytes::from_static(b"{}")));
        assert!(
            Replay::of(&unmarked).is_none(),
            "a body of unknown content is not replayed"
        );
    }

    #[test]
    fn answers_the_first_attempt_could_have_caused_are_not_trusted() {
        let mut conditional = HeaderMap::new();
        conditional.insert(header::IF_MATCH, "\"a\"".parse().unwrap());
        let plain = HeaderMap::new();
        assert!(echoes_first(
            &Method::PUT,
            &conditional,
            StatusCode::PRECONDITION_FAILED
        ));
        assert!(!echoes_first(
            &Method::PUT,
            &plain,
            StatusCode::PRECONDITION_FAILED
        ));
        assert!(!echoes_first(&Method::PUT, &conditional, StatusCode::OK));
        assert!(echoes_first(&Method::DELETE, &plain, StatusCode::NOT_FOUND));
        assert!(echoes_first(
            &Method::DELETE,
            &conditional,
            StatusCode::PRECONDITION_FAILED
        ));
        assert!(!echoes_first(&Method::DELETE, &plain, StatusCode::NO_CONTENT));
        assert!(!echoes_first(
            &Method::GET,
            &conditional,
            StatusCode::PRECONDITION_FAILED
        ));
    }

    #[test]
    fn a_reset_or_an_early_end_of_stream_is_a_close() {
        let reset = io::Error::new(io::ErrorKind::ConnectionReset, "reset");
        assert!(is_closed(&reset));
        let refused = io::Error::new(io::ErrorKind::InvalidData, "bad");
        assert!(!is_closed(&refused));
    }
}
