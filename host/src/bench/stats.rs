//! Statistics for `pyhost bench`: summaries with confidence intervals, two-sample significance
//! tests, a bootstrap confidence interval of the ratio of means, outlier detection and stability
//! warnings.
//!
//! Values are durations (or any positive cost): bigger means slower. Every function takes plain
//! slices and never panics: empty, too-short or non-finite input gives `None` (or an empty
//! result), and degenerate input (constant samples, all values tied) gives finite, documented
//! results instead of NaN.
//!
//! The formulas follow the reference implementations they are tested against:
//! `scipy.stats` (t interval, `mannwhitneyu`, `ttest_ind`, `gmean`), `numpy.percentile`,
//! hyperfine (outliers) and pyperf (stability checks).

use std::fmt;

use statrs::distribution::{Continuous, ContinuousCDF, StudentsT};
use statrs::function::beta::checked_beta_reg;
use statrs::function::erf::erfc;

/// Confidence level of the intervals in [`Summary`] and [`Comparison::ratio_ci95`].
pub const CONFIDENCE: f64 = 0.95;

/// Default significance level for [`compare`]: the accepted rate of false "significant" verdicts
/// when both commands are in fact equally fast.
pub const DEFAULT_ALPHA: f64 = 0.05;

/// Bootstrap resamples used by [`compare`]: enough for the 2.5% and 97.5% percentiles to be
/// stable to about 1% of the interval width, and fast enough (release build: 0.6 ms for 20 values
/// per side, 12 ms for 500).
pub const BOOTSTRAP_RESAMPLES: usize = 10_000;

/// Seed of the bootstrap in [`compare`], fixed so that the same data always gives the same
/// interval and verdict.
pub const BOOTSTRAP_SEED: u64 = 0x5EED_0B00_75EE_D5EE;

/// Modified z-score above which a value is an outlier (see [`modified_z_scores`]).
///
/// hyperfine flags `|x - median| / MAD > 1.4826 * 10` ("ten standard deviations", 1.4826 turning
/// the MAD into a standard-deviation estimate). Our score carries the Iglewicz–Hoaglin factor
/// 0.6745 ≈ 1 / 1.4826, so the same criterion is a score above 10.
pub const OUTLIER_THRESHOLD: f64 = 10.0;

/// The Iglewicz–Hoaglin constant: the 0.75 quantile of the standard normal distribution, which
/// scales a MAD-based score so that it reads like an ordinary z-score for normal data.
pub const MODIFIED_Z_FACTOR: f64 = 0.6745;

/// Fewest values per command for [`compare`]'s verdict to mean much: with fewer, the
/// Mann–Whitney test can hardly reach p < 0.05 (with 4 against 4 values, only when the samples
/// do not overlap at all).
pub const MIN_VALUES_FOR_SIGNIFICANCE: usize = 5;

/// pyperf's threshold: a standard deviation at or above this percentage of the mean makes the
/// benchmark "unstable".
pub const UNSTABLE_RELATIVE_STDDEV_PERCENT: f64 = 10.0;

/// pyperf's threshold: a minimum or maximum this many percent (or more) away from the mean is an
/// obvious outlier.
pub const EXTREME_DEVIATION_PERCENT: f64 = 50.0;

/// Descriptive statistics of one sample, with the t-based 95% confidence interval of its mean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Number of values.
    pub n: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Sample standard deviation (divisor n − 1); 0 for a single value.
    pub stddev: f64,
    /// Median (mean of the two middle values for an even count).
    pub median: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Lower end of the 95% confidence interval of the mean: mean − t(0.975, n−1)·stddev/√n.
    pub ci95_low: f64,
    /// Upper end of the 95% confidence interval of the mean: mean + t(0.975, n−1)·stddev/√n.
    pub ci95_high: f64,
}

impl Summary {
    /// Standard deviation as a fraction of the mean (the coefficient of variation), the usual
    /// measure of benchmark noise; `None` when the mean is not positive.
    pub fn relative_stddev(&self) -> Option<f64> {
        (self.mean > 0.0).then(|| self.stddev / self.mean)
    }
}

/// Summarizes a sample: mean, sample standard deviation, median, extremes and the Student-t
/// 95% confidence interval of the mean.
///
/// Returns `None` for an empty sample or one with a non-finite value (or whose sum overflows).
/// A single value gives stddev 0 and an interval equal to the value; a constant sample gives
/// stddev exactly 0.
pub fn summarize(values: &[f64]) -> Option<Summary> {
    let sorted = sorted_finite(values)?;
    let n = sorted.len();
    let (min, max) = (*sorted.first()?, *sorted.last()?);
    let mean = mean_of(&sorted)?;
    let stddev = if n > 1 { sample_variance(&sorted, mean).sqrt() } else { 0.0 };
    let median = median_of_sorted(&sorted)?;
    let half_width = if n > 1 && stddev > 0.0 {
        t_quantile(0.5 + CONFIDENCE / 2.0, (n - 1) as f64)? * stddev / (n as f64).sqrt()
    } else {
        0.0
    };
    let summary = Summary {
        n,
        mean,
        stddev,
        median,
        min,
        max,
        ci95_low: mean - half_width,
        ci95_high: mean + half_width,
    };
    [summary.stddev, summary.ci95_low, summary.ci95_high].iter().all(|x| x.is_finite()).then_some(summary)
}

/// Result of the two-sided Mann–Whitney U test (normal approximation), which asks whether one
/// sample tends to have larger values than the other without assuming normal noise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// U statistic of the first sample: the number of pairs (a, b) with a > b, ties counting
    /// one half (scipy's `statistic`).
    pub u: f64,
    /// Tie- and continuity-corrected z score; positive when the first sample tends to be larger
    /// (slower), 0 when the samples cannot be told apart at all.
    pub z: f64,
    /// Two-sided p-value: the chance of a difference at least this large if both samples came
    /// from the same distribution.
    pub p_two_sided: f64,
}

/// Two-sided Mann–Whitney U test of `a` against `b`, as
/// `scipy.stats.mannwhitneyu(a, b, method="asymptotic", use_continuity=True)`: normal
/// approximation with the tie correction of the variance and a continuity correction of 0.5.
///
/// Rank-based, so one slow outlier cannot dominate the result as it can a t-test.
/// Returns `None` if either sample is empty or has a non-finite value. When every value is tied
/// (zero variance of U), the result is `z = 0`, `p = 1` (scipy gives NaN).
pub fn mann_whitney_u(a: &[f64], b: &[f64]) -> Option<MannWhitney> {
    if a.is_empty() || b.is_empty() || !all_finite(a) || !all_finite(b) {
        return None;
    }
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let mut pooled: Vec<(f64, bool)> =
        a.iter().map(|&x| (x, true)).chain(b.iter().map(|&x| (x, false))).collect();
    pooled.sort_unstable_by(|x, y| x.0.total_cmp(&y.0));

    // Average ranks (1-based) over tie groups; tie_term accumulates Σ(t³ − t).
    let mut rank_sum_a = 0.0;
    let mut tie_term = 0.0;
    let mut start = 0;
    while start < pooled.len() {
        let mut end = start + 1;
        while end < pooled.len() && pooled[end].0 == pooled[start].0 {
            end += 1;
        }
        let count = (end - start) as f64;
        let average_rank = (start + end + 1) as f64 / 2.0;
        let in_a = pooled[start..end].iter().filter(|p| p.1).count() as f64;
        rank_sum_a += average_rank * in_a;
        tie_term += count * count * count - count;
        start = end;
    }

    let n = n1 + n2;
    let u = rank_sum_a - n1 * (n1 + 1.0) / 2.0;
    let mu = n1 * n2 / 2.0;
    let variance = n1 * n2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    let deviation = (u - mu).abs() - 0.5;
    if variance.is_nan() || variance <= 0.0 || deviation <= 0.0 {
        return Some(MannWhitney { u, z: 0.0, p_two_sided: 1.0 });
    }
    let z_abs = deviation / variance.sqrt();
    let z = if u > mu { z_abs } else { -z_abs };
    // 2 · P(Z > |z|) for a standard normal Z.
    let p_two_sided = erfc(z_abs / std::f64::consts::SQRT_2).clamp(0.0, 1.0);
    Some(MannWhitney { u, z, p_two_sided })
}

/// Result of Welch's unequal-variances t-test, the classic test of a difference of means.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Welch {
    /// t statistic: (mean(a) − mean(b)) / √(var(a)/n_a + var(b)/n_b); positive when `a` has the
    /// larger mean.
    pub t: f64,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: f64,
    /// Two-sided p-value.
    pub p_two_sided: f64,
}

/// Welch's t-test of `a` against `b`, as `scipy.stats.ttest_ind(a, b, equal_var=False)`.
///
/// Reported next to Mann–Whitney because it is what most people expect; it assumes roughly
/// normal noise, which benchmark timings often lack. Returns `None` if either sample has fewer
/// than 2 values or a non-finite value, or if both samples are constant (the statistic is then
/// undefined).
pub fn welch_t_test(a: &[f64], b: &[f64]) -> Option<Welch> {
    if a.len() < 2 || b.len() < 2 || !all_finite(a) || !all_finite(b) {
        return None;
    }
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (mean_a, mean_b) = (mean_of(a)?, mean_of(b)?);
    let se2_a = sample_variance(a, mean_a) / na;
    let se2_b = sample_variance(b, mean_b) / nb;
    let se2 = se2_a + se2_b;
    if !se2.is_finite() || se2 <= 0.0 {
        return None;
    }
    let t = (mean_a - mean_b) / se2.sqrt();
    let df = se2 * se2 / (se2_a * se2_a / (na - 1.0) + se2_b * se2_b / (nb - 1.0));
    let p_two_sided = t_two_sided_p(t, df)?;
    (t.is_finite() && df.is_finite()).then_some(Welch { t, df, p_two_sided })
}

/// Percentile-bootstrap 95% confidence interval of mean(`other`) / mean(`baseline`).
///
/// Each resample draws both samples again with replacement (separately, keeping their sizes);
/// the interval is the 2.5th and 97.5th percentiles of the resampled ratios (linear
/// interpolation, like `numpy.percentile`). The ratio answers "how many times slower", and the
/// bootstrap needs no assumption about the shape of the noise. Deterministic for a given `seed`.
///
/// Returns `None` if either sample is empty, a value is non-finite, a baseline value is not
/// positive, an `other` value is negative, or `resamples` is 0.
pub fn ratio_ci95_bootstrap(
    baseline: &[f64],
    other: &[f64],
    resamples: usize,
    seed: u64,
) -> Option<(f64, f64)> {
    ratio_ci_bootstrap(baseline, other, CONFIDENCE, resamples, seed)
}

/// Percentile-bootstrap confidence interval of mean(`other`) / mean(`baseline`) at the given
/// `confidence` (in (0, 1)); see [`ratio_ci95_bootstrap`].
pub fn ratio_ci_bootstrap(
    baseline: &[f64],
    other: &[f64],
    confidence: f64,
    resamples: usize,
    seed: u64,
) -> Option<(f64, f64)> {
    if !valid_ratio_samples(baseline, other) || resamples == 0 || !in_open_unit_interval(confidence) {
        return None;
    }
    let mut rng = SplitMix64::new(seed);
    let mut ratios: Vec<f64> = (0..resamples)
        .map(|_| {
            let base = resampled_sum(baseline, &mut rng) / baseline.len() as f64;
            let oth = resampled_sum(other, &mut rng) / other.len() as f64;
            oth / base
        })
        .collect();
    if !all_finite(&ratios) {
        return None;
    }
    let tail = (1.0 - confidence) / 2.0;
    Some((select_quantile(&mut ratios, tail)?, select_quantile(&mut ratios, 1.0 - tail)?))
}

/// Plain-words outcome of comparing a command against the baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// `other` is significantly faster than the baseline (ratio < 1).
    Faster,
    /// `other` is significantly slower than the baseline (ratio > 1).
    Slower,
    /// The data do not show a difference at the chosen significance level, and could have
    /// shown one of the size that matters (see `power`).
    NoSignificantDifference,
    /// The data do not show a difference, but with this much noise and this few runs they could
    /// not have shown one of the size that matters either (decided by the report, from
    /// `power`; the tests here never return it).
    Inconclusive,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Faster => "faster",
            Verdict::Slower => "slower",
            Verdict::NoSignificantDifference => "no significant difference",
            Verdict::Inconclusive => "inconclusive",
        })
    }
}

/// A command compared against the baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// mean(other) / mean(baseline): above 1 means `other` is slower.
    pub ratio: f64,
    /// Bootstrap 95% confidence interval of `ratio` ([`ratio_ci95_bootstrap`]).
    pub ratio_ci95: (f64, f64),
    /// `mann_whitney_u(other, baseline)`: `z > 0` means `other` tends to be slower.
    pub mann_whitney: MannWhitney,
    /// `welch_t_test(other, baseline)`, for reference; `None` when it is undefined (fewer than 2
    /// values on a side, or both sides constant). It does not take part in the verdict.
    pub welch: Option<Welch>,
    /// The decision; see [`compare`].
    pub verdict: Verdict,
}

/// Compares `other` against `baseline` (both durations) at significance level `alpha`, with
/// [`BOOTSTRAP_RESAMPLES`] resamples and the fixed [`BOOTSTRAP_SEED`].
///
/// The difference is significant only if two tests of different nature agree: the Mann–Whitney
/// two-sided p-value is below `alpha`, the bootstrap 95% interval of the ratio excludes 1, and
/// both point the same way. Requiring both keeps the false-positive rate of an A-vs-A run at or
/// below `alpha` (and at or below about 5% whatever `alpha`, since the interval is always 95%).
/// Then the verdict is [`Verdict::Slower`] when the interval lies above 1, [`Verdict::Faster`]
/// when it lies below.
///
/// Returns `None` if a sample is empty or has a non-finite value, a baseline value is not
/// positive, an `other` value is negative, or `alpha` is not in (0, 1).
pub fn compare(baseline: &[f64], other: &[f64], alpha: f64) -> Option<Comparison> {
    compare_with(baseline, other, alpha, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)
}

/// [`compare`] with an explicit number of bootstrap resamples and seed.
pub fn compare_with(
    baseline: &[f64],
    other: &[f64],
    alpha: f64,
    resamples: usize,
    seed: u64,
) -> Option<Comparison> {
    if !in_open_unit_interval(alpha) || !valid_ratio_samples(baseline, other) {
        return None;
    }
    let ratio = mean_of(other)? / mean_of(baseline)?;
    let ratio_ci95 = ratio_ci95_bootstrap(baseline, other, resamples, seed)?;
    let mann_whitney = mann_whitney_u(other, baseline)?;
    let welch = welch_t_test(other, baseline);
    let rank_test_significant = mann_whitney.p_two_sided < alpha;
    let verdict = if rank_test_significant && ratio_ci95.0 > 1.0 && mann_whitney.z > 0.0 {
        Verdict::Slower
    } else if rank_test_significant && ratio_ci95.1 < 1.0 && mann_whitney.z < 0.0 {
        Verdict::Faster
    } else {
        Verdict::NoSignificantDifference
    };
    ratio.is_finite().then_some(Comparison { ratio, ratio_ci95, mann_whitney, welch, verdict })
}

/// Result of the two-sided Wilcoxon signed-rank test on paired differences.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignedRank {
    /// Sum of the ranks of the positive differences (scipy's `r_plus`).
    pub w_plus: f64,
    /// Number of non-zero differences that were ranked.
    pub n: usize,
    /// Tie- and continuity-corrected z score; positive when the differences tend to be positive.
    pub z: f64,
    /// Two-sided p-value.
    pub p_two_sided: f64,
}

/// Two-sided Wilcoxon signed-rank test of `differences` against 0, as
/// `scipy.stats.wilcoxon(d, zero_method="wilcox", correction=True, method="approx")`: zero
/// differences are dropped, ties get average ranks (and the variance its tie correction), and a
/// continuity correction of 0.5 applies.
///
/// Distribution-free for differences that are symmetric around 0, which is exactly the case of
/// an A-vs-A comparison whose two runs of each pair ran in random order.
/// Returns `None` for empty input or a non-finite value; `z = 0`, `p = 1` when every difference
/// is 0.
pub fn wilcoxon_signed_rank(differences: &[f64]) -> Option<SignedRank> {
    if differences.is_empty() || !all_finite(differences) {
        return None;
    }
    let mut nonzero: Vec<f64> = differences.iter().copied().filter(|d| *d != 0.0).collect();
    let n = nonzero.len();
    if n == 0 {
        return Some(SignedRank { w_plus: 0.0, n: 0, z: 0.0, p_two_sided: 1.0 });
    }
    nonzero.sort_unstable_by(|a, b| a.abs().total_cmp(&b.abs()));
    let mut w_plus = 0.0;
    let mut tie_term = 0.0;
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && nonzero[end].abs() == nonzero[start].abs() {
            end += 1;
        }
        let count = (end - start) as f64;
        let average_rank = (start + end + 1) as f64 / 2.0;
        w_plus += average_rank * nonzero[start..end].iter().filter(|d| **d > 0.0).count() as f64;
        tie_term += count * count * count - count;
        start = end;
    }
    let nf = n as f64;
    let mean = nf * (nf + 1.0) / 4.0;
    let variance = nf * (nf + 1.0) * (2.0 * nf + 1.0) / 24.0 - tie_term / 48.0;
    let deviation = (w_plus - mean).abs() - 0.5;
    if variance.is_nan() || variance <= 0.0 || deviation <= 0.0 {
        return Some(SignedRank { w_plus, n, z: 0.0, p_two_sided: 1.0 });
    }
    let z_abs = deviation / variance.sqrt();
    let z = if w_plus > mean { z_abs } else { -z_abs };
    let p_two_sided = erfc(z_abs / std::f64::consts::SQRT_2).clamp(0.0, 1.0);
    Some(SignedRank { w_plus, n, z, p_two_sided })
}

/// An engine compared against the baseline run by run: value `i` of each side ran in the same
/// interleaved block, so slow drift of the machine cancels out in the pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedComparison {
    /// Geometric mean of the per-pair ratios other/baseline: above 1 means `other` is slower.
    pub ratio: f64,
    /// 95% confidence interval of `ratio` (Student t on the log ratios).
    pub ratio_ci95: (f64, f64),
    /// Wilcoxon signed-rank test of the log ratios.
    pub signed_rank: SignedRank,
    pub verdict: Verdict,
}

/// Compares paired samples (`baseline[i]` and `other[i]` measured in the same block) at level
/// `alpha`: significant only if the signed-rank test's p-value is below `alpha` *and* the 95%
/// interval of the ratio excludes 1, both pointing the same way.
///
/// Returns `None` unless both samples have the same length of at least 2, and all values are
/// finite and positive.
pub fn compare_paired(baseline: &[f64], other: &[f64], alpha: f64) -> Option<PairedComparison> {
    if !in_open_unit_interval(alpha) {
        return None;
    }
    let logs = paired_log_ratios(baseline, other)?;
    let n = logs.len() as f64;
    let mean = logs.iter().sum::<f64>() / n;
    let variance = logs.iter().map(|d| (d - mean) * (d - mean)).sum::<f64>() / (n - 1.0);
    let half_width = t_quantile(0.975, n - 1.0)? * (variance / n).sqrt();
    let ratio_ci95 = ((mean - half_width).exp(), (mean + half_width).exp());
    let signed_rank = wilcoxon_signed_rank(&logs)?;
    let significant = signed_rank.p_two_sided < alpha;
    let verdict = if significant && ratio_ci95.0 > 1.0 && signed_rank.z > 0.0 {
        Verdict::Slower
    } else if significant && ratio_ci95.1 < 1.0 && signed_rank.z < 0.0 {
        Verdict::Faster
    } else {
        Verdict::NoSignificantDifference
    };
    Some(PairedComparison { ratio: mean.exp(), ratio_ci95, signed_rank, verdict })
}

/// The per-pair log ratios ln(other[i] / baseline[i]); `None` unless both samples have the
/// same length of at least 2 and every value is finite and positive.
pub fn paired_log_ratios(baseline: &[f64], other: &[f64]) -> Option<Vec<f64>> {
    if baseline.len() != other.len() || baseline.len() < 2 {
        return None;
    }
    if !all_finite(baseline) || !all_finite(other) || baseline.iter().chain(other).any(|v| *v <= 0.0) {
        return None;
    }
    Some(baseline.iter().zip(other).map(|(b, o)| (o / b).ln()).collect())
}

/// A paired comparison of a nearly deterministic metric (instruction counts) against a
/// minimum effect: the difference counts only if it lies beyond `resolution` (a log ratio).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinimumEffect {
    /// Geometric mean of the per-pair ratios other/baseline.
    pub ratio: f64,
    /// 95% confidence interval of `ratio` (Student t on the log ratios).
    pub ratio_ci95: (f64, f64),
    /// One-sided p-value of "the difference is within ±resolution" (1 when the mean log ratio
    /// lies inside it).
    pub p_value: f64,
    pub verdict: Verdict,
}

/// Paired t-test on log ratios against a minimum effect: significant when the (1 − alpha)
/// interval of the mean log ratio lies entirely beyond `+resolution` (slower) or `−resolution`
/// (faster). With counted metrics the run-to-run jitter is a few parts per million; a plain
/// test would call that jitter significant in `alpha` of A-vs-A runs, while this one calls a
/// difference significant only when it is both real and larger than the metric's resolution.
/// Identical pairs (zero spread) are decided by their mean alone.
///
/// Returns `None` unless both samples have the same length of at least 2, all values are finite
/// and positive, and `resolution` is finite and non-negative.
pub fn compare_paired_min_effect(
    baseline: &[f64],
    other: &[f64],
    alpha: f64,
    resolution: f64,
) -> Option<MinimumEffect> {
    if !(in_open_unit_interval(alpha) && resolution.is_finite() && resolution >= 0.0) {
        return None;
    }
    let logs = paired_log_ratios(baseline, other)?;
    let n = logs.len() as f64;
    let mean = mean_of(&logs)?;
    let se = (sample_variance(&logs, mean) / n).sqrt();
    let df = n - 1.0;
    let half_width_95 = t_quantile(0.975, df)? * se;
    let ratio_ci95 = ((mean - half_width_95).exp(), (mean + half_width_95).exp());
    let half_width = t_quantile(1.0 - alpha / 2.0, df)? * se;
    let beyond = mean.abs() - resolution;
    let verdict = if mean - half_width > resolution {
        Verdict::Slower
    } else if mean + half_width < -resolution {
        Verdict::Faster
    } else {
        Verdict::NoSignificantDifference
    };
    let p_value = if beyond <= 0.0 {
        1.0
    } else if se == 0.0 {
        0.0
    } else {
        t_two_sided_p(beyond / se, df)? / 2.0
    };
    Some(MinimumEffect { ratio: mean.exp(), ratio_ci95, p_value, verdict })
}

/// Modified z-scores (Iglewicz and Hoaglin): 0.6745 · (x − median) / MAD, where MAD is the median
/// absolute deviation from the median.
///
/// Unlike the ordinary z-score, the median and MAD are not dragged along by the outliers being
/// looked for. As in hyperfine, a MAD of 0 (more than half the values equal) is replaced by
/// `f64::EPSILON`, so that any value off that majority scores as an outlier. Returns an empty
/// vector for empty input; non-finite values give non-finite scores (never a panic).
pub fn modified_z_scores(values: &[f64]) -> Vec<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    let Some(median) = median_of_sorted(&sorted) else { return Vec::new() };
    let mut deviations: Vec<f64> = values.iter().map(|x| (x - median).abs()).collect();
    deviations.sort_unstable_by(f64::total_cmp);
    let mad = median_of_sorted(&deviations).unwrap_or(0.0);
    let mad = if mad > 0.0 { mad } else { f64::EPSILON };
    values.iter().map(|x| MODIFIED_Z_FACTOR * (x - median) / mad).collect()
}

/// Indices of the values whose modified z-score exceeds `threshold` in absolute value
/// (use [`OUTLIER_THRESHOLD`] for hyperfine's criterion), in increasing order.
pub fn outlier_indices(values: &[f64], threshold: f64) -> Vec<usize> {
    modified_z_scores(values)
        .iter()
        .enumerate()
        .filter(|(_, z)| z.abs() > threshold)
        .map(|(i, _)| i)
        .collect()
}

/// Geometric mean, exp(mean(ln x)): the right average of ratios (e.g. over a suite of
/// benchmarks), since it treats "2× slower" and "2× faster" symmetrically.
///
/// Returns `None` for empty input or any value that is not finite and strictly positive.
pub fn geometric_mean(values: &[f64]) -> Option<f64> {
    if values.is_empty() || !values.iter().all(|&x| x.is_finite() && x > 0.0) {
        return None;
    }
    let logs: Vec<f64> = values.iter().map(|x| x.ln()).collect();
    let result = (neumaier_sum(&logs) / values.len() as f64).exp();
    // The geometric mean lies between the extremes; clamping removes the rounding of exp(ln x).
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    result.is_finite().then(|| result.clamp(min, max))
}

/// A reason to distrust a measurement, with advice on what to do about it.
#[derive(Debug, Clone, PartialEq)]
pub enum Warning {
    /// Fewer than [`MIN_VALUES_FOR_SIGNIFICANCE`] values: no significance test can conclude.
    TooFewValues {
        /// Number of values measured.
        n: usize,
    },
    /// The standard deviation is at least 10% of the mean (pyperf's check).
    Unstable {
        /// Standard deviation as a percentage of the mean.
        stddev_percent: f64,
    },
    /// Stable enough, but more runs are needed for 95% certainty of less than 1% variation of
    /// the mean (pyperf's `required_nprocesses`: ⌈4·1.96²·cv² / 0.01²⌉).
    NotEnoughValuesForStableResult {
        /// Number of values measured.
        n: usize,
        /// Number of values needed.
        required: usize,
    },
    /// The minimum is at least 50% below the mean (pyperf's check).
    MinFarBelowMean {
        /// The minimum.
        min: f64,
        /// The mean.
        mean: f64,
        /// How far below the mean, in percent of the mean.
        percent: f64,
    },
    /// The maximum is at least 50% above the mean (pyperf's check).
    MaxFarAboveMean {
        /// The maximum.
        max: f64,
        /// The mean.
        mean: f64,
        /// How far above the mean, in percent of the mean.
        percent: f64,
    },
    /// Some values are statistical outliers (modified z-score above [`OUTLIER_THRESHOLD`], as
    /// in hyperfine).
    Outliers {
        /// Number of outliers.
        count: usize,
        /// Number of values.
        n: usize,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Warning::TooFewValues { n } => write!(
                f,
                "only {n} value{}: at least {MIN_VALUES_FOR_SIGNIFICANCE} per command are needed \
                 for a significance test; use more runs",
                if n == 1 { "" } else { "s" }
            ),
            Warning::Unstable { stddev_percent } => write!(
                f,
                "the benchmark seems unstable: the standard deviation is {stddev_percent:.0}% of the \
                 mean; re-run on a quiet machine (no other programs, fixed CPU frequency) with more \
                 runs and warm-up runs"
            ),
            Warning::NotEnoughValuesForStableResult { n, required } => write!(
                f,
                "not enough values for a stable result: about {required} are needed for 95% \
                 certainty of less than 1% variation of the mean, and there are {n}; use more runs"
            ),
            Warning::MinFarBelowMean { percent, .. } => write!(
                f,
                "the minimum is {percent:.0}% smaller than the mean: some runs were much faster \
                 than the rest (caches? frequency scaling?); use warm-up runs and more runs"
            ),
            Warning::MaxFarAboveMean { percent, .. } => write!(
                f,
                "the maximum is {percent:.0}% greater than the mean: some runs were much slower \
                 than the rest (interference from other programs?); re-run on a quiet machine"
            ),
            Warning::Outliers { count, n } => write!(
                f,
                "statistical outliers were detected ({count} of {n} values); consider re-running on \
                 a quiet machine without other programs running, and using warm-up runs"
            ),
        }
    }
}

/// Checks a measurement the way pyperf's `check` and hyperfine do, returning what a user should
/// know before trusting it. `summary` should be `summarize(values)`; relative checks are skipped
/// when its mean is not positive.
///
/// - fewer than [`MIN_VALUES_FOR_SIGNIFICANCE`] values;
/// - standard deviation ≥ 10% of the mean, or else (pyperf) fewer values than needed for 95%
///   certainty of less than 1% variation;
/// - minimum ≥ 50% below or maximum ≥ 50% above the mean (pyperf);
/// - modified z-score outliers (hyperfine).
pub fn stability_warnings(summary: &Summary, values: &[f64]) -> Vec<Warning> {
    let mut warnings = Vec::new();
    let n = summary.n;
    if n < MIN_VALUES_FOR_SIGNIFICANCE {
        warnings.push(Warning::TooFewValues { n });
    }
    let mean = summary.mean;
    if mean > 0.0 && mean.is_finite() {
        if let Some(cv) = summary.relative_stddev().filter(|_| n >= 2) {
            if cv * 100.0 >= UNSTABLE_RELATIVE_STDDEV_PERCENT {
                warnings.push(Warning::Unstable { stddev_percent: cv * 100.0 });
            } else {
                // Sample size for estimating a mean: n ≥ 4 Z² σ² / W² with Z = 1.96, W = 1%.
                let required = (4.0 * 1.96 * 1.96 * cv * cv / (0.01 * 0.01)).ceil();
                if required.is_finite() && required > n as f64 {
                    warnings.push(Warning::NotEnoughValuesForStableResult { n, required: required as usize });
                }
            }
        }
        let below = (mean - summary.min) * 100.0 / mean;
        if below >= EXTREME_DEVIATION_PERCENT {
            warnings.push(Warning::MinFarBelowMean { min: summary.min, mean, percent: below });
        }
        let above = (summary.max - mean) * 100.0 / mean;
        if above >= EXTREME_DEVIATION_PERCENT {
            warnings.push(Warning::MaxFarAboveMean { max: summary.max, mean, percent: above });
        }
    }
    let count = outlier_indices(values, OUTLIER_THRESHOLD).len();
    if count > 0 {
        warnings.push(Warning::Outliers { count, n: values.len() });
    }
    warnings
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn in_open_unit_interval(x: f64) -> bool {
    x > 0.0 && x < 1.0
}

fn all_finite(values: &[f64]) -> bool {
    values.iter().all(|x| x.is_finite())
}

/// A sorted copy of `values`, or `None` if empty or any value is not finite.
fn sorted_finite(values: &[f64]) -> Option<Vec<f64>> {
    if values.is_empty() || !all_finite(values) {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    Some(sorted)
}

/// Baseline values finite and positive, other values finite and non-negative, neither empty.
fn valid_ratio_samples(baseline: &[f64], other: &[f64]) -> bool {
    !baseline.is_empty()
        && !other.is_empty()
        && baseline.iter().all(|&x| x.is_finite() && x > 0.0)
        && other.iter().all(|&x| x.is_finite() && x >= 0.0)
}

/// Sum with Neumaier's compensation, so that means are accurate to the last bits.
fn neumaier_sum(values: &[f64]) -> f64 {
    let mut sum = 0.0;
    let mut compensation = 0.0;
    for &x in values {
        let t = sum + x;
        if sum.abs() >= x.abs() {
            compensation += (sum - t) + x;
        } else {
            compensation += (x - t) + sum;
        }
        sum = t;
    }
    sum + compensation
}

/// Mean, clamped into [min, max] so that a constant sample has exactly its value as mean;
/// `None` if empty, if a value is not finite or if the sum overflows.
fn mean_of(values: &[f64]) -> Option<f64> {
    if values.is_empty() || !all_finite(values) {
        return None;
    }
    let mean = neumaier_sum(values) / values.len() as f64;
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    mean.is_finite().then(|| mean.clamp(min, max))
}

/// Sample variance (divisor n − 1) around `mean`; 0 for fewer than 2 values.
fn sample_variance(values: &[f64], mean: f64) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let squares: Vec<f64> = values.iter().map(|x| (x - mean) * (x - mean)).collect();
    neumaier_sum(&squares) / (values.len() - 1) as f64
}

fn median_of_sorted(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    if n % 2 == 1 {
        Some(sorted[n / 2])
    } else {
        Some(sorted[n / 2 - 1] / 2.0 + sorted[n / 2] / 2.0)
    }
}

/// Quantile `q` in [0, 1] with linear interpolation between closest ranks (`numpy.percentile`'s
/// default, Hyndman–Fan type 7), found by selection in linear time; reorders `data`.
fn select_quantile(data: &mut [f64], q: f64) -> Option<f64> {
    let last = data.len().checked_sub(1)?;
    if !(0.0..=1.0).contains(&q) {
        return None;
    }
    let position = q * last as f64;
    let below = (position.floor() as usize).min(last);
    let fraction = position - below as f64;
    let (_, &mut at_below, above) = data.select_nth_unstable_by(below, f64::total_cmp);
    let at_above = above.iter().copied().min_by(f64::total_cmp).unwrap_or(at_below);
    Some(at_below + fraction * (at_above - at_below))
}

/// Quantile `p` of Student's t distribution with `df` degrees of freedom.
///
/// statrs's inverse loses accuracy for large `df` (relative error 3e-6 at df = 1e5, 6e-5 at
/// 1e6) while its distribution function stays accurate, so a few Newton steps polish the result
/// (to about 1e-13 against `scipy.stats.t.ppf`).
pub(crate) fn t_quantile(p: f64, df: f64) -> Option<f64> {
    if !in_open_unit_interval(p) {
        return None;
    }
    let dist = StudentsT::new(0.0, 1.0, df).ok()?;
    let mut x = dist.inverse_cdf(p);
    for _ in 0..4 {
        let density = dist.pdf(x);
        // Work in the tail that p is in, where the distribution function is most accurate.
        let error = if p > 0.5 { (1.0 - p) - dist.sf(x) } else { dist.cdf(x) - p };
        let step = error / density;
        if !step.is_finite() || step == 0.0 {
            break;
        }
        x -= step;
    }
    x.is_finite().then_some(x)
}

/// Two-sided p-value of a t statistic: P(|T| ≥ |t|) = I_{df/(df+t²)}(df/2, 1/2).
fn t_two_sided_p(t: f64, df: f64) -> Option<f64> {
    if df.is_nan() || df <= 0.0 || t.is_nan() {
        return None;
    }
    let x = df / (df + t * t);
    checked_beta_reg(df / 2.0, 0.5, x).ok().map(|p| p.clamp(0.0, 1.0))
}

/// Sum of `values.len()` values drawn from `values` with replacement.
fn resampled_sum(values: &[f64], rng: &mut SplitMix64) -> f64 {
    let mut sum = 0.0;
    for _ in 0..values.len() {
        sum += values.get(rng.below(values.len())).copied().unwrap_or(0.0);
    }
    sum
}

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny, fast, well-mixed deterministic generator, so
/// that bootstrap results are reproducible without a dependency on `rand`.
#[derive(Debug, Clone)]
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform index in `0..n` (`n > 0`) by multiply-shift; the bias, at most n / 2⁶⁴, is
    /// negligible.
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    //! Reference values come from scipy 1.18.1 / numpy 2.5.5 (and pyperf 2.11.0 for the
    //! stability checks); each literal names the call that produced it.

    use super::*;

    const A: [f64; 8] = [1.21, 1.35, 1.18, 1.42, 1.29, 1.33, 1.25, 1.38];
    const B: [f64; 9] = [1.10, 1.15, 1.08, 1.22, 1.12, 1.19, 1.05, 1.17, 1.14];
    /// Many ties, within and across the samples.
    const TIES_A: [f64; 8] = [1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0, 5.0];
    const TIES_B: [f64; 7] = [2.0, 3.0, 3.0, 4.0, 4.0, 6.0, 6.0];
    /// Two overlapping samples from the same process.
    const C: [f64; 12] = [0.512, 0.498, 0.505, 0.530, 0.489, 0.501, 0.520, 0.495, 0.508, 0.515, 0.499, 0.507];
    const D: [f64; 10] = [0.510, 0.503, 0.509, 0.525, 0.492, 0.500, 0.519, 0.497, 0.511, 0.514];

    #[track_caller]
    fn assert_close(actual: f64, expected: f64, rel_tol: f64) {
        let scale = expected.abs().max(f64::MIN_POSITIVE);
        assert!(
            (actual - expected).abs() <= rel_tol * scale,
            "actual {actual:e} vs expected {expected:e} (relative error {:e} > {rel_tol:e})",
            (actual - expected).abs() / scale
        );
    }

    #[track_caller]
    fn assert_summary(
        s: &Summary,
        n: usize,
        mean: f64,
        stddev: f64,
        median: f64,
        (min, max): (f64, f64),
        (low, high): (f64, f64),
    ) {
        assert_eq!(s.n, n);
        assert_close(s.mean, mean, 1e-12);
        assert_close(s.stddev, stddev, 1e-9);
        assert_close(s.median, median, 1e-12);
        assert_eq!((s.min, s.max), (min, max));
        assert_close(s.ci95_low, low, 1e-9);
        assert_close(s.ci95_high, high, 1e-9);
    }

    // --- summarize -----------------------------------------------------------------------------

    #[test]
    fn summarize_matches_numpy_and_scipy() {
        // numpy: x.mean(), x.std(ddof=1), np.median(x);
        // scipy.stats.t.interval(0.95, n - 1, loc=mean, scale=std / sqrt(n))
        let s = summarize(&A).expect("summary");
        assert_summary(
            &s,
            8,
            1.30125,
            0.08391109240482708,
            1.31,
            (1.18, 1.42),
            (1.2310985711927607, 1.3714014288072394),
        );
        let s = summarize(&B).expect("summary");
        assert_summary(
            &s,
            9,
            1.1355555555555554,
            0.05410894360249304,
            1.14,
            (1.05, 1.22),
            (1.0939637396559294, 1.1771473714551814),
        );
        let s = summarize(&TIES_A).expect("summary");
        assert_summary(
            &s,
            8,
            2.875,
            1.246423454758225,
            3.0,
            (1.0, 5.0),
            (1.8329639146121404, 3.91703608538786),
        );
        let s = summarize(&C).expect("summary");
        assert_summary(
            &s,
            12,
            0.5065833333333333,
            0.01143724643699725,
            0.506,
            (0.489, 0.53),
            (0.49931645364073485, 0.5138502130259317),
        );
    }

    #[test]
    fn summarize_single_value_has_zero_stddev_and_point_interval() {
        let s = summarize(&[2.5]).expect("summary");
        assert_eq!(
            s,
            Summary {
                n: 1,
                mean: 2.5,
                stddev: 0.0,
                median: 2.5,
                min: 2.5,
                max: 2.5,
                ci95_low: 2.5,
                ci95_high: 2.5
            }
        );
    }

    #[test]
    fn summarize_constant_sample_has_exactly_zero_stddev() {
        let s = summarize(&[0.3; 7]).expect("summary");
        assert_eq!((s.mean, s.stddev, s.median, s.ci95_low, s.ci95_high), (0.3, 0.0, 0.3, 0.3, 0.3));
        assert_eq!(s.relative_stddev(), Some(0.0));
    }

    #[test]
    fn summarize_rejects_empty_and_non_finite_input() {
        assert_eq!(summarize(&[]), None);
        assert_eq!(summarize(&[1.0, f64::NAN]), None);
        assert_eq!(summarize(&[1.0, f64::INFINITY]), None);
        assert_eq!(summarize(&[f64::MAX, f64::MAX]), None, "the sum overflows");
    }

    #[test]
    fn t_quantiles_match_scipy() {
        // scipy.stats.t.ppf(0.975, df)
        let reference = [
            (1.0, 12.706204736174694),
            (2.0, 4.302652729749462),
            (3.0, 3.1824463052837078),
            (4.0, 2.7764451051977934),
            (7.0, 2.364624251592784),
            (9.0, 2.262157162798205),
            (19.0, 2.0930240544083087),
            (29.0, 2.045229642132703),
            (99.0, 1.9842169515864174),
            (999.0, 1.9623414611334493),
            (1e5, 1.9599877075346095),
            (1e6, 1.959966356814107),
        ];
        for (df, expected) in reference {
            assert_close(t_quantile(0.975, df).expect("quantile"), expected, 1e-10);
        }
        assert_eq!(t_quantile(0.975, 0.0), None);
        assert_eq!(t_quantile(1.0, 5.0), None);
    }

    // --- Mann–Whitney --------------------------------------------------------------------------

    #[track_caller]
    fn assert_mwu(a: &[f64], b: &[f64], u: f64, z: f64, p: f64) {
        let r = mann_whitney_u(a, b).expect("test result");
        assert_close(r.u, u, 1e-12);
        assert_close(r.z, z, 1e-9);
        assert_close(r.p_two_sided, p, 1e-9);
    }

    #[test]
    fn mann_whitney_matches_scipy() {
        // scipy.stats.mannwhitneyu(a, b, method="asymptotic", use_continuity=True) gives U and p;
        // |z| = scipy.stats.norm.isf(p / 2), signed by U − n1·n2/2.
        assert_mwu(&A, &B, 69.0, 3.1273139581104727, 0.0017641143019265079);
        assert_mwu(&B, &A, 3.0, -3.1273139581104727, 0.0017641143019265079);
        assert_mwu(&C, &D, 54.0, -0.36265926036768303, 0.7168594361961285);
        assert_mwu(
            &[1.0, 2.0, 3.0, 4.0],
            &[5.0, 6.0, 7.0, 8.0],
            0.0,
            -2.165063509461097,
            0.03038282197657749,
        );
    }

    #[test]
    fn mann_whitney_with_ties_matches_scipy() {
        // scipy.stats.mannwhitneyu(TIES_A, TIES_B, method="asymptotic", use_continuity=True)
        assert_mwu(&TIES_A, &TIES_B, 16.0, -1.3667252295568937, 0.1717114467215406);
    }

    #[test]
    fn mann_whitney_degenerate_inputs() {
        // scipy.stats.mannwhitneyu(A, A, method="asymptotic"): U = 32.0, p = 1.0
        assert_mwu(&A, &A, 32.0, 0.0, 1.0);
        // scipy.stats.mannwhitneyu([1.0], [2.0], method="asymptotic"): U = 0.0, p = 1.0
        assert_mwu(&[1.0], &[2.0], 0.0, 0.0, 1.0);
        // Everything tied: scipy gives p = nan; we say "no evidence of a difference".
        assert_eq!(
            mann_whitney_u(&[3.0; 3], &[3.0; 2]),
            Some(MannWhitney { u: 3.0, z: 0.0, p_two_sided: 1.0 })
        );
        assert_eq!(mann_whitney_u(&[], &A), None);
        assert_eq!(mann_whitney_u(&A, &[]), None);
        assert_eq!(mann_whitney_u(&[1.0, f64::NAN], &A), None);
    }

    // --- Welch ---------------------------------------------------------------------------------

    #[track_caller]
    fn assert_welch(a: &[f64], b: &[f64], t: f64, df: f64, p: f64) {
        let r = welch_t_test(a, b).expect("test result");
        assert_close(r.t, t, 1e-9);
        assert_close(r.df, df, 1e-9);
        assert_close(r.p_two_sided, p, 1e-9);
    }

    #[test]
    fn welch_matches_scipy() {
        // scipy.stats.ttest_ind(a, b, equal_var=False): statistic, df, pvalue
        assert_welch(&A, &B, 4.772376350803228, 11.72884314870249, 0.00048410306883257944);
        assert_welch(&TIES_A, &TIES_B, -1.5489201844054696, 11.640920484282004, 0.14814605878100565);
        assert_welch(&C, &D, -0.30775458083434365, 19.89834110244709, 0.7614672323032062);
        // scipy.stats.ttest_ind(A, A, equal_var=False)
        assert_welch(&A, &A, 0.0, 14.0, 1.0);
        // scipy.stats.ttest_ind([2.0, 2.0, 2.0], [1.0, 2.0, 3.0, 4.0], equal_var=False): one constant side
        assert_welch(&[2.0; 3], &[1.0, 2.0, 3.0, 4.0], -0.7745966692414834, 3.0, 0.4950253460597111);
    }

    #[test]
    fn welch_undefined_cases_are_none() {
        assert_eq!(welch_t_test(&[1.0], &A), None);
        assert_eq!(welch_t_test(&A, &[]), None);
        assert_eq!(welch_t_test(&[2.0; 4], &[3.0; 5]), None, "both constant: t undefined");
        assert_eq!(welch_t_test(&A, &[1.0, f64::INFINITY]), None);
    }

    // --- bootstrap -----------------------------------------------------------------------------

    #[test]
    fn splitmix64_matches_reference_sequence() {
        // Vigna's splitmix64.c with seed 1234567.
        let mut rng = SplitMix64::new(1_234_567);
        assert_eq!(rng.next_u64(), 0x599E_D017_FB08_FC85);
        assert_eq!(rng.next_u64(), 0x2C73_F084_5854_0FA5);
        assert_eq!(rng.next_u64(), 0x883E_BCE5_A3F2_7C77);
    }

    #[test]
    fn bootstrap_matches_python_port_and_scipy() {
        // The same SplitMix64 resampling in Python, then numpy.percentile(ratios, [2.5, 97.5]).
        let (low, high) = ratio_ci95_bootstrap(&A, &B, 2000, 42).expect("interval");
        assert_close(low, 0.8302342708844779, 1e-12);
        assert_close(high, 0.9159578799783725, 1e-12);
        // numpy.percentile(ratios, [5, 95]) of the port with seed 7.
        let (low90, high90) = ratio_ci_bootstrap(&B, &A, 0.90, 2000, 7).expect("interval");
        assert_close(low90, 1.0965674041659073, 1e-12);
        assert_close(high90, 1.1967638798989413, 1e-12);
        // scipy.stats.bootstrap((A, B), lambda a, b: mean(b) / mean(a), method="percentile",
        // n_resamples=100000): (0.8295196866625437, 0.9191111111111111). Other random draws,
        // so only agreement within bootstrap noise is expected.
        let (low, high) =
            ratio_ci95_bootstrap(&A, &B, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED).expect("interval");
        assert!((low - 0.8295196866625437).abs() < 0.003, "{low}");
        assert!((high - 0.9191111111111111).abs() < 0.003, "{high}");
    }

    #[test]
    fn bootstrap_is_deterministic_for_a_seed() {
        let first = ratio_ci95_bootstrap(&C, &D, 1000, 99);
        assert_eq!(first, ratio_ci95_bootstrap(&C, &D, 1000, 99));
        assert_ne!(first, ratio_ci95_bootstrap(&C, &D, 1000, 100));
    }

    #[test]
    fn bootstrap_degenerate_inputs() {
        assert_eq!(ratio_ci95_bootstrap(&[2.0; 5], &[2.0; 6], 100, 1), Some((1.0, 1.0)));
        assert_eq!(ratio_ci95_bootstrap(&[2.0], &[3.0], 100, 1), Some((1.5, 1.5)));
        assert_eq!(ratio_ci95_bootstrap(&[], &B, 100, 1), None);
        assert_eq!(ratio_ci95_bootstrap(&A, &[], 100, 1), None);
        assert_eq!(ratio_ci95_bootstrap(&A, &B, 0, 1), None);
        assert_eq!(ratio_ci95_bootstrap(&[1.0, 0.0], &B, 100, 1), None, "zero baseline value");
        assert_eq!(ratio_ci95_bootstrap(&A, &[1.0, -1.0], 100, 1), None, "negative value");
        assert_eq!(ratio_ci95_bootstrap(&A, &[f64::NAN], 100, 1), None);
        assert_eq!(ratio_ci_bootstrap(&A, &B, 1.0, 100, 1), None);
        assert_eq!(ratio_ci_bootstrap(&A, &B, 0.0, 100, 1), None);
    }

    // --- compare -------------------------------------------------------------------------------

    #[test]
    fn compare_detects_a_clear_difference_both_ways() {
        let c = compare(&A, &B, DEFAULT_ALPHA).expect("comparison");
        // numpy: mean(B) / mean(A)
        assert_close(c.ratio, 1.1355555555555554 / 1.30125, 1e-12);
        assert!(c.ratio_ci95.0 <= c.ratio && c.ratio <= c.ratio_ci95.1);
        assert!(c.ratio_ci95.1 < 1.0);
        assert_eq!(c.mann_whitney, mann_whitney_u(&B, &A).expect("test"));
        assert_close(c.mann_whitney.p_two_sided, 0.0017641143019265079, 1e-9);
        // scipy.stats.ttest_ind(B, A, equal_var=False).statistic
        assert_close(c.welch.expect("welch").t, -4.772376350803228, 1e-9);
        assert_eq!(c.verdict, Verdict::Faster);

        let c = compare(&B, &A, DEFAULT_ALPHA).expect("comparison");
        assert!(c.ratio > 1.0 && c.ratio_ci95.0 > 1.0);
        assert_eq!(c.verdict, Verdict::Slower);
    }

    #[test]
    fn compare_needs_the_rank_test_below_alpha() {
        // Mann–Whitney p = 0.00176 is not below 0.001, although the interval excludes 1.
        let c = compare(&A, &B, 0.001).expect("comparison");
        assert!(c.ratio_ci95.1 < 1.0);
        assert_eq!(c.verdict, Verdict::NoSignificantDifference);
    }

    #[test]
    fn compare_same_process_is_not_significant() {
        let c = compare(&C, &D, DEFAULT_ALPHA).expect("comparison");
        assert!(c.ratio_ci95.0 < 1.0 && 1.0 < c.ratio_ci95.1);
        assert_eq!(c.verdict, Verdict::NoSignificantDifference);

        let c = compare(&A, &A, DEFAULT_ALPHA).expect("comparison");
        assert_eq!((c.ratio, c.mann_whitney.p_two_sided), (1.0, 1.0));
        assert_eq!(c.verdict, Verdict::NoSignificantDifference);
    }

    #[test]
    fn compare_degenerate_inputs() {
        // One value each: the rank test cannot conclude (p = 1), whatever the ratio.
        let c = compare(&[1.0], &[2.0], DEFAULT_ALPHA).expect("comparison");
        assert_eq!((c.ratio, c.ratio_ci95, c.welch), (2.0, (2.0, 2.0), None));
        assert_eq!(c.verdict, Verdict::NoSignificantDifference);
        // Identical constant samples.
        let c = compare(&[0.5; 6], &[0.5; 6], DEFAULT_ALPHA).expect("comparison");
        assert_eq!((c.ratio, c.ratio_ci95, c.welch), (1.0, (1.0, 1.0), None));
        assert_eq!(c.mann_whitney.p_two_sided, 1.0);
        assert_eq!(c.verdict, Verdict::NoSignificantDifference);
        // Different constant samples: no variance, yet clearly different.
        let c = compare(&[1.0; 10], &[2.0; 10], DEFAULT_ALPHA).expect("comparison");
        assert_eq!((c.ratio, c.ratio_ci95, c.welch), (2.0, (2.0, 2.0), None));
        assert_eq!(c.verdict, Verdict::Slower);
        // Invalid input.
        assert_eq!(compare(&[], &A, DEFAULT_ALPHA), None);
        assert_eq!(compare(&A, &[], DEFAULT_ALPHA), None);
        assert_eq!(compare(&A, &B, 0.0), None);
        assert_eq!(compare(&A, &B, 1.0), None);
        assert_eq!(compare(&A, &B, f64::NAN), None);
        assert_eq!(compare(&[0.0, 1.0], &B, DEFAULT_ALPHA), None);
        assert_eq!(compare(&A, &[1.0, f64::NAN], DEFAULT_ALPHA), None);
    }

    #[test]
    fn verdict_display() {
        assert_eq!(Verdict::Faster.to_string(), "faster");
        assert_eq!(Verdict::Slower.to_string(), "slower");
        assert_eq!(Verdict::NoSignificantDifference.to_string(), "no significant difference");
    }

    /// Log-normal values with mean `mean` and coefficient of variation `cv`, from the inline PRNG
    /// (Box–Muller).
    fn lognormal_sample(rng: &mut SplitMix64, n: usize, mean: f64, cv: f64) -> Vec<f64> {
        let sigma = (1.0 + cv * cv).ln().sqrt();
        (0..n)
            .map(|_| {
                // Uniforms in (0, 1] and [0, 1).
                let u1 = ((rng.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64;
                let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                mean * (sigma * z - sigma * sigma / 2.0).exp()
            })
            .collect()
    }

    /// Fewer resamples than [`compare`]'s 10 000 keep these simulations fast in debug builds
    /// (a second instead of seven); the verdicts hardly depend on it (with 10 000 the same trials
    /// give the same rates).
    const SIMULATION_RESAMPLES: usize = 2_000;

    fn simulated_verdict(baseline: &[f64], other: &[f64]) -> Verdict {
        compare_with(baseline, other, DEFAULT_ALPHA, SIMULATION_RESAMPLES, BOOTSTRAP_SEED)
            .expect("comparison")
            .verdict
    }

    #[test]
    fn decision_rule_false_positive_rate_a_vs_a() {
        let mut rng = SplitMix64::new(2024);
        let trials = 400;
        let significant = (0..trials)
            .filter(|_| {
                let baseline = lognormal_sample(&mut rng, 20, 1.0, 0.05);
                let other = lognormal_sample(&mut rng, 20, 1.0, 0.05);
                simulated_verdict(&baseline, &other) != Verdict::NoSignificantDifference
            })
            .count();
        let rate = significant as f64 / trials as f64;
        println!("A-vs-A: {significant}/{trials} significant ({:.2}%)", rate * 100.0);
        assert!(rate <= 0.05, "false-positive rate {rate}");
    }

    #[test]
    fn decision_rule_detects_five_percent_slowdown() {
        let mut rng = SplitMix64::new(7);
        let trials = 200;
        let detected = (0..trials)
            .filter(|_| {
                let baseline = lognormal_sample(&mut rng, 20, 1.0, 0.03);
                let other = lognormal_sample(&mut rng, 20, 1.05, 0.03);
                simulated_verdict(&baseline, &other) == Verdict::Slower
            })
            .count();
        let rate = detected as f64 / trials as f64;
        println!("5% slower, 3% noise, n=20: {detected}/{trials} detected ({:.2}%)", rate * 100.0);
        assert!(rate >= 0.90, "detection rate {rate}");
    }

    // --- paired comparison -----------------------------------------------------------------

    #[test]
    fn wilcoxon_signed_rank_matches_scipy() {
        // scipy.stats.wilcoxon(d, zero_method="wilcox", correction=True, method="approx"):
        // statistic = min(r_plus, r_minus), pvalue, zstatistic = -|z|.
        let cases: [(&[f64], f64, f64, f64); 3] = [
            (&[0.1, -0.2, 0.3, 0.05, 0.4, -0.1, 0.25, 0.15], 7.5, 0.16091546335226525, 1.4019992744655632),
            (
                &[1.0, 2.0, -1.0, 2.0, 3.0, -2.0, 1.0, 1.0, 0.0, 4.0],
                8.5,
                0.10537146470912194,
                1.6193523885409815,
            ),
            (&[0.5, 0.5, -0.5, 0.5, 0.5], 3.0, 0.23303798227390538, 1.1925695879998879),
        ];
        for (d, statistic, p, z) in cases {
            let r = wilcoxon_signed_rank(d).expect("result");
            let total = (r.n * (r.n + 1)) as f64 / 2.0;
            assert_eq!(r.w_plus.min(total - r.w_plus), statistic, "{d:?}");
            assert!((r.p_two_sided - p).abs() < 1e-9, "{d:?}: {} vs {p}", r.p_two_sided);
            assert!((r.z.abs() - z).abs() < 1e-9, "{d:?}");
            assert!(r.z > 0.0, "mostly positive differences give z > 0");
        }
        assert_eq!(wilcoxon_signed_rank(&[0.0, 0.0]).map(|r| r.p_two_sided), Some(1.0));
        assert_eq!(wilcoxon_signed_rank(&[]), None);
        assert_eq!(wilcoxon_signed_rank(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn paired_comparison_ratio_interval_and_refusals() {
        let baseline = [1.0, 2.0, 4.0, 8.0];
        let other = [1.1, 2.2, 4.4, 8.8];
        let c = compare_paired(&baseline, &other, DEFAULT_ALPHA).expect("comparison");
        assert!((c.ratio - 1.1).abs() < 1e-12);
        assert!((c.ratio_ci95.0 - 1.1).abs() < 1e-9 && (c.ratio_ci95.1 - 1.1).abs() < 1e-9);
        assert_eq!(compare_paired(&baseline, &other[..3], DEFAULT_ALPHA), None);
        assert_eq!(compare_paired(&[1.0], &[1.0], DEFAULT_ALPHA), None);
        assert_eq!(compare_paired(&[1.0, 0.0], &[1.0, 1.0], DEFAULT_ALPHA), None);
    }

    /// Pairs measured on a drifting machine: each block has its own speed factor (`drift` cv),
    /// shared by both runs of the pair, on top of independent per-run noise (`noise` cv).
    fn drifting_pairs(
        rng: &mut SplitMix64,
        n: usize,
        slowdown: f64,
        drift: f64,
        noise: f64,
    ) -> (Vec<f64>, Vec<f64>) {
        let blocks = lognormal_sample(rng, n, 1.0, drift);
        let a = lognormal_sample(rng, n, 1.0, noise);
        let b = lognormal_sample(rng, n, slowdown, noise);
        (
            blocks.iter().zip(&a).map(|(k, x)| k * x).collect(),
            blocks.iter().zip(&b).map(|(k, x)| k * x).collect(),
        )
    }

    #[test]
    fn paired_rule_false_positive_rate_a_vs_a_under_drift() {
        let mut rng = SplitMix64::new(99);
        let trials = 400;
        let significant = (0..trials)
            .filter(|_| {
                let (a, b) = drifting_pairs(&mut rng, 20, 1.0, 0.15, 0.04);
                compare_paired(&a, &b, DEFAULT_ALPHA).expect("comparison").verdict
                    != Verdict::NoSignificantDifference
            })
            .count();
        let rate = significant as f64 / trials as f64;
        println!("paired A-vs-A under drift: {significant}/{trials} significant ({:.2}%)", rate * 100.0);
        assert!(rate <= 0.05, "false-positive rate {rate}");
    }

    #[test]
    fn paired_rule_detects_five_percent_slowdown_under_drift() {
        let mut rng = SplitMix64::new(5);
        let trials = 200;
        let detected = (0..trials)
            .filter(|_| {
                let (a, b) = drifting_pairs(&mut rng, 20, 1.05, 0.15, 0.04);
                compare_paired(&a, &b, DEFAULT_ALPHA).expect("comparison").verdict == Verdict::Slower
            })
            .count();
        let rate = detected as f64 / trials as f64;
        println!("paired, 5% slower, 15% drift + 4% noise, n=20: {detected}/{trials} ({:.2}%)", rate * 100.0);
        assert!(rate >= 0.90, "detection rate {rate}");
    }

    /// Counted-metric pairs: counts near `base` with a few parts per million of jitter.
    fn counted_pairs(rng: &mut SplitMix64, n: usize, extra: f64, jitter: f64) -> (Vec<f64>, Vec<f64>) {
        let base = 76_752_500.0;
        (lognormal_sample(rng, n, base, jitter), lognormal_sample(rng, n, base * (1.0 + extra), jitter))
    }

    #[test]
    fn minimum_effect_test_ignores_jitter_and_finds_one_percent_with_five_runs() {
        let mut rng = SplitMix64::new(17);
        for _ in 0..500 {
            let (a, b) = counted_pairs(&mut rng, 5, 0.0, 2e-6);
            let c = compare_paired_min_effect(&a, &b, DEFAULT_ALPHA, 1e-4).expect("comparison");
            assert_eq!(c.verdict, Verdict::NoSignificantDifference, "{a:?} {b:?}");
            assert!((c.ratio - 1.0).abs() < 1e-4);
            let (a, b) = counted_pairs(&mut rng, 5, 0.01, 2e-6);
            let c = compare_paired_min_effect(&a, &b, DEFAULT_ALPHA, 1e-4).expect("comparison");
            assert_eq!(c.verdict, Verdict::Slower);
            assert!((c.ratio - 1.01).abs() < 1e-4 && c.p_value < 1e-6, "{c:?}");
            let c = compare_paired_min_effect(&b, &a, DEFAULT_ALPHA, 1e-4).expect("comparison");
            assert_eq!(c.verdict, Verdict::Faster);
        }
    }

    #[test]
    fn minimum_effect_test_decides_identical_pairs_by_their_mean() {
        let same = compare_paired_min_effect(&[100.0, 100.0], &[100.0, 100.0], 0.05, 1e-4).unwrap();
        assert_eq!((same.verdict, same.p_value, same.ratio), (Verdict::NoSignificantDifference, 1.0, 1.0));
        let more = compare_paired_min_effect(&[100.0, 200.0], &[101.0, 202.0], 0.05, 1e-4).unwrap();
        assert_eq!((more.verdict, more.p_value), (Verdict::Slower, 0.0));
        // Within the resolution: no difference, however consistent.
        let tiny = compare_paired_min_effect(&[1e8, 2e8], &[1e8 + 100.0, 2e8 + 200.0], 0.05, 1e-4).unwrap();
        assert_eq!(tiny.verdict, Verdict::NoSignificantDifference);
        assert_eq!(compare_paired_min_effect(&[1.0, 2.0], &[1.0, 2.0], 0.05, f64::NAN), None);
        assert_eq!(compare_paired_min_effect(&[1.0], &[1.0], 0.05, 0.0), None);
    }

    #[test]
    fn minimum_effect_test_with_real_noise_keeps_its_false_positive_rate() {
        // Noise well above the resolution (a threaded program's counts): an ordinary t-test.
        let mut rng = SplitMix64::new(23);
        let trials = 20000;
        let significant = (0..trials)
            .filter(|_| {
                let (a, b) = counted_pairs(&mut rng, 8, 0.0, 0.01);
                compare_paired_min_effect(&a, &b, DEFAULT_ALPHA, 1e-4).unwrap().verdict
                    != Verdict::NoSignificantDifference
            })
            .count();
        assert!(significant as f64 / trials as f64 <= 0.055, "{significant}/{trials}");
    }

    // --- outliers ------------------------------------------------------------------------------

    #[test]
    fn modified_z_scores_match_numpy() {
        // numpy/scipy: 0.6745 * (x - np.median(x)) / scipy.stats.median_abs_deviation(x)
        let z = modified_z_scores(&[0.5, 0.30, 0.29, 0.31, 0.30]);
        let expected = [13.489999999999988, 0.0, -0.6745, 0.6745, 0.0];
        for (actual, expected) in z.iter().zip(expected) {
            assert_close(*actual, expected, 1e-9);
        }
        let z = modified_z_scores(&A);
        let expected = [
            -1.0376923076923095,
            0.4150769230769238,
            -1.3490000000000024,
            1.141461538461538,
            -0.2075384615384619,
            0.2075384615384619,
            -0.6226153846153857,
            0.7263846153846143,
        ];
        assert_eq!(z.len(), expected.len());
        for (actual, expected) in z.iter().zip(expected) {
            assert_close(*actual, expected, 1e-9);
        }
    }

    #[test]
    fn modified_z_scores_degenerate_inputs() {
        assert!(modified_z_scores(&[]).is_empty());
        assert_eq!(modified_z_scores(&[4.0]), vec![0.0]);
        assert_eq!(modified_z_scores(&[4.0; 5]), vec![0.0; 5], "constant: MAD 0 but no NaN");
    }

    #[test]
    fn outliers_as_hyperfine_detects_them() {
        // The cases of hyperfine's src/outlier_detection.rs tests.
        let count = |xs: &[f64]| outlier_indices(xs, OUTLIER_THRESHOLD).len();
        assert_eq!(count(&[]), 0);
        assert_eq!(count(&[50.0]), 0);
        assert_eq!(count(&[1000.0, 0.0]), 0);
        assert_eq!(count(&[-0.2, 0.0, 0.2]), 0);
        assert_eq!(outlier_indices(&[-0.2, 0.0, 0.2, 4.0], OUTLIER_THRESHOLD), vec![3]);
        assert_eq!(outlier_indices(&[0.5, 0.30, 0.29, 0.31, 0.30], OUTLIER_THRESHOLD), vec![0]);
        let mut normal = vec![
            2.33269488,
            1.42195907,
            -0.57527698,
            -0.31293437,
            2.2948158,
            0.75813273,
            -1.0712388,
            -0.96394741,
            -1.15897446,
            1.10976285,
        ];
        assert_eq!(count(&normal), 0);
        normal.extend([20.0, -500.0]);
        assert_eq!(outlier_indices(&normal, OUTLIER_THRESHOLD), vec![10, 11]);
        // MAD = 0: anything off the majority is an outlier.
        assert_eq!(count(&[10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 100.0]), 1);
        assert_eq!(count(&[10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 100.0, 100.0]), 2);
    }

    // --- geometric mean ------------------------------------------------------------------------

    #[test]
    fn geometric_mean_matches_scipy() {
        // scipy.stats.gmean(A)
        assert_close(geometric_mean(&A).expect("gmean"), 1.2988679262997243, 1e-12);
        // scipy.stats.gmean([0.5, 2.0, 1.1, 0.9, 1.25])
        assert_close(geometric_mean(&[0.5, 2.0, 1.1, 0.9, 1.25]).expect("gmean"), 1.0435398578249448, 1e-12);
        assert_close(geometric_mean(&[0.5, 2.0]).expect("gmean"), 1.0, 1e-15);
        assert_eq!(geometric_mean(&[3.0]), Some(3.0));
    }

    #[test]
    fn geometric_mean_rejects_non_positive_and_empty_input() {
        assert_eq!(geometric_mean(&[]), None);
        assert_eq!(geometric_mean(&[1.0, 0.0]), None);
        assert_eq!(geometric_mean(&[1.0, -2.0]), None);
        assert_eq!(geometric_mean(&[1.0, f64::NAN]), None);
        assert_eq!(geometric_mean(&[1.0, f64::INFINITY]), None);
    }

    // --- stability warnings --------------------------------------------------------------------

    fn warnings_for(values: &[f64]) -> Vec<Warning> {
        stability_warnings(&summarize(values).expect("summary"), values)
    }

    #[test]
    fn stability_warnings_mirror_pyperf() {
        // pyperf.Benchmark(...).required_nprocesses() == 639 for A; format_checks warns
        // "Not enough samples to get a stable result".
        assert_eq!(warnings_for(&A), vec![Warning::NotEnoughValuesForStableResult { n: 8, required: 639 }]);

        // pyperf format_checks: "the standard deviation (894 ms) is 64% of the mean (1.40 sec)",
        // "the maximum (3.00 sec) is 114% greater than the mean (1.40 sec)"
        let w = warnings_for(&[1.0, 1.0, 1.0, 1.0, 3.0]);
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(matches!(w[0], Warning::Unstable { stddev_percent } if stddev_percent.round() == 64.0));
        assert!(matches!(w[1], Warning::MaxFarAboveMean { percent, .. } if percent.round() == 114.0));
        assert_eq!(w[2], Warning::Outliers { count: 1, n: 5 });

        // pyperf format_checks: "the standard deviation (285 ms) is 31% of the mean (910 ms)",
        // "the minimum (100 ms) is 89% smaller than the mean (910 ms)"
        let mut values = vec![0.1];
        values.extend([1.0; 9]);
        let w = warnings_for(&values);
        assert!(matches!(w[0], Warning::Unstable { stddev_percent } if stddev_percent.round() == 31.0));
        assert!(matches!(w[1], Warning::MinFarBelowMean { percent, .. } if percent.round() == 89.0));
        assert_eq!(w[2], Warning::Outliers { count: 1, n: 10 });
        assert_eq!(w.len(), 3);
    }

    #[test]
    fn quiet_benchmark_has_no_warnings() {
        // pyperf: required_nprocesses() == 1 and format_checks gives no line.
        let values: Vec<f64> = (0..20).map(|i| 1.0 + 0.001 * (((i * 7) % 5) as f64 - 2.0)).collect();
        assert_eq!(warnings_for(&values), vec![]);
    }

    #[test]
    fn too_few_values_and_constant_samples() {
        assert_eq!(warnings_for(&[1.0]), vec![Warning::TooFewValues { n: 1 }]);
        assert_eq!(warnings_for(&[1.0; 3]), vec![Warning::TooFewValues { n: 3 }]);
        assert_eq!(warnings_for(&[1.0; 5]), vec![]);
    }

    #[test]
    fn warning_texts_say_what_to_do() {
        assert_eq!(
            Warning::Unstable { stddev_percent: 12.4 }.to_string(),
            "the benchmark seems unstable: the standard deviation is 12% of the mean; re-run on a quiet \
             machine (no other programs, fixed CPU frequency) with more runs and warm-up runs"
        );
        assert_eq!(
            Warning::TooFewValues { n: 1 }.to_string(),
            "only 1 value: at least 5 per command are needed for a significance test; use more runs"
        );
        assert_eq!(
            Warning::Outliers { count: 2, n: 30 }.to_string(),
            "statistical outliers were detected (2 of 30 values); consider re-running on a quiet \
             machine without other programs running, and using warm-up runs"
        );
        for w in [
            Warning::NotEnoughValuesForStableResult { n: 8, required: 639 },
            Warning::MinFarBelowMean { min: 0.1, mean: 0.91, percent: 89.0 },
            Warning::MaxFarAboveMean { max: 3.0, mean: 1.4, percent: 114.3 },
        ] {
            let text = w.to_string();
            assert!(text.contains("runs") || text.contains("quiet machine"), "{text}");
        }
    }
}
