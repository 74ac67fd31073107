//! [`Exposition`]: a whole Prometheus/OpenMetrics text with every sample line kept, for readers
//! of one series by name and labels (the integration tests read the relayer's and the
//! operator's `/metrics` with it). A missing series is a [`SeriesError`], never 0.
//!
//! May use: [`super`] (the line parser) only.

use super::{ParseError, SampleLine, parse_line};

/// A whole text exposition with every sample line kept, for readers of one series by name and
/// labels (the integration tests); [`super::parse`] keeps only what a gate needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    samples: Vec<SampleLine>,
}

/// A series an [`Exposition`] was asked for and cannot give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeriesError {
    /// No sample line has that name and those labels (a misspelt name lands here, not at 0).
    #[error("no series {0} in the exposition")]
    Missing(String),
    /// Several do, where one was asked for.
    #[error("{count} series match {selector}; name more labels")]
    Ambiguous {
        /// The name and labels asked for.
        selector: String,
        /// How many lines matched.
        count: usize,
    },
}

fn selector(name: &str, labels: &[(&str, &str)]) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", pairs.join(","))
}

impl Exposition {
    /// Reads every sample line of `text`.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut samples = Vec::new();
        for (i, line) in text.lines().enumerate() {
            samples.extend(parse_line(line, i + 1)?);
        }
        Ok(Self { samples })
    }

    /// Every sample line, in order.
    pub fn samples(&self) -> &[SampleLine] {
        &self.samples
    }

    /// The lines named `name` (with its suffix: `_total`, `_bucket`, ...) that carry every
    /// label pair of `labels` (and maybe more).
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a SampleLine> + 'a {
        self.samples
            .iter()
            .filter(move |s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
    }

    /// The value of the one series `name` with `labels`; an error when there is none or more
    /// than one.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64, SeriesError> {
        let found: Vec<&SampleLine> = self.matching(name, labels).collect();
        match found.as_slice() {
            [one] => Ok(one.value),
            [] => Err(SeriesError::Missing(selector(name, labels))),
            many => Err(SeriesError::Ambiguous {
                selector: selector(name, labels),
                count: many.len(),
            }),
        }
    }

    /// The sum over every series `name` with `labels`; an error when there is none.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64, SeriesError> {
        let mut found = self.matching(name, labels).peekable();
        if found.peek().is_none() {
            return Err(SeriesError::Missing(selector(name, labels)));
        }
        Ok(found.map(|s| s.value).sum())
    }
}
