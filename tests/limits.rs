//! Binding limits are real: with the storage binding limit forced down to 64 KiB, big weights
//! split into parts that kernels iterate over (and still match a CPU reference), and a tensor
//! that does not fit one binding is a typed error, not a crash.

use dsvl_gpu::check::Rng;
use dsvl_gpu::gpu::{DType, Gpu, GpuOptions, Recorder, RowSplit, Tensor};
use dsvl_gpu::ops::elementwise::{unary, Unary};
use dsvl_gpu::ops::matmul::{linear, Epilogue};
use dsvl_gpu::ops::{embedding, Rows};
use dsvl_gpu::Error;

const LIMIT: u64 = 64 << 10;

fn small_gpu() -> Gpu {
    let opts = GpuOptions { max_binding: Some(LIMIT), ..GpuOptions::from_env() };
    pollster::block_on(Gpu::new(&opts)).expect("a GPU adapter for tests")
}

#[test]
fn weights_split_under_a_small_binding_limit() {
    let gpu = small_gpu();
    assert_eq!(gpu.caps.max_binding, LIMIT);
    let mut rng = Rng::new(3);
    let (n, k) = (700, 64); // 179 KB of f32: three parts of at most 256 rows
    let w = rng.normals(n * k, 0.2);
    let ws = RowSplit::from_f32(&gpu, n, k, DType::F32, &w).unwrap();
    assert_eq!(ws.parts.len(), 3, "parts: {:?}", ws.parts.iter().map(|(r, t)| (*r, t.shape().to_vec())).collect::<Vec<_>>());
    assert!(ws.parts.iter().all(|(_, t)| t.byte_len() <= LIMIT));
    for m in [1usize, 20] {
        // GEMV for one row, GEMM for twenty.
        let x = rng.normals(m * k, 1.0);
        let xt = Tensor::from_f32(&gpu, &[m, k], DType::F32, &x).unwrap();
        let yt = Tensor::from_f32(&gpu, &[m, n], DType::F32, &vec![f32::NAN; m * n]).unwrap();
        let mut rec = Recorder::new(&gpu);
        linear(&mut rec, &Rows::all(&xt), &ws, Epilogue::default(), &Rows::all(&yt)).unwrap();
        pollster::block_on(rec.finish().unwrap().run(&gpu)).unwrap();
        let got = pollster::block_on(gpu.read_f32(&yt)).unwrap();
        for (i, g) in got.iter().enumerate() {
            let (r, c) = (i / n, i % n);
            let want: f64 = (0..k).map(|t| x[r * k + t] as f64 * w[c * k + t] as f64).sum();
            assert!((*g as f64 - want).abs() < 1e-4, "m={m} element {i}: {g} vs {want}");
        }
    }
    // The embedding table splits the same way; every row comes from the right part.
    let (vocab, hidden) = (600, 64);
    let table: Vec<f32> = (0..vocab * hidden).map(|i| i as f32).collect();
    let ts = RowSplit::from_f32(&gpu, vocab, hidden, DType::F32, &table).unwrap();
    assert!(ts.parts.len() >= 3);
    let ids = [0u32, 255, 256, 511, 512, 599];
    let idt = Tensor::from_u32(&gpu, &[ids.len()], &ids).unwrap();
    let out = Tensor::empty(&gpu, &[ids.len(), hidden], DType::F32).unwrap();
    let mut rec = Recorder::new(&gpu);
    embedding::gather(&mut rec, &idt, &ts, &out).unwrap();
    pollster::block_on(rec.finish().unwrap().run(&gpu)).unwrap();
    let got = pollster::block_on(gpu.read_f32(&out)).unwrap();
    for (j, &id) in ids.iter().enumerate() {
        for c in 0..hidden {
            assert_eq!(got[j * hidden + c], (id as usize * hidden + c) as f32, "id {id} column {c}");
        }
    }
}

#[test]
fn oversized_binding_is_a_typed_error() {
    let gpu = small_gpu();
    let n = (LIMIT as usize / 4) * 2; // twice the limit
    let a = Tensor::empty(&gpu, &[n], DType::F32).unwrap();
    let y = Tensor::empty(&gpu, &[n], DType::F32).unwrap();
    let mut rec = Recorder::new(&gpu);
    let err = unary(&mut rec, Unary::GeluErf, &Rows::all(&a), &Rows::all(&y)).unwrap_err();
    match &err {
        Error::BindingLimit { needed, limit, .. } => {
            assert_eq!(*limit, LIMIT);
            assert!(*needed > LIMIT);
        }
        e => panic!("expected BindingLimit, got {e}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("elementwise.unary") && msg.contains("OP=0") && !msg.contains('\n'), "{msg}");
    // A single row wider than the limit cannot be split by rows.
    let wide = vec![0.0f32; LIMIT as usize / 4 + 1];
    let e = RowSplit::from_f32(&gpu, 1, wide.len(), DType::F32, &wide).unwrap_err();
    assert!(matches!(e, Error::BindingLimit { .. }), "{e}");
}
