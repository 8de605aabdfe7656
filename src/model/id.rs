//! Service identity: a stable id derived from the unique name.

use std::fmt;

/// Stable identifier of a service; the same name always maps to the same id, across restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId(u64);

impl ServiceId {
    /// Derives the id of a service from its unique name (FNV-1a, 63 bits so it fits SQL `BIGINT`).
    pub fn from_name(name: &str) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        ServiceId(h & (i64::MAX as u64))
    }

    /// Wraps a raw id read back from storage.
    pub fn from_raw(raw: u64) -> Self {
        ServiceId(raw)
    }

    /// Parses the 16-hex-digit form `Display` writes; None for anything else.
    pub fn parse_hex(s: &str) -> Option<ServiceId> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(ServiceId)
    }

    /// The raw value, for storage and wire formats.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The shard that owns this service when the process runs `shards` shards.
    pub fn owner(self, shards: usize) -> usize {
        // Mix the bits again: FNV's low bits are weak for short, similar names.
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        (x % shards.max(1) as u64) as usize
    }
}

/// In JSON an id is always its 16-hex-digit string: the REST API, the stream and the history
/// agree, and JavaScript (whose numbers stop at 2^53) reads it back exactly.
impl serde::Serialize for ServiceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ServiceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        ServiceId::parse_hex(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a 16-hex-digit id")))
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_id_is_stable_and_fits_i64() {
        let a = ServiceId::from_name("api");
        assert_eq!(a, ServiceId::from_name("api"));
        assert_ne!(a, ServiceId::from_name("apj"));
        assert!(a.get() <= i64::MAX as u64);
    }

    #[test]
    fn owners_spread_over_shards() {
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            counts[ServiceId::from_name(&format!("svc-{i}")).owner(4)] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "unbalanced: {counts:?}");
        }
    }
}
