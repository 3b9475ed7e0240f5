//! End-to-end accuracy of recipes: next-token logits of the whole model (vision, aligner,
//! decoder) in each recipe against the f32 path on the same prompts. What `dsvl-gpu
//! quant-report` prints and the tests assert.

use super::{Format, Recipe};
use crate::error::Result;
use crate::gpu::{DType, Gpu, Tensor};
use crate::model::llama::LogitRows;
use crate::model::safetensors::TensorSource;
use crate::model::vlm::Model;
use crate::model::weights::load_weights_with;
use crate::model::ModelConfig;

/// A prompt: token ids with every image token expanded, and one f32 [3, S, S] image per image.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub ids: Vec<u32>,
    pub pixels: Vec<Vec<f32>>,
}

/// One recipe on one case.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub recipe: String,
    pub act: DType,
    pub case: String,
    /// Cosine similarity of the next-token logits with the f32 path's.
    pub cosine: f64,
    /// |got - f32| / |f32| of the logits.
    pub rel_l2: f64,
    /// Same arg-max token as the f32 path.
    pub top1: bool,
    /// GPU bytes of the weights and the parameters they hold.
    pub bytes: u64,
    pub params: u64,
}

async fn logits(gpu: &Gpu, model: &Model, image_token: u32, c: &Case) -> Result<Vec<f32>> {
    let s = model.cfg.image_size();
    let images = c.pixels.iter().map(|p| Tensor::from_f32(gpu, &[3, s, s], DType::F32, p)).collect::<Result<Vec<_>>>()?;
    model.prefill_logits(gpu, &c.ids, image_token, &images, LogitRows::Last).await
}

async fn load(gpu: &Gpu, cfg: &ModelConfig, src: &TensorSource, recipe: &Recipe, act: DType) -> Result<Model> {
    let w = load_weights_with(gpu, cfg, src, recipe, act, &mut |_, _| {}).await?;
    Model::new(gpu, cfg.clone(), w, act)
}

fn compare_logits(got: &[f32], want: &[f32]) -> (f64, f64, bool) {
    let (mut dot, mut gg, mut ww, mut dd) = (0f64, 0f64, 0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        let (g, w) = (g as f64, w as f64);
        dot += g * w;
        gg += g * g;
        ww += w * w;
        dd += (g - w) * (g - w);
    }
    let argmax = |v: &[f32]| v.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0;
    let cos = if gg > 0.0 && ww > 0.0 { dot / (gg.sqrt() * ww.sqrt()) } else { 0.0 };
    let finite = got.iter().all(|v| v.is_finite());
    (if finite { cos } else { f64::NAN }, (dd / ww.max(1e-300)).sqrt(), argmax(got) == argmax(want))
}

/// Every (recipe, activation dtype) on every case against the f32 recipe with f32 activations.
/// Models are loaded one at a time.
pub async fn compare(gpu: &Gpu, cfg: &ModelConfig, src: &TensorSource, image_token: u32, cases: &[Case], recipes: &[(Recipe, DType)]) -> Result<Vec<Outcome>> {
    let reference = load(gpu, cfg, src, &Recipe::uniform(Format::F32), DType::F32).await?;
    let mut want = Vec::with_capacity(cases.len());
    for c in cases {
        want.push(logits(gpu, &reference, image_token, c).await?);
    }
    drop(reference);
    let mut out = Vec::new();
    for (recipe, act) in recipes {
        let model = load(gpu, cfg, src, recipe, *act).await?;
        let stats = model.weights.stats();
        for (c, w) in cases.iter().zip(&want) {
            let got = logits(gpu, &model, image_token, c).await?;
            let (cosine, rel_l2, top1) = compare_logits(&got, w);
            out.push(Outcome { recipe: model.weights.recipe().name(), act: *act, case: c.name.clone(), cosine, rel_l2, top1, bytes: stats.bytes, params: stats.params });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn logits_comparison() {
        let (c, r, t) = super::compare_logits(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]);
        assert!((c - 1.0).abs() < 1e-12 && r == 0.0 && t);
        let (c, _, t) = super::compare_logits(&[3.0, 2.0, 1.0], &[1.0, 2.0, 3.0]);
        assert!((c - 10.0 / 14.0).abs() < 1e-12 && !t);
        assert!(super::compare_logits(&[f32::NAN, 1.0], &[1.0, 1.0]).0.is_nan());
    }
}
