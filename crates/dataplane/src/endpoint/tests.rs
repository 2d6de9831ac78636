//! The wiring in private namespaces this test makes: every step that fails leaves nothing
//! behind, on the host or in the container's namespace.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::plumb::{self, Step, Wiring};
use crate::sys::link::Netlink;
use crate::sys::netns::Netns;

/// Runs `f` on a thread in a new, empty network namespace (gone when the thread ends).
fn in_fresh_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            crate::sys::unshare_netns_for_current_thread().expect("unshare (needs root)");
            f()
        })
        .join()
        .expect("test thread")
    })
}

/// A new namespace kept alive by the returned file (the thread that made it is gone).
fn container() -> File {
    in_fresh_netns(|| File::open("/proc/thread-self/ns/net").expect("own netns"))
}

#[test]
fn every_failed_step_leaves_nothing_behind_and_teardown_is_the_mirror() {
    in_fresh_netns(|| {
        let mut host = Netlink::open().unwrap();
        host.create_bridge("br-t", 1400, None, "vxnet:t").unwrap();
        let bridge = host.link_by_name("br-t").unwrap().unwrap();
        let ns_file = container();
        let ns = Netns::open(Path::new(&format!("/proc/self/fd/{}", ns_file.as_raw_fd()))).unwrap();
        let wiring = Wiring {
            ns: &ns,
            bridge: "br-t",
            host_ifname: "vxe-test",
            alias: "vxnet:t:1",
            ifname: "eth0",
            mac: [0x02, 0, 0, 0, 0, 7],
            address: "10.77.0.7/24".parse().unwrap(),
            gateway: "10.77.0.1".parse().unwrap(),
            mtu: 1400,
        };
        let mut inside = Netlink::open_in(std::os::fd::AsFd::as_fd(&ns)).unwrap();
        for step in Step::ALL {
            let result = plumb::setup(&wiring, &mut |s| {
                if s == step {
                    Err(std::io::Error::other("injected"))
                } else {
                    Ok(())
                }
            });
            assert!(result.is_err(), "{step:?}");
            assert_eq!(host.link_by_name("vxe-test").unwrap(), None, "{step:?}");
            let left: Vec<String> = inside
                .all_links()
                .unwrap()
                .into_iter()
                .map(|l| l.name)
                .collect();
            assert_eq!(left, ["lo"], "{step:?}");
        }
        plumb::setup(&wiring, &mut |_| Ok(())).unwrap();
        let veth = host.link_by_name("vxe-test").unwrap().unwrap();
        assert_eq!(
            (veth.master, veth.mtu, veth.up),
            (Some(bridge.index), 1400, true)
        );
        let eth0 = inside.link_by_name("eth0").unwrap().unwrap();
        assert_eq!(
            (eth0.mtu, eth0.up, eth0.mac),
            (1400, true, Some(wiring.mac))
        );
        assert!(inside.link_by_name("lo").unwrap().unwrap().up);
        // The name is taken inside now: a second endpoint with that ifname is refused whole.
        let again = Wiring {
            host_ifname: "vxe-test2",
            alias: "vxnet:t:2",
            ..wiring
        };
        assert!(matches!(
            plumb::setup(&again, &mut |_| Ok(())),
            Err(plumb::PlumbError::IfnameTaken(_))
        ));
        assert_eq!(host.link_by_name("vxe-test2").unwrap(), None);
        // Tear-down touches only what carries the alias.
        plumb::teardown("vxe-test", "vxnet:t:other").unwrap();
        assert!(host.link_by_name("vxe-test").unwrap().is_some());
        plumb::teardown("vxe-test", "vxnet:t:1").unwrap();
        assert_eq!(host.link_by_name("vxe-test").unwrap(), None);
        assert_eq!(inside.link_by_name("eth0").unwrap(), None);
        plumb::teardown("vxe-test", "vxnet:t:1").unwrap();
        // A device of that name vxnet did not make is refused, not replaced.
        host.create_bridge("vxe-test", 1500, None, "someone else")
            .unwrap();
        assert!(matches!(
            plumb::setup(&wiring, &mut |_| Ok(())),
            Err(plumb::PlumbError::HostNameTaken(_))
        ));
        assert!(host.link_by_name("vxe-test").unwrap().is_some());
    });
}
