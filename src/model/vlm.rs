//! The whole graph: vision tower → aligner → token embeddings with the image rows spliced in →
//! decoder → logits.

use super::config::ModelConfig;
use super::llama::{max_pass_rows, record_decoder, KvCache, LlmConsts, LogitRows};
use super::sam::{record_hybrid, record_pixel_norm};
use super::siglip::{record_aligner, record_tower};
use super::weights::Weights;
use crate::error::{Error, Result};
use crate::gpu::{DType, Gpu, Recorder, Tensor};
use crate::ops::embedding::{embed, image_positions};
use crate::ops::Rows;

/// A loaded model on one GPU.
pub struct Model {
    pub cfg: ModelConfig,
    pub weights: Weights,
    /// Activation dtype (f32 for the parity path).
    pub act: DType,
    consts: LlmConsts,
}

impl Model {
    pub fn new(gpu: &Gpu, cfg: ModelConfig, weights: Weights, act: DType) -> Result<Model> {
        let consts = LlmConsts::new(gpu, &cfg.llm)?;
        Ok(Model { cfg, weights, act, consts })
    }

    pub(crate) fn consts(&self) -> &LlmConsts {
        &self.consts
    }

    /// Records vision + aligner for every image into rows [n_images * tokens, n_embed].
    pub(crate) fn record_images(&self, rec: &mut Recorder, images: &[Tensor]) -> Result<Option<Tensor>> {
        if images.is_empty() {
            return Ok(None);
        }
        let n = self.cfg.num_image_tokens;
        let rows = Tensor::empty(rec.gpu, &[images.len() * n, self.cfg.aligner.n_embed], self.act)?;
        let seq = Tensor::from_u32(rec.gpu, &[2], &[0, n as u32])?;
        for (i, px) in images.iter().enumerate() {
            let s = self.cfg.image_size();
            if px.shape() != [3, s, s] || px.dtype() != DType::F32 {
                return Err(Error::Shape { op: "vision", detail: format!("pixels {:?} {}, expected [3, {s}, {s}] f32", px.shape(), px.dtype()) });
            }
            let out = Rows::all(&rows).rows(i * n, n);
            if self.cfg.sam.is_some() {
                record_hybrid(rec, &self.cfg, &self.weights, px, self.act, &seq, &out)?;
                continue;
            }
            let px = record_pixel_norm(rec, px, self.cfg.vision.pixel_norm)?;
            let tokens = record_tower(rec, &self.cfg, &self.weights.vision, &px, self.act, &seq)?;
            record_aligner(rec, &self.weights.aligner, &tokens, self.act, &out)?;
        }
        Ok(Some(rows))
    }

    /// Records the prefill of `ids` (the prompt's tokens after the `keep` already cached) into
    /// `cache`, in passes small enough for the binding limit, and logits into `logits`: the last
    /// row's ([1, vocab]) or every row's ([ids, vocab], each pass writing its rows).
    /// `image` = (image rows, their positions within `ids`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record_prefill(&self, rec: &mut Recorder, cache: &KvCache, ids: &[u32], keep: usize, image: Option<(&Tensor, &[u32])>, rows: LogitRows, logits: &Tensor) -> Result<()> {
        let gpu = rec.gpu;
        let cfg = &self.cfg.llm;
        let per = max_pass_rows(gpu, cfg, self.act);
        let s = ids.len();
        let mut c0 = 0;
        while c0 < s {
            let c1 = (c0 + per).min(s);
            let idt = Tensor::from_u32(gpu, &[c1 - c0], &ids[c0..c1])?;
            let x = Tensor::empty(gpu, &[c1 - c0, cfg.hidden], self.act)?;
            // Image rows outside this pass get a position past it, which the splice skips.
            let mut splice = None;
            if let Some((rows, positions)) = image
                && positions.iter().any(|&p| (c0..c1).contains(&(p as usize)))
            {
                let local: Vec<u32> = positions.iter().map(|&p| if (c0..c1).contains(&(p as usize)) { p - c0 as u32 } else { u32::MAX }).collect();
                splice = Some((rows, Tensor::from_u32(gpu, &[local.len()], &local)?));
            }
            embed(rec, &idt, &self.weights.llm.embed, splice.as_ref().map(|(r, p)| (*r, p)), &x)?;
            let seq = Tensor::from_u32(gpu, &[2], &[(keep + c0) as u32, (keep + c1) as u32])?;
            match rows {
                LogitRows::All => {
                    let out = logits.view(c0 * cfg.vocab, &[c1 - c0, cfg.vocab])?;
                    record_decoder(rec, cfg, &self.weights.llm, &self.consts, cache, &x, &seq, LogitRows::All, &out)?;
                }
                _ => {
                    let last = if c1 == s { rows } else { LogitRows::None };
                    record_decoder(rec, cfg, &self.weights.llm, &self.consts, cache, &x, &seq, last, logits)?;
                }
            }
            c0 = c1;
        }
        Ok(())
    }

    /// Next-token logits after the whole prompt (`rows` = Last) or at every position (All), for
    /// token ids with every image token already expanded to `num_image_tokens` copies and one
    /// f32 [3, S, S] pixel tensor per image.
    pub async fn prefill_logits(&self, gpu: &Gpu, ids: &[u32], image_token: u32, images: &[Tensor], rows: LogitRows) -> Result<Vec<f32>> {
        let m = ids.len();
        let cfg = &self.cfg;
        if m == 0 {
            return Err(Error::Invalid("empty prompt".into()));
        }
        if rows == LogitRows::None {
            return Err(Error::Invalid("prefill_logits: ask for the last row's logits or every row's".into()));
        }
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= cfg.llm.vocab) {
            return Err(Error::Invalid(format!("token id {bad} outside the vocabulary of {}", cfg.llm.vocab)));
        }
        let positions = image_positions(ids, image_token);
        if positions.len() != images.len() * cfg.num_image_tokens {
            return Err(Error::Invalid(format!(
                "{} image tokens in the prompt for {} images of {} tokens",
                positions.len(),
                images.len(),
                cfg.num_image_tokens
            )));
        }
        let mut rec = Recorder::new(gpu);
        let image_rows = self.record_images(&mut rec, images)?;
        let cache = KvCache::new(gpu, &cfg.llm, m, self.act)?;
        // The last row's logits come as f32 from the head's GEMV; every row's, from a GEMM, in
        // the activations' dtype.
        let (n, dtype) = if rows == LogitRows::All { (m, self.act) } else { (1, DType::F32) };
        let logits = Tensor::empty(gpu, &[n, cfg.llm.vocab], dtype)?;
        self.record_prefill(&mut rec, &cache, ids, 0, image_rows.as_ref().map(|r| (r, &positions[..])), rows, &logits)?;
        rec.finish()?.run(gpu).await?;
        gpu.read_f32(&logits).await
    }
}
