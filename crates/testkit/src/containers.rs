//! Real container runtimes for the CNI tests: a busybox-static image built on the spot (no
//! registry is reachable), and a [`Sandbox`] per "host": a private mount namespace whose
//! tmpfs covers everything a runtime writes (its netns files, storage, state, CNI cache and
//! SHM locks) and whose /etc/cni/net.d and /opt/cni/bin are the test's own directories, so
//! tests run in parallel and leave nothing on the machine. Commands run in it with `nsenter`
//! into the host's network namespace, never `ip netns exec` (which remounts /sys and breaks
//! runc's cgroup lookup).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::process::{must, run, vxnet_bin, wait_for};

/// Applets the image gets as links to busybox.
const APPLETS: &[&str] = &[
    "sh", "ip", "ping", "nslookup", "sleep", "cat", "hostname", "ifconfig", "wget", "nc", "ls",
    "echo", "true", "grep", "route",
];

/// A docker-archive tarball of a busybox-static image tagged `tag` (for `podman load`,
/// `ctr images import`, `docker load`), built in `dir`.
pub fn busybox_image(dir: &Path, tag: &str) -> PathBuf {
    let root = dir.join("rootfs");
    for sub in ["bin", "etc", "tmp", "proc", "sys", "dev", "run"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static installed");
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    let image = dir.join("image");
    std::fs::create_dir_all(&image).unwrap();
    let layer = image.join("layer.tar");
    must(&format!(
        "tar --numeric-owner --owner=0 --group=0 -C {} -cf {} .",
        root.display(),
        layer.display()
    ));
    let sha = |p: &Path| {
        must(&format!("sha256sum {}", p.display()))
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    let arch = must("dpkg --print-architecture").trim().to_owned();
    let config = serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha(&layer))]},
        "history": [{"created_by": "vxnet testkit: busybox-static"}]
    });
    let config_path = image.join("config.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let config_name = format!("{}.json", sha(&config_path));
    std::fs::rename(&config_path, image.join(&config_name)).unwrap();
    let manifest =
        serde_json::json!([{"Config": config_name, "RepoTags": [tag], "Layers": ["layer.tar"]}]);
    std::fs::write(image.join("manifest.json"), manifest.to_string()).unwrap();
    let tarball = dir.join("busybox.tar");
    must(&format!(
        "tar -C {} -cf {} manifest.json {config_name} layer.tar",
        image.display(),
        tarball.display()
    ));
    tarball
}

/// Directories a runtime writes, each covered by a tmpfs in the sandbox.
const PRIVATE: &[&str] = &[
    "/run/netns",
    "/dev/shm",
    "/var/lib/containers",
    "/run/containers",
    "/run/libpod",
    "/var/lib/cni",
    "/var/lib/containerd",
    "/run/containerd",
    "/opt",
];

/// One container "host": a private mount namespace (held by a sleeping process) entered
/// together with the host's network namespace `netns`.
pub struct Sandbox {
    holder: Child,
    pub netns: String,
    /// The test's CNI plugin directory (mounted on /opt/cni/bin) and configuration directory
    /// (mounted on /etc/cni/net.d).
    pub cni_bin: PathBuf,
    pub cni_conf: PathBuf,
    /// podman's containers.conf.
    pub containers_conf: PathBuf,
    crashed: bool,
}

impl Sandbox {
    /// A sandbox in `dir` for the host namespace `netns`.
    pub fn new(dir: &Path, netns: &str) -> Sandbox {
        let cni_bin = dir.join("cni-bin");
        let cni_conf = dir.join("cni-conf");
        std::fs::create_dir_all(&cni_bin).unwrap();
        std::fs::create_dir_all(&cni_conf).unwrap();
        for p in PRIVATE.iter().chain(&["/etc/cni/net.d"]) {
            std::fs::create_dir_all(p).unwrap();
        }
        let holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sleep", "100000"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare");
        let own = std::fs::read_link("/proc/self/ns/mnt").unwrap();
        let mnt = format!("/proc/{}/ns/mnt", holder.id());
        assert!(
            wait_for(Duration::from_secs(5), || std::fs::read_link(&mnt)
                .is_ok_and(|l| l != own)),
            "unshare --mount did not start"
        );
        let containers_conf = dir.join("containers.conf");
        // Ulimits pinned: these machines lack CAP_SYS_RESOURCE, so podman's defaults (and
        // --ulimit host) cannot be set. The CNI backend, runc and cgroupfs as on Debian 12.
        std::fs::write(
            &containers_conf,
            "[containers]\n\
             default_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]\n\
             [engine]\n\
             runtime = \"runc\"\n\
             cgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\n\
             [network]\n\
             network_backend = \"cni\"\n\
             cni_plugin_dirs = [\"/opt/cni/bin\", \"/usr/lib/cni\"]\n\
             network_config_dir = \"/etc/cni/net.d\"\n",
        )
        .unwrap();
        let sandbox = Sandbox {
            holder,
            netns: netns.to_owned(),
            cni_bin,
            cni_conf,
            containers_conf,
            crashed: false,
        };
        let mounts: Vec<String> = PRIVATE
            .iter()
            .map(|p| format!("mount -t tmpfs tmpfs {p}"))
            .chain([
                "mkdir -p /opt/cni/bin".to_owned(),
                format!("mount --bind {} /opt/cni/bin", sandbox.cni_bin.display()),
                format!("mount --bind {} /etc/cni/net.d", sandbox.cni_conf.display()),
            ])
            .collect();
        let out = sandbox.sh_outside_netns(&mounts.join(" && "));
        assert!(
            out.status.success(),
            "sandbox mounts: {}",
            crate::cli::stderr(&out)
        );
        sandbox
    }

    fn sh_outside_netns(&self, cmd: &str) -> Output {
        Command::new("nsenter")
            .args([
                &format!("--mount=/proc/{}/ns/mnt", self.holder.id()),
                "sh",
                "-c",
                cmd,
            ])
            .output()
            .unwrap()
    }

    /// `cmd` (a shell command line) in the sandbox and the host's network namespace, with
    /// podman's configuration in the environment.
    pub fn sh(&self, cmd: &str) -> Output {
        Command::new("nsenter")
            .args([
                &format!("--mount=/proc/{}/ns/mnt", self.holder.id()),
                &format!("--net=/run/netns/{}", self.netns),
                "env",
                &format!("CONTAINERS_CONF={}", self.containers_conf.display()),
                "sh",
                "-c",
                cmd,
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// [`Sandbox::sh`], panicking with the output when it fails; its stdout.
    pub fn must(&self, cmd: &str) -> String {
        let out = self.sh(cmd);
        assert!(
            out.status.success(),
            "`{cmd}` in sandbox {} failed: {}{}",
            self.netns,
            crate::cli::stdout(&out),
            crate::cli::stderr(&out)
        );
        crate::cli::stdout(&out)
    }

    /// Starts a long-running command (containerd) in the sandbox; its output goes to `log`.
    pub fn spawn(&self, log: &Path, cmd: &str) -> crate::Proc {
        let file = std::fs::File::create(log).unwrap();
        let child = Command::new("nsenter")
            .args([
                &format!("--mount=/proc/{}/ns/mnt", self.holder.id()),
                &format!("--net=/run/netns/{}", self.netns),
                "sh",
                "-c",
                &format!("exec {cmd}"),
            ])
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        crate::Proc {
            child,
            log: log.to_path_buf(),
        }
    }

    /// `vxnet cni install` for `network` into this sandbox's CNI directories, against the
    /// engine at `control`.
    pub fn install_cni(&self, network: &str, control: &Path) {
        must(&format!(
            "{} cni install --network {network} --dir {} --conf-dir {} --control {}",
            vxnet_bin().display(),
            self.cni_bin.display(),
            self.cni_conf.display(),
            control.display()
        ));
    }

    /// The image loaded into this sandbox's podman.
    pub fn podman_load(&self, tarball: &Path) {
        self.must(&format!("podman load -q -i {}", tarball.display()));
    }
}

impl Sandbox {
    /// A crash: every process of the sandbox's containers killed (conmon and the container's
    /// init) and the mount namespace with its netns files gone, without podman (no CNI DEL).
    pub fn crash(mut self) {
        let pids = self.must(
            "podman ps -q | xargs -r podman inspect -f '{{.State.ConmonPid}} {{.State.Pid}}'",
        );
        let pids: Vec<&str> = pids.split_whitespace().filter(|p| *p != "0").collect();
        if !pids.is_empty() {
            run(&format!("kill -9 {}", pids.join(" ")));
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        // Nothing left for drop to remove with podman.
        self.crashed = true;
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.crashed {
            return;
        }
        // Containers first (their conmon and runc processes, their netns files), then the
        // mount namespace goes with its holder.
        let _ =
            self.sh("podman rm -af -t 0 >/dev/null 2>&1; podman network prune -f >/dev/null 2>&1");
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// cnitool, built by scripts/test.sh into the target directory's `tools/` (built here when
/// missing, with the same script).
pub fn cnitool() -> PathBuf {
    let target = vxnet_bin()
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    let tool = target.join("tools/cnitool");
    if !tool.exists() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/cnitool.sh");
        let out = run(&format!("{} {}", script.display(), tool.display()));
        assert!(
            out.status.success(),
            "building cnitool: {}",
            crate::cli::stderr(&out)
        );
    }
    tool
}
