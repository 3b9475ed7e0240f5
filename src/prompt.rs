//! The tokenizer and the `deepseek` sft prompt format of DeepSeek-VL.
//!
//! The template follows deepseek-ai/DeepSeek-VL (`deepseek_vl/utils/conversation.py`, `SeparatorStyle.DeepSeek`, and
//! `VLChatProcessor` in `deepseek_vl/models/processing_vlm.py`):
//!
//! ```text
//! {system}\n\nUser: {msg1}\n\nAssistant: {answer1}<｜end▁of▁sentence｜>User: {msg2}\n\nAssistant:
//! ```
//!
//! Every message is stripped, an empty system prompt drops its separator, an empty message renders as `Role:`, and the
//! whole string is stripped. The string is tokenised with the tokenizer's own post-processing (BOS first), then every
//! image token is expanded into `num_image_tokens` copies (`VLChatProcessor.add_image_token`).
//!
//! Everything here works from byte slices so the browser build can use it; [`PromptTokenizer::from_dir`] is native only.

use crate::error::{Error, Result};
use tokenizers::Tokenizer;

/// The system prompt `VLChatProcessor` uses by default.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a helpful language and vision assistant. \
You are able to understand the visual content that the user provides, \
and assist the user with a variety of tasks using natural language.";

/// The image tag of `VLChatProcessor` (overridable by `processor_config.json`'s `image_tag`).
pub const DEFAULT_IMAGE_TAG: &str = "<image_placeholder>";

/// The stop string of the `deepseek` template besides EOS.
pub const STOP_STRING: &str = "User:";

/// Default names looked up when neither `special_tokens_map.json` nor `tokenizer_config.json` names them.
const DEFAULT_BOS: &str = "<｜begin▁of▁sentence｜>";
const DEFAULT_EOS: &str = "<｜end▁of▁sentence｜>";

/// Upper bound on an encoded prompt, far above any context length; guards the expansion arithmetic.
const MAX_PROMPT_TOKENS: usize = 1 << 24;

/// Upper bound on the images of one message; guards the placeholder insertion.
const MAX_IMAGES_PER_MESSAGE: usize = 4096;

/// A `tokenizer.json` with the ids the model needs, all read from the tokenizer files.
pub struct PromptTokenizer {
    tok: Tokenizer,
    bos_id: u32,
    eos_id: u32,
    image_id: u32,
    image_tag: String,
    /// Ids of the added tokens marked special, sorted.
    special_ids: Vec<u32>,
}

impl std::fmt::Debug for PromptTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptTokenizer")
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("image_id", &self.image_id)
            .field("image_tag", &self.image_tag)
            .finish()
    }
}

fn tok_err(what: &str, message: impl std::fmt::Display) -> Error {
    Error::Tokenizer { what: what.to_string(), message: crate::error::one_line(&message.to_string()) }
}

/// A special-token entry of `special_tokens_map.json` / `tokenizer_config.json`: a string or `{"content": ...}`.
fn token_name(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(m) => m.get("content").and_then(|c| c.as_str()).map(str::to_string),
        _ => None,
    }
}

impl PromptTokenizer {
    /// Loads `tokenizer.json` and, when given, `special_tokens_map.json` and `tokenizer_config.json` (which name BOS
    /// and EOS; the first one that names a token wins). `image_tag` defaults to `<image_placeholder>`.
    pub fn from_bytes(
        tokenizer_json: &[u8],
        special_tokens_map: Option<&[u8]>,
        tokenizer_config: Option<&[u8]>,
        image_tag: Option<&str>,
    ) -> Result<Self> {
        crate::tokenizer_check::check(tokenizer_json).map_err(|m| tok_err("tokenizer.json", m))?;
        let tok = Tokenizer::from_bytes(tokenizer_json).map_err(|e| tok_err("tokenizer.json", e))?;
        let mut names: Vec<(&str, serde_json::Value)> = Vec::new();
        for (file, bytes) in [("special_tokens_map.json", special_tokens_map), ("tokenizer_config.json", tokenizer_config)] {
            if let Some(b) = bytes {
                let v: serde_json::Value = serde_json::from_slice(b).map_err(|e| tok_err(file, e))?;
                names.push((file, v));
            }
        }
        let lookup = |key: &str, default: &str| -> Result<(String, u32)> {
            let (source, name) = names
                .iter()
                .find_map(|(file, v)| v.get(key).and_then(token_name).map(|n| (*file, n)))
                .unwrap_or(("default name", default.to_string()));
            let id = tok
                .token_to_id(&name)
                .ok_or_else(|| tok_err("tokenizer.json", format!("{key} `{name}` (from {source}) is not in the vocabulary")))?;
            Ok((name, id))
        };
        let (_, bos_id) = lookup("bos_token", DEFAULT_BOS)?;
        let (_, eos_id) = lookup("eos_token", DEFAULT_EOS)?;
        let image_tag = image_tag.unwrap_or(DEFAULT_IMAGE_TAG).to_string();
        let image_id = tok
            .token_to_id(&image_tag)
            .ok_or_else(|| tok_err("tokenizer.json", format!("image tag `{image_tag}` is not in the vocabulary")))?;
        let mut special_ids: Vec<u32> =
            tok.get_added_tokens_decoder().iter().filter(|(_, t)| t.special).map(|(&id, _)| id).collect();
        special_ids.sort_unstable();
        Ok(Self { tok, bos_id, eos_id, image_id, image_tag, special_ids })
    }

    /// Loads `tokenizer.json` (+ `special_tokens_map.json`, `tokenizer_config.json` and `processor_config.json`'s
    /// `image_tag` when present) from a model folder.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_dir(dir: &std::path::Path) -> Result<Self> {
        let read = |name: &str| -> Result<Option<Vec<u8>>> {
            let path = dir.join(name);
            match std::fs::read(&path) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(tok_err(&path.display().to_string(), e)),
            }
        };
        let json = read("tokenizer.json")?
            .ok_or_else(|| tok_err(&dir.join("tokenizer.json").display().to_string(), "file not found"))?;
        let map = read("special_tokens_map.json")?;
        let config = read("tokenizer_config.json")?;
        let image_tag = match read("processor_config.json")? {
            Some(b) => {
                let v: serde_json::Value = serde_json::from_slice(&b).map_err(|e| tok_err("processor_config.json", e))?;
                v.get("image_tag").and_then(|t| t.as_str()).map(str::to_string)
            }
            None => None,
        };
        Self::from_bytes(&json, map.as_deref(), config.as_deref(), image_tag.as_deref())
    }

    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }
    pub fn image_id(&self) -> u32 {
        self.image_id
    }
    pub fn image_tag(&self) -> &str {
        &self.image_tag
    }
    /// Whether `id` is an added token marked special (skipped by `decode(.., true)`).
    pub fn is_special(&self, id: u32) -> bool {
        self.special_ids.binary_search(&id).is_ok()
    }
    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.tok
    }

    /// Token ids of `text` with the tokenizer's post-processing when `special` (BOS first for DeepSeek).
    pub fn encode_text(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        let enc = self.tok.encode(text, special).map_err(|e| tok_err("encode", e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Whole-sequence decode (special tokens skipped when `skip_special`).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.tok.decode(ids, skip_special).map_err(|e| tok_err("decode", e))
    }
}

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

impl Role {
    /// The role name as the template writes it.
    pub fn name(self) -> &'static str {
        match self {
            Role::User => "User",
            Role::Assistant => "Assistant",
        }
    }
}

/// One turn. `images` is how many images this message carries; each `<image_placeholder>` in `text` consumes the next
/// one, and a message with images and no placeholder gets one placeholder per image before its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub role: Role,
    pub text: String,
    pub images: usize,
}

/// A system prompt and alternating User / Assistant messages, starting with User.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    pub system: String,
    pub messages: Vec<Message>,
}

impl Default for Conversation {
    fn default() -> Self {
        Self { system: DEFAULT_SYSTEM_PROMPT.to_string(), messages: Vec::new() }
    }
}

/// Python's `str.strip()` whitespace: Unicode White_Space plus the separators U+001C..U+001F.
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn py_strip(s: &str) -> &str {
    s.trim_matches(py_space)
}

impl Conversation {
    /// An empty conversation with the default system prompt.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty conversation with `system` as the system prompt (`""` drops it).
    pub fn with_system(system: impl Into<String>) -> Self {
        Self { system: system.into(), messages: Vec::new() }
    }

    pub fn user(&mut self, text: impl Into<String>, images: usize) -> &mut Self {
        self.messages.push(Message { role: Role::User, text: text.into(), images });
        self
    }

    pub fn assistant(&mut self, text: impl Into<String>) -> &mut Self {
        self.messages.push(Message { role: Role::Assistant, text: text.into(), images: 0 });
        self
    }

    /// Total images over all messages, in the order their tokens appear.
    pub fn num_images(&self) -> usize {
        self.messages.iter().map(|m| m.images).sum()
    }

    /// The prompt string. When the last message is the user's, an empty Assistant turn is appended so the string ends
    /// with `Assistant:` (the generation prompt).
    pub fn sft_format(&self, image_tag: &str) -> Result<String> {
        let mut texts: Vec<(Role, String)> = Vec::with_capacity(self.messages.len() + 1);
        for (i, m) in self.messages.iter().enumerate() {
            let expected = if i % 2 == 0 { Role::User } else { Role::Assistant };
            if m.role != expected {
                return Err(Error::Prompt(format!(
                    "message {i} is from {}, expected {} (messages alternate, starting with User)",
                    m.role.name(),
                    expected.name()
                )));
            }
            if m.images > MAX_IMAGES_PER_MESSAGE {
                return Err(Error::Prompt(format!(
                    "message {i} has {} images, more than {MAX_IMAGES_PER_MESSAGE}",
                    m.images
                )));
            }
            let found = m.text.matches(image_tag).count();
            let text = if found == 0 && m.images > 0 {
                let mut t = String::with_capacity(image_tag.len() * m.images + m.text.len());
                for _ in 0..m.images {
                    t.push_str(image_tag);
                }
                t.push_str(&m.text);
                t
            } else if found != m.images {
                return Err(Error::Prompt(format!(
                    "message {i} has {found} `{image_tag}` placeholder(s) but {} image(s)",
                    m.images
                )));
            } else {
                m.text.clone()
            };
            texts.push((m.role, py_strip(&text).to_string()));
        }
        if texts.last().is_some_and(|(r, _)| *r == Role::User) {
            texts.push((Role::Assistant, String::new()));
        }
        let seps = ["\n\n", DEFAULT_EOS_SEP];
        let mut ret = String::new();
        if !self.system.is_empty() {
            ret.push_str(&self.system);
            ret.push_str(seps[0]);
        }
        for (i, (role, text)) in texts.iter().enumerate() {
            ret.push_str(role.name());
            if text.is_empty() {
                ret.push(':');
            } else {
                ret.push_str(": ");
                ret.push_str(text);
                ret.push_str(seps[i % 2]);
            }
        }
        Ok(py_strip(&ret).to_string())
    }
}

/// `sep2` of the template: the literal end-of-sentence text after every assistant answer.
const DEFAULT_EOS_SEP: &str = "<｜end▁of▁sentence｜>";

/// Token ids of a prompt with every image token expanded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    /// Row index of every image token in `ids`, in order: image `k` owns rows `k*n .. (k+1)*n` of this list.
    pub image_positions: Vec<u32>,
}

/// Formats `conversation`, tokenises it (BOS first) and expands each image token into `num_image_tokens` copies.
pub fn encode(tok: &PromptTokenizer, conversation: &Conversation, num_image_tokens: usize) -> Result<Encoded> {
    let text = conversation.sft_format(&tok.image_tag)?;
    let raw = tok.encode_text(&text, true)?;
    expand(tok, raw, conversation.num_images(), num_image_tokens)
}

/// The tokens of one more user turn for chat with a kept KV cache: `User: {text}\n\nAssistant:` without BOS.
///
/// The cache must hold the earlier prompt, the answer and then EOS: in the template every answer is followed by
/// `<｜end▁of▁sentence｜>`, a special token that the tokenizer never merges with its neighbours, so the whole
/// conversation tokenises to exactly those pieces in a row. (When the answer stopped on the `User:` string rather
/// than on EOS, feed EOS before these ids.) `image_positions` count from the first returned id.
pub fn encode_next_turn(tok: &PromptTokenizer, message: &Message, num_image_tokens: usize) -> Result<Encoded> {
    if message.role != Role::User {
        return Err(Error::Prompt("a new turn starts with a User message".into()));
    }
    // The template of a conversation without system prompt is exactly the turn's own text.
    let turn = Conversation { system: String::new(), messages: vec![message.clone()] };
    let text = turn.sft_format(&tok.image_tag)?;
    let raw = tok.encode_text(&text, false)?;
    expand(tok, raw, message.images, num_image_tokens)
}

/// `VLChatProcessor.add_image_token`: every image token becomes `num_image_tokens` copies.
fn expand(tok: &PromptTokenizer, raw: Vec<u32>, expected_images: usize, num_image_tokens: usize) -> Result<Encoded> {
    if num_image_tokens == 0 {
        return Err(Error::Prompt("num_image_tokens must be at least 1".into()));
    }
    let images = raw.iter().filter(|&&t| t == tok.image_id).count();
    if images != expected_images {
        return Err(Error::Prompt(format!(
            "the tokenised prompt has {images} image token(s) for {expected_images} image(s)"
        )));
    }
    let total = images
        .checked_mul(num_image_tokens - 1)
        .and_then(|n| n.checked_add(raw.len()))
        .filter(|&n| n <= MAX_PROMPT_TOKENS)
        .ok_or_else(|| {
            Error::Prompt(format!(
                "{} text tokens + {images} image(s) x {num_image_tokens} tokens exceeds {MAX_PROMPT_TOKENS} tokens",
                raw.len()
            ))
        })?;
    let mut ids = Vec::with_capacity(total);
    let mut image_positions = Vec::with_capacity(images * num_image_tokens);
    for t in raw {
        if t == tok.image_id {
            for _ in 0..num_image_tokens {
                image_positions.push(ids.len() as u32); // < MAX_PROMPT_TOKENS
                ids.push(t);
            }
        } else {
            ids.push(t);
        }
    }
    Ok(Encoded { ids, image_positions })
}
