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
use std::time::{SystemTime, UNIX_EPOCH};

use super::Format;
use super::access::Line;

/// Appends `line` and a newline to `out`.
pub(super) fn line(line: &Line, format: Format, out: &mut Vec<u8>) {
    let route = line.route();
    let latency_ms = line.latency.as_secs_f64() * 1000.0;
    // Writes into a Vec cannot fail.
    let _ = match format {
        Format::Text => {
            timestamp(line.time, out);
            writeln!(
                out,
                "  INFO patchgate::layer: request route={route:?} method={} path={} status={} \
                 latency_ms={latency_ms:?} cache={:?}",
                line.method,
                line.path(),
                line.status,
                line.cache,
            )
        }
        Format::Json => {
            out.extend_from_slice(b"{\"timestamp\":\"");
            timestamp(line.time, out);
            out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\",\"route\":");
            json_string(route, out);
            out.extend_from_slice(b",\"method\":");
            json_string(line.method.as_str(), out);
            out.extend_from_slice(b",\"path\":");
            json_string(line.path(), out);
            let _ = write!(out, ",\"status\":{},\"latency_ms\":", line.status);
            let _ = serde_json::to_writer(&mut *out, &latency_ms);
            out.extend_from_slice(b",\"cache\":");
            json_string(line.cache, out);
            out.extend_from_slice(b",\"target\":\"patchgate::layer\"}\n");
            Ok(())
        }
    };
}

fn json_string(s: &str, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(&mut *out, s);
}

/// RFC 3339 in UTC with microseconds, as `tracing_subscriber::fmt::time::SystemTime`.
fn timestamp(time: SystemTime, out: &mut Vec<u8>) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let of_day = secs % 86_400;
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        since.subsec_micros()
    );
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
        let mut line =
            Line::start(&http::Method::GET, path).finish(route, 200, Duration::from_nanos(362_309), "miss");
        // 2026-12-02T23:36:37.818627Z
        line.time = UNIX_EPOCH + Duration::new(1_796_254_597, 818_627_901);
        line
    }

    fn render(l: &Line, format: Format) -> String {
        let mut out = Vec::new();
        line(l, format, &mut out);
        String::from_utf8(out).unwrap()
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
