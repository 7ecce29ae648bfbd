//! The multipart ItemOperations answer ([MS-ASCMD] 2.2.1.10.1.1
//! MultiPartResponse, asked for with `MS-ASAcceptMultiPart: T` or
//! `AcceptMultiPart=T`): a part count, then one (offset, length) pair per
//! part, then the parts. Every integer is 4 bytes, little-endian; an
//! offset counts from the start of the body. Part 0 is the WBXML answer,
//! whose `Part` elements (in place of `Data`) index the others, which are
//! raw bytes.
//!
//! The header is written from the parts' lengths alone ([`head`]), so the
//! parts themselves can follow as they come (the server streams them).
//! No I/O here.

/// `Content-Type` of a multipart answer.
pub const CONTENT_TYPE_MULTIPART: &str = "application/vnd.ms-sync.multipart";

/// Why a multipart body cannot be written or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    /// Offsets and lengths are 32-bit: the body cannot pass 2 GiB.
    #[error("multipart body over 2 GiB")]
    TooLarge,
    /// A body shorter than its own header, or a part outside the body.
    #[error("malformed multipart body: {0}")]
    Malformed(&'static str),
}

/// Bytes the header of a body of `parts` parts takes.
pub fn head_len(parts: usize) -> u64 {
    4 + 8 * parts as u64
}

/// The header (part count and offset/length table) of a body whose parts
/// have `lengths`, in order; the parts follow it back to back.
pub fn head(lengths: &[u64]) -> Result<Vec<u8>, MultipartError> {
    let max = i32::MAX as u64;
    let count = u32::try_from(lengths.len()).map_err(|_| MultipartError::TooLarge)?;
    let mut out = Vec::with_capacity(head_len(lengths.len()) as usize);
    out.extend_from_slice(&count.to_le_bytes());
    let mut offset = head_len(lengths.len());
    for len in lengths {
        let end = offset.checked_add(*len).ok_or(MultipartError::TooLarge)?;
        if end > max {
            return Err(MultipartError::TooLarge);
        }
        out.extend_from_slice(&(offset as u32).to_le_bytes());
        out.extend_from_slice(&(*len as u32).to_le_bytes());
        offset = end;
    }
    Ok(out)
}

/// A whole multipart body: [`head`] and the parts.
pub fn encode(parts: &[&[u8]]) -> Result<Vec<u8>, MultipartError> {
    let lengths: Vec<u64> = parts.iter().map(|p| p.len() as u64).collect();
    let mut out = head(&lengths)?;
    for p in parts {
        out.extend_from_slice(p);
    }
    Ok(out)
}

/// The parts of a multipart body, in table order.
pub fn decode(body: &[u8]) -> Result<Vec<&[u8]>, MultipartError> {
    let int = |at: usize| -> Result<usize, MultipartError> {
        let b = body
            .get(at..at + 4)
            .ok_or(MultipartError::Malformed("truncated header"))?;
        let v = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        usize::try_from(v).map_err(|_| MultipartError::Malformed("negative integer"))
    };
    let count = int(0)?;
    if head_len(count) > body.len() as u64 {
        return Err(MultipartError::Malformed("part table past the body"));
    }
    (0..count)
        .map(|i| {
            let offset = int(4 + 8 * i)?;
            let len = int(8 + 8 * i)?;
            offset
                .checked_add(len)
                .and_then(|end| body.get(offset..end))
                .ok_or(MultipartError::Malformed("part outside the body"))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_is_count_table_then_parts() {
        let body = encode(&[b"wbxml", b"", b"abc"]).unwrap();
        let mut want = Vec::new();
        for n in [3u32, 28, 5, 33, 0, 33, 3] {
            want.extend_from_slice(&n.to_le_bytes());
        }
        want.extend_from_slice(b"wbxmlabc");
        assert_eq!(body, want);
        assert_eq!(head_len(3), 28);
    }

    #[test]
    fn malformed_bodies_are_refused() {
        assert!(decode(b"").is_err());
        assert!(decode(&5u32.to_le_bytes()).is_err());
        let mut b = encode(&[b"abcd"]).unwrap();
        b.truncate(b.len() - 1);
        assert!(decode(&b).is_err());
        let mut neg = 1u32.to_le_bytes().to_vec();
        neg.extend_from_slice(&(-1i32).to_le_bytes());
        neg.extend_from_slice(&0u32.to_le_bytes());
        assert!(decode(&neg).is_err());
        assert_eq!(head(&[1u64 << 31]), Err(MultipartError::TooLarge));
    }

    proptest! {
        #[test]
        fn parts_come_back(parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8)) {
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            let body = encode(&refs).unwrap();
            prop_assert_eq!(decode(&body).unwrap(), refs);
        }
    }
}
