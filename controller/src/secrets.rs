//! Secrets: masking them on output and minting agent tokens.

use base64::Engine;
use ironclad_versioning::controller_api::{Node, MASKED_SECRET};
use rand::RngCore;
use serde_json::{Map, Value};

/// Key fragments that mark a `driver_info` value as secret.
const SECRET_MARKERS: &[&str] = &["password", "secret", "token", "key", "credential"];

/// `instance_info` keys hidden on output.
const INSTANCE_SECRETS: &[&str] = &[
    "configdrive",
    "rescue_password",
    "hashed_rescue_password",
    "image_server_password",
];

/// Whether a `driver_info` key holds a secret.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_MARKERS.iter().any(|marker| key.contains(marker))
}

fn mask_where(map: &mut Map<String, Value>, secret: impl Fn(&str) -> bool) {
    for (key, value) in map.iter_mut() {
        if secret(key) && !value.is_null() {
            *value = Value::String(MASKED_SECRET.to_owned());
        }
    }
}

/// Masks the secrets of `driver_internal_info` (the agent token).
pub fn mask_driver_internal_info(map: &mut Map<String, Value>) {
    mask_where(map, |key| key == "agent_secret_token");
}

/// Masks every secret of a node for output.
pub fn mask_node(node: &mut Node) {
    mask_where(&mut node.driver_info, is_secret_key);
    mask_driver_internal_info(&mut node.driver_internal_info);
    mask_where(&mut node.instance_info, |key| {
        INSTANCE_SECRETS.contains(&key)
    });
}

/// A fresh agent token: 32 random bytes as 43 URL-safe characters (like `secrets.token_urlsafe()`).
pub fn mint_agent_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_keys_are_recognised() {
        for key in [
            "ipmi_password",
            "redfish_password",
            "bmc_secret",
            "auth_token",
            "ssh_key",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in [
            "deploy_kernel",
            "redfish_address",
            "ipmi_username",
            "deploy_ramdisk",
        ] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    #[test]
    fn maps_are_masked_in_place() {
        let mut map = json!({"agent_secret_token": "abc", "agent_url": "https://x"})
            .as_object()
            .cloned()
            .unwrap();
        mask_driver_internal_info(&mut map);
        assert_eq!(map["agent_secret_token"], "******");
        assert_eq!(map["agent_url"], "https://x");
    }

    #[test]
    fn tokens_look_like_token_urlsafe() {
        let token = mint_agent_token();
        assert_eq!(token.len(), 43);
        assert!(token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(token, mint_agent_token());
    }
}
