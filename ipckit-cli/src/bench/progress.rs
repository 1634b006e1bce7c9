//! What the user sees on standard error while the benchmark runs: a progress bar with the
//! current measurement and the time left when standard error is a terminal; otherwise
//! nothing until the one-line summary at the end.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Progress over a known number of steps.
pub struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
}

impl Progress {
    /// A bar of `steps` steps on a terminal; silent otherwise.
    pub fn new(steps: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(steps), ProgressDrawTarget::stderr());
            // The template is a constant: if it were refused the bar keeps its default look.
            if let Ok(style) = ProgressStyle::with_template(
                "{bar:30.cyan/blue} {pos}/{len} {msg:40!} elapsed {elapsed}, ETA {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            // No steady tick: its thread would share the descriptor table with the thread
            // that measures (see `helper_thread`); the bar is drawn at each step instead.
            bar
        });
        Progress {
            bar,
            started: Instant::now(),
        }
    }

    /// Says what runs now.
    pub fn doing(&self, what: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(what);
        }
    }

    /// One step done.
    pub fn step(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    /// Prints a warning on standard error without tearing the bar.
    pub fn warn(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("ipckit bench: warning: {text}")),
            None => eprintln!("ipckit bench: warning: {text}"),
        }
    }

    /// Removes the bar; without one, prints `summary` (with the elapsed time) as one line.
    pub fn finish(self, summary: &str) {
        let secs = self.started.elapsed().as_secs_f64();
        match self.bar {
            Some(bar) => bar.finish_and_clear(),
            None => eprintln!("ipckit bench: {summary} in {secs:.1} s"),
        }
    }
}
