//! Reading a Prometheus / OpenMetrics text exposition in tests, with the parser the operator's
//! health gates use ([`relayer_operator::gates::parse_line`]), so tests and gates cannot read
//! a text differently.
//!
//! A series that is not there is an error naming it, never 0: a misspelt metric name cannot
//! pass `assert_eq!(value, 0.0)`.
//!
//! Uses the operator library (`gates`) only.

use anyhow::Context as _;
use relayer_operator::gates::{SampleLine, parse_line};

/// Every sample of one exposition.
#[derive(Debug, Clone)]
pub struct Exposition {
    samples: Vec<SampleLine>,
}

impl Exposition {
    /// Parses `text`; a line the gates could not read is an error.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut samples = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if let Some(sample) = parse_line(line, i + 1).context("a Prometheus text line")? {
                samples.push(sample);
            }
        }
        Ok(Self { samples })
    }

    /// Sum of the series of `name` whose labels include every pair of `labels` (all series of
    /// `name` for `&[]`); an error naming the metric when no series matches.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
        let mut matching = self
            .samples
            .iter()
            .filter(|s| s.name == name && has_labels(s, labels))
            .peekable();
        if matching.peek().is_none() {
            anyhow::bail!(
                "no series {name}{labels:?} in the exposition (series present: {})",
                self.names().join(", ")
            );
        }
        Ok(matching.map(|s| s.value).sum())
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
        for sample in self.samples.iter().filter(|s| s.name == series) {
            let le = sample
                .labels
                .iter()
                .find(|(k, _)| k == "le")
                .map(|(_, v)| v.as_str())
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

    /// The distinct metric names present, for error messages.
    fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.samples.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

fn has_labels(sample: &SampleLine, labels: &[(&str, &str)]) -> bool {
    labels
        .iter()
        .all(|(k, v)| sample.labels.iter().any(|(sk, sv)| sk == k && sv == v))
}
