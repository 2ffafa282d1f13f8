//! Equality as the RFC 6902 §4.6 `test` operation defines it: numbers by value, objects
//! regardless of member order, arrays element by element.
//!
//! Numbers are compared exactly from their decimal text (never through `f64`): big integers
//! stay exact and `1e999999999` costs no more than its own digits.

use std::collections::HashMap;

use super::json::{Json, Object};
use super::scan::materialize;

/// RFC 6902 §4.6: whether `a` and `b` are "equal".
/// `src`: the source of raw spans in `a` or `b` (an indexed document), parsed to compare.
pub(super) fn equal(a: &Json, b: &Json, src: &[u8]) -> bool {
    match (a, b) {
        (Json::Raw(_), _) | (_, Json::Raw(_)) => equal(&materialize(a, src), &materialize(b, src), src),
        (Json::Null, Json::Null) => true,
        (Json::Bool(x), Json::Bool(y)) => x == y,
        (Json::Number(x), Json::Number(y)) => numbers_equal(x, y),
        (Json::String(x), Json::String(y)) => x == y,
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| equal(a, b, src))
        }
        (Json::Object(x), Json::Object(y)) => objects_equal(x, y, src),
        _ => false,
    }
}

/// Same member names (names are unique within an object) with equal values.
fn objects_equal(x: &Object, y: &Object, src: &[u8]) -> bool {
    if x.len() != y.len() {
        return false;
    }
    if y.len() <= 16 {
        return x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w, src)));
    }
    let index: HashMap<&str, &Json> = y.iter().collect();
    x.iter()
        .all(|(k, v)| index.get(k).is_some_and(|w| equal(v, w, src)))
}

/// RFC 6902 §4.6 "numbers: are considered equal if their values are numerically equal".
pub(super) fn numbers_equal(a: &str, b: &str) -> bool {
    match (Decimal::parse(a), Decimal::parse(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// A number as `sign × 0.digits × 10^exponent`, unique for each value.
#[derive(Debug, PartialEq, Eq)]
enum Decimal {
    Zero,
    NonZero {
        negative: bool,
        /// Significant digits (0–9), no leading or trailing zero.
        digits: Vec<u8>,
        exponent: BigInt,
    },
}

impl Decimal {
    /// Parses RFC 8259 §6 number text; `None` if it is not such text.
    fn parse(text: &str) -> Option<Decimal> {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exp) = match rest.find(['e', 'E']) {
            Some(i) => (rest.get(..i)?, Some(rest.get(i + 1..)?)),
            None => (rest, None),
        };
        let (int, frac) = match mantissa.split_once('.') {
            Some((int, frac)) => (int, frac),
            None => (mantissa, ""),
        };
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || !all_digits(int) || !all_digits(frac) {
            return None;
        }
        let exp = match exp {
            None => BigInt::zero(),
            Some(e) => BigInt::parse(e)?,
        };
        let all: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
        let Some(first) = all.iter().position(|&d| d != 0) else {
            return Some(Decimal::Zero);
        };
        let last = all.iter().rposition(|&d| d != 0).unwrap_or(first);
        let digits = all.get(first..=last)?.to_vec();
        // value = int.frac × 10^exp = 0.digits × 10^(exp + len(int) - leading zeros)
        let point = i128::try_from(int.len()).ok()? - i128::try_from(first).ok()?;
        Some(Decimal::NonZero {
            negative,
            digits,
            exponent: exp.add(point),
        })
    }
}

/// An integer of any size (exponents can be written with any number of digits).
#[derive(Debug, PartialEq, Eq)]
struct BigInt {
    negative: bool,
    /// Magnitude digits (0–9), most significant first, no leading zero; empty for 0.
    digits: Vec<u8>,
}

impl BigInt {
    fn zero() -> BigInt {
        BigInt {
            negative: false,
            digits: Vec::new(),
        }
    }

    /// `[+-]?[0-9]+`
    fn parse(text: &str) -> Option<BigInt> {
        let (negative, digits) = match text.as_bytes().first() {
            Some(b'-') => (true, text.get(1..)?),
            Some(b'+') => (false, text.get(1..)?),
            _ => (false, text),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let digits: Vec<u8> = digits
            .bytes()
            .skip_while(|&b| b == b'0')
            .map(|b| b - b'0')
            .collect();
        Some(BigInt::normalized(negative, digits))
    }

    fn normalized(negative: bool, digits: Vec<u8>) -> BigInt {
        let start = digits.iter().position(|&d| d != 0).unwrap_or(digits.len());
        let digits = digits.get(start..).unwrap_or_default().to_vec();
        BigInt {
            negative: negative && !digits.is_empty(),
            digits,
        }
    }

    /// `self + k`, exact.
    fn add(self, k: i128) -> BigInt {
        let k_negative = k < 0;
        let k = k.unsigned_abs();
        if self.negative == k_negative || self.digits.is_empty() {
            let negative = if self.digits.is_empty() {
                k_negative
            } else {
                self.negative
            };
            return BigInt::normalized(negative, add_magnitude(&self.digits, k));
        }
        // Opposite signs: subtract the smaller magnitude from the larger.
        let small = small_magnitude(&self.digits);
        match small {
            Some(m) if m < k => BigInt::normalized(k_negative, decimal_digits(k - m)),
            _ => BigInt::normalized(self.negative, sub_magnitude(&self.digits, k)),
        }
    }
}

/// The magnitude as u128, `None` when it does not fit (and so exceeds any `k`).
fn small_magnitude(digits: &[u8]) -> Option<u128> {
    digits
        .iter()
        .try_fold(0u128, |acc, &d| acc.checked_mul(10)?.checked_add(u128::from(d)))
}

fn decimal_digits(mut n: u128) -> Vec<u8> {
    let mut out = Vec::new();
    while n > 0 {
        out.push((n % 10) as u8);
        n /= 10;
    }
    out.reverse();
    out
}

fn add_magnitude(digits: &[u8], k: u128) -> Vec<u8> {
    let mut out = digits.to_vec();
    let mut carry = k;
    for d in out.iter_mut().rev() {
        if carry == 0 {
            break;
        }
        let sum = u128::from(*d) + carry % 10;
        carry = carry / 10 + sum / 10;
        *d = (sum % 10) as u8;
    }
    let mut head = decimal_digits(carry);
    head.extend_from_slice(&out);
    head
}

/// `digits - k`; the caller ensures `digits >= k`.
fn sub_magnitude(digits: &[u8], k: u128) -> Vec<u8> {
    let mut out = digits.to_vec();
    let mut borrow = k;
    for d in out.iter_mut().rev() {
        if borrow == 0 {
            break;
        }
        let take = (borrow % 10) as u8;
        borrow /= 10;
        if *d >= take {
            *d -= take;
        } else {
            *d = *d + 10 - take;
            borrow += 1;
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::patch::parse::parse;

    fn json(text: &str) -> Json {
        parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn numbers_equal_by_value_whatever_the_spelling() {
        for (a, b) in [
            ("1", "1.0"),
            ("1", "1e0"),
            ("1", "10e-1"),
            ("1", "0.1e1"),
            ("1", "1E+0"),
            ("100", "1e2"),
            ("100", "1E2"),
            ("100", "1e+2"),
            ("-0", "0"),
            ("-0.0", "0e5"),
            ("0.1000", "0.1"),
            ("0.1", "1e-1"),
            ("-12.5", "-125e-1"),
            ("12345678901234567890123", "12345678901234567890123.000"),
            ("12345678901234567890123", "1.2345678901234567890123e22"),
            ("1e999999999", "10e999999998"),
            (
                "1e999999999999999999999999999999999999999999",
                "0.1e1000000000000000000000000000000000000000000",
            ),
            (
                "1e-999999999999999999999999999999999999999999",
                "10e-1000000000000000000000000000000000000000000",
            ),
            (
                "1e1000000000000000000000000000000",
                "100000e999999999999999999999999999995",
            ),
            ("1e00000000000000000000000000000000000000000005", "100000"),
        ] {
            assert!(numbers_equal(a, b), "{a} == {b}");
            assert!(numbers_equal(b, a), "{b} == {a}");
        }
    }

    #[test]
    fn numbers_differ_when_values_differ() {
        for (a, b) in [
            ("1", "-1"),
            ("1", "1.0000000000000000000001"),
            ("12345678901234567890123", "12345678901234567890124"),
            ("1e999999999", "1e999999998"),
            (
                "1e999999999999999999999999999999999999999999",
                "1e999999999999999999999999999999999999999998",
            ),
            (
                "1e999999999999999999999999999999999999999999",
                "-1e999999999999999999999999999999999999999999",
            ),
            (
                "1e999999999999999999999999999999999999999999",
                "1e-999999999999999999999999999999999999999999",
            ),
            ("0.1", "0.01"),
            ("2", "20e-2"),
        ] {
            assert!(!numbers_equal(a, b), "{a} != {b}");
            assert!(!numbers_equal(b, a), "{b} != {a}");
        }
    }

    #[test]
    fn exponent_arithmetic_crosses_digit_counts() {
        let big = BigInt::parse("-1000000000000000000000000000000000000000000").unwrap();
        assert_eq!(
            big.add(1),
            BigInt::parse("-999999999999999999999999999999999999999999").unwrap()
        );
        assert_eq!(BigInt::parse("-5").unwrap().add(5), BigInt::zero());
        assert_eq!(BigInt::parse("-5").unwrap().add(7), BigInt::parse("2").unwrap());
        assert_eq!(BigInt::parse("99").unwrap().add(1), BigInt::parse("100").unwrap());
        assert_eq!(BigInt::parse("0").unwrap().add(-3), BigInt::parse("-3").unwrap());
    }

    #[test]
    fn strings_are_not_numbers() {
        assert!(!equal(&json("\"10\""), &json("10"), &[]));
        assert!(!equal(&json("10"), &json("\"10\""), &[]));
    }

    #[test]
    fn objects_equal_regardless_of_member_order() {
        assert!(equal(
            &json(r#"{"a":1,"b":[1,{"c":2}]}"#),
            &json(r#"{"b":[1.0,{"c":2e0}],"a":1}"#),
            &[]
        ));
        assert!(!equal(&json(r#"{"a":1}"#), &json(r#"{"a":1,"b":2}"#), &[]));
        assert!(!equal(&json(r#"{"a":1}"#), &json(r#"{"b":1}"#), &[]));
    }

    #[test]
    fn large_objects_compare_through_an_index() {
        let a: String = (0..40)
            .map(|i| format!("\"k{i}\":{i}"))
            .collect::<Vec<_>>()
            .join(",");
        let b: String = (0..40)
            .rev()
            .map(|i| format!("\"k{i}\":{i}.0"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(equal(&json(&format!("{{{a}}}")), &json(&format!("{{{b}}}")), &[]));
        let c = b.replace("\"k7\":7.0", "\"k7\":8");
        assert!(!equal(
            &json(&format!("{{{a}}}")),
            &json(&format!("{{{c}}}")),
            &[]
        ));
    }

    #[test]
    fn arrays_compare_element_by_element() {
        assert!(equal(&json("[1,[2]]"), &json("[1.0,[2e0]]"), &[]));
        assert!(!equal(&json("[1,2]"), &json("[2,1]"), &[]));
        assert!(!equal(&json("[1]"), &json("[1,1]"), &[]));
        assert!(!equal(&json("null"), &json("false"), &[]));
        assert!(!equal(&json("[]"), &json("{}"), &[]));
    }
}
