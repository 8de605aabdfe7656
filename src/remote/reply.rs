//! Reading stream replies (`XREAD`, `XREADGROUP`, `XAUTOCLAIM`, `XRANGE`) into entries.

use redis::Value;

use super::RemoteError;
use crate::wire::entry::FIELD;

/// One stream entry: its id and its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The entry id, `<ms>-<n>`.
    pub id: String,
    /// Field names and values, in order (none for an entry deleted while pending).
    pub fields: Vec<(String, Vec<u8>)>,
}

impl Entry {
    /// The value of field `name` (empty when absent).
    pub fn field(&self, name: &str) -> &[u8] {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| &v[..])
            .unwrap_or(&[])
    }

    /// The JSON document (field `wire::entry::FIELD`).
    pub fn payload(&self) -> &[u8] {
        self.field(FIELD)
    }

    /// The id's first part: for the events stream, the transition's seq.
    pub fn seq(&self) -> Option<u64> {
        self.id.split('-').next()?.parse().ok()
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn bad(cmd: &'static str, what: &str) -> RemoteError {
    RemoteError::Reply {
        cmd,
        what: what.to_string(),
    }
}

/// A list of entries: `[[id, [field, value, ...]], ...]`. Entries deleted from the stream
/// while pending come back with a nil body; they are returned with an empty payload.
pub fn entries(cmd: &'static str, v: &Value) -> Result<Vec<Entry>, RemoteError> {
    let Value::Array(items) = v else {
        return Err(bad(cmd, "entries are not an array"));
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(pair) = item else {
            return Err(bad(cmd, "an entry is not an array"));
        };
        let id = pair
            .first()
            .and_then(text)
            .ok_or_else(|| bad(cmd, "entry without id"))?;
        let mut fields = Vec::new();
        if let Some(Value::Array(kvs)) = pair.get(1) {
            for kv in kvs.chunks(2) {
                if let [k, Value::BulkString(val)] = kv {
                    if let Some(k) = text(k) {
                        fields.push((k, val.clone()));
                    }
                }
            }
        }
        out.push(Entry { id, fields });
    }
    Ok(out)
}

/// An `XREAD`/`XREADGROUP` reply for one stream: nil (timed out) or
/// `[[stream, entries]]` (RESP2) / `{stream: entries}` (RESP3).
pub fn read(cmd: &'static str, v: &Value) -> Result<Vec<Entry>, RemoteError> {
    match v {
        Value::Nil => Ok(Vec::new()),
        Value::Array(streams) => match streams.first() {
            None => Ok(Vec::new()),
            Some(Value::Array(pair)) => pair
                .get(1)
                .map(|e| entries(cmd, e))
                .unwrap_or_else(|| Ok(Vec::new())),
            Some(_) => Err(bad(cmd, "stream is not an array")),
        },
        Value::Map(m) => m
            .first()
            .map(|(_, e)| entries(cmd, e))
            .unwrap_or_else(|| Ok(Vec::new())),
        _ => Err(bad(cmd, "not a stream reply")),
    }
}

/// An `XAUTOCLAIM` reply: `[next_cursor, entries, deleted_ids]`.
pub fn autoclaim(v: &Value) -> Result<(String, Vec<Entry>), RemoteError> {
    const CMD: &str = "XAUTOCLAIM";
    let Value::Array(parts) = v else {
        return Err(bad(CMD, "not an array"));
    };
    let cursor = parts
        .first()
        .and_then(text)
        .ok_or_else(|| bad(CMD, "no cursor"))?;
    let list = parts.get(1).map(|e| entries(CMD, e)).transpose()?;
    Ok((cursor, list.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn stream_replies_parse_in_both_protocols() {
        let entry = Value::Array(vec![
            bulk("7-0"),
            Value::Array(vec![bulk("j"), bulk("{\"a\":1}")]),
        ]);
        let resp2 = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![entry.clone()]),
        ])]);
        let got = read("XREAD", &resp2).expect("resp2");
        assert_eq!(got[0].id, "7-0");
        assert_eq!(got[0].payload(), b"{\"a\":1}");
        assert_eq!(got[0].seq(), Some(7));
        let resp3 = Value::Map(vec![(bulk("s"), Value::Array(vec![entry]))]);
        assert_eq!(read("XREAD", &resp3).expect("resp3"), got);
        assert!(read("XREAD", &Value::Nil).expect("nil").is_empty());
        assert!(read("XREAD", &Value::Int(1)).is_err());
    }

    #[test]
    fn autoclaim_keeps_deleted_entries_with_an_empty_payload() {
        let v = Value::Array(vec![
            bulk("0-0"),
            Value::Array(vec![Value::Array(vec![bulk("5-1"), Value::Nil])]),
            Value::Array(vec![]),
        ]);
        let (cursor, list) = autoclaim(&v).expect("autoclaim");
        assert_eq!(cursor, "0-0");
        assert_eq!(list[0].id, "5-1");
        assert!(list[0].payload().is_empty());
    }
}
