//! The local sinks: the alert file and its rotation, and standard output
//! over a real pipe.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use fedshield_detector::alert::{Alert, ModelKindName};
use fedshield_detector::sinks::file::rotated_path;
use fedshield_detector::sinks::stdout::StdoutSink;
use fedshield_detector::sinks::{AlertSink, SinkOptions, SinkSpec, open_sink};

fn alert(index: u64) -> Alert {
    Alert {
        source: "-".to_string(),
        line: index + 1,
        score: 1.5,
        threshold: 1.0,
        alert_fpr: None,
        is_attack: true,
        category: None,
        model_version: 1,
        model_sha256: "aa".to_string(),
        model_kind: ModelKindName::Autoencoder,
        fields: Vec::new(),
        explanation: Vec::new(),
        count: 1,
        detected_unix_ms: 0,
    }
}

/// Returns alert `index`'s record: 200 bytes, 201 with its line feed.
fn record(index: u64) -> Vec<u8> {
    format!(r#"{{"line":{:>4},"pad":"{}"}}"#, index + 1, "x".repeat(178)).into_bytes()
}

/// Returns every line of the alert file and its rotated files, by line
/// number, failing on a line seen twice or not intact.
fn lines_by_number(path: &Path, num_kept: usize) -> Result<BTreeMap<u64, usize>> {
    let mut by_number = BTreeMap::new();
    let files = std::iter::once(path.to_path_buf())
        .chain((1..=num_kept).map(|index| rotated_path(path, index)));
    for (file_index, file) in files.enumerate() {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for line in text.lines() {
            let value: serde_json::Value =
                serde_json::from_str(line).with_context(|| format!("a broken line: {line}"))?;
            let number = value["line"].as_u64().context("no line")?;
            ensure!(
                line.as_bytes() == record(number - 1),
                "line {number} changed"
            );
            ensure!(
                by_number.insert(number, file_index).is_none(),
                "line {number} written twice"
            );
        }
    }
    Ok(by_number)
}

#[test]
fn the_alert_file_rotates_past_max_bytes_keeping_every_line_once() -> Result<()> {
    let directory = tempfile::tempdir()?;
    let path = directory.path().join("alerts.jsonl");
    let runtime = tokio::runtime::Runtime::new()?;
    let mut options = SinkOptions::for_test();
    options.file_max_bytes = 10_000;
    options.file_num_kept = 3;
    let spec: SinkSpec = format!("file:{}", path.display()).parse()?;
    let mut sink = open_sink(&spec, &options, runtime.handle())?;
    assert_eq!(sink.name(), "file");

    // 200 records of 201 bytes: 4 files' worth (49 lines each), written in
    // batches with flushes between, as the detector does.
    for batch in 0..10 {
        for index in batch * 20..(batch + 1) * 20 {
            sink.submit(&alert(index), &record(index))?;
        }
        sink.flush(Duration::from_secs(1))?;
    }
    let stats = sink.stats();
    assert_eq!((stats.num_submitted, stats.num_delivered), (200, 200));

    for file in std::iter::once(path.clone()).chain((1..=3).map(|index| rotated_path(&path, index)))
    {
        let size = std::fs::metadata(&file)
            .with_context(|| format!("{} missing", file.display()))?
            .len();
        assert!(size <= 10_000, "{} has {size} bytes", file.display());
    }
    assert!(
        !rotated_path(&path, 4).exists(),
        "only 3 rotated files are kept"
    );
    // Lines 1 to 200 in 49-line files: the current file holds the last
    // 200 - 4 × 49 = 4 lines, .1 to .3 the 147 before (50 to 196); the
    // oldest 49 were rotated out.
    let by_number = lines_by_number(&path, 3)?;
    let numbers: Vec<u64> = by_number.keys().copied().collect();
    assert_eq!(numbers, (50..=200).collect::<Vec<u64>>());
    assert_eq!(by_number.get(&200), Some(&0));
    assert_eq!(by_number.get(&197), Some(&0));
    assert_eq!(by_number.get(&196), Some(&1));
    assert_eq!(by_number.get(&50), Some(&3));
    Ok(())
}

#[test]
fn reopening_the_alert_file_appends_and_counts_its_size() -> Result<()> {
    let directory = tempfile::tempdir()?;
    let path = directory.path().join("alerts.jsonl");
    let runtime = tokio::runtime::Runtime::new()?;
    let mut options = SinkOptions::for_test();
    options.file_max_bytes = 1_000;
    let spec: SinkSpec = format!("file:{}", path.display()).parse()?;
    for round in 0..2u64 {
        let mut sink = open_sink(&spec, &options, runtime.handle())?;
        for index in round * 3..round * 3 + 3 {
            sink.submit(&alert(index), &record(index))?;
        }
        sink.flush(Duration::from_secs(1))?;
    }
    // 6 lines of 201 bytes, 4 to a file of 1,000: the second run rotated
    // when its second line would pass the limit.
    let by_number = lines_by_number(&path, 3)?;
    assert_eq!(by_number.len(), 6);
    assert_eq!(std::fs::read_to_string(&path)?.lines().count(), 2);
    assert_eq!(
        std::fs::read_to_string(rotated_path(&path, 1))?
            .lines()
            .count(),
        4
    );
    Ok(())
}

#[test]
fn an_alert_file_that_cannot_be_opened_is_named_in_the_error() -> Result<()> {
    let directory = tempfile::tempdir()?;
    let path = directory.path().join("missing-dir").join("alerts.jsonl");
    let runtime = tokio::runtime::Runtime::new()?;
    let spec: SinkSpec = format!("file:{}", path.display()).parse()?;
    let message = match open_sink(&spec, &SinkOptions::for_test(), runtime.handle()) {
        Ok(_) => anyhow::bail!("opened a file in a missing directory"),
        Err(error) => error.to_string(),
    };
    assert!(message.contains(&path.display().to_string()), "{message}");
    Ok(())
}

#[test]
fn stdout_writes_one_line_per_record_when_a_batch_ends() -> Result<()> {
    let (mut reader, writer) = std::io::pipe()?;
    let mut sink = StdoutSink::with_writer(writer);
    for index in 0..3 {
        sink.submit(&alert(index), &record(index))?;
    }
    assert_eq!(sink.stats().num_delivered, 0);
    sink.end_batch()?;
    assert_eq!(sink.stats().num_delivered, 3);
    drop(sink);
    let mut text = String::new();
    reader.read_to_string(&mut text)?;
    let expected: Vec<String> = (0..3)
        .map(|index| String::from_utf8_lossy(&record(index)).into_owned())
        .collect();
    assert_eq!(text.lines().collect::<Vec<_>>(), expected);
    Ok(())
}

#[test]
fn a_closed_stdout_pipe_closes_the_sink_without_an_error() -> Result<()> {
    let (reader, writer) = std::io::pipe()?;
    drop(reader);
    let mut sink = StdoutSink::with_writer(writer);
    sink.submit(&alert(0), &record(0))?;
    assert!(!sink.is_closed());
    sink.flush(Duration::from_secs(1))?;
    assert!(sink.is_closed());
    sink.submit(&alert(1), &record(1))?;
    sink.flush(Duration::from_secs(1))?;
    let stats = sink.stats();
    assert_eq!(
        (stats.num_submitted, stats.num_delivered, stats.num_dropped),
        (2, 0, 2)
    );
    Ok(())
}
