//! Token generation: one prefill pass (vision, embeddings, decoder, first sample), then a
//! decode step recorded once and replayed per token. The sampled id stays on the GPU (the next
//! step embeds it from there); only the id is read back, for streaming and stop checks.

use crate::error::{Error, Result};
use crate::gpu::{DType, Gpu, Recorder, Tensor};
use crate::model::llama::{record_decoder, KvCache, LogitRows};
use crate::model::vlm::Model;
use crate::ops::convert::{convert, Source};
use crate::ops::embedding::{embed, gather, image_positions};
use crate::ops::sample::{advance, sample, History, Sampling};

#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub sampling: Sampling,
    pub max_new_tokens: usize,
    /// Stop after emitting this id (the tokenizer's end-of-sentence).
    pub eos: Option<u32>,
}

impl Model {
    /// Generates up to `max_new_tokens` ids after `ids` (image tokens already expanded; one
    /// f32 [3, S, S] pixel tensor per image). `on_token` sees each id as it is produced and
    /// returns false to stop (stop strings). Returns the generated ids (EOS included if hit).
    pub async fn generate(
        &self,
        gpu: &Gpu,
        ids: &[u32],
        image_token: u32,
        images: &[Tensor],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Vec<u32>> {
        let cfg = &self.cfg.llm;
        let m = ids.len();
        let total = m + opts.max_new_tokens;
        if m == 0 {
            return Err(Error::Invalid("empty prompt".into()));
        }
        if total > cfg.max_positions {
            return Err(Error::Invalid(format!(
                "prompt of {m} tokens + {} new tokens exceeds the context of {}",
                opts.max_new_tokens, cfg.max_positions
            )));
        }
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= cfg.vocab) {
            return Err(Error::Invalid(format!("token id {bad} outside the vocabulary of {}", cfg.vocab)));
        }
        let positions = image_positions(ids, image_token);
        if positions.len() != images.len() * self.cfg.num_image_tokens {
            return Err(Error::Invalid(format!("{} image tokens in the prompt for {} images", positions.len(), images.len())));
        }
        if opts.max_new_tokens == 0 {
            return Ok(Vec::new());
        }
        let act = self.act;
        let cache = KvCache::new(gpu, cfg, total, act)?;
        // State the lists share: the current token, positions, sampling step and history.
        let token = Tensor::from_u32(gpu, &[1], &[0])?;
        let seq = Tensor::from_u32(gpu, &[2], &[0, m as u32])?;
        let step = Tensor::from_u32(gpu, &[1], &[0])?;
        let mut hist_init = ids.to_vec();
        hist_init.resize(total, 0);
        let hist_ids = Tensor::from_u32(gpu, &[total], &hist_init)?;
        let hist_count = Tensor::from_u32(gpu, &[1], &[m as u32])?;
        let history = History { ids: &hist_ids, count: &hist_count };
        // Sampling reads f32 logits; with f16 activations the head's output is widened first.
        let logits = Tensor::empty(gpu, &[1, cfg.vocab], DType::F32)?;
        let head_out = if act == DType::F32 { logits.clone() } else { Tensor::empty(gpu, &[1, cfg.vocab], act)? };
        let widen = |rec: &mut Recorder| -> Result<()> {
            if act == DType::F32 {
                return Ok(());
            }
            let raw = head_out.bitcast(DType::U32, &[cfg.vocab.div_ceil(2)])?;
            convert(rec, &raw, cfg.vocab, Source::F16, &logits.reshape(&[cfg.vocab])?)
        };

        // Prefill: images, embeddings, the whole prompt, the first sample.
        let mut rec = Recorder::new(gpu);
        let image_rows = self.record_images(&mut rec, images)?;
        let idt = Tensor::from_u32(gpu, &[m], ids)?;
        let x = Tensor::empty(gpu, &[m, cfg.hidden], act)?;
        let pos_t = Tensor::from_u32(gpu, &[positions.len().max(1)], if positions.is_empty() { &[0] } else { &positions })?;
        embed(&mut rec, &idt, &self.weights.llm.embed, image_rows.as_ref().map(|r| (r, &pos_t)), &x)?;
        record_decoder(&mut rec, cfg, &self.weights.llm, self.consts(), &cache, &x, &seq, LogitRows::Last, &head_out)?;
        widen(&mut rec)?;
        sample(&mut rec, &logits, &opts.sampling, &step, Some(&history), &token, 0)?;
        advance(&mut rec, &token, 0, &history, &step, true)?;
        rec.finish()?.run(gpu).await?;

        // Decode step, recorded once: embed the token the last step sampled, run one position.
        let mut rec = Recorder::new(gpu);
        let x1 = Tensor::empty(gpu, &[1, cfg.hidden], act)?;
        gather(&mut rec, &token, &self.weights.llm.embed, &x1)?;
        record_decoder(&mut rec, cfg, &self.weights.llm, self.consts(), &cache, &x1, &seq, LogitRows::Last, &head_out)?;
        widen(&mut rec)?;
        sample(&mut rec, &logits, &opts.sampling, &step, Some(&history), &token, 0)?;
        advance(&mut rec, &token, 0, &history, &step, true)?;
        let decode = rec.finish()?;

        let mut out = Vec::with_capacity(opts.max_new_tokens);
        let mut pos = m;
        loop {
            let id = gpu.read_u32(&token).await?[0];
            out.push(id);
            if !on_token(id) || Some(id) == opts.eos || out.len() == opts.max_new_tokens {
                break;
            }
            seq.write_u32(gpu, &[pos as u32, pos as u32 + 1])?;
            decode.run(gpu).await?;
            pos += 1;
        }
        Ok(out)
    }
}
