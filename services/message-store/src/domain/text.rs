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

/// The part of `text` around the first match of the folded `query`, with the match wrapped
/// in `[[ ]]` and at most `radius` characters either side.
pub fn snippet(text: &str, folded_query: &str, radius: usize) -> String {
    // Fold character by character, remembering where each folded character came from.
    let chars: Vec<char> = text.chars().collect();
    let mut folded = String::new();
    let mut origin = Vec::new();
    for (index, c) in chars.iter().enumerate() {
        let piece = if c.is_whitespace() {
            " ".to_string()
        } else {
            fold(&c.to_string())
        };
        for folded_char in piece.chars() {
            folded.push(folded_char);
            origin.push(index);
        }
    }
    let folded_chars: Vec<char> = folded.chars().collect();
    let needle: Vec<char> = folded_query.chars().collect();
    let found = (!needle.is_empty() && needle.len() <= folded_chars.len())
        .then(|| {
            (0..=folded_chars.len() - needle.len())
                .find(|start| folded_chars[*start..*start + needle.len()] == needle[..])
        })
        .flatten();
    let Some(start) = found else {
        return chars.iter().take(radius * 2).collect();
    };
    let first = origin[start];
    let last = origin[start + needle.len() - 1];
    let from = first.saturating_sub(radius);
    let to = (last + 1 + radius).min(chars.len());
    let mut out = String::new();
    if from > 0 {
        out.push('…');
    }
    out.extend(&chars[from..first]);
    out.push_str("[[");
    out.extend(&chars[first..=last]);
    out.push_str("]]");
    out.extend(&chars[last + 1..to]);
    if to < chars.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{fold, snippet};

    #[test]
    fn snippets_mark_the_original_text() {
        assert_eq!(
            snippet("Chào shop, Khách hàng muốn đặt 2 áo", "khach hang", 100),
            "Chào shop, [[Khách hàng]] muốn đặt 2 áo"
        );
        assert_eq!(
            snippet("abcdefghij Đường xyz", "duong", 3),
            "…ij [[Đường]] xy…"
        );
        assert_eq!(snippet("no match here", "zzz", 4), "no match");
    }

    #[test]
    fn folds_vietnamese_to_plain_lowercase() {
        assert_eq!(fold("Khách hàng"), "khach hang");
        assert_eq!(fold("ĐƯỜNG Nguyễn Huệ"), "duong nguyen hue");
        assert_eq!(fold("đặt hàng"), "dat hang");
        assert_eq!(fold("Cảm ơn  shop\tnhiều!"), "cam on shop nhieu!");
        assert_eq!(fold("  Ừ  "), "u");
        assert_eq!(
            fold("Hỏi ngã sắc huyền nặng: ả ã á à ạ"),
            "hoi nga sac huyen nang: a a a a a"
        );
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
