//! The DNS servers: UDP and TCP port 53 on each network's gateway address, on the engine's
//! control runtime. The answers, the forwarding state and the rate limit are
//! [`vxnet_names`]'s; this is only the sockets around them.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use vxnet_names::{
    answer, Decision, ForwardConfig, ForwardRequest, Forwarder, RateLimiter, Step, Transport,
};

use super::NameService;
use crate::state::lock;

/// The port resolvers ask.
pub const DNS_PORT: u16 = 53;
/// Where the host's resolvers are read from (once, when the service starts; `ip netns exec`
/// shows a namespace's own `/etc/netns/NS/resolv.conf` here).
const RESOLV_CONF: &str = "/etc/resolv.conf";
/// Queries per second per source, and the burst above it. A resolver retrying, or a busy
/// container, stays well under; a flood from one address is cut here.
const RATE: u32 = 200;
const BURST: u32 = 400;
/// Sources tracked by the limit (see [`RateLimiter`] for what happens past it).
const MAX_SOURCES: usize = 4096;
/// TCP connections open at once (all networks), and how long one may sit idle.
const MAX_TCP: usize = 64;
const TCP_IDLE: Duration = Duration::from_secs(10);
/// How often the set of gateways is looked at again even without a change (to retry a bind
/// that failed because the address was not there yet).
const RESCAN: Duration = Duration::from_secs(2);

/// Where a reply goes.
enum Client {
    Udp {
        socket: Arc<UdpSocket>,
        peer: SocketAddr,
    },
    Tcp(mpsc::Sender<Vec<u8>>),
}

impl Client {
    async fn deliver(self, bytes: Vec<u8>) {
        match self {
            Client::Udp { socket, peer } => {
                let _ = socket.send_to(&bytes, peer).await;
            }
            Client::Tcp(reply) => {
                let _ = reply.try_send(bytes);
            }
        }
    }

    fn transport(&self) -> Transport {
        match self {
            Client::Udp { .. } => Transport::Udp,
            Client::Tcp(_) => Transport::Tcp,
        }
    }
}

struct Shared {
    names: Arc<NameService>,
    forwarder: Mutex<Forwarder<Client>>,
    limiter: Mutex<RateLimiter>,
    tcp_open: AtomicUsize,
}

/// Serves DNS on every gateway the name service lists, until the runtime stops.
pub(crate) async fn run(names: Arc<NameService>) {
    let upstreams = std::fs::read_to_string(RESOLV_CONF)
        .map(|text| ForwardConfig::from_resolv_conf(&text))
        .unwrap_or_else(|e| {
            tracing::warn!("names: cannot read {RESOLV_CONF} ({e}): other names get SERVFAIL");
            ForwardConfig::from_resolv_conf("")
        });
    let shared = Arc::new(Shared {
        forwarder: Mutex::new(Forwarder::new(upstreams)),
        limiter: Mutex::new(RateLimiter::new(RATE, BURST, MAX_SOURCES, Instant::now())),
        tcp_open: AtomicUsize::new(0),
        names,
    });
    let mut servers: HashMap<(String, IpAddr), [JoinHandle<()>; 2]> = HashMap::new();
    let mut failed: HashMap<(String, IpAddr), String> = HashMap::new();
    loop {
        let wanted: Vec<(String, IpAddr)> = shared
            .names
            .gateways()
            .into_iter()
            .map(|(network, gateway)| (network, gateway.addr()))
            .collect();
        servers.retain(|key, tasks| {
            let keep = wanted.contains(key);
            if !keep {
                tasks.iter().for_each(JoinHandle::abort);
            }
            keep
        });
        for key in wanted {
            if servers.contains_key(&key) {
                continue;
            }
            match bind(key.1) {
                Ok((udp, tcp)) => {
                    tracing::info!(
                        "names: serving network {} on {}",
                        key.0,
                        SocketAddr::new(key.1, DNS_PORT)
                    );
                    failed.remove(&key);
                    let udp_task = tokio::spawn(serve_udp(Arc::clone(&shared), key.0.clone(), udp));
                    let tcp_task = tokio::spawn(serve_tcp(Arc::clone(&shared), key.0.clone(), tcp));
                    servers.insert(key, [udp_task, tcp_task]);
                }
                Err(e) => {
                    let message = e.to_string();
                    if failed.get(&key) != Some(&message) {
                        tracing::warn!(
                            "names: cannot serve network {} on {}:{DNS_PORT}: {message}",
                            key.0,
                            key.1
                        );
                        failed.insert(key, message);
                    }
                }
            }
        }
        let _ = tokio::time::timeout(RESCAN, shared.names.changed.notified()).await;
    }
}

/// UDP and TCP sockets on `address`:53. IP_FREEBIND: the gateway address may be added to its
/// device a moment after the network starts.
fn bind(address: IpAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let at = SocketAddr::new(address, DNS_PORT);
    let socket = |kind: Type, protocol: Protocol| -> io::Result<Socket> {
        let socket = Socket::new(Domain::for_address(at), kind, Some(protocol))?;
        if address.is_ipv6() {
            socket.set_only_v6(true)?;
            socket.set_freebind_ipv6(true)?;
        } else {
            socket.set_freebind(true)?;
        }
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&at.into())?;
        Ok(socket)
    };
    let udp = socket(Type::DGRAM, Protocol::UDP)?;
    let tcp = socket(Type::STREAM, Protocol::TCP)?;
    tcp.listen(64)?;
    Ok((
        UdpSocket::from_std(std::net::UdpSocket::from(udp))?,
        TcpListener::from_std(std::net::TcpListener::from(tcp))?,
    ))
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // getrandom fails only without any entropy source; a fixed value then only weakens the
    // shuffle and the forwarder's IDs, it breaks nothing.
    let _ = getrandom::getrandom(&mut bytes);
    u64::from_ne_bytes(bytes)
}

/// One query from `peer`: answered, forwarded or dropped.
async fn handle(
    shared: &Arc<Shared>,
    network: &str,
    peer: SocketAddr,
    packet: &[u8],
    client: Client,
) {
    let now = Instant::now();
    let counters = &shared.names.counters;
    if !lock(&shared.limiter).allow(peer.ip(), now, counters) {
        return;
    }
    let zones = shared.names.zones();
    let transport = client.transport();
    match answer(
        &zones,
        network,
        peer.ip(),
        packet,
        transport,
        random_u64(),
        counters,
    ) {
        Decision::Reply(bytes) => client.deliver(bytes).await,
        Decision::Forward(request) => forward(shared, client, *request).await,
        Decision::Drop => {}
    }
}

async fn serve_udp(shared: Arc<Shared>, network: String, socket: UdpSocket) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; 65_535];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let client = Client::Udp {
            socket: Arc::clone(&socket),
            peer,
        };
        handle(&shared, &network, peer, &buf[..len], client).await;
    }
}

async fn serve_tcp(shared: Arc<Shared>, network: String, listener: TcpListener) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        if shared.tcp_open.fetch_add(1, Ordering::Relaxed) >= MAX_TCP {
            shared.tcp_open.fetch_sub(1, Ordering::Relaxed);
            continue;
        }
        let shared = Arc::clone(&shared);
        let network = network.clone();
        tokio::spawn(async move {
            let _ = tcp_connection(&shared, &network, stream, peer).await;
            shared.tcp_open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Length-prefixed messages (RFC 1035 §4.2.2), several per connection, until idle or closed.
async fn tcp_connection(
    shared: &Arc<Shared>,
    network: &str,
    stream: TcpStream,
    peer: SocketAddr,
) -> io::Result<()> {
    let (mut reader, mut writer) = stream.into_split();
    let (reply, mut replies) = mpsc::channel::<Vec<u8>>(16);
    let writing = tokio::spawn(async move {
        while let Some(bytes) = replies.recv().await {
            let Ok(len) = u16::try_from(bytes.len()) else {
                continue;
            };
            if writer.write_all(&len.to_be_bytes()).await.is_err()
                || writer.write_all(&bytes).await.is_err()
            {
                break;
            }
        }
    });
    let mut buf = vec![0u8; 65_535];
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, reader.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => break,
        }
        let len = usize::from(u16::from_be_bytes(len));
        if tokio::time::timeout(TCP_IDLE, reader.read_exact(&mut buf[..len]))
            .await
            .is_err()
        {
            break;
        }
        handle(
            shared,
            network,
            peer,
            &buf[..len],
            Client::Tcp(reply.clone()),
        )
        .await;
    }
    drop(reply);
    // Replies still being forwarded keep their sender; the writer ends with the last of them.
    let _ = writing.await;
    Ok(())
}

async fn forward(shared: &Arc<Shared>, client: Client, request: ForwardRequest) {
    let counters = &shared.names.counters;
    let tcp = client.transport() == Transport::Tcp;
    let step = lock(&shared.forwarder).start(
        client,
        request,
        Instant::now(),
        random_u64() as u16,
        counters,
    );
    match step {
        Step::Reply(client, bytes) => client.deliver(bytes).await,
        Step::Send(send) => {
            tokio::spawn(ask_upstream(Arc::clone(shared), send, tcp));
        }
    }
}

/// Drives one forwarded query to its end: a reply, or SERVFAIL after every attempt.
async fn ask_upstream(shared: Arc<Shared>, mut send: vxnet_names::Send, tcp: bool) {
    let counters = &shared.names.counters;
    // A socket of its own per query: a random source port on top of the random ID.
    let unspecified = match send.upstream.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let socket = if tcp {
        None
    } else {
        UdpSocket::bind((unspecified, 0)).await.ok()
    };
    loop {
        let replied = match &socket {
            Some(socket) => udp_exchange(&shared, socket, &send).await,
            None if tcp => tcp_exchange(&shared, &send).await,
            None => None,
        };
        if let Some((client, bytes)) = replied {
            client.deliver(bytes).await;
            return;
        }
        let next = lock(&shared.forwarder).timeout(send.id, Instant::now(), counters);
        match next {
            Some(Step::Send(again)) => send = again,
            Some(Step::Reply(client, bytes)) => {
                client.deliver(bytes).await;
                return;
            }
            None => return,
        }
    }
}

/// Sends `send` and waits until its deadline for a datagram the forwarder accepts.
async fn udp_exchange(
    shared: &Shared,
    socket: &UdpSocket,
    send: &vxnet_names::Send,
) -> Option<(Client, Vec<u8>)> {
    let deadline = tokio::time::Instant::from_std(send.deadline);
    socket.send_to(&send.bytes, send.upstream).await.ok()?;
    let mut buf = vec![0u8; 65_535];
    loop {
        let (len, from) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        let reply =
            lock(&shared.forwarder).reply(send.id, from, &buf[..len], &shared.names.counters);
        if reply.is_some() {
            return reply;
        }
    }
}

/// One query over TCP to the upstream, all of it within the deadline.
async fn tcp_exchange(shared: &Shared, send: &vxnet_names::Send) -> Option<(Client, Vec<u8>)> {
    let deadline = tokio::time::Instant::from_std(send.deadline);
    let exchange = async {
        let mut stream = TcpStream::connect(send.upstream).await?;
        let len = u16::try_from(send.bytes.len()).map_err(io::Error::other)?;
        stream.write_all(&len.to_be_bytes()).await?;
        stream.write_all(&send.bytes).await?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await?;
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut reply).await?;
        Ok::<_, io::Error>(reply)
    };
    let reply = tokio::time::timeout_at(deadline, exchange)
        .await
        .ok()?
        .ok()?;
    lock(&shared.forwarder).reply(send.id, send.upstream, &reply, &shared.names.counters)
}
