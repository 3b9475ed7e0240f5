//! Recording a pass as a flat list of dispatches, submitted in one command encoder.
//!
//! Ops append dispatches to a `Recorder`; `finish` writes every dispatch's parameters into
//! one uniform arena and creates the bind groups, giving a `StepList`. A list can be
//! replayed any number of times; values that change between replays (positions, the
//! sampling step) live in small storage tensors the caller rewrites, so replaying creates
//! nothing on the GPU.

use std::sync::Arc;

use super::pipeline::{Bind, CachedPipeline, PipelineKey};
use super::tensor::{Storage, Tensor};
use super::Params;
use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// Uniform bindings are placed at this alignment (the WebGPU maximum of
/// `min_uniform_buffer_offset_alignment`).
const UNIFORM_ALIGN: usize = 256;

struct Pending {
    pipeline: Arc<CachedPipeline>,
    params: Option<(usize, usize)>,
    tensors: Vec<(Arc<Storage>, u64, u64)>,
    workgroups: [u32; 3],
}

/// Collects dispatches for one pass.
pub struct Recorder<'g> {
    pub gpu: &'g Gpu,
    arena: Vec<u8>,
    pending: Vec<Pending>,
}

pub(super) struct Step {
    pub(super) label: String,
    pub(super) pipeline: wgpu::ComputePipeline,
    pub(super) bind_group: wgpu::BindGroup,
    pub(super) workgroups: [u32; 3],
}

/// A recorded pass: replay with `run`, or encode into a caller's encoder.
pub struct StepList {
    pub(super) steps: Vec<Step>,
    // Keeps the buffers the bind groups point at alive (and out of the pool) while the list lives.
    _keep: Vec<Arc<Storage>>,
    _arena: Option<wgpu::Buffer>,
}

impl<'g> Recorder<'g> {
    pub fn new(gpu: &'g Gpu) -> Self {
        Recorder { gpu, arena: Vec::new(), pending: Vec::new() }
    }

    /// Appends one dispatch of `key` with `params` in binding 0 (when the kernel declares a
    /// uniform) and `tensors` in the following bindings, in order.
    pub fn dispatch<P: Params>(&mut self, key: &PipelineKey, params: &P, tensors: &[&Tensor], workgroups: [u32; 3]) -> Result<()> {
        let binds = key.kernel.binds;
        let has_uniform = binds.first() == Some(&Bind::Uniform);
        let n_storage = binds.len() - has_uniform as usize;
        if tensors.len() != n_storage {
            return Err(Error::Kernel { kernel: key.to_string(), message: format!("{} tensors bound, kernel declares {n_storage}", tensors.len()) });
        }
        if n_storage as u32 > self.gpu.caps.max_storage_buffers {
            return Err(Error::Kernel {
                kernel: key.to_string(),
                message: format!("needs {n_storage} storage buffers, adapter allows {}", self.gpu.caps.max_storage_buffers),
            });
        }
        let max_wg = self.gpu.caps.max_workgroups_per_dim;
        if workgroups.iter().any(|&w| w > max_wg) || workgroups.contains(&0) {
            return Err(Error::Kernel { kernel: key.to_string(), message: format!("workgroup grid {workgroups:?} outside 1..={max_wg}") });
        }
        let mut bound = Vec::with_capacity(tensors.len());
        for (i, t) in tensors.iter().enumerate() {
            let size = t.byte_len();
            if size > self.gpu.caps.max_binding {
                let what = format!("binding {} ({:?} {}) of {key}", i + has_uniform as usize, t.shape(), t.dtype());
                return Err(Error::BindingLimit { op: key.kernel.entry, what, needed: size, limit: self.gpu.caps.max_binding });
            }
            if t.offset() % self.gpu.caps.storage_align != 0 {
                return Err(Error::Kernel { kernel: key.to_string(), message: format!("binding {} offset {} not a multiple of {}", i, t.offset(), self.gpu.caps.storage_align) });
            }
            bound.push((t.storage.clone(), t.offset(), size));
        }
        let params = if has_uniform {
            let start = self.arena.len().div_ceil(UNIFORM_ALIGN) * UNIFORM_ALIGN;
            let bytes = bytemuck::bytes_of(params);
            self.arena.resize(start, 0);
            self.arena.extend_from_slice(bytes);
            // Uniform bindings must be a multiple of 16 bytes.
            let size = bytes.len().div_ceil(16) * 16;
            self.arena.resize(start + size, 0);
            Some((start, size))
        } else {
            None
        };
        let pipeline = self.gpu.pipeline(key)?;
        self.pending.push(Pending { pipeline, params, tensors: bound, workgroups });
        Ok(())
    }

    /// Number of dispatches recorded so far.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Uploads the parameters and creates the bind groups.
    pub fn finish(self) -> Result<StepList> {
        let gpu = self.gpu;
        let arena = if self.arena.is_empty() {
            None
        } else {
            let buf = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("params"),
                size: self.arena.len() as u64,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            gpu.queue.write_buffer(&buf, 0, &self.arena);
            Some(buf)
        };
        let mut keep: Vec<Arc<Storage>> = Vec::new();
        let mut steps = Vec::with_capacity(self.pending.len());
        for p in self.pending {
            let mut entries = Vec::with_capacity(p.tensors.len() + 1);
            let mut slot = 0u32;
            if let (Some((off, size)), Some(buf)) = (p.params, arena.as_ref()) {
                entries.push(wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: buf,
                        offset: off as u64,
                        size: wgpu::BufferSize::new(size as u64),
                    }),
                });
                slot = 1;
            }
            for (i, (st, off, size)) in p.tensors.iter().enumerate() {
                entries.push(wgpu::BindGroupEntry {
                    binding: slot + i as u32,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &st.buffer,
                        offset: *off,
                        size: wgpu::BufferSize::new(*size),
                    }),
                });
            }
            let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(&p.pipeline.label),
                layout: &p.pipeline.layout,
                entries: &entries,
            });
            for (st, _, _) in p.tensors {
                if !keep.iter().any(|k| Arc::ptr_eq(k, &st)) {
                    keep.push(st);
                }
            }
            steps.push(Step { label: p.pipeline.label.clone(), pipeline: p.pipeline.pipeline.clone(), bind_group, workgroups: p.workgroups });
        }
        Ok(StepList { steps, _keep: keep, _arena: arena })
    }
}

impl StepList {
    /// Records every dispatch into one compute pass of `enc`.
    pub fn encode(&self, enc: &mut wgpu::CommandEncoder) {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("steps"), timestamp_writes: None });
        for s in &self.steps {
            pass.set_pipeline(&s.pipeline);
            pass.set_bind_group(0, &s.bind_group, &[]);
            let [x, y, z] = s.workgroups;
            pass.dispatch_workgroups(x, y, z);
        }
    }

    /// Encodes the whole list into one command buffer and submits it once, returning any
    /// validation or out-of-memory error.
    pub async fn run(&self, gpu: &Gpu) -> Result<()> {
        let mut enc = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("steps") });
        self.encode(&mut enc);
        gpu.submit_checked("running recorded steps", enc.finish()).await
    }

    /// Encodes the list `times` times into one submission (for benchmarks).
    pub async fn run_repeated(&self, gpu: &Gpu, times: usize) -> Result<()> {
        let mut enc = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("steps") });
        for _ in 0..times {
            self.encode(&mut enc);
        }
        gpu.submit_checked("running recorded steps", enc.finish()).await
    }

    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Kernel labels in dispatch order.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.steps.iter().map(|s| s.label.as_str())
    }
}

/// Splits a 1-D count of workgroups into a grid within the per-dimension limit; shaders
/// recover the linear index as `wid.x + wid.y * nwg.x`.
pub fn grid(groups: u32, max_per_dim: u32) -> [u32; 3] {
    if groups <= max_per_dim {
        [groups.max(1), 1, 1]
    } else {
        let y = groups.div_ceil(max_per_dim);
        [groups.div_ceil(y), y, 1]
    }
}
