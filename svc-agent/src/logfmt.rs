//! How the agent's log lines show values: lists as `a, b, c` (never a Rust debug
//! struct), durations in milliseconds rounded to hundredths, long lists cut short.
use std::fmt::Display;

/// How many Services a "synced" line names before it says "and N more".
pub const SERVICES_SHOWN: usize = 10;

/// `items` separated by ", "; `empty` when there is none.
pub fn comma_list<T: Display>(items: impl IntoIterator<Item = T>, empty: &str) -> String {
    let list = items
        .into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if list.is_empty() {
        empty.to_string()
    } else {
        list
    }
}

/// The first `max` of `items` separated by ", ", then " and N more" for the rest; `empty`
/// when there is none.
pub fn cut_list<T: Display>(
    items: impl ExactSizeIterator<Item = T>,
    max: usize,
    empty: &str,
) -> String {
    let total = items.len();
    let shown = comma_list(items.take(max), "");
    match (total, total.saturating_sub(max)) {
        (0, _) => empty.to_string(),
        (_, 0) => shown,
        _ if shown.is_empty() => format!("{total} more"),
        (_, rest) => format!("{shown} and {rest} more"),
    }
}

/// Milliseconds rounded to hundredths (`1.8918940000000002` -> `1.89`), still a number for
/// whoever parses the log.
pub fn ms(millis: f64) -> f64 {
    (millis * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_read_as_text() {
        let ips: Vec<std::net::IpAddr> =
            vec!["192.0.2.1".parse().unwrap(), "fd00::1".parse().unwrap()];
        assert_eq!(comma_list(&ips, "none"), "192.0.2.1, fd00::1");
        assert_eq!(comma_list(Vec::<String>::new(), "none"), "none");
        assert_eq!(comma_list(["x"], "none"), "x");
    }

    #[test]
    fn long_lists_are_cut() {
        let names: Vec<String> = (0..13).map(|i| format!("default/s{i}")).collect();
        assert_eq!(
            cut_list(names.iter(), 10, "none"),
            "default/s0, default/s1, default/s2, default/s3, default/s4, default/s5, \
             default/s6, default/s7, default/s8, default/s9 and 3 more"
        );
        assert_eq!(
            cut_list(names[..2].iter(), 10, "none"),
            "default/s0, default/s1"
        );
        assert_eq!(
            cut_list(names[..10].iter(), 10, "none")
                .matches(", ")
                .count(),
            9
        );
        assert!(!cut_list(names[..10].iter(), 10, "none").contains("more"));
        assert_eq!(cut_list(names[..0].iter(), 10, "none"), "none");
        assert_eq!(cut_list(names.iter(), 0, "none"), "13 more");
    }

    #[test]
    fn durations_are_rounded() {
        assert_eq!(ms(1.891_894_000_000_000_2).to_string(), "1.89");
        assert_eq!(ms(0.270_391).to_string(), "0.27");
        assert_eq!(ms(0.296).to_string(), "0.3");
        assert_eq!(ms(187.083_562).to_string(), "187.08");
        assert_eq!(ms(0.001).to_string(), "0");
        // As tracing prints an f64 field (Debug).
        assert_eq!(format!("{:?}", ms(1.891_894)), "1.89");
        assert_eq!(format!("{:?}", ms(2.0)), "2.0");
    }
}
