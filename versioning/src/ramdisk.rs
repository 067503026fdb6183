//! The controller's ramdisk endpoints: `GET /v1/lookup` and `POST /v1/heartbeat/{node}`.
//!
//! Every key of the lookup `config` is optional and unknown keys are ignored, so
//! that agents of any age understand controllers of any age.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The literal a controller sends instead of a token it has already handed out.
pub const MASKED_TOKEN: &str = "******";

/// Shortest agent token an agent accepts from a lookup.
pub const MIN_TOKEN_LEN: usize = 32;

/// Reply of `GET /v1/lookup`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LookupResponse {
    /// The node the agent runs on.
    pub node: LookupNode,
    /// Policy the controller pushes to the agent.
    #[serde(default)]
    pub config: LookupConfig,
    /// Where controllers before 2016 put the heartbeat timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_timeout: Option<f64>,
}

/// The part of the node an agent sees at lookup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LookupNode {
    /// Node UUID, used in heartbeat URLs.
    pub uuid: String,
    /// Node properties (root device hints live here).
    #[serde(default)]
    pub properties: Map<String, Value>,
    /// Instance information (root device hints may live here too).
    #[serde(default)]
    pub instance_info: Map<String, Value>,
    /// Conductor scratch space, with secrets masked.
    #[serde(default)]
    pub driver_internal_info: Map<String, Value>,
    /// Links to the node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<crate::agent_api::Link>,
}

/// The `config` object of a lookup reply. Every key is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LookupConfig {
    /// Seconds after which the controller considers a silent agent gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_timeout: Option<f64>,
    /// The agent token, `******` when already handed out, or null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_token: Option<String>,
    /// Always true on controllers that issue tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_token_required: Option<bool>,
    /// Whether MD5 image checksums are allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_md5_checksum_enable: Option<bool>,
    /// Whether the agent may skip deep image inspection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_deep_image_inspection: Option<bool>,
    /// Image formats the agent may write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permitted_image_formats: Option<Vec<String>>,
    /// Whether the agent should skip probing the BMC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_skip_bmc_detect: Option<bool>,
    /// Whether the agent may install a BIOS bootloader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_bios_bootloader_install: Option<bool>,
    /// Minimum TLS version the agent's server accepts (`1.2` or `1.3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_min_version: Option<String>,
    /// Cipher suites the agent's server accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cipher_suites: Option<Value>,
}

impl LookupResponse {
    /// The heartbeat timeout, from `config` or from the pre-2016 top-level placement.
    pub fn effective_heartbeat_timeout(&self) -> Option<f64> {
        self.config.heartbeat_timeout.or(self.heartbeat_timeout)
    }
}

/// Body of `POST /v1/heartbeat/{node}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    /// Where the controller reaches the agent, e.g. `https://10.0.0.5:9999`.
    pub callback_url: String,
    /// The agent token (API 1.62 and later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_token: Option<String>,
    /// The agent's version (API 1.36 and later); required by the controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// PEM of the agent's self-signed certificate (API 1.68 and later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_verify_ca: Option<String>,
    /// Deploy-interface status (`start`, `end`, `error`; API 1.72 and later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_status: Option<String>,
    /// Message accompanying `agent_status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_status_message: Option<String>,
}
