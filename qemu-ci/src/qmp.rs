//! A small client for QEMU's machine protocol (QMP) over a unix socket: one JSON
//! object per line; commands answered by `return` or `error`, with asynchronous
//! `event` messages interleaved (kept for the caller).

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// Why a QMP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be used.
    #[error("QMP socket {path}: {source}")]
    Io {
        /// The socket path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// QEMU answered with something that is not QMP.
    #[error("QMP protocol error: {0}")]
    Protocol(String),
    /// QEMU refused a command.
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command {
        /// The command.
        command: String,
        /// QEMU's error class.
        class: String,
        /// QEMU's description.
        desc: String,
    },
    /// QEMU closed the connection (it exited).
    #[error("QEMU closed the QMP connection")]
    Closed,
    /// No answer in time.
    #[error("QMP command {0} timed out")]
    Timeout(String),
}

/// A connected QMP session, in command mode.
pub struct Qmp {
    path: String,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    events: Vec<Value>,
}

impl Qmp {
    /// Connects, reads the greeting and enters command mode.
    pub async fn connect(path: &Path) -> Result<Self, QmpError> {
        let display = path.display().to_string();
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| QmpError::Io {
                path: display.clone(),
                source,
            })?;
        let (read, write) = stream.into_split();
        let mut qmp = Self {
            path: display,
            reader: BufReader::new(read),
            writer: write,
            events: Vec::new(),
        };
        let greeting = qmp.read_message().await?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!(
                "unexpected greeting {greeting}"
            )));
        }
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    async fn read_message(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .await
            .map_err(|source| QmpError::Io {
                path: self.path.clone(),
                source,
            })?;
        if n == 0 {
            return Err(QmpError::Closed);
        }
        serde_json::from_str(&line).map_err(|e| QmpError::Protocol(format!("{e}: {line}")))
    }

    /// Runs a command and returns its `return` value. Events that arrive
    /// meanwhile are kept (see [`Qmp::take_events`]).
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Map<String, Value>>,
    ) -> Result<Value, QmpError> {
        let mut request = json!({ "execute": command });
        if let Some(arguments) = arguments {
            request["arguments"] = Value::Object(arguments);
        }
        let mut line = request.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .await
            .map_err(|source| QmpError::Io {
                path: self.path.clone(),
                source,
            })?;
        let answer = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let message = self.read_message().await?;
                if message.get("event").is_some() {
                    self.events.push(message);
                    continue;
                }
                return Ok::<Value, QmpError>(message);
            }
        })
        .await
        .map_err(|_| QmpError::Timeout(command.to_owned()))??;
        if let Some(value) = answer.get("return") {
            return Ok(value.clone());
        }
        match answer.get("error") {
            Some(error) => Err(QmpError::Command {
                command: command.to_owned(),
                class: error["class"].as_str().unwrap_or_default().to_owned(),
                desc: error["desc"].as_str().unwrap_or_default().to_owned(),
            }),
            None => Err(QmpError::Protocol(format!("unexpected answer {answer}"))),
        }
    }

    /// The run state: `prelaunch`, `running`, `paused`, `shutdown`, ...
    pub async fn status(&mut self) -> Result<String, QmpError> {
        let status = self.execute("query-status", None).await?;
        status["status"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| QmpError::Protocol(format!("query-status answered {status}")))
    }

    /// The events received so far, oldest first; the list is emptied.
    pub fn take_events(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.events)
    }
}
