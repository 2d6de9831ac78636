//! Two-host static labs serving bridge-mode networks: each host's `--config` (its gateway
//! address and pool on every network, the other host as the remote) and its engine.

use crate::{Lab, Vxnet};

/// One bridge-mode network of a two-host lab, on TAP `vx{vni}` and bridge `vb{vni}`.
#[derive(Debug, Clone, Copy)]
pub struct Bridged<'a> {
    pub name: &'a str,
    pub vni: u32,
    /// Host 0's and host 1's address on the network (the endpoints' gateway), in CIDR form.
    pub address: [&'a str; 2],
    /// Host 0's and host 1's pool; hosts sharing a subnet without a cluster need disjoint
    /// ones. `None`: the whole subnet.
    pub pool: Option<[&'a str; 2]>,
}

impl Lab {
    /// Host `i`'s (0 or 1) `--config` file serving `networks`, written into the lab's directory.
    pub fn bridged_config(&self, i: usize, networks: &[Bridged<'_>]) -> String {
        let other = self.host(1 - i).underlay;
        let mut text = String::new();
        for n in networks {
            text.push_str(&format!(
                "[[network]]\nname = \"{}\"\nvni = {vni}\ndev = \"vx{vni}\"\nbridge = \"vb{vni}\"\n\
                 address = \"{}\"\nremotes = [\"{other}\"]\n",
                n.name,
                n.address[i],
                vni = n.vni
            ));
            if let Some(pool) = n.pool {
                text.push_str(&format!("pool = \"{}\"\n", pool[i]));
            }
            text.push('\n');
        }
        let path = self.dir.join(format!("h{i}.toml"));
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    /// Starts host `i`'s engine `e{i}` serving `networks` from [`Lab::bridged_config`]: one
    /// worker, records in the lab's `state{i}`, then `extra` flags.
    pub fn bridged_engine(&self, i: usize, networks: &[Bridged<'_>], extra: &str) -> Vxnet {
        let args = format!(
            "--config {} --local {} --threads 1 --state-dir {} {extra}",
            self.bridged_config(i, networks),
            self.host(i).underlay,
            self.dir.join(format!("state{i}")).display()
        );
        self.vxnet(i, &format!("e{i}"), &args)
    }
}
