//! The CPU twins: quantise, dequantise, pack and unpack. `Packed::dequantize` is the reference
//! the GPU kernels are tested against; `Packed::quantize_rows` is what load-time and
//! ahead-of-time quantisation run.
//!
//! Scales are rounded to f16 first, away from the values (up in magnitude, offsets down), and the
//! codes are then computed against the rounded scale, so nothing clips and the stored scale is
//! the exact one the codes were chosen for.

use half::f16;

use super::{QFormat, QLayout};
use crate::error::{Error, Result};

/// A quantised [rows, cols] matrix on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct Packed {
    pub fmt: QFormat,
    pub rows: usize,
    pub cols: usize,
    /// `rows * layout.row_words` words, row-major.
    pub codes: Vec<u32>,
    /// `rows * layout.row_scales` values: d per group, or (d, m) per group with offsets.
    pub scales: Vec<f16>,
}

/// Packs codes (int8 as two's-complement bytes, int4 as 0..=15) into words, lowest bits first.
pub fn pack_codes(bits: u32, codes: &[u8]) -> Vec<u32> {
    let per = 32 / bits as usize;
    let mask = (1u32 << bits) - 1;
    codes.chunks(per).map(|c| c.iter().enumerate().fold(0u32, |w, (i, &q)| w | ((q as u32 & mask) << (i as u32 * bits)))).collect()
}

/// The inverse of `pack_codes` (every word gives 32 / bits codes).
pub fn unpack_codes(bits: u32, words: &[u32]) -> Vec<u8> {
    let per = 32 / bits;
    let mask = (1u32 << bits) - 1;
    words.iter().flat_map(|&w| (0..per).map(move |i| ((w >> (i * bits)) & mask) as u8)).collect()
}

/// f16 at least as large in magnitude as `x`.
fn f16_away(x: f32) -> f16 {
    let h = f16::from_f32(x);
    if h.to_f32().abs() < x.abs() { f16::from_bits(h.to_bits() + 1) } else { h }
}

/// f16 no larger than `x`.
fn f16_down(x: f32) -> f16 {
    let h = f16::from_f32(x);
    if h.to_f32() <= x {
        h
    } else if h.to_f32() > 0.0 {
        f16::from_bits(h.to_bits() - 1)
    } else {
        // Negative (or -0): one step further from zero.
        f16::from_bits(h.to_bits() + 1)
    }
}

/// Rounds half away from zero (a truncating conversion: `f32::round` is a libm call on
/// baseline x86-64, and this runs for every weight at load).
#[inline]
fn rnd(x: f32) -> f32 {
    ((x.abs() + 0.5) as i32 as f32).copysign(x)
}

/// Candidate step sizes tried around the range's own: (levels - 1 + STEP * i) / range. Eleven
/// match the error of llama.cpp's 21 at half the time; five cost 2% more error (docs/QUANT.md).
pub(crate) const FIT_STEPS: usize = 11;
const STEP: f32 = 0.2;

/// The numerators of the candidate step sizes: `7 + STEP * i` for scale-only int4 (levels -8..=7),
/// `14 + STEP * i` with offsets. One definition, so the GPU kernel (`ops::quantise`, which takes
/// them as parameters) divides exactly the numbers this twin does.
pub(crate) fn fit_numerators(zero: bool) -> [f32; FIT_STEPS] {
    let base = if zero { 14.0 } else { 7.0 };
    std::array::from_fn(|step| base + STEP * step as f32)
}

/// The smallest sum of squared codes divided by (keeps an all-zero fit finite).
pub(crate) const TINY: f32 = 1e-30;

/// -0 as +0: `min`/`max` may return either zero when both meet, and the sign would reach a
/// stored offset. Canonical on both sides (the GPU kernel does the same).
fn plus_zero(x: f32) -> f32 {
    if x == 0.0 { 0.0 } else { x }
}

/// Quantises one group (`vals`, non-empty) into `codes` (same length) and returns (d, m).
fn quantize_group(fmt: QFormat, vals: &[f32], codes: &mut [u8]) -> (f16, f16) {
    let inv = |d: f16| if d.to_f32() == 0.0 { 0.0 } else { 1.0 / d.to_f32() };
    match (fmt.bits, fmt.zero) {
        (8, _) => {
            let amax = vals.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = f16_away(amax / 127.0);
            let i = inv(d);
            for (c, &v) in codes.iter_mut().zip(vals) {
                *c = rnd(v * i).clamp(-127.0, 127.0) as i8 as u8;
            }
            (d, f16::ZERO)
        }
        (_, false) => {
            let d = fit_scale(vals);
            let i = inv(d);
            for (c, &v) in codes.iter_mut().zip(vals) {
                *c = (rnd(v * i) + 8.0).clamp(0.0, 15.0) as u8;
            }
            (d, f16::ZERO)
        }
        (_, true) => {
            let (d, m) = fit_offset(vals);
            let (i, mf) = (inv(d), m.to_f32());
            for (c, &v) in codes.iter_mut().zip(vals) {
                *c = rnd((v - mf) * i).clamp(0.0, 15.0) as u8;
            }
            (d, m)
        }
    }
}

/// Scale of a scale-only int4 group: the value of largest magnitude mapped to -8 (all 16
/// levels used), unless a least-squares scale for the codes of a nearby step size fits better.
fn fit_scale(vals: &[f32]) -> f16 {
    let max = vals.iter().fold(0f32, |a, &v| if v.abs() > a.abs() { v } else { a });
    let base = f16_away(max / -8.0);
    if max == 0.0 {
        return base;
    }
    let ib = 1.0 / base.to_f32();
    let sq = |a: f32| a * a;
    let base_err: f32 = vals.iter().map(|&v| sq(base.to_f32() * rnd(v * ib).clamp(-8.0, 7.0) - v)).sum();
    let sx2: f32 = vals.iter().map(|&v| v * v).sum();
    // With codes l fixed, d = sum(x l) / sum(l²) leaves sum(x²) - sum(x l)² / sum(l²).
    let (mut best, mut best_err) = (base, base_err);
    for num in fit_numerators(false) {
        let iscale = -num / max;
        let (mut sxl, mut sl2) = (0f32, 0f32);
        for &v in vals {
            let l = rnd(v * iscale).clamp(-8.0, 7.0);
            sxl += v * l;
            sl2 += l * l;
        }
        let e = sx2 - sxl * sxl / sl2.max(TINY);
        let d = f16::from_f32(sxl / sl2.max(TINY));
        if e < best_err && d.to_f32() != 0.0 && d.is_finite() {
            (best, best_err) = (d, e);
        }
    }
    best
}

/// Scale and offset of an int4 group: min/max, unless a least-squares (d, m) for the codes of a
/// nearby step size fits better (llama.cpp's `make_qkx2_quants` search, with errors from sums).
fn fit_offset(vals: &[f32]) -> (f16, f16) {
    let (lo, hi) = vals.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
    let (lo, hi) = (plus_zero(lo), plus_zero(hi));
    // Min/max, rounded so nothing clips.
    let m0 = f16_down(lo);
    let d0 = f16_away((hi - m0.to_f32()) / 15.0);
    if hi <= lo {
        return (d0, m0);
    }
    let (df, mf, i0) = (d0.to_f32(), m0.to_f32(), 1.0 / d0.to_f32());
    let sq = |a: f32| a * a;
    let mut best_err: f32 = vals.iter().map(|&v| sq(df * rnd((v - mf) * i0).clamp(0.0, 15.0) + mf - v)).sum();
    let mut best = (d0, m0);
    let n = vals.len() as f32;
    let (sx, sx2) = vals.iter().fold((0f32, 0f32), |(a, b), &v| (a + v, b + v * v));
    for num in fit_numerators(true) {
        let iscale = num / (hi - lo);
        let (mut sl, mut sl2, mut sxl) = (0f32, 0f32, 0f32);
        for &v in vals {
            let l = rnd((v - lo) * iscale).min(15.0);
            sl += l;
            sl2 += l * l;
            sxl += v * l;
        }
        let det = n * sl2 - sl * sl;
        if det <= 0.0 {
            continue;
        }
        let d = (n * sxl - sx * sl) / det;
        let m = (sl2 * sx - sl * sxl) / det;
        // Squared error of d * l + m against x, from the sums.
        let e = d * d * sl2 + n * m * m + sx2 + 2.0 * d * m * sl - 2.0 * d * sxl - 2.0 * m * sx;
        let (dh, mh) = (f16::from_f32(d), f16::from_f32(m));
        if e < best_err && d > 0.0 && dh.is_finite() && mh.is_finite() {
            (best, best_err) = ((dh, mh), e);
        }
    }
    best
}

/// Code of a zero weight in the padding.
fn pad_code(fmt: QFormat) -> u8 {
    if fmt.bits == 4 && !fmt.zero { 8 } else { 0 }
}

/// Quantises one row into its words and scales (buffers of the layout's sizes).
fn quantize_row(fmt: QFormat, l: &QLayout, row: &[f32], tmp: &mut [u8], words: &mut [u32], scales: &mut [f16]) {
    tmp.fill(pad_code(fmt));
    for g in 0..l.row_groups {
        let lo = g * l.group;
        let hi = (lo + l.group).min(row.len());
        if lo >= hi {
            continue;
        }
        let (d, m) = quantize_group(fmt, &row[lo..hi], &mut tmp[lo..hi]);
        if fmt.zero {
            scales[2 * g] = d;
            scales[2 * g + 1] = m;
        } else {
            scales[g] = d;
        }
    }
    let per = 32 / fmt.bits as usize;
    let mask = (1u32 << fmt.bits) - 1;
    for (w, c) in words.iter_mut().zip(tmp.chunks_exact(per)) {
        *w = c.iter().enumerate().fold(0, |w, (i, &q)| w | ((q as u32 & mask) << (i as u32 * fmt.bits)));
    }
}

impl Packed {
    pub fn layout(&self) -> QLayout {
        self.fmt.layout(self.cols)
    }

    /// Quantises a row-major [rows, cols] matrix.
    pub fn quantize(fmt: QFormat, rows: usize, cols: usize, data: &[f32]) -> Result<Packed> {
        if data.len() != rows * cols {
            return Err(Error::Invalid(format!("quantize: {} values for [{rows}, {cols}]", data.len())));
        }
        Packed::quantize_rows(fmt, rows, cols, &|r, out: &mut [f32]| out.copy_from_slice(&data[r * cols..(r + 1) * cols]))
    }

    /// Quantises a matrix whose row `r` `fill` writes into the given buffer (so a checkpoint's
    /// bf16 bytes are decoded row by row, never as a whole f32 copy). Natively the rows are
    /// spread over the CPU's threads.
    pub fn quantize_rows(fmt: QFormat, rows: usize, cols: usize, fill: &(dyn Fn(usize, &mut [f32]) + Sync)) -> Result<Packed> {
        let fmt = fmt.validate()?;
        if cols == 0 {
            return Err(Error::Invalid(format!("quantize: [{rows}, 0] has no columns")));
        }
        let l = fmt.layout(cols);
        let mut codes = vec![0u32; rows * l.row_words];
        let mut scales = vec![f16::ZERO; rows * l.row_scales];
        // Rows [r0, r0 + n) into the matching slices; fails on the first non-finite weight.
        let run = |r0: usize, words: &mut [u32], sc: &mut [f16]| -> Result<()> {
            let mut row = vec![0f32; cols];
            let mut tmp = vec![0u8; l.kp];
            for (i, (w, s)) in words.chunks_mut(l.row_words).zip(sc.chunks_mut(l.row_scales)).enumerate() {
                fill(r0 + i, &mut row);
                if let Some(c) = row.iter().position(|v| !v.is_finite()) {
                    return Err(Error::Invalid(format!("quantize: row {}, column {c} holds {}", r0 + i, row[c])));
                }
                quantize_row(fmt, &l, &row, &mut tmp, w, s);
            }
            Ok(())
        };
        let threads = threads_for(rows * cols);
        if threads <= 1 {
            run(0, &mut codes, &mut scales)?;
        } else {
            #[cfg(not(target_arch = "wasm32"))]
            {
                let per = rows.div_ceil(threads);
                let results: Vec<Result<()>> = std::thread::scope(|s| {
                    let handles: Vec<_> = codes
                        .chunks_mut(per * l.row_words)
                        .zip(scales.chunks_mut(per * l.row_scales))
                        .enumerate()
                        .map(|(i, (w, sc))| {
                            let run = &run;
                            s.spawn(move || run(i * per, w, sc))
                        })
                        .collect();
                    handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(Error::Invalid("quantize: a worker thread panicked".into())))).collect()
                });
                results.into_iter().collect::<Result<Vec<()>>>()?;
            }
        }
        Ok(Packed { fmt, rows, cols, codes, scales })
    }

    /// The dequantised matrix, row-major [rows, cols]: the reference for the GPU kernels.
    pub fn dequantize(&self) -> Vec<f32> {
        let l = self.layout();
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            let codes = unpack_codes(self.fmt.bits, &self.codes[r * l.row_words..(r + 1) * l.row_words]);
            let sc = &self.scales[r * l.row_scales..(r + 1) * l.row_scales];
            for (c, &q) in codes.iter().enumerate().take(self.cols) {
                let g = c / l.group;
                out.push(match (self.fmt.bits, self.fmt.zero) {
                    (8, _) => sc[g].to_f32() * (q as i8) as f32,
                    (_, false) => sc[g].to_f32() * (q as f32 - 8.0),
                    (_, true) => sc[2 * g].to_f32() * q as f32 + sc[2 * g + 1].to_f32(),
                });
            }
        }
        out
    }

    /// Rows stacked in order (q, k and v into one qkv matrix): the same format and width.
    pub fn concat(parts: &[Packed]) -> Result<Packed> {
        let Some(first) = parts.first() else { return Err(Error::Invalid("concat: no matrices".into())) };
        if let Some(p) = parts.iter().find(|p| p.fmt != first.fmt || p.cols != first.cols) {
            return Err(Error::Invalid(format!("concat: {} [{}, {}] after {} [{}, {}]", p.fmt, p.rows, p.cols, first.fmt, first.rows, first.cols)));
        }
        Ok(Packed {
            fmt: first.fmt,
            rows: parts.iter().map(|p| p.rows).sum(),
            cols: first.cols,
            codes: parts.iter().flat_map(|p| p.codes.iter().copied()).collect(),
            scales: parts.iter().flat_map(|p| p.scales.iter().copied()).collect(),
        })
    }

    /// Checks the buffers against the layout (for matrices read from files).
    pub fn check(&self) -> Result<()> {
        let l = self.layout();
        if self.codes.len() != self.rows * l.row_words || self.scales.len() != self.rows * l.row_scales {
            return Err(Error::Invalid(format!(
                "{} [{}, {}] needs {} code words and {} scales, got {} and {}",
                self.fmt, self.rows, self.cols, self.rows * l.row_words, self.rows * l.row_scales, self.codes.len(), self.scales.len()
            )));
        }
        if let Some(s) = self.scales.iter().find(|s| !s.is_finite()) {
            return Err(Error::Invalid(format!("{} scale {s} is not finite", self.fmt)));
        }
        Ok(())
    }

    /// Bytes of codes and scales.
    pub fn bytes(&self) -> usize {
        self.codes.len() * 4 + self.scales.len() * 2
    }
}

/// Worker threads for `n` values: one per core natively once the job is big enough to pay for them.
pub(crate) fn threads_for(n: usize) -> usize {
    #[cfg(not(target_arch = "wasm32"))]
    if n >= 1 << 16 {
        return std::thread::available_parallelism().map_or(1, |t| t.get()).min(16);
    }
    let _ = n;
    1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Rng;

    fn formats() -> Vec<QFormat> {
        vec![QFormat::q8(0), QFormat::q8(32), QFormat::q8(128), QFormat::q4(32, false), QFormat::q4(64, false), QFormat::q4(32, true), QFormat::q4(128, true)]
    }

    #[test]
    fn packing_round_trips_exactly() {
        let mut rng = Rng::new(1);
        for bits in [4u32, 8] {
            let words: Vec<u32> = (0..257).map(|_| rng.next_u64() as u32).collect();
            let codes = unpack_codes(bits, &words);
            assert_eq!(codes.len(), 257 * 32 / bits as usize);
            assert_eq!(pack_codes(bits, &codes), words, "{bits}-bit words -> codes -> words");
            assert_eq!(unpack_codes(bits, &pack_codes(bits, &codes)), codes);
        }
        // Lowest bits first: code i of a word sits at bit i * bits.
        assert_eq!(pack_codes(4, &[1, 2, 3, 4, 5, 6, 7, 15]), vec![0xF765_4321]);
        assert_eq!(pack_codes(8, &[0x01, 0xFF, 0x80, 0x7F]), vec![0x7F80_FF01]);
    }

    #[test]
    fn quantised_matrices_round_trip_exactly_through_their_codes() {
        // Dequantise, then requantise with the same scales: the same codes come back.
        let mut rng = Rng::new(2);
        for fmt in formats() {
            let (rows, cols) = (5, 100);
            let w = rng.normals(rows * cols, 0.05);
            let p = Packed::quantize(fmt, rows, cols, &w).unwrap();
            p.check().unwrap();
            let deq = p.dequantize();
            let l = p.layout();
            for r in 0..rows {
                let codes = unpack_codes(fmt.bits, &p.codes[r * l.row_words..(r + 1) * l.row_words]);
                for c in 0..cols {
                    let g = c / l.group;
                    let (d, m) = if fmt.zero { (p.scales[r * l.row_scales + 2 * g].to_f32(), p.scales[r * l.row_scales + 2 * g + 1].to_f32()) } else { (p.scales[r * l.row_scales + g].to_f32(), 0.0) };
                    let v = deq[r * cols + c];
                    let back = match (fmt.bits, fmt.zero) {
                        (8, _) => ((v / d).round() as i8) as u8,
                        (_, false) => ((v / d).round() + 8.0) as u8,
                        (_, true) => ((v - m) / d).round() as u8,
                    };
                    assert_eq!(back, codes[c], "{fmt} [{r}, {c}]");
                }
                // Padding holds the code of zero.
                assert!(codes[cols..].iter().all(|&q| q == pad_code(fmt)), "{fmt} padding");
            }
        }
    }

    /// Squared error of the plain quantiser (absmax, or min/max with offsets): what the int4 fits
    /// must not exceed.
    fn plain_sq_err(fmt: QFormat, vals: &[f32]) -> f64 {
        let (lo, hi) = vals.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
        let amax = lo.abs().max(hi.abs()) as f64;
        vals.iter()
            .map(|&v| {
                let v = v as f64;
                let q = match (fmt.bits, fmt.zero) {
                    (8, _) => amax / 127.0 * (v * 127.0 / amax.max(1e-30)).round(),
                    (_, false) => amax / 7.0 * (v * 7.0 / amax.max(1e-30)).round(),
                    (_, true) => lo as f64 + (hi - lo) as f64 / 15.0 * ((v - lo as f64) * 15.0 / ((hi - lo) as f64).max(1e-30)).round(),
                };
                (q - v).powi(2)
            })
            .sum()
    }

    #[test]
    fn quantisation_error_is_bounded() {
        let mut rng = Rng::new(3);
        for fmt in formats() {
            let (rows, cols) = (7, 333);
            let mut w = rng.normals(rows * cols, 0.02);
            w[5] = 0.5; // an outlier
            w[cols..2 * cols].fill(0.0); // an all-zero row
            let p = Packed::quantize(fmt, rows, cols, &w).unwrap();
            let deq = p.dequantize();
            let l = p.layout();
            let (mut err, mut plain) = (0f64, 0f64);
            for r in 0..rows {
                for g in 0..l.row_groups {
                    let range = r * cols + g * l.group..r * cols + ((g + 1) * l.group).min(cols);
                    let d = p.scales[r * l.row_scales + g * (1 + fmt.zero as usize)].to_f32().abs();
                    for i in range.clone() {
                        let e = (deq[i] - w[i]).abs();
                        // int8: half a step (nothing clips); int4 fits may clip an extreme a little.
                        let steps = if fmt.bits == 8 { 0.5 } else { 1.5 };
                        assert!(e <= d * steps * (1.0 + 1e-5) + 1e-7, "{fmt} [{r}, {}]: {} vs {} (step {d})", i % cols, deq[i], w[i]);
                        err += (e as f64).powi(2);
                    }
                    plain += plain_sq_err(fmt, &w[range]);
                }
            }
            // f16 scales cost a little against the f64 plain quantiser.
            assert!(err <= plain * 1.01, "{fmt}: squared error {err:.3e} above the plain quantiser's {plain:.3e}");
            assert!(deq[cols..2 * cols].iter().all(|&v| v == 0.0), "{fmt}: zero row");
        }
    }

    #[test]
    fn threaded_and_serial_quantisation_agree_and_bad_values_fail() {
        let mut rng = Rng::new(4);
        let (rows, cols) = (300, 256); // above the threading threshold
        let w = rng.normals(rows * cols, 1.0);
        for fmt in formats() {
            let all = Packed::quantize(fmt, rows, cols, &w).unwrap();
            let parts: Vec<Packed> = (0..3).map(|i| Packed::quantize(fmt, 100, cols, &w[i * 100 * cols..(i + 1) * 100 * cols]).unwrap()).collect();
            assert_eq!(Packed::concat(&parts).unwrap(), all, "{fmt}");
        }
        let mut bad = w.clone();
        bad[299 * cols + 3] = f32::NAN;
        let e = Packed::quantize(QFormat::q4(32, true), rows, cols, &bad).unwrap_err().to_string();
        assert!(e.contains("row 299, column 3"), "{e}");
        assert!(Packed::quantize(QFormat { bits: 3, group: 32, zero: false }, 1, 32, &[0.0; 32]).is_err());
        assert!(Packed::concat(&[Packed::quantize(QFormat::q8(0), 1, 32, &[0.0; 32]).unwrap(), Packed::quantize(QFormat::q8(32), 1, 32, &[0.0; 32]).unwrap()]).is_err());
    }

    #[test]
    fn f16_rounding_directions() {
        for x in [1e-3f32, 3.3e-5, 7e-8, 0.1, 1234.567, -0.1, -3.3e-5, -1e-9, 0.0] {
            assert!(f16_away(x).to_f32().abs() >= x.abs(), "{x}");
            assert!(f16_down(x).to_f32() <= x, "{x}");
        }
    }
}
