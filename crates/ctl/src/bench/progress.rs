//! Progress on stderr (stdout is the table or the JSON document): one status line rewritten in
//! place on a terminal, plain lines otherwise (logs, pipes, tests).

use std::io::{IsTerminal, Write};

const CLEAR_LINE: &str = "\r\x1b[2K";

#[derive(Debug)]
pub(super) struct Progress {
    tty: bool,
    /// A status line is on screen without its newline.
    open: bool,
    /// Measurements done and planned, for `[done/total]`.
    done: usize,
    total: usize,
}

impl Progress {
    pub(super) fn new() -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
            open: false,
            done: 0,
            total: 0,
        }
    }

    pub(super) fn count_steps(&mut self, total: usize) {
        self.total = total;
        self.done = 0;
    }

    /// The next of the counted measurements.
    pub(super) fn step(&mut self, what: &str) {
        self.done += 1;
        self.status(&format!("[{}/{}] {what}", self.done, self.total));
    }

    /// What is being done now: replaces the previous status on a terminal.
    pub(super) fn status(&mut self, text: &str) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "{CLEAR_LINE}vxnet bench: {text}");
            let _ = err.flush();
            self.open = true;
        } else {
            let _ = writeln!(err, "vxnet bench: {text}");
        }
    }

    /// A line that stays.
    pub(super) fn note(&mut self, text: &str) {
        self.clear();
        eprintln!("vxnet bench: {text}");
    }

    /// Removes the status line, if one is on screen.
    pub(super) fn clear(&mut self) {
        if self.open {
            eprint!("{CLEAR_LINE}");
            self.open = false;
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}
