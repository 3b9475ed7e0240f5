//! Requests from JS, as JSON (camelCase, as the npm package's types name them).

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::ops::sample::Sampling;

/// Options shared by `generate`, `chat` and `logits`.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Request {
    /// `generate` / `logits`: the user's message.
    pub prompt: Option<String>,
    /// System prompt; DeepSeek-VL's default when absent.
    pub system: Option<String>,
    /// `chat`: the conversation, alternating user / assistant, ending with the user.
    pub messages: Option<Vec<Message>>,
    pub max_new_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub repetition_penalty: Option<f32>,
    pub seed: Option<u32>,
    /// `chat`: tokens the KV cache holds (default 4096, capped by the model).
    pub context_tokens: Option<usize>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// "system", "user" or "assistant".
    pub role: String,
    pub content: String,
    /// How many of the request's images belong to this message (in order).
    #[serde(default)]
    pub images: usize,
}

/// Default answer length when `maxNewTokens` is absent.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 256;

impl Request {
    pub fn parse(json: &str) -> Result<Request> {
        serde_json::from_str(json).map_err(|e| Error::Invalid(format!("request: {e}")))
    }

    /// Sampling with HF's ranges (the CLI's checks).
    pub fn sampling(&self) -> Result<Sampling> {
        let s = Sampling {
            temperature: self.temperature.unwrap_or(0.0),
            top_k: self.top_k.unwrap_or(0),
            top_p: self.top_p.unwrap_or(1.0),
            repetition_penalty: self.repetition_penalty.unwrap_or(1.0),
            seed: self.seed.unwrap_or(0),
            top_p_within_top_k: false,
        };
        if !(s.top_p > 0.0 && s.top_p <= 1.0) {
            return Err(Error::Invalid(format!("topP {}: must be in (0, 1]", s.top_p)));
        }
        if !(s.temperature >= 0.0 && s.temperature.is_finite()) {
            return Err(Error::Invalid(format!("temperature {}: must be >= 0 (0 = greedy)", s.temperature)));
        }
        s.validate()?;
        Ok(s)
    }

    pub fn max_new_tokens(&self) -> usize {
        self.max_new_tokens.unwrap_or(DEFAULT_MAX_NEW_TOKENS)
    }
}
