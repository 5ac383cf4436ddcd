//! How the report writes numbers and dates: thousands separators, ratios, nanoseconds,
//! significant digits, seconds, megabytes.

/// Bytes in one MB, as the memory goal and the report use it (decimal megabytes).
pub(super) const MB: f64 = 1_000_000.0;

/// `12345` → `12,345`.
pub(super) fn fmt_count(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `2.10x`; fewer decimals for large ratios (`21.7x`, `217x`).
pub(super) fn fmt_ratio(x: f64) -> String {
    if !x.is_finite() {
        "n/a".into()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}x")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}x")
    } else {
        format!("{x:.2}x")
    }
}

/// Nanoseconds: one decimal below 1,000, whole numbers (with separators) above.
pub(super) fn fmt_ns(x: f64) -> String {
    if !x.is_finite() {
        "n/a".into()
    } else if x.abs() >= 1000.0 {
        fmt_count(x.round() as usize)
    } else {
        format!("{x:.1}")
    }
}

/// `x` with `digits` significant digits (no exponent), e.g. 0.00512 → `0.00512`, 1337 → `1337`.
pub(super) fn fmt_sig(x: f64, digits: i32) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    if x == 0.0 {
        return "0".into();
    }
    let mag = x.abs().log10().floor() as i32;
    let decimals = (digits - 1 - mag).max(0) as usize;
    format!("{x:.decimals$}")
}

/// `fmt_sig` without trailing zeros after the decimal point (4.30 → `4.3`, 10.0 → `10`).
pub(super) fn fmt_trim(x: f64, digits: i32) -> String {
    let s = fmt_sig(x, digits);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

pub(super) fn fmt_secs(x: f64) -> String {
    format!("{} s", fmt_trim(x, 3))
}

pub(super) fn fmt_mb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / MB)
}

/// `10, 1,000 or 100,000`.
pub(super) fn join_counts(v: &[usize]) -> String {
    let s: Vec<String> = v.iter().map(|&n| fmt_count(n)).collect();
    match s.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// The date part of an RFC 3339 time, or the whole text.
pub(super) fn date_of(t: &str) -> &str {
    t.get(..10).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting() {
        assert_eq!(fmt_count(0), "0");
        assert_eq!(fmt_count(999), "999");
        assert_eq!(fmt_count(1000), "1,000");
        assert_eq!(fmt_count(1234567), "1,234,567");
        assert_eq!(fmt_sig(4.3, 3), "4.30");
        assert_eq!(fmt_sig(0.00512, 3), "0.00512");
        assert_eq!(fmt_sig(1337.2, 3), "1337");
        assert_eq!(join_counts(&[10]), "10");
        assert_eq!(join_counts(&[10, 1000, 100_000]), "10, 1,000 or 100,000");
        assert_eq!(fmt_ratio(2.1), "2.10x");
        assert_eq!(fmt_ratio(21.73), "21.7x");
        assert_eq!(fmt_ratio(217.3), "217x");
        assert_eq!(fmt_trim(4.30, 3), "4.3");
        assert_eq!(fmt_trim(10.0, 3), "10");
        assert_eq!(fmt_trim(1337.0, 3), "1337");
    }
}
