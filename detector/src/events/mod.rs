//! Events: input bytes → lines → records → feature vectors.
//!
//! - [`lines`]: splitting input into lines with one fixed buffer.
//! - [`parser`]: csv fields, a JSON object or a Zeek TSV row through the
//!   schema's featurizer; malformed lines named by line and column.
//! - [`input`]: standard input, or a file followed through truncation and rotation.

pub mod input;
pub mod lines;
pub mod parser;

pub use input::{EventFile, EventInput, FileChange, STDIN_NAME};
pub use lines::{Line, LineReader, READ_BUFFER_BYTES};
pub use parser::{EventParser, LineError, ParsedLine};
