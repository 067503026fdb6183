#![recursion_limit = "256"]
//! Ironclad's controller: an Ironic-compatible REST API over a node inventory,
//! the provision state machine and the heartbeat-driven deploy, and the `ironclad` CLI.
//!
//! Modules, one concern each:
//! - [`config`]: the daemon's command line;
//! - [`store`]: the SQLite inventory of nodes and ports;
//! - [`drivers`]: hardware types composed from interfaces (Redfish, IPMI, iPXE, fake, ...);
//! - [`dhcp`]: dnsmasq host files for PXE filtering, and a supervised dnsmasq;
//! - [`agent_client`]: the HTTP client for the agent's command API;
//! - [`conductor`]: the state machine, node locks, deploy and periodic tasks;
//! - [`api`]: the axum REST API (nodes, ports, ramdisk endpoints, microversions, errors);
//! - [`secrets`]: masking secrets and minting agent tokens;
//! - [`server`]: wiring it all up and serving until a signal;
//! - [`cli`]: the `ironclad` command-line client.

pub mod agent_client;
pub mod api;
pub mod cli;
pub mod conductor;
pub mod config;
pub mod dhcp;
pub mod drivers;
pub mod secrets;
pub mod server;
pub mod store;

/// The current time as Ironic formats it in records (RFC 3339, UTC, microseconds).
pub fn timestamp_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false)
}
