//! The `dsvl-gpu` command line.

mod bench;
mod chat;
mod pipeline_stats;
mod quant;
mod run;
mod selftest;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use dsvl_gpu::{Gpu, GpuOptions};

#[derive(Parser)]
#[command(name = "dsvl-gpu", version, about = "DeepSeek-VL on any GPU through WebGPU")]
struct Cli {
    /// Adapter by index (see `info`) or name substring; default: high-performance (env DSVL_ADAPTER).
    #[arg(long, global = true)]
    adapter: Option<String>,
    /// Cap the storage binding size in bytes (exercises the split paths; env DSVL_MAX_BINDING).
    #[arg(long, global = true)]
    max_binding: Option<u64>,
    /// Use f32 kernels even where the adapter has SHADER_F16 (env DSVL_NO_F16).
    #[arg(long, global = true)]
    no_f16: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Ask about images with a model folder; the answer streams to stdout.
    Run(run::RunArgs),
    /// Interactive multi-turn chat on stdin; `/image PATH` attaches an image to the next message.
    Chat(run::RunArgs),
    /// Quantise a model folder ahead of time into a folder that loads directly (int8/int4, docs/QUANT.md).
    Quantize(quant::QuantizeArgs),
    /// Next-token logits of each quantisation recipe against the f32 path, and the weights' GPU bytes.
    QuantReport(quant::ReportArgs),
    /// List adapters and print the chosen one's backend, features and limits.
    Info,
    /// Check this GPU: every kernel check, then a built-in small model against HF's logits.
    Selftest,
    /// Run every kernel check on this GPU against CPU f64 references.
    SelftestKernels {
        /// Only checks whose name contains this.
        filter: Option<String>,
    },
    /// Measure the model end to end: vision, prefill, time to first token, decode tok/s, GPU memory.
    Bench(bench::BenchArgs),
    /// Measure kernel throughput at DeepSeek-VL-1.3B shapes (GFLOP/s, GB/s).
    BenchOps {
        /// One repetition per op (for software adapters).
        #[arg(long)]
        quick: bool,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        /// Only op families whose name contains this (GEMM, GEMV, QGEMV, QGEMM, quantise, memory, attention).
        #[arg(long)]
        only: Option<String>,
    },
    /// What the Vulkan driver reports for each kernel variant (registers, shared memory, spills),
    /// compiled as wgpu compiles it; needs VK_KHR_pipeline_executable_properties.
    PipelineStats {
        /// Only variants whose name contains this.
        filter: Option<String>,
    },
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version print as clap formats them; a bad argument is one line, like every
        // other error (clap's own message spans several).
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let msg = e.to_string();
            let first = msg.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid arguments").trim();
            eprintln!("{} (see --help)", first);
            std::process::exit(2);
        }
    };
    let mut opts = GpuOptions::from_env();
    if cli.adapter.is_some() {
        opts.adapter = cli.adapter.clone();
    }
    if cli.max_binding.is_some() {
        opts.max_binding = cli.max_binding;
    }
    opts.disable_f16 |= cli.no_f16;
    let open = || pollster::block_on(Gpu::new(&opts)).context("opening the GPU");
    match cli.cmd {
        Cmd::Run(args) => run::run(&open()?, args)?,
        Cmd::Chat(args) => chat::chat(&open, args)?,
        Cmd::Bench(args) => bench::bench(&open()?, args)?,
        Cmd::Selftest => selftest::selftest(&open()?)?,
        Cmd::Quantize(args) => {
            // Without an adapter the CPU quantises (the same codes), saying why.
            let gpu = open().map_err(|e| eprintln!("note: {e:#}; quantising on the CPU")).ok();
            quant::quantize(gpu.as_ref(), args)?
        }
        Cmd::QuantReport(args) => quant::report(&open()?, args)?,
        Cmd::Info => {
            let all = pollster::block_on(Gpu::list_adapters());
            println!("adapters:");
            for (i, a) in all.iter().enumerate() {
                println!("  [{i}] {a}");
            }
            print!("{}", open()?.describe());
        }
        Cmd::PipelineStats { filter } => pipeline_stats::pipeline_stats(filter.as_deref())?,
        Cmd::SelftestKernels { filter } => {
            let gpu = open()?;
            println!("adapter: {}", gpu.adapter);
            let (mut ran, mut failed) = (0, 0);
            for (name, f) in dsvl_gpu::check::all() {
                if filter.as_deref().is_some_and(|s| !name.contains(s)) {
                    continue;
                }
                ran += 1;
                match pollster::block_on(f(&gpu)) {
                    Ok(s) => println!("ok   {name}: {s}"),
                    Err(e) => {
                        failed += 1;
                        println!("FAIL {name}: {e}");
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} of {ran} kernel checks failed on {}", gpu.adapter.name);
            }
            println!("all {ran} kernel checks passed");
        }
        Cmd::BenchOps { quick, json, only } => {
            let gpu = open()?;
            let rows = pollster::block_on(dsvl_gpu::bench::bench_ops(&gpu, quick, only.as_deref()))?;
            if json {
                for r in &rows {
                    println!("{{\"op\":\"{}\",\"ms\":{:.4},\"gflops\":{:.1},\"gbs\":{:.1},\"spread\":{:.3}}}", r.name, r.ms, r.gflops, r.gbs, r.spread);
                }
            } else {
                println!("adapter: {}", gpu.adapter);
                println!("| op | ms (median) | GFLOP/s | GB/s | spread |\n|---|---|---|---|---|");
                for r in &rows {
                    let flops = if r.gflops > 0.0 { format!("{:.0}", r.gflops) } else { "-".into() };
                    println!("| {} | {:.3} | {flops} | {:.0} | {:.0}% |", r.name, r.ms, r.gbs, r.spread * 100.0);
                }
            }
        }
    }
    Ok(())
}
