//! The runtime's contracts: pooled buffers are reused, replaying a recorded list creates
//! nothing, pipelines are compiled once per key, and GPU validation failures come back as typed
//! errors naming the kernel (and leave the device usable).

mod common;

use dsvl_gpu::gpu::{Bind, DType, Kernel, PipelineKey, Recorder, Tensor};
use dsvl_gpu::ops::elementwise::{binary, unary, Binary, Unary};
use dsvl_gpu::ops::Rows;
use dsvl_gpu::Error;

fn record_gelu_chain(gpu: &dsvl_gpu::Gpu, x: &Tensor) -> (dsvl_gpu::gpu::StepList, Tensor) {
    let mut rec = Recorder::new(gpu);
    let t = Tensor::empty(gpu, x.shape(), DType::F32).unwrap();
    let y = Tensor::empty(gpu, x.shape(), DType::F32).unwrap();
    unary(&mut rec, Unary::GeluErf, &Rows::all(x), &Rows::all(&t)).unwrap();
    binary(&mut rec, Binary::Add, &Rows::all(&t), &Rows::all(x), &Rows::all(&y)).unwrap();
    (rec.finish().unwrap(), y)
}

#[test]
fn replays_and_rerecords_allocate_nothing() {
    // A device of its own: the pool counters must not see the other tests' allocations.
    let own = pollster::block_on(dsvl_gpu::Gpu::new(&dsvl_gpu::GpuOptions::from_env())).unwrap();
    let gpu = &own;
    let x = Tensor::from_f32(gpu, &[33, 65], DType::F32, &vec![0.5; 33 * 65]).unwrap();
    {
        let (list, y) = record_gelu_chain(gpu, &x);
        pollster::block_on(list.run(gpu)).unwrap();
        drop(y);
    }
    let created = gpu.pool_stats().created;
    let pipelines = gpu.pipeline_count();
    // Re-recording the same pass takes its activations from the pool and its pipelines from the cache.
    let (list, y) = record_gelu_chain(gpu, &x);
    assert_eq!(gpu.pool_stats().created, created, "re-recording created buffers");
    assert_eq!(gpu.pipeline_count(), pipelines, "re-recording compiled pipelines");
    for _ in 0..5 {
        pollster::block_on(list.run(gpu)).unwrap();
    }
    assert_eq!(gpu.pool_stats().created, created, "replays created buffers");
    let got = pollster::block_on(gpu.read_f32(&y)).unwrap();
    let want = Unary::GeluErf.reference(0.5) + 0.5;
    assert!(got.iter().all(|&v| (v as f64 - want).abs() < 1e-6), "{} vs {want}", got[0]);
}

#[test]
fn validation_errors_are_typed_and_name_the_kernel() {
    let gpu = common::gpu();
    // The shader declares an output binding this layout lacks: pipeline creation fails validation.
    let broken = Kernel { shader: "elementwise", entry: "unary", binds: &[Bind::Uniform, Bind::Read] };
    let key = PipelineKey::new(broken, &[], &[("OP", 0)]);
    let x = Tensor::from_f32(gpu, &[4], DType::F32, &[1.0; 4]).unwrap();
    let params = dsvl_gpu::ops::elementwise::EltParams { rows: 1, cols: 4, a_stride: 4, y_stride: 4, ..Default::default() };
    let mut rec = Recorder::new(gpu);
    let err = rec.dispatch(&key, &params, &[&x], [1, 1, 1]).unwrap_err();
    match &err {
        Error::Kernel { kernel, message } => {
            assert_eq!(kernel, "elementwise.unary OP=0");
            assert!(!message.is_empty() && !message.contains('\n'), "{message}");
        }
        e => panic!("expected Error::Kernel, got {e}"),
    }
    // An unaligned view cannot be bound; the error says so instead of reaching wgpu.
    let big = Tensor::from_f32(gpu, &[100], DType::F32, &[0.0; 100]).unwrap();
    let view = big.view(3, &[4]).unwrap();
    let y = Tensor::empty(gpu, &[4], DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    let e = unary(&mut rec, Unary::Silu, &Rows::all(&view), &Rows::all(&y)).unwrap_err();
    assert!(e.to_string().contains("not a multiple"), "{e}");
    // The device still works.
    let (list, out) = record_gelu_chain(gpu, &x);
    pollster::block_on(list.run(gpu)).unwrap();
    assert!(pollster::block_on(gpu.read_f32(&out)).unwrap().iter().all(|v| v.is_finite()));
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    let gpu = common::gpu();
    let a = Tensor::empty(gpu, &[3, 5], DType::F32).unwrap();
    let y = Tensor::empty(gpu, &[3, 4], DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    assert!(matches!(unary(&mut rec, Unary::Silu, &Rows::all(&a), &Rows::all(&y)), Err(Error::Shape { .. })));
    let u = Tensor::from_u32(gpu, &[15], &[0; 15]).unwrap();
    assert!(unary(&mut rec, Unary::Silu, &Rows::all(&u), &Rows::all(&u.clone())).is_err());
    assert!(a.reshape(&[4, 4]).is_err());
    assert!(a.view(10, &[6]).is_err());
    assert_eq!(rec.len(), 0, "failed ops must not leave dispatches behind");
}
