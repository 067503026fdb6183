//! Human-readable output: tables and field lists.

use serde_json::Value;

/// A cell's text: strings bare, null empty, anything else as JSON.
pub fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Renders rows under headers with aligned columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, text) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(text.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(text, width)| format!("{text:<width$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(headers.iter().map(|h| (*h).to_owned()).collect());
    out.push('\n');
    out.push_str(&line(widths.iter().map(|w| "-".repeat(*w)).collect()));
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.clone()));
    }
    out
}

/// Renders an object as `field  value` lines, sorted by field.
pub fn fields(object: &Value) -> String {
    let Some(map) = object.as_object() else {
        return object.to_string();
    };
    let mut keys: Vec<&String> = map.keys().filter(|k| *k != "links").collect();
    keys.sort();
    let rows: Vec<Vec<String>> = keys
        .into_iter()
        .map(|k| vec![k.clone(), cell(map.get(k))])
        .collect();
    table(&["Field", "Value"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let text = table(
            &["UUID", "State"],
            &[vec!["a".to_owned(), "available".to_owned()]],
        );
        assert_eq!(text, "UUID  State\n----  ---------\na     available");
    }
}
