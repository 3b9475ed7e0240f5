//! Reading GPU buffers back to the CPU. Async so the same code runs in the browser, where
//! blocking is impossible; natively we drive the device with `poll`.

use crate::error::{Error, Result};
use crate::gpu::{Gpu, StepList, Tensor};

/// A read-back whose copy is submitted and whose mapping is requested (see `Gpu::submit_then_read`).
pub struct InFlightRead {
    rx: futures_channel::oneshot::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>,
    index: wgpu::SubmissionIndex,
    bytes: u64,
}

impl Gpu {
    /// Copies `bytes` bytes of `src` starting at `offset` into host memory.
    pub async fn read_bytes(&self, src: &wgpu::Buffer, offset: u64, bytes: u64) -> Result<Vec<u8>> {
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let staging = self.staging_buffer(bytes);
        self.read_bytes_via(&staging, src, offset, bytes).await
    }

    /// A MAP_READ buffer for `read_bytes_via`, kept by callers that read back every step (the
    /// decode loop) so nothing is allocated per token.
    pub fn staging_buffer(&self, bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes.div_ceil(4).max(1) * 4,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// As `read_bytes`, through a caller-owned staging buffer of at least `bytes` (rounded up to 4).
    pub async fn read_bytes_via(&self, staging: &wgpu::Buffer, src: &wgpu::Buffer, offset: u64, bytes: u64) -> Result<Vec<u8>> {
        let size = bytes.div_ceil(4) * 4;
        if size == 0 {
            return Ok(Vec::new());
        }
        if staging.size() < size {
            return Err(Error::Readback(format!("staging buffer of {} bytes for a {size}-byte read", staging.size())));
        }
        let mut enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("readback") });
        enc.copy_buffer_to_buffer(src, offset, staging, 0, size);
        self.submit_checked("read-back copy", enc.finish()).await?;
        let (tx, rx) = futures_channel::oneshot::channel();
        staging.map_async(wgpu::MapMode::Read, ..size, move |r| {
            let _ = tx.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| self.lost_or("read-back", Error::Readback(e.to_string())))?;
        rx.await
            .map_err(|_| self.lost_or("read-back", Error::Readback("the map callback was dropped".into())))?
            .map_err(|e| self.lost_or("read-back", Error::Readback(e.to_string())))?;
        let out = {
            let view = staging.get_mapped_range(..size).map_err(|e| self.lost_or("read-back", Error::Readback(e.to_string())))?;
            view[..bytes as usize].to_vec()
        };
        staging.unmap();
        Ok(out)
    }

    /// Submits one command buffer inside validation and out-of-memory error scopes and waits
    /// for the scopes, so failures come back as errors rather than log lines.
    pub async fn submit_checked(&self, context: &str, cb: wgpu::CommandBuffer) -> Result<()> {
        self.submit_indexed(context, cb).await.map(|_| ())
    }

    /// As `submit_checked`, returning the submission's index (to wait for it alone).
    pub async fn submit_indexed(&self, context: &str, cb: wgpu::CommandBuffer) -> Result<wgpu::SubmissionIndex> {
        #[cfg(target_arch = "wasm32")]
        self.check_pending_pipelines().await?;
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let val = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let index = self.queue.submit([cb]);
        let v = val.pop().await;
        let o = oom.pop().await;
        if let Some(e) = v.or(o) {
            return Err(self.lost_or(context, Error::from_wgpu(context, e)));
        }
        self.take_uncaptured(context)?;
        Ok(index)
    }

    /// Submits `list` (if any) followed by a copy of `bytes` of `src` into `staging`, and asks
    /// for the mapping, without waiting: the caller can queue more work before `finish_read`.
    /// `staging` must be unmapped and hold `bytes` (a multiple of 4).
    pub async fn submit_then_read(&self, list: Option<&StepList>, src: &Tensor, staging: &wgpu::Buffer, bytes: u64) -> Result<InFlightRead> {
        if !bytes.is_multiple_of(4) || staging.size() < bytes || src.byte_len() < bytes {
            return Err(Error::Readback(format!("a {bytes}-byte read through a {}-byte staging buffer", staging.size())));
        }
        let mut enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("steps+readback") });
        if let Some(list) = list {
            list.encode(&mut enc);
        }
        enc.copy_buffer_to_buffer(src.buffer(), src.offset(), staging, 0, bytes);
        let index = self.submit_indexed("running recorded steps", enc.finish()).await?;
        let (tx, rx) = futures_channel::oneshot::channel();
        staging.map_async(wgpu::MapMode::Read, ..bytes, move |r| {
            let _ = tx.send(r);
        });
        Ok(InFlightRead { rx, index, bytes })
    }

    /// Waits for a read started by `submit_then_read` (and only for the work before it), then
    /// copies the bytes out and unmaps `staging`.
    pub async fn finish_read(&self, read: InFlightRead, staging: &wgpu::Buffer) -> Result<Vec<u8>> {
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::Wait { submission_index: Some(read.index), timeout: None })
            .map_err(|e| self.lost_or("read-back", Error::Readback(e.to_string())))?;
        #[cfg(target_arch = "wasm32")]
        let _ = read.index;
        read.rx
            .await
            .map_err(|_| self.lost_or("read-back", Error::Readback("the map callback was dropped".into())))?
            .map_err(|e| self.lost_or("read-back", Error::Readback(e.to_string())))?;
        let out = {
            let view = staging.get_mapped_range(..read.bytes).map_err(|e| self.lost_or("read-back", Error::Readback(e.to_string())))?;
            view.to_vec()
        };
        staging.unmap();
        Ok(out)
    }

    /// Waits until the GPU has finished all submitted work (natively; a no-op in the browser,
    /// where a read-back is the only way to wait).
    pub fn wait_idle(&self) -> Result<()> {
        #[cfg(not(target_arch = "wasm32"))]
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::DeviceLost(e.to_string()))?;
        Ok(())
    }

    /// Waits until the GPU has finished all submitted work, on every target.
    pub async fn idle(&self) -> Result<()> {
        #[cfg(not(target_arch = "wasm32"))]
        return self.wait_idle();
        #[cfg(target_arch = "wasm32")]
        {
            let (tx, rx) = futures_channel::oneshot::channel();
            self.queue.on_submitted_work_done(move || {
                let _ = tx.send(());
            });
            rx.await.map_err(|_| Error::DeviceLost("the queue's completion callback was dropped".into()))
        }
    }

    /// Reads a tensor back as f32 values (f16 is widened).
    pub async fn read_f32(&self, t: &Tensor) -> Result<Vec<f32>> {
        let bytes = self.read_bytes(t.buffer(), t.offset(), t.byte_len()).await?;
        Ok(t.dtype().decode_f32(&bytes, t.len()))
    }

    /// Reads a u32 tensor back.
    pub async fn read_u32(&self, t: &Tensor) -> Result<Vec<u32>> {
        let bytes = self.read_bytes(t.buffer(), t.offset(), t.byte_len()).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes[..t.len() * 4]))
    }
}
