//! RFC 9111 freshness for a shared cache (`freshness = "http"`), as pure functions.
//!
//! §4.2.1 (freshness lifetime: `s-maxage`, `max-age`, `Expires` − `Date`), §4.2.2
//! (heuristic freshness, only when the route asks for it), §4.2.3 (current age, with the
//! upstream's `Age`), §4.2.4 and §5.2.2 (serving stale: never past `must-revalidate`,
//! `proxy-revalidate` or `s-maxage`), §5.2.1 (request directives). Invalid freshness
//! information makes a response stale rather than guessed fresh (§4.2.1: "caches are
//! encouraged to consider responses that have invalid freshness information to be
//! stale"); an invalid `Age` is not available, so 0 (§4.2.3).

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, header};

/// Seconds, saturated: RFC 9111 §1.2.2 caps delta-seconds at 2^31.
pub(crate) const CAP: u32 = 1 << 31;

/// The heuristic lifetime's cap: a day.
const HEURISTIC_CAP: u32 = 86_400;

/// The `Cache-Control` directives of `headers`, every field line in order: lowercased
/// names with their value (quotes removed, `None` without `=`).
pub(crate) fn directives(headers: &HeaderMap) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for line in headers.get_all(header::CACHE_CONTROL) {
        split_items(line.as_bytes(), &mut out);
    }
    out
}

/// RFC 9111 §5.2: `name[=token|quoted-string]` items separated by commas; a quoted
/// value may hold commas and escaped quotes.
fn split_items(value: &[u8], out: &mut Vec<(String, Option<String>)>) {
    let mut i = 0;
    while i < value.len() {
        let start = i;
        while i < value.len() && value[i] != b',' && value[i] != b'=' {
            i += 1;
        }
        let name = String::from_utf8_lossy(value[start..i].trim_ascii()).to_ascii_lowercase();
        let mut arg = None;
        if i < value.len() && value[i] == b'=' {
            i += 1;
            if value.get(i) == Some(&b'"') {
                i += 1;
                let mut text = Vec::new();
                while i < value.len() && value[i] != b'"' {
                    if value[i] == b'\\' {
                        i += 1;
                    }
                    if let Some(&b) = value.get(i) {
                        text.push(b);
                    }
                    i += 1;
                }
                i += 1;
                arg = Some(String::from_utf8_lossy(&text).into_owned());
                // Anything between the closing quote and the next comma is not ours.
                while i < value.len() && value[i] != b',' {
                    i += 1;
                }
            } else {
                let start = i;
                while i < value.len() && value[i] != b',' {
                    i += 1;
                }
                arg = Some(String::from_utf8_lossy(&value[start..i]).into_owned());
            }
        }
        i += 1;
        if !name.is_empty() {
            out.push((name, arg));
        }
    }
}

/// RFC 9111 §1.2.2 delta-seconds: digits only (leading zeros allowed), capped at 2^31;
/// `None` for anything else.
pub(crate) fn delta_seconds(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = text.trim_start_matches('0');
    if digits.len() > 10 {
        return Some(CAP);
    }
    Some(
        digits
            .parse::<u64>()
            .map_or(0, |n| u32::try_from(n.min(u64::from(CAP))).unwrap_or(CAP)),
    )
}

/// The first occurrence of directive `name`: `Some(Some(n))` valid, `Some(None)` present
/// but invalid (then the response counts as stale), `None` absent.
fn seconds(directives: &[(String, Option<String>)], name: &str) -> Option<Option<u32>> {
    let (_, arg) = directives.iter().find(|(n, _)| n == name)?;
    Some(arg.as_deref().and_then(delta_seconds))
}

fn has(directives: &[(String, Option<String>)], name: &str) -> bool {
    directives.iter().any(|(n, _)| n == name)
}

fn http_date(value: &HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(value.to_str().ok()?).ok()
}

/// The single valid date of field `name`; `Err` when it is present but not one valid date.
fn single_date(headers: &HeaderMap, name: &header::HeaderName) -> Result<Option<SystemTime>, ()> {
    let mut lines = headers.get_all(name).iter();
    match (lines.next(), lines.next()) {
        (None, _) => Ok(None),
        (Some(value), None) => http_date(value).map(Some).ok_or(()),
        (Some(_), Some(_)) => Err(()),
    }
}

/// The upstream's `Date`, or `None` when absent or invalid (then the response time).
pub(crate) fn date(headers: &HeaderMap) -> Option<SystemTime> {
    single_date(headers, &header::DATE).ok().flatten()
}

fn secs_between(later: SystemTime, earlier: SystemTime) -> u32 {
    later.duration_since(earlier).map_or(0, |d| {
        u32::try_from(d.as_secs().min(u64::from(CAP))).unwrap_or(CAP)
    })
}

/// RFC 9111 §4.2.1 (and §4.2.2 when `heuristic`): the freshness lifetime in seconds of a
/// stored `200` with `headers`, whose `Date` is `date` (the response time when it had
/// none). `s-maxage` wins over `max-age`, which wins over `Expires`; 0 is stale at once.
pub(crate) fn lifetime(headers: &HeaderMap, date: SystemTime, heuristic: bool) -> u32 {
    let cc = directives(headers);
    if let Some(s_maxage) = seconds(&cc, "s-maxage") {
        return s_maxage.unwrap_or(0);
    }
    if let Some(max_age) = seconds(&cc, "max-age") {
        return max_age.unwrap_or(0);
    }
    match single_date(headers, &header::EXPIRES) {
        Ok(Some(expires)) => return secs_between(expires, date),
        // An invalid Expires (§5.3: "0" among them) means already expired.
        Err(()) => return 0,
        Ok(None) => {}
    }
    if !heuristic {
        return 0;
    }
    // §4.2.2: a tenth of the time since the last modification, capped.
    match single_date(headers, &header::LAST_MODIFIED) {
        Ok(Some(modified)) => (secs_between(date, modified) / 10).min(HEURISTIC_CAP),
        _ => 0,
    }
}

/// RFC 9111 §4.2.3 `corrected_initial_age`: the larger of the apparent age (response
/// time − `Date`) and the upstream's `Age` plus the response delay.
pub(crate) fn initial_age(headers: &HeaderMap, requested: SystemTime, received: SystemTime) -> Duration {
    let apparent = date(headers).map_or(Duration::ZERO, |date| {
        received.duration_since(date).unwrap_or(Duration::ZERO)
    });
    let delay = received.duration_since(requested).unwrap_or(Duration::ZERO);
    apparent.max(Duration::from_secs(u64::from(age_value(headers))) + delay)
}

/// RFC 9111 §4.2.3 `age_value`: the upstream's `Age`, "or 0, if not available". `Age` is
/// a singleton field: of several field lines or list members only the first counts
/// (RFC 9110 §5.5), without any parameter; a value that is not delta-seconds is not
/// available. (The current cache-tests suite expects this; its npm release 0.4.5, older
/// than RFC 9111, took an invalid `Age` as stale.)
pub(crate) fn age_value(headers: &HeaderMap) -> u32 {
    headers
        .get(header::AGE)
        .and_then(|line| line.to_str().ok())
        .and_then(|line| line.split(',').next())
        .and_then(|item| item.split(';').next())
        .and_then(|value| delta_seconds(value.trim()))
        .unwrap_or(0)
}

/// What a request's `Cache-Control` (or, without one, `Pragma: no-cache`, §5.4) asks of
/// a stored response (RFC 9111 §5.2.1).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wants {
    pub no_cache: bool,
    pub no_store: bool,
    pub only_if_cached: bool,
    pub max_age: Option<u32>,
    pub min_fresh: Option<u32>,
    /// `Some(CAP)` for `max-stale` without a value: any staleness.
    pub max_stale: Option<u32>,
}

impl Wants {
    pub(crate) fn of(request: &HeaderMap) -> Wants {
        let cc = directives(request);
        if cc.is_empty() {
            let pragma_no_cache = request.get_all(header::PRAGMA).iter().any(|v| {
                v.as_bytes()
                    .split(|&b| b == b',')
                    .any(|item| item.trim_ascii().eq_ignore_ascii_case(b"no-cache"))
            });
            return Wants {
                no_cache: pragma_no_cache,
                ..Wants::default()
            };
        }
        // An invalid value asks for the strictest reading: no stored response.
        let max_age = seconds(&cc, "max-age").map(|v| v.unwrap_or(0));
        let min_fresh = seconds(&cc, "min-fresh").map(|v| v.unwrap_or(CAP));
        let max_stale = cc
            .iter()
            .find(|(n, _)| n == "max-stale")
            .map(|(_, arg)| arg.as_deref().map_or(Some(CAP), delta_seconds).unwrap_or(0));
        Wants {
            no_cache: has(&cc, "no-cache"),
            no_store: has(&cc, "no-store"),
            only_if_cached: has(&cc, "only-if-cached"),
            max_age,
            min_fresh,
            max_stale,
        }
    }
}

/// RFC 9111 §4.2.4 / §5.2.2.2 / §5.2.2.8 / §5.2.2.10: a stale response with
/// `must-revalidate`, `proxy-revalidate` or `s-maxage` (or `no-cache`) is never served
/// stale by a shared cache, whatever the request allows.
pub(crate) fn may_serve_stale(stored: &HeaderMap) -> bool {
    let cc = directives(stored);
    !["must-revalidate", "proxy-revalidate", "s-maxage", "no-cache"]
        .iter()
        .any(|name| has(&cc, name))
}

/// Whether a stored response of `age` with a freshness `lifetime` (seconds) answers a
/// request wanting `wants` without the upstream. `stale_ok` is [`may_serve_stale`] of the
/// stored headers, only asked for when it matters.
pub(crate) fn usable(age: Duration, lifetime: u32, wants: &Wants, stale_ok: impl FnOnce() -> bool) -> bool {
    if wants.no_cache {
        return false;
    }
    let lifetime = Duration::from_secs(u64::from(lifetime));
    if wants
        .max_age
        .is_some_and(|max| age > Duration::from_secs(u64::from(max)))
    {
        return false;
    }
    if age < lifetime {
        let left = lifetime - age;
        return wants
            .min_fresh
            .is_none_or(|min| left >= Duration::from_secs(u64::from(min)));
    }
    let Some(max_stale) = wants.max_stale else {
        return false;
    };
    age - lifetime <= Duration::from_secs(u64::from(max_stale)) && wants.min_fresh.is_none() && stale_ok()
}

/// RFC 9111 §3.5: a shared cache stores a response to a request with `Authorization`
/// only when `public`, `s-maxage` or `must-revalidate` allow it. `private` too: such a
/// response is kept for its requester alone ("Isolation and truth" in the README).
pub(crate) fn authorized_storable(response: &HeaderMap) -> bool {
    let cc = directives(response);
    ["public", "s-maxage", "must-revalidate", "private"]
        .iter()
        .any(|name| has(&cc, name))
}

/// The `Age` field for a response served from the cache (RFC 9111 §5.1), in seconds.
pub(crate) fn age_header(age: Duration) -> HeaderValue {
    HeaderValue::from(age.as_secs().min(u64::from(CAP)))
}

#[cfg(test)]
#[path = "freshness/tests.rs"]
mod tests;
