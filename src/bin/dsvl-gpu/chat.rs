//! `dsvl-gpu chat`: interactive multi-turn conversation on stdin. `/image PATH` attaches an
//! image to the next message, `/reset` starts over, `/quit` (or end of input) leaves. The KV
//! cache is kept between turns, so earlier turns are not prefilled again. When a turn would not
//! fit the context, the oldest turns are dropped until the prompt and answer take at most half
//! of it (and the cache is rebuilt from the rest), so the following turns reuse the cache.
//!
//! A failed turn is reported and taken back (its images stay attached for the next message);
//! the conversation goes on. When the GPU device is lost, the GPU is opened again, the model
//! reloaded and the message answered again; the conversation continues where it was (images are
//! kept by path and preprocessed again). A message that loses the device a second time is given
//! up. To test this, `DSVL_FAULT_DEVICE_LOST_AT_TURN=N[,M...]` destroys the device during those
//! answers (counted from 1, answers given again included).

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use dsvl_gpu::generate::{GenerateOptions, Session};
use dsvl_gpu::prompt::{encode, Conversation, Role, DEFAULT_SYSTEM_PROMPT, STOP_STRING};
use dsvl_gpu::text::TextStream;
use dsvl_gpu::{Gpu, Tensor};

use crate::run::{load_image, load_model, sampling_of, Loaded, RunArgs};

/// What outlives a device: the conversation and its images, by path, in order.
struct State {
    conv: Conversation,
    images: Vec<PathBuf>,
    pending: Vec<PathBuf>,
}

fn report(e: &anyhow::Error) {
    eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
}

pub fn chat(open: &dyn Fn() -> Result<Gpu>, a: RunArgs) -> Result<()> {
    let system = a.system.clone().unwrap_or_else(|| DEFAULT_SYSTEM_PROMPT.to_string());
    let mut st = State { conv: Conversation::with_system(system.clone()), images: Vec::new(), pending: a.images.clone() };
    let lose_at: Vec<usize> = std::env::var("DSVL_FAULT_DEVICE_LOST_AT_TURN").unwrap_or_default().split(',').filter_map(|v| v.trim().parse().ok()).collect();
    let mut turn = 0;
    let stdin = std::io::stdin();
    let mut banner = true;
    // The message being answered when the device was lost: answered again on the new device.
    let mut retry: Option<String> = None;
    // One pass per device: it ends when the input ends or the device is lost.
    loop {
        let gpu = open()?;
        let Loaded { model, tok, .. } = load_model(&gpu, &a.model, &a.quant, !banner)?;
        let n_img = model.cfg.num_image_tokens;
        let capacity = a.context.min(model.cfg.llm.max_positions);
        let mut session = Session::new(&model, &gpu, capacity)?;
        let opts = GenerateOptions { sampling: sampling_of(&a)?, max_new_tokens: a.max_new_tokens, eos: Some(tok.eos_id()) };
        if a.max_new_tokens >= capacity {
            bail!("--max-new-tokens {} leaves no room for a prompt in the context of {capacity}", a.max_new_tokens);
        }
        let preprocess = |paths: &[PathBuf]| paths.iter().map(|p| load_image(&gpu, &model, p)).collect::<Result<Vec<Tensor>>>();
        let mut pixels = preprocess(&st.images)?;
        let mut pending = preprocess(&st.pending)?;
        if banner {
            eprintln!("chat: /image PATH attaches an image to your next message, /reset starts over, /quit leaves");
            banner = false;
        }
        let mut line = Vec::new();
        loop {
            let is_retry = retry.is_some();
            let owned = match retry.take() {
                Some(t) => t,
                None => {
                    eprint!("User: ");
                    line.clear();
                    if stdin.lock().read_until(b'\n', &mut line).context("reading stdin")? == 0 {
                        return Ok(());
                    }
                    let Ok(text) = std::str::from_utf8(&line) else {
                        eprintln!("error: that line is not valid UTF-8; try again");
                        continue;
                    };
                    text.to_string()
                }
            };
            let text = owned.trim();
            if text.is_empty() {
                continue;
            }
            if text == "/quit" {
                return Ok(());
            }
            if text == "/reset" {
                st = State { conv: Conversation::with_system(system.clone()), images: Vec::new(), pending: Vec::new() };
                pixels.clear();
                pending.clear();
                continue;
            }
            if let Some(path) = text.strip_prefix("/image ") {
                let path = PathBuf::from(path.trim());
                match load_image(&gpu, &model, &path) {
                    Ok(t) => {
                        pending.push(t);
                        st.pending.push(path);
                    }
                    Err(e) => report(&e),
                }
                continue;
            }
            st.conv.user(text.to_string(), st.pending.len());
            pixels.append(&mut pending);
            st.images.append(&mut st.pending);
            // A message that cannot fit even alone is refused before any history is dropped;
            // otherwise the oldest turns (with their images) go until the prompt and answer fit.
            let too_long = |n: usize| anyhow::anyhow!("your message alone ({n} tokens) does not fit the context of {capacity}");
            let alone = Conversation { system: st.conv.system.clone(), messages: st.conv.messages[st.conv.messages.len() - 1..].to_vec() };
            // Once turns must go, enough go to bring the prompt and answer down to half the
            // context (or to what this message needs alone), so the next turns reuse the cache
            // instead of re-prefilling a full context every time.
            let mut limit = capacity;
            let enc = match encode(&tok, &alone, n_img) {
                Err(e) => Err(e.into()),
                Ok(e) if e.ids.len().saturating_add(a.max_new_tokens) > capacity => Err(too_long(e.ids.len())),
                Ok(alone) => loop {
                    match encode(&tok, &st.conv, n_img) {
                        Ok(enc) if enc.ids.len().saturating_add(a.max_new_tokens) <= limit => break Ok(enc),
                        Ok(_) if st.conv.messages.len() > 1 => {
                            let dropped: usize = st.conv.messages.drain(..2).map(|m| m.images).sum();
                            pixels.drain(..dropped);
                            st.images.drain(..dropped);
                            limit = (capacity / 2).max(alone.ids.len() + a.max_new_tokens);
                            eprintln!("(context full: dropped the oldest turn)");
                        }
                        Ok(enc) => break Err(too_long(enc.ids.len())),
                        Err(e) => break Err(e.into()),
                    }
                },
            };
            let enc = match enc {
                Ok(e) => e,
                Err(e) => {
                    report(&e);
                    take_back(&mut st, &mut pixels, &mut pending);
                    continue;
                }
            };
            turn += 1;
            print!("Assistant:");
            std::io::stdout().flush().ok();
            let mut stream = TextStream::new(&tok, &[STOP_STRING]);
            let mut answer = String::new();
            let mut failed = None;
            let result = pollster::block_on(session.respond(&gpu, &enc.ids, tok.image_id(), &pixels, &opts, &mut |id| {
                if lose_at.contains(&turn) && answer.is_empty() {
                    gpu.device.destroy();
                }
                match stream.push(id) {
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
                }
            }));
            let tail = match (failed, result) {
                (Some(e), _) | (None, Err(e)) => Err(e),
                (None, Ok(_)) => stream.finish().map(|c| c.text),
            };
            match tail {
                Ok(tail) => {
                    answer.push_str(&tail);
                    println!("{tail}");
                    st.conv.assistant(answer.trim().to_string());
                    debug_assert_eq!(st.conv.messages.last().map(|m| m.role), Some(Role::Assistant));
                }
                Err(e) => {
                    println!();
                    report(&e.into());
                    take_back(&mut st, &mut pixels, &mut pending);
                    if let Some(why) = gpu.lost() {
                        // Answered again once; a message that loses the device twice is dropped.
                        let again = if is_retry { "" } else { " and answering again" };
                        eprintln!("(the GPU device was lost ({why}); opening it again, reloading the model{again})");
                        retry = (!is_retry).then(|| text.to_string());
                        break;
                    }
                }
            }
        }
    }
}

/// Undoes the last user message: its images go back to the pending ones for the next message.
fn take_back(st: &mut State, pixels: &mut Vec<Tensor>, pending: &mut Vec<Tensor>) {
    let n = st.conv.messages.pop().map_or(0, |m| m.images);
    let keep = st.images.len() - n;
    let mut back = st.images.split_off(keep);
    back.append(&mut st.pending);
    st.pending = back;
    let mut back = pixels.split_off(keep);
    back.append(pending);
    *pending = back;
}
