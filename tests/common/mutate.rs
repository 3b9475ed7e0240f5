//! Mutators for the fuzz tests: byte-level edits (flips, interesting integers, JSON tokens,
//! insertions, cuts) and JSON-tree edits (a value at a random path replaced by an awkward one),
//! as proptest strategies so failures shrink to few edits. PNG chunk CRCs can be re-sealed after
//! editing so the decoder looks past the checksum.

use proptest::prelude::*;
use serde_json::{json, Value};

/// Integers that break arithmetic: zero, one, sign and width boundaries.
const INTS: [u64; 14] = [0, 1, 2, 3, 7, 8, 255, 256, 65535, 1 << 31, 1 << 32, (1 << 53) + 1, u64::MAX / 2, u64::MAX];

/// Text that JSON parsers and safetensors headers care about.
const TOKENS: [&str; 18] = [
    "\"", "{", "}", "[", "]", ",", ":", "-1", "0", "1e400", "18446744073709551616", "null", "\"F32\"", "\"shape\"",
    "\"data_offsets\"", "\\u0000", "\u{FFFD}", "\"__metadata__\"",
];

#[derive(Clone, Debug)]
pub enum Edit {
    Flip(usize, u8),
    Set(usize, u8),
    Int { at: usize, value: u64, width: u8, big_endian: bool },
    Token(usize, usize),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    /// Copies `len` bytes from `from` to `to` (repeats structure).
    Copy { from: usize, to: usize, len: usize },
}

pub fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<usize>(), 0..INTS.len(), prop_oneof![Just(1u8), Just(2), Just(4), Just(8)], any::<bool>())
            .prop_map(|(at, k, width, big_endian)| Edit::Int { at, value: INTS[k], width, big_endian }),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(i, t)| Edit::Token(i, t)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, v)| Edit::Insert(i, v)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Edit::Delete(i, n)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), any::<usize>(), 1usize..256).prop_map(|(from, to, len)| Edit::Copy { from, to, len }),
    ]
}

/// Applies `edits` in order; positions are taken modulo the current length.
pub fn apply(bytes: &mut Vec<u8>, edits: &[Edit]) {
    for e in edits {
        let n = bytes.len();
        let at = |i: usize| if n == 0 { 0 } else { i % n };
        match e {
            Edit::Flip(i, b) if n > 0 => bytes[at(*i)] ^= 1 << b,
            Edit::Set(i, v) if n > 0 => bytes[at(*i)] = *v,
            Edit::Int { at: i, value, width, big_endian } => {
                let w = *width as usize;
                let raw = if *big_endian { value.to_be_bytes()[8 - w..].to_vec() } else { value.to_le_bytes()[..w].to_vec() };
                let start = at(*i).min(n.saturating_sub(w));
                let end = (start + w).min(n);
                bytes.splice(start..end, raw);
            }
            Edit::Token(i, t) => {
                let p = if n == 0 { 0 } else { i % (n + 1) };
                bytes.splice(p..p, TOKENS[*t].bytes());
            }
            Edit::Insert(i, v) => {
                let p = if n == 0 { 0 } else { i % (n + 1) };
                bytes.splice(p..p, v.iter().copied());
            }
            Edit::Delete(i, len) if n > 0 => {
                let s = at(*i);
                bytes.drain(s..(s + len).min(n));
            }
            Edit::Truncate(i) => bytes.truncate(if n == 0 { 0 } else { i % n }),
            Edit::Copy { from, to, len } if n > 0 => {
                let s = at(*from);
                let chunk = bytes[s..(s + len).min(n)].to_vec();
                let d = at(*to);
                bytes.splice(d..d, chunk);
            }
            _ => {}
        }
    }
}

/// Values that configs and headers should refuse or survive.
pub fn awkward(i: usize) -> Value {
    let all = [
        json!(0),
        json!(-1),
        json!(1),
        json!(2),
        json!(3),
        json!(1u64 << 31),
        json!(1u64 << 32),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(1e300),
        json!(-0.0),
        json!(0.5),
        json!(1e-300),
        json!(""),
        json!("F32"),
        json!(null),
        json!(true),
        json!([]),
        json!({}),
        json!([0, 1u64 << 40]),
        json!([u64::MAX, u64::MAX]),
        json!([1, 2, 3]),
        json!("x".repeat(300)),
        json!("../model.safetensors"),
        json!("model-00002-of-00002.safetensors"),
    ];
    all[i % all.len()].clone()
}

#[derive(Clone, Debug)]
pub enum JsonEdit {
    /// Walk `path` (each step picks a child modulo the count), then replace with `awkward(value)`.
    Replace { path: Vec<usize>, value: usize },
    /// Walk `path`, then remove that entry from its parent.
    Remove { path: Vec<usize> },
    /// Walk `path`; in the object reached, add key `name` (a known key of this format) with `awkward(value)`.
    AddKey { path: Vec<usize>, name: usize, value: usize },
}

pub fn json_edit(keys: &'static [&'static str]) -> impl Strategy<Value = JsonEdit> {
    let path = prop::collection::vec(any::<usize>(), 0..5);
    prop_oneof![
        4 => (path.clone(), any::<usize>()).prop_map(|(path, value)| JsonEdit::Replace { path, value }),
        1 => path.clone().prop_map(|path| JsonEdit::Remove { path }),
        2 => (path, 0..keys.len().max(1), any::<usize>()).prop_map(|(path, name, value)| JsonEdit::AddKey { path, name, value }),
    ]
}

/// The child of `v` chosen by `step`, if `v` has children.
fn child(v: &mut Value, step: usize) -> Option<&mut Value> {
    match v {
        Value::Object(m) if !m.is_empty() => {
            let n = m.len();
            m.values_mut().nth(step % n)
        }
        Value::Array(a) if !a.is_empty() => {
            let n = a.len();
            a.get_mut(step % n)
        }
        _ => None,
    }
}

pub fn apply_json(v: &mut Value, edits: &[JsonEdit], keys: &[&str]) {
    for e in edits {
        match e {
            JsonEdit::Replace { path, value } => {
                let mut cur = &mut *v;
                for &s in path {
                    if child(cur, s).is_none() {
                        break;
                    }
                    cur = child(cur, s).expect("checked above");
                }
                *cur = awkward(*value);
            }
            JsonEdit::Remove { path } => {
                let (last, walk) = path.split_last().map_or((0, &[][..]), |(l, w)| (*l, w));
                let mut cur = &mut *v;
                for &s in walk {
                    if child(cur, s).is_none() {
                        break;
                    }
                    cur = child(cur, s).expect("checked above");
                }
                match cur {
                    Value::Object(m) if !m.is_empty() => {
                        let k = m.keys().nth(last % m.len()).cloned().unwrap_or_default();
                        m.remove(&k);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        let n = a.len();
                        a.remove(last % n);
                    }
                    _ => {}
                }
            }
            JsonEdit::AddKey { path, name, value } => {
                let mut cur = &mut *v;
                for &s in path {
                    match child(cur, s) {
                        Some(c) if c.is_object() => cur = child(cur, s).expect("checked above"),
                        _ => break,
                    }
                }
                if let (Value::Object(m), Some(k)) = (cur, keys.get(*name)) {
                    m.insert(k.to_string(), awkward(*value));
                }
            }
        }
    }
}

/// Rewrites the CRC of every whole chunk of a PNG (after edits), so the decoder reads on.
pub fn reseal_png(b: &mut [u8]) {
    if !b.starts_with(b"\x89PNG\r\n\x1a\n") {
        return;
    }
    let mut p = 8;
    while p + 12 <= b.len() {
        let len = u32::from_be_bytes([b[p], b[p + 1], b[p + 2], b[p + 3]]) as usize;
        let Some(end) = (p + 8).checked_add(len).filter(|&e| e + 4 <= b.len()) else { break };
        let crc = crc32(&b[p + 4..end]);
        b[end..end + 4].copy_from_slice(&crc.to_be_bytes());
        p = end + 4;
    }
}

/// PNG's CRC-32.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}
