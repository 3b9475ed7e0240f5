//! What the weights take on the GPU: bytes and parameters of loaded weights, or of a checkpoint
//! from its config alone (before anything is downloaded), and the formats each part holds.

use super::config::ModelConfig;
use super::weights::{plan_with, Weights};
use crate::gpu::{DType, Tensor};
use crate::quant::{Format, Part, Recipe, Weight};

/// What the weights occupy on the GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WeightStats {
    /// Bytes of every weight buffer (codes, scales, dense matrices, vectors), a tied head once.
    pub bytes: u64,
    /// Checkpoint parameters they hold.
    pub params: u64,
}

impl Weights {
    /// Every weight matrix with the part of the model it belongs to.
    pub fn matrices(&self) -> Vec<(Part, &Weight)> {
        let mut v: Vec<(Part, &Weight)> = vec![(Part::Vision, &self.vision.patch.w)];
        for b in &self.vision.blocks {
            v.extend([&b.qkv, &b.proj, &b.fc1, &b.fc2].map(|l| (Part::Vision, &l.w)));
        }
        if let Some(s) = &self.sam {
            v.push((Part::Vision, &s.patch.w));
            for b in &s.blocks {
                v.extend([&b.qkv, &b.proj, &b.lin1, &b.lin2].map(|l| (Part::Vision, &l.w)));
            }
            let necks = std::iter::once(&s.neck).chain(&s.neck_hd).flat_map(|n| [&n.conv1, &n.conv2]);
            v.extend(necks.chain(&s.downsample).map(|l| (Part::Vision, &l.w)));
        }
        v.extend(self.aligner.hybrid.iter().flat_map(|(h, l)| [h, l]).chain(&self.aligner.layers).map(|l| (Part::Aligner, &l.w)));
        v.push((Part::Embed, &self.llm.embed));
        for l in &self.llm.layers {
            v.extend([&l.qkv, &l.o, &l.gate_up, &l.down].map(|l| (Part::Llm, &l.w)));
        }
        v.push((Part::LmHead, &self.llm.lm_head));
        v
    }

    /// GPU bytes and parameter count of every weight.
    pub fn stats(&self) -> WeightStats {
        let (vis, llm) = (&self.vision, &self.llm);
        let mut vectors: Vec<&Tensor> = vec![&vis.pos_embed, &vis.norm_w, &vis.norm_b, &llm.norm];
        for b in &vis.blocks {
            vectors.extend([&b.norm1_w, &b.norm1_b, &b.norm2_w, &b.norm2_b]);
        }
        for l in &llm.layers {
            vectors.extend([&l.input_norm, &l.post_norm]);
        }
        if let Some(s) = &self.sam {
            vectors.push(&s.pos_embed);
            for b in &s.blocks {
                vectors.extend([&b.norm1_w, &b.norm1_b, &b.norm2_w, &b.norm2_b, &b.rel_h, &b.rel_w]);
            }
            for n in std::iter::once(&s.neck).chain(&s.neck_hd) {
                vectors.extend([&n.ln1_w, &n.ln1_b, &n.ln2_w, &n.ln2_b]);
            }
        }
        let sam_linears = self.sam.iter().flat_map(|s| s.blocks.iter().flat_map(|b| [&b.qkv, &b.proj, &b.lin1, &b.lin2]).chain([&s.patch]));
        let aligner = self.aligner.hybrid.iter().flat_map(|(h, l)| [h, l]).chain(&self.aligner.layers);
        let linears = vis.blocks.iter().flat_map(|b| [&b.qkv, &b.proj, &b.fc1, &b.fc2]).chain([&vis.patch]).chain(aligner).chain(sam_linears);
        vectors.extend(linears.filter_map(|l| l.b.as_ref()));
        let mut s = WeightStats::default();
        for t in vectors {
            s.bytes += t.byte_len();
            s.params += t.len() as u64;
        }
        let tied = llm.lm_head.shares_storage(&llm.embed);
        for (part, w) in self.matrices() {
            if part == Part::LmHead && tied {
                continue;
            }
            s.bytes += w.bytes();
            s.params += (w.rows() * w.cols()) as u64;
        }
        s
    }

    /// The format each part holds, as a recipe (the first matrix of the part decides).
    pub fn recipe(&self) -> Recipe {
        let mut r = Recipe::uniform(Format::F32);
        for p in Part::ALL {
            if let Some((_, w)) = self.matrices().into_iter().find(|(q, _)| *q == p) {
                r.set(p, w.format());
            }
        }
        r
    }
}

/// GPU bytes and parameters of the weights of `cfg` loaded with `recipe` (`act` for the position
/// table), computed from the shapes alone: what a checkpoint would take before it is downloaded.
pub fn estimate(cfg: &ModelConfig, recipe: &Recipe, act: DType) -> WeightStats {
    let mut s = WeightStats::default();
    for item in plan_with(cfg, !cfg.llm.tie_embeddings) {
        let count = item.shape.iter().product::<usize>();
        s.params += count as u64;
        s.bytes += match item.matrix {
            Some((part, rows, cols)) => match recipe.get(part) {
                Format::Q(q) => q.layout(cols).bytes(rows),
                f => count * f.dense().map_or(4, DType::size),
            },
            None if item.act => count * act.size(),
            None => count * 4,
        } as u64;
    }
    if cfg.llm.tie_embeddings && recipe.lm_head != recipe.embed {
        let (v, h) = (cfg.llm.vocab, cfg.llm.hidden);
        s.bytes += match recipe.lm_head {
            Format::Q(q) => q.layout(h).bytes(v),
            f => v * h * f.dense().map_or(4, DType::size),
        } as u64;
    }
    s
}
