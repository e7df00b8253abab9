//! `fedshield schema draft`: a starting schema for a telemetry file, written
//! by [`fedshield_core::schema::draft`].

use anyhow::{Context, Result};
use fedshield_core::schema::draft::{DraftOptions, draft_schema};

use crate::cli::{SchemaArgs, SchemaCommand, SchemaDraftArgs};

/// Runs a `fedshield schema` command.
///
/// # Errors
/// When the file cannot be read or drafted, or the schema cannot be written.
pub fn run(args: SchemaArgs) -> Result<()> {
    match args.command {
        SchemaCommand::Draft(draft_args) => draft(&draft_args),
    }
}

fn draft(args: &SchemaDraftArgs) -> Result<()> {
    let options = DraftOptions {
        format: args.format.map(Into::into),
        fit: args.fit,
        max_records: args.max_records,
    };
    let text = draft_schema(&args.from, &options)
        .with_context(|| format!("failed to draft a schema from {}", args.from.display()))?;
    match &args.out {
        Some(out) => std::fs::write(out, text)
            .with_context(|| format!("failed to write the schema to {}", out.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}
