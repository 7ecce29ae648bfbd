//! Email2 `ConversationId` ([MS-ASEMAIL] 2.2.2.21, 14.0+): which thread a
//! message belongs to, as the 16 opaque bytes a device groups by and sends
//! back in an ItemOperations `Move`.
//!
//! A thread is named by its root message: the first Message-ID of
//! `References`, else of `In-Reply-To`, else the message's own
//! `Message-ID` (RFC 5322 3.6.4), so a reply and its original agree. The id
//! is the first 16 bytes of the blake3 digest of that root. The same
//! function serves rendering (Sync, ItemOperations, Search) and the lookup
//! of a conversation's messages, so they cannot disagree. Pure: no I/O.

/// Length of a ConversationId in bytes (what Exchange sends).
pub const CONVERSATION_ID_LEN: usize = 16;

/// The ConversationId of a message from its raw (possibly folded) header
/// values; `None` when it has none of the three headers.
pub fn conversation_id(
    references: Option<&str>,
    in_reply_to: Option<&str>,
    message_id: Option<&str>,
) -> Option<[u8; CONVERSATION_ID_LEN]> {
    let root = root(references, in_reply_to, message_id)?;
    let digest = blake3::hash(root.as_bytes());
    let mut id = [0u8; CONVERSATION_ID_LEN];
    id.copy_from_slice(&digest.as_bytes()[..CONVERSATION_ID_LEN]);
    Some(id)
}

/// The root Message-ID (without brackets) that names a message's thread:
/// the first of `References`, else of `In-Reply-To`, else `Message-ID`.
pub fn root<'a>(
    references: Option<&'a str>,
    in_reply_to: Option<&'a str>,
    message_id: Option<&'a str>,
) -> Option<&'a str> {
    [references, in_reply_to, message_id]
        .into_iter()
        .flatten()
        .find_map(first_msg_id)
}

/// The first `<…>` of a header value (without the brackets), or the trimmed
/// value when it has no brackets; `None` when empty.
fn first_msg_id(value: &str) -> Option<&str> {
    let value = value.trim();
    let id = match value.find('<') {
        Some(start) => {
            let rest = &value[start + 1..];
            rest.find('>').map_or(rest, |end| &rest[..end]).trim()
        }
        None => value.split_whitespace().next().unwrap_or_default(),
    };
    (!id.is_empty()).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_joins_its_original() {
        let original = conversation_id(None, None, Some("<root@example.test>"));
        let reply = conversation_id(
            Some("<root@example.test>\r\n <second@example.test>"),
            Some("<second@example.test>"),
            Some("<third@example.test>"),
        );
        let only_in_reply_to =
            conversation_id(None, Some(" <root@example.test>"), Some("<x@example.test>"));
        assert!(original.is_some());
        assert_eq!(original, reply);
        assert_eq!(original, only_in_reply_to);
        assert_eq!(
            root(Some(" <root@example.test> <b@x>"), Some("<b@x>"), None),
            Some("root@example.test")
        );
    }

    #[test]
    fn different_threads_differ_and_empty_headers_have_none() {
        let a = conversation_id(None, None, Some("<a@example.test>"));
        let b = conversation_id(None, None, Some("<b@example.test>"));
        assert_ne!(a, b);
        assert_eq!(conversation_id(None, Some("  "), None), None);
        assert_eq!(conversation_id(None, None, None), None);
        // A bare id without brackets still names its thread.
        assert_eq!(conversation_id(None, None, Some("a@example.test")), a);
    }
}
