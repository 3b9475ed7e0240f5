//! Tensors: typed views (shape, byte offset, dtype) on GPU buffers.

use std::sync::Arc;

use half::f16;

use super::pool::{size_class, PoolInner};
use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// Element types on the GPU. bf16 checkpoints are converted to f16 or f32 on load.
/// f16 data is always laid out as little-endian halves; shaders without SHADER_F16 read it
/// as packed `u32` pairs with `unpack2x16float`, so f16 weights work on every adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    U32,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F16 => 2,
            DType::F32 | DType::U32 => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::U32 => "u32",
        }
    }

    /// Host bytes for `data` in this dtype (u32 takes the values as integers).
    pub fn encode_f32(self, data: &[f32]) -> Vec<u8> {
        match self {
            DType::F32 => bytemuck::cast_slice(data).to_vec(),
            DType::F16 => {
                let h: Vec<f16> = data.iter().map(|&x| f16::from_f32(x)).collect();
                bytemuck::cast_slice(&h).to_vec()
            }
            DType::U32 => data.iter().flat_map(|&x| (x as u32).to_le_bytes()).collect(),
        }
    }

    pub fn decode_f32(self, bytes: &[u8], n: usize) -> Vec<f32> {
        match self {
            DType::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(&bytes[..n * 4]),
            DType::F16 => bytemuck::pod_collect_to_vec::<u8, f16>(&bytes[..n * 2]).iter().map(|h| h.to_f32()).collect(),
            DType::U32 => bytemuck::pod_collect_to_vec::<u8, u32>(&bytes[..n * 4]).iter().map(|&u| u as f32).collect(),
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A GPU buffer with its pool bookkeeping; returned to the pool (or destroyed) on drop.
pub(crate) struct Storage {
    pub(crate) buffer: wgpu::Buffer,
    size: u64,
    pooled: bool,
    pool: Arc<PoolInner>,
}

impl Drop for Storage {
    fn drop(&mut self) {
        self.pool.give_back(self.buffer.clone(), self.size, self.pooled);
    }
}

/// A typed view on a GPU buffer. Cloning shares the buffer.
#[derive(Clone)]
pub struct Tensor {
    pub(crate) storage: Arc<Storage>,
    offset: u64,
    shape: Vec<usize>,
    dtype: DType,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?} {} @{})", self.shape, self.dtype, self.offset)
    }
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    fn alloc(gpu: &Gpu, shape: &[usize], dtype: DType, pooled: bool) -> Result<Tensor> {
        let bytes = (numel(shape) * dtype.size()) as u64;
        // Storage bindings are sized in 4-byte words; odd f16 counts round up.
        let bytes = bytes.div_ceil(4).max(1) * 4;
        let size = if pooled { size_class(bytes) } else { bytes };
        if size > gpu.caps.max_buffer {
            return Err(Error::BufferLimit { what: format!("tensor {shape:?} {dtype}"), needed: size, limit: gpu.caps.max_buffer });
        }
        let buffer = gpu.pool.0.take(&gpu.device, size, pooled);
        Ok(Tensor {
            storage: Arc::new(Storage { buffer, size, pooled, pool: gpu.pool.0.clone() }),
            offset: 0,
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// An uninitialised tensor from the buffer pool (activations, scratch).
    pub fn empty(gpu: &Gpu, shape: &[usize], dtype: DType) -> Result<Tensor> {
        Tensor::alloc(gpu, shape, dtype, true)
    }

    /// An uninitialised tensor in a buffer of its own, sized exactly (weights, caches).
    pub fn empty_exact(gpu: &Gpu, shape: &[usize], dtype: DType) -> Result<Tensor> {
        Tensor::alloc(gpu, shape, dtype, false)
    }

    /// A tensor holding `bytes` (already in `dtype`'s layout), in a buffer of its own.
    pub fn from_bytes(gpu: &Gpu, shape: &[usize], dtype: DType, bytes: &[u8]) -> Result<Tensor> {
        let want = numel(shape) * dtype.size();
        if bytes.len() != want {
            return Err(Error::Shape { op: "upload", detail: format!("{shape:?} {dtype} needs {want} bytes, got {}", bytes.len()) });
        }
        let t = Tensor::alloc(gpu, shape, dtype, false)?;
        t.write_bytes(gpu, bytes);
        Ok(t)
    }

    /// Uploads f32 host data, converting to `dtype`.
    pub fn from_f32(gpu: &Gpu, shape: &[usize], dtype: DType, data: &[f32]) -> Result<Tensor> {
        Tensor::from_bytes(gpu, shape, dtype, &dtype.encode_f32(data))
    }

    pub fn from_u32(gpu: &Gpu, shape: &[usize], data: &[u32]) -> Result<Tensor> {
        Tensor::from_bytes(gpu, shape, DType::U32, bytemuck::cast_slice(data))
    }

    /// Overwrites the tensor's contents (queued; ordered before the next submission).
    pub fn write_bytes(&self, gpu: &Gpu, bytes: &[u8]) {
        let mut padded;
        let data = if !bytes.len().is_multiple_of(4) {
            padded = bytes.to_vec();
            padded.resize(bytes.len().div_ceil(4) * 4, 0);
            &padded[..]
        } else {
            bytes
        };
        gpu.queue.write_buffer(&self.storage.buffer, self.offset, data);
    }

    pub fn write_f32(&self, gpu: &Gpu, data: &[f32]) -> Result<()> {
        if data.len() != self.len() {
            return Err(Error::Shape { op: "write", detail: format!("{:?} got {} values", self.shape, data.len()) });
        }
        self.write_bytes(gpu, &self.dtype.encode_f32(data));
        Ok(())
    }

    pub fn write_u32(&self, gpu: &Gpu, data: &[u32]) -> Result<()> {
        if data.len() != self.len() || self.dtype != DType::U32 {
            return Err(Error::Shape { op: "write", detail: format!("{:?} {} got {} u32 values", self.shape, self.dtype, data.len()) });
        }
        self.write_bytes(gpu, bytemuck::cast_slice(data));
        Ok(())
    }

    /// The same bytes under another shape with the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.len() {
            return Err(Error::Shape { op: "reshape", detail: format!("{:?} -> {shape:?}", self.shape) });
        }
        Ok(Tensor { shape: shape.to_vec(), ..self.clone() })
    }

    /// The same bytes read as another dtype (e.g. f16 data as packed u32 words for a kernel
    /// that converts it); `shape` must cover the same bytes, rounded up to whole words.
    pub fn bitcast(&self, dtype: DType, shape: &[usize]) -> Result<Tensor> {
        let bytes = ((numel(shape) * dtype.size()) as u64).div_ceil(4) * 4;
        if bytes != self.byte_len() {
            return Err(Error::Shape { op: "bitcast", detail: format!("{:?} {} as {shape:?} {dtype}", self.shape, self.dtype) });
        }
        Ok(Tensor { storage: self.storage.clone(), offset: self.offset, shape: shape.to_vec(), dtype })
    }

    /// A view of `shape` starting `elems` elements in. Bindings need the byte offset to be a
    /// multiple of the adapter's storage alignment; kernels that need finer offsets take them as
    /// parameters instead.
    pub fn view(&self, elems: usize, shape: &[usize]) -> Result<Tensor> {
        let start = self.offset + (elems * self.dtype.size()) as u64;
        if elems + numel(shape) > self.len() {
            return Err(Error::Shape { op: "view", detail: format!("{shape:?} at {elems} exceeds {:?}", self.shape) });
        }
        Ok(Tensor { storage: self.storage.clone(), offset: start, shape: shape.to_vec(), dtype: self.dtype })
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn len(&self) -> usize {
        numel(&self.shape)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn offset(&self) -> u64 {
        self.offset
    }
    /// Bytes covered by the view, rounded up to whole 4-byte words.
    pub fn byte_len(&self) -> u64 {
        ((self.len() * self.dtype.size()) as u64).div_ceil(4).max(1) * 4
    }
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.storage.buffer
    }
    /// Same underlying buffer (for aliasing checks).
    pub fn same_buffer(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }
}

/// A weight matrix [rows, cols] stored as row blocks, each small enough for one binding.
/// Kernels iterate over the parts (one dispatch each), so a 102400x2048 lm_head works on
/// adapters with 128 MiB bindings.
#[derive(Clone, Debug)]
pub struct RowSplit {
    pub rows: usize,
    pub cols: usize,
    pub dtype: DType,
    /// (first row, tensor [n, cols]) in row order.
    pub parts: Vec<(usize, Tensor)>,
}

impl RowSplit {
    /// Rows per part under the adapter's binding limit (a multiple of 64 when possible).
    pub fn rows_per_part(gpu: &Gpu, cols: usize, dtype: DType) -> Result<usize> {
        let row_bytes = (cols * dtype.size()) as u64;
        let fit = (gpu.caps.max_binding / row_bytes.max(1)) as usize;
        if fit == 0 {
            return Err(Error::BindingLimit { op: "split", what: format!("one row of {cols} {dtype}"), needed: row_bytes, limit: gpu.caps.max_binding });
        }
        Ok(if fit >= 64 { fit / 64 * 64 } else { fit })
    }

    /// Uploads host bytes in `dtype` layout, splitting as the limits require.
    pub fn from_bytes(gpu: &Gpu, rows: usize, cols: usize, dtype: DType, bytes: &[u8]) -> Result<RowSplit> {
        let per = RowSplit::rows_per_part(gpu, cols, dtype)?;
        RowSplit::from_bytes_parts(gpu, rows, cols, dtype, bytes, per)
    }

    /// As `from_bytes` with at most `rows_per_part` rows per part (tests force small parts to
    /// exercise the split paths); parts never exceed the binding limit.
    pub fn from_bytes_parts(gpu: &Gpu, rows: usize, cols: usize, dtype: DType, bytes: &[u8], rows_per_part: usize) -> Result<RowSplit> {
        let row_bytes = cols * dtype.size();
        if bytes.len() != rows * row_bytes {
            return Err(Error::Shape { op: "upload", detail: format!("[{rows}, {cols}] {dtype} needs {} bytes, got {}", rows * row_bytes, bytes.len()) });
        }
        if rows_per_part == 0 {
            return Err(Error::Shape { op: "upload", detail: "rows_per_part must be at least 1".into() });
        }
        let per = rows_per_part.min(RowSplit::rows_per_part(gpu, cols, dtype)?);
        let mut parts = Vec::new();
        let mut r0 = 0;
        while r0 < rows {
            let n = per.min(rows - r0);
            let t = Tensor::from_bytes(gpu, &[n, cols], dtype, &bytes[r0 * row_bytes..(r0 + n) * row_bytes])?;
            parts.push((r0, t));
            r0 += n;
        }
        Ok(RowSplit { rows, cols, dtype, parts })
    }

    pub fn from_f32(gpu: &Gpu, rows: usize, cols: usize, dtype: DType, data: &[f32]) -> Result<RowSplit> {
        RowSplit::from_bytes(gpu, rows, cols, dtype, &dtype.encode_f32(data))
    }

    /// A single-part split wrapping an existing [rows, cols] tensor.
    pub fn single(t: &Tensor) -> Result<RowSplit> {
        match t.shape() {
            &[rows, cols] => Ok(RowSplit { rows, cols, dtype: t.dtype(), parts: vec![(0, t.clone())] }),
            s => Err(Error::Shape { op: "split", detail: format!("expected a matrix, got {s:?}") }),
        }
    }
}
