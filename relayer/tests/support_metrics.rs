//! The tests' own Prometheus reader (`support::metrics`): names, labels, escapes and values
//! are read as exposed, and a series that is not there is never read as 0.

mod support;

use support::metrics::Metrics;

#[test]
fn reads_names_labels_escapes_and_values_and_a_missing_series_is_none() {
    let m = Metrics::parse(
        "# HELP x_total X.\n# TYPE x_total counter\nx_total{a=\"1\",b=\"q\\\"uo\\\\te\"} 3\n\
         g 1.5\nh_bucket{le=\"+Inf\"} 2 1700000000\n# EOF\n",
    );
    assert_eq!(m.value("x_total", &[("b", "q\"uo\\te"), ("a", "1")]), 3.0);
    assert_eq!(m.value("g", &[]), 1.5);
    assert_eq!(m.value("h_bucket", &[("le", "+Inf")]), 2.0);
    assert_eq!(
        m.get("x_total", &[("a", "1")]),
        None,
        "labels match exactly"
    );
    assert_eq!(m.get("x", &[]), None);
    assert_eq!(m.samples().len(), 3);
}

#[test]
#[should_panic(expected = "no series x_totl")]
fn a_missing_series_panics_naming_it_instead_of_reading_zero() {
    Metrics::parse("x_total 0\n").value("x_totl", &[]);
}

#[test]
#[should_panic(expected = "bad metrics line `x_total{a=\"1\" 3`")]
fn a_malformed_line_panics_naming_it() {
    Metrics::parse("x_total{a=\"1\" 3\n");
}
