//! What the rate-limit benchmarks share: picking scenarios from the command line, and medians.

use std::str::FromStr;

use anyhow::{Context as _, bail};

/// An optional positional argument: `default` when it is absent, an error naming `what` when it
/// does not parse.
pub fn arg<T>(given: Option<String>, default: T, what: &str) -> anyhow::Result<T>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    given
        .map_or(Ok(default), |s| s.parse())
        .context(what.to_owned())
}

/// The scenarios named in `arg` (comma-separated), in the order of `all`; every one of them
/// when there is no `arg`. A name that is not one of `all` is an error, not a silent skip.
pub fn scenarios(all: &[&'static str], arg: Option<String>) -> anyhow::Result<Vec<&'static str>> {
    let Some(arg) = arg else {
        return Ok(all.to_vec());
    };
    let named: Vec<&str> = arg.split(',').map(str::trim).collect();
    if let Some(unknown) = named.iter().find(|n| !all.contains(n)) {
        bail!("no scenario `{unknown}`; the scenarios are {all:?}");
    }
    Ok(all.iter().copied().filter(|s| named.contains(s)).collect())
}

/// The median (the upper one of an even count); NaN when there is nothing to take it of.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}
