//! Writing drafted columns as schema TOML, each with its `# why:` comment,
//! under a header comment that names the file and says whether anything was
//! computed from it.

use std::fmt::Write as _;
use std::path::Path;

use super::sample::Sample;
use super::{ColumnBody, DraftColumn, DraftOptions};
use crate::schema::FileFormat;

/// Returns `text` as a TOML string.
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn toml_strings(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|value| toml_string(value)).collect();
    format!("[{}]", quoted.join(", "))
}

/// Returns `number` as a TOML float.
fn toml_float(number: f64) -> String {
    format!("{number:?}")
}

pub(super) fn render(
    sample: &Sample,
    format: FileFormat,
    source_name: &str,
    columns: &[DraftColumn],
    options: &DraftOptions,
) -> String {
    let file_name = Path::new(source_name)
        .file_name()
        .map_or(source_name.to_string(), |name| {
            name.to_string_lossy().into_owned()
        });
    let mut text = String::new();
    let _ = writeln!(
        text,
        "# A starting schema drafted by `fedshield schema draft` from {file_name} ({format}, {} records read).",
        sample.num_records
    );
    text.push_str("# Review every column: each `# why:` comment says why it was chosen.\n");
    if options.fit {
        let _ = writeln!(
            text,
            "# Fitted: the standardize constants, vocabularies and label values below were computed from {file_name}."
        );
        text.push_str("# They describe that file's traffic: decide whether to share them before this schema leaves your site.\n");
    } else {
        text.push_str("# Constants are fixed from each field's meaning; nothing here was computed from the file.\n");
    }
    if !columns
        .iter()
        .any(|column| matches!(column.body, ColumnBody::Label { .. }))
    {
        text.push_str("# No column holds labels: the schema has no label column.\n");
    }
    let _ = writeln!(text, "format = {}", toml_string(&format.to_string()));
    if format == FileFormat::Csv {
        text.push_str("has_header = true\n");
        let _ = writeln!(
            text,
            "delimiter = {}",
            toml_string(&char::from(sample.delimiter).to_string())
        );
    }
    if let Some((key, value)) = &sample.filter {
        text.push_str("\n# why: the file mixes event types; flow events are the records to learn from\n[filter]\n");
        let _ = writeln!(text, "{key} = {}", toml_string(value));
    }
    for column in columns {
        text.push('\n');
        let _ = writeln!(text, "[[columns]]\n# why: {}", column.why);
        let _ = writeln!(text, "name = {}", toml_string(&column.name));
        render_body(&mut text, &column.body, options.fit);
    }
    text
}

fn render_body(text: &mut String, body: &ColumnBody, fit: bool) {
    match body {
        ColumnBody::Ignore => text.push_str("kind = \"ignore\"\n"),
        ColumnBody::Identity { role } => {
            text.push_str("kind = \"identity\"\n");
            let _ = writeln!(text, "role = {}", toml_string(role));
        }
        ColumnBody::Numeric {
            range,
            fitted,
            missing,
        } => {
            text.push_str("kind = \"numeric\"\n");
            let mut transforms = vec![format!(
                "{{ clamp = {{ min = {}, max = {} }} }}",
                toml_float(range.min),
                toml_float(range.max)
            )];
            if range.log1p {
                transforms.push("\"log1p\"".to_string());
            }
            transforms.push(match fitted {
                Some((mean, std)) => format!(
                    "{{ standardize = {{ mean = {}, std = {} }} }}",
                    toml_float(*mean),
                    toml_float(*std)
                ),
                None => format!(
                    "{{ scale = {{ offset = 0.0, divisor = {} }} }}",
                    toml_float(range.divisor)
                ),
            });
            let _ = writeln!(text, "transforms = [{}]", transforms.join(", "));
            if *missing {
                text.push_str("missing = 0.0\n");
            }
        }
        ColumnBody::Categorical {
            vocabulary,
            hash_buckets,
            set,
            missing,
        } => {
            text.push_str("kind = \"categorical\"\n");
            match vocabulary {
                Some(values) => {
                    let _ = writeln!(text, "vocabulary = {}", toml_strings(values));
                }
                None => {
                    let _ = writeln!(text, "hash_buckets = {hash_buckets}");
                }
            }
            if *set {
                text.push_str("set = true\n");
            }
            if let Some(missing) = missing {
                let _ = writeln!(text, "missing = {}", toml_string(missing));
            }
        }
        ColumnBody::Label {
            benign,
            attacks,
            unknown,
        } => {
            text.push_str("kind = \"label\"\n");
            if benign.is_empty() {
                text.push_str(
                    "# no benign-like value was seen: list the values that mean benign\n",
                );
                text.push_str("benign = [\"benign\"]\n");
            } else {
                let _ = writeln!(text, "benign = {}", toml_strings(benign));
            }
            if !fit {
                text.push_str("unlisted_labels = \"attack\"\n");
                return;
            }
            if !unknown.is_empty() {
                let _ = writeln!(text, "# skipped: {}", toml_strings(unknown));
            }
            text.push_str("unlisted_labels = \"skip\"\n");
            if attacks.is_empty() {
                text.push_str("# no attack value was seen: every row of this file is benign\n");
            } else {
                let _ = writeln!(
                    text,
                    "classes = {{ malicious = {} }}",
                    toml_strings(attacks)
                );
            }
        }
    }
}
