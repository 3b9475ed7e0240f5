//! The GPU bicubic resize (PIL 8-bit mode) against Pillow itself: images and Pillow's
//! `Image.resize(..., BICUBIC)` results made by `tests/fixtures/gen_pil_resize.py`, for both
//! pass orders (Pillow >= 13 may run the vertical pass first; older Pillow never does).
//! Asserts >= 99.9% of values within one 8-bit level and none more than two levels off
//! (in practice the fixed-point path matches Pillow exactly).

#[allow(dead_code)] // run_check is for tests/kernels.rs
mod common;

use std::path::PathBuf;

use dsvl_gpu::gpu::Recorder;
use dsvl_gpu::ops::interp::{resize_bicubic, Bicubic, ResizeMode, ResizeOrder, RgbImage};
use dsvl_gpu::{DType, Tensor};

fn fixture(name: &str) -> Vec<u8> {
    let p: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "fixtures", "pil_resize", name].iter().collect();
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e} (run tests/fixtures/gen_pil_resize.py)", p.display()))
}

#[derive(Default)]
struct Stats {
    total: usize,
    within1: usize,
    exact: usize,
    worst: i32,
}

/// Resizes on the GPU and compares with Pillow's HWC bytes `want`.
fn run_case(what: &str, src: &RgbImage, (ow, oh): (usize, usize), order: ResizeOrder, want: &[u8], st: &mut Stats) {
    let gpu = common::gpu();
    assert_eq!(want.len(), ow * oh * 3, "{what}: output size");
    let dst = Tensor::empty(gpu, &[3, oh, ow], DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    resize_bicubic(&mut rec, src, (ow, oh), Bicubic { mode: ResizeMode::Pil8, order }, &dst, (0, 0)).unwrap();
    pollster::block_on(rec.finish().unwrap().run(gpu)).unwrap();
    let got = pollster::block_on(gpu.read_f32(&dst)).unwrap(); // [3, oh, ow]
    let (mut exact, mut worst) = (0, 0);
    for c in 0..3 {
        for y in 0..oh {
            for x in 0..ow {
                let g = got[(c * oh + y) * ow + x];
                assert!(g.is_finite() && g.fract() == 0.0 && (0.0..=255.0).contains(&g), "{what}: value {g} at c{c} y{y} x{x}");
                let d = (g as i32 - want[(y * ow + x) * 3 + c] as i32).abs();
                st.total += 1;
                st.within1 += (d <= 1) as usize;
                exact += (d == 0) as usize;
                worst = worst.max(d);
            }
        }
    }
    eprintln!("{what}: {exact}/{} exact, max diff {worst}", 3 * ow * oh);
    st.exact += exact;
    st.worst = st.worst.max(worst);
}

#[test]
fn gpu_resize_matches_pillow() {
    let gpu = common::gpu();
    let cases = String::from_utf8(fixture("cases.txt")).expect("cases.txt is text");
    let mut lines = cases.lines().filter(|l| !l.trim().is_empty());
    let version = lines.next().and_then(|l| l.strip_prefix("pillow ")).expect("first line: pillow VERSION");
    let major: u32 = version.split('.').next().and_then(|m| m.parse().ok()).expect("Pillow major version");
    // The order `Image.resize` itself used when the fixtures were made.
    let native = if major >= 13 { ResizeOrder::Pillow13 } else { ResizeOrder::HorizontalFirst };
    let mut st = Stats::default();
    let mut n = 0;
    for line in lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 5, "bad line {line:?}");
        let name = f[0];
        let [w, h, ow, oh]: [usize; 4] = std::array::from_fn(|i| f[i + 1].parse().expect("size"));
        let src = fixture(&format!("{name}_in.bin"));
        assert_eq!(src.len(), w * h * 3, "{name}: input size");
        let img = RgbImage::upload(gpu, &src, w, h).unwrap();
        let what = format!("{name} {w}x{h} -> {ow}x{oh}");
        run_case(&format!("{what} Pillow {version}"), &img, (ow, oh), native, &fixture(&format!("{name}_out.bin")), &mut st);
        run_case(&format!("{what} horizontal first"), &img, (ow, oh), ResizeOrder::HorizontalFirst, &fixture(&format!("{name}_out_hfirst.bin")), &mut st);
        n += 1;
    }
    assert!(n >= 5, "only {n} cases in cases.txt");
    let frac = st.within1 as f64 / st.total as f64;
    eprintln!("{} values: {} exact, {:.4}% within one level, max diff {}", st.total, st.exact, 100.0 * frac, st.worst);
    assert!(frac >= 0.999, "only {:.4}% of values within one level of Pillow", 100.0 * frac);
    assert!(st.worst <= 2, "a value is {} levels off Pillow", st.worst);
}
