//! How records are shown and built: masking, links, version stripping, short
//! views, `fields=` selection, defaults of new records, and input normalisation.

use ironclad_versioning::agent_api::Link;
use ironclad_versioning::controller_api::{Node, Port};
use ironclad_versioning::microversion::{
    first_newer_field, strip_newer_fields, ApiVersion, NODE_FIELD_VERSIONS, PORT_FIELD_VERSIONS,
};
use ironclad_versioning::states::ProvisionState;
use serde_json::{json, Map, Value};

use super::errors::ApiError;

/// Fields of the short node view (the list without `detail`).
pub const NODE_SHORT_FIELDS: &[&str] = &[
    "uuid",
    "name",
    "instance_uuid",
    "power_state",
    "provision_state",
    "maintenance",
    "links",
];

/// Fields of the short port view.
pub const PORT_SHORT_FIELDS: &[&str] = &["uuid", "address", "links"];

/// Links to a resource: `self` under `/v1` and `bookmark` without it.
pub fn links(public_url: &str, collection: &str, uuid: &str) -> Vec<Link> {
    vec![
        Link::new(format!("{public_url}/v1/{collection}/{uuid}"), "self"),
        Link::new(format!("{public_url}/{collection}/{uuid}"), "bookmark"),
    ]
}

fn to_map<T: serde::Serialize>(value: &T) -> Result<Map<String, Value>, ApiError> {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::internal("record is not a JSON object")),
        Err(e) => Err(ApiError::internal(format!("cannot serialize record: {e}"))),
    }
}

/// The full API view of a node at `version`, secrets masked.
pub fn node_view(
    node: &Node,
    public_url: &str,
    reservation: Option<String>,
    version: ApiVersion,
) -> Result<Map<String, Value>, ApiError> {
    let mut shown = node.clone();
    crate::secrets::mask_node(&mut shown);
    shown.reservation = reservation;
    shown.links = links(public_url, "nodes", &node.uuid);
    let mut map = to_map(&shown)?;
    let sub = |name: &str| {
        json!([
            Link::new(
                format!("{public_url}/v1/nodes/{}/{name}", node.uuid),
                "self"
            ),
            Link::new(
                format!("{public_url}/nodes/{}/{name}", node.uuid),
                "bookmark"
            ),
        ])
    };
    map.insert("ports".to_owned(), sub("ports"));
    map.insert("states".to_owned(), sub("states"));
    // Old clients know neither `available` (before 1.2) nor `inspect wait` (before 1.39).
    let shown_state = match node.provision_state {
        Some(ProvisionState::Available) if version < ApiVersion::new(1, 2) => Value::Null,
        Some(ProvisionState::InspectWait) if version < ApiVersion::new(1, 39) => {
            json!(ProvisionState::Inspecting)
        }
        other => json!(other),
    };
    map.insert("provision_state".to_owned(), shown_state);
    strip_newer_fields(NODE_FIELD_VERSIONS, &mut map, version);
    Ok(map)
}

/// The full API view of a port at `version`.
pub fn port_view(
    port: &Port,
    public_url: &str,
    version: ApiVersion,
) -> Result<Map<String, Value>, ApiError> {
    let mut shown = port.clone();
    shown.links = links(public_url, "ports", &port.uuid);
    let mut map = to_map(&shown)?;
    strip_newer_fields(PORT_FIELD_VERSIONS, &mut map, version);
    Ok(map)
}

/// Keeps only `fields` of a view.
pub fn select(mut view: Map<String, Value>, fields: &[&str]) -> Map<String, Value> {
    view.retain(|key, _| fields.contains(&key.as_str()));
    view
}

/// Parses `fields=a,b` (API 1.8+): unknown fields are 400, too-new ones 406.
pub fn parse_fields(
    text: &str,
    known: &Map<String, Value>,
    table: &[(&str, ApiVersion)],
    version: ApiVersion,
) -> Result<Vec<String>, ApiError> {
    if version < ApiVersion::new(1, 8) {
        return Err(ApiError::not_acceptable(
            "The fields parameter requires API version 1.8 or newer.",
        ));
    }
    let fields: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(str::to_owned)
        .collect();
    let unknown: Vec<&str> = fields
        .iter()
        .map(String::as_str)
        .filter(|f| !known.contains_key(*f))
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Field(s) \"{}\" are not valid",
            unknown.join(", ")
        )));
    }
    if let Some(field) = first_newer_field(table, fields.iter().map(String::as_str), version) {
        return Err(ApiError::not_acceptable(format!(
            "The field \"{field}\" is not available in API version {version}."
        )));
    }
    Ok(fields)
}

/// A node with every field at its default, as `POST /v1/nodes` starts from.
pub fn node_template(uuid: &str, driver: &str) -> Value {
    json!({
        "uuid": uuid, "name": null, "driver": driver,
        "boot_interface": null, "console_interface": null, "deploy_interface": null,
        "inspect_interface": null, "management_interface": null, "network_interface": null,
        "power_interface": null, "raid_interface": null, "rescue_interface": null,
        "storage_interface": null, "vendor_interface": null, "bios_interface": null,
        "firmware_interface": null, "properties": {}, "driver_info": {},
        "driver_internal_info": {}, "instance_info": {}, "instance_uuid": null,
        "provision_state": "enroll", "target_provision_state": null,
        "provision_updated_at": null, "power_state": null, "target_power_state": null,
        "last_error": null, "maintenance": false, "maintenance_reason": null, "fault": null,
        "reservation": null, "conductor": null, "conductor_group": "", "clean_step": {},
        "deploy_step": {}, "service_step": {}, "raid_config": {}, "target_raid_config": {},
        "boot_mode": null, "secure_boot": null, "traits": [], "extra": {},
        "resource_class": null, "owner": null, "lessee": null, "protected": false,
        "protected_reason": null, "retired": false, "retired_reason": null,
        "automated_clean": null, "network_data": {}, "console_enabled": false,
        "inspection_started_at": null, "inspection_finished_at": null, "description": null,
        "allocation_uuid": null, "shard": null, "parent_node": null,
        "disable_power_off": false, "created_at": null, "updated_at": null, "links": []
    })
}

/// A port with every field at its default, as `POST /v1/ports` starts from.
pub fn port_template(uuid: &str, address: &str, node_uuid: &str) -> Value {
    json!({
        "uuid": uuid, "address": address, "node_uuid": node_uuid, "portgroup_uuid": null,
        "local_link_connection": {}, "pxe_enabled": true, "physical_network": null,
        "internal_info": {}, "is_smartnic": false, "name": null, "extra": {},
        "created_at": null, "updated_at": null, "links": []
    })
}

/// Node fields no request may set: the conductor owns them.
pub const NODE_READ_ONLY: &[&str] = &[
    "uuid",
    "provision_state",
    "target_provision_state",
    "provision_updated_at",
    "power_state",
    "target_power_state",
    "driver_internal_info",
    "last_error",
    "reservation",
    "conductor",
    "clean_step",
    "deploy_step",
    "service_step",
    "raid_config",
    "target_raid_config",
    "inspection_started_at",
    "inspection_finished_at",
    "allocation_uuid",
    "console_enabled",
    "fault",
    "boot_mode",
    "secure_boot",
    "created_at",
    "updated_at",
    "links",
    "ports",
    "states",
];

/// Port fields no request may set.
pub const PORT_READ_ONLY: &[&str] = &["internal_info", "created_at", "updated_at", "links"];

/// Lower-cases and checks a MAC address (`aa:bb:cc:dd:ee:ff`, `-` also accepted).
pub fn normalize_mac(text: &str) -> Option<String> {
    let parts: Vec<&str> = text.trim().split([':', '-']).collect();
    let valid = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    valid.then(|| parts.join(":").to_ascii_lowercase())
}

/// Checks a node name: host-name characters plus `_`, `.`, `~`, and not a UUID.
pub fn validate_name(name: &str) -> Result<(), ApiError> {
    let valid_chars = !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c));
    if !valid_chars {
        return Err(ApiError::bad_request(format!(
            "Expected a logical name but received {name}. Names may contain letters, digits, '-', '_', '.' and '~'."
        )));
    }
    if uuid::Uuid::parse_str(name).is_ok() {
        return Err(ApiError::bad_request(format!(
            "Expected a logical name but received {name}, which looks like a UUID."
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Node {
        let mut value = node_template("1be26c0b-03f2-4d2e-ae87-c02d7f33c123", "fake-hardware");
        value["driver_info"] = json!({"ipmi_password": "p", "ipmi_address": "10.0.0.1"});
        value["driver_internal_info"] = json!({"agent_secret_token": "t", "agent_url": "u"});
        value["provision_state"] = json!("available");
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn views_mask_link_and_strip() {
        let view = node_view(&node(), "http://c", None, ApiVersion::new(1, 95)).unwrap();
        assert_eq!(view["driver_info"]["ipmi_password"], "******");
        assert_eq!(view["driver_info"]["ipmi_address"], "10.0.0.1");
        assert_eq!(view["driver_internal_info"]["agent_secret_token"], "******");
        assert_eq!(
            view["links"][0]["href"],
            "http://c/v1/nodes/1be26c0b-03f2-4d2e-ae87-c02d7f33c123"
        );
        let old = node_view(&node(), "http://c", None, ApiVersion::new(1, 1)).unwrap();
        assert!(!old.contains_key("name"));
        assert!(!old.contains_key("driver_internal_info"));
        assert_eq!(old["provision_state"], Value::Null);
    }

    #[test]
    fn macs_are_normalised() {
        assert_eq!(
            normalize_mac("AA:BB:cc:00:11:22").as_deref(),
            Some("aa:bb:cc:00:11:22")
        );
        assert_eq!(
            normalize_mac("aa-bb-cc-00-11-22").as_deref(),
            Some("aa:bb:cc:00:11:22")
        );
        assert_eq!(normalize_mac("aa:bb:cc:00:11"), None);
        assert_eq!(normalize_mac("zz:bb:cc:00:11:22"), None);
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("node-1.rack_2~a").is_ok());
        assert!(validate_name("bad name").is_err());
        assert!(validate_name("1be26c0b-03f2-4d2e-ae87-c02d7f33c123").is_err());
    }

    #[test]
    fn fields_are_validated() {
        let known = node_view(&node(), "http://c", None, ApiVersion::new(1, 95)).unwrap();
        let v = ApiVersion::new(1, 40);
        assert_eq!(
            parse_fields("uuid,name", &known, NODE_FIELD_VERSIONS, v).unwrap(),
            ["uuid", "name"]
        );
        assert_eq!(
            parse_fields("bogus", &known, NODE_FIELD_VERSIONS, v)
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            parse_fields("owner", &known, NODE_FIELD_VERSIONS, v)
                .unwrap_err()
                .status,
            406
        );
    }
}
