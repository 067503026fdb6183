//! Redfish settings from a node's `driver_info`.

use std::path::PathBuf;

use ironclad_versioning::controller_api::Node;
use serde_json::Value;
use url::Url;

use crate::drivers::{info_str, DriverError};

/// How to check the BMC's TLS certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verify {
    /// Against the built-in web roots (the default).
    Yes,
    /// Not at all (`redfish_verify_ca: false`).
    No,
    /// Against the CA bundle in this file only.
    Ca(PathBuf),
}

/// How to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthType {
    /// HTTP Basic on every request.
    Basic,
    /// A Redfish session (`X-Auth-Token`).
    Session,
    /// A session when the service offers one, else Basic (sushy's default).
    Auto,
}

/// A node's Redfish settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RedfishInfo {
    /// `scheme://host[:port]` of the BMC.
    pub base: String,
    /// Path of the service root, `/redfish/v1` unless the address has a path.
    pub root: String,
    /// Path of the system, or `None` to use the only one.
    pub system: Option<String>,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// Certificate checking.
    pub verify: Verify,
    /// Authentication.
    pub auth: AuthType,
}

fn invalid(message: String) -> DriverError {
    DriverError::InvalidParameters(message)
}

impl RedfishInfo {
    /// Parses the node's `driver_info`.
    pub fn parse(node: &Node) -> Result<Self, DriverError> {
        let address = info_str(node, "redfish_address")
            .ok_or_else(|| invalid("driver_info is missing redfish_address".to_owned()))?;
        let with_scheme = if address.contains("://") {
            address.to_owned()
        } else {
            format!("https://{address}")
        };
        let url = Url::parse(&with_scheme).map_err(|e| {
            invalid(format!(
                "driver_info.redfish_address {address:?} is not a URL: {e}"
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "driver_info.redfish_address {address:?} must use http or https"
            )));
        }
        let host = url.host_str().ok_or_else(|| {
            invalid(format!(
                "driver_info.redfish_address {address:?} has no host"
            ))
        })?;
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let base = match url.port() {
            Some(port) => format!("{}://{host}:{port}", url.scheme()),
            None => format!("{}://{host}", url.scheme()),
        };
        let path = url.path().trim_end_matches('/');
        let root = if path.is_empty() {
            "/redfish/v1".to_owned()
        } else {
            path.to_owned()
        };
        let system = info_str(node, "redfish_system_id").map(|id| {
            if id.starts_with('/') {
                id.trim_end_matches('/').to_owned()
            } else {
                format!("{root}/Systems/{id}")
            }
        });
        let verify = match node.driver_info.get("redfish_verify_ca") {
            None | Some(Value::Null) => Verify::Yes,
            Some(Value::Bool(true)) => Verify::Yes,
            Some(Value::Bool(false)) => Verify::No,
            Some(Value::String(text)) => match text.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" | "on" => Verify::Yes,
                "false" | "no" | "0" | "off" => Verify::No,
                _ => {
                    let path = PathBuf::from(text.trim());
                    if !path.is_file() {
                        return Err(invalid(format!(
                            "driver_info.redfish_verify_ca {text:?} is neither a boolean nor a readable CA file"
                        )));
                    }
                    Verify::Ca(path)
                }
            },
            Some(other) => {
                return Err(invalid(format!(
                    "driver_info.redfish_verify_ca {other} must be a boolean or a CA file path"
                )))
            }
        };
        let auth = match info_str(node, "redfish_auth_type").unwrap_or("auto") {
            "basic" => AuthType::Basic,
            "session" => AuthType::Session,
            "auto" => AuthType::Auto,
            other => {
                return Err(invalid(format!(
                    "driver_info.redfish_auth_type {other:?} is not basic, session or auto"
                )))
            }
        };
        Ok(Self {
            base,
            root,
            system,
            username: info_str(node, "redfish_username").map(str::to_owned),
            password: node
                .driver_info
                .get("redfish_password")
                .and_then(Value::as_str)
                .map(str::to_owned),
            verify,
            auth,
        })
    }

    /// The absolute URL of `path` (an `@odata.id` or a root-relative path).
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn node(info: Value) -> Node {
        let mut node: Node =
            serde_json::from_value(crate::api::views::node_template("u", "redfish")).unwrap();
        node.driver_info = info.as_object().unwrap().clone();
        node
    }

    #[test]
    fn address_defaults_to_https_and_system_ids_become_paths() {
        let info = RedfishInfo::parse(&node(serde_json::json!({
            "redfish_address": "10.0.0.5", "redfish_system_id": "abc"
        })))
        .unwrap();
        assert_eq!(info.base, "https://10.0.0.5");
        assert_eq!(info.root, "/redfish/v1");
        assert_eq!(info.system.as_deref(), Some("/redfish/v1/Systems/abc"));
        assert_eq!(info.verify, Verify::Yes);
        assert_eq!(info.auth, AuthType::Auto);

        let info = RedfishInfo::parse(&node(serde_json::json!({
            "redfish_address": "http://[::1]:8000/custom/", "redfish_verify_ca": "False",
            "redfish_auth_type": "session", "redfish_system_id": "/redfish/v1/Systems/x/"
        })))
        .unwrap();
        assert_eq!(info.base, "http://[::1]:8000");
        assert_eq!(info.root, "/custom");
        assert_eq!(info.system.as_deref(), Some("/redfish/v1/Systems/x"));
        assert_eq!(info.verify, Verify::No);
        assert_eq!(info.auth, AuthType::Session);

        for bad in [
            serde_json::json!({}),
            serde_json::json!({"redfish_address": "ftp://x"}),
            serde_json::json!({"redfish_address": "x", "redfish_auth_type": "kerberos"}),
            serde_json::json!({"redfish_address": "x", "redfish_verify_ca": "/nonexistent/ca.pem"}),
        ] {
            assert!(RedfishInfo::parse(&node(bad.clone())).is_err(), "{bad}");
        }
    }
}
