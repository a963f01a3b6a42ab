//! The stateful operations as online algorithms (Atlas's `Online*`): each consumes a line's
//! values in order, state starting empty at the first step of the window, and gives one
//! output per input.

use crate::model::{StatefulOp, add_nan, truthy};

/// Applies a stateful operation to a line that starts at `start_ms`.
pub(crate) fn apply(op: &StatefulOp, values: &[f64], start_ms: i64, step_ms: i64) -> Vec<f64> {
    match *op {
        StatefulOp::Delay(n) => delay(values, n),
        StatefulOp::RollingCount(n) => {
            let mut buf = Rolling::new(n, values.len());
            let mut count = 0.0;
            values
                .iter()
                .map(|&v| {
                    let removed = buf.add(v);
                    count += bool_value(v) - bool_value(removed);
                    count
                })
                .collect()
        }
        StatefulOp::RollingMin(n) => rolling_extreme(values, n, f64::min),
        StatefulOp::RollingMax(n) => rolling_extreme(values, n, f64::max),
        StatefulOp::RollingSum(n) => rolling_sum(values, n, 1),
        StatefulOp::RollingMean { n, min } => rolling_sum(values, n, min.max(1))
            .into_iter()
            .zip(rolling_counts(values, n))
            .map(|(sum, count)| {
                if count >= min.max(1) {
                    sum / count as f64
                } else {
                    f64::NAN
                }
            })
            .collect(),
        StatefulOp::Trend(window_ms) => trend(values, (window_ms / step_ms.max(1)) as usize),
        StatefulOp::Integral => {
            let mut acc = f64::NAN;
            values
                .iter()
                .map(|&v| {
                    acc = add_nan(acc, v);
                    acc
                })
                .collect()
        }
        StatefulOp::Derivative => {
            let mut prev = f64::NAN;
            values
                .iter()
                .map(|&v| {
                    let out = v - prev;
                    prev = v;
                    out
                })
                .collect()
        }
        StatefulOp::CumulativeMax => {
            let mut acc = f64::NAN;
            values
                .iter()
                .map(|&v| {
                    acc = acc.max(v);
                    acc
                })
                .collect()
        }
        StatefulOp::Des {
            training,
            alpha,
            beta,
            ..
        } => {
            let mut des = Des::new(training, alpha, beta);
            values.iter().map(|&v| des.next(v)).collect()
        }
        StatefulOp::SlidingDes {
            training,
            alpha,
            beta,
            ..
        } => sliding_des(values, training, alpha, beta, start_ms, step_ms),
    }
}

fn bool_value(v: f64) -> f64 {
    if truthy(v) { 1.0 } else { 0.0 }
}

/// A ring of the last n values, NaN-filled at first.
struct Rolling {
    values: Vec<f64>,
    pos: usize,
}

impl Rolling {
    /// A ring for a window of `n` over a line of `len` values: at most `len` long, since
    /// a longer one would only ever give back its initial NaNs, as this one does.
    fn new(n: usize, len: usize) -> Self {
        Rolling {
            values: vec![f64::NAN; n.min(len).max(1)],
            pos: 0,
        }
    }

    /// Adds `v`, returning the value it replaces (the one from n calls ago).
    fn add(&mut self, v: f64) -> f64 {
        let prev = std::mem::replace(&mut self.values[self.pos], v);
        self.pos = (self.pos + 1) % self.values.len();
        prev
    }
}

fn delay(values: &[f64], n: usize) -> Vec<f64> {
    if n == 0 {
        return values.to_vec();
    }
    let mut buf = Rolling::new(n, values.len());
    values.iter().map(|&v| buf.add(v)).collect()
}

/// The rolling min or max (`pick`) over the last `n` values, NaN ignored (an all-NaN
/// window gives NaN). A monotonic queue of candidates makes it one pass whatever `n` is.
fn rolling_extreme(values: &[f64], n: usize, pick: fn(f64, f64) -> f64) -> Vec<f64> {
    let n = n.max(1);
    // Indexes of values that may still be the extreme of a later window, their values in
    // `pick` order from the front (a value that a newer, better one beats never is).
    let mut candidates: std::collections::VecDeque<usize> = std::collections::VecDeque::new();
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if !v.is_nan() {
                while candidates.back().is_some_and(|&j| pick(values[j], v) == v) {
                    candidates.pop_back();
                }
                candidates.push_back(i);
            }
            while candidates.front().is_some_and(|&j| j + n <= i) {
                candidates.pop_front();
            }
            candidates.front().map_or(f64::NAN, |&j| values[j])
        })
        .collect()
}

/// Rolling NaN-ignoring sums (NaN where the window holds fewer than `min` values).
fn rolling_sum(values: &[f64], n: usize, min: usize) -> Vec<f64> {
    let mut buf = Rolling::new(n, values.len());
    let mut sum = 0.0;
    let mut count = 0usize;
    values
        .iter()
        .map(|&v| {
            let removed = buf.add(v);
            let old = sum;
            match (removed.is_nan(), v.is_nan()) {
                (false, false) => sum += v - removed,
                (false, true) => {
                    sum -= removed;
                    count -= 1;
                }
                (true, false) => {
                    sum += v;
                    count += 1;
                }
                (true, true) => {}
            }
            // Adding and removing values of very different magnitudes loses the small ones;
            // recompute from the window when the sum's magnitude jumps (as Atlas does).
            if count == 0 {
                sum = 0.0;
            } else if (exponent(old) - exponent(sum)).abs() >= 15 || !sum.is_finite() {
                sum = buf.values.iter().filter(|x| !x.is_nan()).sum();
            }
            if count >= min { sum } else { f64::NAN }
        })
        .collect()
}

/// Non-NaN values in each rolling window.
fn rolling_counts(values: &[f64], n: usize) -> Vec<usize> {
    let mut buf = Rolling::new(n, values.len());
    let mut count = 0usize;
    values
        .iter()
        .map(|&v| {
            let removed = buf.add(v);
            count = count + usize::from(!v.is_nan()) - usize::from(!removed.is_nan());
            count
        })
        .collect()
}

fn exponent(v: f64) -> i32 {
    if v == 0.0 || !v.is_finite() {
        0
    } else {
        ((v.to_bits() >> 52) & 0x7ff) as i32 - 1023
    }
}

/// Moving average: the sum of the window's non-NaN values over the window size, NaN until
/// the window is full or when it holds no value. A window of one step or less is the input.
fn trend(values: &[f64], n: usize) -> Vec<f64> {
    if n <= 1 {
        return values.to_vec();
    }
    if n > values.len() {
        // The window is never full.
        return vec![f64::NAN; values.len()];
    }
    let mut buf = Rolling::new(n, values.len());
    let (mut sum, mut nan_count, mut seen) = (0.0, n, 0usize);
    values
        .iter()
        .map(|&v| {
            let removed = buf.add(v);
            seen += 1;
            if !removed.is_nan() {
                sum -= removed;
            } else {
                nan_count -= 1;
            }
            if !v.is_nan() {
                sum += v;
            } else {
                nan_count += 1;
            }
            if seen < n || nan_count == n {
                f64::NAN
            } else {
                sum / n as f64
            }
        })
        .collect()
}

/// Holt's double exponential smoothing; each output is the level predicted before the
/// current value, NaN until `training` values were seen.
struct Des {
    training: usize,
    alpha: f64,
    beta: f64,
    samples: usize,
    level: f64,
    trend: f64,
}

impl Des {
    fn new(training: usize, alpha: f64, beta: f64) -> Self {
        Des {
            training,
            alpha,
            beta,
            samples: 0,
            level: f64::NAN,
            trend: 0.0,
        }
    }

    fn next(&mut self, v: f64) -> f64 {
        let out = if self.samples >= self.training {
            self.level
        } else {
            f64::NAN
        };
        if !v.is_nan() {
            if self.samples == 0 {
                self.level = v;
                self.trend = 0.0;
            } else {
                let level = self.alpha * v + (1.0 - self.alpha) * (self.level + self.trend);
                self.trend = self.beta * (level - self.level) + (1.0 - self.beta) * self.trend;
                self.level = level;
            }
            self.samples += 1;
        }
        out
    }
}

/// Two DES instances that take turns, each reset after `training` steps, aligned to
/// multiples of the training period so the output does not depend on the window's start.
fn sliding_des(
    values: &[f64],
    training: usize,
    alpha: f64,
    beta: f64,
    start_ms: i64,
    step_ms: i64,
) -> Vec<f64> {
    let training_ms = step_ms.max(1).saturating_mul(training.max(1) as i64);
    let aligned = if start_ms.rem_euclid(training_ms) == 0 {
        start_ms
    } else {
        (start_ms.div_euclid(training_ms) + 1).saturating_mul(training_ms)
    };
    let skip = (aligned.saturating_sub(start_ms) / step_ms.max(1)) as usize;
    let (mut one, mut two) = (
        Des::new(training, alpha, beta),
        Des::new(training, alpha, beta),
    );
    let mut use_one = true;
    let mut current = 0usize;
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if i < skip {
                return f64::NAN;
            }
            current += 1;
            let (a, b) = (one.next(v), two.next(v));
            let out = if use_one { a } else { b };
            if training > 0 && current.is_multiple_of(training) {
                if use_one {
                    one = Des::new(training, alpha, beta);
                } else {
                    two = Des::new(training, alpha, beta);
                }
                use_one = !use_one;
            }
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: f64 = f64::NAN;

    fn check(op: StatefulOp, input: &[f64], want: &[f64]) {
        let got = apply(&op, input, 0, 60_000);
        let same = got.len() == want.len()
            && got
                .iter()
                .zip(want)
                .all(|(g, w)| (g.is_nan() && w.is_nan()) || (g - w).abs() < 1e-6);
        assert!(same, "{op:?}: got {got:?}, want {want:?}");
    }

    /// Expected vectors from Atlas's algorithms (see the Atlas notes in the repository's
    /// test data), input with gaps.
    #[test]
    fn atlas_vectors() {
        let x = [1.0, 2.0, N, 4.0, 5.0, N, N, N, 8.0, 0.0];
        check(
            StatefulOp::Delay(2),
            &x,
            &[N, N, 1.0, 2.0, N, 4.0, 5.0, N, N, N],
        );
        check(
            StatefulOp::RollingCount(3),
            &x,
            &[1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 1.0, 0.0, 1.0, 1.0],
        );
        check(
            StatefulOp::RollingMin(3),
            &x,
            &[1.0, 1.0, 1.0, 2.0, 4.0, 4.0, 5.0, N, 8.0, 0.0],
        );
        check(
            StatefulOp::RollingMax(3),
            &x,
            &[1.0, 2.0, 2.0, 4.0, 5.0, 5.0, 5.0, N, 8.0, 8.0],
        );
        check(
            StatefulOp::RollingMean { n: 3, min: 2 },
            &x,
            &[N, 1.5, 1.5, 3.0, 4.5, 4.5, N, N, N, 4.0],
        );
        check(
            StatefulOp::RollingSum(3),
            &x,
            &[1.0, 3.0, 3.0, 6.0, 9.0, 9.0, 5.0, N, 8.0, 8.0],
        );
        check(
            StatefulOp::Trend(180_000),
            &x,
            &[N, N, 1.0, 2.0, 3.0, 3.0, 1.666667, N, 2.666667, 2.666667],
        );
        check(
            StatefulOp::Integral,
            &x,
            &[1.0, 3.0, 3.0, 7.0, 12.0, 12.0, 12.0, 12.0, 20.0, 20.0],
        );
        check(
            StatefulOp::Derivative,
            &x,
            &[N, 1.0, N, N, 1.0, N, N, N, N, -8.0],
        );
        check(
            StatefulOp::CumulativeMax,
            &x,
            &[1.0, 2.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0, 8.0, 8.0],
        );
    }

    /// The rolling extremes as defined: a rescan of the last `n` values at every step.
    fn rolling_extreme_by_rescan(values: &[f64], n: usize, pick: fn(f64, f64) -> f64) -> Vec<f64> {
        (0..values.len())
            .map(|i| {
                values[(i + 1).saturating_sub(n.max(1))..=i]
                    .iter()
                    .fold(f64::NAN, |a, &x| pick(a, x))
            })
            .collect()
    }

    #[test]
    fn rolling_extremes_match_a_rescan_of_each_window() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut next = move || rng.usize(..);
        for _ in 0..500 {
            let len = next() % 40;
            let values: Vec<f64> = (0..len)
                .map(|_| match next() % 5 {
                    0 => f64::NAN,
                    k => (k * (next() % 7)) as f64 - 10.0,
                })
                .collect();
            let n = next() % 50;
            for pick in [f64::min, f64::max] {
                let got = rolling_extreme(&values, n, pick);
                let want = rolling_extreme_by_rescan(&values, n, pick);
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a == b || (a.is_nan() && b.is_nan()));
                assert!(same, "n={n} values={values:?}: {got:?} != {want:?}");
            }
        }
    }

    #[test]
    fn windows_longer_than_the_line_allocate_only_the_line() {
        let values = [1.0, f64::NAN, 3.0];
        let huge = crate::model::MAX_WINDOW;
        let got = apply(&StatefulOp::RollingMax(huge), &values, 0, 60_000);
        assert_eq!(got, [1.0, 1.0, 3.0]);
        let got = apply(&StatefulOp::Delay(huge), &values, 0, 60_000);
        assert!(got.iter().all(|v| v.is_nan()));
        let got = apply(&StatefulOp::Trend(i64::MAX), &values, 0, 60_000);
        assert!(got.iter().all(|v| v.is_nan()));
        let got = apply(&StatefulOp::RollingSum(huge), &values, 0, 60_000);
        assert_eq!(got, [1.0, 1.0, 4.0]);
    }

    #[test]
    fn rolling_sum_keeps_precision() {
        check(
            StatefulOp::RollingSum(2),
            &[0.0, 1e300, 2.0, 3.0],
            &[0.0, 1e300, 1e300, 5.0],
        );
        check(
            StatefulOp::RollingSum(3),
            &[0.0, 1.0, -1.0, N, N, N],
            &[0.0, 1.0, 0.0, 0.0, -1.0, N],
        );
    }

    #[test]
    fn des_and_sliding_des() {
        let x = [
            1.0, 1.5, 1.6, 1.7, 1.4, 1.3, 1.2, 1.0, 0.0, 0.0, 1.0, 1.1, 1.2, 1.2,
        ];
        let des = StatefulOp::Des {
            training: 2,
            alpha: 0.1,
            beta: 0.02,
            preset: None,
        };
        check(
            des,
            &x,
            &[
                N, N, 1.05, 1.1059, 1.167198, 1.193432, 1.207456, 1.210262, 1.192768, 1.076637,
                0.969966, 0.972022, 0.983929, 1.004877,
            ],
        );
        let sdes = StatefulOp::SlidingDes {
            training: 2,
            alpha: 0.1,
            beta: 0.02,
            preset: None,
        };
        check(
            sdes,
            &x,
            &[
                N, N, 1.05, 1.1059, 1.61, 1.58918, 1.39, 1.37082, 1.18, 1.06164, 0.0, 0.1, 1.01,
                1.02918,
            ],
        );
        check(
            StatefulOp::Trend(180_000),
            &x,
            &[
                N, N, 1.366667, 1.6, 1.566667, 1.466667, 1.3, 1.166667, 0.733333, 0.333333,
                0.333333, 0.7, 1.1, 1.166667,
            ],
        );
    }
}
