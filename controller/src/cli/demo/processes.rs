//! The demo's child processes: output echoed with a prefix, killed when stopped
//! or when the demo is dropped.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use crate::cli::CliError;

/// Named child processes.
#[derive(Default)]
pub struct Children {
    running: Vec<(String, Child)>,
}

impl Children {
    /// Starts `command` as `name`, echoing its output as `name | line`.
    pub fn spawn(&mut self, name: &str, mut command: Command) -> Result<(), CliError> {
        command
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|error| {
            CliError::Failed(format!(
                "starting the {name} ({command:?}): {error}; build it with `cargo build --release`"
            ))
        })?;
        let streams: Vec<Box<dyn AsyncRead + Send + Unpin>> = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .flatten()
        .collect();
        for stream in streams {
            let prefix = format!("    {name:>10} | ");
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    println!("{prefix}{line}");
                }
            });
        }
        self.running.push((name.to_owned(), child));
        Ok(())
    }

    /// A description of the first child that has exited, if any.
    pub fn exited(&mut self) -> Option<String> {
        self.running.iter_mut().find_map(|(name, child)| {
            child
                .try_wait()
                .ok()
                .flatten()
                .map(|status| format!("the {name} exited unexpectedly ({status})"))
        })
    }

    /// Resolves when any child exits.
    pub async fn wait_any(&mut self) -> String {
        loop {
            if let Some(exited) = self.exited() {
                return exited;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Kills and reaps the child called `name`.
    pub async fn stop(&mut self, name: &str) {
        if let Some(index) = self.running.iter().position(|(n, _)| n == name) {
            let (_, mut child) = self.running.remove(index);
            let _ = child.kill().await;
        }
    }

    /// Kills and reaps every child.
    pub async fn stop_all(&mut self) {
        for (_, mut child) in self.running.drain(..) {
            let _ = child.kill().await;
        }
    }
}
