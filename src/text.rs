//! Streaming text: an incremental detokeniser that never splits a UTF-8 character, and a stop-string matcher.
//!
//! Byte-level BPE (DeepSeek's tokenizer) can split one character over several tokens. [`Detokenizer`] keeps the
//! token bytes that do not yet form a whole character and emits the rest, exactly as a UTF-8 incremental decoder with
//! replacement would: invalid bytes become U+FFFD as soon as they are known to be invalid, an incomplete tail waits.
//! [`Detokenizer::finish`] flushes the tail (as U+FFFD). The concatenated output equals `tokenizer.decode(ids)`.
//!
//! [`StopMatcher`] sits after it: it holds back text that could be the start of a stop string (`User:`) and cuts the
//! stream where one appears. [`TextStream`] chains both and stops on EOS too.

use crate::error::Result;
use crate::prompt::PromptTokenizer;
use tokenizers::DecoderWrapper;

/// GPT-2's byte-level alphabet: the character that stands for each byte in a byte-level vocabulary.
fn byte_level_char(b: u8) -> char {
    let visible = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    if visible(b) {
        return char::from(b);
    }
    let rank = (0..b).filter(|&x| !visible(x)).count() as u32;
    char::from_u32(256 + rank).unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// Inverse of [`byte_level_char`] for one character.
fn byte_level_byte(c: char) -> Option<u8> {
    let u = c as u32;
    if u < 256 {
        let b = u as u8;
        return (byte_level_char(b) == c).then_some(b);
    }
    // The 68 invisible bytes map, in order, to U+0100..U+0143.
    let rank = u.checked_sub(256)?;
    (0..=255u8).filter(|&x| byte_level_char(x) as u32 >= 256).nth(rank as usize)
}

/// Incremental detokeniser.
pub struct Detokenizer<'t> {
    tok: &'t PromptTokenizer,
    skip_special: bool,
    byte_level: bool,
    /// Bytes that do not yet form a whole character (byte-level path).
    pending: Vec<u8>,
    /// Generic path: ids since the last emitted boundary, and how many of them were already emitted.
    ids: Vec<u32>,
    emitted_chars: usize,
}

impl<'t> Detokenizer<'t> {
    /// `skip_special` drops special tokens (BOS, EOS, the image tag) as `decode(ids, true)` does.
    pub fn new(tok: &'t PromptTokenizer, skip_special: bool) -> Self {
        let byte_level = matches!(tok.inner().get_decoder(), Some(DecoderWrapper::ByteLevel(_)));
        Self { tok, skip_special, byte_level, pending: Vec::new(), ids: Vec::new(), emitted_chars: 0 }
    }

    /// The bytes a token stands for under the ByteLevel decoder; `None` for skipped special tokens.
    fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        let inner = self.tok.inner();
        if self.skip_special && self.tok.is_special(id) {
            return None;
        }
        let s = inner.id_to_token(id)?;
        // As tokenizers' ByteLevel decoder: map every char back to its byte, or keep the UTF-8 text if any char
        // is outside the alphabet (added tokens such as `<｜end▁of▁sentence｜>`).
        match s.chars().map(byte_level_byte).collect::<Option<Vec<u8>>>() {
            Some(b) => Some(b),
            None => Some(s.into_bytes()),
        }
    }

    /// Feeds one token; returns the text that became complete (possibly empty).
    pub fn push(&mut self, id: u32) -> Result<String> {
        if !self.byte_level {
            return self.push_generic(id);
        }
        if let Some(b) = self.token_bytes(id) {
            self.pending.extend_from_slice(&b);
        }
        Ok(self.drain(false))
    }

    /// Flushes what is held back (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> Result<String> {
        if !self.byte_level {
            let all = self.tok.decode(&self.ids, self.skip_special)?;
            let out: String = all.chars().skip(self.emitted_chars).collect();
            self.ids.clear();
            self.emitted_chars = 0;
            return Ok(out);
        }
        Ok(self.drain(true))
    }

    fn drain(&mut self, last: bool) -> String {
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(good).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &bad[n..];
                        }
                        None if last => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &[];
                            break;
                        }
                        None => {
                            rest = bad;
                            break;
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        out
    }

    /// Any other decoder: re-decode the ids since the last boundary and emit new text unless it ends in U+FFFD.
    fn push_generic(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = self.tok.decode(&self.ids, self.skip_special)?;
        if text.ends_with(char::REPLACEMENT_CHARACTER) {
            return Ok(String::new());
        }
        let out: String = text.chars().skip(self.emitted_chars).collect();
        // Keep the last id as context for decoders that look at neighbours (e.g. a leading-space strip).
        if let Some(&last) = self.ids.last() {
            let tail = self.tok.decode(&[last], self.skip_special)?;
            self.ids = vec![last];
            self.emitted_chars = tail.chars().count();
        }
        Ok(out)
    }
}

/// What a push into a [`StopMatcher`] or [`TextStream`] yields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chunk {
    /// Text safe to show now.
    pub text: String,
    /// Generation should stop: a stop string (cut off, not included) or EOS was reached.
    pub stopped: bool,
}

/// Cuts a text stream at the first stop string, holding back any suffix that could begin one.
#[derive(Clone, Debug)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
    stopped: bool,
}

impl StopMatcher {
    pub fn new<S: AsRef<str>>(stops: &[S]) -> Self {
        let stops = stops.iter().map(|s| s.as_ref().to_string()).filter(|s| !s.is_empty()).collect();
        Self { stops, held: String::new(), stopped: false }
    }

    /// Adds text; returns what can be shown. After a stop, everything is dropped.
    pub fn push(&mut self, text: &str) -> Chunk {
        if self.stopped {
            return Chunk { text: String::new(), stopped: true };
        }
        self.held.push_str(text);
        // Earliest stop string occurrence.
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            self.stopped = true;
            let out = self.held[..at].to_string();
            self.held.clear();
            return Chunk { text: out, stopped: true };
        }
        // Longest suffix of `held` that is a proper prefix of some stop string stays held.
        let keep = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| self.stops.iter().any(|s| s.starts_with(&self.held[i..])))
            .unwrap_or(self.held.len());
        let out = self.held[..keep].to_string();
        self.held.drain(..keep);
        Chunk { text: out, stopped: false }
    }

    /// End of stream: releases the held text (it did not become a stop string).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    pub fn stopped(&self) -> bool {
        self.stopped
    }
}

/// Token ids in, displayable text out: [`Detokenizer`] + [`StopMatcher`] + EOS.
pub struct TextStream<'t> {
    detok: Detokenizer<'t>,
    stop: StopMatcher,
    eos_id: u32,
    done: bool,
}

impl<'t> TextStream<'t> {
    /// Stops on the tokenizer's EOS and on `stops` (for the `deepseek` template: [`crate::prompt::STOP_STRING`]).
    pub fn new<S: AsRef<str>>(tok: &'t PromptTokenizer, stops: &[S]) -> Self {
        Self { detok: Detokenizer::new(tok, true), stop: StopMatcher::new(stops), eos_id: tok.eos_id(), done: false }
    }

    /// Feeds one generated id.
    pub fn push(&mut self, id: u32) -> Result<Chunk> {
        if self.done {
            return Ok(Chunk { text: String::new(), stopped: true });
        }
        if id == self.eos_id {
            return self.finish();
        }
        let text = self.detok.push(id)?;
        let chunk = self.stop.push(&text);
        self.done = chunk.stopped;
        Ok(chunk)
    }

    /// End of generation (EOS, length limit): flushes held bytes and held text.
    pub fn finish(&mut self) -> Result<Chunk> {
        if self.done {
            return Ok(Chunk { text: String::new(), stopped: true });
        }
        self.done = true;
        let tail = self.detok.finish()?;
        let mut chunk = self.stop.push(&tail);
        if !chunk.stopped {
            chunk.text.push_str(&self.stop.finish());
        }
        chunk.stopped = true;
        Ok(chunk)
    }

    pub fn stopped(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_alphabet_round_trips() {
        for b in 0..=255u8 {
            assert_eq!(byte_level_byte(byte_level_char(b)), Some(b), "byte {b}");
        }
        assert_eq!(byte_level_char(b' '), 'Ġ');
        assert_eq!(byte_level_char(b'\n'), 'Ċ');
        assert_eq!(byte_level_byte('ｉ'), None);
    }

    #[test]
    fn stop_matcher_holds_prefixes() {
        let mut m = StopMatcher::new(&["User:"]);
        assert_eq!(m.push("Hello Us").text, "Hello ");
        assert_eq!(m.push("e").text, "");
        assert_eq!(m.push("d it").text, "Used it");
        let c = m.push(" ok\n\nUser: more");
        assert_eq!(c, Chunk { text: " ok\n\n".into(), stopped: true });
        assert!(m.push("x").stopped);

        let mut m = StopMatcher::new(&["User:"]);
        assert_eq!(m.push("a U").text, "a ");
        assert_eq!(m.finish(), "U");
        // Multi-byte text around a held prefix.
        let mut m = StopMatcher::new(&["User:", "<｜end▁of▁sentence｜>"]);
        assert_eq!(m.push("猫<｜end").text, "猫");
        assert_eq!(m.push("▁of▁sentence｜>x"), Chunk { text: String::new(), stopped: true });
    }
}
