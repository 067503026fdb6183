//! Pagination parameters (`limit`, `marker`, `sort_key`, `sort_dir`) and `next` links.

use std::collections::BTreeMap;
use std::str::FromStr;

use crate::store::Page;

use super::errors::ApiError;

/// Largest page (Ironic's `[api]max_limit`).
pub const MAX_LIMIT: u32 = 1000;

/// Reads the pagination parameters of a listing query.
pub fn parse_page<K: FromStr>(
    query: &BTreeMap<String, String>,
    default_key: K,
) -> Result<Page<K>, ApiError> {
    let limit = match query.get("limit") {
        None => MAX_LIMIT,
        Some(text) => {
            let value: i64 = text.trim().parse().map_err(|_| {
                ApiError::bad_request(format!(
                    "Invalid value for limit: {text:?} is not an integer."
                ))
            })?;
            if value <= 0 {
                return Err(ApiError::bad_request("Limit must be positive"));
            }
            u32::try_from(value).unwrap_or(MAX_LIMIT).min(MAX_LIMIT)
        }
    };
    let sort_key = match query.get("sort_key") {
        None => default_key,
        Some(key) => key.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "The sort_key value \"{key}\" is an invalid field for sorting"
            ))
        })?,
    };
    let descending = match query.get("sort_dir").map(String::as_str) {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid sort direction: {other}. Acceptable values are 'asc' or 'desc'"
            )))
        }
    };
    Ok(Page {
        limit,
        marker: query.get("marker").cloned().filter(|m| !m.is_empty()),
        sort_key,
        descending,
    })
}

/// The `next` link when the page is full: the same query with `marker` set to the last UUID.
pub fn next_link(
    base: &str,
    query: &BTreeMap<String, String>,
    limit: u32,
    returned: usize,
    last_uuid: Option<&str>,
) -> Option<String> {
    let last = last_uuid?;
    if returned < limit as usize {
        return None;
    }
    let mut params = query.clone();
    params.insert("limit".to_owned(), limit.to_string());
    params.insert("marker".to_owned(), last.to_owned());
    let query = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    Some(format!("{base}?{query}"))
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NodeSortKey;

    fn query(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_and_limits() {
        let page = parse_page(&query(&[]), NodeSortKey::Id).unwrap();
        assert_eq!(page.limit, MAX_LIMIT);
        assert!(!page.descending);
        let page = parse_page(&query(&[("limit", "5000")]), NodeSortKey::Id).unwrap();
        assert_eq!(page.limit, MAX_LIMIT);
        assert!(parse_page(&query(&[("limit", "0")]), NodeSortKey::Id).is_err());
        assert!(parse_page(&query(&[("limit", "x")]), NodeSortKey::Id).is_err());
    }

    #[test]
    fn sort_parameters_are_checked() {
        let page = parse_page(
            &query(&[("sort_key", "name"), ("sort_dir", "desc"), ("marker", "m")]),
            NodeSortKey::Id,
        )
        .unwrap();
        assert_eq!(page.sort_key, NodeSortKey::Name);
        assert!(page.descending);
        assert_eq!(page.marker.as_deref(), Some("m"));
        assert!(parse_page(&query(&[("sort_key", "bogus")]), NodeSortKey::Id).is_err());
        assert!(parse_page(&query(&[("sort_dir", "up")]), NodeSortKey::Id).is_err());
    }

    #[test]
    fn next_link_only_for_full_pages() {
        let q = query(&[("limit", "2"), ("sort_key", "name")]);
        assert_eq!(next_link("http://c/v1/nodes", &q, 2, 1, Some("b")), None);
        assert_eq!(
            next_link("http://c/v1/nodes", &q, 2, 2, Some("b")).unwrap(),
            "http://c/v1/nodes?limit=2&marker=b&sort_key=name"
        );
    }
}
