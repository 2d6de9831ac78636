//! Reading a CLI run's output, and the error contract every bad input must meet.

use std::process::Output;

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the CLI error contract: non-zero exit and exactly one `error:` line on stderr.
pub fn assert_cli_error(o: &Output, contains: &str) {
    assert!(
        !o.status.success(),
        "expected failure, got success: {}",
        stdout(o)
    );
    let err = stderr(o);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got {err:?}");
    assert!(lines[0].starts_with("error: "), "{err:?}");
    assert!(
        lines[0].contains(contains),
        "{err:?} should mention {contains:?}"
    );
}
