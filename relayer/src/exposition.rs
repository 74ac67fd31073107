//! Reading the Prometheus / OpenMetrics text the relayer serves on `/metrics`: one parser for
//! every reader, so the operator's health gates and the tests of both crates cannot read a text
//! differently.
//!
//! - [`parse_line`]: one line into a [`SampleLine`] (name, labels, value), or a [`ParseError`]
//!   naming the line;
//! - [`Exposition`]: a whole text with every sample kept, for readers of one series by name and
//!   labels. A missing series is a [`SeriesError`], never 0.
//!
//! Pure, and built without the `server` feature (the operator uses it). Uses nothing of the
//! crate.

/// A line of the text format that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {what}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong.
    pub what: String,
}

/// One sample line: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleLine {
    /// Metric name (with suffixes such as `_total` or `_bucket`).
    pub name: String,
    /// Label pairs in order.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl SampleLine {
    /// The value of label `key`, if the line has it.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses one line of the text exposition; `None` for comments and blank lines.
pub fn parse_line(line: &str, number: usize) -> Result<Option<SampleLine>, ParseError> {
    let err = |what: &str| ParseError {
        line: number,
        what: what.to_owned(),
    };
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or_else(|| err("no value"))?;
    let name = &line[..name_end];
    if name.is_empty() {
        return Err(err("empty metric name"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let mut end = None;
        loop {
            while chars.next_if(|(_, c)| *c == ' ' || *c == ',').is_some() {}
            match chars.peek() {
                Some((i, '}')) => {
                    end = Some(*i);
                    break;
                }
                None => break,
                _ => {}
            }
            let mut key = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(err("label value is not quoted"));
            }
            let mut value = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some(other) => value.push(other),
                        None => return Err(err("dangling escape")),
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    other => value.push(other),
                }
            }
            if !closed {
                return Err(err("unterminated label value"));
            }
            labels.push((key.trim().to_owned(), value));
        }
        let end = end.ok_or_else(|| err("unterminated label set"))?;
        rest = &body[end + 1..];
    }
    let value = rest
        .split_whitespace()
        .next()
        .ok_or_else(|| err("no value"))?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().map_err(|_| err("value is not a number"))?,
    };
    Ok(Some(SampleLine {
        name: name.to_owned(),
        labels,
        value,
    }))
}

/// A whole text exposition with every sample line kept, for readers of one series by name and
/// labels (the integration tests); the operator's gates keep only what they need.
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
