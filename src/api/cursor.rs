//! Opaque pagination cursors: base64url of a kind letter and the last key returned.
//!
//! Pages are keyset pages (the next page starts strictly after the last key), so appends and
//! deletions between requests never shift, skip or repeat items.

use base64::Engine as _;

const ENGINE: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Encodes `(kind, key)`; kinds keep a cursor from one list from being used on another.
pub fn encode(kind: char, key: i64) -> String {
    ENGINE.encode(format!("{kind}{key}"))
}

/// Decodes a cursor of `kind`; None when it is not one we issued.
pub fn decode(kind: char, cursor: &str) -> Option<i64> {
    if cursor.len() > 64 {
        return None;
    }
    let raw = ENGINE.decode(cursor).ok()?;
    let text = std::str::from_utf8(&raw).ok()?;
    text.strip_prefix(kind)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips_and_rejects_foreign_cursors() {
        for k in [i64::MIN, -1, 0, 42, i64::MAX] {
            assert_eq!(super::decode('r', &super::encode('r', k)), Some(k));
        }
        assert_eq!(super::decode('s', &super::encode('r', 1)), None);
        assert_eq!(super::decode('r', "!!"), None);
    }
}
