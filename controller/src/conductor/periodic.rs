//! Periodic tasks: the deploy call-back timeout.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ironclad_versioning::states::ProvisionState;
use tokio::sync::watch;

use super::Conductor;

/// How often the call-back timeout is checked for a given timeout: a third of it,
/// between 1 and 60 seconds.
pub fn check_interval(timeout: Duration) -> Duration {
    (timeout / 3).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Whether a node last touched at `updated` has been silent longer than `timeout` at `now`.
pub fn expired(updated: Option<&str>, timeout: Duration, now: DateTime<Utc>) -> bool {
    let Some(updated) = updated.and_then(|t| DateTime::parse_from_rfc3339(t).ok()) else {
        return true;
    };
    let silent = now.signed_duration_since(updated.with_timezone(&Utc));
    silent.to_std().is_ok_and(|silent| silent > timeout)
}

impl Conductor {
    /// Runs the periodic tasks until `shutdown` changes.
    pub async fn run_periodic_tasks(self, mut shutdown: watch::Receiver<bool>) {
        let timeout = self.config().deploy_callback_timeout;
        let mut ticker = tokio::time::interval(check_interval(timeout));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.check_deploy_timeouts().await,
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Fails every node silent in `wait call-back` for longer than the deploy call-back timeout.
    pub async fn check_deploy_timeouts(&self) {
        let timeout = self.config().deploy_callback_timeout;
        let nodes = match self
            .store()
            .nodes_in_state(ProvisionState::DeployWait)
            .await
        {
            Ok(nodes) => nodes,
            Err(error) => {
                tracing::error!(%error, "cannot list nodes waiting for a call-back");
                return;
            }
        };
        for node in nodes {
            if !expired(node.provision_updated_at.as_deref(), timeout, Utc::now()) {
                continue;
            }
            let Some(_guard) = self.inner.locks.try_lock(&node.uuid) else {
                continue;
            };
            let Ok(mut node) = self.load(&node.uuid).await else {
                continue;
            };
            if node.provision_state != Some(ProvisionState::DeployWait)
                || !expired(node.provision_updated_at.as_deref(), timeout, Utc::now())
            {
                continue;
            }
            let message = format!(
                "Timeout reached while waiting for callback for node {}: the agent was silent for more than {} s. Check that the node boots the deploy ramdisk and reaches the controller at {}.",
                node.uuid,
                timeout.as_secs(),
                self.config().public_url
            );
            self.fail_deploy(&mut node, message).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_is_bounded() {
        assert_eq!(
            check_interval(Duration::from_secs(1800)),
            Duration::from_secs(60)
        );
        assert_eq!(
            check_interval(Duration::from_secs(1)),
            Duration::from_secs(1)
        );
        assert_eq!(
            check_interval(Duration::from_secs(30)),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn silence_is_measured_from_the_last_update() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:10:00+00:00")
            .unwrap()
            .with_timezone(&Utc);
        let timeout = Duration::from_secs(300);
        assert!(expired(
            Some("2026-01-01T00:00:00.000000+00:00"),
            timeout,
            now
        ));
        assert!(!expired(Some("2026-01-01T00:09:00+00:00"), timeout, now));
        assert!(expired(None, timeout, now));
    }
}
