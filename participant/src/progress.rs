//! Progress of local training and model downloads: a progress bar when
//! stderr is a terminal, plain log lines otherwise (services, CI, files).
//! Only counts are shown (steps, epochs, bytes), nothing derived from data.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fedshield_core::ModelVersion;
use fedshield_core::model::training::TrainingProgress;
use fedshield_proto::download::DownloadProgress;
use indicatif::{ProgressBar, ProgressStyle};
use tracing::info;

/// Plain log lines about a download come at most this often.
const LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Reports one piece of work: a bar on a terminal, log lines otherwise.
pub struct Progress {
    bar: Option<ProgressBar>,
    what: String,
    /// Log-line mode: the last epoch (training) or time (download) logged.
    last_logged: Mutex<(u32, Instant)>,
}

impl Progress {
    /// Returns whether progress bars are drawn (stderr is a terminal).
    pub fn is_interactive() -> bool {
        std::io::stderr().is_terminal()
    }

    /// Progress of local training, `what` naming it ("round 7").
    pub fn training(what: impl Into<String>) -> Self {
        Self::new(
            what.into(),
            "{prefix} [{bar:30}] epoch {msg} · step {pos}/{len} · {elapsed}",
        )
    }

    /// Progress of a model download of `num_bytes` bytes.
    pub fn download(what: impl Into<String>, num_bytes: u64) -> Self {
        let progress = Self::new(
            what.into(),
            "{prefix} [{bar:30}] {bytes}/{total_bytes} · {bytes_per_sec}",
        );
        if let Some(bar) = &progress.bar {
            bar.set_length(num_bytes);
        }
        progress
    }

    fn new(what: String, template: &str) -> Self {
        let bar = Self::is_interactive().then(|| {
            let bar = ProgressBar::new(0).with_prefix(what.clone());
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        Progress {
            bar,
            what,
            last_logged: Mutex::new((0, Instant::now())),
        }
    }

    /// Records a training step.
    pub fn step(&self, progress: TrainingProgress) {
        match &self.bar {
            Some(bar) => {
                bar.set_length(progress.steps_planned);
                bar.set_position(progress.steps_done);
                bar.set_message(format!("{}/{}", progress.epoch, progress.epochs));
            }
            None => {
                // One line per finished epoch.
                let mut last = self
                    .last_logged
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner());
                let finished = if progress.steps_done == progress.steps_planned {
                    progress.epoch
                } else {
                    progress.epoch - 1
                };
                if finished > last.0 {
                    last.0 = finished;
                    info!(
                        what = %self.what,
                        epochs_done = finished,
                        epochs = progress.epochs,
                        steps_done = progress.steps_done,
                        steps_planned = progress.steps_planned,
                        "local training progress"
                    );
                }
            }
        }
    }

    /// Records `num_bytes` more downloaded bytes of `total`.
    pub fn advance(&self, num_bytes: u64, done: u64, total: u64) {
        match &self.bar {
            Some(bar) => bar.inc(num_bytes),
            None => {
                let mut last = self
                    .last_logged
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner());
                if last.1.elapsed() >= LOG_INTERVAL {
                    last.1 = Instant::now();
                    info!(what = %self.what, bytes = done, total_bytes = total, "download progress");
                }
            }
        }
    }

    /// Ends the bar (it is cleared; the caller logs the outcome).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A model download's [`Progress`], made once the download's size is known.
#[derive(Default)]
pub struct DownloadProgressBar {
    progress: Option<Progress>,
}

impl DownloadProgress for DownloadProgressBar {
    fn start(&mut self, version: ModelVersion, total_bytes: u64) {
        self.progress = Some(Progress::download(format!("model v{version}"), total_bytes));
    }

    fn advance(&mut self, num_bytes: u64, done: u64, total: u64) {
        if let Some(progress) = &self.progress {
            progress.advance(num_bytes, done, total);
        }
    }
}
