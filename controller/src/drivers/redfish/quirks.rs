//! Where BMCs differ from the Redfish specification, in one place.
//!
//! - Boot override PATCH shape: `BootSourceOverrideEnabled` is left out when it
//!   already has the wanted value (some BMCs refuse to "change" it to itself),
//!   except for vendors that need the full triple every time (Supermicro, AMI,
//!   ASRockRack).
//! - `If-Match`: PATCHes carry the resource's `ETag` when it sent one (required by
//!   some BMCs, harmless elsewhere); the sushy-tools emulator sends none.
//! - Persistent boot: many BMCs refuse `Continuous`; on a 4xx the override is
//!   set `Once` instead (Ironic's fallback).
//! - `On` right after a power off can be refused with 409 (iDRAC): retried.
//! - Allowable values: reset types and boot targets are checked against
//!   `@Redfish.AllowableValues` when the BMC lists them.

use serde_json::{json, Map, Value};

/// Vendors that want target, enabled and mode in every boot override PATCH.
const FULL_TRIPLE_VENDORS: &[&str] = &["supermicro", "ami", "asrockrack", "asrock rack"];

/// Whether the system's manufacturer needs the full boot override every time.
pub fn needs_full_boot_triple(system: &Value) -> bool {
    let vendor = system
        .get("Manufacturer")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_lowercase();
    FULL_TRIPLE_VENDORS
        .iter()
        .any(|v| vendor == *v || vendor.starts_with(&format!("{v} ")))
}

/// The body of the PATCH that sets the boot override.
pub fn boot_patch(system: &Value, target: &str, enabled: &str, mode: Option<&str>) -> Value {
    let boot = system.get("Boot").cloned().unwrap_or(Value::Null);
    let mut patch = Map::new();
    patch.insert("BootSourceOverrideTarget".to_owned(), json!(target));
    let current = boot
        .get("BootSourceOverrideEnabled")
        .and_then(Value::as_str);
    if needs_full_boot_triple(system) || current != Some(enabled) {
        patch.insert("BootSourceOverrideEnabled".to_owned(), json!(enabled));
    }
    let mode = mode.or_else(|| {
        needs_full_boot_triple(system)
            .then(|| boot.get("BootSourceOverrideMode").and_then(Value::as_str))
            .flatten()
    });
    if let Some(mode) = mode {
        patch.insert("BootSourceOverrideMode".to_owned(), json!(mode));
    }
    json!({ "Boot": patch })
}

/// Checks `value` against `<field>@Redfish.AllowableValues` of `object`, when listed.
pub fn check_allowed(object: &Value, field: &str, value: &str) -> Result<(), Vec<String>> {
    let key = format!("{field}@Redfish.AllowableValues");
    match object.get(&key).and_then(Value::as_array) {
        Some(list) => {
            let names: Vec<String> = list
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
            if names.iter().any(|n| n == value) {
                Ok(())
            } else {
                Err(names)
            }
        }
        None => Ok(()),
    }
}

/// Whether a refused `On` is worth retrying (409 right after a power off).
pub fn power_on_conflict(status: Option<u16>) -> bool {
    status == Some(409)
}

/// Whether a refused persistent boot override should be retried as `Once`.
pub fn persistent_refused(status: Option<u16>) -> bool {
    status.is_some_and(|s| (400..500).contains(&s) && s != 401 && s != 403)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn boot_patch_omits_an_unchanged_enabled_except_for_picky_vendors() {
        let system = json!({"Boot": {"BootSourceOverrideEnabled": "Once"}});
        assert_eq!(
            boot_patch(&system, "Pxe", "Once", None),
            json!({"Boot": {"BootSourceOverrideTarget": "Pxe"}})
        );
        assert_eq!(
            boot_patch(&system, "Hdd", "Continuous", Some("UEFI")),
            json!({"Boot": {"BootSourceOverrideTarget": "Hdd",
                "BootSourceOverrideEnabled": "Continuous", "BootSourceOverrideMode": "UEFI"}})
        );
        let smc = json!({"Manufacturer": "Supermicro",
            "Boot": {"BootSourceOverrideEnabled": "Once", "BootSourceOverrideMode": "UEFI"}});
        assert_eq!(
            boot_patch(&smc, "Pxe", "Once", None),
            json!({"Boot": {"BootSourceOverrideTarget": "Pxe",
                "BootSourceOverrideEnabled": "Once", "BootSourceOverrideMode": "UEFI"}})
        );
    }

    #[test]
    fn allowable_values_are_checked_when_listed() {
        let reset = json!({"ResetType@Redfish.AllowableValues": ["On", "ForceOff"]});
        assert!(check_allowed(&reset, "ResetType", "On").is_ok());
        assert_eq!(
            check_allowed(&reset, "ResetType", "Nmi").unwrap_err(),
            ["On", "ForceOff"]
        );
        assert!(check_allowed(&json!({}), "ResetType", "Nmi").is_ok());
        assert!(persistent_refused(Some(400)) && !persistent_refused(Some(401)));
        assert!(power_on_conflict(Some(409)));
    }
}
