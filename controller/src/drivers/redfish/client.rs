//! HTTP to a Redfish service: TLS settings, Basic or session authentication,
//! retries with back-off on connection errors, timeouts and 5xx answers, and
//! readable errors from Redfish error bodies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, ETAG, IF_MATCH};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::info::{AuthType, RedfishInfo, Verify};

/// What can go wrong talking to a Redfish service.
#[derive(Debug, thiserror::Error)]
pub enum RedfishError {
    /// The service could not be reached (after every attempt).
    #[error("cannot reach the Redfish service at {url} after {attempts} attempts: {reason}")]
    Unreachable {
        /// The URL.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        reason: String,
    },
    /// The credentials were refused.
    #[error("the Redfish service at {url} refused the credentials (HTTP {status}): check driver_info.redfish_username and redfish_password")]
    Unauthorized {
        /// The URL.
        url: String,
        /// 401 or 403.
        status: u16,
    },
    /// The service answered with an error.
    #[error("{method} {url} answered HTTP {status}: {message}")]
    Status {
        /// The method.
        method: String,
        /// The URL.
        url: String,
        /// The status.
        status: u16,
        /// The Redfish error message.
        message: String,
    },
    /// The TLS settings are unusable.
    #[error("cannot set up TLS for {url}: {reason}")]
    Tls {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The answer is not what Redfish promises.
    #[error("unexpected answer from {url}: {reason}")]
    Protocol {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
}

impl RedfishError {
    /// The HTTP status, when the service answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } | Self::Unauthorized { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// An answer: status, ETag and JSON body (null when empty).
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// The `ETag` header, if any.
    pub etag: Option<String>,
    /// The body.
    pub body: Value,
}

/// Retry policy.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Attempts per request (at least one).
    pub attempts: u32,
    /// Pause after the first failure; doubled after each, at most 30 s.
    pub interval: Duration,
}

/// One BMC connection: an HTTP client and, with session auth, the session token.
#[derive(Debug)]
pub struct Connection {
    info: RedfishInfo,
    http: reqwest::Client,
    retry: Retry,
    session: tokio::sync::Mutex<Option<String>>,
    sessions: tokio::sync::OnceCell<bool>,
}

/// Connections by settings, so sessions and TLS setups are reused.
#[derive(Debug, Default)]
pub struct Connections {
    cache: Mutex<HashMap<RedfishInfo, Arc<Connection>>>,
}

impl Connections {
    /// The connection for `info`, made when missing.
    pub fn get(&self, info: &RedfishInfo, retry: Retry) -> Result<Arc<Connection>, RedfishError> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = cache.get(info) {
            return Ok(found.clone());
        }
        if cache.len() >= 1000 {
            cache.clear();
        }
        let connection = Arc::new(Connection::new(info.clone(), retry)?);
        cache.insert(info.clone(), connection.clone());
        Ok(connection)
    }
}

impl Connection {
    /// A connection with the TLS settings of `info`.
    pub fn new(info: RedfishInfo, retry: Retry) -> Result<Self, RedfishError> {
        let tls = |reason: String| RedfishError::Tls {
            url: info.base.clone(),
            reason,
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("ironclad-controller/", env!("CARGO_PKG_VERSION")));
        match &info.verify {
            Verify::Yes => {}
            Verify::No => builder = builder.danger_accept_invalid_certs(true),
            Verify::Ca(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| tls(format!("cannot read CA file {}: {e}", path.display())))?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| tls(format!("CA file {} is not PEM: {e}", path.display())))?;
                builder = builder.tls_built_in_root_certs(false);
                for cert in certs {
                    builder = builder.add_root_certificate(cert);
                }
            }
        }
        let http = builder.build().map_err(|e| tls(e.to_string()))?;
        Ok(Self {
            info,
            http,
            retry,
            session: tokio::sync::Mutex::new(None),
            sessions: tokio::sync::OnceCell::new(),
        })
    }

    /// The settings.
    pub fn info(&self) -> &RedfishInfo {
        &self.info
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Reply, RedfishError> {
        self.request(Method::GET, path, None, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> Result<Reply, RedfishError> {
        self.request(Method::POST, path, Some(body), None).await
    }

    /// `PATCH path`, with `If-Match` when the resource had an ETag.
    pub async fn patch(
        &self,
        path: &str,
        body: Value,
        etag: Option<&str>,
    ) -> Result<Reply, RedfishError> {
        self.request(Method::PATCH, path, Some(body), etag).await
    }

    async fn uses_session(&self) -> Result<bool, RedfishError> {
        match self.info.auth {
            AuthType::Basic => Ok(false),
            AuthType::Session => Ok(true),
            AuthType::Auto => {
                // Sessions when the service root advertises a SessionService.
                let root = self
                    .send(Method::GET, &self.info.root, None, None, false)
                    .await?;
                Ok(root.body.get("SessionService").is_some() && self.info.username.is_some())
            }
        }
    }

    async fn login(&self) -> Result<String, RedfishError> {
        let root = self
            .send(Method::GET, &self.info.root, None, None, false)
            .await?;
        let sessions = root
            .body
            .pointer("/Links/Sessions/@odata.id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{}/SessionService/Sessions", self.info.root));
        let url = self.info.url(&sessions);
        let body = json!({
            "UserName": self.info.username.clone().unwrap_or_default(),
            "Password": self.info.password.clone().unwrap_or_default(),
        });
        let response = self
            .with_retries(&Method::POST, &url, || {
                self.http.post(&url).json(&body).send()
            })
            .await?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(RedfishError::Unauthorized {
                url,
                status: status.as_u16(),
            });
        }
        let token = response
            .headers()
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match token {
            Some(token) if status.is_success() => Ok(token),
            _ => Err(RedfishError::Protocol {
                url,
                reason: format!("session login answered HTTP {status} without X-Auth-Token"),
            }),
        }
    }

    /// One request with authentication, re-logging in once when a session expired.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        etag: Option<&str>,
    ) -> Result<Reply, RedfishError> {
        if !self.uses_session_cached().await? {
            return self.send(method, path, body, etag, true).await;
        }
        for fresh in [false, true] {
            let token = {
                let mut session = self.session.lock().await;
                if fresh || session.is_none() {
                    *session = Some(self.login().await?);
                }
                session.clone().unwrap_or_default()
            };
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(&token) {
                headers.insert("x-auth-token", value);
            }
            match self
                .send_with(method.clone(), path, body.clone(), etag, headers)
                .await
            {
                Err(RedfishError::Unauthorized { .. }) if !fresh => continue,
                other => return other,
            }
        }
        Err(RedfishError::Unauthorized {
            url: self.info.url(path),
            status: 401,
        })
    }

    async fn uses_session_cached(&self) -> Result<bool, RedfishError> {
        self.sessions
            .get_or_try_init(|| self.uses_session())
            .await
            .copied()
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        etag: Option<&str>,
        authenticate: bool,
    ) -> Result<Reply, RedfishError> {
        let mut headers = HeaderMap::new();
        if authenticate {
            if let Some(user) = &self.info.username {
                use base64::Engine;
                let pair = format!("{user}:{}", self.info.password.as_deref().unwrap_or(""));
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                if let Ok(value) = HeaderValue::from_str(&format!("Basic {encoded}")) {
                    headers.insert(reqwest::header::AUTHORIZATION, value);
                }
            }
        }
        self.send_with(method, path, body, etag, headers).await
    }

    async fn send_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        etag: Option<&str>,
        mut headers: HeaderMap,
    ) -> Result<Reply, RedfishError> {
        let url = self.info.url(path);
        if let Some(tag) = etag {
            if let Ok(value) = HeaderValue::from_str(tag) {
                headers.insert(IF_MATCH, value);
            }
        }
        let response = self
            .with_retries(&method, &url, || {
                let mut request = self
                    .http
                    .request(method.clone(), &url)
                    .headers(headers.clone())
                    .header(reqwest::header::ACCEPT, "application/json");
                if let Some(body) = &body {
                    request = request.json(body);
                }
                request.send()
            })
            .await?;
        let status = response.status();
        let etag = response
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.unwrap_or_default();
        let body: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(RedfishError::Unauthorized {
                url,
                status: status.as_u16(),
            });
        }
        if !status.is_success() {
            return Err(RedfishError::Status {
                method: method.to_string(),
                url,
                status: status.as_u16(),
                message: error_message(&body),
            });
        }
        Ok(Reply { status, etag, body })
    }

    /// Sends until an answer that is not a 5xx, or the attempts run out.
    async fn with_retries<F, Fut>(
        &self,
        method: &Method,
        url: &str,
        mut send: F,
    ) -> Result<reqwest::Response, RedfishError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = reqwest::Result<reqwest::Response>>,
    {
        let attempts = self.retry.attempts.max(1);
        let mut pause = self.retry.interval;
        let mut last = String::new();
        for attempt in 1..=attempts {
            match send().await {
                Ok(response) if response.status().is_server_error() => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
                    last = format!("HTTP {status}: {}", error_message(&body));
                }
                Ok(response) => return Ok(response),
                Err(error) => {
                    last = describe(&error);
                }
            }
            if attempt < attempts {
                tracing::warn!(%method, url, attempt, attempts, reason = %last, "Redfish request failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(30));
            }
        }
        Err(RedfishError::Unreachable {
            url: url.to_owned(),
            attempts,
            reason: last,
        })
    }
}

fn describe(error: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if error.is_timeout() {
        text.push_str(" (timed out)");
    }
    text
}

/// The message of a Redfish error body (`error.@Message.ExtendedInfo[].Message`
/// or `error.message`), or the text itself.
pub fn error_message(body: &Value) -> String {
    if let Some(error) = body.get("error") {
        let extended: Vec<&str> = error
            .get("@Message.ExtendedInfo")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i.get("Message").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default();
        if !extended.is_empty() {
            return extended.join("; ");
        }
        if let Some(message) = error.get("message").and_then(Value::as_str) {
            return message.to_owned();
        }
    }
    match body {
        Value::Null => "(no body)".to_owned(),
        Value::String(text) => text.chars().take(300).collect(),
        other => other.to_string().chars().take(300).collect(),
    }
}
