//! `dsvl-gpu chat` over time and faults, on the tiny fixture model.
//!
//! A long chat: many turns, an image every third turn, a context small enough that it fills
//! again and again, plus what a person types by mistake (invalid UTF-8, a missing image). The
//! chat must answer every turn, drop the oldest turns when the context is full (chat.rs's policy)
//! rather than fail, keep going after each mistake, and its resident memory (which on lavapipe
//! includes GPU memory) must stay flat. The 200 turns take about 75 s in a debug build
//! on two shared cores (once the context is full every turn re-prefills it); `DSVL_CHAT_TURNS`
//! changes the count (measured at 200: VmRSS 138 MB after 10 turns and at most 138 MB over 200).
//!
//! A device lost in the middle of an answer: reported, the GPU opened again, and the same
//! message answered again with the same result.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const TURNS: usize = 200;
/// Tokens of context: a few turns with an image (16 tokens each) fit.
const CONTEXT: &str = "128";
/// Growth of VmRSS allowed from the end of warm-up to the last turn.
const RSS_SLACK_KB: u64 = 24 << 10;

fn vm_rss_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0)
}

#[test]
fn long_chat_keeps_answering_in_flat_memory() {
    let turns: usize = std::env::var("DSVL_CHAT_TURNS").ok().and_then(|v| v.parse().ok()).unwrap_or(TURNS);
    let image = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/dsvl/images/wide.png");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dsvl-gpu"))
        .args(["chat", "--model", "tests/fixtures/dsvl/tiny-orig", "--context", CONTEXT, "--max-new-tokens", "3", "--system", "Be brief."])
        .env("NODEVICE_SELECT", "1")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dsvl-gpu chat");
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    // Counts answers as they stream out.
    let (tx, answers) = mpsc::channel::<usize>();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut text, mut seen, mut buf) = (Vec::new(), 0, [0u8; 4096]);
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.extend_from_slice(&buf[..n]);
            let count = text.windows(10).filter(|w| w == b"Assistant:").count();
            if count > seen {
                seen = count;
                let _ = tx.send(seen);
            }
        }
        String::from_utf8_lossy(&text).into_owned()
    });
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let warm = 10.min(turns);
    let (mut rss_warm, mut rss_max) = (0, 0);
    for t in 0..turns {
        let mut input = Vec::new();
        match t {
            3 => input.extend_from_slice(b"\xff\xfe not UTF-8\n"),
            7 => input.extend_from_slice(b"/image /no/such/image.png\n"),
            _ => {}
        }
        if t % 3 == 0 {
            input.extend_from_slice(format!("/image {image}\n").as_bytes());
        }
        let text = if t % 5 == 4 { format!("猫は{t}匹？ ✓\n") } else { format!("Turn {t}: what is in the picture?\n") };
        input.extend_from_slice(text.as_bytes());
        stdin.write_all(&input).expect("chat took its input");
        loop {
            let n = answers.recv_timeout(Duration::from_secs(120)).unwrap_or_else(|_| panic!("no answer to turn {t}"));
            if n > t {
                break;
            }
        }
        let rss = vm_rss_kb(pid);
        if t + 1 == warm {
            rss_warm = rss;
        }
        rss_max = rss_max.max(rss);
    }
    drop(stdin); // end of input: the chat leaves
    let status = child.wait().unwrap();
    let out = reader.join().unwrap();
    let err = err_reader.join().unwrap();
    assert!(status.success() && !err.contains("panicked"), "exit {status}; stderr tail: {}", &err[err.len().saturating_sub(2000)..]);
    assert_eq!(out.matches("Assistant:").count(), turns, "every turn answered");
    let dropped = err.matches("(context full: dropped the oldest turn)").count();
    let errors: Vec<&str> = err.split("User: ").filter(|l| l.contains("error")).collect();
    eprintln!("{turns} turns: {dropped} oldest turns dropped; VmRSS {} MB after warm-up, max {} MB; errors: {errors:?}", rss_warm >> 10, rss_max >> 10);
    assert!(dropped > 0, "the context never filled");
    assert!(errors.len() == 2 && errors[0].contains("not valid UTF-8") && errors[1].contains("/no/such/image.png"), "{errors:?}");
    assert!(rss_max <= rss_warm + RSS_SLACK_KB, "VmRSS grew from {} MB to {} MB", rss_warm >> 10, rss_max >> 10);
}

/// Runs a chat on the tiny model with all of `input` at once; (exit ok, answers, stderr).
fn chat_once(input: &str, env: &[(&str, &str)]) -> (bool, Vec<String>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dsvl-gpu"));
    cmd.args(["chat", "--model", "tests/fixtures/dsvl/tiny-orig", "--max-new-tokens", "4", "--quant", "f32"]).env("NODEVICE_SELECT", "1").current_dir(env!("CARGO_MANIFEST_DIR"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn dsvl-gpu chat");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let answers = stdout.split("Assistant:").skip(1).map(|a| a.trim_end_matches('\n').to_string()).collect();
    (out.status.success(), answers, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn device_lost_mid_answer_is_reported_and_the_chat_goes_on() {
    let input = "hello\n/image tests/fixtures/dsvl/images/wide.png\nwhat is it?\nand now?\n";
    let (ok, want, _) = chat_once(input, &[]);
    assert!(ok && want.len() == 3, "{want:?}");
    // The device is destroyed at the first token of the second answer.
    let (ok, got, err) = chat_once(input, &[("DSVL_FAULT_DEVICE_LOST_AT_TURN", "2")]);
    assert!(ok && !err.contains("panicked"), "{err}");
    assert!(err.contains("error: GPU device lost") && err.contains("opening it again"), "{err}");
    // The interrupted answer, then the same message answered again on a new device, image and
    // all, then the next one: as if nothing had happened.
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!([&got[0], &got[2], &got[3]], [&want[0], &want[1], &want[2]]);
    // Lost again while answering again: that message is given up (its image stays attached),
    // and the chat goes on.
    let (ok, got, err) = chat_once(input, &[("DSVL_FAULT_DEVICE_LOST_AT_TURN", "2,3")]);
    assert!(ok && err.matches("error: GPU device lost").count() == 2 && err.contains("reloading the model)"), "{err}");
    assert_eq!(got.len(), 4, "{got:?}");
}

#[test]
fn a_message_too_long_for_the_context_is_refused_without_losing_the_chat() {
    let long = "word ".repeat(3000);
    let (ok, want, _) = chat_once("hello\nagain\n", &[]);
    assert!(ok && want.len() == 2, "{want:?}");
    let (ok, got, err) = chat_once(&format!("hello\n{long}\nagain\n"), &[]);
    assert!(ok && err.contains("does not fit the context") && !err.contains("context full"), "{err}");
    // "again" answered with "hello" and its answer still in the context: the same answer.
    assert_eq!(got, want);
}
