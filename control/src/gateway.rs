//! A running gateway: binds everything a configuration names (before anything starts), starts
//! the data plane's workers with every public listener (DMZ and forwarding services, WebSocket
//! ones sharing a port by path), and runs the control thread (SOCKS5 reverse endpoint, reverse
//! pools, admin endpoint) on a single-threaded tokio runtime.
//!
//! The same code serves `sallyport run` and `sallyport demo` (which runs two gateways in one
//! process). It does not parse configuration or handle signals.

use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;

use sallyport_dataplane::wire::socks5;
use sallyport_dataplane::{Dataplane, DataplaneConfig, PublicIndex, PublicService, StartError};

use crate::config::{Config, ConfigError, Reason, ServiceRole};
use crate::dmz::{BindTarget, ReverseEndpoint};
use crate::internal::ReverseService;
use crate::netfilter::policy::Policy;
use crate::stats::{ControlStats, InternalStats, ServiceKind, StatsSource};

/// Why a gateway could not start. `Config` errors name the file and key (exit 2); the others
/// are failures of the host (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A listener the file names cannot be bound.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The control thread's runtime could not be built.
    #[error("cannot start the control runtime: {0}")]
    ControlRuntime(std::io::Error),
    /// The control thread could not be spawned.
    #[error("cannot start the control thread: {0}")]
    ControlThread(std::io::Error),
    /// The control thread ended before it was ready.
    #[error("control thread died")]
    ControlDied,
    /// A bound listener could not be handed to the control thread's runtime.
    #[error("{what} listener: {source}")]
    Listener {
        what: &'static str,
        source: std::io::Error,
    },
    /// The data plane could not start (other than a listener it could not bind).
    #[error(transparent)]
    Dataplane(StartError),
    /// `admission = "verified"`: its iptables rules or netfilter queue could not be set up.
    #[error(transparent)]
    Verified(crate::netfilter::nfqueue::NetfilterError),
}

/// A started gateway.
pub struct Gateway {
    /// Where internal gateways dial in (DMZ role).
    pub reverse_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    /// Public listeners (DMZ and forwarding services): service name and bound address, in file
    /// order (services sharing a WebSocket port show the same address).
    pub public: Vec<(String, SocketAddr)>,
    source: Arc<StatsSource>,
    dataplane: Arc<Dataplane>,
    /// Per-source verdicts; its nftables table (if any) is removed when the gateway stops.
    policy: Arc<Policy>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    control: Option<JoinHandle<()>>,
    /// Verified admission's iptables chain: removed when the gateway stops.
    verified: Option<crate::netfilter::nfqueue::Installed>,
}

fn bind_error(config: &Config, key: &str, addr: SocketAddr, e: std::io::Error) -> StartupError {
    StartupError::Config(ConfigError {
        file: config.path.clone(),
        key: key.to_string(),
        reason: Reason::Listen { addr, error: e },
    })
}

/// The data plane's settings for `config`'s gateway and public services.
fn dataplane_config(
    config: &Config,
    services: Vec<PublicService>,
    reverse_events: Option<sallyport_dataplane::ReverseEvents>,
) -> DataplaneConfig {
    let g = &config.gateway;
    DataplaneConfig {
        workers: g.workers,
        cores: Some(
            g.cores
                .clone()
                .unwrap_or_else(|| (0..sallyport_dataplane::available_cores()).collect()),
        ),
        relay: g.relay,
        ring: g.ring_setup,
        services,
        reverse_events,
    }
}

impl Gateway {
    /// Binds, starts the workers and the control thread, and returns once all are running.
    pub fn start(config: &Config) -> Result<Gateway, StartupError> {
        for line in config.describe() {
            tracing::info!("service {line}");
        }
        // The data plane's public services, in file order: DMZ and forwarding services. Their
        // position is the index the data plane knows them by.
        let public_services: Vec<PublicService> = config
            .services
            .iter()
            .filter_map(|s| s.role.public_service(&s.name))
            .collect();
        let reverse_listener = match &config.reverse {
            Some(r) => Some(
                TcpListener::bind(r.listen)
                    .map_err(|e| bind_error(config, "reverse.listen", r.listen, e))?,
            ),
            None => None,
        };
        let admin_listener = match config.gateway.admin {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .map_err(|e| bind_error(config, "gateway.admin", addr, e))?,
            ),
            None => None,
        };
        let (events_tx, events_rx) = crate::internal::event_channel();
        let has_reverse = config
            .services
            .iter()
            .any(|s| matches!(s.role, ServiceRole::Internal(_)));
        let reverse_events: Option<sallyport_dataplane::ReverseEvents> = has_reverse.then(|| {
            let events: sallyport_dataplane::ReverseEvents = Arc::new(move |event| {
                let _ = events_tx.send(event);
            });
            events
        });
        let dataplane = Dataplane::start(dataplane_config(
            config,
            public_services.clone(),
            reverse_events,
        ))
        .map_err(|e| match e {
            StartError::Listen {
                service,
                addr,
                source,
            } => {
                let key = format!("service[{service}].accept");
                bind_error(config, &key, addr, source)
            }
            other => StartupError::Dataplane(other),
        })?;
        let dataplane = Arc::new(dataplane);
        // Per-source verdicts: a kernel table when permitted (the listeners' ports are known
        // now), else the data plane's userspace check (which runs until then anyway).
        let policy = Arc::new(Policy::start(&public_services, Arc::clone(&dataplane)));
        // Verified admission: the SYN-holding rules for the bound ports, and their reader.
        let bound: Vec<SocketAddr> = (0..public_services.len())
            .map(|i| dataplane.service_addr(PublicIndex(i)))
            .collect();
        let (verified, verified_reader, verified_views) =
            match crate::netfilter::nfqueue::install(&public_services, &bound)
                .map_err(StartupError::Verified)?
            {
                Some(v) => (Some(v.installed), Some(v.reader), v.views),
                None => (None, None, Vec::new()),
            };
        let control_stats = Arc::new(ControlStats::default());

        let mut services = Vec::new();
        let mut targets = Vec::new();
        let mut pools = Vec::new();
        let mut public_index = 0;

        for s in &config.services {
            match &s.role {
                ServiceRole::Dmz(d) => {
                    let index = PublicIndex(public_index);
                    public_index += 1;
                    targets.push(BindTarget {
                        service: s.name.clone(),
                        bind_name: d.bind_name.clone(),
                        index,
                        public: dataplane.service_addr(index),
                        credentials: d.credentials.as_ref().map(|c| socks5::Credentials {
                            user: c.user.as_bytes().to_vec(),
                            password: c.password.expose().as_bytes().to_vec(),
                        }),
                    });
                    services.push((s.name.clone(), ServiceKind::Dmz(index)));
                }
                ServiceRole::Forward(_) => {
                    services.push((
                        s.name.clone(),
                        ServiceKind::Forward(PublicIndex(public_index)),
                    ));
                    public_index += 1;
                }
                ServiceRole::Internal(i) => {
                    let stats = Arc::new(InternalStats::default());
                    pools.push(ReverseService {
                        name: s.name.clone(),
                        config: i.clone(),
                        stats: Arc::clone(&stats),
                        dataplane: Arc::clone(&dataplane),
                    });
                    services.push((s.name.clone(), ServiceKind::Internal(stats)));
                }
            }
        }
        debug_assert_eq!(public_index, public_services.len());
        let source = Arc::new(
            StatsSource::new(services, Arc::clone(&control_stats), Arc::clone(&dataplane))
                .with_policy(Arc::clone(&policy))
                .with_verified(verified_views),
        );
        let public: Vec<(String, SocketAddr)> = public_services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), dataplane.service_addr(PublicIndex(i))))
            .collect();
        let reverse_addr = reverse_listener.as_ref().and_then(|l| l.local_addr().ok());
        let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
        for (name, addr) in &public {
            tracing::info!(service = %name, %addr, workers = dataplane.workers(), "public listener open");
        }
        if let Some(addr) = reverse_addr {
            let tls = match config.reverse.as_ref().and_then(|r| r.tls.as_ref()) {
                None => "off",
                Some(t) if t.mutual() => "mutual (client certificate required)",
                Some(_) => "on (no client certificate)",
            };
            tracing::info!(%addr, tls, "reverse endpoint (SOCKS5 BIND) open");
        }
        if let Some(addr) = admin_addr {
            tracing::info!(%addr, "admin endpoint open (GET /metrics, /stats)");
        }

        let endpoint = config.reverse.as_ref().map(|r| ReverseEndpoint {
            targets,
            handshake_timeout: r.handshake_timeout,
            tls: r.tls.as_ref().map(|t| Arc::clone(&t.config)),
            dataplane: Arc::clone(&dataplane),
            stats: Arc::clone(&control_stats),
            keepalive: r.keepalive,
            refusal_log: Default::default(),
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), StartupError>>();
        let admin_source = Arc::clone(&source);
        let control = std::thread::Builder::new()
            .name("sallyport-control".to_string())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(StartupError::ControlRuntime(e)));
                        return;
                    }
                };
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, async move {
                    let to_tokio = |l: TcpListener| {
                        l.set_nonblocking(true)?;
                        tokio::net::TcpListener::from_std(l)
                    };
                    if let (Some(listener), Some(endpoint)) = (reverse_listener, endpoint) {
                        match to_tokio(listener) {
                            Ok(l) => {
                                tokio::task::spawn_local(crate::dmz::serve(l, Rc::new(endpoint)));
                            }
                            Err(e) => {
                                let _ = ready_tx.send(Err(StartupError::Listener {
                                    what: "reverse",
                                    source: e,
                                }));
                                return;
                            }
                        }
                    }
                    if let Some(listener) = admin_listener {
                        match to_tokio(listener) {
                            Ok(l) => {
                                tokio::task::spawn_local(crate::admin::serve(l, admin_source));
                            }
                            Err(e) => {
                                let _ = ready_tx.send(Err(StartupError::Listener {
                                    what: "admin",
                                    source: e,
                                }));
                                return;
                            }
                        }
                    }
                    if let Some(reader) = verified_reader {
                        match reader.start() {
                            Ok(read) => {
                                tokio::task::spawn_local(read);
                            }
                            Err(e) => {
                                let _ = ready_tx.send(Err(StartupError::Verified(e)));
                                return;
                            }
                        }
                    }
                    if !pools.is_empty() {
                        tokio::task::spawn_local(crate::internal::run_pools(pools, events_rx));
                    }
                    let _ = ready_tx.send(Ok(()));
                    let _ = stop_rx.await;
                });
            })
            .map_err(StartupError::ControlThread)?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(StartupError::ControlDied),
        }
        Ok(Gateway {
            reverse_addr,
            admin_addr,
            public,
            source,
            dataplane,
            policy,
            stop: Some(stop_tx),
            control: Some(control),
            verified,
        })
    }

    pub fn stats(&self) -> &StatsSource {
        &self.source
    }

    /// False once the control thread has ended on its own (a failure).
    pub fn is_running(&self) -> bool {
        self.control.as_ref().is_some_and(|c| !c.is_finished())
    }

    /// Stops the control thread (pools, reverse endpoint, admin) and then every worker.
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        // First the SYN-holding rules, so no new SYN waits for a reader that is stopping.
        drop(self.verified.take());
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(control) = self.control.take() {
            let _ = control.join();
        }
        self.dataplane.shutdown();
        self.policy.remove();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop_all();
    }
}
