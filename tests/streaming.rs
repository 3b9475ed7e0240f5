//! Loading from headers + a range fetcher (the browser's path, src/web/fetch.rs): the same model
//! as from a memory map, bit for bit, with matrices read in parts no larger than the fetcher
//! asks; fetch failures and short reads are errors naming the file.

mod common;

use std::cell::RefCell;
use std::ops::Range;
use std::path::Path;
use std::rc::Rc;

use dsvl_gpu::error::Error;
use dsvl_gpu::gpu::DType;
use dsvl_gpu::model::config::ModelConfig;
use dsvl_gpu::model::llama::LogitRows;
use dsvl_gpu::model::safetensors::{parse_head, FetchFuture, RangeFetch, TensorSource};
use dsvl_gpu::model::vlm::Model;
use dsvl_gpu::model::weights::load_weights;

/// Serves ranges of one in-memory file, recording every read.
struct Fetcher {
    bytes: Vec<u8>,
    max: usize,
    reads: RefCell<Vec<Range<usize>>>,
    /// Fail reads from this offset on, or cut them short by one byte.
    fail_from: Option<usize>,
    short: bool,
}

/// The source owns its fetcher; the test keeps a second handle to read the log.
struct Shared(Rc<Fetcher>);

impl RangeFetch for Shared {
    fn fetch<'a>(&'a self, file: &'a str, range: Range<usize>) -> FetchFuture<'a> {
        let f = &self.0;
        Box::pin(async move {
            f.reads.borrow_mut().push(range.clone());
            if f.fail_from.is_some_and(|at| range.end > at) {
                return Err(Error::Io { path: file.to_string(), message: "connection reset".into() });
            }
            let end = if f.short { range.end - 1 } else { range.end };
            Ok(f.bytes[range.start..end].to_vec())
        })
    }
    fn max_read(&self) -> usize {
        self.0.max
    }
}

fn fixture() -> (ModelConfig, Vec<u8>, std::path::PathBuf) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dsvl/tiny-orig");
    let read = |f: &str| std::fs::read(dir.join(f)).ok();
    let cfg = ModelConfig::from_dir_files(&read("config.json").unwrap(), read("preprocessor_config.json").as_deref(), read("processor_config.json").as_deref()).unwrap();
    (cfg, read("model.safetensors").unwrap(), dir)
}

fn streamed(bytes: &[u8], max: usize, fail_from: Option<usize>, short: bool) -> (TensorSource, Rc<Fetcher>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = parse_head("model.safetensors", &bytes[..8 + n], bytes.len()).unwrap();
    let f = Rc::new(Fetcher { bytes: bytes.to_vec(), max, reads: RefCell::default(), fail_from, short });
    (TensorSource::from_headers(vec![header], Box::new(Shared(f.clone()))).unwrap(), f)
}

#[test]
fn streamed_load_equals_mapped_load() {
    let gpu = common::gpu();
    let (cfg, bytes, dir) = fixture();
    let ids: Vec<u32> = {
        let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("cases.json")).unwrap()).unwrap();
        let case = meta["cases"].as_array().unwrap().iter().find(|c| c["name"] == "text_only").unwrap().clone();
        case["input_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
    };
    let logits = |src: &TensorSource| {
        let w = pollster::block_on(load_weights(gpu, &cfg, src, DType::F32, DType::F32, &mut |_, _| {})).unwrap();
        let model = Model::new(gpu, cfg.clone(), w, DType::F32).unwrap();
        pollster::block_on(model.prefill_logits(gpu, &ids, u32::MAX, &[], LogitRows::Last)).unwrap()
    };
    let mapped = logits(&TensorSource::open_dir(&dir).unwrap());
    let max = 4096;
    let (src, f) = streamed(&bytes, max, None, false);
    assert_eq!(logits(&src), mapped, "streamed weights give other logits");
    let reads = f.reads.borrow();
    let biggest = reads.iter().map(|r| r.len()).max().unwrap();
    assert!(biggest <= max, "a read of {biggest} bytes exceeds max_read {max}");
    assert!(reads.len() > 100, "{} reads: matrices were not read in parts", reads.len());
    assert!(src.get("language_model.model.norm.weight").is_none(), "get() must not hand out bytes of a streamed file");
}

/// Quantising at load from a fetched checkpoint (the browser's path): row chunks no larger than
/// the fetcher's `max_read` are quantised on the GPU, and the model is the one quantised from
/// the memory map on the CPU, to the last logit.
#[test]
fn streamed_quantised_load_equals_mapped_cpu_load() {
    use dsvl_gpu::model::weights::{load_weights_opts, LoadOptions};
    use dsvl_gpu::quant::{QuantOn, Recipe};
    let gpu = common::gpu();
    let (cfg, bytes, dir) = fixture();
    let recipe = Recipe::parse("q4,lm_head=q8").unwrap();
    let logits = |src: &TensorSource, on| {
        let w = pollster::block_on(load_weights_opts(gpu, &cfg, src, &recipe, DType::F32, &LoadOptions { quantise_on: on }, &mut |_| {})).unwrap();
        let model = Model::new(gpu, cfg.clone(), w, DType::F32).unwrap();
        pollster::block_on(model.prefill_logits(gpu, &[1, 5, 9, 200, 3], u32::MAX, &[], LogitRows::Last)).unwrap()
    };
    let mapped = logits(&TensorSource::open_dir(&dir).unwrap(), QuantOn::Cpu);
    // 10 KiB: a few rows of each matrix per read (the embedding [1024, 256] f16 is 512 KiB).
    let max = 10 << 10;
    let (src, f) = streamed(&bytes, max, None, false);
    assert_eq!(logits(&src, QuantOn::Gpu), mapped, "streamed, GPU-quantised weights give other logits");
    let reads = f.reads.borrow();
    let biggest = reads.iter().map(|r| r.len()).max().unwrap();
    assert!(biggest <= max, "a read of {biggest} bytes exceeds max_read {max}");
    assert!(reads.len() > 150, "{} reads: matrices were not read in parts", reads.len());
}

#[test]
fn fetch_failures_are_errors() {
    let gpu = common::gpu();
    let (cfg, bytes, _) = fixture();
    let (src, _) = streamed(&bytes, 1 << 20, Some(bytes.len() / 2), false);
    let e = pollster::block_on(load_weights(gpu, &cfg, &src, DType::F32, DType::F32, &mut |_, _| {})).err().unwrap().to_string();
    assert!(e.contains("model.safetensors") && e.contains("connection reset"), "{e}");
    let (src, _) = streamed(&bytes, 1 << 20, None, true);
    let e = pollster::block_on(load_weights(gpu, &cfg, &src, DType::F32, DType::F32, &mut |_, _| {})).err().unwrap().to_string();
    assert!(e.contains("fetched") && e.contains("bytes"), "{e}");
    // A head that stops inside the header.
    let e = parse_head("m.safetensors", &bytes[..100], bytes.len()).err().unwrap().to_string();
    assert!(e.contains("only 100 of the file's first bytes"), "{e}");
}
