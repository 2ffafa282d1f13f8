//! Upstream failures, classified once by their source, and the problem each becomes.
//!
//! Invariant: the upstream's own words (an io error, a certificate complaint, a parse
//! error) are logged where the failure is classified and never reach a client; the
//! problem a client gets names only the kind of failure.

use std::fmt;

use http::{Method, Uri};

use crate::body;
use crate::problem::Error;

type DynError = dyn std::error::Error + 'static;

/// Why an upstream exchange, or the read of an upstream body, failed.
#[derive(Debug)]
pub(crate) enum UpstreamError {
    /// No response head, or not the whole body, within the time allowed.
    Timeout,
    /// The connection could not be made or broke (refused, reset, no such host).
    Unreachable { detail: String },
    /// The upstream's certificate did not verify.
    Tls { detail: String },
    /// The upstream did not answer in HTTP.
    Invalid { detail: String },
    /// The upstream's body is longer than patchgate reads.
    ResponseTooLarge { limit: u64 },
    /// The client's request body, streamed upstream, went past `max`.
    RequestBodyTooLarge { max: u64 },
    /// The client's request body failed while it was streamed upstream.
    ClientBody,
    /// The client's request body did not arrive within `server.body_read_timeout`.
    ClientBodyTimeout,
}

impl UpstreamError {
    /// Logs the failure in the upstream's own words: at warn when the upstream failed, at
    /// debug when the client's request body did. `target` is the upstream request's.
    pub(super) fn log(&self, target: Option<(&Method, &Uri)>) {
        let (method, authority, path) = match target {
            Some((method, uri)) => (
                method.as_str(),
                uri.authority().map_or("", |a| a.as_str()),
                uri.path(),
            ),
            None => ("-", "-", "-"),
        };
        match self {
            UpstreamError::Timeout
            | UpstreamError::Unreachable { .. }
            | UpstreamError::Tls { .. }
            | UpstreamError::Invalid { .. }
            | UpstreamError::ResponseTooLarge { .. } => {
                tracing::warn!(method, upstream = authority, path, error = %self, "upstream failed");
            }
            UpstreamError::RequestBodyTooLarge { .. }
            | UpstreamError::ClientBody
            | UpstreamError::ClientBodyTimeout => {
                tracing::debug!(method, upstream = authority, path, error = %self, "request body failed upstream");
            }
        }
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Timeout => f.write_str("no answer within the time allowed"),
            UpstreamError::Unreachable { detail } => write!(f, "unreachable: {detail}"),
            UpstreamError::Tls { detail } => write!(f, "TLS verification failed: {detail}"),
            UpstreamError::Invalid { detail } => write!(f, "invalid response: {detail}"),
            UpstreamError::ResponseTooLarge { limit } => {
                write!(f, "response body larger than {limit} bytes")
            }
            UpstreamError::RequestBodyTooLarge { max } => {
                write!(f, "the request body exceeds {max} bytes")
            }
            UpstreamError::ClientBody => f.write_str("the request body failed"),
            UpstreamError::ClientBodyTimeout => {
                f.write_str("the request body did not arrive within server.body_read_timeout")
            }
        }
    }
}

impl std::error::Error for UpstreamError {}

/// Upstream faults become 502/504, client body faults 400/408/413: by source, once.
impl From<UpstreamError> for Error {
    fn from(e: UpstreamError) -> Error {
        match e {
            UpstreamError::Timeout => Error::UpstreamTimeout,
            UpstreamError::Unreachable { .. } => Error::UpstreamUnreachable,
            UpstreamError::Tls { .. } => Error::UpstreamTls,
            UpstreamError::Invalid { .. } | UpstreamError::ResponseTooLarge { .. } => Error::UpstreamInvalid,
            UpstreamError::RequestBodyTooLarge { max } => Error::BodyTooLarge { max },
            UpstreamError::ClientBody => Error::ClientBody,
            UpstreamError::ClientBodyTimeout => Error::BodyReadTimeout,
        }
    }
}

/// Classifies an error from the upstream service or an upstream body by what its chain
/// holds: the request body's own errors first, then TLS, then hyper's parse and user
/// errors; anything else is a connection failure, told in the innermost io error's words.
pub(super) fn classify(err: &DynError) -> UpstreamError {
    let mut text = err.to_string();
    for e in chain(err) {
        if e.is::<body::ReadTimeout>() {
            return UpstreamError::ClientBodyTimeout;
        }
        if let Some(body::TooLarge { max }) = e.downcast_ref::<body::TooLarge>() {
            return UpstreamError::RequestBodyTooLarge { max: *max };
        }
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return UpstreamError::Tls {
                detail: tls.to_string(),
            };
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            text = io.to_string();
        }
    }
    if let Some(hyper_err) = chain(err).find_map(|e| e.downcast_ref::<hyper::Error>()) {
        if hyper_err.is_parse() || hyper_err.is_parse_status() {
            return UpstreamError::Invalid {
                detail: hyper_err.to_string(),
            };
        }
        if hyper_err.is_user() {
            return UpstreamError::ClientBody;
        }
    }
    UpstreamError::Unreachable { detail: text }
}

/// Every error in `err`'s chain. `io::Error::source` returns the source of the error it
/// wraps, skipping that error itself; hyper-rustls wraps rustls's io::Error in another
/// io::Error, so following `source` alone would never reach the `rustls::Error`.
pub(super) fn chain(err: &DynError) -> impl Iterator<Item = &DynError> {
    std::iter::successors(Some(err), |e| {
        match e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &DynError),
            None => e.source(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stands for hyper-util's client error: a wrapper whose `source` is the connector's.
    #[derive(Debug)]
    struct Wrapper(Box<dyn std::error::Error + Send + Sync>);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("client error (Connect)")
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&DynError> {
            Some(&*self.0)
        }
    }

    #[test]
    fn a_certificate_error_inside_nested_io_errors_is_a_tls_failure() {
        // What hyper-rustls returns: io::Error::other(tokio-rustls's io::Error(rustls::Error)).
        let rustls_err = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let tokio_rustls = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls_err);
        let err = Wrapper(Box::new(std::io::Error::other(tokio_rustls)));
        match classify(&err) {
            UpstreamError::Tls { detail } => assert!(detail.contains("UnknownIssuer"), "{detail}"),
            other => panic!("expected Tls, got {other:?}"),
        }
    }

    #[test]
    fn a_refused_connection_is_unreachable_with_the_io_message() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let err = Wrapper(Box::new(io));
        match classify(&err) {
            UpstreamError::Unreachable { detail } => assert_eq!(detail, "connection refused"),
            other => panic!("expected Unreachable, got {other:?}"),
        }
    }

    #[test]
    fn a_request_body_past_its_bound_or_its_deadline_is_the_clients_fault() {
        let err = Wrapper(Box::new(body::TooLarge { max: 7 }));
        assert!(matches!(
            classify(&err),
            UpstreamError::RequestBodyTooLarge { max: 7 }
        ));
        let err = Wrapper(Box::new(body::ReadTimeout));
        assert!(matches!(classify(&err), UpstreamError::ClientBodyTimeout));
    }

    #[tokio::test]
    async fn the_problem_a_client_gets_does_not_carry_the_upstreams_words() {
        use http_body_util::BodyExt;
        let cases = [
            UpstreamError::Unreachable {
                detail: "connect to 10.1.2.3:8080: connection refused".into(),
            },
            UpstreamError::Tls {
                detail: "invalid peer certificate: UnknownIssuer for 10.1.2.3".into(),
            },
            UpstreamError::Invalid {
                detail: "invalid HTTP version parsed from 10.1.2.3".into(),
            },
        ];
        for error in cases {
            let words = error.to_string();
            let response = Error::from(error).into_response();
            assert_eq!(response.status(), http::StatusCode::BAD_GATEWAY);
            let doc = response.into_body().collect().await.unwrap().to_bytes();
            let doc: serde_json::Value = serde_json::from_slice(&doc).unwrap();
            let detail = doc["detail"].as_str().unwrap();
            assert!(!detail.contains("10.1.2.3"), "{words} → {detail}");
        }
    }
}
