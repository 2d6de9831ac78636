//! The terminal's size, for command-line views that wrap to it (`vxnet explain`). Here rather
//! than in the CLI because it is an ioctl, and every ioctl of vxnet lives in `sys`.

use std::io::IsTerminal;
use std::os::fd::AsRawFd;

/// Columns of the terminal on stdout; `None` when stdout is not a terminal or reports 0.
pub fn stdout_columns() -> Option<usize> {
    let stdout = std::io::stdout();
    if !stdout.is_terminal() {
        return None;
    }
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which points at a live,
    // properly aligned local of that type; the fd is stdout's, open for the process's life.
    let rc = unsafe { libc::ioctl(stdout.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_col > 0).then_some(usize::from(size.ws_col))
}
