//! Turns serde-saphyr errors (which carry a line/column but no key path) into `ConfigError`s
//! naming the key, by re-reading the file as a generic tree of positioned nodes.
//!
//! The second pass only runs when the typed parse has already failed, so a valid file is read
//! once.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{DuplicateKeyPolicy, Location, Options, Spanned};

use super::ConfigError;

/// A YAML node with only what error reporting needs: its shape and children's positions.
#[derive(Debug)]
enum Node {
    Scalar(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Scalar(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Scalar(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                Ok(Node::Scalar(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Scalar(v.to_string()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Scalar(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Scalar("null".into()))
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Scalar("null".into()))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(Node::Seq(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_entry()? {
                    v.push(x);
                }
                Ok(Node::Map(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// Where a position was found in the tree.
#[derive(Debug, Default)]
struct Hits {
    /// Path of the mapping whose key starts exactly at the position, and that key.
    key: Option<(String, String)>,
    /// Path (and scalar text) of the deepest value starting exactly at the position.
    value: Option<(String, Option<String>)>,
    /// Path of the last node starting at or before the position (fallback).
    before: Option<String>,
    /// Every key's full path and position, to point at a key saphyr only locates by its map.
    keys: Vec<(String, (u64, u64))>,
}

impl Hits {
    /// `line L, column C` of the key at `path`, if the tree has it.
    fn key_position(&self, path: &str) -> Option<String> {
        self.keys
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, (l, c))| format!(" (line {l}, column {c})"))
    }
}

fn pos(l: &Location) -> (u64, u64) {
    (l.line(), l.column())
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Walks the tree in document order, recording every node that matches `at`.
fn walk(node: &Spanned<Node>, path: &str, at: (u64, u64), hits: &mut Hits) {
    let here = pos(&node.referenced);
    if here == at {
        let text = match &node.value {
            Node::Scalar(s) => Some(s.clone()),
            _ => None,
        };
        hits.value = Some((path.to_string(), text));
    }
    if here <= at {
        hits.before = Some(path.to_string());
    }
    match &node.value {
        Node::Scalar(_) => {}
        Node::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, &format!("{path}[{i}]"), at, hits);
            }
        }
        Node::Map(entries) => {
            for (k, v) in entries {
                let kp = pos(&k.referenced);
                hits.keys.push((join(path, &k.value), kp));
                if kp == at {
                    hits.key = Some((path.to_string(), k.value.clone()));
                }
                if kp <= at {
                    hits.before = Some(join(path, &k.value));
                }
                walk(v, &join(path, &k.value), at, hits);
            }
        }
    }
}

/// Finds what sits at `loc`, or None when the file cannot even be read as a tree.
fn locate(text: &str, loc: &Location) -> Option<Hits> {
    let opts = Options {
        with_snippet: false,
        // Keep duplicates (the visitor collects every entry) so the repeated key has a position.
        duplicate_keys: DuplicateKeyPolicy::LastWins,
        budget: Some(super::yaml_budget()),
        ..Options::default()
    };
    let root: Spanned<Node> = serde_saphyr::from_str_with_options(text, opts).ok()?;
    let mut hits = Hits::default();
    walk(&root, "", pos(loc), &mut hits);
    Some(hits)
}

/// Extracts the text between the first pair of backticks, e.g. the field of "unknown field `x`".
fn backticked(msg: &str) -> Option<&str> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(&msg[start..start + len])
}

/// Rewords serde/saphyr type expectations in the config's vocabulary.
fn expected_kind(msg: &str) -> String {
    // Only the part after "expected" says what was wanted ("invalid type: sequence, expected a
    // string" wants a string, not a list).
    let lower = msg.to_ascii_lowercase();
    let wanted = lower
        .rsplit_once("expected ")
        .map_or(lower.as_str(), |(_, w)| w);
    let kind = if wanted.contains("sequence") {
        "a list"
    } else if wanted.contains("mapping") || wanted.contains("map") || wanted.contains("struct") {
        "a mapping (key: value)"
    } else if ["u8", "u16", "u32", "u64", "usize"]
        .iter()
        .any(|t| wanted.ends_with(t))
    {
        "a whole number (0 or more)"
    } else if wanted.contains("bool") {
        "true or false"
    } else if wanted.contains("scalar") {
        "a single value, not a list or mapping"
    } else if wanted.contains("string") {
        "a string"
    } else {
        return msg.to_string();
    };
    format!("expected {kind}")
}

/// True for errors raised by serde (shape/field problems), as opposed to the YAML parser.
fn is_serde_message(msg: &str) -> bool {
    [
        "unknown field",
        "missing field",
        "invalid type",
        "invalid value",
        "duplicate",
    ]
    .iter()
    .any(|p| msg.starts_with(p))
}

/// Converts a failed typed parse into a `ConfigError` naming the key at fault.
pub(super) fn yaml_error(text: &str, err: &serde_saphyr::Error) -> ConfigError {
    let err = err.without_snippet();
    let loc = err.location();
    let at = loc
        .as_ref()
        .filter(|l| l.line() > 0)
        .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
        .unwrap_or_default();
    // Saphyr's Display appends the location itself; strip it so we can place it ourselves.
    let raw = err.to_string();
    let msg = raw
        .rfind(" at line ")
        .map_or(raw.as_str(), |i| &raw[..i])
        .to_string();
    let hits = match loc.as_ref().and_then(|l| locate(text, l)) {
        Some(hits) => hits,
        // The text is not even a YAML tree: a syntax error, which has no key.
        None if !is_serde_message(&msg) => {
            return ConfigError {
                key: String::new(),
                message: format!("YAML syntax error: {msg}{at}"),
            }
        }
        // Shape errors in a file the tree pass cannot read (e.g. several documents): still
        // reword them, just without a key.
        None => Hits::default(),
    };

    if let Some(field) = msg
        .strip_prefix("unknown field ")
        .and_then(|_| backticked(&msg))
    {
        return unknown_key(&msg, field, &hits, at);
    }
    if let Some(field) = msg
        .strip_prefix("missing field ")
        .and_then(|_| backticked(&msg))
    {
        return missing_key(field, hits, &at);
    }
    if let Some(dup) = msg.strip_prefix("duplicate mapping key: ") {
        let parent = hits.key.map(|(p, _)| p).or(hits.before).unwrap_or_default();
        return ConfigError {
            key: parent,
            message: format!("duplicate key \"{dup}\"{at}"),
        };
    }
    match hits.value {
        Some((path, scalar)) => {
            let what = match scalar {
                Some(s) => format!("invalid value \"{s}\""),
                None => "wrong type".to_string(),
            };
            ConfigError {
                key: path,
                message: format!("{what}: {}{at}", expected_kind(&msg)),
            }
        }
        None => ConfigError {
            key: hits.before.unwrap_or_default(),
            message: format!("{msg}{at}"),
        },
    }
}

/// `unknown field`: saphyr points at the mapping (which starts at its first key); name the
/// mapping, but give the position of the offending key itself.
fn unknown_key(msg: &str, field: &str, hits: &Hits, at: String) -> ConfigError {
    let expected = msg
        .split_once("expected one of ")
        .map(|(_, list)| format!(" (expected one of {})", list.replace('`', "")))
        .or_else(|| {
            msg.split_once("expected ")
                .map(|(_, one)| format!(" (expected {})", one.replace('`', "")))
        })
        .unwrap_or_default();
    let parent = hits
        .key
        .clone()
        .map(|(p, _)| p)
        .or_else(|| hits.value.clone().map(|(p, _)| p))
        .or(hits.before.clone())
        .unwrap_or_default();
    let at = hits.key_position(&join(&parent, field)).unwrap_or(at);
    ConfigError {
        key: parent,
        message: format!("unknown key \"{field}\"{expected}{at}"),
    }
}

/// `missing field`: saphyr points at the mapping (or its first key) that lacks the field.
fn missing_key(field: &str, hits: Hits, at: &str) -> ConfigError {
    let parent = hits
        .value
        .map(|(p, _)| p)
        .or(hits.key.map(|(p, _)| p))
        .or(hits.before)
        .unwrap_or_default();
    ConfigError {
        key: join(&parent, field),
        message: format!("required key is missing{at}"),
    }
}
