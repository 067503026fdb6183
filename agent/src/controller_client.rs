//! The agent's client of the controller's ramdisk API: version discovery,
//! lookup (with back-off) and heartbeat.

use std::path::Path;
use std::time::Duration;

use ironclad_versioning::controller_api::{ControllerRoot, ErrorBody};
use ironclad_versioning::microversion::{
    ApiVersion, AGENT_FALLBACK_VERSION, AGENT_HEARTBEAT_CAP, AGENT_LOOKUP_CAP, VERSION_HEADER,
};
use ironclad_versioning::ramdisk::{HeartbeatRequest, LookupResponse};
use rand::Rng;
use url::Url;

use crate::image::source::chain;

/// Longest wait between two lookups.
pub const MAX_LOOKUP_BACKOFF: Duration = Duration::from_secs(60);

/// Errors talking to the controller.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The HTTP client could not be built.
    #[error("could not set up the HTTP client: {0}")]
    Setup(String),
    /// No controller answered.
    #[error("no controller reachable: {0}")]
    Unreachable(String),
    /// The controller answered with an error status.
    #[error("controller answered HTTP {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The controller's message.
        message: String,
    },
    /// The reply is not what was expected.
    #[error("unexpected reply from the controller: {0}")]
    BadReply(String),
    /// Lookup did not succeed in time.
    #[error("lookup did not succeed within {seconds:.0} s (last error: {last}); check that the controller knows a port with one of the MACs {macs} and that the node is in a state that allows lookup")]
    LookupTimeout {
        /// The budget.
        seconds: f64,
        /// The last failure.
        last: String,
        /// The MACs used.
        macs: String,
    },
}

/// Builds the HTTP client used toward the controller and image servers.
pub fn http_client(insecure: bool, ca_file: Option<&Path>) -> Result<reqwest::Client, ClientError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(60))
        .user_agent(format!(
            "ironclad-agent/{}",
            ironclad_versioning::IRONCLAD_VERSION
        ));
    if insecure {
        builder = builder.danger_accept_invalid_certs(true);
    }
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            ClientError::Setup(format!("reading --ca-file {}: {e}", path.display()))
        })?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| ClientError::Setup(format!("--ca-file {}: {e}", path.display())))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| ClientError::Setup(chain(&e)))
}

/// A client of the controller's ramdisk endpoints.
#[derive(Debug, Clone)]
pub struct ControllerClient {
    http: reqwest::Client,
    api_urls: Vec<Url>,
    global_request_id: Option<String>,
    request_timeout: Duration,
}

fn join(base: &Url, path: &str) -> String {
    format!("{}{}", base.as_str().trim_end_matches('/'), path)
}

async fn error_of(resp: reqwest::Response) -> ClientError {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<ErrorBody>(&text)
        .map(|b| b.message())
        .unwrap_or_else(|_| text.chars().take(500).collect());
    ClientError::Status { status, message }
}

impl ControllerClient {
    /// A client for `api_urls`, tried in order on connection errors.
    pub fn new(
        http: reqwest::Client,
        api_urls: Vec<Url>,
        global_request_id: Option<String>,
    ) -> Self {
        Self {
            http,
            api_urls,
            global_request_id,
            request_timeout: Duration::from_secs(30),
        }
    }

    /// The controller URLs.
    pub fn api_urls(&self) -> &[Url] {
        &self.api_urls
    }

    /// Sends a request to each URL in turn until one answers.
    async fn send(
        &self,
        build: impl Fn(&Url) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let mut errors = Vec::new();
        for base in &self.api_urls {
            let mut req = build(base)
                .timeout(self.request_timeout)
                .header(reqwest::header::ACCEPT, "application/json");
            if let Some(id) = &self.global_request_id {
                req = req.header("X-OpenStack-Request-ID", id);
            }
            match req.send().await {
                Ok(resp) => return Ok(resp),
                Err(e) => errors.push(format!("{base}: {}", chain(&e))),
            }
        }
        Err(ClientError::Unreachable(errors.join("; ")))
    }

    /// The controller's highest API version, from `GET /`; 1.31 when unreadable.
    pub async fn controller_version(&self) -> ApiVersion {
        let result = async {
            let resp = self.send(|base| self.http.get(join(base, "/"))).await?;
            if !resp.status().is_success() {
                return Err(error_of(resp).await);
            }
            let root: ControllerRoot = resp
                .json()
                .await
                .map_err(|e| ClientError::BadReply(chain(&e)))?;
            root.default_version.max_version().ok_or_else(|| {
                ClientError::BadReply(format!("bad version {:?}", root.default_version.version))
            })
        }
        .await;
        match result {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("could not read the controller's API version ({e}); assuming {AGENT_FALLBACK_VERSION}");
                AGENT_FALLBACK_VERSION
            }
        }
    }

    /// One lookup by MAC addresses.
    pub async fn lookup(
        &self,
        macs: &[String],
        controller: ApiVersion,
    ) -> Result<LookupResponse, ClientError> {
        let version = controller.min(AGENT_LOOKUP_CAP).to_string();
        let addresses = macs.join(",");
        let resp = self
            .send(|base| {
                self.http
                    .get(join(base, "/v1/lookup"))
                    .query(&[("addresses", addresses.as_str())])
                    .header(VERSION_HEADER, &version)
            })
            .await?;
        if !resp.status().is_success() {
            return Err(error_of(resp).await);
        }
        let text = resp
            .text()
            .await
            .map_err(|e| ClientError::BadReply(chain(&e)))?;
        serde_json::from_str(&text).map_err(|e| ClientError::BadReply(format!("lookup reply: {e}")))
    }

    /// Looks the node up, retrying with randomized exponential back-off from
    /// `interval` up to 60 s, for at most `timeout`.
    pub async fn lookup_with_retry(
        &self,
        macs: &[String],
        controller: ApiVersion,
        interval: Duration,
        timeout: Duration,
    ) -> Result<LookupResponse, ClientError> {
        let started = tokio::time::Instant::now();
        let deadline = started + timeout;
        let mut attempt: u32 = 0;
        let mut conflicts: u32 = 0;
        loop {
            let err = match self.lookup(macs, controller).await {
                Ok(resp) => return Ok(resp),
                Err(e) => e,
            };
            tracing::warn!("lookup failed: {e}", e = err);
            let mut wait = backoff(interval, attempt);
            if matches!(err, ClientError::Status { status: 409, .. }) {
                // The node is locked: wait some more, longer each time.
                wait += Duration::from_secs([5u64, 10, 30][(conflicts as usize).min(2)]);
                conflicts += 1;
            }
            attempt = attempt.saturating_add(1);
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(ClientError::LookupTimeout {
                    seconds: timeout.as_secs_f64(),
                    last: err.to_string(),
                    macs: macs.join(","),
                });
            }
            tokio::time::sleep(wait.min(deadline - now)).await;
        }
    }

    /// One heartbeat; `controller` is the controller's version (the header is capped at 1.68).
    pub async fn heartbeat(
        &self,
        node_uuid: &str,
        body: &HeartbeatRequest,
        controller: ApiVersion,
    ) -> Result<(), ClientError> {
        let version = controller.min(AGENT_HEARTBEAT_CAP).to_string();
        let path = format!("/v1/heartbeat/{node_uuid}");
        let resp = self
            .send(|base| {
                self.http
                    .post(join(base, &path))
                    .header(VERSION_HEADER, &version)
                    .json(body)
            })
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(error_of(resp).await)
        }
    }
}

/// Randomized exponential back-off: uniform in `[interval, min(60 s, interval × 2^attempt)]`.
pub fn backoff(interval: Duration, attempt: u32) -> Duration {
    let ceiling = interval
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(MAX_LOOKUP_BACKOFF);
    let floor = interval.min(ceiling);
    if ceiling <= floor {
        return floor;
    }
    let secs = rand::thread_rng().gen_range(floor.as_secs_f64()..=ceiling.as_secs_f64());
    Duration::from_secs_f64(secs)
}

/// The source address the kernel would use toward `url`'s host (no packet is sent).
pub fn source_address_toward(url: &Url) -> Option<std::net::IpAddr> {
    let host = url.host_str()?;
    let port = url.port_or_known_default().unwrap_or(80);
    let target = std::net::ToSocketAddrs::to_socket_addrs(&(host.trim_matches(['[', ']']), port))
        .ok()?
        .next()?;
    let bind: std::net::SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let socket = std::net::UdpSocket::bind(bind).ok()?;
    socket.connect(target).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

/// The MACs a lookup sends: the ones given explicitly, then the discovered ones,
/// without duplicates and, as IPA does, without discovered addresses starting
/// `fa:` (locally administered, e.g. virtual functions).
pub fn lookup_addresses(explicit: &[String], discovered: &[String]) -> Vec<String> {
    let mut macs = explicit.to_vec();
    for mac in discovered {
        let mac = mac.to_ascii_lowercase();
        if !mac.starts_with("fa:") && !macs.contains(&mac) {
            macs.push(mac);
        }
    }
    macs
}

#[cfg(test)]
mod tests {

    #[test]
    fn lookup_addresses_drop_locally_administered_discovered_macs() {
        let explicit = vec!["fa:16:3e:00:00:01".to_owned()];
        let discovered = vec![
            "52:54:00:00:00:01".to_owned(),
            "FA:16:3E:00:00:02".to_owned(),
            "52:54:00:00:00:01".to_owned(),
        ];
        assert_eq!(
            lookup_addresses(&explicit, &discovered),
            ["fa:16:3e:00:00:01", "52:54:00:00:00:01"],
            "explicit MACs are kept; discovered fa: ones and duplicates are not"
        );
    }
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let i = Duration::from_secs(1);
        for attempt in 0..20 {
            let b = backoff(i, attempt);
            assert!(b >= i, "{b:?}");
            assert!(b <= MAX_LOOKUP_BACKOFF);
            assert!(b <= i * 2u32.pow(attempt.min(6)));
        }
        assert_eq!(backoff(Duration::from_secs(100), 3), MAX_LOOKUP_BACKOFF);
    }

    #[test]
    fn source_address_of_loopback() {
        let url = Url::parse("http://127.0.0.1:6385").unwrap();
        assert_eq!(
            source_address_toward(&url),
            Some("127.0.0.1".parse().unwrap())
        );
    }
}
