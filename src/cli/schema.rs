//! Flags of `fedshield schema draft`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use fedshield_core::schema::FileFormat;

#[derive(Debug, Args)]
pub struct SchemaArgs {
    #[command(subcommand)]
    pub command: SchemaCommand,
}

#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Writes a starting schema for a telemetry file (a Zeek log, JSON lines such as eve.json, a csv
    /// file with a header), with a comment saying why each column was chosen. Review it before use.
    Draft(SchemaDraftArgs),
}

/// The file format a draft reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DraftFormat {
    Csv,
    Jsonl,
    Zeek,
}

impl From<DraftFormat> for FileFormat {
    fn from(format: DraftFormat) -> FileFormat {
        match format {
            DraftFormat::Csv => FileFormat::Csv,
            DraftFormat::Jsonl => FileFormat::Jsonl,
            DraftFormat::Zeek => FileFormat::Zeek,
        }
    }
}

#[derive(Debug, Args)]
pub struct SchemaDraftArgs {
    /// The telemetry file to draft a schema from.
    #[arg(long = "from")]
    pub from: PathBuf,
    /// The file's format. Default: from its first line (`#` zeek, `{` jsonl, else csv).
    #[arg(long, value_enum)]
    pub format: Option<DraftFormat>,
    /// Compute standardize constants, vocabularies and label values from the file. They describe
    /// its traffic: the schema says so, and you decide before sharing it.
    #[arg(long)]
    pub fit: bool,
    /// Write the schema here instead of to stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Most records read.
    #[arg(long, default_value_t = fedshield_core::schema::draft::DEFAULT_MAX_DRAFT_RECORDS)]
    pub max_records: usize,
}
