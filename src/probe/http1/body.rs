//! Response body framing (RFC 9112 6.3) and an incremental decoder for Content-Length,
//! chunked (extensions and trailers consumed) and read-until-close bodies.

use super::{HttpError, ResponseHead};
use crate::model::Method;

/// Longest chunk-size line (size + extensions) accepted.
const MAX_CHUNK_LINE: usize = 1024;

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the server closes the connection.
    UntilClose,
}

impl Framing {
    /// Body framing per RFC 9112 section 6.3 for a response to `method`.
    pub fn of(head: &ResponseHead, method: Method) -> Framing {
        if method == Method::Head
            || (100..200).contains(&head.status)
            || head.status == 204
            || head.status == 304
        {
            Framing::Empty
        } else if head.chunked {
            Framing::Chunked
        } else if head.other_encoding {
            Framing::UntilClose
        } else if let Some(n) = head.content_length {
            Framing::Length(n)
        } else {
            Framing::UntilClose
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    ChunkSize {
        size: u64,
        digits: u32,
        in_ext: bool,
        len: usize,
    },
    ChunkData(u64),
    ChunkCr,
    ChunkLf,
    Trailers {
        line_len: usize,
        total: usize,
    },
    UntilClose,
    Done,
}

/// Incremental body decoder: feed it whatever bytes arrived; body bytes go to a sink.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    state: State,
    max_trailers: usize,
}

impl BodyDecoder {
    /// A decoder for `framing`; trailers are bounded by `max_trailers` bytes.
    pub fn new(framing: Framing, max_trailers: usize) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize {
                size: 0,
                digits: 0,
                in_ext: false,
                len: 0,
            },
            Framing::UntilClose => State::UntilClose,
        };
        BodyDecoder {
            state,
            max_trailers,
        }
    }

    /// True once the whole body (and any trailers) has been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes bytes from `input`, passing body data to `sink`; returns how many were used.
    /// Stops at the end of the body, so bytes after it are left for the caller.
    pub fn feed(&mut self, input: &[u8], sink: &mut impl FnMut(&[u8])) -> Result<usize, HttpError> {
        let mut i = 0;
        while i < input.len() {
            let rest = input.get(i..).unwrap_or_default();
            match self.state {
                State::Done => break,
                State::UntilClose => {
                    sink(rest);
                    i = input.len();
                }
                State::Length(remaining) => {
                    let take = usize::try_from(remaining).map_or(rest.len(), |r| r.min(rest.len()));
                    sink(rest.get(..take).unwrap_or_default());
                    i += take;
                    let left = remaining - take as u64;
                    self.state = if left == 0 {
                        State::Done
                    } else {
                        State::Length(left)
                    };
                }
                State::ChunkData(remaining) => {
                    let take = usize::try_from(remaining).map_or(rest.len(), |r| r.min(rest.len()));
                    sink(rest.get(..take).unwrap_or_default());
                    i += take;
                    let left = remaining - take as u64;
                    self.state = if left == 0 {
                        State::ChunkCr
                    } else {
                        State::ChunkData(left)
                    };
                }
                // The framing states below consume one byte at a time.
                State::ChunkCr => {
                    i += 1;
                    self.state = match rest.first() {
                        Some(b'\r') => State::ChunkLf,
                        // Tolerate a bare LF, as most clients do.
                        Some(b'\n') => Self::next_chunk(),
                        _ => return Err(HttpError("missing CRLF after chunk data".into())),
                    };
                }
                State::ChunkLf => {
                    i += 1;
                    if rest.first() != Some(&b'\n') {
                        return Err(HttpError("missing CRLF after chunk data".into()));
                    }
                    self.state = Self::next_chunk();
                }
                State::ChunkSize {
                    size,
                    digits,
                    in_ext,
                    len,
                } => {
                    i += 1;
                    let b = rest.first().copied().unwrap_or_default();
                    self.state = chunk_size_byte(b, size, digits, in_ext, len)?;
                }
                State::Trailers { line_len, total } => {
                    i += 1;
                    let b = rest.first().copied().unwrap_or_default();
                    self.state = self.trailer_byte(b, line_len, total)?;
                }
            }
        }
        Ok(i)
    }

    /// The state after trailer byte `b`: trailers are skipped line by line, bounded in total,
    /// and an empty line ends them (and the body).
    fn trailer_byte(&self, b: u8, line_len: usize, total: usize) -> Result<State, HttpError> {
        let total = total + 1;
        if total > self.max_trailers {
            return Err(HttpError(format!(
                "trailers exceed {} bytes",
                self.max_trailers
            )));
        }
        Ok(match b {
            b'\n' if line_len == 0 => State::Done,
            b'\n' => State::Trailers { line_len: 0, total },
            b'\r' => State::Trailers { line_len, total },
            _ => State::Trailers {
                line_len: line_len + 1,
                total,
            },
        })
    }

    /// The peer closed the connection: fine for read-until-close, an error otherwise.
    pub fn eof(&mut self) -> Result<(), HttpError> {
        match self.state {
            State::UntilClose | State::Done => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(HttpError("connection closed before end of body".into())),
        }
    }

    fn next_chunk() -> State {
        State::ChunkSize {
            size: 0,
            digits: 0,
            in_ext: false,
            len: 0,
        }
    }
}

/// The state after byte `b` of a chunk-size line (hex digits, then optional extensions, which
/// are skipped), bounded by `MAX_CHUNK_LINE`; LF ends the line.
fn chunk_size_byte(
    b: u8,
    size: u64,
    digits: u32,
    in_ext: bool,
    len: usize,
) -> Result<State, HttpError> {
    if len >= MAX_CHUNK_LINE {
        return Err(HttpError("chunk size line too long".into()));
    }
    let len = len + 1;
    let same = |in_ext| State::ChunkSize {
        size,
        digits,
        in_ext,
        len,
    };
    Ok(match b {
        b'\n' => {
            if digits == 0 {
                return Err(HttpError("empty chunk size".into()));
            }
            if size == 0 {
                State::Trailers {
                    line_len: 0,
                    total: 0,
                }
            } else {
                State::ChunkData(size)
            }
        }
        b'\r' => same(in_ext),
        _ if in_ext => same(in_ext),
        b';' | b' ' | b'\t' if digits > 0 => same(true),
        _ => {
            let d = (b as char)
                .to_digit(16)
                .ok_or_else(|| HttpError(format!("invalid chunk size byte 0x{b:02x}")))?;
            if digits >= 16 {
                return Err(HttpError("chunk size too large".into()));
            }
            State::ChunkSize {
                size: (size << 4) | u64::from(d),
                digits: digits + 1,
                in_ext,
                len,
            }
        }
    })
}

/// Appends `data` to `kept` without growing it past `limit` bytes.
pub fn keep_bounded(kept: &mut Vec<u8>, data: &[u8], limit: usize) {
    let room = limit.saturating_sub(kept.len());
    kept.extend_from_slice(data.get(..room.min(data.len())).unwrap_or_default());
}

/// True when `needle` occurs in `haystack` (an empty needle always matches).
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(framing: Framing, parts: &[&[u8]]) -> Result<(Vec<u8>, bool, usize), HttpError> {
        let mut d = BodyDecoder::new(framing, 1024);
        let mut out = Vec::new();
        let mut used = 0;
        for p in parts {
            used += d.feed(p, &mut |b| out.extend_from_slice(b))?;
        }
        Ok((out, d.is_done(), used))
    }

    #[test]
    fn chunked_with_extensions_and_trailers_split_anywhere() {
        let wire: &[u8] = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\nNEXT";
        for split in 0..wire.len() {
            let (a, b) = wire.split_at(split);
            let (body, done, used) = decode_all(Framing::Chunked, &[a, b]).unwrap();
            assert_eq!(body, b"hello world", "split at {split}");
            assert!(done);
            assert_eq!(used, wire.len() - 4, "leaves bytes after the body");
        }
    }

    #[test]
    fn chunked_bad_input() {
        assert!(decode_all(Framing::Chunked, &[b"zz\r\n"]).is_err());
        assert!(decode_all(Framing::Chunked, &[b"\r\n"]).is_err());
        assert!(decode_all(Framing::Chunked, &[b"3\r\nabcX"]).is_err());
        assert!(decode_all(Framing::Chunked, &[b"11111111111111111\r\n"]).is_err());
        assert!(decode_all(Framing::Chunked, &[&[b'1'; 2000]]).is_err());
        let big_trailer = [b"0\r\n".as_slice(), &[b'a'; 2000]].concat();
        assert!(decode_all(Framing::Chunked, &[&big_trailer]).is_err());
        // Max-size chunk must not overflow anything.
        let (_, done, _) = decode_all(Framing::Chunked, &[b"ffffffffffffffff\r\nab"]).unwrap();
        assert!(!done);
    }

    #[test]
    fn length_and_until_close() {
        let (body, done, used) = decode_all(Framing::Length(4), &[b"ab", b"cdef"]).unwrap();
        assert_eq!((body.as_slice(), done, used), (b"abcd".as_slice(), true, 4));
        let mut d = BodyDecoder::new(Framing::Length(4), 0);
        d.feed(b"ab", &mut |_| {}).unwrap();
        assert!(d.eof().is_err());
        let mut d = BodyDecoder::new(Framing::UntilClose, 0);
        d.feed(b"abc", &mut |_| {}).unwrap();
        assert!(!d.is_done());
        assert!(d.eof().is_ok());
        assert!(d.is_done());
    }

    #[test]
    fn bounded_keep_and_contains() {
        let mut kept = Vec::new();
        keep_bounded(&mut kept, b"hello", 3);
        keep_bounded(&mut kept, b"world", 3);
        assert_eq!(kept, b"hel");
        assert!(contains(b"hello world", b"o w"));
        assert!(!contains(b"hello", b"hello!"));
        assert!(contains(b"", b""));
    }
}
