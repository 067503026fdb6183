//! RFC 6902 JSON Patch on a node's API representation, refusing read-only fields.

use ironclad_versioning::controller_api::Node;
use ironclad_versioning::microversion::{introduced_in, ApiVersion, NODE_FIELD_VERSIONS};
use serde_json::Value;

use super::errors::ApiError;
use super::views::NODE_READ_ONLY;

/// The top-level field a patch path touches (`/driver_info/x` → `driver_info`).
fn top_field(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/')?;
    let field = rest.split('/').next()?;
    (!field.is_empty()).then_some(field)
}

/// Applies `operations` to `node` and returns the patched node; the caller checks
/// cross-record rules (name uniqueness, known driver).
pub fn apply_node_patch(
    node: &Node,
    operations: &Value,
    version: ApiVersion,
) -> Result<Node, ApiError> {
    let ops = operations
        .as_array()
        .ok_or_else(|| ApiError::bad_request("A JSON patch must be a list of operations."))?;
    let mut document = serde_json::to_value(node)
        .map_err(|e| ApiError::internal(format!("cannot serialize node: {e}")))?;
    let known = document
        .as_object()
        .map(|m| m.keys().cloned().collect::<Vec<_>>())
        .unwrap_or_default();
    for op in ops {
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::bad_request("Every patch operation needs a \"path\"."))?;
        let field = top_field(path)
            .ok_or_else(|| ApiError::bad_request(format!("Invalid patch path {path:?}.")))?;
        if NODE_READ_ONLY.contains(&field) {
            return Err(ApiError::bad_request(format!(
                "'/{field}' is an internal attribute and can not be updated"
            )));
        }
        if !known.iter().any(|k| k == field) {
            return Err(ApiError::bad_request(format!(
                "Adding a new attribute ({path}) to the root of the resource is not allowed"
            )));
        }
        let needs = introduced_in(NODE_FIELD_VERSIONS, field);
        if needs > version {
            return Err(ApiError::not_acceptable(format!(
                "The field \"{field}\" needs API version {needs}; the request is at {version}."
            )));
        }
        let is_root_remove = op.get("op").and_then(Value::as_str) == Some("remove")
            && path.trim_end_matches('/') == format!("/{field}");
        if is_root_remove && field == "driver" {
            return Err(ApiError::bad_request(
                "'/driver' is a mandatory attribute and can not be removed",
            ));
        }
    }
    let patch: json_patch::Patch = serde_json::from_value(operations.clone())
        .map_err(|e| ApiError::bad_request(format!("Invalid JSON patch: {e}")))?;
    json_patch::patch(&mut document, &patch)
        .map_err(|e| ApiError::bad_request(format!("Cannot apply the patch: {e}")))?;
    // Removing a whole field resets it to its default rather than deleting it.
    if let (Some(patched), Value::Object(template)) = (
        document.as_object_mut(),
        super::views::node_template(&node.uuid, &node.driver),
    ) {
        for (key, default) in template {
            patched.entry(key).or_insert(default);
        }
    }
    serde_json::from_value(document)
        .map_err(|e| ApiError::bad_request(format!("Invalid node after the patch: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node() -> Node {
        serde_json::from_value(super::super::views::node_template("u1", "fake-hardware")).unwrap()
    }

    #[test]
    fn instance_info_can_be_added_and_removed() {
        let v = ApiVersion::new(1, 95);
        let patched = apply_node_patch(
            &node(),
            &json!([{"op": "add", "path": "/instance_info/image_source", "value": "http://x"}]),
            v,
        )
        .unwrap();
        assert_eq!(patched.instance_info["image_source"], "http://x");
        let cleared = apply_node_patch(
            &patched,
            &json!([{"op": "remove", "path": "/instance_info"}]),
            v,
        )
        .unwrap();
        assert!(cleared.instance_info.is_empty());
    }

    #[test]
    fn read_only_and_unknown_fields_are_refused() {
        let v = ApiVersion::new(1, 95);
        for path in ["/uuid", "/provision_state", "/driver_internal_info/x"] {
            let err = apply_node_patch(
                &node(),
                &json!([{"op": "replace", "path": path, "value": "x"}]),
                v,
            )
            .unwrap_err();
            assert_eq!(err.status, 400, "{path}");
            assert!(
                err.message.contains("internal attribute"),
                "{}",
                err.message
            );
        }
        let err = apply_node_patch(
            &node(),
            &json!([{"op": "add", "path": "/bogus", "value": 1}]),
            v,
        )
        .unwrap_err();
        assert_eq!(err.status, 400);
    }

    #[test]
    fn types_and_versions_are_checked() {
        let err = apply_node_patch(
            &node(),
            &json!([{"op": "replace", "path": "/maintenance", "value": "yes"}]),
            ApiVersion::new(1, 95),
        )
        .unwrap_err();
        assert_eq!(err.status, 400);
        let err = apply_node_patch(
            &node(),
            &json!([{"op": "replace", "path": "/owner", "value": "p"}]),
            ApiVersion::new(1, 40),
        )
        .unwrap_err();
        assert_eq!(err.status, 406);
    }
}
