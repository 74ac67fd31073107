//! Reading a Prometheus / OpenMetrics text exposition in tests, with the reader the operator's
//! health gates use ([`relayer_operator::gates::Exposition`], the relayer's own parser), so
//! tests and gates cannot read a text differently.
//!
//! A series that is not there is an error naming it, never 0: a misspelt metric name cannot
//! pass `assert_eq!(value, 0.0)`.
//!
//! Uses the operator library (`gates`) only.

use anyhow::Context as _;
use relayer_operator::gates;

/// Every sample of one exposition.
#[derive(Debug, Clone)]
pub struct Exposition(gates::Exposition);

impl Exposition {
    /// Parses `text`; a line the gates could not read is an error.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        gates::Exposition::parse(text)
            .map(Self)
            .context("a Prometheus text line")
    }

    /// Sum of the series of `name` whose labels include every pair of `labels` (all series of
    /// `name` for `&[]`); an error naming the metric when no series matches.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
        self.0
            .sum(name, labels)
            .with_context(|| format!("series present: {}", self.names().join(", ")))
    }

    /// Like [`Exposition::get`] over every label set; panics naming the metric when it has no
    /// series.
    pub fn value(&self, name: &str) -> f64 {
        self.get(name, &[])
            .unwrap_or_else(|error| panic!("{error:#}"))
    }

    /// The cumulative buckets of histogram `name` (from its `name_bucket` series, summed over
    /// other labels), as (upper bound, count) by bound; an error naming it when it has none.
    pub fn buckets(&self, name: &str) -> anyhow::Result<Vec<(f64, f64)>> {
        let series = format!("{name}_bucket");
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        for sample in self.0.matching(&series, &[]) {
            let le = sample
                .label("le")
                .with_context(|| format!("{series} without an `le` label"))?;
            let le = match le {
                "+Inf" => f64::INFINITY,
                le => le
                    .parse()
                    .with_context(|| format!("{series}: bound {le:?} is not a number"))?,
            };
            match buckets.iter_mut().find(|(bound, _)| *bound == le) {
                Some((_, count)) => *count += sample.value,
                None => buckets.push((le, sample.value)),
            }
        }
        anyhow::ensure!(!buckets.is_empty(), "no series {series} in the exposition");
        buckets.sort_by(|x, y| x.0.total_cmp(&y.0));
        Ok(buckets)
    }

    /// The distinct metric names of the samples (`x_total`, `x_bucket`, ...: what Prometheus
    /// stores), sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.0.samples().iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}
