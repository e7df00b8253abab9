//! What differs between two feature schemas, in words an operator can act
//! on: the columns one has and the other lacks, the columns whose settings
//! differ (and which settings), a different column order, and other
//! settings (format, label mapping) that differ.
//!
//! It compares the canonical TOML texts ([`crate::schema::Schema::to_toml_string`])
//! as TOML documents, so it needs nothing but the two texts: a participant
//! compares its own schema with the one a model card carries.

use std::collections::BTreeSet;

use toml::{Table, Value};

/// Most differences listed; the rest are counted.
pub const MAX_DIFFERENCES: usize = 12;

/// Longest value quoted in a difference, in characters.
const MAX_VALUE_CHARS: usize = 120;

/// Returns the differences between the federation's schema and the local
/// one, each as one line, at most [`MAX_DIFFERENCES`] of them plus a line
/// counting the rest. Empty when the two are the same document.
///
/// # Errors
/// A message naming which of the two texts is not TOML.
pub fn schema_differences(federation: &str, local: &str) -> Result<Vec<String>, String> {
    let federation: Table = federation
        .parse()
        .map_err(|error| format!("the federation's schema is not TOML: {error}"))?;
    let local: Table = local
        .parse()
        .map_err(|error| format!("the local schema is not TOML: {error}"))?;
    let mut differences = column_differences(&columns_of(&federation), &columns_of(&local));
    let keys: BTreeSet<&String> = federation
        .keys()
        .chain(local.keys())
        .filter(|key| *key != "columns")
        .collect();
    for key in keys {
        match (federation.get(key), local.get(key)) {
            (Some(ours), Some(theirs)) if ours == theirs => {}
            (ours, theirs) => differences.push(format!(
                "`{key}`: the federation has {}, the local schema has {}",
                quoted(ours),
                quoted(theirs)
            )),
        }
    }
    if differences.len() > MAX_DIFFERENCES {
        let rest = differences.len() - MAX_DIFFERENCES;
        differences.truncate(MAX_DIFFERENCES);
        differences.push(format!("and {rest} more differences"));
    }
    Ok(differences)
}

/// A column: its name and its other settings.
type NamedColumn<'a> = (String, &'a Table);

/// Returns the schema's columns in order; a column without a name is
/// named by its position.
fn columns_of(schema: &Table) -> Vec<NamedColumn<'_>> {
    let Some(Value::Array(columns)) = schema.get("columns") else {
        return Vec::new();
    };
    columns
        .iter()
        .enumerate()
        .filter_map(|(index, column)| {
            let table = column.as_table()?;
            let name = match table.get("name") {
                Some(Value::String(name)) => name.clone(),
                _ => format!("#{}", index + 1),
            };
            Some((name, table))
        })
        .collect()
}

fn column_differences(federation: &[NamedColumn<'_>], local: &[NamedColumn<'_>]) -> Vec<String> {
    let mut differences = Vec::new();
    fn find<'a>(columns: &[NamedColumn<'a>], name: &str) -> Option<&'a Table> {
        columns
            .iter()
            .find(|(other, _)| other == name)
            .map(|(_, table)| *table)
    }
    for (name, ours) in federation {
        let Some(theirs) = find(local, name) else {
            differences.push(format!(
                "column `{name}` is in the federation's schema but not in the local one"
            ));
            continue;
        };
        let keys: BTreeSet<&String> = ours.keys().chain(theirs.keys()).collect();
        for key in keys {
            let (a, b) = (ours.get(key), theirs.get(key));
            if a != b {
                differences.push(format!(
                    "column `{name}`: `{key}` is {} in the federation's schema, {} in the local one",
                    quoted(a),
                    quoted(b)
                ));
            }
        }
    }
    for (name, _) in local {
        if find(federation, name).is_none() {
            differences.push(format!(
                "column `{name}` is in the local schema but not in the federation's"
            ));
        }
    }
    let shared_order = |ours: &[NamedColumn<'_>], theirs: &[NamedColumn<'_>]| -> Vec<String> {
        ours.iter()
            .filter(|(name, _)| find(theirs, name).is_some())
            .map(|(name, _)| name.clone())
            .collect()
    };
    let federation_order = shared_order(federation, local);
    let local_order = shared_order(local, federation);
    if federation_order != local_order {
        differences.push(format!(
            "the columns are in another order: the federation has {}, the local schema {}",
            shorten(&federation_order.join(", ")),
            shorten(&local_order.join(", "))
        ));
    }
    differences
}

/// A setting's value as TOML, shortened, or "nothing" when absent.
fn quoted(value: Option<&Value>) -> String {
    match value {
        Some(value) => shorten(&value.to_string()),
        None => "nothing".to_string(),
    }
}

fn shorten(text: &str) -> String {
    if text.chars().count() <= MAX_VALUE_CHARS {
        return text.to_string();
    }
    let mut short: String = text.chars().take(MAX_VALUE_CHARS).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
format = "csv"
has_header = true

[[columns]]
name = "bytes"
kind = "numeric"

[[columns]]
name = "proto"
kind = "categorical"
values = ["tcp", "udp"]

[[columns]]
name = "label"
kind = "label"
"#;

    #[test]
    fn equal_documents_have_no_differences() {
        assert_eq!(
            schema_differences(BASE, BASE).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_missing_an_extra_and_a_changed_column_are_each_named() {
        let local = BASE
            .replace("name = \"bytes\"", "name = \"octets\"")
            .replace("[\"tcp\", \"udp\"]", "[\"tcp\", \"udp\", \"icmp\"]");
        let differences = schema_differences(BASE, &local).unwrap();
        assert_eq!(differences.len(), 3, "{differences:#?}");
        assert!(
            differences[0]
                .contains("column `bytes` is in the federation's schema but not in the local one")
        );
        assert!(
            differences[1].contains("column `proto`: `values`"),
            "{}",
            differences[1]
        );
        assert!(differences[1].contains("\"icmp\""), "{}", differences[1]);
        assert!(differences[2].contains("column `octets` is in the local schema"));
    }

    #[test]
    fn a_different_order_and_a_top_level_setting_are_named() {
        let local = r#"
format = "jsonl"
has_header = true

[[columns]]
name = "proto"
kind = "categorical"
values = ["tcp", "udp"]

[[columns]]
name = "bytes"
kind = "numeric"

[[columns]]
name = "label"
kind = "label"
"#;
        let differences = schema_differences(BASE, local).unwrap();
        assert_eq!(differences.len(), 2, "{differences:#?}");
        assert!(
            differences[0].contains("another order"),
            "{}",
            differences[0]
        );
        assert!(
            differences[0].contains("bytes, proto, label"),
            "{}",
            differences[0]
        );
        assert!(differences[1].starts_with("`format`"), "{}", differences[1]);
    }

    #[test]
    fn many_differences_are_capped_and_counted() {
        let mut local = String::from("format = \"csv\"\nhas_header = true\n");
        for index in 0..20 {
            local.push_str(&format!(
                "[[columns]]\nname = \"extra{index}\"\nkind = \"numeric\"\n"
            ));
        }
        let differences = schema_differences(BASE, &local).unwrap();
        assert_eq!(differences.len(), MAX_DIFFERENCES + 1);
        assert!(
            differences.last().unwrap().starts_with("and "),
            "{differences:#?}"
        );
    }

    #[test]
    fn text_that_is_not_toml_is_an_error_naming_its_side() {
        let error = schema_differences(BASE, "columns = [").unwrap_err();
        assert!(error.starts_with("the local schema"), "{error}");
    }
}
