//! The request line's two formats, byte for byte what `tracing_subscriber`'s `fmt`
//! layer wrote for the same event (without colours):
//!
//! text: `2026-12-02T23:36:37.818627Z  INFO patchgate::layer: request route="api"
//! method=GET path=/api/people/1 status=200 latency_ms=0.362309 cache="miss"`
//!
//! json: `{"timestamp":"…","level":"INFO","message":"request","route":"api","method":"GET",
//! "path":"/api/people/1","status":200,"latency_ms":0.362309,"cache":"miss",
//! "target":"patchgate::layer"}`

use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::Format;
use super::access::Line;

/// Wall-clock time and the monotonic clock read together: lines carry an `Instant`.
#[derive(Clone, Copy)]
pub(super) struct Clock {
    wall: SystemTime,
    at: Instant,
}

impl Clock {
    pub(super) fn now() -> Clock {
        Clock {
            wall: SystemTime::now(),
            at: Instant::now(),
        }
    }

    /// The wall-clock time of `instant`.
    pub(super) fn wall(&self, instant: Instant) -> SystemTime {
        match self.at.checked_duration_since(instant) {
            Some(before) => self.wall.checked_sub(before).unwrap_or(self.wall),
            None => self.wall + instant.duration_since(self.at),
        }
    }
}

/// The rendered date and time of the last second a line was written in: most lines of
/// a busy log share it and only add their microseconds.
#[derive(Default)]
pub(super) struct Stamps {
    second: Option<u64>,
    prefix: Vec<u8>,
}

/// Appends `line`, logged at `time`, and a newline to `out`.
pub(super) fn line(line: &Line, time: SystemTime, format: Format, stamps: &mut Stamps, out: &mut Vec<u8>) {
    let route = line.route();
    match format {
        Format::Text => {
            stamps.write(time, out);
            out.extend_from_slice(b"  INFO patchgate::layer: request route=");
            debug_str(route, out);
            out.extend_from_slice(b" method=");
            out.extend_from_slice(line.method.as_str().as_bytes());
            out.extend_from_slice(b" path=");
            out.extend_from_slice(line.path().as_bytes());
            out.extend_from_slice(b" status=");
            number(u64::from(line.status), out);
            out.extend_from_slice(b" latency_ms=");
            millis(line.latency, out);
            out.extend_from_slice(b" cache=");
            debug_str(line.cache, out);
            out.push(b'\n');
        }
        Format::Json => {
            out.extend_from_slice(b"{\"timestamp\":\"");
            stamps.write(time, out);
            out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\",\"route\":");
            json_string(route, out);
            out.extend_from_slice(b",\"method\":");
            json_string(line.method.as_str(), out);
            out.extend_from_slice(b",\"path\":");
            json_string(line.path(), out);
            out.extend_from_slice(b",\"status\":");
            number(u64::from(line.status), out);
            out.extend_from_slice(b",\"latency_ms\":");
            millis(line.latency, out);
            out.extend_from_slice(b",\"cache\":");
            json_string(line.cache, out);
            out.extend_from_slice(b",\"target\":\"patchgate::layer\"}\n");
        }
    }
}

/// Whether `s` is written the same quoted by `{:?}` and by JSON: printable ASCII
/// without quotes or backslashes (route names, cache outcomes, nearly every path).
fn plain(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// Writes `s` in quotes when it needs no escaping; says whether it did.
fn quoted_plain(s: &str, out: &mut Vec<u8>) -> bool {
    let plain = plain(s);
    if plain {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
    plain
}

/// `s` as `{:?}` writes it.
fn debug_str(s: &str, out: &mut Vec<u8>) {
    if !quoted_plain(s, out) {
        let _ = write!(out, "{s:?}");
    }
}

fn json_string(s: &str, out: &mut Vec<u8>) {
    if !quoted_plain(s, out) {
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// `n` (below a million) as six digits with leading zeros.
fn six_digits(mut n: u32) -> [u8; 6] {
    let mut digits = [b'0'; 6];
    for place in (0..6).rev() {
        digits[place] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    digits
}

fn number(mut n: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// `duration` in milliseconds to the nanosecond, as the shortest decimal (`0.362309`,
/// `12.5`, `3.0`): what `{:?}` of the float shows, without the float's rounding noise.
fn millis(duration: Duration, out: &mut Vec<u8>) {
    let nanos = duration.as_nanos();
    number(u64::try_from(nanos / 1_000_000).unwrap_or(u64::MAX), out);
    out.push(b'.');
    let digits = six_digits((nanos % 1_000_000) as u32);
    let len = digits.iter().rposition(|&d| d != b'0').map_or(1, |last| last + 1);
    out.extend_from_slice(&digits[..len]);
}

impl Stamps {
    /// RFC 3339 in UTC with microseconds, as `tracing_subscriber::fmt::time::SystemTime`.
    fn write(&mut self, time: SystemTime, out: &mut Vec<u8>) {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        if self.second != Some(secs) {
            self.prefix.clear();
            let (year, month, day) = civil_from_days(secs / 86_400);
            let of_day = secs % 86_400;
            let _ = write!(
                self.prefix,
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.",
                of_day / 3600,
                of_day / 60 % 60,
                of_day % 60,
            );
            self.second = Some(secs);
        }
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(&six_digits(since.subsec_micros()));
        out.push(b'Z');
    }
}

/// (year, month, day) of a day counted from 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn sample(route: Option<&str>, path: &str) -> Line {
        let mut line = Line::new(&http::Method::GET, path, route, Instant::now(), 200, "miss");
        line.latency = Duration::from_nanos(362_309);
        line
    }

    fn render(l: &Line, format: Format) -> String {
        // 2026-12-02T23:36:37.818627Z
        let time = UNIX_EPOCH + Duration::new(1_796_254_597, 818_627_901);
        let mut out = Vec::new();
        line(l, time, format, &mut Stamps::default(), &mut out);
        String::from_utf8(out).unwrap()
    }

    fn timestamp(time: SystemTime, out: &mut Vec<u8>) {
        Stamps::default().write(time, out);
    }

    #[test]
    fn latency_is_the_shortest_decimal_of_the_milliseconds() {
        for (nanos, text) in [
            (362_309, "0.362309"),
            (907, "0.000907"),
            (0, "0.0"),
            (3_000_000, "3.0"),
            (12_500_000, "12.5"),
            (1_234_567_891, "1234.567891"),
        ] {
            let mut out = Vec::new();
            millis(Duration::from_nanos(nanos), &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), text);
            let float = Duration::from_nanos(nanos).as_secs_f64() * 1000.0;
            assert!((text.parse::<f64>().unwrap() - float).abs() < 1e-9, "{text}");
        }
    }

    #[test]
    fn a_cached_second_still_gives_each_line_its_own_time() {
        let mut stamps = Stamps::default();
        let mut out = Vec::new();
        let base = UNIX_EPOCH + Duration::new(1_796_254_597, 0);
        for micros in [818_627, 5, 999_999] {
            stamps.write(base + Duration::from_micros(micros), &mut out);
            out.push(b' ');
        }
        stamps.write(base + Duration::from_secs(1), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-12-02T23:36:37.818627Z 2026-12-02T23:36:37.000005Z 2026-12-02T23:36:37.999999Z \
             2026-12-02T23:36:38.000000Z"
        );
    }

    #[test]
    fn the_clock_maps_instants_to_wall_time() {
        let clock = Clock::now();
        let earlier = clock.at.checked_sub(Duration::from_millis(5)).unwrap();
        assert_eq!(clock.wall(earlier), clock.wall - Duration::from_millis(5));
        assert_eq!(
            clock.wall(clock.at + Duration::from_millis(2)),
            clock.wall + Duration::from_millis(2)
        );
    }

    #[test]
    fn text_is_the_tracing_fmt_line() {
        assert_eq!(
            render(&sample(Some("api"), "/api/people/1"), Format::Text),
            "2026-12-02T23:36:37.818627Z  INFO patchgate::layer: request route=\"api\" method=GET \
             path=/api/people/1 status=200 latency_ms=0.362309 cache=\"miss\"\n"
        );
        let unrouted = render(&sample(None, "/nothing"), Format::Text);
        assert!(
            unrouted.contains(" route=\"-\" method=GET path=/nothing "),
            "{unrouted}"
        );
    }

    #[test]
    fn json_is_the_tracing_json_line_and_escapes() {
        assert_eq!(
            render(&sample(Some("api"), "/api/people/1"), Format::Json),
            "{\"timestamp\":\"2026-12-02T23:36:37.818627Z\",\"level\":\"INFO\",\"message\":\"request\",\
             \"route\":\"api\",\"method\":\"GET\",\"path\":\"/api/people/1\",\"status\":200,\
             \"latency_ms\":0.362309,\"cache\":\"miss\",\"target\":\"patchgate::layer\"}\n"
        );
        let long = "/a".repeat(100);
        let odd = render(&sample(Some("a\"b\\c"), &long), Format::Json);
        let value: serde_json::Value = serde_json::from_str(&odd).unwrap();
        assert_eq!(value["route"], "a\"b\\c");
        assert_eq!(value["path"], long.as_str(), "longer than the inline buffer");
        assert_eq!(value["status"], 200);
    }

    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];

    #[test]
    fn timestamps_agree_with_httpdate_over_centuries() {
        let mut secs: u64 = 0;
        while secs < 8_000_000_000 {
            let time = UNIX_EPOCH + Duration::from_secs(secs);
            let mut out = Vec::new();
            timestamp(time, &mut out);
            let ours = String::from_utf8(out).unwrap();
            let http = httpdate::fmt_http_date(time); // "Wed, 02 Dec 2026 23:36:37 GMT"
            let parsed = httpdate::parse_http_date(&http).unwrap();
            assert_eq!(parsed, time);
            let (y, rest) = ours.split_once('-').unwrap();
            assert!(http.contains(&format!(" {y} ")), "{ours} vs {http}");
            assert!(http.contains(&ours[11..19]), "{ours} vs {http}");
            let day = &rest[3..5];
            assert!(http.contains(&format!(", {day} ")), "{ours} vs {http}");
            let month: usize = rest[..2].parse().unwrap();
            assert!(http.contains(MONTHS[month - 1]), "{ours} vs {http}");
            secs += 86_400 * 17 + 3_607;
        }
    }
}
