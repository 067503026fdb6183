//! The read side of the image pipeline: a stream of chunks from an HTTP(S) or
//! `file://` URL.

use bytes::Bytes;
use tokio::io::AsyncReadExt;

/// Size of the chunks read from `file://` sources.
const FILE_CHUNK: usize = 1024 * 1024;

/// Why a source could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Retrying cannot help (4xx, bad URL, missing file).
    #[error("{0}")]
    Fatal(String),
    /// Worth retrying (5xx, connection errors).
    #[error("{0}")]
    Retryable(String),
}

/// Extra request settings for image servers.
#[derive(Debug, Clone, Default)]
pub struct RequestAuth {
    /// Value of an `Authorization` header.
    pub authorization: Option<String>,
    /// HTTP basic credentials.
    pub basic: Option<(String, String)>,
}

/// An open stream of image bytes.
#[derive(Debug)]
pub enum ImageSource {
    /// An HTTP(S) response body.
    Http(reqwest::Response),
    /// A local file.
    File {
        /// The open file.
        file: tokio::fs::File,
        /// Its length.
        len: u64,
    },
}

impl ImageSource {
    /// Opens `url`: `http://`, `https://` or `file://`.
    pub async fn open(
        client: &reqwest::Client,
        url: &str,
        auth: &RequestAuth,
    ) -> Result<Self, OpenError> {
        let parsed = url::Url::parse(url)
            .map_err(|e| OpenError::Fatal(format!("invalid image URL {url:?}: {e}")))?;
        match parsed.scheme() {
            "file" => {
                let path = parsed
                    .to_file_path()
                    .map_err(|_| OpenError::Fatal(format!("invalid file URL {url:?}")))?;
                let file = tokio::fs::File::open(&path).await.map_err(|e| {
                    OpenError::Fatal(format!("cannot open {}: {e}", path.display()))
                })?;
                let len = file
                    .metadata()
                    .await
                    .map_err(|e| OpenError::Fatal(format!("cannot stat {}: {e}", path.display())))?
                    .len();
                Ok(Self::File { file, len })
            }
            "http" | "https" => {
                let mut req = client.get(parsed);
                if let Some(value) = &auth.authorization {
                    req = req.header(reqwest::header::AUTHORIZATION, value);
                } else if let Some((user, password)) = &auth.basic {
                    req = req.basic_auth(user, Some(password));
                }
                let resp = req.send().await.map_err(|e| {
                    OpenError::Retryable(format!("GET {url} failed: {}", chain(&e)))
                })?;
                let status = resp.status();
                if status.is_success() {
                    Ok(Self::Http(resp))
                } else if status.is_client_error() {
                    Err(OpenError::Fatal(format!(
                        "GET {url} returned HTTP {status}; check that the URL is right and the image server allows this node"
                    )))
                } else {
                    Err(OpenError::Retryable(format!(
                        "GET {url} returned HTTP {status}"
                    )))
                }
            }
            other => Err(OpenError::Fatal(format!(
                "unsupported URL scheme {other:?} in {url:?}; use http, https or file"
            ))),
        }
    }

    /// Total length when known in advance.
    pub fn content_length(&self) -> Option<u64> {
        match self {
            Self::Http(r) => r.content_length(),
            Self::File { len, .. } => Some(*len),
        }
    }

    /// The next chunk; `None` at the end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, String> {
        match self {
            Self::Http(r) => r
                .chunk()
                .await
                .map_err(|e| format!("reading the image failed: {}", chain(&e))),
            Self::File { file, .. } => {
                let mut buf = vec![0u8; FILE_CHUNK];
                let n = file
                    .read(&mut buf)
                    .await
                    .map_err(|e| format!("reading the image file failed: {e}"))?;
                if n == 0 {
                    Ok(None)
                } else {
                    buf.truncate(n);
                    Ok(Some(Bytes::from(buf)))
                }
            }
        }
    }

    /// Reads a small document (checksum file) whole, refusing more than `limit` bytes.
    pub async fn read_small(mut self, limit: usize) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        while let Some(chunk) = self.next_chunk().await? {
            out.extend_from_slice(&chunk);
            if out.len() > limit {
                return Err(format!("document larger than {limit} bytes"));
            }
        }
        Ok(out)
    }
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
