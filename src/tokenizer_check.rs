//! Checks of `tokenizer.json` for what `tokenizers` 0.23 panics on instead of failing (each
//! found by tests/fuzz.rs; the inputs are in tests/fixtures/regress/tokenizer/):
//!
//! - a JSON syntax error or an invalid `\u` escape inside `decoder` (`DecoderWrapper`'s
//!   deserializer calls `expect`);
//! - a BPE merge whose result is not in the vocabulary, or whose second token lacks
//!   `continuing_subword_prefix`: the builder copies both into a buffer as long as the longest
//!   token before looking the result up (out-of-range slice, or an underflow);
//! - a `TemplateProcessing` post-processor whose template names a special token its
//!   `special_tokens` lacks (indexed at encode time), or one whose `ids` and `tokens` differ in
//!   length.
//!
//! Anything else malformed is left to `tokenizers`, which reports it as an error.

use serde_json::Value;

#[derive(serde::Deserialize)]
struct Top {
    model: Option<Value>,
    post_processor: Option<Value>,
    /// Decoded (not skipped) so that what breaks `decoder`'s `expect` breaks here: skipping a
    /// string does not check its `\u` escapes.
    #[allow(dead_code)]
    decoder: Option<Value>,
}

/// Ok, or what is wrong (the caller names the file).
pub(crate) fn check(tokenizer_json: &[u8]) -> Result<(), String> {
    // Parsed whole first, so a syntax error anywhere is reported here.
    let top = serde_json::from_slice::<Top>(tokenizer_json).map_err(|e| format!("not a tokenizer file: {e}"))?;
    if let Some(model) = &top.model {
        merges(model)?;
    }
    if let Some(p) = &top.post_processor {
        post_processor(p, "post_processor")?;
    }
    Ok(())
}

fn merges(model: &Value) -> Result<(), String> {
    let (Some(Value::Object(vocab)), Some(Value::Array(merges))) = (model.get("vocab"), model.get("merges")) else { return Ok(()) };
    let prefix = model.get("continuing_subword_prefix").and_then(Value::as_str).unwrap_or("");
    for (i, m) in merges.iter().enumerate() {
        let (a, b) = match m {
            Value::String(s) => match s.split_once(' ') {
                Some(p) => p,
                None => continue,
            },
            Value::Array(p) if p.len() == 2 => match (p[0].as_str(), p[1].as_str()) {
                (Some(a), Some(b)) => (a, b),
                _ => continue,
            },
            _ => continue,
        };
        if !vocab.contains_key(a) || !vocab.contains_key(b) {
            continue; // tokenizers reports these itself
        }
        match b.strip_prefix(prefix) {
            None => return Err(format!("model.merges[{i}] (`{a}`, `{b}`): `{b}` lacks the continuing_subword_prefix `{prefix}`")),
            Some(rest) if !vocab.contains_key(&format!("{a}{rest}")) => {
                return Err(format!("model.merges[{i}] (`{a}`, `{b}`): their merge is not in the vocabulary"));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn post_processor(p: &Value, path: &str) -> Result<(), String> {
    match p.get("type").and_then(Value::as_str) {
        Some("TemplateProcessing") => {
            let specials = p.get("special_tokens").and_then(Value::as_object);
            for key in ["single", "pair"] {
                for piece in p.get(key).and_then(Value::as_array).into_iter().flatten() {
                    let id = piece.get("SpecialToken").and_then(|s| s.get("id")).and_then(Value::as_str);
                    if let Some(id) = id
                        && !specials.is_some_and(|m| m.contains_key(id))
                    {
                        return Err(format!("{path}.{key} names special token `{id}`, which {path}.special_tokens lacks"));
                    }
                }
            }
            for (k, t) in specials.into_iter().flatten() {
                let len = |f: &str| t.get(f).and_then(Value::as_array).map(Vec::len);
                if len("ids") != len("tokens") {
                    return Err(format!("{path}.special_tokens.{k}: ids and tokens differ in length"));
                }
            }
        }
        Some("Sequence") => {
            for (i, q) in p.get("processors").and_then(Value::as_array).into_iter().flatten().enumerate() {
                post_processor(q, &format!("{path}.processors[{i}]"))?;
            }
        }
        _ => {}
    }
    Ok(())
}
