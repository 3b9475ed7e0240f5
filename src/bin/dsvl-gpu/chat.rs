//! `dsvl-gpu chat`: interactive multi-turn conversation on stdin. `/image PATH` attaches an
//! image to the next message, `/reset` starts over, `/quit` (or end of input) leaves. The KV
//! cache is kept between turns, so earlier turns are not prefilled again. When a turn would not
//! fit the context, the oldest turns are dropped (and the cache is rebuilt from the rest).

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use dsvl_gpu::generate::{GenerateOptions, Session};
use dsvl_gpu::prompt::{encode, Conversation, Role, DEFAULT_SYSTEM_PROMPT, STOP_STRING};
use dsvl_gpu::text::TextStream;
use dsvl_gpu::{Gpu, Tensor};

use crate::run::{load_image, load_model, sampling_of, Loaded, RunArgs};

pub fn chat(gpu: &Gpu, a: RunArgs) -> Result<()> {
    let Loaded { model, tok } = load_model(gpu, &a.model, &a.quant, false)?;
    let n_img = model.cfg.num_image_tokens;
    let capacity = a.context.min(model.cfg.llm.max_positions);
    let mut session = Session::new(&model, gpu, capacity)?;
    let system = a.system.clone().unwrap_or_else(|| DEFAULT_SYSTEM_PROMPT.to_string());
    let mut conv = Conversation::with_system(system.clone());
    // Pixels of every image in the conversation, in order; and per message, how many it has.
    let mut pixels: Vec<Tensor> = Vec::new();
    let mut pending: Vec<Tensor> = a.images.iter().map(|p| load_image(gpu, &model, p)).collect::<Result<_>>()?;
    let opts = GenerateOptions { sampling: sampling_of(&a)?, max_new_tokens: a.max_new_tokens, eos: Some(tok.eos_id()) };
    if a.max_new_tokens >= capacity {
        bail!("--max-new-tokens {} leaves no room for a prompt in the context of {capacity}", a.max_new_tokens);
    }
    eprintln!("chat: /image PATH attaches an image to your next message, /reset starts over, /quit leaves");
    let stdin = std::io::stdin();
    let mut line = Vec::new();
    loop {
        eprint!("User: ");
        line.clear();
        if stdin.lock().read_until(b'\n', &mut line).context("reading stdin")? == 0 {
            return Ok(());
        }
        let Ok(text) = std::str::from_utf8(&line) else {
            eprintln!("error: that line is not valid UTF-8; try again");
            continue;
        };
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        if text == "/quit" {
            return Ok(());
        }
        if text == "/reset" {
            conv = Conversation::with_system(system.clone());
            pixels.clear();
            pending.clear();
            continue;
        }
        if let Some(path) = text.strip_prefix("/image ") {
            match load_image(gpu, &model, &PathBuf::from(path.trim())) {
                Ok(t) => pending.push(t),
                Err(e) => eprintln!("error: {}", format!("{e:#}").replace('\n', " ")),
            }
            continue;
        }
        conv.user(text.to_string(), pending.len());
        pixels.append(&mut pending);
        // Drop the oldest turns (with their images) until the prompt and answer fit.
        let enc = loop {
            match encode(&tok, &conv, n_img) {
                Ok(enc) if enc.ids.len().saturating_add(a.max_new_tokens) <= capacity => break Ok(enc),
                Ok(_) if conv.messages.len() > 1 => {
                    let dropped: usize = conv.messages.drain(..2).map(|m| m.images).sum();
                    pixels.drain(..dropped);
                    eprintln!("(context full: dropped the oldest turn)");
                }
                Ok(enc) => break Err(anyhow::anyhow!("your message alone ({} tokens) does not fit the context of {capacity}", enc.ids.len())),
                Err(e) => break Err(e.into()),
            }
        };
        let enc = match enc {
            Ok(e) => e,
            Err(e) => {
                eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
                let m = conv.messages.pop().map_or(0, |m| m.images);
                pixels.truncate(pixels.len() - m);
                continue;
            }
        };
        print!("Assistant:");
        std::io::stdout().flush().ok();
        let mut stream = TextStream::new(&tok, &[STOP_STRING]);
        let mut answer = String::new();
        let mut failed = None;
        let result = pollster::block_on(session.respond(gpu, &enc.ids, tok.image_id(), &pixels, &opts, &mut |id| match stream.push(id) {
            Ok(c) => {
                answer.push_str(&c.text);
                print!("{}", c.text);
                std::io::stdout().flush().ok();
                !c.stopped
            }
            Err(e) => {
                failed = Some(e);
                false
            }
        }));
        if let Some(e) = failed {
            return Err(e.into());
        }
        result?;
        let tail = stream.finish()?;
        answer.push_str(&tail.text);
        println!("{}", tail.text);
        conv.assistant(answer.trim().to_string());
        debug_assert_eq!(conv.messages.last().map(|m| m.role), Some(Role::Assistant));
    }
}
