//! The read side of the image pipeline: a resumable stream of chunks from
//! HTTP(S) or `file://` URLs, and random access for reading qcow2 metadata.
//!
//! A [`Download`] hands out the image's bytes in order, exactly once each.
//! When the connection breaks (an error, a premature end, or a stall longer
//! than the stall timeout between chunks), it reconnects with an HTTP `Range`
//! request from the offset already handed out, after an exponential back-off;
//! 5xx answers are retried the same way, 4xx answers move on to the next URL at
//! once. When a URL has used up its retries, the next URL continues from the
//! same offset. Whoever consumes the chunks (the hash) therefore sees one
//! unbroken stream and the checksum covers every byte.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::qcow2::RangeRead;

/// Size of the chunks read from `file://` sources.
const FILE_CHUNK: usize = 1024 * 1024;

/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(120);

/// Why a source could not be opened (one attempt).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Retrying cannot help (4xx, bad URL, missing file).
    #[error("{0}")]
    Fatal(String),
    /// Worth retrying (5xx, connection errors).
    #[error("{0}")]
    Retryable(String),
}

/// The download failed for good: every URL failed or ran out of retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DownloadError(pub String);

/// Extra request settings for image servers.
#[derive(Debug, Clone, Default)]
pub struct RequestAuth {
    /// Value of an `Authorization` header.
    pub authorization: Option<String>,
    /// HTTP basic credentials.
    pub basic: Option<(String, String)>,
}

/// Retry policy of a download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Extra attempts per URL after a 5xx or a connection error.
    pub retries: u32,
    /// First wait between attempts; doubles each time (up to two minutes).
    pub interval: Duration,
    /// Longest silence between two chunks before the connection counts as broken.
    pub stall_timeout: Duration,
}

impl Default for RetryPolicy {
    /// IPA's defaults: 9 retries, 10 s apart, 60 s connection timeout.
    fn default() -> Self {
        Self {
            retries: 9,
            interval: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.interval
            .saturating_mul(factor)
            .min(MAX_BACKOFF.max(self.interval))
    }
}

#[derive(Debug)]
enum Body {
    Http(reqwest::Response),
    File(tokio::fs::File),
}

/// Builds the request for `url` with the image server's authentication.
fn request(client: &reqwest::Client, url: &str, auth: &RequestAuth) -> reqwest::RequestBuilder {
    let mut req = client.get(url);
    if let Some(value) = &auth.authorization {
        req = req.header(reqwest::header::AUTHORIZATION, value);
    } else if let Some((user, password)) = &auth.basic {
        req = req.basic_auth(user, Some(password));
    }
    req
}

fn file_path(url: &str) -> Result<Option<std::path::PathBuf>, OpenError> {
    let parsed = url::Url::parse(url)
        .map_err(|e| OpenError::Fatal(format!("invalid image URL {url:?}: {e}")))?;
    match parsed.scheme() {
        "file" => parsed
            .to_file_path()
            .map(Some)
            .map_err(|_| OpenError::Fatal(format!("invalid file URL {url:?}"))),
        "http" | "https" => Ok(None),
        other => Err(OpenError::Fatal(format!(
            "unsupported URL scheme {other:?} in {url:?}; use http, https or file"
        ))),
    }
}

/// Parses `Content-Range: bytes START-END/TOTAL`.
fn content_range(resp: &reqwest::Response) -> Option<(u64, Option<u64>)> {
    let v = resp
        .headers()
        .get(reqwest::header::CONTENT_RANGE)?
        .to_str()
        .ok()?;
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

/// Opens `url` at byte `offset`; returns the body, the total length when
/// known, and how many leading bytes to drop (a server that ignored `Range`).
async fn open_at(
    client: &reqwest::Client,
    url: &str,
    auth: &RequestAuth,
    offset: u64,
) -> Result<(Body, Option<u64>, u64), OpenError> {
    if let Some(path) = file_path(url)? {
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| OpenError::Fatal(format!("cannot open {}: {e}", path.display())))?;
        let len = file
            .metadata()
            .await
            .map_err(|e| OpenError::Fatal(format!("cannot stat {}: {e}", path.display())))?
            .len();
        if offset > 0 {
            file.seek(std::io::SeekFrom::Start(offset))
                .await
                .map_err(|e| OpenError::Fatal(format!("cannot seek {}: {e}", path.display())))?;
        }
        return Ok((Body::File(file), Some(len), 0));
    }
    let mut req = request(client, url, auth);
    if offset > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={offset}-"));
    }
    let resp = req
        .send()
        .await
        .map_err(|e| OpenError::Retryable(format!("GET {url} failed: {}", chain(&e))))?;
    let status = resp.status();
    if status == reqwest::StatusCode::PARTIAL_CONTENT && offset > 0 {
        let (start, total) = content_range(&resp).ok_or_else(|| {
            OpenError::Retryable(format!(
                "GET {url} answered 206 without a usable Content-Range"
            ))
        })?;
        if start != offset {
            return Err(OpenError::Retryable(format!(
                "GET {url} resumed at byte {start} instead of {offset}"
            )));
        }
        Ok((Body::Http(resp), total, 0))
    } else if status.is_success() {
        let total = resp.content_length();
        Ok((Body::Http(resp), total, offset))
    } else if status.is_client_error() {
        Err(OpenError::Fatal(format!(
            "GET {url} returned HTTP {status}; check that the URL is right and that the image server allows this node"
        )))
    } else {
        Err(OpenError::Retryable(format!(
            "GET {url} returned HTTP {status}"
        )))
    }
}

/// A resumable, retrying download over several URLs.
#[derive(Debug)]
pub struct Download {
    client: reqwest::Client,
    urls: Vec<String>,
    auth: RequestAuth,
    policy: RetryPolicy,
    url_index: usize,
    attempt: u32,
    offset: u64,
    total: Option<u64>,
    skip: u64,
    body: Option<Body>,
    failures: Vec<String>,
    resumes: u32,
}

impl Download {
    /// Opens the first URL that answers (retrying as the policy says).
    pub async fn open(
        client: reqwest::Client,
        urls: Vec<String>,
        auth: RequestAuth,
        policy: RetryPolicy,
    ) -> Result<Self, DownloadError> {
        let mut d = Self {
            client,
            urls,
            auth,
            policy,
            url_index: 0,
            attempt: 0,
            offset: 0,
            total: None,
            skip: 0,
            body: None,
            failures: Vec::new(),
            resumes: 0,
        };
        d.connect().await?;
        Ok(d)
    }

    /// The image's total length, when the server said.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// The URL currently in use.
    pub fn url(&self) -> &str {
        self.urls.get(self.url_index).map_or("", String::as_str)
    }

    /// How many times the download reconnected after a break.
    pub fn resumes(&self) -> u32 {
        self.resumes
    }

    /// Random access to the URL currently in use.
    pub fn range_reader(&self) -> RangeReader {
        RangeReader {
            client: self.client.clone(),
            url: self.url().to_owned(),
            auth: self.auth.clone(),
            handle: tokio::runtime::Handle::current(),
        }
    }

    fn give_up(&self) -> DownloadError {
        DownloadError(format!(
            "could not download the image from any of its URLs: {}. Check that the image server is reachable from the node",
            self.failures.join("; ")
        ))
    }

    async fn connect(&mut self) -> Result<(), DownloadError> {
        loop {
            let Some(url) = self.urls.get(self.url_index).cloned() else {
                return Err(self.give_up());
            };
            match open_at(&self.client, &url, &self.auth, self.offset).await {
                Ok((body, total, skip)) => {
                    if let (Some(old), Some(new)) = (self.total, total) {
                        if old != new {
                            self.failures.push(format!(
                                "{url}: the image is {new} bytes now but was {old} bytes when the download started"
                            ));
                            self.next_url();
                            continue;
                        }
                    }
                    self.total = self.total.or(total);
                    self.skip = skip;
                    self.body = Some(body);
                    return Ok(());
                }
                Err(OpenError::Fatal(msg)) => {
                    tracing::warn!("{msg}");
                    self.failures.push(msg);
                    self.next_url();
                }
                Err(OpenError::Retryable(msg)) => self.retry_later(msg).await,
            }
        }
    }

    fn next_url(&mut self) {
        self.url_index += 1;
        self.attempt = 0;
    }

    async fn retry_later(&mut self, msg: String) {
        self.attempt += 1;
        if self.attempt > self.policy.retries {
            tracing::warn!(
                "{msg}; giving up on this URL after {} attempts",
                self.attempt
            );
            self.failures.push(msg);
            self.next_url();
            return;
        }
        let wait = self.policy.backoff(self.attempt);
        tracing::warn!(
            "{msg}; retrying from byte {} in {:.1} s (attempt {} of {})",
            self.offset,
            wait.as_secs_f64(),
            self.attempt + 1,
            self.policy.retries + 1
        );
        tokio::time::sleep(wait).await;
    }

    async fn read_body(&mut self) -> Result<Option<Bytes>, String> {
        let stall = self.policy.stall_timeout;
        let fut = async {
            match self.body.as_mut() {
                Some(Body::Http(r)) => r
                    .chunk()
                    .await
                    .map_err(|e| format!("reading the image failed: {}", chain(&e))),
                Some(Body::File(f)) => {
                    let mut buf = vec![0u8; FILE_CHUNK];
                    let n = f
                        .read(&mut buf)
                        .await
                        .map_err(|e| format!("reading the image file failed: {e}"))?;
                    buf.truncate(n);
                    Ok((n > 0).then(|| Bytes::from(buf)))
                }
                None => Ok(None),
            }
        };
        match tokio::time::timeout(stall, fut).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "no data for {:.1} s (stall timeout)",
                stall.as_secs_f64()
            )),
        }
    }

    /// The next chunk of the image; `None` at its end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, DownloadError> {
        loop {
            if self.body.is_none() {
                self.connect().await?;
                self.resumes += 1;
            }
            let url = self.url().to_owned();
            let is_file = matches!(self.body, Some(Body::File(_)));
            match self.read_body().await {
                Ok(Some(mut chunk)) => {
                    if self.skip > 0 {
                        let drop = (self.skip as usize).min(chunk.len());
                        self.skip -= drop as u64;
                        let _ = chunk.split_to(drop);
                        if chunk.is_empty() {
                            continue;
                        }
                    }
                    self.offset += chunk.len() as u64;
                    self.attempt = 0;
                    return Ok(Some(chunk));
                }
                Ok(None) => match self.total {
                    Some(total) if self.offset < total => {
                        self.body = None;
                        self.retry_later(format!(
                            "{url}: the connection ended at byte {} of {total}",
                            self.offset
                        ))
                        .await;
                    }
                    _ => return Ok(None),
                },
                Err(msg) if is_file => {
                    self.failures.push(msg);
                    return Err(self.give_up());
                }
                Err(msg) => {
                    self.body = None;
                    self.retry_later(format!("{url}: {msg}")).await;
                }
            }
        }
    }
}

/// Random access to an image URL (`file://`, or HTTP with `Range`).
#[derive(Debug, Clone)]
pub struct RangeReader {
    client: reqwest::Client,
    url: String,
    auth: RequestAuth,
    handle: tokio::runtime::Handle,
}

impl RangeReader {
    async fn fetch(&self, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
        use std::io::{Error, ErrorKind};
        if len == 0 {
            return Ok(Vec::new());
        }
        let path = file_path(&self.url).map_err(|e| Error::new(ErrorKind::InvalidInput, e))?;
        if let Some(path) = path {
            let mut file = tokio::fs::File::open(&path).await?;
            file.seek(std::io::SeekFrom::Start(offset)).await?;
            let mut out = Vec::new();
            file.take(len).read_to_end(&mut out).await?;
            return Ok(out);
        }
        let resp = request(&self.client, &self.url, &self.auth)
            .header(
                reqwest::header::RANGE,
                format!("bytes={offset}-{}", offset + len - 1),
            )
            .send()
            .await
            .map_err(|e| Error::other(chain(&e)))?;
        match resp.status() {
            reqwest::StatusCode::PARTIAL_CONTENT => {
                if content_range(&resp).map(|(s, _)| s) != Some(offset) {
                    return Err(Error::other("the server answered a different range"));
                }
            }
            reqwest::StatusCode::RANGE_NOT_SATISFIABLE => return Ok(Vec::new()),
            s if s.is_success() => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    "the image server does not support Range requests",
                ))
            }
            s => return Err(Error::other(format!("HTTP {s}"))),
        }
        let mut out = Vec::with_capacity(len.min(1 << 24) as usize);
        let mut resp = resp;
        while let Some(chunk) = resp.chunk().await.map_err(|e| Error::other(chain(&e)))? {
            out.extend_from_slice(&chunk);
            if out.len() as u64 > len {
                return Err(Error::other("the server sent more than the range"));
            }
        }
        Ok(out)
    }
}

/// Attempts per metadata range read (connection errors only).
const RANGE_ATTEMPTS: u32 = 3;

impl RangeRead for RangeReader {
    fn read_range(&mut self, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
        let handle = self.handle.clone();
        let mut attempt = 1;
        loop {
            match handle.block_on(self.fetch(offset, len)) {
                Err(e) if e.kind() == std::io::ErrorKind::Other && attempt < RANGE_ATTEMPTS => {
                    tracing::debug!("range read at {offset} failed ({e}); retrying");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// Fetches a small document (a checksum file) whole, refusing more than `limit` bytes.
pub async fn fetch_small(
    client: &reqwest::Client,
    url: &str,
    auth: &RequestAuth,
    limit: usize,
) -> Result<Vec<u8>, String> {
    let (mut body, _, _) = open_at(client, url, auth, 0)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    loop {
        let chunk = match &mut body {
            Body::Http(r) => r
                .chunk()
                .await
                .map_err(|e| format!("reading {url} failed: {}", chain(&e)))?,
            Body::File(f) => {
                let mut buf = vec![0u8; 64 * 1024];
                let n = f.read(&mut buf).await.map_err(|e| e.to_string())?;
                buf.truncate(n);
                (n > 0).then(|| Bytes::from(buf))
            }
        };
        let Some(chunk) = chunk else { break };
        out.extend_from_slice(&chunk);
        if out.len() > limit {
            return Err(format!("{url} is larger than {limit} bytes"));
        }
    }
    Ok(out)
}

/// An error and its causes on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy {
            retries: 9,
            interval: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(60),
        };
        assert_eq!(p.backoff(1), Duration::from_secs(10));
        assert_eq!(p.backoff(2), Duration::from_secs(20));
        assert_eq!(p.backoff(3), Duration::from_secs(40));
        assert_eq!(p.backoff(9), MAX_BACKOFF);
    }
}
