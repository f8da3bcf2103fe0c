//! Vietnamese-aware text folding, the one function used both to index and to query, on both
//! backends: lowercase, every diacritic removed, `đ` → `d`, whitespace collapsed. So "khach
//! hang" finds "Khách hàng" and "DUONG" finds "Đường".

use unicode_normalization::UnicodeNormalization;

/// Folds `text` for search.
pub fn fold(text: &str) -> String {
    let mut folded = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.nfd() {
        // Combining marks: Vietnamese tones and vowel marks after decomposition.
        if ('\u{0300}'..='\u{036f}').contains(&c) {
            continue;
        }
        if c.is_whitespace() {
            pending_space = !folded.is_empty();
            continue;
        }
        if pending_space {
            folded.push(' ');
            pending_space = false;
        }
        match c {
            // đ and Đ do not decompose: they are letters of their own.
            'đ' | 'Đ' => folded.push('d'),
            _ => folded.extend(c.to_lowercase()),
        }
    }
    folded
}

#[cfg(test)]
mod tests {
    use super::fold;

    #[test]
    fn folds_vietnamese_to_plain_lowercase() {
        assert_eq!(fold("Khách hàng"), "khach hang");
        assert_eq!(fold("ĐƯỜNG Nguyễn Huệ"), "duong nguyen hue");
        assert_eq!(fold("đặt hàng"), "dat hang");
        assert_eq!(fold("Cảm ơn  shop\tnhiều!"), "cam on shop nhieu!");
        assert_eq!(fold("  Ừ  "), "u");
        assert_eq!(fold("Hỏi ngã sắc huyền nặng: ả ã á à ạ"), "hoi nga sac huyen nang: a a a a a");
    }

    #[test]
    fn precomposed_and_decomposed_input_fold_alike() {
        let precomposed = "Tiếng Việt";
        let decomposed: String = "Tie\u{0302}\u{0301}ng Vie\u{0323}\u{0302}t".into();
        assert_eq!(fold(precomposed), fold(&decomposed));
        assert_eq!(fold(precomposed), "tieng viet");
    }

    #[test]
    fn folding_is_idempotent() {
        for text in ["Khách hàng", "ĐĂNG KÝ", "mua 2 cái áo"] {
            assert_eq!(fold(&fold(text)), fold(text));
        }
    }
}
