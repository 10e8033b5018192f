//! The DATA decoder: turns the bytes a client sends after `354` into the
//! stored message.
//!
//! Only `<CRLF>.<CRLF>` ends the message. A dot after a bare LF or a bare CR
//! is content, never an end (SMTP smuggling), so `<LF>.<LF>`, `<LF>.<CRLF>`,
//! `<CR>.<CR>` and `<CRLF>.<LF>` pass through as text. Bare-LF line ends become
//! CRLF; a bare CR is kept. Dot-unstuffing removes the first dot of a line that
//! follows a real CRLF, exactly as RFC 5321 §4.5.2 describes.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineStart {
    /// After a CRLF from the client (or right after the DATA command).
    AfterCrlf,
    /// After a bare LF, which we normalise but never treat as a line the
    /// terminator could start.
    AfterBareLf,
    Inside,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Nothing,
    /// A CR whose meaning depends on the next byte.
    Cr,
    /// A dot at the start of a line after CRLF: stuffing or the terminator.
    Dot,
    /// `.` + CR at the start of a line after CRLF: the terminator if LF follows.
    DotCr,
}

pub struct DataDecoder {
    line: LineStart,
    pending: Pending,
    ended: bool,
}

impl Default for DataDecoder {
    fn default() -> Self {
        DataDecoder {
            line: LineStart::AfterCrlf,
            pending: Pending::Nothing,
            ended: false,
        }
    }
}

impl DataDecoder {
    /// Decodes `input` into `out`; returns how many input bytes belong to the
    /// message (the terminator included). Bytes after that are the client's
    /// next commands.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        let mut i = 0;
        while i < input.len() && !self.ended {
            if self.pending == Pending::Nothing && self.line == LineStart::Inside {
                // Fast path: copy up to the next CR or LF.
                let rest = &input[i..];
                let run = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
                out.extend_from_slice(&rest[..run]);
                i += run;
                if i == input.len() {
                    break;
                }
            }
            self.step(input[i], out);
            i += 1;
        }
        i
    }

    pub fn is_done(&self) -> bool {
        self.ended
    }

    fn step(&mut self, byte: u8, out: &mut Vec<u8>) {
        match self.pending {
            Pending::Dot => match byte {
                b'\r' => self.pending = Pending::DotCr,
                b'\n' => {
                    out.extend_from_slice(b".\r\n");
                    self.pending = Pending::Nothing;
                    self.line = LineStart::AfterBareLf;
                }
                _ => {
                    // The stuffed dot goes; this byte starts the line's text.
                    self.pending = Pending::Nothing;
                    self.line = LineStart::Inside;
                    self.plain(byte, out);
                }
            },
            Pending::DotCr => {
                self.pending = Pending::Nothing;
                if byte == b'\n' {
                    self.ended = true;
                } else {
                    // `.` CR x: a line with a stuffed dot and a bare CR.
                    out.push(b'\r');
                    self.line = LineStart::Inside;
                    self.plain(byte, out);
                }
            }
            Pending::Cr => {
                self.pending = Pending::Nothing;
                if byte == b'\n' {
                    out.extend_from_slice(b"\r\n");
                    self.line = LineStart::AfterCrlf;
                } else {
                    out.push(b'\r');
                    self.line = LineStart::Inside;
                    self.plain(byte, out);
                }
            }
            Pending::Nothing => self.plain(byte, out),
        }
    }

    fn plain(&mut self, byte: u8, out: &mut Vec<u8>) {
        match byte {
            b'.' if self.line == LineStart::AfterCrlf => self.pending = Pending::Dot,
            b'\r' => self.pending = Pending::Cr,
            b'\n' => {
                out.extend_from_slice(b"\r\n");
                self.line = LineStart::AfterBareLf;
            }
            _ => {
                out.push(byte);
                self.line = LineStart::Inside;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DataDecoder;

    /// Decodes `input` fed in pieces of `step` bytes; returns the message and
    /// the bytes left after the terminator, or None if it never ended.
    fn decode(input: &[u8], step: usize) -> Option<(Vec<u8>, Vec<u8>)> {
        let mut decoder = DataDecoder::default();
        let mut out = Vec::new();
        let mut offset = 0;
        while offset < input.len() {
            let end = (offset + step).min(input.len());
            let used = decoder.feed(&input[offset..end], &mut out);
            offset += used;
            if decoder.is_done() {
                return Some((out, input[offset..].to_vec()));
            }
        }
        None
    }

    fn all_steps(input: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
        let whole = decode(input, input.len().max(1));
        for step in 1..8 {
            assert_eq!(decode(input, step), whole, "step {step} differs");
        }
        whole
    }

    #[test]
    fn ends_only_at_crlf_dot_crlf() {
        let (body, rest) = all_steps(b"Subject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n").unwrap();
        assert_eq!(body, b"Subject: x\r\n\r\nhi\r\n");
        assert_eq!(rest, b"QUIT\r\n");
    }

    #[test]
    fn empty_message() {
        let (body, rest) = all_steps(b".\r\n").unwrap();
        assert!(body.is_empty());
        assert!(rest.is_empty());
    }

    #[test]
    fn smuggling_sequences_are_content() {
        for seq in [
            &b"\n.\n"[..],
            b"\n.\r\n",
            b"\r.\r",
            b"\r\n.\n",
            b"\r.\r\n",
            b"\r\n.\r",
        ] {
            let mut input = b"a".to_vec();
            input.extend_from_slice(seq);
            input.extend_from_slice(b"MAIL FROM:<evil@x>\r\n");
            assert_eq!(all_steps(&input), None, "{seq:?} ended the message");
            input.extend_from_slice(b"\r\n.\r\n");
            let (body, _) = all_steps(&input).unwrap();
            assert!(
                body.ends_with(b"MAIL FROM:<evil@x>\r\n\r\n"),
                "{seq:?}: {body:?}"
            );
        }
    }

    #[test]
    fn bare_lf_becomes_crlf_and_keeps_its_dot() {
        let (body, _) = all_steps(b"one\ntwo\n.x\r\n.\r\n").unwrap();
        assert_eq!(body, b"one\r\ntwo\r\n.x\r\n");
    }

    #[test]
    fn dot_unstuffing_is_exact() {
        let (body, _) = all_steps(b"..\r\n...x\r\n.y\r\n\r\n.\r\n").unwrap();
        assert_eq!(body, b".\r\n..x\r\ny\r\n\r\n");
    }

    #[test]
    fn bare_cr_is_kept() {
        let (body, _) = all_steps(b"a\rb\r\r\n.\r\n").unwrap();
        assert_eq!(body, b"a\rb\r\r\n");
    }
}
