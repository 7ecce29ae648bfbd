//! EAS Categories as IMAP keywords, both ways.
//!
//! A phone's categories are free text ("Red category", "Büro"); an IMAP
//! keyword is an atom: printable ASCII without space or specials. And a
//! message's keywords are not all categories: other clients keep their
//! own state there (`$MDNSent`, `$Forwarded`, `$Junk`, `NonJunk`,
//! Thunderbird's `$label1`…), which a phone must neither show nor remove
//! when it replaces the message's categories.
//!
//! So a category is written as the keyword its text gives in modified
//! UTF-7 (RFC 3501 §5.1.3, as mailbox names), with every character an
//! atom cannot hold put in base64 too ([`utf7::encode_shifting`]): the
//! keyword reads back as the same text, and plain one-word categories
//! ("Work") are their own keyword, as other clients see them. A keyword
//! is shown as a category unless it begins with `$` (the IMAP keyword
//! registry's convention, RFC 5788) or is one of the junk-mail keywords
//! in use without it; a category that would read as one of those has its
//! first character encoded, so that it stays a category. A keyword that
//! is not valid modified UTF-7 (another client's `Tom&Jerry`) is shown as
//! it is. Pure functions, no I/O.

use crate::backends::imap::utf7;

/// Keywords without `$` that clients use for junk-mail state.
const JUNK_KEYWORDS: [&str; 3] = ["Junk", "NonJunk", "NotJunk"];

/// Whether an IMAP keyword is another client's state, never a category.
fn is_state(keyword: &str) -> bool {
    keyword.starts_with('$')
        || JUNK_KEYWORDS
            .iter()
            .any(|j| j.eq_ignore_ascii_case(keyword))
}

/// Whether a character may stand in an IMAP atom as it is (`&` is escaped
/// by the encoding itself).
fn atom_char(c: char) -> bool {
    ('!'..='~').contains(&c) && !matches!(c, '(' | ')' | '{' | '%' | '*' | '"' | '\\' | ']')
}

/// The IMAP keyword that stores a category (`None` for an empty one).
pub fn keyword_of(category: &str) -> Option<String> {
    if category.is_empty() {
        return None;
    }
    let first_too = is_state(category);
    Some(utf7::encode_shifting(category, |i, c| {
        !atom_char(c) || (i == 0 && first_too)
    }))
}

/// The category an IMAP keyword shows, if it is one.
pub fn category_of(keyword: &str) -> Option<String> {
    if keyword.is_empty() || is_state(keyword) {
        return None;
    }
    Some(utf7::decode_lenient(keyword).unwrap_or_else(|_| keyword.to_owned()))
}

/// The categories of a message's keywords, each once, in their order.
pub fn categories_of(keywords: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(keywords.len());
    for name in keywords.iter().filter_map(|k| category_of(k)) {
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// The keyword changes that make a message's categories the device's
/// `categories` (a Sync Change carries the whole list): the keywords to
/// remove (categories the device dropped) and those to add (categories
/// the message lacks). Keywords that are not categories are left alone.
pub fn replace(current: &[String], categories: &[String]) -> (Vec<String>, Vec<String>) {
    let mut remove = Vec::new();
    let mut present = Vec::new();
    for k in current {
        match category_of(k) {
            Some(name) if categories.contains(&name) => present.push(name),
            Some(_) => remove.push(k.clone()),
            None => {}
        }
    }
    let mut add: Vec<String> = Vec::new();
    for c in categories.iter().filter(|c| !present.contains(c)) {
        if let Some(k) = keyword_of(c) {
            if !add.contains(&k) {
                add.push(k);
            }
        }
    }
    (remove, add)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;
    use crate::backends::imap::parse::is_atom;
    use proptest::prelude::*;

    #[test]
    fn one_word_categories_are_their_own_keyword() {
        assert_eq!(keyword_of("Work").as_deref(), Some("Work"));
        assert_eq!(category_of("Work").as_deref(), Some("Work"));
    }

    #[test]
    fn other_clients_state_is_not_a_category() {
        for k in [
            "$MDNSent",
            "$Forwarded",
            "$label1",
            "$Junk",
            "Junk",
            "nonjunk",
            "NotJunk",
        ] {
            assert_eq!(category_of(k), None, "{k}");
        }
        let shown = categories_of(&["$MDNSent".into(), "Work".into(), "NonJunk".into()]);
        assert_eq!(shown, vec!["Work".to_owned()]);
    }

    #[test]
    fn categories_that_look_like_state_stay_categories() {
        for c in ["$money", "Junk", "nonjunk"] {
            let k = keyword_of(c).unwrap();
            assert_ne!(k, c);
            assert!(is_atom(&k), "{k}");
            assert_eq!(category_of(&k).as_deref(), Some(c));
        }
    }

    #[test]
    fn spaces_specials_and_non_ascii_are_encoded() {
        let k = keyword_of("Red category").unwrap();
        assert_eq!(k, "Red&ACA-category");
        assert_eq!(category_of(&k).as_deref(), Some("Red category"));
        for c in [
            "Büro",
            "a(b)c",
            "100%",
            "\"q\"",
            "x\\y",
            "a]b",
            "*",
            "{",
            "Tom & Jerry",
            "日本語",
        ] {
            let k = keyword_of(c).unwrap();
            assert!(is_atom(&k), "{c} -> {k}");
            assert_eq!(category_of(&k).as_deref(), Some(c));
        }
        assert_eq!(keyword_of(""), None);
    }

    #[test]
    fn a_keyword_that_is_not_modified_utf7_shows_as_it_is() {
        assert_eq!(category_of("Tom&Jerry").as_deref(), Some("Tom&Jerry"));
    }

    #[test]
    fn replacing_keeps_other_state_and_present_categories() {
        let current: Vec<String> = ["$MDNSent", "Work", "Red&ACA-category", "NonJunk", "Old"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let wanted: Vec<String> = ["Red category", "Büro"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (remove, add) = replace(&current, &wanted);
        assert_eq!(remove, vec!["Work".to_owned(), "Old".to_owned()]);
        assert_eq!(add, vec![keyword_of("Büro").unwrap()]);
        // A category already stored under another spelling is not added again.
        let (remove, add) = replace(&["Tom&Jerry".to_owned()], &["Tom&Jerry".to_owned()]);
        assert!(remove.is_empty() && add.is_empty(), "{remove:?} {add:?}");
    }

    proptest! {
        /// Any category becomes an atom that reads back as it, and is a category.
        #[test]
        fn every_category_round_trips(c in "\\PC{1,24}") {
            let k = keyword_of(&c).unwrap();
            prop_assert!(is_atom(&k), "{:?} -> {:?}", c, k);
            prop_assert_eq!(category_of(&k), Some(c));
        }
    }
}
