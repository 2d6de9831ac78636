//! The control runtime: a single-threaded tokio runtime serving the control socket and the
//! metrics endpoint, ageing the FDB and waiting for SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{Engine, EngineControl, EngineError, EngineState};
use crate::control::server;
use crate::fdb::Millis;
use crate::reload::Reloader;
use crate::worker::SourcePorts;

impl Engine {
    /// Binds the Prometheus endpoint (`--metrics`) for [`serve_metrics`](Self::serve_metrics).
    /// Done before [`Engine::start`], so a port in use is the only thing reported: no TAP is
    /// made and no "engine running" line logged first.
    pub fn bind_metrics(addr: SocketAddr) -> Result<std::net::TcpListener, EngineError> {
        std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| EngineError::Metrics { addr, source })
    }

    /// Serves the counters on `listener` (from [`bind_metrics`](Self::bind_metrics)) once the
    /// engine runs.
    pub fn serve_metrics(&mut self, listener: std::net::TcpListener) {
        self.metrics = Some(listener);
    }

    /// Makes SIGHUP and `vxnet reload` re-read the configuration from `source` (what `applied`
    /// was built from) and apply the difference. Without this, SIGHUP is logged and ignored.
    pub fn reload_from(
        &mut self,
        applied: crate::config::EngineConfig,
        source: impl FnMut() -> Result<crate::config::EngineConfig, String> + Send + 'static,
    ) {
        self.reloader = Some(Reloader::new(applied, Box::new(source)));
    }

    /// Serves endpoint requests (`attach`, `detach`, `endpoints`, `endpoint_gc`), keeping their
    /// records in `dir` (in memory only without), and in cluster mode their claims and records
    /// in `registry`. Endpoints kept from the last run are resumed as their networks are
    /// served. The names added with `vxnet name add` are kept in `dir` too.
    pub fn serve_endpoints(
        &self,
        dir: Option<&std::path::Path>,
        registry: Option<Arc<dyn crate::endpoint::Registry>>,
    ) -> Result<(), EngineError> {
        let names = Arc::clone(&self.core.state.names);
        if let Some(dir) = dir {
            names.keep_in(dir);
        }
        let endpoints = crate::endpoint::Endpoints::new(
            dir,
            self.core.setup.local.to_string(),
            registry,
            names,
        )
        .map_err(|source| EngineError::Io {
            what: "reading the endpoint records",
            source,
        })?;
        self.core.state.set_endpoints(Arc::new(endpoints));
        Ok(())
    }

    /// On stop, remove the bridges vxnet created and every endpoint (`--cleanup`), instead of
    /// leaving them for the next start.
    pub fn set_cleanup(&mut self, cleanup: bool) {
        self.cleanup = cleanup;
    }

    /// Serves the control socket and ages the FDB until SIGINT or SIGTERM, then stops.
    pub fn run_until_signal(self) -> Result<(), EngineError> {
        self.run_until_signal_with(std::future::pending::<Result<(), std::convert::Infallible>>())
    }

    /// Like [`run_until_signal`](Self::run_until_signal), and runs `task` (e.g. the cluster
    /// watcher) on the same single-threaded control runtime. The engine stops on SIGINT/SIGTERM
    /// (the task is dropped) or when the task fails (its error is returned after a clean stop);
    /// a task that finishes with `Ok` just ends.
    pub fn run_until_signal_with<F, E>(mut self, task: F) -> Result<(), EngineError>
    where
        F: std::future::Future<Output = Result<(), E>>,
        E: std::error::Error + Send + Sync + 'static,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| EngineError::Io {
                what: "starting the control runtime",
                source,
            })?;
        let state = Arc::clone(&self.core.state);
        let listener = self.listener.take();
        let metrics = self.metrics.take();
        let ageing = Duration::from_secs(self.ageing_secs);
        let control = self.control();
        let mut reloader = self.reloader.take();
        let source_ports = Arc::clone(&self.core.source_ports);
        let cleanup = self.cleanup;
        let result = runtime.block_on(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let install = |kind: SignalKind, what: &'static str| {
                signal(kind).map_err(|source| EngineError::Io { what, source })
            };
            let mut term = install(SignalKind::terminate(), "installing the SIGTERM handler")?;
            let mut int = install(SignalKind::interrupt(), "installing the SIGINT handler")?;
            // Installed before READY=1: from then on a SIGHUP never kills the engine.
            let mut hup = install(SignalKind::hangup(), "installing the SIGHUP handler")?;
            let (reload_calls, mut reload_requests) = tokio::sync::mpsc::channel(4);
            if let Some(listener) = listener {
                let calls = reloader.is_some().then_some(reload_calls);
                tokio::spawn(server::serve(listener, Arc::clone(&state), calls));
            }
            if let Some(metrics) = metrics {
                let listener = tokio::net::TcpListener::from_std(metrics).map_err(|source| {
                    EngineError::Io {
                        what: "serving the metrics endpoint",
                        source,
                    }
                })?;
                // The bound address, not the flag: `--metrics 127.0.0.1:0` picks a port.
                match listener.local_addr() {
                    Ok(addr) => tracing::info!("metrics: serving http://{addr}/metrics"),
                    Err(e) => tracing::warn!("metrics: serving, address unknown: {e}"),
                }
                tokio::spawn(crate::control::metrics::serve(listener, Arc::clone(&state)));
            }
            tokio::spawn(age_fdb(Arc::clone(&state), ageing));
            for name in control.network_names() {
                control.resume_endpoints(&name);
            }
            tokio::spawn(crate::names::serve::run(Arc::clone(&state.names)));
            tokio::spawn(close_idle_source_ports(source_ports));
            let task = async move {
                match task.await {
                    Ok(()) => std::future::pending().await,
                    Err(error) => error,
                }
            };
            tokio::pin!(task);
            let supervisor = super::supervise::supervise(Arc::clone(&control.core));
            tokio::pin!(supervisor);
            crate::service::ready(&format!("forwarding with {} workers", state.workers));
            loop {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                    _ = int.recv() => tracing::info!("SIGINT: stopping"),
                    _ = hup.recv() => {
                        match reloader.as_mut() {
                            Some(r) => {
                                let outcome = reload(r, &control, &state);
                                crate::reload::log_outcome("SIGHUP", &outcome);
                            }
                            None => tracing::info!(
                                "SIGHUP: no --config to re-read (flags or cluster mode); ignored"
                            ),
                        }
                        continue;
                    }
                    Some(answer) = reload_requests.recv() => {
                        if let Some(r) = reloader.as_mut() {
                            let outcome = reload(r, &control, &state);
                            crate::reload::log_outcome("reload", &outcome);
                            let _ = answer.send(match outcome {
                                Ok(report) => match serde_json::to_value(report) {
                                    Ok(data) => crate::control::proto::Reply::Ok { data },
                                    Err(e) => crate::control::proto::Reply::Error { message: e.to_string() },
                                },
                                Err(message) => crate::control::proto::Reply::Error { message },
                            });
                        }
                        continue;
                    }
                    error = &mut task => return Err(EngineError::ControlPlane(Box::new(error))),
                    error = &mut supervisor => return Err(error),
                }
                break;
            }
            crate::service::stopping();
            if cleanup {
                for name in control.network_names() {
                    if let Err(e) = control.forget_network(&name) {
                        tracing::warn!(network = %name, error = %e, "cleanup");
                    }
                }
            }
            Ok::<(), EngineError>(())
        });
        drop(runtime);
        self.core.shut_down();
        result
    }
}

/// One reload, framed for the service manager.
fn reload(
    reloader: &mut Reloader,
    control: &EngineControl,
    state: &EngineState,
) -> Result<crate::control::proto::ReloadReport, String> {
    crate::service::reloading();
    let outcome = reloader.reload(control);
    crate::service::ready(&format!("forwarding with {} workers", state.workers));
    outcome
}

/// How often source-port sockets no flow used since the last sweep are closed.
const SOURCE_PORT_IDLE: Duration = Duration::from_secs(30);

/// Closes the source-port sockets of flows that ended, so their memory and fds go back.
async fn close_idle_source_ports(ports: Arc<SourcePorts>) {
    let mut tick = tokio::time::interval(SOURCE_PORT_IDLE);
    loop {
        tick.tick().await;
        let closed = ports.close_idle();
        if closed > 0 {
            tracing::debug!(
                closed,
                open = ports.open(),
                "closed idle source-port sockets"
            );
        }
    }
}

/// Sweeps learned entries idle for `ageing`; a few times per ageing period so an entry lives
/// at most about a quarter period longer than asked.
async fn age_fdb(state: Arc<EngineState>, ageing: Duration) {
    let period = (ageing / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let ageing_ms = ageing.as_millis() as Millis;
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        let now = state.now();
        for network in state.forwarder().networks() {
            let removed = network.fdb.age_out(now, ageing_ms);
            if removed > 0 {
                tracing::debug!(vni = %network.vni(), removed, "aged out FDB entries");
            }
        }
    }
}
