//! How errors reach a user: the message and its causes, never a stack trace.
//!
//! `anyhow`'s `Debug` output (what `fn main() -> anyhow::Result<()>` prints)
//! appends a backtrace whenever `RUST_BACKTRACE` is set, which many developers
//! keep in their environment; a backtrace belongs to internal bugs (panics), not
//! to "this file is not a checkpoint". libtorch's C++ exceptions carry their own
//! trace (`Exception raised from …` and `frame #N:` lines) inside the message
//! text; only the first meaningful part is kept.

/// The text of `err` and its causes on one line each (`message: cause: …`),
/// with libtorch's C++ traces cut out.
pub fn message(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = clean_torch_text(&cause.to_string());
        // Wrapped errors often repeat their source's text; say it once.
        if parts.last().is_some_and(|p| p.contains(text.as_str())) || text.is_empty() {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

/// Prints `err` for a user (`error: …` on stderr) and returns the exit code.
pub fn report(err: &anyhow::Error) -> std::process::ExitCode {
    eprintln!("error: {}", message(err));
    std::process::ExitCode::FAILURE
}

/// `text` without the C++ stack trace libtorch appends to its exception
/// messages: everything from an `Exception raised from` line on, and any
/// `frame #N:` line, is dropped; surrounding blank lines are trimmed.
pub fn clean_torch_text(text: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("Exception raised from") {
            break;
        }
        if is_frame_line(t) {
            continue;
        }
        kept.push(line.trim_end());
    }
    kept.join("\n").trim().to_string()
}

fn is_frame_line(t: &str) -> bool {
    t.strip_prefix("frame #")
        .is_some_and(|rest| rest.chars().next().is_some_and(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_libtorch_error_keeps_its_first_meaningful_lines() {
        // A real libtorch exception, produced here rather than copied.
        let a = tch::Tensor::zeros([2, 3], (tch::Kind::Float, tch::Device::Cpu));
        let err = a
            .f_view([7])
            .expect_err("a view of the wrong size must fail");
        let raw = err.to_string();
        assert!(
            raw.contains("Exception raised from") || raw.contains("frame #"),
            "libtorch's text changed shape: {raw}"
        );
        let clean = clean_torch_text(&raw);
        assert!(clean.contains("shape '[7]' is invalid"), "{clean}");
        assert!(!clean.contains("frame #"), "{clean}");
        assert!(!clean.contains("Exception raised from"), "{clean}");
        assert_eq!(clean.lines().count(), 1, "{clean}");
    }

    #[test]
    fn a_chain_prints_each_cause_once_on_one_line() {
        let inner = anyhow::anyhow!("bad magic number 0x1234");
        let err = inner.context("README.md: not a checkpoint");
        assert_eq!(
            message(&err),
            "README.md: not a checkpoint: bad magic number 0x1234"
        );
        let repeated = anyhow::anyhow!("x.pt: bad zip").context("x.pt: bad zip");
        assert_eq!(message(&repeated), "x.pt: bad zip");
    }

    #[test]
    fn text_without_a_trace_is_unchanged() {
        assert_eq!(clean_torch_text("plain message"), "plain message");
        assert_eq!(
            clean_torch_text("line one\nline two\n"),
            "line one\nline two"
        );
        assert_eq!(clean_torch_text("frame #x is a word"), "frame #x is a word");
    }
}
