//! GPU time of every dispatch of a recorded list, from timestamps written between dispatches
//! inside its compute pass. Only where the adapter has TIMESTAMP_QUERY_INSIDE_PASSES (native
//! Vulkan/Metal/DX12 adapters usually do; browsers do not).

use crate::error::{Error, Result};
use crate::gpu::{Gpu, StepList};

impl StepList {
    /// (kernel label, nanoseconds) for each dispatch, in order. The timestamps themselves add a
    /// little time, so the sum runs slightly above an unprofiled run.
    pub async fn profile(&self, gpu: &Gpu) -> Result<Vec<(String, f64)>> {
        let need = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
        if !gpu.device.features().contains(need) {
            return Err(Error::MissingFeature { op: "profile", feature: "TIMESTAMP_QUERY_INSIDE_PASSES" });
        }
        let period = gpu.queue.get_timestamp_period() as f64;
        let mut out = Vec::with_capacity(self.steps.len());
        let max = (wgpu::QUERY_SET_MAX_QUERIES - 1) as usize;
        for chunk in self.steps.chunks(max) {
            let n = chunk.len() as u32 + 1;
            let qs = gpu.device.create_query_set(&wgpu::QuerySetDescriptor { label: Some("profile"), ty: wgpu::QueryType::Timestamp, count: n });
            let resolve = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("profile resolve"),
                size: n as u64 * 8,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let mut enc = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("profile") });
            {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("profile"), timestamp_writes: None });
                for (i, s) in chunk.iter().enumerate() {
                    pass.write_timestamp(&qs, i as u32);
                    pass.set_pipeline(&s.pipeline);
                    pass.set_bind_group(0, &s.bind_group, &[]);
                    let [x, y, z] = s.workgroups;
                    pass.dispatch_workgroups(x, y, z);
                }
                pass.write_timestamp(&qs, n - 1);
            }
            enc.resolve_query_set(&qs, 0..n, &resolve, 0);
            gpu.submit_checked("profiling recorded steps", enc.finish()).await?;
            let bytes = gpu.read_bytes(&resolve, 0, n as u64 * 8).await?;
            let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
            for (i, s) in chunk.iter().enumerate() {
                out.push((s.label.clone(), ticks[i + 1].saturating_sub(ticks[i]) as f64 * period));
            }
        }
        Ok(out)
    }
}

/// A list's cost without timestamps: the GPU time per run when `reps` runs are queued in one
/// submission (so the host never stalls the GPU), and the host time to encode one run.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ReplayTiming {
    pub gpu_ms: f64,
    pub encode_ms: f64,
}

impl StepList {
    /// Measures `ReplayTiming` (after one warm-up run). Replaying must be harmless: the lists
    /// `Session::profile` hands here rewrite the same cache rows each time.
    pub async fn replay_timing(&self, gpu: &Gpu, reps: usize) -> Result<ReplayTiming> {
        let reps = reps.max(1);
        self.run(gpu).await?;
        gpu.idle().await?;
        let t = crate::clock::now_s();
        self.run_repeated(gpu, reps).await?;
        gpu.idle().await?;
        let gpu_ms = (crate::clock::now_s() - t) * 1e3 / reps as f64;
        let t = crate::clock::now_s();
        for _ in 0..reps {
            let mut enc = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("encode timing") });
            self.encode(&mut enc);
            drop(enc.finish());
        }
        let encode_ms = (crate::clock::now_s() - t) * 1e3 / reps as f64;
        Ok(ReplayTiming { gpu_ms, encode_ms })
    }
}
