//! Phone numbers to E.164, from every form Vietnamese customers and staff write them in:
//! `0912 345 678`, `0912.345.678`, `+84 912 345 678`, `84912345678`, `0084912345678`, the
//! 11-digit mobile prefixes retired in 2018 (`0162…` is now `032…`), and landlines
//! (`024 3825 1234`). Numbers of other countries must carry their `+` country code.

/// Mobile prefixes renumbered in 2018: old 4-digit prefix → new 3-digit prefix.
const RENUMBERED: &[(&str, &str)] = &[
    ("0120", "070"),
    ("0121", "079"),
    ("0122", "077"),
    ("0126", "076"),
    ("0128", "078"),
    ("0123", "083"),
    ("0124", "084"),
    ("0125", "085"),
    ("0127", "081"),
    ("0129", "082"),
    ("0162", "032"),
    ("0163", "033"),
    ("0164", "034"),
    ("0165", "035"),
    ("0166", "036"),
    ("0167", "037"),
    ("0168", "038"),
    ("0169", "039"),
    ("0186", "056"),
    ("0188", "058"),
    ("0199", "059"),
];

/// `+84912345678` for any accepted form; the error says what was expected.
pub fn normalize(raw: &str) -> Result<String, String> {
    let invalid = || {
        format!(
            "invalid phone \"{}\": expected a Vietnamese number like 0912 345 678 or +84912345678",
            raw.chars().take(32).collect::<String>()
        )
    };
    let trimmed = raw.trim();
    let plus = trimmed.starts_with('+');
    let mut digits = String::with_capacity(trimmed.len());
    for (index, c) in trimmed.chars().enumerate() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if index == 0 => {}
            ' ' | '.' | '-' | '(' | ')' => {}
            _ => return Err(invalid()),
        }
    }
    let national = if plus {
        match digits.strip_prefix("84") {
            Some(rest) => rest.to_string(),
            // Another country: keep it if it has a plausible E.164 length.
            None if (8..=15).contains(&digits.len()) => return Ok(format!("+{digits}")),
            None => return Err(invalid()),
        }
    } else if let Some(rest) = digits.strip_prefix("0084") {
        rest.to_string()
    } else if digits.len() == 11 && digits.starts_with("84") {
        digits[2..].to_string()
    } else if let Some((_, new)) = RENUMBERED
        .iter()
        .find(|(old, _)| digits.len() == 11 && digits.starts_with(old))
    {
        format!("{}{}", &new[1..], &digits[4..])
    } else if let Some(rest) = digits.strip_prefix('0') {
        rest.to_string()
    } else {
        return Err(invalid());
    };
    let national = national.strip_prefix('0').unwrap_or(&national).to_string();
    let valid = match national.chars().next() {
        // Mobile: 9 digits starting 3, 5, 7, 8 or 9.
        Some('3' | '5' | '7' | '8' | '9') => national.len() == 9,
        // Landline: area code 2xx and 7–8 digits, 10 digits in all.
        Some('2') => national.len() == 10,
        _ => false,
    };
    if valid && national.chars().all(|c| c.is_ascii_digit()) {
        Ok(format!("+84{national}"))
    } else {
        Err(invalid())
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn every_vietnamese_form_becomes_e164() {
        for raw in [
            "0912 345 678",
            "0912.345.678",
            "0912-345-678",
            "+84912345678",
            "+84 912 345 678",
            "84912345678",
            "0084912345678",
            "+840912345678",
            " (0912) 345678 ",
        ] {
            assert_eq!(normalize(raw).as_deref(), Ok("+84912345678"), "{raw}");
        }
    }

    #[test]
    fn retired_prefixes_and_landlines() {
        assert_eq!(normalize("01628 123 456").as_deref(), Ok("+84328123456"));
        assert_eq!(normalize("0199 1234567").as_deref(), Ok("+84591234567"));
        assert_eq!(normalize("024 3825 1234").as_deref(), Ok("+842438251234"));
        assert_eq!(normalize("+1 415 555 2671").as_deref(), Ok("+14155552671"));
    }

    #[test]
    fn rejects_what_is_not_a_phone() {
        for raw in [
            "abc",
            "",
            "0912",
            "09123456789",
            "0112345678",
            "+84",
            "091234567x",
            "12345",
        ] {
            let error = normalize(raw).expect_err(raw);
            assert!(error.starts_with("invalid phone"), "{error}");
        }
    }
}
