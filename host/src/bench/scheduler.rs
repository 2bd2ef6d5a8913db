//! The order of runs: warm-up rounds, then blocks of one run per engine in a freshly shuffled
//! order, so that slow drift of the machine (thermal, other load) hits every engine alike.

/// How many measured runs each engine gets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RunCount {
    /// `--runs N`: exactly N per engine.
    Exactly(usize),
    /// Keep going until every engine has at least `min_runs` runs and `min_time` seconds of
    /// measured time (hyperfine's rule), but stop at `max_runs`.
    Auto { min_runs: usize, min_time: f64, max_runs: usize },
    /// `--precision P`: keep going until every comparison's 95% interval is within ±P of its
    /// ratio (after at least `min_runs`), but stop at `max_runs` or after `max_time` seconds.
    Precision { precision: f64, min_runs: usize, max_runs: usize, max_time: f64 },
}

/// Where a benchmark stands after a block, for deciding whether to run another.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Total measured seconds per engine.
    pub measured_seconds: Vec<f64>,
    /// Seconds since the first measured run.
    pub elapsed: f64,
    /// The widest half-width of the comparisons' 95% intervals, relative to their ratios
    /// (`None` until there is one).
    pub widest_interval: Option<f64>,
}

/// Why the measured runs stopped, when it was not the plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StopReason {
    /// `--precision` was reached.
    PrecisionReached,
    /// `--max-runs` came first.
    MaxRuns,
    /// `--max-time` came first.
    MaxTime,
}

pub struct Scheduler {
    engines: usize,
    runs: RunCount,
    rng: fastrand::Rng,
    blocks_done: usize,
    stop_reason: Option<StopReason>,
}

impl Scheduler {
    pub fn new(engines: usize, runs: RunCount, seed: u64) -> Self {
        Scheduler { engines, runs, rng: fastrand::Rng::with_seed(seed), blocks_done: 0, stop_reason: None }
    }

    fn shuffled(&mut self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.engines).collect();
        self.rng.shuffle(&mut order);
        order
    }

    /// Engine indices for `rounds` warm-up rounds, each round shuffled.
    pub fn warmup_order(&mut self, rounds: usize) -> Vec<usize> {
        (0..rounds).flat_map(|_| self.shuffled()).collect()
    }

    /// The next block (one run per engine, shuffled), or `None` when enough runs were made.
    pub fn next_block(&mut self, progress: &Progress) -> Option<Vec<usize>> {
        let more = match self.runs {
            RunCount::Exactly(n) => self.blocks_done < n,
            RunCount::Auto { min_runs, min_time, max_runs } => {
                // NaN-safe: a NaN total never counts as enough time.
                let slowest_total = progress.measured_seconds.iter().cloned().fold(f64::INFINITY, f64::min);
                let enough_time = slowest_total >= min_time;
                self.blocks_done < max_runs && (self.blocks_done < min_runs || !enough_time)
            }
            RunCount::Precision { precision, min_runs, max_runs, max_time } => {
                let reached = progress.widest_interval.is_some_and(|w| w <= precision);
                let stop = if self.blocks_done < min_runs {
                    None
                } else if reached {
                    Some(StopReason::PrecisionReached)
                } else if self.blocks_done >= max_runs {
                    Some(StopReason::MaxRuns)
                } else if progress.elapsed >= max_time {
                    Some(StopReason::MaxTime)
                } else {
                    None
                };
                self.stop_reason = stop;
                stop.is_none()
            }
        };
        if !more {
            return None;
        }
        self.blocks_done += 1;
        Some(self.shuffled())
    }

    /// The number of blocks planned, when known in advance (for the progress bar).
    pub fn planned_blocks(&self) -> Option<usize> {
        match self.runs {
            RunCount::Exactly(n) => Some(n),
            RunCount::Auto { .. } | RunCount::Precision { .. } => None,
        }
    }

    /// Why `--precision` stopped (`None` for the other run counts, or before it stopped).
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stop_reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seconds(totals: &[f64]) -> Progress {
        Progress { measured_seconds: totals.to_vec(), ..Default::default() }
    }

    #[test]
    fn precision_runs_until_the_interval_is_narrow_enough_or_a_limit_comes() {
        let runs = RunCount::Precision { precision: 0.02, min_runs: 3, max_runs: 6, max_time: 100.0 };
        let at = |width: Option<f64>, elapsed: f64| Progress {
            measured_seconds: vec![1.0, 1.0],
            elapsed,
            widest_interval: width,
        };
        let mut s = Scheduler::new(2, runs, 1);
        for _ in 0..3 {
            assert!(s.next_block(&at(Some(0.001), 0.0)).is_some(), "min_runs come first");
        }
        assert!(s.next_block(&at(Some(0.05), 1.0)).is_some(), "±5% is not ±2%");
        assert!(s.next_block(&at(Some(0.019), 1.0)).is_none());
        assert_eq!(s.stop_reason(), Some(StopReason::PrecisionReached));
        let mut s = Scheduler::new(2, runs, 1);
        assert_eq!(std::iter::from_fn(|| s.next_block(&at(None, 0.0))).count(), 6);
        assert_eq!(s.stop_reason(), Some(StopReason::MaxRuns));
        let mut s = Scheduler::new(2, runs, 1);
        assert_eq!(std::iter::from_fn(|| s.next_block(&at(Some(0.5), 200.0))).count(), 3);
        assert_eq!(s.stop_reason(), Some(StopReason::MaxTime));
    }

    #[test]
    fn exact_count_gives_that_many_blocks_each_a_permutation() {
        let mut s = Scheduler::new(3, RunCount::Exactly(4), 7);
        let mut blocks = Vec::new();
        while let Some(block) = s.next_block(&seconds(&[0.0; 3])) {
            let mut sorted = block.clone();
            sorted.sort();
            assert_eq!(sorted, [0, 1, 2]);
            blocks.push(block);
        }
        assert_eq!(blocks.len(), 4);
        assert!(blocks.iter().any(|b| b != &blocks[0]), "orders are shuffled: {blocks:?}");
    }

    #[test]
    fn auto_count_needs_min_runs_and_min_time_but_stops_at_max() {
        let runs = RunCount::Auto { min_runs: 3, min_time: 1.0, max_runs: 5 };
        let mut s = Scheduler::new(2, runs, 1);
        assert!(s.next_block(&seconds(&[5.0, 5.0])).is_some());
        assert!(s.next_block(&seconds(&[5.0, 5.0])).is_some());
        assert!(s.next_block(&seconds(&[5.0, 5.0])).is_some());
        assert!(s.next_block(&seconds(&[5.0, 5.0])).is_none(), "3 runs and enough time");
        let mut s = Scheduler::new(2, runs, 1);
        let blocks = std::iter::from_fn(|| s.next_block(&seconds(&[0.1, 9.0]))).count();
        assert_eq!(blocks, 5, "too little time on one engine: runs until max_runs");
    }

    #[test]
    fn warmups_cover_every_engine_each_round() {
        let mut s = Scheduler::new(2, RunCount::Exactly(1), 3);
        let order = s.warmup_order(2);
        assert_eq!(order.len(), 4);
        assert_eq!(order.iter().filter(|&&e| e == 0).count(), 2);
    }
}
