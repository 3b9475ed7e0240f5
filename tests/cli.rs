//! The command line, end to end: `dsvl-gpu run` on a committed fixture model (image decoding,
//! GPU preprocessing, the model, sampling) against HF transformers' numbers for the same prompt
//! and image; and bad inputs giving one line on stderr and a non-zero exit, never a panic.

#[path = "common/npy.rs"]
mod npy;

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn dsvl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dsvl-gpu")).args(args).env("NODEVICE_SELECT", "1").current_dir(root()).output().expect("run dsvl-gpu")
}

#[test]
fn run_matches_hf_from_the_image_file() {
    run_matches_hf("tests/fixtures/dsvl/tiny-orig");
}

/// The 7B hybrid encoder: processing at the high resolution, the low-res copy resized on the GPU.
#[test]
fn run_hybrid_matches_hf_from_the_image_file() {
    run_matches_hf("tests/fixtures/dsvl/tiny-hybrid-orig");
}

fn run_matches_hf(fx: &str) {
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(root().join(fx).join("cases.json")).unwrap()).unwrap();
    let case = meta["cases"].as_array().unwrap().iter().find(|c| c["name"] == "one_image").unwrap();
    let dump = std::env::temp_dir().join(format!("dsvl-cli-logits-{}.npy", std::process::id()));
    let out = dsvl(&[
        "run", "--model", fx, "--image", "tests/fixtures/dsvl/images/wide.png", "--prompt", "Describe this image.",
        "--quant", "f32", "--max-new-tokens", "8", "--json", "--dump-logits", dump.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");
    assert_eq!(v["prompt_tokens"].as_u64().unwrap() as usize, case["input_ids"].as_array().unwrap().len());
    // Logits from the image file (our decoder + preprocessing) vs HF on PIL's pixels.
    let got = npy::Npy::read(&dump).unwrap();
    assert_eq!(got.shape, vec![meta["vocab_size"].as_u64().unwrap() as usize]);
    let got = got.f32().unwrap();
    let want = npy::Npy::read(root().join(fx).join(case["logits_last"].as_str().unwrap())).unwrap().f32().unwrap();
    let num: f64 = got.iter().zip(&want).map(|(&g, &w)| (g as f64 - w as f64).powi(2)).sum();
    let den: f64 = want.iter().map(|&w| (w as f64).powi(2)).sum();
    let err = (num / den).sqrt();
    assert!(err <= 1e-3, "logits rel L2 {err:.3e}");
    let ids: Vec<u64> = v["token_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    let want_ids: Vec<u64> = case["greedy_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    assert_eq!(ids, want_ids, "greedy ids");
    for key in ["load_s", "preprocess_s", "first_token_s", "decode_tok_s"] {
        assert!(v["timings"][key].as_f64().is_some(), "timings.{key} missing: {v}");
    }
    std::fs::remove_file(dump).ok();
}

#[test]
fn bad_inputs_are_one_line_errors() {
    let fx = "tests/fixtures/dsvl/tiny-orig";
    let bad_image = std::env::temp_dir().join(format!("dsvl-cli-bad-{}.png", std::process::id()));
    std::fs::write(&bad_image, b"not an image").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["run", "--model", "/no/such/model", "--prompt", "hi"], "neither a folder nor a hub id"),
        (vec!["run", "--model", fx, "--prompt", "hi", "--image", "/no/such.png"], "reading image"),
        (vec!["run", "--model", fx, "--prompt", "hi", "--image", bad_image.to_str().unwrap()], "unrecognised format"),
        (vec!["run", "--model", fx, "--prompt", "<image_placeholder> what"], "placeholder"),
        (vec!["run", "--model", fx, "--prompt", "hi", "--max-new-tokens", "100000"], "exceeds the context"),
        (vec!["run", "--model", fx, "--prompt", "hi", "--quant", "q3"], "--quant"),
        (vec!["run", "--model", fx, "--prompt", "hi", "--top-p", "1.5"], "--top-p"),
        (vec!["run", "--model", fx, "--prompt", "hi", "--top-k", "100000"], "top"),
        (vec!["run", "--model", fx], "--prompt is required"),
        (vec!["run", "--model", "tests/fixtures/dsvl/images", "--prompt", "hi"], "config.json"),
    ];
    for (args, needle) in cases {
        let out = dsvl(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.trim_end().rsplit(['\n', '\r']).next().unwrap_or("");
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
        assert!(last.starts_with("error: ") && last.contains(needle), "{args:?}: last stderr line {last:?} lacks {needle:?}");
    }
    std::fs::remove_file(bad_image).ok();
    // A hub id with the hub unreachable (nothing listens on port 9) and nothing cached.
    let cache = std::env::temp_dir().join(format!("dsvl-cli-cache-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_dsvl-gpu"))
        .args(["run", "--model", "someone/some-model", "--prompt", "hi"])
        .env("NODEVICE_SELECT", "1")
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env("HF_HUB_CACHE", &cache)
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("cannot reach http://127.0.0.1:9 to download someone/some-model"), "{err}");
    std::fs::remove_dir_all(cache).ok();
}

#[test]
fn selftest_passes_on_this_adapter() {
    let out = dsvl(&["selftest"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.lines().any(|l| l.starts_with("all ") && l.contains("checks passed")), "{stdout}");
    assert!(stdout.contains("ok   model multi_turn (weights f32"), "{stdout}");
}

/// `quantize` writes a folder that `run` loads in the formats written (whatever `--quant` says),
/// `--json` reports the weights' GPU bytes, and `quant-report` holds a recipe to its bound.
#[test]
fn quantize_then_run_and_report() {
    let fx = "tests/fixtures/dsvl/tiny-orig";
    let out_dir = std::env::temp_dir().join(format!("dsvl-cli-q4-{}", std::process::id()));
    let out = dsvl(&["quantize", "--model", fx, "--quant", "q4", "--out", out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // An adapter is there (the tests need one): the GPU quantises, and says so.
    assert!(String::from_utf8_lossy(&out.stdout).contains("quantised on the GPU"), "{}", String::from_utf8_lossy(&out.stdout));
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        assert!(out_dir.join(f).is_file(), "{f} missing from the quantised folder");
    }
    let run = |model: &str, quant: &str| {
        let out = dsvl(&["run", "--model", model, "--prompt", "hi", "--max-new-tokens", "2", "--json", "--quant", quant]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("one JSON object")
    };
    let v = run(out_dir.to_str().unwrap(), "f16");
    assert_eq!(v["weight_formats"], "q4g32z", "{v}");
    let (bytes, params) = (v["weight_bytes"].as_f64().unwrap(), v["weight_params"].as_f64().unwrap());
    assert!(bytes <= 0.65 * params && bytes >= 0.5 * params, "q4: {bytes} bytes for {params} params");
    let f16 = run(fx, "f16");
    assert!((f16["weight_bytes"].as_f64().unwrap() / params - 2.0).abs() < 0.02, "{f16}");
    std::fs::remove_dir_all(&out_dir).ok();

    let out = dsvl(&["quant-report", "--model", fx, "--recipes", "q8", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(rows.len() >= 4, "one row per case: {rows:?}");
    assert!(rows.iter().all(|r| r["ok"] == true && r["cosine"].as_f64().unwrap() >= 0.999), "{rows:?}");
}

/// `--quant q4` on a dense checkpoint quantises on the GPU (the loading line and `--json` say so),
/// or on the CPU under DSVL_CPU_QUANT=1, to the same answer; dense formats quantise nothing.
#[test]
fn quantised_at_load_on_the_gpu_unless_told() {
    let fx = "tests/fixtures/dsvl/tiny-orig";
    let run = |quant: &str, cpu: bool, json: bool| {
        let mut args = vec!["run", "--model", fx, "--prompt", "hi", "--max-new-tokens", "3", "--quant", quant];
        if json {
            args.push("--json");
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dsvl-gpu"));
        cmd.args(&args).env("NODEVICE_SELECT", "1").env_remove("DSVL_CPU_QUANT").current_dir(root());
        if cpu {
            cmd.env("DSVL_CPU_QUANT", "1");
        }
        let out = cmd.output().expect("run dsvl-gpu");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out
    };
    let json = |quant: &str, cpu: bool| serde_json::from_slice::<serde_json::Value>(&run(quant, cpu, true).stdout).expect("one JSON object");
    let (gpu, cpu) = (json("q4", false), json("q4", true));
    assert_eq!((gpu["quantised_on"].as_str(), cpu["quantised_on"].as_str()), (Some("gpu"), Some("cpu")));
    assert_eq!(gpu["token_ids"], cpu["token_ids"]);
    assert!(json("f16", false)["quantised_on"].is_null());
    let err = String::from_utf8_lossy(&run("q8", false, false).stderr).to_string();
    assert!(err.contains("quantised 27 of 27 tensors on the GPU"), "{err}");
}
