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
}

pub struct Scheduler {
    engines: usize,
    runs: RunCount,
    rng: fastrand::Rng,
    blocks_done: usize,
}

impl Scheduler {
    pub fn new(engines: usize, runs: RunCount, seed: u64) -> Self {
        Scheduler { engines, runs, rng: fastrand::Rng::with_seed(seed), blocks_done: 0 }
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
    /// `measured_seconds[i]` is the total measured time of engine `i` so far.
    pub fn next_block(&mut self, measured_seconds: &[f64]) -> Option<Vec<usize>> {
        let more = match self.runs {
            RunCount::Exactly(n) => self.blocks_done < n,
            RunCount::Auto { min_runs, min_time, max_runs } => {
                // NaN-safe: a NaN total never counts as enough time.
                let slowest_total = measured_seconds.iter().cloned().fold(f64::INFINITY, f64::min);
                let enough_time = slowest_total >= min_time;
                self.blocks_done < max_runs && (self.blocks_done < min_runs || !enough_time)
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
            RunCount::Auto { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_count_gives_that_many_blocks_each_a_permutation() {
        let mut s = Scheduler::new(3, RunCount::Exactly(4), 7);
        let mut blocks = Vec::new();
        while let Some(block) = s.next_block(&[0.0; 3]) {
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
        assert!(s.next_block(&[5.0, 5.0]).is_some());
        assert!(s.next_block(&[5.0, 5.0]).is_some());
        assert!(s.next_block(&[5.0, 5.0]).is_some());
        assert!(s.next_block(&[5.0, 5.0]).is_none(), "3 runs and enough time");
        let mut s = Scheduler::new(2, runs, 1);
        let blocks = std::iter::from_fn(|| s.next_block(&[0.1, 9.0])).count();
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
