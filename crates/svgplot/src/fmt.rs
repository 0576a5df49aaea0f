//! Compact, deterministic number formatting for coordinates, tick labels and tooltips.

/// A coordinate in pixels: at most 2 decimals, trailing zeros dropped, never `-0`.
pub(crate) fn coord(v: f64) -> String {
    let s = trim_zeros(format!("{v:.2}"));
    if s == "-0" {
        "0".to_string()
    } else {
        s
    }
}

/// The shortest text that reads back as `v` (used for tick labels, whose values are already round):
/// plain notation for magnitudes in `[1e-4, 1e6)`, otherwise scientific (`1e-5`, `2.5e7`).
pub(crate) fn exact(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".to_string()
    } else if !(1e-4..1e6).contains(&a) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// A value for a tooltip: about 4 significant digits, scientific outside `[1e-3, 1e6)`.
pub(crate) fn brief(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".to_string()
    } else if !(1e-3..1e6).contains(&a) {
        let s = format!("{v:.3e}");
        match s.split_once('e') {
            Some((mantissa, exp)) => format!("{}e{exp}", trim_zeros(mantissa.to_string())),
            None => s,
        }
    } else {
        let decimals = (3 - a.log10().floor() as i32).max(0) as usize;
        trim_zeros(format!("{v:.decimals$}"))
    }
}

/// Drops trailing zeros after a decimal point, and the point itself if nothing follows it.
fn trim_zeros(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinates_are_compact() {
        assert_eq!(coord(12.0), "12");
        assert_eq!(coord(12.5), "12.5");
        assert_eq!(coord(1.0 / 3.0), "0.33");
        assert_eq!(coord(-0.001), "0");
        assert_eq!(coord(-2.345), "-2.35");
    }

    #[test]
    fn exact_and_brief_values() {
        assert_eq!(exact(0.3), "0.3");
        assert_eq!(exact(1e-5), "1e-5");
        assert_eq!(exact(2500000.0), "2.5e6");
        assert_eq!(exact(-40.0), "-40");
        assert_eq!(brief(0.0123456), "0.01235");
        assert_eq!(brief(25.314), "25.31");
        assert_eq!(brief(1.23456e-5), "1.235e-5");
        assert_eq!(brief(3.0e7), "3e7");
    }
}
