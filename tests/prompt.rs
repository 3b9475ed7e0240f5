//! Tokenizer, `deepseek` prompt format and streaming text against Python `tokenizers` and the original template
//! (fixtures from tests/fixtures/gen_tokenizer.py). No GPU needed.

use dsvl_gpu::prompt::{self, Conversation, Message, PromptTokenizer, Role, STOP_STRING};
use dsvl_gpu::text::{Chunk, Detokenizer, StopMatcher, TextStream};
use dsvl_gpu::Error;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::OnceLock;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer")
}

fn cases() -> &'static Value {
    static C: OnceLock<Value> = OnceLock::new();
    C.get_or_init(|| serde_json::from_slice(&std::fs::read(dir().join("cases.json")).unwrap()).unwrap())
}

fn tok() -> &'static PromptTokenizer {
    static T: OnceLock<PromptTokenizer> = OnceLock::new();
    T.get_or_init(|| PromptTokenizer::from_dir(&dir()).unwrap())
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn conversation(case: &Value) -> Conversation {
    let mut c = Conversation::with_system(case["system"].as_str().unwrap());
    for m in case["messages"].as_array().unwrap() {
        let role = match m["role"].as_str().unwrap() {
            "User" => Role::User,
            _ => Role::Assistant,
        };
        c.messages.push(Message {
            role,
            text: m["text"].as_str().unwrap().to_string(),
            images: m["images"].as_u64().unwrap() as usize,
        });
    }
    c
}

#[test]
fn special_ids_come_from_the_tokenizer_files() {
    let t = tok();
    let c = cases();
    assert_eq!(t.bos_id() as u64, c["bos_id"].as_u64().unwrap());
    assert_eq!(t.eos_id() as u64, c["eos_id"].as_u64().unwrap());
    assert_eq!(t.image_id() as u64, c["image_id"].as_u64().unwrap());
    // The DeepSeek-VL 1.3B ids (REFERENCE.md), which the fixture reproduces.
    assert_eq!((t.bos_id(), t.eos_id(), t.image_id()), (100000, 100001, 100015));

    // tokenizer.json alone: the default names resolve to the same ids.
    let json = std::fs::read(dir().join("tokenizer.json")).unwrap();
    let bare = PromptTokenizer::from_bytes(&json, None, None, None).unwrap();
    assert_eq!((bare.bos_id(), bare.eos_id(), bare.image_id()), (100000, 100001, 100015));
    // A map that names another EOS is obeyed; a name not in the vocabulary is a typed error naming it.
    let other = PromptTokenizer::from_bytes(&json, Some(br#"{"eos_token": "<|EOT|>"}"#), None, None).unwrap();
    assert_eq!(other.eos_id(), 100008);
    let err = PromptTokenizer::from_bytes(&json, Some(br#"{"eos_token": {"content": "</s>"}}"#), None, None).unwrap_err();
    assert!(matches!(err, Error::Tokenizer { .. }) && err.to_string().contains("</s>"), "{err}");
    let err = PromptTokenizer::from_bytes(&json, None, None, Some("<image>")).unwrap_err();
    assert!(err.to_string().contains("<image>"), "{err}");
    let err = PromptTokenizer::from_bytes(b"{not json", None, None, None).unwrap_err();
    assert!(matches!(err, Error::Tokenizer { .. }), "{err}");
    let err = PromptTokenizer::from_bytes(&json, Some(b"[1,"), None, None).unwrap_err();
    assert!(err.to_string().contains("special_tokens_map.json"), "{err}");
}

#[test]
fn prompts_and_ids_match_python() {
    let t = tok();
    for case in cases()["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let conv = conversation(case);
        assert_eq!(conv.sft_format(t.image_tag()).unwrap(), case["prompt"].as_str().unwrap(), "{name}: prompt text");
        let n = case["num_image_tokens"].as_u64().unwrap() as usize;
        let enc = prompt::encode(t, &conv, n).unwrap();
        let want = ids(&case["ids"]);
        assert_eq!(enc.ids.len(), want.len(), "{name}: length");
        if let Some(i) = enc.ids.iter().zip(&want).position(|(a, b)| a != b) {
            panic!("{name}: first differing id at {i}: {} vs python {}", enc.ids[i], want[i]);
        }
        assert_eq!(enc.ids[0], t.bos_id(), "{name}: BOS first");
        assert_eq!(enc.image_positions, ids(&case["image_positions"]), "{name}: image positions");
        assert_eq!(enc.image_positions.len(), conv.num_images() * n, "{name}");
    }
}

#[test]
fn default_system_prompt_and_generation_suffix() {
    let mut c = Conversation::new();
    c.user("Describe this image.", 1);
    assert_eq!(
        c.sft_format("<image_placeholder>").unwrap(),
        format!("{}\n\nUser: <image_placeholder>Describe this image.\n\nAssistant:", prompt::DEFAULT_SYSTEM_PROMPT)
    );
    c.assistant("A cat.").user("More?", 0);
    assert!(c.sft_format("<image_placeholder>").unwrap().ends_with(
        "Assistant: A cat.<｜end▁of▁sentence｜>User: More?\n\nAssistant:"
    ));
}

#[test]
fn placeholder_and_role_errors_are_clear() {
    let t = tok();
    let mut c = Conversation::new();
    c.user("<image_placeholder><image_placeholder> two tags", 1);
    let err = prompt::encode(t, &c, 576).unwrap_err();
    assert!(matches!(err, Error::Prompt(_)) && err.to_string().contains("2 `<image_placeholder>` placeholder(s) but 1 image"), "{err}");

    let mut c = Conversation::new();
    c.user("<image_placeholder> one tag", 3);
    let err = prompt::encode(t, &c, 576).unwrap_err();
    assert!(err.to_string().contains("1 `<image_placeholder>` placeholder(s) but 3 image"), "{err}");

    let mut c = Conversation::new();
    c.user("text, a tag but no image <image_placeholder>", 0);
    assert!(prompt::encode(t, &c, 576).is_err());

    let mut c = Conversation::new();
    c.assistant("I speak first");
    let err = prompt::encode(t, &c, 576).unwrap_err();
    assert!(err.to_string().contains("message 0 is from Assistant"), "{err}");

    let mut c = Conversation::new();
    c.user("hi", 1);
    assert!(prompt::encode(t, &c, 0).is_err());
    // An absurd image-token count fails before allocating.
    let err = prompt::encode(t, &c, usize::MAX).unwrap_err();
    assert!(err.to_string().contains("exceeds"), "{err}");
    let mut c = Conversation::new();
    c.user("many", usize::MAX);
    assert!(prompt::encode(t, &c, 576).unwrap_err().to_string().contains("more than"));
}

/// Every prefix of every stream: the emitted text equals Python's incremental UTF-8 decode of the token bytes
/// (itself checked against `tokenizer.decode` of each prefix by the generator), and the end equals the full decode.
#[test]
fn streaming_decode_matches_python_on_every_prefix() {
    let t = tok();
    for (si, s) in cases()["streams"].as_array().unwrap().iter().enumerate() {
        let ids = ids(&s["ids"]);
        let prefixes: Vec<&str> = s["prefixes"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        let mut d = Detokenizer::new(t, true);
        let mut text = String::new();
        for (k, &id) in ids.iter().enumerate() {
            let piece = d.push(id).unwrap();
            text.push_str(&piece);
            assert_eq!(text, prefixes[k], "stream {si}, after {} token(s)", k + 1);
        }
        text.push_str(&d.finish().unwrap());
        assert_eq!(text, s["final"].as_str().unwrap(), "stream {si}: final");
        assert_eq!(text, t.decode(&ids, true).unwrap(), "stream {si}: vs Rust decode");
    }
}

/// The prompts themselves streamed (special tokens skipped) equal the whole decode, with no U+FFFD anywhere.
#[test]
fn streaming_prompts_never_split_characters() {
    let t = tok();
    for case in cases()["cases"].as_array().unwrap() {
        let ids = ids(&case["ids"]);
        let mut d = Detokenizer::new(t, true);
        let mut text = String::new();
        for &id in &ids {
            let piece = d.push(id).unwrap();
            assert!(!piece.contains('\u{FFFD}'), "{}: {piece:?}", case["name"]);
            text.push_str(&piece);
        }
        text.push_str(&d.finish().unwrap());
        assert_eq!(text, t.decode(&ids, true).unwrap(), "{}", case["name"]);
    }
}

#[test]
fn text_stream_stops_at_user_and_eos() {
    let t = tok();
    let ids = t.encode_text("The cat 🐱 sits.\n\nUser: and then", false).unwrap();
    let mut s = TextStream::new(t, &[STOP_STRING]);
    let mut out = String::new();
    let mut stopped_at = None;
    for (k, &id) in ids.iter().enumerate() {
        let Chunk { text, stopped } = s.push(id).unwrap();
        out.push_str(&text);
        if stopped {
            stopped_at = Some(k);
            break;
        }
    }
    assert_eq!(out, "The cat 🐱 sits.\n\n");
    assert!(stopped_at.is_some() && s.stopped());

    // "Us" held back until it turns out not to be "User:"; EOS flushes and stops.
    let mut ids = t.encode_text("Use 東京", false).unwrap();
    ids.push(t.eos_id());
    let mut s = TextStream::new(t, &[STOP_STRING]);
    let mut out = String::new();
    let mut last = Chunk::default();
    for &id in &ids {
        last = s.push(id).unwrap();
        out.push_str(&last.text);
    }
    assert!(last.stopped);
    assert_eq!(out, "Use 東京");

    // Length limit: finish() releases a held "Us".
    let mut s = TextStream::new(t, &[STOP_STRING]);
    let mut out = String::new();
    for id in t.encode_text("ok Us", false).unwrap() {
        out.push_str(&s.push(id).unwrap().text);
    }
    assert_eq!(out, "ok ");
    out.push_str(&s.finish().unwrap().text);
    assert_eq!(out, "ok Us");
}

#[test]
fn stop_matcher_on_split_pieces() {
    // Every split of the text into two pieces stops at the same place.
    let text = "Answer: 猫 is cat.\nUser: next";
    for (i, _) in text.char_indices() {
        let mut m = StopMatcher::new(&["User:"]);
        let a = m.push(&text[..i]);
        let b = m.push(&text[i..]);
        assert_eq!(format!("{}{}", a.text, b.text), "Answer: 猫 is cat.\n", "split at {i}");
        assert!(b.stopped);
    }
}

/// Chat with a kept KV cache: the Python ids of the multi-turn prompt are, after the last EOS, exactly the ids of
/// the new user turn encoded alone; and the part before it is the earlier conversation's prompt + answer + EOS.
#[test]
fn next_turn_ids_continue_the_python_prompt() {
    let t = tok();
    let case = cases()["cases"].as_array().unwrap().iter().find(|c| c["name"] == "multi_turn_multi_image").unwrap();
    let n = case["num_image_tokens"].as_u64().unwrap() as usize;
    let want = ids(&case["ids"]);
    let conv = conversation(case);
    let cut = want.iter().rposition(|&id| id == t.eos_id()).unwrap() + 1;
    let last = conv.messages.last().unwrap();
    let next = prompt::encode_next_turn(t, last, n).unwrap();
    assert_eq!(next.ids, want[cut..], "new turn ids");

    // The previous turn: prompt of the first three messages, then the answer's tokens, then EOS.
    let mut earlier = conv.clone();
    earlier.messages.truncate(3);
    let first = prompt::encode(t, &earlier, n).unwrap();
    assert_eq!(want[..first.ids.len()], first.ids[..], "earlier prompt is a prefix");

    // With an image in the new turn, positions count from the turn's first id.
    let m = Message { role: Role::User, text: "and this?".into(), images: 1 };
    let e = prompt::encode_next_turn(t, &m, 4).unwrap();
    let p0 = e.ids.iter().position(|&id| id == t.image_id()).unwrap() as u32;
    assert_eq!(e.image_positions, (p0..p0 + 4).collect::<Vec<_>>());
    assert!(e.ids[0] != t.bos_id());
    assert_eq!(t.decode(&e.ids, false).unwrap(), "User: <image_placeholder><image_placeholder><image_placeholder><image_placeholder>and this?\n\nAssistant:");
}
