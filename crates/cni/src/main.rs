//! `vxnet-cni`: the CNI plugin binary. The command in `CNI_COMMAND`, the configuration on
//! stdin; the result or the spec's error JSON on stdout; logs on stderr.
#![deny(unsafe_code)]

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    // Run by hand (a terminal, no CNI_COMMAND) it reports at once instead of waiting for input.
    // A read error leaves the config empty, which the commands that need one report as code 6.
    if std::env::var_os("CNI_COMMAND").is_some() && !std::io::stdin().is_terminal() {
        let _ = std::io::stdin().take(8 << 20).read_to_end(&mut stdin);
    }
    let outcome = vxnet_cni::plugin::run(&|k| std::env::var(k).ok(), &stdin);
    let mut out = std::io::stdout().lock();
    if out
        .write_all(outcome.stdout.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    ExitCode::from(outcome.exit)
}
