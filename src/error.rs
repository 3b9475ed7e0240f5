//! Typed errors of the library. Every variant carries the values a user needs to act on it.

/// Errors returned by dsvl-gpu.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no GPU adapter found ({0}); install a Vulkan driver (e.g. mesa-vulkan-drivers) or use a browser with WebGPU")]
    NoAdapter(String),
    #[error("no GPU adapter matches `{wanted}`; available: {available}")]
    AdapterNotFound { wanted: String, available: String },
    #[error("could not open the GPU device on {adapter}: {message}")]
    RequestDevice { adapter: String, message: String },
    #[error("kernel {kernel}: {message}")]
    Kernel { kernel: String, message: String },
    #[error("{op}: shape mismatch: {detail}")]
    Shape { op: &'static str, detail: String },
    #[error("{op}: dtype {dtype} is not supported here ({detail})")]
    DType { op: &'static str, dtype: String, detail: String },
    #[error("{op}: {what} needs {needed} bytes in one binding, the adapter allows {limit}")]
    BindingLimit { op: &'static str, what: String, needed: u64, limit: u64 },
    #[error("{what}: buffer of {needed} bytes exceeds the adapter's max_buffer_size {limit}")]
    BufferLimit { what: String, needed: u64, limit: u64 },
    #[error("{op}: needs adapter feature {feature}")]
    MissingFeature { op: &'static str, feature: &'static str },
    #[error("GPU out of memory during {context}")]
    OutOfMemory { context: String },
    #[error("GPU validation error during {context}: {message}")]
    Validation { context: String, message: String },
    #[error("GPU internal error during {context}: {message}")]
    Internal { context: String, message: String },
    #[error("GPU read-back failed: {0}")]
    Readback(String),
    #[error("GPU device lost: {0}")]
    DeviceLost(String),
    #[error("shader {shader}: {message}")]
    Shader { shader: String, message: String },
    #[error("tokenizer {what}: {message}")]
    Tokenizer { what: String, message: String },
    #[error("prompt: {0}")]
    Prompt(String),
    #[error("image ({what}): {detail}")]
    Image { what: &'static str, detail: String },
    #[error("image of {width}x{height} pixels exceeds the limit of {limit} pixels")]
    ImageTooLarge { width: u64, height: u64, limit: u64 },
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("{file}: config key `{key}`: {message}")]
    Config { file: String, key: String, message: String },
    #[error("{file}: {message}")]
    Safetensors { file: String, message: String },
    #[error("{file}: tensor `{tensor}`: {message}")]
    Weight { file: String, tensor: String, message: String },
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("cannot reach {endpoint} to download {id}; pass a local folder or set HF_ENDPOINT")]
    HubOffline { endpoint: String, id: String },
    #[error("hub model {id}: {message}")]
    Hub { id: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Turns a wgpu error caught by an error scope into ours, naming what was being done.
    pub(crate) fn from_wgpu(context: &str, e: wgpu::Error) -> Self {
        let context = context.to_string();
        match e {
            wgpu::Error::OutOfMemory { .. } => Error::OutOfMemory { context },
            wgpu::Error::Validation { description, .. } => Error::Validation { context, message: one_line(&description) },
            wgpu::Error::Internal { description, .. } => Error::Internal { context, message: one_line(&description) },
        }
    }
}

/// wgpu descriptions span several lines; errors here are one line each.
pub(crate) fn one_line(s: &str) -> String {
    s.split('\n').map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" | ")
}
