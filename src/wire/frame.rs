//! RFC 6455 framing: unmasked server frames built once, and a strict parser for client frames.
//!
//! Server frames are never masked, so one encoded buffer serves every client. Client frames
//! must be masked; the parser enforces the RFC's rules (reserved bits and opcodes, control
//! frame size and fragmentation, size limits) and names the close code each violation gets.

use bytes::Bytes;

/// Largest server frame header (2 + 8 bytes of extended length; servers send no mask).
pub const MAX_HEADER: usize = 10;

/// Continuation frame.
pub const OP_CONT: u8 = 0x0;
/// Text frame.
pub const OP_TEXT: u8 = 0x1;
/// Binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Ping frame.
pub const OP_PING: u8 = 0x9;
/// Pong frame.
pub const OP_PONG: u8 = 0xA;

/// Close codes used by the server.
pub mod code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// Server going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error.
    pub const PROTOCOL: u16 = 1002;
    /// Invalid payload data (bad UTF-8).
    pub const INVALID_DATA: u16 = 1007;
    /// Policy violation (slow consumer, missed pong).
    pub const POLICY: u16 = 1008;
    /// Message too big.
    pub const TOO_BIG: u16 = 1009;
}

/// Header length of an unmasked server frame with `frame_len` bytes in total.
pub fn header_len(frame_len: usize) -> usize {
    // Solve for the header given the total: payloads up to 125 use 2 bytes, up to 65535 use 4.
    if frame_len <= 2 + 125 {
        2
    } else if frame_len <= 4 + 0xFFFF {
        4
    } else {
        10
    }
}

fn payload_header_len(payload: usize) -> usize {
    if payload <= 125 {
        2
    } else if payload <= 0xFFFF {
        4
    } else {
        10
    }
}

fn write_header(out: &mut [u8], opcode: u8, payload: usize) {
    out[0] = 0x80 | opcode;
    match out.len() {
        2 => out[1] = payload as u8,
        4 => {
            out[1] = 126;
            out[2..4].copy_from_slice(&(payload as u16).to_be_bytes());
        }
        _ => {
            out[1] = 127;
            out[2..10].copy_from_slice(&(payload as u64).to_be_bytes());
        }
    }
}

/// Turns `buf` (`MAX_HEADER` spare bytes, then the payload) into one FIN frame, in place.
pub fn frame_in_place(mut buf: Vec<u8>, opcode: u8) -> Bytes {
    let payload = buf.len().saturating_sub(MAX_HEADER);
    let h = payload_header_len(payload);
    let start = MAX_HEADER - h;
    write_header(&mut buf[start..MAX_HEADER], opcode, payload);
    Bytes::from(buf).slice(start..)
}

/// Encodes one unmasked FIN frame (for small per-connection control and reply frames).
pub fn encode(opcode: u8, payload: &[u8]) -> Bytes {
    let h = payload_header_len(payload.len());
    let mut v = vec![0u8; h + payload.len()];
    write_header(&mut v[..h], opcode, payload.len());
    v[h..].copy_from_slice(payload);
    Bytes::from(v)
}

/// A close frame with `code` and a reason (cut to fit the 125-byte control payload).
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut p = Vec::with_capacity(2 + reason.len().min(123));
    p.extend_from_slice(&code.to_be_bytes());
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    p.extend_from_slice(&reason.as_bytes()[..cut]);
    encode(OP_CLOSE, &p)
}

/// A client frame header, parsed and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Final fragment.
    pub fin: bool,
    /// Opcode.
    pub opcode: u8,
    /// Masking key.
    pub mask: [u8; 4],
    /// Header length in bytes.
    pub header_len: usize,
    /// Payload length in bytes.
    pub payload_len: usize,
}

/// Why a client frame is refused, with the close code it earns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct FrameError {
    /// RFC 6455 close code.
    pub code: u16,
    /// Human-readable reason (sent in the close frame).
    pub reason: &'static str,
}

fn fail<T>(code: u16, reason: &'static str) -> Result<T, FrameError> {
    Err(FrameError { code, reason })
}

/// Parses a client frame header from the front of `buf`; `Ok(None)` when more bytes are needed.
pub fn parse_header(buf: &[u8], max_frame: usize) -> Result<Option<Header>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    let fin = b0 & 0x80 != 0;
    if b0 & 0x70 != 0 {
        return fail(
            code::PROTOCOL,
            "reserved bits set without a negotiated extension",
        );
    }
    let opcode = b0 & 0x0F;
    let control = opcode & 0x8 != 0;
    match opcode {
        OP_CONT | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG => {}
        _ => return fail(code::PROTOCOL, "reserved opcode"),
    }
    if b1 & 0x80 == 0 {
        return fail(code::PROTOCOL, "client frames must be masked");
    }
    let len7 = (b1 & 0x7F) as usize;
    if control && !fin {
        return fail(code::PROTOCOL, "fragmented control frame");
    }
    if control && len7 > 125 {
        return fail(code::PROTOCOL, "control frame payload over 125 bytes");
    }
    let (payload_len, ext) = match len7 {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as usize, 2)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            let n = u64::from_be_bytes(b);
            if n >> 63 != 0 {
                return fail(code::PROTOCOL, "frame length has the high bit set");
            }
            (usize::try_from(n).unwrap_or(usize::MAX), 8)
        }
        n => (n, 0),
    };
    if payload_len > max_frame {
        return fail(code::TOO_BIG, "frame larger than the server limit");
    }
    let header_len = 2 + ext + 4;
    if buf.len() < header_len {
        return Ok(None);
    }
    let mut mask = [0u8; 4];
    mask.copy_from_slice(&buf[2 + ext..header_len]);
    Ok(Some(Header {
        fin,
        opcode,
        mask,
        header_len,
        payload_len,
    }))
}

/// XORs `payload` with the client's masking key (RFC 6455 section 5.3).
pub fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    // Word at a time for the bulk; the tail byte by byte.
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

/// Checks a received close payload; returns the code to echo, or the error it earns.
pub fn check_close_payload(p: &[u8]) -> Result<u16, FrameError> {
    match p.len() {
        0 => Ok(code::NORMAL),
        1 => fail(code::PROTOCOL, "close payload of one byte"),
        _ => {
            let c = u16::from_be_bytes([p[0], p[1]]);
            let valid = matches!(c, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !valid {
                return fail(code::PROTOCOL, "invalid close code");
            }
            if std::str::from_utf8(&p[2..]).is_err() {
                return fail(code::INVALID_DATA, "close reason is not UTF-8");
            }
            Ok(c)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut v = vec![b0];
        if payload.len() <= 125 {
            v.push(0x80 | payload.len() as u8);
        } else {
            v.push(0x80 | 126);
            v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        v.extend_from_slice(&mask);
        let mut p = payload.to_vec();
        unmask(&mut p, mask);
        v.extend_from_slice(&p);
        v
    }

    #[test]
    fn server_frames_round_trip_all_length_forms() {
        for n in [0usize, 1, 125, 126, 65535, 65536] {
            let mut v = vec![0u8; MAX_HEADER];
            v.extend(std::iter::repeat_n(b'x', n));
            let f = frame_in_place(v, OP_TEXT);
            assert_eq!(f[0], 0x81);
            let h = header_len(f.len());
            assert_eq!(f.len(), h + n, "n={n}");
            assert_eq!(f, encode(OP_TEXT, &vec![b'x'; n]));
        }
    }

    #[test]
    fn parses_masked_frames_and_unmasks() {
        let raw = masked(0x81, b"hello");
        let h = parse_header(&raw, 1000).expect("ok").expect("complete");
        assert!(h.fin);
        assert_eq!(h.opcode, OP_TEXT);
        let mut p = raw[h.header_len..h.header_len + h.payload_len].to_vec();
        unmask(&mut p, h.mask);
        assert_eq!(&p, b"hello");
        assert_eq!(parse_header(&raw[..3], 1000), Ok(None));
    }

    #[test]
    fn violations_get_their_close_codes() {
        let code_of = |raw: &[u8], max| parse_header(raw, max).expect_err("refused").code;
        assert_eq!(code_of(&[0x81, 0x05], 1000), code::PROTOCOL); // unmasked
        assert_eq!(code_of(&masked(0x83, b"x"), 1000), code::PROTOCOL); // reserved opcode
        assert_eq!(code_of(&masked(0x0B, b"x"), 1000), code::PROTOCOL);
        assert_eq!(code_of(&masked(0x09, b"x"), 1000), code::PROTOCOL); // fragmented ping
        assert_eq!(code_of(&masked(0xC1, b"x"), 1000), code::PROTOCOL); // RSV1
        assert_eq!(code_of(&masked(0x81, &[b'a'; 200]), 100), code::TOO_BIG);
    }

    #[test]
    fn close_payloads_are_checked() {
        assert_eq!(check_close_payload(&[]), Ok(1000));
        assert_eq!(check_close_payload(&[3, 0xE8, b'o', b'k']), Ok(1000));
        assert!(check_close_payload(&[3]).is_err());
        assert!(check_close_payload(&[0, 5]).is_err());
        assert_eq!(
            check_close_payload(&[3, 0xE8, 0xFF]).map_err(|e| e.code),
            Err(code::INVALID_DATA)
        );
        let c = close(1008, "slow");
        assert_eq!(&c[..], &[0x88, 6, 0x03, 0xF0, b's', b'l', b'o', b'w']);
    }
}
