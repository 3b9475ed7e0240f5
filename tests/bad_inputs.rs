//! A corpus of hostile and odd inputs run through the `dsvl-gpu` binary: broken checkpoints,
//! configs and tokenizers (made at test time from the tiny fixture, in a temp folder), bad and
//! odd images, prompts that do not fit, GPU limits and missing adapters.
//!
//! Each bad input must exit 1 with exactly one stderr line, `error: ...` naming the file, key,
//! tensor or value at fault, and no panic text. Each odd-but-valid input (1x1, 1x100000,
//! 100000x1, CMYK, animated, EXIF-rotated, an empty prompt) must answer. Every run's peak RSS,
//! taken with wait4, must stay under `RSS_BOUND`. Prints `bad_inputs: tried N, handled N`.

#[path = "common/corpus.rs"]
mod corpus;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use corpus::{Case, Expect};

/// Peak resident memory allowed for one CLI run. Opening lavapipe alone takes about 90 MB and
/// answering with the tiny model about 150 MB; a decompression bomb that was decoded would take
/// gigabytes.
const RSS_BOUND_KB: u64 = 256 << 10;

/// A run that takes longer than this is a hang (a FIFO read, a runaway loop).
const TIMEOUT: Duration = Duration::from_secs(60);

struct Outcome {
    code: i32,
    signaled: bool,
    stdout: String,
    stderr: String,
    max_rss_kb: u64,
    secs: f64,
}

/// Runs the binary and waits for it with wait4, which also reports its peak RSS.
#[allow(clippy::zombie_processes)] // reaped by wait4, not Child::wait
fn run(case: &Case) -> Outcome {
    let t0 = Instant::now();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dsvl-gpu"));
    cmd.args(&case.args).env("NODEVICE_SELECT", "1").env("RUST_BACKTRACE", "0").current_dir(env!("CARGO_MANIFEST_DIR"));
    for (k, v) in &case.env {
        cmd.env(k, v);
    }
    cmd.stdin(if case.stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn dsvl-gpu");
    if let (Some(input), Some(mut pipe)) = (case.stdin.clone(), child.stdin.take()) {
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; the pid is our own child, reaped here and nowhere else.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            break;
        }
        assert!(r == 0, "wait4 failed: {}", std::io::Error::last_os_error());
        if t0.elapsed() > TIMEOUT {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Outcome {
        code: if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 },
        signaled: libc::WIFSIGNALED(status),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        max_rss_kb: ru.ru_maxrss as u64, // kilobytes on Linux
        secs: t0.elapsed().as_secs_f64(),
    }
}

/// Why `o` does not meet `case`'s expectation, if it does not.
fn judge(case: &Case, o: &Outcome) -> Option<String> {
    let all = format!("{}{}", o.stdout, o.stderr);
    if all.contains("panicked") || all.contains("RUST_BACKTRACE") {
        return Some(format!("panic text in the output: {all}"));
    }
    if o.signaled {
        return Some("killed by a signal (timeout or crash)".into());
    }
    if o.max_rss_kb > RSS_BOUND_KB {
        return Some(format!("peak RSS {} MB over the {} MB bound", o.max_rss_kb >> 10, RSS_BOUND_KB >> 10));
    }
    match &case.expect {
        Expect::Error(needles) => {
            let lines: Vec<&str> = o.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            // Chat prints its banner and prompts to stderr before reading; the error is the last line.
            let error_lines: Vec<&&str> = lines.iter().filter(|l| l.contains("error")).collect();
            let last = lines.last().copied().unwrap_or("");
            if o.code != 1 {
                return Some(format!("exit code {} (want 1); stderr: {}", o.code, o.stderr));
            }
            if error_lines.len() != 1 || !last.starts_with("error: ") || (case.stdin.is_none() && lines.len() != 1) {
                return Some(format!("want exactly one `error: ` line on stderr, got {lines:?}"));
            }
            if let Some(n) = needles.iter().find(|n| !last.contains(**n)) {
                return Some(format!("error line lacks {n:?}: {last}"));
            }
            None
        }
        Expect::Answer(needle) => {
            if o.code != 0 {
                return Some(format!("exit code {}; stderr: {}", o.code, o.stderr));
            }
            (!o.stdout.contains(needle) && !o.stderr.contains(needle)).then(|| format!("output lacks {needle:?}: {}{}", o.stdout, o.stderr))
        }
    }
}

#[test]
fn bad_inputs_fail_cleanly() {
    let dir = std::env::temp_dir().join(format!("dsvl-bad-inputs-{}", std::process::id()));
    let cases = corpus::build(&dir);
    let (mut handled, mut failures, mut worst) = (0, Vec::new(), (0u64, String::new()));
    let mut slowest = (0.0f64, String::new());
    for case in &cases {
        let o = run(case);
        if o.max_rss_kb > worst.0 {
            worst = (o.max_rss_kb, case.name.clone());
        }
        if o.secs > slowest.0 {
            slowest = (o.secs, case.name.clone());
        }
        match judge(case, &o) {
            None => handled += 1,
            Some(why) => failures.push(format!("{}: {why}", case.name)),
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    eprintln!("bad_inputs: tried {}, handled {handled}", cases.len());
    eprintln!("peak RSS {} MB ({}), bound {} MB; slowest run {:.1} s ({})", worst.0 >> 10, worst.1, RSS_BOUND_KB >> 10, slowest.0, slowest.1);
    assert!(failures.is_empty(), "{} of {} not handled:\n{}", failures.len(), cases.len(), failures.join("\n"));
}
