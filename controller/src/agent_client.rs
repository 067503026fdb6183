//! HTTP client for the agent's command API (`<agent_url>/v1/commands/`).
//!
//! Mirrors how Ironic calls IPA: the token rides as the `agent_token` query
//! parameter, each request times out after 60 s, connection failures are retried
//! up to three times, and a lost POST is recognised by finding the same command
//! RUNNING on the agent. When the agent sent its self-signed certificate
//! (`agent_verify_ca`), that certificate is the only one trusted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ironclad_versioning::agent_api::{
    AgentFault, CommandList, CommandRequest, CommandResult, CommandStatus,
};
use serde_json::{Map, Value};

/// Per-request timeout.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts on connection errors.
pub const MAX_ATTEMPTS: u32 = 3;

/// What can go wrong talking to an agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentClientError {
    /// The agent is running another command; try again on the next heartbeat.
    #[error("the agent is busy: {0}")]
    AgentBusy(String),
    /// The agent could not be reached.
    #[error("cannot reach the agent at {url}: {message}")]
    Connection {
        /// The URL called.
        url: String,
        /// The cause.
        message: String,
    },
    /// The agent answered with an error status.
    #[error("the agent refused {command}: HTTP {status}: {faultstring}")]
    Http {
        /// Command or resource.
        command: String,
        /// HTTP status.
        status: u16,
        /// The agent's fault string.
        faultstring: String,
    },
    /// The agent's reply is not what the protocol says.
    #[error("invalid reply from the agent for {command}: {message}")]
    InvalidReply {
        /// Command or resource.
        command: String,
        /// The cause.
        message: String,
    },
    /// The agent's certificate cannot be used.
    #[error("cannot use the agent's certificate: {0}")]
    Certificate(String),
}

/// Where and how to reach one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEndpoint {
    /// The agent's callback URL, e.g. `https://10.0.0.5:9999`.
    pub url: String,
    /// The agent token.
    pub token: Option<String>,
    /// PEM of the agent's certificate, when it sent one.
    pub verify_ca: Option<String>,
}

/// Client for agents; one HTTP client per pinned certificate.
#[derive(Debug, Clone, Default)]
pub struct AgentClient {
    clients: Arc<Mutex<HashMap<Option<String>, reqwest::Client>>>,
}

impl AgentClient {
    /// A client with no connections yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn http(&self, verify_ca: Option<&str>) -> Result<reqwest::Client, AgentClientError> {
        let key = verify_ca.map(str::to_owned);
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let mut builder = reqwest::Client::builder()
            .timeout(COMMAND_TIMEOUT)
            .connect_timeout(Duration::from_secs(10));
        if let Some(pem) = verify_ca {
            let cert = reqwest::Certificate::from_pem(pem.as_bytes())
                .map_err(|e| AgentClientError::Certificate(e.to_string()))?;
            builder = builder
                .tls_built_in_root_certs(false)
                .add_root_certificate(cert);
        }
        let client = builder
            .build()
            .map_err(|e| AgentClientError::Certificate(e.to_string()))?;
        clients.insert(key, client.clone());
        Ok(client)
    }

    fn commands_url(endpoint: &AgentEndpoint) -> String {
        format!("{}/v1/commands/", endpoint.url.trim_end_matches('/'))
    }

    /// Runs `name` (`<extension>.<command>`) on the agent; with `wait` the reply is final.
    pub async fn execute(
        &self,
        endpoint: &AgentEndpoint,
        name: &str,
        params: Map<String, Value>,
        wait: bool,
    ) -> Result<CommandResult, AgentClientError> {
        let client = self.http(endpoint.verify_ca.as_deref())?;
        let url = Self::commands_url(endpoint);
        let body = CommandRequest {
            name: name.to_owned(),
            params,
        };
        let wait_text = if wait { "true" } else { "false" };
        let mut last_error = String::new();
        for attempt in 1..=MAX_ATTEMPTS {
            let mut request = client.post(&url).query(&[("wait", wait_text)]);
            if let Some(token) = &endpoint.token {
                request = request.query(&[("agent_token", token)]);
            }
            match request.json(&body).send().await {
                Ok(response) => return parse_reply(name, response).await,
                Err(error) => {
                    last_error = error_chain(&error);
                    tracing::warn!(command = name, attempt, error = %last_error, "agent command failed to send");
                    // The agent may have received the command before the connection broke.
                    if let Ok(commands) = self.list_commands(endpoint).await {
                        let short = name.rsplit('.').next().unwrap_or(name);
                        if let Some(last) = commands.last() {
                            if last.command_status == CommandStatus::Running
                                && (last.command_name == short || last.command_name == name)
                            {
                                return Ok(last.clone());
                            }
                        }
                    }
                }
            }
        }
        Err(AgentClientError::Connection {
            url,
            message: last_error,
        })
    }

    /// Every command the agent ran since it booted, oldest first.
    pub async fn list_commands(
        &self,
        endpoint: &AgentEndpoint,
    ) -> Result<Vec<CommandResult>, AgentClientError> {
        let client = self.http(endpoint.verify_ca.as_deref())?;
        let url = Self::commands_url(endpoint);
        let mut last_error = String::new();
        for attempt in 1..=MAX_ATTEMPTS {
            let mut request = client.get(&url);
            if let Some(token) = &endpoint.token {
                request = request.query(&[("agent_token", token)]);
            }
            match request.send().await {
                Ok(response) => {
                    let list: CommandList = parse_reply("list commands", response).await?;
                    return Ok(list.commands);
                }
                Err(error) => {
                    last_error = error_chain(&error);
                    tracing::warn!(attempt, error = %last_error, "cannot list agent commands");
                }
            }
        }
        Err(AgentClientError::Connection {
            url,
            message: last_error,
        })
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn parse_reply<T: serde::de::DeserializeOwned>(
    command: &str,
    response: reqwest::Response,
) -> Result<T, AgentClientError> {
    let status = response.status().as_u16();
    let text = response
        .text()
        .await
        .map_err(|e| AgentClientError::InvalidReply {
            command: command.to_owned(),
            message: error_chain(&e),
        })?;
    if status >= 400 {
        let faultstring = serde_json::from_str::<AgentFault>(&text)
            .map(|f| f.faultstring)
            .unwrap_or(text);
        if status == 409 || faultstring.to_ascii_lowercase().contains("agent is busy") {
            return Err(AgentClientError::AgentBusy(faultstring));
        }
        return Err(AgentClientError::Http {
            command: command.to_owned(),
            status,
            faultstring,
        });
    }
    serde_json::from_str(&text).map_err(|e| AgentClientError::InvalidReply {
        command: command.to_owned(),
        message: e.to_string(),
    })
}
