//! Wiring: opens the store, builds the conductor and the API, serves until shutdown.

use std::future::Future;
use std::net::SocketAddr;

use tokio::sync::watch;

use crate::api::{self, AppState};
use crate::conductor::{Conductor, ConductorError};
use crate::config::Config;
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
    let conductor = Conductor::new(store.clone(), config);
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
    store.close().await;
    served.map_err(ServerError::Serve)
}
