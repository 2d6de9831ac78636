use vxnet_encap::outer::OuterFields;

use super::super::fixtures::forwarder;
use super::*;

fn planned(dest: Option<SocketAddr>, segments: usize, socket: usize) -> Planned {
    Planned {
        buf: 0,
        start: 0,
        end: 30,
        network: 0,
        dest,
        segment_size: (segments > 1).then_some(1000),
        segments,
        inner_bytes: 30 - segments * 8,
        socket,
        outer: OuterFields {
            df: true,
            ttl: Some(9),
            tos: None,
        },
    }
}

/// What [`expand`] makes of a plan: the messages, what each sent, the plan entry each came
/// from, and what was set aside for its path.
struct Expanded<'a> {
    out: Vec<Outgoing<'a>>,
    sent: Vec<Sent>,
    origins: Vec<usize>,
    oversize: Vec<Oversize>,
}

/// [`expand`] of `plan` over `slices` into fresh buffers; `check` is its path-MTU check.
fn expand_all<'a>(
    fwd: &Forwarder,
    plan: &[Planned],
    slices: &'a [&'a [u8]],
    gather: bool,
    check: &mut dyn FnMut(&Planned, usize, SocketAddr) -> Option<Oversize>,
) -> Expanded<'a> {
    let mut e = Expanded {
        out: Vec::new(),
        sent: Vec::new(),
        origins: Vec::new(),
        oversize: Vec::new(),
    };
    expand(
        fwd,
        plan,
        slices,
        gather,
        &mut e.out,
        &mut e.sent,
        &mut e.origins,
        check,
        &mut e.oversize,
    );
    e
}

#[test]
fn a_flood_becomes_one_message_per_peer_of_the_local_family() {
    let fwd = forwarder("10.0.0.1", &["10.0.0.2", "fd00::3", "10.0.0.4"], 1450);
    let unicast: SocketAddr = "10.0.0.9:4789".parse().unwrap();
    let plan = [planned(None, 3, 5), planned(Some(unicast), 1, 2)];
    let (a, b) = ([1u8; 30], [2u8; 10]);
    let slices: Vec<&[u8]> = vec![&a, &b];
    let Expanded {
        out, sent, origins, ..
    } = expand_all(&fwd, &plan, &slices, true, &mut |_, _, _| None);
    let dests: Vec<String> = out.iter().map(|o| o.dest.to_string()).collect();
    assert_eq!(dests, ["10.0.0.2:4789", "10.0.0.4:4789", "10.0.0.9:4789"]);
    assert_eq!(origins, [0, 0, 1]);
    assert_eq!(out[0].segment_size, Some(1000));
    assert_eq!(out[2].segment_size, None);
    assert_eq!(
        (out[0].ttl, out[0].tos),
        (Some(9), None),
        "outer fields per message"
    );
    assert_eq!(
        sent[1],
        Sent {
            network: 0,
            dest: "10.0.0.4".parse().unwrap(),
            segments: 3,
            // Inner frame bytes, the one definition every byte counter uses: the buffer's
            // 30 bytes less a VXLAN header per segment.
            bytes: 30 - 3 * 8,
        }
    );
    assert_eq!(out[2].parts, [&b[..]]);
    assert_eq!(
        fwd.networks()[0].drops.get(DropReason::WrongFamily),
        1,
        "the IPv6 peer of an IPv4 engine"
    );
}

#[test]
fn a_message_too_big_for_its_path_is_set_aside() {
    let fwd = forwarder("10.0.0.1", &["10.0.0.2", "10.0.0.4"], 1450);
    let plan = [planned(None, 1, 0)];
    let a = [1u8; 30];
    let slices: Vec<&[u8]> = vec![&a];
    let small: SocketAddr = "10.0.0.4:4789".parse().unwrap();
    let Expanded { out, oversize, .. } =
        expand_all(&fwd, &plan, &slices, true, &mut |p, i, dest| {
            (dest == small).then(|| too_big(p, i, dest, 40))
        });
    assert_eq!(out.len(), 1, "the other peer still gets it");
    assert_eq!(
        oversize,
        [Oversize::Answer { plan: 0, mtu: 40 }],
        "DF: answered"
    );
}

/// `expand` over `plan`, whose entry `i` wraps `lens[i]` bytes; `gso_fits` answers the
/// path-MTU check of a GSO send. Returns (per message: parts, segment size, segments).
fn gathered(
    plan: &[Planned],
    lens: &[usize],
    gather: bool,
    gso_fits: bool,
) -> Vec<(usize, Option<u16>, usize)> {
    let fwd = forwarder("10.0.0.1", &["10.0.0.2"], 1450);
    let data = [7u8; 200];
    let slices: Vec<&[u8]> = lens.iter().map(|&l| &data[..l]).collect();
    let Expanded {
        out,
        sent,
        oversize,
        ..
    } = expand_all(&fwd, plan, &slices, gather, &mut |p, i, dest| {
        (p.segment_size.is_some() && !gso_fits).then(|| too_big(p, i, dest, 40))
    });
    assert!(oversize.is_empty(), "nothing is set aside: {oversize:?}");
    let total: usize = out.iter().map(|o| o.parts.len()).sum();
    assert_eq!(total, plan.len(), "every datagram is in one message");
    out.iter()
        .zip(&sent)
        .map(|(o, s)| (o.parts.len(), o.segment_size, s.segments))
        .collect()
}

#[test]
fn equal_size_datagrams_to_one_vtep_leave_in_one_gso_send() {
    let a: SocketAddr = "10.0.0.9:4789".parse().unwrap();
    let b: SocketAddr = "10.0.0.8:4789".parse().unwrap();
    let one = |dest, socket| planned(Some(dest), 1, socket);
    // Four of 100 bytes and a shorter last one to `a`; then `b`; then `a` on another
    // socket; then a flood, which is never gathered.
    let plan = [
        one(a, 0),
        one(a, 0),
        one(a, 0),
        one(a, 0),
        one(a, 0),
        one(a, 0),
        one(b, 0),
        one(b, 0),
        one(a, 1),
        planned(None, 1, 1),
    ];
    let lens = [100, 100, 100, 100, 60, 100, 100, 90, 100, 100];
    assert_eq!(
        gathered(&plan, &lens, true, true),
        [
            // A shorter datagram ends a run: it may only be the last segment.
            (5, Some(100), 5),
            (1, None, 1),
            (2, Some(100), 2),
            (1, None, 1),
            (1, None, 1),
        ]
    );
    // A longer one than the first starts a new message.
    let lens = [60, 100, 100, 100, 100, 100, 100, 100, 100, 100];
    assert_eq!(
        gathered(&plan, &lens, true, true)[..2],
        [(1, None, 1), (5, Some(100), 5)]
    );
    // Without GSO (refused by the kernel), or when a GSO send would not fit the path,
    // every datagram goes alone as before.
    for (gather, fits) in [(false, true), (true, false)] {
        let messages = gathered(&plan, &lens, gather, fits);
        assert!(messages.iter().all(|m| *m == (1, None, 1)), "{messages:?}");
    }
    // No GSO send carries more than the kernel's segment limit.
    let many = vec![one(a, 0); MAX_GSO_SEGMENTS + 3];
    let lens = vec![100; many.len()];
    assert_eq!(
        gathered(&many, &lens, true, true),
        [
            (MAX_GSO_SEGMENTS, Some(100), MAX_GSO_SEGMENTS),
            (3, Some(100), 3)
        ]
    );
}
