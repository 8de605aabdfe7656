//! A minimal blocking WebSocket client over std sockets for the integration tests: it can send
//! well-formed and deliberately broken frames and reads server frames as they are.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A server frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The close code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).expect("server text is JSON")
    }
}

/// A connected client (handshake done).
pub struct Ws {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// Answer server pings automatically while reading JSON.
    pub auto_pong: bool,
    /// Server pings seen.
    pub pings: u32,
}

/// The handshake request for `key`.
pub fn upgrade_request(key: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
    )
}

impl Ws {
    pub fn connect(addr: SocketAddr) -> Ws {
        Ws::connect_stream(TcpStream::connect(addr).expect("connect"))
    }

    /// Handshakes over an already connected socket.
    pub fn connect_stream(mut stream: TcpStream) -> Ws {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        stream
            .write_all(upgrade_request("dGhlIHNhbXBsZSBub25jZQ==").as_bytes())
            .expect("write");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = stream.read(&mut chunk).expect("read handshake");
            assert!(n > 0, "closed during handshake");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "{head}"
        );
        buf.drain(..end);
        Ws {
            stream,
            buf,
            auto_pong: true,
            pings: 0,
        }
    }

    /// Sends one frame; `mask` false sends it unmasked (a protocol violation).
    pub fn send_frame(&mut self, b0: u8, payload: &[u8], mask: bool) {
        // A server that already closed may reset; callers check what they read.
        let _ = self.stream.write_all(&frame_bytes(b0, payload, mask));
    }

    /// Writes `bytes` in pieces of `piece` bytes with a pause after each, so the server sees
    /// frames cut across many reads.
    pub fn send_in_pieces(&mut self, bytes: &[u8], piece: usize, pause: Duration) {
        for p in bytes.chunks(piece.max(1)) {
            let _ = self.stream.write_all(p);
            std::thread::sleep(pause);
        }
    }

    pub fn send_text(&mut self, text: &str) {
        self.send_frame(0x81, text.as_bytes(), true);
    }

    /// Reads the next frame; None on EOF, reset or timeout.
    pub fn next_frame(&mut self, timeout: Duration) -> Option<Frame> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((f, n)) = parse(&self.buf) {
                self.buf.drain(..n);
                return Some(f);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok()?;
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Next JSON text message (pings answered when `auto_pong`); None on close/EOF/timeout.
    pub fn next_json(&mut self, timeout: Duration) -> Option<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let f = self.next_frame(deadline.saturating_duration_since(Instant::now()))?;
            match f.opcode {
                1 => return Some(f.json()),
                9 => {
                    self.pings += 1;
                    if self.auto_pong {
                        self.send_frame(0x8A, &f.payload, true);
                    }
                }
                8 => return None,
                _ => {}
            }
        }
    }

    /// Reads JSON messages until one has `"type": ty`; returns it and the ones before it.
    pub fn until_type(
        &mut self,
        ty: &str,
        timeout: Duration,
    ) -> (serde_json::Value, Vec<serde_json::Value>) {
        let deadline = Instant::now() + timeout;
        let mut before = Vec::new();
        loop {
            let v = self
                .next_json(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|| panic!("no {ty} message; got {before:?}"));
            if v["type"] == ty {
                return (v, before);
            }
            before.push(v);
        }
    }

    /// Reads until a close frame; returns its code (None when the socket ended without one).
    pub fn until_close(&mut self, timeout: Duration) -> Option<u16> {
        let deadline = Instant::now() + timeout;
        loop {
            let f = self.next_frame(deadline.saturating_duration_since(Instant::now()))?;
            if f.opcode == 8 {
                eprintln!(
                    "close frame: {:?}",
                    String::from_utf8_lossy(f.payload.get(2..).unwrap_or_default())
                );
                return f.close_code().or(Some(1005));
            }
        }
    }

    /// True when the server closed the TCP connection (EOF or reset) within `timeout`.
    pub fn eof_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut chunk = [0u8; 65536];
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            let _ = self
                .stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))));
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
                Err(_) => return true,
            }
        }
        false
    }

    /// Subscribes and returns the snapshot (after checking `subscribed` came first).
    pub fn subscribe(&mut self, msg: &str) -> serde_json::Value {
        self.send_text(msg);
        let (sub, before) = self.until_type("subscribed", Duration::from_secs(20));
        assert!(sub["seq"].is_u64(), "{sub}");
        assert!(
            before.iter().all(|m| m["type"] == "hello"),
            "only hello may precede subscribed: {before:?}"
        );
        let (snap, between) = self.until_type("snapshot", Duration::from_secs(20));
        assert!(
            between.is_empty(),
            "snapshot follows subscribed: {between:?}"
        );
        snap
    }
}

/// Parses one unmasked server frame from the front of `buf`.
pub fn parse(buf: &[u8]) -> Option<(Frame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(buf[1] & 0x80, 0, "server frames are never masked");
    let (len, h) = match buf[1] & 0x7F {
        126 => {
            if buf.len() < 4 {
                return None;
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4)
        }
        127 => {
            if buf.len() < 10 {
                return None;
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b) as usize, 10)
        }
        n => (n as usize, 2),
    };
    if buf.len() < h + len {
        return None;
    }
    Some((
        Frame {
            fin: buf[0] & 0x80 != 0,
            opcode: buf[0] & 0x0F,
            payload: buf[h..h + len].to_vec(),
        },
        h + len,
    ))
}

/// One client frame: `b0` is FIN/RSV/opcode; masked with a fixed key when `mask`.
pub fn frame_bytes(b0: u8, payload: &[u8], mask: bool) -> Vec<u8> {
    let mut v = vec![b0];
    let m = if mask { 0x80 } else { 0 };
    if payload.len() <= 125 {
        v.push(m | payload.len() as u8);
    } else if payload.len() <= 0xFFFF {
        v.push(m | 126);
        v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    } else {
        v.push(m | 127);
        v.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    }
    let key = [0x12, 0x34, 0x56, 0x78];
    if mask {
        v.extend_from_slice(&key);
        v.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        v.extend_from_slice(payload);
    }
    v
}
