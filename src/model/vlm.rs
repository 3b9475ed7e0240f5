//! The whole graph: vision tower → aligner → token embeddings with the image rows spliced in →
//! decoder → logits.

use super::config::ModelConfig;
use super::llama::{record_decoder, KvCache, LlmConsts, LogitRows};
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
            let s = self.cfg.vision.image_size;
            if px.shape() != [3, s, s] || px.dtype() != DType::F32 {
                return Err(Error::Shape { op: "vision", detail: format!("pixels {:?} {}, expected [3, {s}, {s}] f32", px.shape(), px.dtype()) });
            }
            let tokens = record_tower(rec, &self.cfg, &self.weights.vision, px, self.act, &seq)?;
            record_aligner(rec, &self.weights.aligner, &tokens, self.act, &Rows::all(&rows).rows(i * n, n))?;
        }
        Ok(Some(rows))
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
        let idt = Tensor::from_u32(gpu, &[m], ids)?;
        let x = Tensor::empty(gpu, &[m, cfg.llm.hidden], self.act)?;
        let pos_t;
        let splice = match &image_rows {
            Some(r) => {
                pos_t = Tensor::from_u32(gpu, &[positions.len()], &positions)?;
                Some((r, &pos_t))
            }
            None => None,
        };
        embed(&mut rec, &idt, &self.weights.llm.embed, splice, &x)?;
        let cache = KvCache::new(gpu, &cfg.llm, m, self.act)?;
        let seq = Tensor::from_u32(gpu, &[2], &[0, m as u32])?;
        let n = if rows == LogitRows::All { m } else { 1 };
        let logits = Tensor::empty(gpu, &[n, cfg.llm.vocab], self.act)?;
        record_decoder(&mut rec, &cfg.llm, &self.weights.llm, &self.consts, &cache, &x, &seq, rows, &logits)?;
        rec.finish()?.run(gpu).await?;
        gpu.read_f32(&logits).await
    }
}
