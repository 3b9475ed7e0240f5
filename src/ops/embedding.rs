//! Token embeddings: gather rows of a (possibly split) table by id, then splice image rows in.
//!
//! Contract:
//! - `ids`: U32 [T]; `table`: `RowSplit` [vocab, hidden] in f32 or f16 (f16 is read as packed
//!   u32 halves, so it works without SHADER_F16); `out`: [T, hidden] in the activation dtype
//!   (f32, or f16 when the adapter has SHADER_F16).
//! - One dispatch per table part; each writes the rows whose id falls in its part.
//! - Ids >= vocab read nothing and produce a row of zeros (the CPU side should reject them
//!   first with [`check_ids`]; the zeros only keep a bad id from reading out of bounds).
//! - `splice` writes `image_rows[i]` over `out[positions[i]]` for every i, in order (DeepSeek-VL
//!   puts the 576 aligner rows where the prompt has image tokens). Positions must be distinct;
//!   positions >= T are skipped. `positions` is a U32 storage tensor so a recorded list can be
//!   replayed with new positions.

use super::{act_flags, shape_err, u32_of, WG};
use crate::check::{self, compare, poisoned, CheckResult, Rng, Tol};
use crate::error::{Error, Result};
use crate::gpu::{grid, Bind, DType, Gpu, Kernel, PipelineKey, Recorder, RowSplit, Tensor};
use crate::params_struct;
use crate::quant::WeightRef;

params_struct!(EmbedParams("EmbedParams") {
    n_tok: u32, hidden: u32, row0: u32, part_rows: u32, vocab: u32, n_img: u32, _pad0: u32, _pad1: u32,
});

const GATHER: Kernel = Kernel { shader: "embedding", entry: "gather", binds: &[Bind::Uniform, Bind::Read, Bind::Read, Bind::ReadWrite] };
const SPLICE: Kernel = Kernel { shader: "embedding", entry: "splice", binds: &[Bind::Uniform, Bind::Read, Bind::Read, Bind::ReadWrite] };

fn gather_key(act: DType, table: DType) -> Result<PipelineKey> {
    let mut flags = act_flags("embedding", act)?.to_vec();
    match table {
        DType::F32 => {}
        DType::F16 => flags.push("TABLE_F16"),
        DType::U32 => return Err(Error::DType { op: "embedding", dtype: "u32".into(), detail: "the table is f32 or f16".into() }),
    }
    Ok(PipelineKey::new(GATHER, &flags, &[]))
}

fn splice_key(act: DType) -> Result<PipelineKey> {
    let mut flags = act_flags("splice", act)?.to_vec();
    flags.push("SPLICE");
    Ok(PipelineKey::new(SPLICE, &flags, &[]))
}

/// Every pipeline this file can ask for (validated by naga in the tests).
pub fn variants() -> Vec<PipelineKey> {
    let mut v = Vec::new();
    for act in [DType::F32, DType::F16] {
        for table in [DType::F32, DType::F16] {
            v.extend(gather_key(act, table));
        }
        v.extend(splice_key(act));
    }
    v
}

/// Fails on the first id outside the vocabulary (host-side validation before upload).
pub fn check_ids(ids: &[u32], vocab: usize) -> Result<()> {
    match ids.iter().position(|&i| i as usize >= vocab) {
        Some(at) => Err(Error::Invalid(format!("token id {} at position {at} is outside the vocabulary of {vocab}", ids[at]))),
        None => Ok(()),
    }
}

/// Positions of `image_token` in `ids`, in order: where the image rows go.
pub fn image_positions(ids: &[u32], image_token: u32) -> Vec<u32> {
    ids.iter().enumerate().filter(|&(_, &t)| t == image_token).map(|(i, _)| i as u32).collect()
}

/// out[t] = table[ids[t]] (zeros for ids >= vocab). The table is dense (`RowSplit`), quantised
/// (`QMatrix`, rows dequantised by `ops::qmatmul`) or a `Weight` holding either.
pub fn gather<'w>(rec: &mut Recorder, ids: &Tensor, table: impl Into<WeightRef<'w>>, out: &Tensor) -> Result<()> {
    let op = "embedding";
    let table = table.into();
    let (cols, empty) = match table {
        WeightRef::Dense(d) => (d.cols, d.parts.is_empty()),
        WeightRef::Quant(q) => (q.cols, q.parts.is_empty()),
    };
    let n_tok = ids.len();
    if ids.dtype() != DType::U32 || ids.shape().len() != 1 {
        return Err(shape_err(op, format!("ids must be U32 [T], got {:?} {}", ids.shape(), ids.dtype())));
    }
    if out.shape() != [n_tok, cols] {
        return Err(shape_err(op, format!("out {:?} for {n_tok} ids of width {cols}", out.shape())));
    }
    if n_tok == 0 || cols == 0 || empty {
        return Err(shape_err(op, "empty ids or table".into()));
    }
    match table {
        WeightRef::Dense(d) => gather_dense(rec, ids, d, out),
        WeightRef::Quant(q) => super::qmatmul::qgather(rec, ids, q, out),
    }
}

fn gather_dense(rec: &mut Recorder, ids: &Tensor, table: &RowSplit, out: &Tensor) -> Result<()> {
    let op = "embedding";
    let n_tok = ids.len();
    let n = u32_of(op, n_tok * table.cols)?;
    let key = gather_key(out.dtype(), table.dtype)?;
    let groups = grid(n.div_ceil(WG), rec.gpu.caps.max_workgroups_per_dim);
    for (row0, part) in &table.parts {
        if part.dtype() != table.dtype || part.shape().get(1) != Some(&table.cols) {
            return Err(shape_err(op, format!("table part {:?} {} in a [{}, {}] {} split", part.shape(), part.dtype(), table.rows, table.cols, table.dtype)));
        }
        u32_of(op, part.len())?;
        let params = EmbedParams {
            n_tok: n_tok as u32,
            hidden: table.cols as u32,
            row0: u32_of(op, *row0)?,
            part_rows: part.shape()[0] as u32,
            vocab: u32_of(op, table.rows)?,
            ..Default::default()
        };
        rec.dispatch(&key, &params, &[ids, part, out], groups)?;
    }
    Ok(())
}

/// out[positions[i]] = image_rows[i] for every image row.
pub fn splice(rec: &mut Recorder, image_rows: &Tensor, positions: &Tensor, out: &Tensor) -> Result<()> {
    let op = "splice";
    let (&[n_img, hidden], &[n_tok, out_hidden]) = (image_rows.shape(), out.shape()) else {
        return Err(shape_err(op, format!("image rows {:?} and out {:?} must be matrices", image_rows.shape(), out.shape())));
    };
    if hidden != out_hidden || positions.dtype() != DType::U32 || positions.shape() != [n_img] {
        return Err(shape_err(op, format!("image rows {:?}, positions {:?} {}, out {:?}", image_rows.shape(), positions.shape(), positions.dtype(), out.shape())));
    }
    super::same_dtype(op, out.dtype(), &[image_rows])?;
    if n_img == 0 || hidden == 0 {
        return Err(shape_err(op, "no image rows".into()));
    }
    let n = u32_of(op, n_img * hidden)?;
    let params = EmbedParams { n_tok: u32_of(op, n_tok)?, hidden: hidden as u32, n_img: n_img as u32, ..Default::default() };
    rec.dispatch(&splice_key(out.dtype())?, &params, &[image_rows, positions, out], grid(n.div_ceil(WG), rec.gpu.caps.max_workgroups_per_dim))
}

/// Gather, then splice when image rows are given: the model's `inputs_embeds`.
pub fn embed<'w>(rec: &mut Recorder, ids: &Tensor, table: impl Into<WeightRef<'w>>, image: Option<(&Tensor, &Tensor)>, out: &Tensor) -> Result<()> {
    gather(rec, ids, table, out)?;
    if let Some((rows, positions)) = image {
        splice(rec, rows, positions, out)?;
    }
    Ok(())
}

// ---- checks ----

async fn check_embedding(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(11);
    let vocab = 1000;
    let per_part = 64; // 16 parts, the last one short (40 rows)
    let mut report = Vec::new();
    for table_dtype in [DType::F32, DType::F16] {
        for hidden in [33, 64] {
            let data = check::round_to(table_dtype, &rng.normals(vocab * hidden, 1.0));
            let table = RowSplit::from_bytes_parts(gpu, vocab, hidden, table_dtype, &table_dtype.encode_f32(&data), per_part)?;
            if table.parts.len() != vocab.div_ceil(per_part) {
                return Err(format!("expected {} parts, got {}", vocab.div_ceil(per_part), table.parts.len()).into());
            }
            for act in check::act_dtypes(gpu) {
                let mut worst = 0.0f64;
                for n_tok in [1usize, 7, 33] {
                    // Part boundaries, the last row, then random ids; one out-of-range id (zeros).
                    let mut ids: Vec<u32> = [63u32, 64, 999, 0, 128, 960, 5].iter().copied().take(n_tok).collect();
                    while ids.len() < n_tok {
                        ids.push(rng.below(vocab as u32));
                    }
                    if n_tok >= 7 {
                        ids[n_tok - 2] = vocab as u32 + 17;
                    }
                    let n_img = n_tok.min(5);
                    let positions: Vec<u32> = match n_tok {
                        1 => vec![0],
                        7 => vec![6, 1, 3, 4, 0],
                        _ => vec![2, 9, 10, 31, 20],
                    };
                    let img = check::round_to(act, &rng.normals(n_img * hidden, 2.0));
                    let ids_t = Tensor::from_u32(gpu, &[n_tok], &ids)?;
                    let pos_t = Tensor::from_u32(gpu, &[n_img], &positions[..n_img])?;
                    let img_t = Tensor::from_f32(gpu, &[n_img, hidden], act, &img)?;
                    let out = poisoned(gpu, &[n_tok, hidden], act)?;
                    let gathered = poisoned(gpu, &[n_tok, hidden], act)?;
                    let mut rec = Recorder::new(gpu);
                    gather(&mut rec, &ids_t, &table, &gathered)?;
                    embed(&mut rec, &ids_t, &table, Some((&img_t, &pos_t)), &out)?;
                    rec.finish()?.run(gpu).await?;
                    // f64 reference, straight from the host table.
                    let data = &data;
                    let mut want: Vec<f64> = ids
                        .iter()
                        .flat_map(|&id| (0..hidden).map(move |c| if (id as usize) < vocab { data[id as usize * hidden + c] as f64 } else { 0.0 }))
                        .collect();
                    // f32 out: exact copies; f16 out: one rounding of an f32 table value (half an ulp,
                    // 2^-11 relative; 2^-25 absolute in the subnormal range).
                    let tol = if act == DType::F16 { Tol { abs: 3e-8, rel: 4.9e-4 } } else { Tol { abs: 0.0, rel: 0.0 } };
                    let what = format!("gather {table_dtype} table -> {act}, T={n_tok}, hidden={hidden}");
                    worst = worst.max(compare(&what, &gpu.read_f32(&gathered).await?, &want, tol)?);
                    for (i, &pos) in positions[..n_img].iter().enumerate() {
                        for c in 0..hidden {
                            want[pos as usize * hidden + c] = img[i * hidden + c] as f64;
                        }
                    }
                    worst = worst.max(compare(&format!("splice into {what}"), &gpu.read_f32(&out).await?, &want, tol)?);
                }
                report.push(format!("{table_dtype}->{act}/h{hidden}:{worst:.1e}"));
            }
        }
    }
    check_ids(&[0, 999], vocab).map_err(|e| format!("valid ids rejected: {e}"))?;
    if check_ids(&[0, 1000], vocab).is_err() && image_positions(&[5, 9, 9, 1, 9], 9) == [1, 2, 4] {
        Ok(format!("16 parts of 64 rows; max abs err {}", report.join(" ")))
    } else {
        Err("check_ids / image_positions host helpers".to_string().into())
    }
}

crate::checks!(check_embedding);
