//! The one reader of Prometheus text the relayer tests use: [`scrape`] a relayer's `/metrics`
//! into [`Metrics`], then read a series by name and exact label set with [`Metrics::value`].
//!
//! A series that is not there is a panic naming it (and the series of that name that are), never
//! a 0: a misspelt name or label cannot pass `assert_eq!(value, 0.0)`. A test that expects a
//! series to be absent says so with [`Metrics::get`] returning `None`.
//!
//! Uses `reqwest` for the scrape and the relayer's own parser ([`relayer::exposition`], the one
//! the operator's health gates read the same text with) for the lines.

use std::fmt;

use relayer::exposition::{SampleLine, parse_line};

/// Every sample of one scrape, and the text it was read from (for failure messages).
#[derive(Debug, Clone)]
pub struct Metrics {
    samples: Vec<SampleLine>,
    text: String,
}

/// GETs `{base}/metrics` and parses it; panics unless it answers 200.
pub async fn scrape(client: &reqwest::Client, base: &str) -> Metrics {
    let resp = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(resp.status(), 200, "GET /metrics");
    Metrics::parse(&resp.text().await.expect("metrics text"))
}

impl Metrics {
    /// Parses Prometheus (or OpenMetrics) text; panics on a line that is not a comment, blank,
    /// or a sample, naming the line.
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .enumerate()
            .filter_map(|(i, l)| {
                parse_line(l, i + 1).unwrap_or_else(|e| panic!("bad metrics line `{l}`: {e}"))
            })
            .collect();
        Self {
            samples,
            text: text.to_owned(),
        }
    }

    /// The value of the series `name` whose labels are exactly `labels`, or `None` when there
    /// is no such series.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.label(k).is_some_and(|have| have == *v))
            })
            .map(|s| s.value)
    }

    /// The value of the series `name` whose labels are exactly `labels`; panics naming the
    /// series, and the series of that name there are, when it is missing.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or_else(|| {
            let there: Vec<String> = self
                .series(name)
                .map(|s| format!("{:?}", s.labels))
                .collect();
            panic!("no series {name}{labels:?} in the scrape; series of {name}: {there:?}")
        })
    }

    /// Every series named `name`.
    pub fn series<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a SampleLine> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// Every sample, in the order of the text.
    pub fn samples(&self) -> &[SampleLine] {
        &self.samples
    }

    /// The text the samples were read from.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
