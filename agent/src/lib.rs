//! Ironclad's ramdisk agent: an IPA-compatible deploy agent.
//!
//! Start-up order (see `main.rs`): read the configuration → look the node up at
//! the controller → set up auto-TLS → start the API server → heartbeat loop.
//! Each module holds one concern; hardware is reached through traits
//! ([`disk::BlockDevices`], [`power::Power`]) so that host mode never touches
//! the host's disks or power.

pub mod api;
pub mod commands;
pub mod config;
pub mod controller_client;
pub mod disk;
pub mod heartbeat;
pub mod image;
pub mod init;
pub mod inventory;
pub mod logs;
pub mod net;
pub mod power;
pub mod tls;
