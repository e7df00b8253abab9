//! The value parsers of flags that clap's built-in ones do not cover: files that
//! must exist, ε, δ and clipping norms.

use std::path::PathBuf;

use fedshield_core::units::{Delta, Epsilon, RangeError};

/// Parses a path to a file that must exist (a certificate, a key, a schema, data).
pub fn existing_file(value: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(value);
    if path.is_file() {
        Ok(path)
    } else if path.exists() {
        Err(format!("{value} is not a file"))
    } else {
        Err(format!("file {value} does not exist"))
    }
}

/// Parses a number that must be finite and greater than 0; `name` names it in errors.
fn positive(name: &str, value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(number) if number.is_finite() && number > 0.0 => Ok(number),
        Ok(_) => Err(format!("{name} is {value}, must be finite and positive")),
        Err(error) => Err(format!("{name} is {value}, not a number: {error}")),
    }
}

/// Parses an ε: finite and greater than 0.
pub fn epsilon(value: &str) -> Result<f64, RangeError> {
    value.parse::<Epsilon>().map(Epsilon::get)
}

/// Parses a clipping norm: finite and greater than 0.
pub fn clip_norm(value: &str) -> Result<f64, String> {
    positive("clip norm", value)
}

/// Parses a δ: in (0, [`fedshield_core::units::MAX_DELTA`]].
pub fn delta(value: &str) -> Result<f64, RangeError> {
    value.parse::<Delta>().map(Delta::get)
}
