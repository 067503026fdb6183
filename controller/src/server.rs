//! Wiring: opens the store, builds the conductor and the API, serves until shutdown.

use std::future::Future;
use std::net::SocketAddr;

use tokio::sync::watch;

use crate::api::{self, AppState};
use crate::conductor::{Conductor, ConductorError};
use crate::config::{Config, DhcpMode};
use crate::dhcp::{DhcpError, DhcpFilter, Dnsmasq, DnsmasqConfig};
use crate::drivers::DriverRegistry;
use crate::store::{Store, StoreError};

/// What can stop the server from running.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The database could not be opened.
    #[error("cannot open the database {url}: {source}")]
    Store {
        /// The database URL.
        url: String,
        /// The cause.
        source: StoreError,
    },
    /// Recovering interrupted nodes failed.
    #[error("cannot recover interrupted nodes: {0}")]
    Recover(#[from] ConductorError),
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// DHCP could not be set up.
    #[error("cannot set up DHCP: {0}")]
    Dhcp(#[from] DhcpError),
    /// Serving failed.
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// Runs the controller until `shutdown` completes. `on_listening` is called with
/// the bound address once connections are accepted.
pub async fn run(
    config: Config,
    on_listening: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let store = Store::open(&config.database_url)
        .await
        .map_err(|source| ServerError::Store {
            url: config.database_url.clone(),
            source,
        })?;
    let listen = config.listen;
    let mut settings = config.driver_settings();
    let mut dnsmasq = None;
    match &config.dhcp {
        DhcpMode::None => {}
        DhcpMode::Hostsdir(dir) => settings.dhcp = Some(DhcpFilter::new(dir)?),
        DhcpMode::Managed {
            program,
            interface,
            range,
            dir,
        } => {
            let state_dir = match (dir, store.directory()) {
                (Some(dir), _) => dir.clone(),
                (None, Some(db_dir)) => db_dir.join("dnsmasq"),
                (None, None) => std::env::temp_dir().join("ironclad-dnsmasq"),
            };
            std::fs::create_dir_all(&state_dir).map_err(|source| {
                ServerError::Dhcp(crate::dhcp::DhcpError::Write {
                    path: state_dir.clone(),
                    source,
                })
            })?;
            let started = Dnsmasq::start(DnsmasqConfig {
                program: program.clone(),
                interface: interface.clone(),
                range: range.clone(),
                state_dir,
                boot_script_url: format!("{}/boot.ipxe", config.public_url),
                ipxe_bootfile: None,
                tftp_root: None,
            })
            .await?;
            settings.dhcp = Some(started.filter().clone());
            dnsmasq = Some(started);
        }
    }
    let drivers = DriverRegistry::new(&settings);
    let conductor = Conductor::with_drivers(store.clone(), config, drivers);
    conductor.recover_interrupted().await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: listen,
            source,
        })?;
    let local = listener.local_addr().map_err(ServerError::Serve)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let periodic = tokio::spawn(conductor.clone().run_periodic_tasks(stop_rx));
    let app = api::router(AppState { conductor });
    on_listening(local);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    let _ = stop_tx.send(true);
    let _ = periodic.await;
    if let Some(dnsmasq) = dnsmasq {
        dnsmasq.stop().await;
    }
    store.close().await;
    served.map_err(ServerError::Serve)
}
