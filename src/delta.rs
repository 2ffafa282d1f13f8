//! Delta reads (RFC 3229 with a private convention): a `GET` whose `A-IM` asks for
//! `json-patch` (or `merge-patch`) and whose `If-None-Match` names a recent version that
//! is no longer current is answered `226 IM Used` with the patch from that version to
//! the current one. `json-patch` and `merge-patch` are not IANA-registered instance
//! manipulations: patchgate uses them as a private convention.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::patch::Format;

pub(crate) const A_IM: HeaderName = HeaderName::from_static("a-im");
pub(crate) const IM: HeaderName = HeaderName::from_static("im");
pub(crate) const DELTA_BASE: HeaderName = HeaderName::from_static("delta-base");

/// The first format `A-IM` lists that patchgate makes (`q=0` refuses one).
pub(crate) fn wanted(headers: &HeaderMap) -> Option<Format> {
    for value in headers.get_all(A_IM) {
        let Ok(text) = value.to_str() else { continue };
        for item in text.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| {
                let p = p.trim();
                p.len() >= 2
                    && p[..2].eq_ignore_ascii_case("q=")
                    && p[2..].trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
            });
            if refused {
                continue;
            }
            if name.eq_ignore_ascii_case("json-patch") {
                return Some(Format::JsonPatch);
            }
            if name.eq_ignore_ascii_case("merge-patch") {
                return Some(Format::MergePatch);
            }
        }
    }
    None
}

/// The `IM` token of a format.
pub(crate) fn token(format: Format) -> HeaderValue {
    HeaderValue::from_static(match format {
        Format::JsonPatch => "json-patch",
        Format::MergePatch => "merge-patch",
    })
}

/// `Cache-Control` of a 226: intermediaries must not transform it (RFC 3229 §10.6.1),
/// and a shared cache must not hand it to a client holding another base.
pub(crate) fn cache_control() -> HeaderValue {
    HeaderValue::from_static("no-transform, private")
}

/// `Content-Type` of the delta.
pub(crate) fn content_type(format: Format) -> HeaderValue {
    HeaderValue::from_static(format.media_type())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a_im(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(
                A_IM,
                HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("")),
            );
        }
        headers
    }

    #[test]
    fn a_im_picks_the_first_known_format_not_refused() {
        assert_eq!(wanted(&a_im(&["json-patch"])), Some(Format::JsonPatch));
        assert_eq!(wanted(&a_im(&["vcdiff, Merge-Patch"])), Some(Format::MergePatch));
        assert_eq!(
            wanted(&a_im(&["json-patch;q=0, merge-patch"])),
            Some(Format::MergePatch)
        );
        assert_eq!(
            wanted(&a_im(&["gzip", "json-patch ; q=0.5"])),
            Some(Format::JsonPatch)
        );
        assert_eq!(wanted(&a_im(&["json-patch;q=0.0"])), None);
        assert_eq!(wanted(&a_im(&["vcdiff"])), None);
        assert_eq!(wanted(&HeaderMap::new()), None);
    }
}
