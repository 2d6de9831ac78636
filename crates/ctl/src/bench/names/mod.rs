//! `vxnet bench names`: how fast endpoint names reach every host of a large cluster, and what
//! it costs. N simulated hosts ([`member`]) join one cluster in a real etcd, each with its own
//! connection, lease and watch; M endpoints are published through the engine's own claim path
//! (`claims::publish_endpoint`), spread over the hosts and paced; every host notes when each
//! record reaches it. Then some are withdrawn (time to NXDOMAIN everywhere), one host restarts
//! (time to resynchronise), and one engine's tables for M endpoints are built and weighed
//! ([`engine`]). The figures are reported by [`report`].

mod engine;
mod etcd;
mod member;
mod report;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use vxnet_cluster::claims::{publish_endpoint, withdraw_endpoint};
use vxnet_cluster::{EndpointRecord, NetworkDef, Store, StoreAccess};
use vxnet_encap::MacAddr;

use member::{node_record, Member};
use report::{Latencies, NamesReport};

/// The benchmark's network: a /16 holds every endpoint (up to 65000) and the hosts' gateways
/// are not claimed (the simulated hosts have no TAP).
const NETWORK: &str = "bench";
const VNI: u32 = 4242;
const SUBNET: &str = "10.64.0.0/16";
/// How long after the last change the hosts get to see it before the missing are counted.
const SETTLE: Duration = Duration::from_secs(120);
/// Tries of one store call that found the store too slow to answer (see [`retrying`]).
const TRIES: u32 = 5;

/// Runs `call` again while the store does not answer within the store's bound of a call (or
/// is otherwise unreachable), up to [`TRIES`] times, counting each retry in `retries`: on a
/// loaded 2-core machine with hundreds of watchers, a few calls in many thousands pass it, and
/// one of them should not end a run of many minutes. Any other error ends the run.
async fn retrying<T, F, Fut>(retries: &AtomicU64, mut call: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = vxnet_cluster::Result<T>>,
{
    let mut tried = 1;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_unreachable() && tried < TRIES => {
                tried += 1;
                retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[derive(Debug, Args)]
pub struct NamesBenchArgs {
    /// Simulated hosts, each with its own store connection, lease and watch.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=5000))]
    pub hosts: u64,
    /// Endpoints published, spread evenly over the hosts.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=65_000))]
    pub endpoints: u64,
    /// Endpoints published per second, all hosts together.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub rate: u64,
    /// Publications in flight at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub concurrency: u64,
    /// Endpoints withdrawn at the end, to time how fast their names go everywhere.
    #[arg(long, default_value_t = 200)]
    pub withdraw: u64,
    /// The hosts' lease TTL in seconds (their keep-alives run every third of it).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(3..=600))]
    pub ttl: u64,
    /// The etcd to use (etcd://HOST:PORT); without it a private etcd is started from PATH
    /// in a temporary directory and removed at the end.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// Print the results as one JSON document on stdout (progress stays on stderr).
    #[arg(long)]
    pub json: bool,
}

pub(super) fn run(args: NamesBenchArgs) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    // Weighed first, on a fresh heap, so nothing the hosts allocate is counted.
    eprintln!(
        "bench names: building one engine's tables for {} endpoints",
        args.endpoints
    );
    let engine = engine::weigh(args.endpoints as usize, args.hosts as usize);
    let (_etcd, access) = match &args.store {
        Some(url) => {
            let (endpoints, tls) =
                vxnet_cluster::access::parse_store(url).map_err(|e| e.to_string())?;
            if tls {
                return Err("bench names speaks plain etcd:// only".into());
            }
            (None, StoreAccess::plain(&endpoints))
        }
        None => {
            let etcd = etcd::Private::start()?;
            let access = StoreAccess::plain(&[etcd.endpoint()]);
            (Some(etcd), access)
        }
    };
    let mut report = runtime.block_on(bench(&args, &access))?;
    report.engine = engine;
    if args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        print!("{}", report.render());
    }
    Ok(())
}

fn endpoint_ip(k: usize) -> IpAddr {
    // .0.0 is the subnet's own address, .0.1 a gateway by habit: endpoints start at .0.2.
    IpAddr::V4(Ipv4Addr::from(
        u32::from(Ipv4Addr::new(10, 64, 0, 2)) + k as u32,
    ))
}

fn vtep(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(
        u32::from(Ipv4Addr::new(10, 200, 0, 1)) + i as u32,
    ))
}

/// Endpoint `k` as its host publishes it.
pub(super) fn draft(k: usize, node: &str) -> EndpointRecord {
    EndpointRecord {
        id: format!("ep{k}"),
        name: format!("c{k}"),
        aliases: Vec::new(),
        network: NETWORK.into(),
        addresses: vec![format!("{}/16", endpoint_ip(k))],
        mac: MacAddr::derived(format!("bench/{k}").as_bytes()).to_string(),
        node: node.into(),
        container_id: None,
        ifname: "eth0".into(),
        since: 0,
    }
}

fn network() -> NetworkDef {
    NetworkDef {
        name: NETWORK.into(),
        vni: VNI,
        subnet: Some(SUBNET.into()),
        encrypted: false,
    }
}

async fn bench(args: &NamesBenchArgs, access: &StoreAccess) -> Result<NamesReport, String> {
    let hosts = args.hosts as usize;
    let count = args.endpoints as usize;
    let cluster = format!("bench-{}-{}", std::process::id(), rand::random::<u32>());
    let admin = Store::connect_with(access, &cluster)
        .await
        .map_err(|e| e.to_string())?;
    let def = network();
    let put = |key: String, value: Vec<u8>| {
        let admin = admin.clone();
        async move { admin.put(&admin.key(&key), value, None).await }
    };
    put(
        format!("networks/{NETWORK}"),
        serde_json::to_vec(&def).map_err(|e| e.to_string())?,
    )
    .await
    .map_err(|e| e.to_string())?;
    put(format!("vni/{VNI}"), NETWORK.as_bytes().to_vec())
        .await
        .map_err(|e| e.to_string())?;
    let ids: Vec<String> = (0..hosts).map(|i| format!("h{i:05}")).collect();
    for (i, id) in ids.iter().enumerate() {
        put(format!("nodes/{id}"), node_record(id, vtep(i)))
            .await
            .map_err(|e| e.to_string())?;
    }

    eprintln!("bench names: {hosts} hosts joining (connection, lease, full read, watch)");
    let started = Instant::now();
    let mut members = Vec::with_capacity(hosts);
    for chunk in ids.chunks(32) {
        let base = members.len();
        let joins = chunk.iter().enumerate().map(|(j, id)| {
            let (access, cluster, id) = (access.clone(), cluster.clone(), id.clone());
            let ttl = args.ttl as i64;
            async move { Member::join(&access, &cluster, id, vtep(base + j), NETWORK, ttl).await }
        });
        for m in futures_join(joins).await {
            members.push(Arc::new(m?));
        }
    }
    let join_secs = started.elapsed().as_secs_f64();

    let retries = Arc::new(AtomicU64::new(0));
    let before = retrying(&retries, || admin.list("meta")).await?.1;
    eprintln!(
        "bench names: publishing {count} endpoints at {} per second",
        args.rate
    );
    let times = publish_all(args, &members, &def, &retries).await?;
    let called: Vec<Option<Instant>> = times.iter().map(|t| Some(t.0)).collect();
    let returned: Vec<Option<Instant>> = times.iter().map(|t| Some(t.1)).collect();
    let publish_ms = {
        let mut ms: Vec<u32> = times
            .iter()
            .map(|(c, r)| u32::try_from(r.duration_since(*c).as_micros()).unwrap_or(u32::MAX))
            .collect();
        ms.sort_unstable();
        (report::percentile(&ms, 50.0), report::percentile(&ms, 99.0))
    };
    let after = retrying(&retries, || admin.list("meta")).await?.1;
    wait_until(&members, |m| m.seen.appeared_count() >= count).await;
    let appeared = |m: &Member| member::lock(&m.seen.appeared).clone();
    let appear = Latencies::collect(&members, &returned, appeared);
    let appear_called = Latencies::collect(&members, &called, appeared);
    let events: u64 = members
        .iter()
        .map(|m| m.seen.events.load(std::sync::atomic::Ordering::Relaxed))
        .sum();

    let withdraw = (args.withdraw as usize).min(count);
    eprintln!("bench names: withdrawing {withdraw} endpoints");
    let mut gone = vec![None; count];
    for k in 0..withdraw {
        let owner = &members[k % hosts];
        let id = format!("ep{k}");
        retrying(&retries, || {
            withdraw_endpoint(&owner.store, &owner.id, NETWORK, &id)
        })
        .await
        .map_err(|e| format!("withdrawing {id}: {e}"))?;
        gone[k] = Some(Instant::now());
    }
    wait_until(&members, |m| m.seen.vanished_count() >= withdraw).await;
    let vanish = Latencies::collect(&members, &gone, |m| member::lock(&m.seen.vanished).clone());

    eprintln!("bench names: restarting one host");
    let restarted = Instant::now();
    let again = Member::join(
        access,
        &cluster,
        ids[0].clone(),
        vtep(0),
        NETWORK,
        args.ttl as i64,
    )
    .await?;
    let resync_secs = restarted.elapsed().as_secs_f64();
    let resync_seen = again.seen.appeared_count();
    drop(again);
    drop(members);
    cleanup(&admin).await;
    Ok(NamesReport::new(
        args,
        join_secs,
        publish_ms,
        appear_called,
        (after - before) as f64 / count as f64,
        events as f64 / count as f64,
        appear,
        vanish,
        resync_secs,
        resync_seen,
        retries.load(Ordering::Relaxed),
    ))
}

/// Runs `futures` together and returns their results in order.
async fn futures_join<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

/// Publishes every endpoint through its host's store connection and lease, paced at
/// `args.rate` with at most `args.concurrency` in flight; when each publication was called
/// and when it returned.
async fn publish_all(
    args: &NamesBenchArgs,
    members: &[Arc<Member>],
    def: &NetworkDef,
    retries: &Arc<AtomicU64>,
) -> Result<Vec<(Instant, Instant)>, String> {
    let count = args.endpoints as usize;
    let slots = Arc::new(tokio::sync::Semaphore::new(args.concurrency as usize));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tasks = Vec::with_capacity(count);
    for k in 0..count {
        tick.tick().await;
        let permit = Arc::clone(&slots)
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let owner = Arc::clone(&members[k % members.len()]);
        let def = def.clone();
        let retries = Arc::clone(retries);
        tasks.push(tokio::spawn(async move {
            // Retries count in its time: what an attach waiting for it would see.
            let called = Instant::now();
            let record = draft(k, &owner.id);
            let result = retrying(&retries, || {
                publish_endpoint(
                    &owner.store,
                    &def,
                    owner.lease,
                    &record,
                    Some(endpoint_ip(k)),
                )
            })
            .await;
            drop(permit);
            result
                .map(|_| (called, Instant::now()))
                .map_err(|e| format!("publishing ep{k}: {e}"))
        }));
        if k % 1000 == 999 {
            eprintln!("bench names: {} published", k + 1);
        }
    }
    let mut times = Vec::with_capacity(count);
    for t in tasks {
        times.push(t.await.map_err(|e| e.to_string())??);
    }
    Ok(times)
}

/// Waits until every member satisfies `done`, or [`SETTLE`] passed.
async fn wait_until(members: &[Arc<Member>], done: impl Fn(&Member) -> bool) {
    let deadline = Instant::now() + SETTLE;
    while Instant::now() < deadline && !members.iter().all(|m| done(m)) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Deletes the benchmark's cluster from a store the caller gave.
async fn cleanup(admin: &Store) {
    let prefix = admin.prefix();
    let _ = admin
        .call(vxnet_cluster::store::Retry::Idempotent, |mut c| {
            let prefix = prefix.clone();
            async move {
                c.delete(
                    prefix,
                    Some(etcd_client::DeleteOptions::new().with_prefix()),
                )
                .await
            }
        })
        .await;
}
