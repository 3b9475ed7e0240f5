//! A buffer pool: activation buffers go back to the pool when their last tensor drops and are
//! handed out again for requests of the same size class, so re-recording a pass allocates nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub(crate) const USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes in buffers currently owned by tensors.
    pub live_bytes: u64,
    /// Highest `live_bytes + cached_bytes` seen: the GPU memory this process has held.
    pub peak_bytes: u64,
    /// Bytes in free buffers waiting for reuse.
    pub cached_bytes: u64,
    /// Buffers created (not reused) so far.
    pub created: u64,
}

#[derive(Default)]
pub(crate) struct PoolInner {
    free: Mutex<HashMap<u64, Vec<wgpu::Buffer>>>,
    live: AtomicU64,
    cached: AtomicU64,
    peak: AtomicU64,
    created: AtomicU64,
}

#[derive(Default, Clone)]
pub(crate) struct BufferPool(pub(crate) Arc<PoolInner>);

/// Size classes: eight steps per power of two, so at most 12.5% is wasted.
pub(crate) fn size_class(bytes: u64) -> u64 {
    let b = bytes.max(256);
    let p = 63 - b.leading_zeros() as u64; // floor(log2)
    let step = (1u64 << p) / 8;
    b.div_ceil(step.max(1)) * step.max(1)
}

impl PoolInner {
    fn note_peak(&self) {
        let total = self.live.load(Ordering::Relaxed) + self.cached.load(Ordering::Relaxed);
        self.peak.fetch_max(total, Ordering::Relaxed);
    }

    pub(crate) fn take(&self, device: &wgpu::Device, class: u64, pooled: bool) -> wgpu::Buffer {
        if pooled
            && let Some(b) = self.free.lock().ok().and_then(|mut m| m.get_mut(&class).and_then(Vec::pop)) {
                self.cached.fetch_sub(class, Ordering::Relaxed);
                self.live.fetch_add(class, Ordering::Relaxed);
                return b;
            }
        let b = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(if pooled { "pooled" } else { "tensor" }),
            size: class,
            usage: USAGE,
            mapped_at_creation: false,
        });
        self.created.fetch_add(1, Ordering::Relaxed);
        self.live.fetch_add(class, Ordering::Relaxed);
        self.note_peak();
        b
    }

    pub(crate) fn give_back(&self, buffer: wgpu::Buffer, size: u64, pooled: bool) {
        self.live.fetch_sub(size, Ordering::Relaxed);
        if pooled
            && let Ok(mut m) = self.free.lock() {
                self.cached.fetch_add(size, Ordering::Relaxed);
                m.entry(size).or_default().push(buffer);
                return;
            }
        buffer.destroy();
    }
}

impl BufferPool {
    pub(crate) fn stats(&self) -> PoolStats {
        let p = &self.0;
        PoolStats {
            live_bytes: p.live.load(Ordering::Relaxed),
            peak_bytes: p.peak.load(Ordering::Relaxed),
            cached_bytes: p.cached.load(Ordering::Relaxed),
            created: p.created.load(Ordering::Relaxed),
        }
    }

    /// Frees every cached buffer (e.g. after a large one-off pass).
    pub fn trim(&self) {
        if let Ok(mut m) = self.0.free.lock() {
            for (_, v) in m.drain() {
                for b in v {
                    self.0.cached.fetch_sub(b.size(), Ordering::Relaxed);
                    b.destroy();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn size_classes_bound_waste() {
        for b in [1u64, 255, 256, 257, 1000, 4096, 5000, 1 << 20, (1 << 20) + 1, 123_456_789] {
            let c = super::size_class(b);
            assert!(c >= b && c >= 256, "{b} -> {c}");
            assert!(c as f64 <= (b.max(256) as f64) * 1.126, "{b} -> {c}");
            assert_eq!(c % 4, 0);
        }
    }
}
