//! What the firewall tests share: the `vxnet firewall` argument list and the check that a run
//! succeeded.

use std::process::Output;

/// `firewall VERB --backend BACKEND` followed by `rest`.
pub fn firewall_args<'a>(verb: &'a str, backend: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["firewall", verb, "--backend", backend];
    args.extend_from_slice(rest);
    args
}

/// The stdout of a run that must have succeeded (its stderr in the failure message).
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}
