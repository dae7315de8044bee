//! A fixed-bucket histogram of atomics, rendered in Prometheus' text format.
//!
//! Recording is a few relaxed atomic adds, cheap enough for every commit and every script call;
//! a metrics crate would bring a registry and global state for the handful of series we export.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Histogram {
    /// Upper bounds of the buckets (inclusive), ascending; `+Inf` is implied.
    bounds: &'static [u64],
    /// Non-cumulative counts per bucket, the last one for values above every bound.
    buckets: Vec<AtomicU64>,
    sum: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [u64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn record(&self, value: u64) {
        let index = self.bounds.iter().position(|b| value <= *b).unwrap_or(self.bounds.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends `name`'s HELP, TYPE, cumulative buckets, sum and count to `out`.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            match self.bounds.get(i) {
                Some(bound) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", self.sum.load(Ordering::Relaxed), self.count.load(Ordering::Relaxed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_in_the_text_format() {
        let h = Histogram::new(&[1, 10, 100]);
        for v in [0, 1, 5, 10, 50, 1000] {
            h.record(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "test");
        assert!(out.contains("x_bucket{le=\"1\"} 2\n"));
        assert!(out.contains("x_bucket{le=\"10\"} 4\n"));
        assert!(out.contains("x_bucket{le=\"100\"} 5\n"));
        assert!(out.contains("x_bucket{le=\"+Inf\"} 6\n"));
        assert!(out.contains("x_sum 1066\nx_count 6\n"));
    }
}
