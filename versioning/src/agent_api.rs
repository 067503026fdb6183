//! The agent's HTTP API (port 9999), wire-compatible with ironic-python-agent.
//!
//! Requests are `{"name": "<extension>.<command>", "params": {...}}`; every reply
//! is a command result with exactly five fields. Errors outside a command result
//! use the WSME fault body `{"faultcode", "faultstring"}`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A command sent to the agent with `POST /v1/commands/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRequest {
    /// Dotted command name, `<extension>.<command>`.
    pub name: String,
    /// Keyword arguments of the command.
    pub params: Map<String, Value>,
}

impl CommandRequest {
    /// Splits `name` into extension and command; `None` when there is no dot.
    pub fn split_name(&self) -> Option<(&str, &str)> {
        self.name.split_once('.')
    }
}

/// The state of one command, as the agent reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandStatus {
    /// Still executing (only asynchronous commands are ever seen in this state).
    #[serde(rename = "RUNNING")]
    Running,
    /// Finished without error.
    #[serde(rename = "SUCCEEDED")]
    Succeeded,
    /// Finished with an error in `command_error`.
    #[serde(rename = "FAILED")]
    Failed,
    /// The hardware manager versions changed between listing and executing steps.
    #[serde(rename = "CLEAN_VERSION_MISMATCH", alias = "VERSION_MISMATCH")]
    CleanVersionMismatch,
}

impl CommandStatus {
    /// True once the command can no longer change.
    pub fn is_done(self) -> bool {
        self != CommandStatus::Running
    }
}

/// Well-known error types an agent reports in `command_error.type`.
///
/// The names are IPA's exception class names; operators and Ironic see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentErrorKind {
    /// Any unexpected failure inside an asynchronous command.
    CommandExecutionError,
    /// The image could not be downloaded.
    ImageDownloadError,
    /// The downloaded bytes do not match the expected checksum.
    ImageChecksumError,
    /// The image could not be written to the device.
    ImageWriteError,
    /// The image is not what it claims, or is unsafe to write.
    InvalidImage,
    /// The command's parameters are invalid.
    InvalidCommandParamsError,
    /// No suitable disk or partition was found.
    DeviceNotFound,
    /// A deploy step failed.
    DeploymentError,
    /// A clean step failed.
    CleaningError,
    /// The command does not accept a parameter it was given (old-agent signal for Ironic).
    TypeError,
    /// Hardware manager versions changed between listing and executing steps.
    VersionMismatch,
    /// Rebooting or powering off failed.
    SystemRebootError,
}

impl AgentErrorKind {
    /// The `type` string on the wire.
    pub fn type_name(self) -> &'static str {
        match self {
            Self::CommandExecutionError => "CommandExecutionError",
            Self::ImageDownloadError => "ImageDownloadError",
            Self::ImageChecksumError => "ImageChecksumError",
            Self::ImageWriteError => "ImageWriteError",
            Self::InvalidImage => "InvalidImage",
            Self::InvalidCommandParamsError => "InvalidCommandParamsError",
            Self::DeviceNotFound => "DeviceNotFound",
            Self::DeploymentError => "DeploymentError",
            Self::CleaningError => "CleaningError",
            Self::TypeError => "TypeError",
            Self::VersionMismatch => "VersionMismatch",
            Self::SystemRebootError => "SystemRebootError",
        }
    }

    /// The numeric `code` IPA uses for this error type.
    pub fn code(self) -> u16 {
        match self {
            Self::InvalidCommandParamsError | Self::TypeError => 400,
            Self::DeviceNotFound => 404,
            Self::VersionMismatch => 409,
            _ => 500,
        }
    }

    /// The short, fixed `message` IPA uses for this error type.
    pub fn message(self) -> &'static str {
        match self {
            Self::CommandExecutionError => "Command execution failed",
            Self::ImageDownloadError => "Error downloading image",
            Self::ImageChecksumError => "Error verifying image checksum",
            Self::ImageWriteError => "Error writing image to device",
            Self::InvalidImage => "The image is invalid",
            Self::InvalidCommandParamsError => "Invalid command parameters",
            Self::DeviceNotFound => {
                "Error finding the disk or partition device to deploy the image onto"
            }
            Self::DeploymentError => "Deploy step failed",
            Self::CleaningError => "Clean step failed",
            Self::TypeError => "Unexpected argument",
            Self::VersionMismatch => "Hardware managers version mismatch",
            Self::SystemRebootError => "Error rebooting system",
        }
    }
}

/// The error object inside a failed command result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandError {
    /// Error class name, e.g. `ImageChecksumError`.
    #[serde(rename = "type")]
    pub error_type: String,
    /// HTTP-like status code.
    pub code: u16,
    /// Short fixed text for the error class.
    pub message: String,
    /// What happened, for a person; Ironic puts this into `last_error`.
    pub details: String,
}

impl CommandError {
    /// Builds an error of a well-known kind with the given details.
    pub fn new(kind: AgentErrorKind, details: impl Into<String>) -> Self {
        Self {
            error_type: kind.type_name().to_owned(),
            code: kind.code(),
            message: kind.message().to_owned(),
            details: details.into(),
        }
    }
}

/// The result of one command: exactly IPA's five fields, in IPA's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    /// UUID of the command.
    pub id: String,
    /// Short command name (`prepare_image`, not `standby.prepare_image`).
    pub command_name: String,
    /// Where the command stands.
    pub command_status: CommandStatus,
    /// The error, when the command failed.
    pub command_error: Option<CommandError>,
    /// The command's result, when it has one.
    pub command_result: Option<Value>,
}

/// Progress of a running image write: Ironclad's agent puts
/// `{"progress": ImageWriteProgress}` in `command_result` while an image-writing
/// command is `RUNNING` (IPA reports `null` there and Ironic ignores
/// `command_result` until the command is done, so this is an additive extension).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageWriteProgress {
    /// What the writer is doing: `downloading`, `verifying`, `finishing`.
    pub stage: String,
    /// Bytes of the (possibly compressed) image received so far.
    #[serde(default)]
    pub bytes_received: u64,
    /// Bytes of the disk written so far (guest bytes, zero runs included).
    pub bytes_written: u64,
    /// Size of the download in bytes, when the server announced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
    /// Average download rate since the start, in bytes per second.
    pub rate_bytes_per_s: u64,
    /// Estimated seconds until the download ends, when the total is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_s: Option<u64>,
}

/// The `command_result` of a running image-writing command (Ironclad extension).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningCommandResult {
    /// Progress of the image write.
    pub progress: ImageWriteProgress,
}

/// Reply of `GET /v1/commands/`: every command since the agent started, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandList {
    /// The commands, oldest first.
    pub commands: Vec<CommandResult>,
}

/// Whether a fault is the caller's doing or the agent's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FaultCode {
    /// The request was wrong (HTTP status below 500).
    Client,
    /// The agent failed (HTTP status 500 and above).
    Server,
}

impl FaultCode {
    /// The fault code that belongs to an HTTP status.
    pub fn for_status(status: u16) -> Self {
        if status >= 500 {
            Self::Server
        } else {
            Self::Client
        }
    }
}

/// The error body of every agent reply with status 400 and above.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentFault {
    /// `Client` or `Server`.
    pub faultcode: FaultCode,
    /// What went wrong; Ironic requires it on every error reply.
    pub faultstring: String,
}

/// Reply of `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// When the agent started, in seconds since the epoch.
    pub started_at: f64,
    /// The agent's version string.
    pub version: String,
}

/// A hypermedia link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// Target of the link.
    pub href: String,
    /// Relation: `self`, `bookmark`, `describedby`.
    pub rel: String,
    /// Media type of the target, when given.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

impl Link {
    /// A link without a media type.
    pub fn new(href: impl Into<String>, rel: impl Into<String>) -> Self {
        Self {
            href: href.into(),
            rel: rel.into(),
            media_type: None,
        }
    }
}

/// The `v1` entry of the agent's root document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentVersionRef {
    /// Always `v1`.
    pub id: String,
    /// Links to the version and its documentation.
    pub links: Vec<Link>,
}

/// Reply of the agent's `GET /`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRoot {
    /// API name.
    pub name: String,
    /// API description.
    pub description: String,
    /// Available versions (only `v1`).
    pub versions: Vec<AgentVersionRef>,
    /// The version used when none is asked for.
    pub default_version: AgentVersionRef,
}

/// A media type entry in the agent's `GET /v1/` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaType {
    /// Base media type.
    pub base: String,
    /// Vendor media type.
    #[serde(rename = "type")]
    pub media_type: String,
}

/// Reply of the agent's `GET /v1/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentV1 {
    /// Links to the command collection.
    pub commands: Vec<Link>,
    /// Links to the status resource.
    pub status: Vec<Link>,
    /// Supported media types.
    pub media_types: Vec<MediaType>,
    /// Always `v1`.
    pub id: String,
    /// Links to the version and its documentation.
    pub links: Vec<Link>,
}

impl AgentRoot {
    /// The root document for an agent reachable at `root_url` (no trailing slash).
    pub fn new(root_url: &str) -> Self {
        let v1 = AgentVersionRef::for_root(root_url);
        Self {
            name: "OpenStack Ironic Python Agent API".to_owned(),
            description: "Ironic Python Agent is a provisioning agent for OpenStack Ironic"
                .to_owned(),
            versions: vec![v1.clone()],
            default_version: v1,
        }
    }
}

impl AgentVersionRef {
    /// The `v1` reference for an agent reachable at `root_url`.
    pub fn for_root(root_url: &str) -> Self {
        Self {
            id: "v1".to_owned(),
            links: vec![
                Link::new(format!("{root_url}/v1"), "self"),
                Link {
                    href: "https://docs.openstack.org/ironic-python-agent/".to_owned(),
                    rel: "describedby".to_owned(),
                    media_type: Some("text/html".to_owned()),
                },
            ],
        }
    }
}

impl AgentV1 {
    /// The `/v1/` document for an agent reachable at `root_url`.
    pub fn new(root_url: &str) -> Self {
        let pair = |name: &str| {
            vec![
                Link::new(format!("{root_url}/v1/{name}"), "self"),
                Link::new(format!("{root_url}/{name}"), "bookmark"),
            ]
        };
        Self {
            commands: pair("commands"),
            status: pair("status"),
            media_types: vec![MediaType {
                base: "application/json".to_owned(),
                media_type: "application/vnd.openstack.ironic-python-agent.v1+json".to_owned(),
            }],
            id: "v1".to_owned(),
            links: AgentVersionRef::for_root(root_url).links,
        }
    }
}
