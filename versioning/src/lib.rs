//! Ironclad's wire contract.
//!
//! Every type that crosses the wire between the agent, the controller and their
//! clients lives here, together with the API version rules. Changes are additive
//! only: new fields are optional and readers ignore fields they do not know.
//! Golden JSON fixtures in `fixtures/` pin every message; see `tests/fixtures.rs`.

pub mod agent_api;
pub mod controller_api;
pub mod image_info;
pub mod inventory;
pub mod microversion;
pub mod ramdisk;
pub mod states;
pub mod steps;

/// The version of Ironclad, reported by the agent as `agent_version`.
pub const IRONCLAD_VERSION: &str = env!("CARGO_PKG_VERSION");
