//! A filterbank applied over each filter's non-zero span only: a mel triangle covers a few of
//! the spectrum's bins, so the product skips the zeros. Sums run in f64, which lands nearer
//! torch's and numpy's f32 matrix products than any one f32 summation order.

use std::ops::Range;

/// Filters `filters x bins` (row-major), with the span of bins each one weighs.
#[derive(Debug, Clone)]
pub struct SparseFilterbank {
    weights: Vec<f32>,
    bins: usize,
    support: Vec<Range<usize>>,
}

impl SparseFilterbank {
    /// `weights` row-major, `bins` to a row.
    pub fn new(weights: Vec<f32>, bins: usize) -> Self {
        let support = weights
            .chunks(bins.max(1))
            .map(|row| {
                let start = row.iter().position(|&w| w != 0.0).unwrap_or(0);
                let end = row.iter().rposition(|&w| w != 0.0).map_or(start, |e| e + 1);
                start..end
            })
            .collect();
        Self {
            weights,
            bins,
            support,
        }
    }

    /// How many filters.
    pub fn filters(&self) -> usize {
        self.support.len()
    }

    /// The weights, row-major.
    pub fn weights(&self) -> &[f32] {
        &self.weights
    }

    /// Filter `m` over one frame's `bins` values, accumulated in f64.
    pub fn apply<T: Copy + Into<f64>>(&self, m: usize, column: &[T]) -> f64 {
        let row = &self.weights[m * self.bins..(m + 1) * self.bins];
        self.support[m]
            .clone()
            .map(|k| f64::from(row[k]) * column[k].into())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_each_row_over_its_non_zero_span() {
        let fb = SparseFilterbank::new(vec![0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0], 4);
        assert_eq!(fb.filters(), 2);
        let column = [10f32, 20.0, 30.0, 40.0];
        assert_eq!(fb.apply(0, &column), 80.0);
        assert_eq!(fb.apply(1, &column), 120.0);
        assert_eq!(fb.apply(0, &[1f64, 2.0, 3.0, 4.0]), 8.0);
    }
}
