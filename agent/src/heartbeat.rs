//! The heartbeat loop: tells the controller where the agent is, on a jittered
//! schedule, and early when an asynchronous command finishes.

use std::sync::Arc;
use std::time::Duration;

use ironclad_versioning::microversion::{
    ApiVersion, AGENT_TOKEN, AGENT_VERIFY_CA, AGENT_VERSION_IN_HEARTBEAT,
};
use ironclad_versioning::ramdisk::HeartbeatRequest;
use rand::Rng;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::controller_client::ControllerClient;

/// The loop never sleeps longer than this between checks.
pub const MAX_SLEEP: Duration = Duration::from_secs(5);
/// Forced heartbeats are never closer than this to the previous one.
pub const MIN_FORCED_GAP: Duration = Duration::from_secs(5);
/// Controller default for `heartbeat_timeout`.
pub const DEFAULT_HEARTBEAT_TIMEOUT: f64 = 300.0;

/// What the loop needs.
#[derive(Debug, Clone)]
pub struct Heartbeater {
    /// The controller client.
    pub client: ControllerClient,
    /// The node's UUID.
    pub node_uuid: String,
    /// The controller's API version.
    pub controller_version: ApiVersion,
    /// Where the controller reaches the agent.
    pub callback_url: String,
    /// The agent token.
    pub agent_token: String,
    /// The auto-TLS certificate PEM, when serving HTTPS.
    pub verify_ca: Option<String>,
    /// `heartbeat_timeout` from lookup, in seconds.
    pub heartbeat_timeout: f64,
}

impl Heartbeater {
    /// The heartbeat body, with each field gated by the controller's version.
    pub fn request(&self) -> HeartbeatRequest {
        let v = self.controller_version;
        HeartbeatRequest {
            callback_url: self.callback_url.clone(),
            agent_token: (v >= AGENT_TOKEN).then(|| self.agent_token.clone()),
            agent_version: (v >= AGENT_VERSION_IN_HEARTBEAT)
                .then(|| ironclad_versioning::IRONCLAD_VERSION.to_owned()),
            agent_verify_ca: if v >= AGENT_VERIFY_CA {
                self.verify_ca.clone()
            } else {
                None
            },
            agent_status: None,
            agent_status_message: None,
        }
    }

    /// Delay after a successful heartbeat: `heartbeat_timeout × U(0.3, 0.6)`.
    pub fn delay_after_success(&self) -> Duration {
        let timeout = if self.heartbeat_timeout.is_finite() && self.heartbeat_timeout > 0.0 {
            self.heartbeat_timeout
        } else {
            DEFAULT_HEARTBEAT_TIMEOUT
        };
        Duration::from_secs_f64(timeout * rand::thread_rng().gen_range(0.3..=0.6))
    }

    /// Delay after a failed heartbeat: `5 × U(1, 2)` seconds.
    pub fn delay_after_error() -> Duration {
        Duration::from_secs_f64(5.0 * rand::thread_rng().gen_range(1.0..=2.0))
    }

    /// Runs forever. `force` requests an early heartbeat (rate-limited to one per 5 s).
    pub async fn run(self, force: Arc<Notify>) {
        let body = self.request();
        let mut next_due = Instant::now();
        let mut last_sent: Option<Instant> = None;
        let mut forced = false;
        loop {
            let now = Instant::now();
            let forced_ready = forced && last_sent.is_none_or(|last| now >= last + MIN_FORCED_GAP);
            if now >= next_due || forced_ready {
                forced = false;
                last_sent = Some(now);
                match self
                    .client
                    .heartbeat(&self.node_uuid, &body, self.controller_version)
                    .await
                {
                    Ok(()) => {
                        crate::init::note_heartbeat_sent();
                        let delay = self.delay_after_success();
                        tracing::info!(
                            "heartbeat sent to the controller; next in {:.0} s",
                            delay.as_secs_f64()
                        );
                        next_due = Instant::now() + delay;
                    }
                    Err(e) => {
                        let delay = Self::delay_after_error();
                        tracing::error!(
                            "heartbeat failed: {e}; retrying in {:.1} s",
                            delay.as_secs_f64()
                        );
                        next_due = Instant::now() + delay;
                    }
                }
                continue;
            }
            let mut wake = next_due.min(now + MAX_SLEEP);
            if forced {
                if let Some(last) = last_sent {
                    wake = wake.min(last + MIN_FORCED_GAP);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = force.notified() => {
                    tracing::debug!("early heartbeat requested");
                    forced = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use url::Url;

    fn hb(v: ApiVersion) -> Heartbeater {
        Heartbeater {
            client: ControllerClient::new(
                reqwest::Client::new(),
                vec![Url::parse("http://127.0.0.1:1").unwrap()],
                None,
            ),
            node_uuid: "n".into(),
            controller_version: v,
            callback_url: "https://127.0.0.1:9999".into(),
            agent_token: "t".into(),
            verify_ca: Some("PEM".into()),
            heartbeat_timeout: 300.0,
        }
    }

    #[test]
    fn fields_follow_the_controller_version() {
        let new = hb(ApiVersion::new(1, 95)).request();
        assert_eq!(new.agent_token.as_deref(), Some("t"));
        assert!(new.agent_version.is_some());
        assert_eq!(new.agent_verify_ca.as_deref(), Some("PEM"));
        let old = hb(ApiVersion::new(1, 31)).request();
        assert!(old.agent_token.is_none());
        assert!(old.agent_version.is_none());
        assert!(old.agent_verify_ca.is_none());
        let mid = hb(ApiVersion::new(1, 62)).request();
        assert!(mid.agent_token.is_some() && mid.agent_verify_ca.is_none());
    }

    #[test]
    fn delays_are_in_range() {
        let h = hb(ApiVersion::new(1, 68));
        for _ in 0..50 {
            let d = h.delay_after_success().as_secs_f64();
            assert!((90.0..=180.0).contains(&d), "{d}");
            let e = Heartbeater::delay_after_error().as_secs_f64();
            assert!((5.0..=10.0).contains(&e), "{e}");
        }
    }
}
