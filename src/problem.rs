//! Every refusal patchgate produces itself, mapped once to an RFC 9457 problem document.
//!
//! Variants carry data, not strings; [`Error::status`] is one exhaustive match so a new
//! variant cannot silently become a 500. A 412 that carries the current body is a normal
//! outcome of the write path, not an error, and is built there.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

use crate::body::{self, Body};
use crate::cluster::Refusal;
use crate::patch::PatchError;

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug)]
pub enum Error {
    NoRoute,
    /// The request path could escape its route (`..`, `%2f`, `%2e%2e`, NUL, bad escapes).
    UnsafePath,
    /// An HTTP/1.1 request without exactly one valid `Host` (RFC 9112 §3.2).
    BadHost,
    MethodNotAllowed {
        allow: HeaderValue,
    },
    /// A standard method spelled in the wrong case (`put`).
    MethodNotImplemented,
    BodyTooLarge {
        max: u64,
    },
    /// The client's request body failed while it was read (reset, bad chunking).
    ClientBody,
    /// The client's request body took longer than `server.body_read_timeout`.
    BodyReadTimeout,
    UnsupportedPatchFormat {
        accept_patch: HeaderValue,
    },
    /// A PATCH or PUT body with a content coding: patchgate reads, hashes and caches plain
    /// documents only (RFC 9110 §8.4.1, RFC 7694).
    UnsupportedContentEncoding,
    Patch(PatchError),
    /// A failed JSON Patch `test`, with the ETag it was evaluated against.
    PatchConflict {
        error: PatchError,
        etag: HeaderValue,
    },
    PreconditionRequired,
    /// A precondition failed and there is no current representation to send.
    PreconditionFailedMissing,
    /// Patchgate's own conditional write kept losing to writers that bypass it.
    ConflictRetriesExhausted {
        etag: Option<HeaderValue>,
    },
    // The upstream failures carry no text: the upstream's own words are logged where they
    // are classified (`upstream::UpstreamError`), never sent to clients.
    UpstreamUnreachable,
    UpstreamTls,
    UpstreamInvalid,
    UpstreamTimeout,
    /// `Cache-Control: only-if-cached` and nothing stored may answer (RFC 9111 §5.2.1.7).
    NotCached,
    /// The route already handles `max_in_flight` requests.
    Overloaded,
    /// The upstream write that carried this PATCH together with others failed in a way
    /// that may or may not have changed the document.
    BatchWriteFailed {
        status: StatusCode,
    },
    /// The upstream write was sent and has not answered within `request_timeout`; it
    /// still runs, and its answer will decide the resource.
    WriteStillRunning,
    /// `[cluster]`: the write could not be coordinated with the other instances, so it
    /// was not sent.
    Coordination {
        refusal: crate::cluster::Refusal,
        /// What Redis did (`connection refused`, `timed out`…), never an address.
        cause: String,
    },
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::NoRoute => StatusCode::NOT_FOUND,
            Error::UnsafePath | Error::BadHost | Error::ClientBody => StatusCode::BAD_REQUEST,
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::MethodNotImplemented => StatusCode::NOT_IMPLEMENTED,
            Error::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::BodyReadTimeout => StatusCode::REQUEST_TIMEOUT,
            Error::UnsupportedPatchFormat { .. } | Error::UnsupportedContentEncoding => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Error::Patch(e) => match e {
                PatchError::Malformed { .. } => StatusCode::BAD_REQUEST,
                PatchError::TooManyOps { .. } | PatchError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                PatchError::NotJson { .. }
                | PatchError::DuplicateMember { .. }
                | PatchError::CannotApply { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                PatchError::TestFailed { .. } => StatusCode::CONFLICT,
            },
            Error::PatchConflict { .. } => StatusCode::CONFLICT,
            Error::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
            Error::PreconditionFailedMissing => StatusCode::PRECONDITION_FAILED,
            Error::ConflictRetriesExhausted { .. } => StatusCode::CONFLICT,
            Error::UpstreamUnreachable | Error::UpstreamTls | Error::UpstreamInvalid => {
                StatusCode::BAD_GATEWAY
            }
            Error::UpstreamTimeout | Error::NotCached => StatusCode::GATEWAY_TIMEOUT,
            Error::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Error::BatchWriteFailed { status } => *status,
            Error::WriteStillRunning => StatusCode::GATEWAY_TIMEOUT,
            Error::Coordination { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A short, stable slug used in the problem `type` URI and in metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NoRoute => "no-route",
            Error::UnsafePath => "unsafe-path",
            Error::BadHost => "bad-host",
            Error::MethodNotAllowed { .. } => "method-not-allowed",
            Error::MethodNotImplemented => "method-not-implemented",
            Error::BodyTooLarge { .. } => "body-too-large",
            Error::ClientBody => "client-body",
            Error::BodyReadTimeout => "body-read-timeout",
            Error::UnsupportedPatchFormat { .. } => "unsupported-patch-format",
            Error::UnsupportedContentEncoding => "unsupported-content-encoding",
            Error::Patch(e) => match e {
                PatchError::Malformed { .. } => "malformed-patch",
                PatchError::TooManyOps { .. } => "too-many-operations",
                PatchError::TooLarge { .. } => "patch-result-too-large",
                PatchError::NotJson { .. } => "not-json",
                PatchError::DuplicateMember { .. } => "duplicate-member",
                PatchError::CannotApply { .. } => "patch-not-applicable",
                PatchError::TestFailed { .. } => "test-failed",
            },
            Error::PatchConflict { .. } => "test-failed",
            Error::PreconditionRequired => "precondition-required",
            Error::PreconditionFailedMissing => "precondition-failed",
            Error::ConflictRetriesExhausted { .. } => "conflict",
            Error::UpstreamUnreachable => "upstream-unreachable",
            Error::UpstreamTls => "upstream-tls",
            Error::UpstreamInvalid => "upstream-invalid-response",
            Error::UpstreamTimeout => "upstream-timeout",
            Error::NotCached => "not-cached",
            Error::Overloaded => "overloaded",
            Error::BatchWriteFailed { .. } => "write-outcome-unknown",
            Error::WriteStillRunning => "write-still-running",
            Error::Coordination {
                refusal: Refusal::Unreachable,
                ..
            } => "coordination-unavailable",
            Error::Coordination {
                refusal: Refusal::LeaseBusy,
                ..
            } => "lease-busy",
            Error::Coordination {
                refusal: Refusal::LeaseLost,
                ..
            } => "lease-lost",
        }
    }

    fn detail(&self) -> String {
        match self {
            Error::NoRoute => "no route in proxy.toml matches this path".into(),
            Error::UnsafePath => {
                "the path contains dot segments or encoded separators that could escape its route".into()
            }
            Error::BadHost => {
                "an HTTP/1.1 request needs exactly one Host header with a valid host[:port]; a \
                 target must not carry userinfo; an HTTP/2 Host must name the :authority"
                    .into()
            }
            Error::UnsupportedContentEncoding => {
                "write bodies must not have a Content-Encoding; send the plain document".into()
            }
            Error::MethodNotImplemented => {
                "methods are case-sensitive; this is a standard method in the wrong case".into()
            }
            Error::MethodNotAllowed { allow } => format!(
                "allowed methods: {}",
                allow.to_str().unwrap_or("see the Allow header")
            ),
            Error::BodyTooLarge { max } => {
                format!("the request body exceeds server.max_body_bytes ({max} bytes)")
            }
            Error::ClientBody => "the request body could not be read".into(),
            Error::BodyReadTimeout => {
                "the request body did not arrive within server.body_read_timeout".into()
            }
            Error::UnsupportedPatchFormat { accept_patch } => format!(
                "this route accepts PATCH bodies of type: {}",
                accept_patch.to_str().unwrap_or("none")
            ),
            Error::Patch(e) | Error::PatchConflict { error: e, .. } => e.to_string(),
            Error::PreconditionRequired => {
                "this route requires If-Match or If-Unmodified-Since on writes".into()
            }
            Error::PreconditionFailedMissing => "the precondition failed: the resource does not exist".into(),
            Error::ConflictRetriesExhausted { .. } => {
                "the resource kept changing upstream; read it again and retry".into()
            }
            Error::UpstreamUnreachable => "the upstream could not be reached".into(),
            Error::UpstreamTls => "TLS verification of the upstream failed".into(),
            Error::UpstreamInvalid => "the upstream sent an invalid or oversized response".into(),
            Error::UpstreamTimeout => "the upstream did not answer within server.request_timeout".into(),
            Error::NotCached => "only-if-cached: nothing stored may answer this request".into(),
            Error::Overloaded => "this route is handling route.max_in_flight requests; retry shortly".into(),
            Error::BatchWriteFailed { status } => format!(
                "the upstream write that carried this patch with others failed ({status}); \
                 it may or may not have been applied: read the resource before retrying"
            ),
            Error::WriteStillRunning => "the upstream write was sent and did not answer within \
                 server.request_timeout; it keeps running (up to server.write_timeout) and its \
                 outcome will be known later: read the resource before retrying"
                .into(),
            Error::Coordination {
                refusal: Refusal::Unreachable,
                ..
            } => "writes are coordinated across instances \
                 through Redis, which cannot be reached; nothing was written (reads still work): \
                 retry later"
                .into(),
            Error::Coordination {
                refusal: Refusal::LeaseBusy,
                ..
            } => "another instance held this resource's \
                 write lease for all of server.request_timeout; nothing was written: retry"
                .into(),
            Error::Coordination {
                refusal: Refusal::LeaseLost,
                ..
            } => "this instance's write lease on the \
                 resource expired before the write could be sent; nothing was written: retry"
                .into(),
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let mut doc = json!({
            "type": format!("https://patchgate.dev/problems/{}", self.kind()),
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": self.detail(),
        });
        if let Error::Patch(
            PatchError::TestFailed { op_index, path } | PatchError::CannotApply { op_index, path, .. },
        )
        | Error::PatchConflict {
            error: PatchError::TestFailed { op_index, path } | PatchError::CannotApply { op_index, path, .. },
            ..
        } = &self
        {
            doc["op_index"] = json!(op_index);
            doc["path"] = json!(path);
        }
        if let Error::Coordination { cause, .. } = &self {
            doc["cause"] = json!(cause);
        }
        if let Error::Patch(PatchError::DuplicateMember { name, path }) = &self {
            doc["member"] = json!(name);
            doc["path"] = json!(path);
        }
        let mut response = problem_response(status, &doc);
        let headers = response.headers_mut();
        match self {
            Error::MethodNotAllowed { allow } => {
                headers.insert(header::ALLOW, allow);
            }
            Error::UnsupportedPatchFormat { accept_patch } => {
                headers.insert(crate::headers::ACCEPT_PATCH, accept_patch);
            }
            Error::Overloaded | Error::Coordination { .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Error::UnsupportedContentEncoding => {
                headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
            }
            // RFC 9110 §15.5.9: the rest of the body will not be waited for. (hyper drops
            // this connection-specific field on h2, where it is not allowed.)
            Error::BodyReadTimeout => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Error::ConflictRetriesExhausted { etag: Some(etag) } | Error::PatchConflict { etag, .. } => {
                headers.insert(header::ETAG, etag);
            }
            _ => {}
        }
        response
    }
}

impl From<PatchError> for Error {
    fn from(e: PatchError) -> Self {
        Error::Patch(e)
    }
}

/// A problem+json response with the given document.
pub fn problem_response(status: StatusCode, doc: &serde_json::Value) -> Response<Body> {
    let bytes = Bytes::from(serde_json::to_vec(doc).unwrap_or_default());
    let mut response = Response::new(body::full(bytes));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}
