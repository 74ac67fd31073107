//! The one reader of Prometheus text the relayer tests use: [`scrape`] a relayer's `/metrics`
//! into [`Metrics`], then read a series by name and exact label set with [`Metrics::value`].
//!
//! A series that is not there is a panic naming it (and the series of that name that are), never
//! a 0: a misspelt name or label cannot pass `assert_eq!(value, 0.0)`. A test that expects a
//! series to be absent says so with [`Metrics::get`] returning `None`.
//!
//! Uses `reqwest` for the scrape and std for the parsing.

use std::collections::BTreeMap;
use std::fmt;

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name as exposed, suffixes such as `_total` or `_bucket` included.
    pub name: String,
    /// The labels, by name.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// Every sample of one scrape, and the text it was read from (for failure messages).
#[derive(Debug, Clone)]
pub struct Metrics {
    samples: Vec<Sample>,
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
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| parse_sample(l).unwrap_or_else(|e| panic!("bad metrics line `{l}`: {e}")))
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
                        .all(|(k, v)| s.labels.get(*k).is_some_and(|have| have == v))
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
    pub fn series<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// Every sample, in the order of the text.
    pub fn samples(&self) -> &[Sample] {
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

/// `name{k="v",...} value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty() {
        return Err("no metric name".to_owned());
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, tail) = parse_labels(after)?;
        labels = parsed;
        rest = tail;
    }
    let value = rest.split_whitespace().next().ok_or("no value")?;
    let value = value
        .parse::<f64>()
        .map_err(|e| format!("value `{value}`: {e}"))?;
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// The labels after `{`, up to and including `}`; the text after it.
fn parse_labels(mut s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(tail) = s.strip_prefix('}') {
            return Ok((labels, tail));
        }
        let (key, after) = s.split_once("=\"").ok_or("a label without =\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().ok_or("an unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("a dangling escape")?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.trim().to_owned(), value);
        s = &after[end + 1..];
    }
}
