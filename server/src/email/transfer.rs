//! Content-Transfer-Encoding undone (and base64 done) a chunk at a time,
//! for attachments streamed from IMAP to the device: whatever the chunk
//! boundaries, the bytes out are those of decoding the whole at once.
//! Each coder carries at most a few bytes between chunks. No I/O.

/// A part's transfer encoding, as far as decoding goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// 7bit, 8bit, binary or none: the bytes as they are.
    Identity,
    /// base64 (RFC 2045 6.8): characters outside the alphabet are
    /// skipped, a quantum cut short by `=` gives its whole bytes.
    Base64,
    /// quoted-printable (RFC 2045 6.7): `=XX` is a byte, `=` at the end
    /// of a line a soft line break; a `=` followed by anything else stays.
    QuotedPrintable,
}

impl Encoding {
    /// The encoding a `Content-Transfer-Encoding` value names.
    pub fn of_header(value: &str) -> Encoding {
        let v = value.trim();
        if v.eq_ignore_ascii_case("base64") {
            Encoding::Base64
        } else if v.eq_ignore_ascii_case("quoted-printable") {
            Encoding::QuotedPrintable
        } else {
            Encoding::Identity
        }
    }
}

/// An incremental decoder.
#[derive(Debug, Clone)]
pub struct Decoder {
    encoding: Encoding,
    /// base64: the sextets of the quantum so far; quoted-printable: the
    /// bytes of an escape not complete yet (`=`, `=X`, `=\r`).
    carry: [u8; 4],
    carried: usize,
}

fn sextet(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

impl Decoder {
    /// A decoder of `encoding`.
    pub fn new(encoding: Encoding) -> Decoder {
        Decoder {
            encoding,
            carry: [0; 4],
            carried: 0,
        }
    }

    /// Decodes `input`, appending to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        match self.encoding {
            Encoding::Identity => out.extend_from_slice(input),
            Encoding::Base64 => self.base64(input, out),
            Encoding::QuotedPrintable => {
                for &b in input {
                    self.qp(b, out);
                }
            }
        }
    }

    /// The end of the input: what was held back goes out.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        match self.encoding {
            Encoding::Identity => {}
            Encoding::Base64 => self.flush_quantum(out),
            Encoding::QuotedPrintable => {
                // An escape cut by the end stays as it was.
                out.extend_from_slice(&self.carry[..self.carried]);
            }
        }
        self.carried = 0;
    }

    fn flush_quantum(&mut self, out: &mut Vec<u8>) {
        let s = &self.carry;
        match self.carried {
            2 => out.push(s[0] << 2 | s[1] >> 4),
            3 => out.extend_from_slice(&[s[0] << 2 | s[1] >> 4, s[1] << 4 | s[2] >> 2]),
            _ => {}
        }
        self.carried = 0;
    }

    fn base64(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            if b == b'=' {
                self.flush_quantum(out);
                continue;
            }
            let Some(v) = sextet(b) else { continue };
            self.carry[self.carried] = v;
            self.carried += 1;
            if self.carried == 4 {
                let s = self.carry;
                out.extend_from_slice(&[
                    s[0] << 2 | s[1] >> 4,
                    s[1] << 4 | s[2] >> 2,
                    s[2] << 6 | s[3],
                ]);
                self.carried = 0;
            }
        }
    }

    fn qp(&mut self, b: u8, out: &mut Vec<u8>) {
        if self.carried == 0 {
            if b == b'=' {
                self.carry[0] = b;
                self.carried = 1;
            } else {
                out.push(b);
            }
            return;
        }
        self.carry[self.carried] = b;
        self.carried += 1;
        let held = &self.carry[..self.carried];
        match held {
            // Soft line breaks.
            [b'=', b'\n'] | [b'=', b'\r', b'\n'] => self.carried = 0,
            [b'=', b'\r'] => {}
            [b'=', h] if hex(*h).is_some() => {}
            [b'=', h, l] if hex(*h).is_some() => match hex(*l) {
                Some(lo) => {
                    out.push(hex(*h).unwrap_or(0) << 4 | lo);
                    self.carried = 0;
                }
                None => self.not_an_escape(out),
            },
            _ => self.not_an_escape(out),
        }
    }

    /// The held bytes are no escape: the `=` stays as it is and what
    /// followed it is read again.
    fn not_an_escape(&mut self, out: &mut Vec<u8>) {
        let held = self.carry;
        let n = self.carried;
        self.carried = 0;
        out.push(b'=');
        for &b in &held[1..n] {
            self.qp(b, out);
        }
    }
}

/// Decodes all of `input` at once.
pub fn decode_all(encoding: Encoding, input: &[u8]) -> Vec<u8> {
    let mut d = Decoder::new(encoding);
    let mut out = Vec::with_capacity(input.len());
    d.feed(input, &mut out);
    d.finish(&mut out);
    out
}

/// An incremental base64 encoder (standard alphabet, padded, no line
/// breaks): the `Data` of an inline ItemOperations answer, streamed.
#[derive(Debug, Clone, Default)]
pub struct Base64Encoder {
    carry: [u8; 2],
    carried: usize,
}

impl Base64Encoder {
    /// The encoded length of `n` bytes.
    pub fn encoded_len(n: u64) -> u64 {
        n.div_ceil(3) * 4
    }

    /// Encodes `input`, appending to `out`; up to two bytes wait for the next.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut input = input;
        if self.carried > 0 {
            let need = 3 - self.carried;
            if input.len() < need {
                self.carry[self.carried..self.carried + input.len()].copy_from_slice(input);
                self.carried += input.len();
                return;
            }
            let mut q = [0u8; 3];
            q[..self.carried].copy_from_slice(&self.carry[..self.carried]);
            q[self.carried..].copy_from_slice(&input[..need]);
            push_base64(&q, out);
            input = &input[need..];
            self.carried = 0;
        }
        let whole = input.len() / 3 * 3;
        let (now, later) = input.split_at(whole);
        push_base64(now, out);
        self.carry[..later.len()].copy_from_slice(later);
        self.carried = later.len();
    }

    /// The last bytes, padded.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let rest = &self.carry[..self.carried];
        push_base64(rest, out);
        self.carried = 0;
    }
}

/// Appends the base64 of `data` (whole quanta, or the padded last one).
fn push_base64(data: &[u8], out: &mut Vec<u8>) {
    use base64::Engine as _;
    let at = out.len();
    out.resize(
        at + Base64Encoder::encoded_len(data.len() as u64) as usize,
        0,
    );
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(data, &mut out[at..])
        .unwrap_or(0);
    out.truncate(at + written);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;
    use base64::Engine as _;
    use proptest::prelude::*;

    fn chunked(encoding: Encoding, input: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut d = Decoder::new(encoding);
        let mut out = Vec::new();
        let mut at = 0;
        for c in cuts {
            let c = (*c).min(input.len()).max(at);
            d.feed(&input[at..c], &mut out);
            at = c;
        }
        d.feed(&input[at..], &mut out);
        d.finish(&mut out);
        out
    }

    #[test]
    fn base64_with_line_breaks_and_padding() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let enc = base64::engine::general_purpose::STANDARD.encode(&data);
        let wrapped: Vec<u8> = enc
            .as_bytes()
            .chunks(76)
            .flat_map(|l| l.iter().copied().chain(*b"\r\n"))
            .collect();
        assert_eq!(decode_all(Encoding::Base64, &wrapped), data);
        assert_eq!(decode_all(Encoding::Base64, b"YQ=="), b"a");
        assert_eq!(decode_all(Encoding::Base64, b"YWI="), b"ab");
        assert_eq!(decode_all(Encoding::Base64, b"YWI"), b"ab");
    }

    #[test]
    fn quoted_printable_escapes_and_soft_breaks() {
        let qp = b"caf=C3=A9 =\r\nsuite=\nfin = pas=3d=3Dx=\r=ZZ\r\n";
        assert_eq!(
            decode_all(Encoding::QuotedPrintable, qp),
            "café suitefin = pas==x=\r=ZZ\r\n".as_bytes()
        );
        assert_eq!(decode_all(Encoding::QuotedPrintable, b"end="), b"end=");
        assert_eq!(decode_all(Encoding::QuotedPrintable, b"end=4"), b"end=4");
    }

    #[test]
    fn base64_encoder_matches_the_engine() {
        let data: Vec<u8> = (0..100u8).collect();
        for split in 0..data.len() {
            let mut e = Base64Encoder::default();
            let mut out = Vec::new();
            e.feed(&data[..split], &mut out);
            e.feed(&data[split..], &mut out);
            e.finish(&mut out);
            assert_eq!(
                out,
                base64::engine::general_purpose::STANDARD
                    .encode(&data)
                    .into_bytes()
            );
        }
        assert_eq!(Base64Encoder::encoded_len(100), 136);
    }

    proptest! {
        #[test]
        fn chunk_boundaries_do_not_matter(
            data in proptest::collection::vec(any::<u8>(), 0..400),
            cuts in proptest::collection::vec(0usize..600, 0..6),
            enc in 0..3u8,
        ) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let (encoding, input) = match enc {
                0 => (Encoding::Identity, data.clone()),
                1 => {
                    let e = base64::engine::general_purpose::STANDARD.encode(&data);
                    let wrapped: Vec<u8> = e.as_bytes().chunks(76)
                        .flat_map(|l| l.iter().copied().chain(*b"\r\n")).collect();
                    prop_assert_eq!(decode_all(Encoding::Base64, &wrapped), data.clone());
                    (Encoding::Base64, wrapped)
                }
                // Arbitrary bytes as quoted-printable input: escapes,
                // soft breaks and stray `=` anywhere.
                _ => (Encoding::QuotedPrintable, data.clone()),
            };
            prop_assert_eq!(chunked(encoding, &input, &cuts), decode_all(encoding, &input));
        }

        #[test]
        fn encoder_chunks_do_not_matter(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            cuts in proptest::collection::vec(0usize..300, 0..6),
        ) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut e = Base64Encoder::default();
            let mut out = Vec::new();
            let mut at = 0;
            for c in cuts {
                let c = c.min(data.len()).max(at);
                e.feed(&data[at..c], &mut out);
                at = c;
            }
            e.feed(&data[at..], &mut out);
            e.finish(&mut out);
            prop_assert_eq!(out.len() as u64, Base64Encoder::encoded_len(data.len() as u64));
            prop_assert_eq!(out, base64::engine::general_purpose::STANDARD.encode(&data).into_bytes());
        }
    }
}
