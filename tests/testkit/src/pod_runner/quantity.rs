//! Kubernetes resource quantities ("64Mi", "1.5G", "129e6") as byte counts, for memory limits.

/// The value of a quantity, rounded up to a whole number like `resource.Quantity.Value()` does.
/// `None` for text that is not a quantity.
pub(super) fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_end);
    let mut value: f64 = number.parse().ok()?;
    value *= match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        // A decimal exponent: "129e6", "1E3" (a bare "E" is the exa suffix, handled above).
        exponent => 10f64.powi(exponent.strip_prefix(['e', 'E'])?.parse().ok()?),
    };
    (value.is_finite() && value >= 0.0).then(|| value.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn binary_decimal_and_exponent_forms() {
        assert_eq!(parse_bytes("64Mi"), Some(64 * 1024 * 1024));
        assert_eq!(parse_bytes("1Gi"), Some(1 << 30));
        assert_eq!(parse_bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(parse_bytes("500M"), Some(500_000_000));
        assert_eq!(parse_bytes("128974848"), Some(128_974_848));
        assert_eq!(parse_bytes("129e6"), Some(129_000_000));
        assert_eq!(parse_bytes("1E"), Some(1_000_000_000_000_000_000));
        assert_eq!(parse_bytes("1500m"), Some(2));
    }

    #[test]
    fn rejects_what_is_not_a_quantity() {
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("12Xi"), None);
        assert_eq!(parse_bytes("-1Mi"), None);
        assert_eq!(parse_bytes(""), None);
    }
}
