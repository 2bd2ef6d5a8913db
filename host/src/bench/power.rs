//! Stated power: the smallest difference a comparison could have detected, from the noise it
//! measured, and how many runs would detect a given one.
//!
//! A test that finds no significant difference has said nothing unless it could have found
//! one: with 5 runs at 15% noise even a 10% slowdown goes unseen most of the time. So every
//! verdict carries its *detectable difference*: the smallest ratio that the test behind it
//! finds significant at level `alpha` in 80% of repetitions, under the noise measured. The
//! report calls a comparison *inconclusive* rather than "no significant difference" when that
//! detectable difference is larger than the difference the user cares about (`--threshold`).
//!
//! The formula is the normal-theory one for a test on log ratios,
//! `(t(1 − α/2, df) + t(power, df)) · σ / √(n · efficiency)`, with the asymptotic relative
//! efficiency 3/π of the rank tests (Wilcoxon, Mann–Whitney) against the t-test. Rank tests
//! also have a floor: with too few runs no ordering of the data reaches p < α (the signed-rank
//! test needs 6 pairs at α = 0.05), and then nothing is detectable at all.

use super::stats;

/// The chance of detecting a difference of the stated size.
pub const POWER: f64 = 0.80;

/// Asymptotic relative efficiency of the Wilcoxon and Mann–Whitney tests against the t-test
/// for normal noise: they need about π/3 times the runs to see the same difference.
pub const RANK_TEST_EFFICIENCY: f64 = 3.0 / std::f64::consts::PI;

/// More runs than this are not suggested (the search for "about M runs" stops here).
const MAX_SUGGESTED_RUNS: usize = 1_000_000;

/// The test a comparison used, as power analysis needs to know it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Test {
    /// Wilcoxon signed-rank on per-block log ratios.
    SignedRank,
    /// Student t on per-block log ratios, against a minimum effect of `resolution` (a log ratio):
    /// only differences beyond the metric's resolution count.
    PairedT { resolution: f64 },
}

/// What a comparison could see.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sensitivity {
    /// The smallest slowdown, as a fraction (0.03 = 3%), detected at level alpha with 80%
    /// power; infinite when no data of this size can reach significance.
    pub detectable: f64,
    /// About how many runs per engine would detect `threshold` at the same noise; `None` when
    /// more than a million would be needed.
    pub runs_for_threshold: Option<usize>,
    /// The difference `runs_for_threshold` is for (the `--threshold`).
    pub threshold: f64,
}

impl Sensitivity {
    /// True when a difference of `threshold` could have gone unseen (also when the detectable
    /// difference is not a number).
    pub fn too_weak(&self) -> bool {
        self.detectable.is_nan() || self.detectable > self.threshold
    }
}

/// Sensitivity of a paired comparison of `n` blocks whose log ratios have standard deviation
/// `log_sd`.
pub fn paired(test: Test, n: usize, log_sd: f64, alpha: f64, threshold: f64) -> Sensitivity {
    let detect = |n: usize| detectable_log(test, n, log_sd, alpha);
    sensitivity(detect, n, threshold)
}

/// Sensitivity of an independent-samples comparison: `n_a` and `n_b` values whose relative
/// standard deviations (stddev / mean) are `rel_sd_a` and `rel_sd_b`. The suggested run count
/// assumes equal sizes.
pub fn independent(
    n_a: usize,
    n_b: usize,
    rel_sd_a: f64,
    rel_sd_b: f64,
    alpha: f64,
    threshold: f64,
) -> Sensitivity {
    // On the log scale a relative stddev is (to first order) the stddev of the log values.
    let detect = |na: usize, nb: usize| {
        let se = (rel_sd_a * rel_sd_a / na as f64 + rel_sd_b * rel_sd_b / nb as f64).sqrt();
        z_sum(alpha, (na + nb).saturating_sub(2)) * se / RANK_TEST_EFFICIENCY.sqrt()
    };
    let detectable =
        if rank_sum_can_reject(n_a, n_b, alpha) { detect(n_a, n_b).exp_m1() } else { f64::INFINITY };
    let threshold_log = threshold.ln_1p();
    let fewest = (2..=1000).find(|&n| rank_sum_can_reject(n, n, alpha)).unwrap_or(usize::MAX);
    let runs_for_threshold = smallest_n(|n| n >= fewest && detect(n, n) <= threshold_log);
    Sensitivity { detectable, runs_for_threshold, threshold }
}

fn sensitivity(detect: impl Fn(usize) -> f64, n: usize, threshold: f64) -> Sensitivity {
    let detectable = detect(n).exp_m1();
    let threshold_log = threshold.ln_1p();
    let runs_for_threshold = smallest_n(|n| detect(n) <= threshold_log);
    Sensitivity { detectable, runs_for_threshold, threshold }
}

/// The detectable log ratio of a paired test with `n` pairs.
fn detectable_log(test: Test, n: usize, log_sd: f64, alpha: f64) -> f64 {
    if n < 2 || !log_sd.is_finite() {
        return f64::INFINITY;
    }
    let spread = z_sum(alpha, n - 1) * log_sd / (n as f64).sqrt();
    match test {
        Test::SignedRank => {
            if n < fewest_pairs_to_reject(alpha) {
                return f64::INFINITY;
            }
            spread / RANK_TEST_EFFICIENCY.sqrt()
        }
        Test::PairedT { resolution } => resolution + spread,
    }
}

/// The fewest pairs with which the signed-rank test can reach p < alpha (the floor only grows
/// more permissive with n, so the first size that can is the floor); `usize::MAX` if none up to
/// 1,000 can.
fn fewest_pairs_to_reject(alpha: f64) -> usize {
    (2..=1000).find(|&n| signed_rank_can_reject(n, alpha)).unwrap_or(usize::MAX)
}

/// t(1 − α/2, df) + t(power, df): how many standard errors a true difference must lie from the
/// null for the test to reject it with the stated power.
fn z_sum(alpha: f64, df: usize) -> f64 {
    let df = df.max(1) as f64;
    match (stats::t_quantile(1.0 - alpha / 2.0, df), stats::t_quantile(POWER, df)) {
        (Some(a), Some(b)) => a + b,
        _ => f64::INFINITY,
    }
}

/// Can the signed-rank test (as implemented in `stats`) reach p < alpha with `n` pairs at all?
/// Only if `n` differences all of one sign, the most extreme data, do.
pub fn signed_rank_can_reject(n: usize, alpha: f64) -> bool {
    let extreme: Vec<f64> = (1..=n).map(|i| i as f64).collect();
    stats::wilcoxon_signed_rank(&extreme).is_some_and(|r| r.p_two_sided < alpha)
}

/// Can the Mann–Whitney test reach p < alpha with these sample sizes at all (fully separated
/// samples)?
pub fn rank_sum_can_reject(n_a: usize, n_b: usize, alpha: f64) -> bool {
    let a: Vec<f64> = (0..n_a).map(|i| i as f64).collect();
    let b: Vec<f64> = (0..n_b).map(|i| (n_a + i) as f64).collect();
    stats::mann_whitney_u(&a, &b).is_some_and(|r| r.p_two_sided < alpha)
}

/// The smallest n ≥ 2 for which `enough(n)` holds, if one up to [`MAX_SUGGESTED_RUNS`] does
/// (`enough` must be monotone: once true, true for every larger n).
fn smallest_n(enough: impl Fn(usize) -> bool) -> Option<usize> {
    if !enough(MAX_SUGGESTED_RUNS) {
        return None;
    }
    let (mut low, mut high) = (2, MAX_SUGGESTED_RUNS);
    if enough(low) {
        return Some(low);
    }
    // Invariant: enough(high) and !enough(low).
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        if enough(middle) {
            high = middle;
        } else {
            low = middle;
        }
    }
    Some(high)
}

/// Sample standard deviation of the log ratios other[i] / baseline[i]; `None` unless both have
/// the same length ≥ 2 and every value is positive and finite.
pub fn log_ratio_sd(baseline: &[f64], other: &[f64]) -> Option<f64> {
    let logs = stats::paired_log_ratios(baseline, other)?;
    let n = logs.len() as f64;
    let mean = logs.iter().sum::<f64>() / n;
    Some((logs.iter().map(|d| (d - mean) * (d - mean)).sum::<f64>() / (n - 1.0)).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signed_rank_test_needs_six_pairs_at_five_percent() {
        assert!(!signed_rank_can_reject(5, 0.05));
        assert!(signed_rank_can_reject(6, 0.05));
        let s = paired(Test::SignedRank, 5, 0.001, 0.05, 0.02);
        assert!(s.detectable.is_infinite() && s.too_weak());
        assert_eq!(s.runs_for_threshold, Some(6), "tiny noise: the floor is the only limit");
    }

    #[test]
    fn detectable_difference_matches_the_normal_theory_formula() {
        // 20 pairs at 10% noise, t-test without resolution: (t(.975,19) + t(.8,19)) · 0.1/√20.
        let s = paired(Test::PairedT { resolution: 0.0 }, 20, 0.10, 0.05, 0.02);
        let expected = ((2.093_024_054 + 0.860_954_816) * 0.10 / 20f64.sqrt()).exp_m1();
        assert!((s.detectable - expected).abs() < 1e-6, "{} vs {expected}", s.detectable);
        // The rank test needs π/3 times as many runs for the same difference.
        let rank = paired(Test::SignedRank, 20, 0.10, 0.05, 0.02);
        assert!(rank.detectable > s.detectable);
        assert!(
            ((rank.detectable.ln_1p() / s.detectable.ln_1p()) - (std::f64::consts::PI / 3.0).sqrt()).abs()
                < 1e-9
        );
    }

    #[test]
    fn suggested_runs_detect_the_threshold_and_one_fewer_does_not() {
        let s = paired(Test::SignedRank, 10, 0.15, 0.05, 0.02);
        assert!(s.too_weak());
        let m = s.runs_for_threshold.unwrap();
        assert!(paired(Test::SignedRank, m, 0.15, 0.05, 0.02).detectable <= 0.02);
        assert!(paired(Test::SignedRank, m - 1, 0.15, 0.05, 0.02).detectable > 0.02);
        assert!(m > 200 && m < 2000, "{m}");
    }

    #[test]
    fn a_resolution_is_a_floor_on_what_is_detectable() {
        let s = paired(Test::PairedT { resolution: 1e-4 }, 5, 0.0, 0.05, 0.02);
        assert!((s.detectable - 1e-4f64.exp_m1()).abs() < 1e-12);
        assert!(!s.too_weak());
        // A threshold under the resolution can never be reached.
        assert_eq!(paired(Test::PairedT { resolution: 1e-2 }, 5, 0.0, 0.05, 0.005).runs_for_threshold, None);
    }

    #[test]
    fn independent_samples_need_both_sides_large_enough() {
        assert!(!rank_sum_can_reject(3, 3, 0.05));
        assert!(rank_sum_can_reject(4, 4, 0.05));
        let s = independent(30, 30, 0.05, 0.05, 0.05, 0.02);
        assert!(s.detectable > 0.03 && s.detectable < 0.05, "{}", s.detectable);
        assert!(independent(2, 2, 0.01, 0.01, 0.05, 0.02).detectable.is_infinite());
    }

    #[test]
    fn log_ratio_sd_needs_matching_positive_samples() {
        assert_eq!(log_ratio_sd(&[1.0], &[1.0]), None);
        assert_eq!(log_ratio_sd(&[1.0, 2.0], &[1.0]), None);
        assert_eq!(log_ratio_sd(&[1.0, -2.0], &[1.0, 2.0]), None);
        assert_eq!(log_ratio_sd(&[1.0, 2.0], &[2.0, 4.0]), Some(0.0));
    }
}
