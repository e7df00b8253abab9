//! The schema parser and the featurizer under arbitrary input.
//!
//! A participant loads an operator-written schema (TOML) and then featurizes
//! its telemetry files through it; both come from outside the process. This
//! module checks that neither ever panics, that a schema that parses
//! round-trips through its canonical TOML (its sha256 is what participants
//! and the coordinator compare), and that every row the loader keeps has
//! exactly the schema's number of features, all finite, and a label class
//! the schema knows.
//!
//! Input layout (see [`SchemaInput::parse`]): the schema's TOML up to the
//! first NUL byte, one byte that picks csv (even) or jsonl (odd), then the
//! rows.

use fedshield_core::ingest::{IngestOptions, load_dataset_from_reader};
use fedshield_core::schema::{FileFormat, Schema};

/// Rows read per input at most, to keep each run short.
const MAX_FUZZ_ROWS: usize = 64;

/// A schema text and telemetry rows, split from fuzzer bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaInput<'a> {
    pub schema_toml: &'a [u8],
    pub format: FileFormat,
    pub rows: &'a [u8],
}

impl<'a> SchemaInput<'a> {
    /// Splits fuzzer bytes: everything before the first NUL byte is the
    /// schema, the byte after it picks the format, the rest are the rows.
    /// Without a NUL the whole input is the schema and there are no rows.
    pub fn parse(input: &'a [u8]) -> Self {
        let Some(nul) = input.iter().position(|&byte| byte == 0) else {
            return SchemaInput {
                schema_toml: input,
                format: FileFormat::Csv,
                rows: &[],
            };
        };
        let after_nul = &input[nul + 1..];
        let format = match after_nul.first() {
            Some(2) => FileFormat::Zeek,
            Some(selector) if selector % 2 == 1 => FileFormat::Jsonl,
            _ => FileFormat::Csv,
        };
        SchemaInput {
            schema_toml: &input[..nul],
            format,
            rows: after_nul.get(1..).unwrap_or(&[]),
        }
    }

    /// Returns the fuzzer bytes that [`SchemaInput::parse`] turns back into
    /// this input (the schema must hold no NUL byte).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = self.schema_toml.to_vec();
        bytes.push(0);
        bytes.push(match self.format {
            FileFormat::Csv => 0,
            FileFormat::Jsonl => 1,
            FileFormat::Zeek => 2,
        });
        bytes.extend_from_slice(self.rows);
        bytes
    }
}

/// Parses the schema and loads the rows through it, checking the invariants
/// above. A schema that does not parse is replaced by [`Schema::for_test`],
/// so that the rows are featurized whatever the schema bytes. Returns whether
/// the schema parsed.
///
/// # Panics
/// When parsing or loading panics or an invariant fails: that is how a fuzz
/// target reports a bug.
pub fn check_schema_ingest(input: &[u8]) -> bool {
    let input = SchemaInput::parse(input);
    let parsed = std::str::from_utf8(input.schema_toml)
        .ok()
        .and_then(|text| Schema::from_toml_str(text).ok());
    let schema_parsed = parsed.is_some();
    if let Some(schema) = &parsed {
        let canonical = schema.to_toml_string();
        let reparsed = Schema::from_toml_str(&canonical).unwrap_or_else(|error| {
            panic!("canonical TOML of a valid schema does not parse: {error}\n{canonical}")
        });
        assert!(
            reparsed == *schema && reparsed.sha256() == schema.sha256(),
            "schema changes through its canonical TOML:\n{canonical}"
        );
    }
    let schema = parsed.unwrap_or_else(Schema::for_test);
    let options = IngestOptions {
        max_rows: Some(MAX_FUZZ_ROWS),
        max_line_bytes: 64 * 1024,
        require_labels: input.rows.first().is_some_and(|byte| byte % 2 == 0),
        ..IngestOptions::default()
    };
    let Ok((dataset, report)) =
        load_dataset_from_reader(input.rows, "<fuzz>", input.format, &schema, &options)
    else {
        return schema_parsed;
    };
    assert_eq!(dataset.num_features(), schema.num_features());
    assert_eq!(dataset.len(), report.num_rows);
    assert_eq!(
        dataset.features().len(),
        dataset.len() * schema.num_features(),
        "every kept row has the schema's number of features"
    );
    assert!(
        dataset.features().iter().all(|value| value.is_finite()),
        "every kept feature is finite"
    );
    assert!(
        dataset
            .classes()
            .iter()
            .all(|&class| (class as usize) < schema.num_classes()),
        "every kept row has a class the schema knows"
    );
    schema_parsed
}
