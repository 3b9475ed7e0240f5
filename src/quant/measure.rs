//! The measurements behind the format choices (docs/QUANT.md): every candidate format on
//! synthetic weight matrices shaped like the real ones, error of the weights and of a product.

use super::{Packed, QFormat};
use crate::check::Rng;
use crate::error::Result;

/// The candidates: int8 per row or per group, int4 per group with and without offsets.
pub fn candidates() -> Vec<QFormat> {
    let mut v = vec![QFormat::q8(0), QFormat::q8(32), QFormat::q8(64), QFormat::q8(128)];
    for g in [32, 64, 128] {
        v.push(QFormat::q4(g, false));
        v.push(QFormat::q4(g, true));
    }
    v
}

/// Makes a [rows, cols] matrix.
pub type Generator = fn(&mut Rng, usize, usize) -> Vec<f32>;

/// Weight distributions: name and generator.
pub fn distributions() -> Vec<(&'static str, Generator)> {
    vec![("gaussian", gaussian), ("student-t 3", student_t3), ("outlier columns", outlier_columns)]
}

fn gaussian(rng: &mut Rng, rows: usize, cols: usize) -> Vec<f32> {
    rng.normals(rows * cols, 0.02)
}

/// Heavy tails: Student's t with 3 degrees of freedom, scaled to a 0.02 median magnitude.
fn student_t3(rng: &mut Rng, rows: usize, cols: usize) -> Vec<f32> {
    (0..rows * cols)
        .map(|_| {
            let chi2: f32 = (0..3).map(|_| rng.normal().powi(2)).sum();
            0.02 * rng.normal() / (chi2 / 3.0).sqrt()
        })
        .collect()
}

/// As trained LLM layers look: input columns with log-normal scales (sigma 0.6) and 0.5% of
/// columns 8x larger.
fn outlier_columns(rng: &mut Rng, rows: usize, cols: usize) -> Vec<f32> {
    let scale: Vec<f32> = (0..cols).map(|_| (0.6 * rng.normal()).exp() * if rng.unit() < 0.005 { 8.0 } else { 1.0 }).collect();
    (0..rows * cols).map(|i| 0.02 * scale[i % cols] * rng.normal()).collect()
}

/// One measurement.
#[derive(Clone, Debug)]
pub struct Row {
    pub dist: &'static str,
    pub fmt: QFormat,
    /// |W - deq(W)|² / |W|².
    pub weight_nmse: f64,
    /// |y - ŷ|² / |y|² for y = W x, x ~ N(0, 1).
    pub output_nmse: f64,
    /// Bytes per weight: codes, scales and padding.
    pub bytes_per_param: f64,
}

/// Measures every candidate on every distribution at [rows, cols].
pub fn error_table(rows: usize, cols: usize) -> Result<Vec<Row>> {
    let mut out = Vec::new();
    for (i, (dist, make)) in distributions().into_iter().enumerate() {
        let mut rng = Rng::new(100 + i as u64);
        let w = make(&mut rng, rows, cols);
        let xs: Vec<Vec<f32>> = (0..4).map(|_| rng.normals(cols, 1.0)).collect();
        for fmt in candidates() {
            let p = Packed::quantize(fmt, rows, cols, &w)?;
            let d = p.dequantize();
            let nmse = |a: &[f32], b: &[f32]| {
                let num: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum();
                num / a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>()
            };
            let (mut y, mut yq) = (Vec::new(), Vec::new());
            for x in &xs {
                for r in 0..rows {
                    let dot = |m: &[f32]| m[r * cols..(r + 1) * cols].iter().zip(x).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() as f32;
                    y.push(dot(&w));
                    yq.push(dot(&d));
                }
            }
            out.push(Row { dist, fmt, weight_nmse: nmse(&w, &d), output_nmse: nmse(&y, &yq), bytes_per_param: p.bytes() as f64 / (rows * cols) as f64 });
        }
    }
    Ok(out)
}

/// The table as markdown: one row per format, NMSE per distribution.
pub fn markdown(rows: &[Row]) -> String {
    let dists: Vec<&str> = distributions().iter().map(|d| d.0).collect();
    let mut s = String::from("| format | bytes/param |");
    for d in &dists {
        s.push_str(&format!(" {d}: weight NMSE | {d}: output NMSE |"));
    }
    s.push_str("\n|---|---|");
    s.push_str(&"---|---|".repeat(dists.len()));
    s.push('\n');
    for fmt in candidates() {
        let mine: Vec<&Row> = rows.iter().filter(|r| r.fmt == fmt).collect();
        let Some(first) = mine.first() else { continue };
        s.push_str(&format!("| {} | {:.4} |", fmt, first.bytes_per_param));
        for d in &dists {
            if let Some(r) = mine.iter().find(|r| r.dist == *d) {
                s.push_str(&format!(" {:.2e} | {:.2e} |", r.weight_nmse, r.output_nmse));
            }
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finer_groups_and_more_bits_are_more_accurate() {
        let t = error_table(16, 512).unwrap();
        let get = |d: &str, f: QFormat| t.iter().find(|r| r.dist == d && r.fmt == f).unwrap().weight_nmse;
        for (d, _) in distributions() {
            assert!(get(d, QFormat::q8(32)) < get(d, QFormat::q8(0)), "{d}");
            assert!(get(d, QFormat::q4(32, true)) < get(d, QFormat::q4(128, true)), "{d}");
            assert!(get(d, QFormat::q8(128)) * 20.0 < get(d, QFormat::q4(32, true)), "{d}");
            assert!(get(d, QFormat::q4(32, true)) < get(d, QFormat::q4(32, false)), "{d}");
        }
    }
}
