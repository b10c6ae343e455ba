//! Samples, medians and the report lines.
//!
//! Every figure is a median, never a mean: this machine is shared and noisy,
//! and a handful of runs that lose the CPU to a neighbour would drag a mean
//! far from what a run normally costs. The median ignores those outliers as
//! long as they are fewer than half of the runs; p10 and p90 are printed
//! next to it so the spread is visible too.

use std::{fmt::Write as _, time::Instant};

/// Measured values of one figure, kept sorted.
pub struct Samples {
    sorted: Vec<f64>,
}

impl Samples {
    /// Takes ownership of raw measurements (any unit) and sorts them.
    ///
    /// Panics on an empty set or a NaN: both would be a bug in the bench,
    /// and a figure computed from them would be meaningless.
    pub fn new(mut values: Vec<f64>) -> Samples {
        assert!(!values.is_empty(), "a figure needs at least one sample");
        values.sort_by(|a, b| a.partial_cmp(b).expect("a sample is NaN"));
        Samples { sorted: values }
    }

    /// Merges two sets of samples of the same quantity, e.g. idle runs
    /// taken before and after a loaded phase.
    pub fn merged(a: &Samples, b: &Samples) -> Samples {
        Samples::new(a.sorted.iter().chain(&b.sorted).copied().collect())
    }

    /// The median: the middle sample, or the mean of the two middle ones.
    pub fn median(&self) -> f64 {
        let n = self.sorted.len();
        if n % 2 == 1 {
            self.sorted[n / 2]
        } else {
            (self.sorted[n / 2 - 1] + self.sorted[n / 2]) / 2.0
        }
    }

    /// The nearest-rank quantile `q` (0.0..=1.0); used only for the spread
    /// shown next to a median, so no interpolation is needed.
    pub fn quantile(&self, q: f64) -> f64 {
        let n = self.sorted.len();
        let rank = (q * n as f64).ceil() as usize;
        self.sorted[rank.clamp(1, n) - 1]
    }

    /// The largest sample (peak RSS is judged by the worst run).
    pub fn max(&self) -> f64 {
        self.sorted[self.sorted.len() - 1]
    }

    /// How many samples there are.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// "p10 …, p90 …, n=…" with `unit` formatting each value: the spread
    /// printed after a median so a reader can tell a steady figure from a
    /// noisy one.
    pub fn spread(&self, unit: fn(f64) -> String) -> String {
        format!(
            "p10 {}, p90 {}, n={}",
            unit(self.quantile(0.10)),
            unit(self.quantile(0.90)),
            self.len()
        )
    }
}

/// Times `runs` calls of `f`, each on its own, after `warmup` untimed calls.
///
/// The warmup fills caches, faults in code and lets the kernel allocate
/// whatever it keeps per process (the first netlink socket, slab caches),
/// which a long-running caller would not pay for on every call. Timing each
/// call separately, not the whole loop, is what makes a median possible.
pub fn time_calls<T>(warmup: usize, runs: usize, mut f: impl FnMut() -> T) -> Samples {
    for _ in 0..warmup {
        std::hint::black_box(f());
    }
    let mut seconds = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        std::hint::black_box(f());
        seconds.push(start.elapsed().as_secs_f64());
    }
    Samples::new(seconds)
}

/// Formats a duration in seconds with a unit that keeps 3–4 significant
/// digits readable (µs for netlink, ms for processes and bind scans).
pub fn secs(s: f64) -> String {
    if s < 1e-3 {
        format!("{:.1} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{s:.3} s")
    }
}

/// Formats a size in KiB as MiB, the unit of the RSS target.
pub fn kib(k: f64) -> String {
    format!("{:.2} MiB", k / 1024.0)
}

/// Formats a ratio.
pub fn ratio(r: f64) -> String {
    format!("{r:.2}×")
}

/// How a figure compares with its target.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// Printed for context: a figure with no target of its own.
    Info,
}

/// The printed result: one line per figure as it is measured (so a long run
/// shows progress), and a closing summary naming every missed target.
#[derive(Default)]
pub struct Report {
    failed: Vec<String>,
    passed: usize,
}

impl Report {
    /// Prints the column headings.
    pub fn header(&self) {
        println!(
            "{:<44} {:>11}  {:<14} {:<6} spread",
            "figure", "median", "target", "result"
        );
    }

    /// Prints a figure with no target.
    pub fn info(&mut self, name: &str, value: String, detail: String) {
        self.line(name, value, "-", Verdict::Info, detail);
    }

    /// Prints a figure with a target that it must not exceed: `value` is
    /// the measured number, `limit` the target in the same unit, `label`
    /// how the target reads.
    pub fn at_most(
        &mut self,
        name: &str,
        (value, shown): (f64, String),
        (limit, label): (f64, &str),
        detail: String,
    ) {
        let verdict = if value <= limit {
            Verdict::Pass
        } else {
            Verdict::Fail
        };
        self.line(name, shown, label, verdict, detail);
    }

    /// Prints one aligned line and keeps count of the verdicts.
    fn line(&mut self, name: &str, value: String, target: &str, verdict: Verdict, detail: String) {
        let result = match verdict {
            Verdict::Pass => {
                self.passed += 1;
                "PASS"
            }
            Verdict::Fail => {
                self.failed.push(name.to_owned());
                "FAIL"
            }
            Verdict::Info => "",
        };
        let line = format!("{name:<44} {value:>11}  {target:<14} {result:<6} {detail}");
        println!("{}", line.trim_end());
    }

    /// Prints the closing summary: how many targets were met, and which
    /// were missed. The process still exits 0: a benchmark reports, it does
    /// not gate.
    pub fn summary(&self) {
        let mut text = format!(
            "summary: {} of {} targets met",
            self.passed,
            self.passed + self.failed.len()
        );
        if !self.failed.is_empty() {
            let _ = write!(text, "; MISSED: {}", self.failed.join("; "));
        }
        println!("{text}");
    }
}
