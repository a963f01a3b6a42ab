//! Selectors as store matchers, and store tags as PromQL labels.
//!
//! PromQL's label matchers treat a missing label as the empty string: `{k=""}` selects the
//! series without `k`, `{k!=""}` those with it, and a regex that matches the empty string
//! selects the series without `k` too. Regexes are anchored at both ends.

use std::collections::BTreeMap;
use std::sync::Arc;

use argus_tsdb::{Matcher, Tags, ValuePredicate};
use promql_parser::label::{MatchOp, Matchers};
use promql_parser::parser::{Expr, VectorSelector};

use crate::Error;

/// PromQL's name label; Argus stores it as the tag `name`.
pub const NAME_LABEL: &str = "__name__";

/// The store's tag for a PromQL label name.
fn tag_key(label: &str) -> &str {
    if label == NAME_LABEL { "name" } else { label }
}

/// Tags a PromQL result does not show: how Argus stores a series, not a label of it.
pub(crate) const HIDDEN_TAGS: [&str; 1] = ["atlas.dstype"];

/// Labels whose value `+Inf` the store keeps as `_Inf` (`+` is not an Atlas character): a
/// classic histogram's bucket bounds and a summary's quantiles. PromQL shows and matches
/// `+Inf`.
const BOUND_LABELS: [&str; 2] = ["le", "quantile"];

/// A stored tag value as PromQL shows it.
pub fn shown_value<'a>(key: &str, value: &'a str) -> &'a str {
    if value == "_Inf" && BOUND_LABELS.contains(&key) {
        "+Inf"
    } else {
        value
    }
}

/// A PromQL label value as the store keeps it.
fn stored_value<'a>(key: &str, value: &'a str) -> &'a str {
    if value == "+Inf" && BOUND_LABELS.contains(&key) {
        "_Inf"
    } else {
        value
    }
}

/// A series' tags as PromQL labels: `name` becomes `__name__`.
pub fn labels_of(tags: &dyn Tags) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    tags.for_each(&mut |k, v| {
        if HIDDEN_TAGS.contains(&k) {
            return;
        }
        let key = if k == "name" { NAME_LABEL } else { k };
        labels.insert(key.to_string(), shown_value(k, v).to_string());
    });
    labels
}

/// The store matcher of a vector selector (its metric name and label matchers).
pub fn matcher_of(vs: &VectorSelector) -> Result<Matcher, Error> {
    let mut all = conjunction(&vs.matchers.matchers)?;
    if let Some(name) = &vs.name
        && !vs
            .matchers
            .matchers
            .iter()
            .any(|m| m.name == NAME_LABEL && matches!(m.op, MatchOp::Equal) && m.value == *name)
    {
        all = Matcher::eq("name", name.as_str()).and(all);
    }
    alternatives(all, &vs.matchers)
}

/// The store matcher of a `match[]` parameter: a series selector such as
/// `{__name__=~".+"}` or `up{job="a"}`.
pub fn series_matcher(text: &str) -> Result<Matcher, Error> {
    let expr = promql_parser::parser::parse(text)
        .map_err(|e| Error::bad_data(format!("invalid parameter \"match[]\": {e}")))?;
    match expr {
        Expr::VectorSelector(vs) => matcher_of(&vs),
        _ => Err(Error::bad_data(format!(
            "invalid parameter \"match[]\": {text:?} is not a series selector"
        ))),
    }
}

fn alternatives(first: Matcher, matchers: &Matchers) -> Result<Matcher, Error> {
    let mut any = first;
    for group in &matchers.or_matchers {
        any = any.or(conjunction(group)?);
    }
    Ok(any)
}

fn conjunction(matchers: &[promql_parser::label::Matcher]) -> Result<Matcher, Error> {
    let mut all: Option<Matcher> = None;
    for m in matchers {
        let one = one_matcher(m)?;
        all = Some(match all {
            None => one,
            Some(a) => a.and(one),
        });
    }
    Ok(all.unwrap_or(Matcher::True))
}

fn one_matcher(m: &promql_parser::label::Matcher) -> Result<Matcher, Error> {
    let key = tag_key(&m.name).to_string();
    let absent = Matcher::Has { key: key.clone() }.not();
    Ok(match &m.op {
        MatchOp::Equal if m.value.is_empty() => absent,
        MatchOp::Equal => {
            let value = stored_value(&key, &m.value).to_string();
            Matcher::eq(key, value)
        }
        MatchOp::NotEqual if m.value.is_empty() => Matcher::Has { key },
        MatchOp::NotEqual => {
            let value = stored_value(&key, &m.value).to_string();
            Matcher::eq(key, value).not()
        }
        MatchOp::Re(_) => regex_matcher(key, &m.value)?,
        MatchOp::NotRe(_) => regex_matcher(key, &m.value)?.not(),
    })
}

/// `key=~pattern`, anchored; a pattern matching the empty string also selects the series
/// without `key`.
fn regex_matcher(key: String, pattern: &str) -> Result<Matcher, Error> {
    let re = regex::Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| Error::bad_data(format!("invalid regular expression {pattern:?}: {e}")))?;
    let empty_matches = re.is_match("");
    let description = format!("{key}=~{pattern:?}");
    let bound = BOUND_LABELS.contains(&key.as_str());
    let values = Matcher::Values {
        key: key.clone(),
        pred: ValuePredicate {
            // A bound's stored value may not start as the pattern does (`_Inf`).
            prefix: if bound {
                Default::default()
            } else {
                literal_prefix(pattern)
            },
            test: if bound {
                Arc::new(move |v: &str| re.is_match(shown_value("le", v)))
            } else {
                Arc::new(move |v: &str| re.is_match(v))
            },
            description,
        },
    };
    Ok(if empty_matches {
        Matcher::Has { key }.not().or(values)
    } else {
        values
    })
}

/// The literal start every match of an anchored `pattern` has (empty when unsure), so the
/// index scans only that slice of the key's values.
fn literal_prefix(pattern: &str) -> String {
    let mut prefix = String::new();
    for c in pattern.chars() {
        if c.is_alphanumeric() || c == '_' || c == '-' || c == '/' || c == ':' || c == ' ' {
            prefix.push(c);
        } else {
            // A quantifier may make the last literal optional.
            if matches!(c, '?' | '*' | '{') {
                prefix.pop();
            }
            break;
        }
    }
    if pattern.contains('|') {
        return String::new();
    }
    prefix
}

#[cfg(test)]
mod tests {
    use super::*;
    use argus_tsdb::TagMap;

    fn selects(selector: &str, tags: &[(&str, &str)]) -> bool {
        series_matcher(selector)
            .unwrap()
            .matches(&TagMap::from_pairs(tags.iter().copied()))
    }

    #[test]
    fn selectors_keep_promqls_meaning() {
        let cpu = [("name", "sys.cpu"), ("nf.app", "www")];
        assert!(selects(r#"{__name__="sys.cpu"}"#, &cpu));
        assert!(selects(r#"{"sys.cpu", "nf.app"="www"}"#, &cpu));
        assert!(selects(r#"{__name__=~".+"}"#, &cpu));
        assert!(!selects(r#"{__name__="sys.mem"}"#, &cpu));
        // A missing label is the empty string.
        assert!(selects(r#"{__name__="sys.cpu", zone=""}"#, &cpu));
        assert!(!selects(r#"{__name__="sys.cpu", zone!=""}"#, &cpu));
        assert!(selects(r#"{__name__="sys.cpu", zone=~"a|"}"#, &cpu));
        assert!(selects(r#"{__name__="sys.cpu", zone!="a"}"#, &cpu));
        // Anchored at both ends.
        assert!(!selects(r#"{__name__=~"sys"}"#, &cpu));
        assert!(selects(
            r#"{__name__=~"sys.*", "nf.app"!~"w.w"}"#,
            &[("name", "sys.x"), ("nf.app", "api")]
        ));
        assert!(!selects(r#"{__name__=~"sys.*", "nf.app"!~"w.w"}"#, &cpu));
        assert!(matches!(
            series_matcher("sum(x)").unwrap_err().kind,
            crate::ErrorKind::BadData
        ));
    }

    #[test]
    fn prefixes_are_only_what_every_match_starts_with() {
        assert_eq!(literal_prefix("sys.*"), "sys");
        assert_eq!(literal_prefix("abc?"), "ab");
        assert_eq!(literal_prefix("a|b"), "");
        assert_eq!(literal_prefix(".+"), "");
    }

    #[test]
    fn tags_read_as_labels() {
        let tags = TagMap::from_pairs([("name", "x"), ("atlas.dstype", "gauge"), ("k", "v")]);
        let labels = labels_of(&tags);
        assert_eq!(labels.get(NAME_LABEL).map(String::as_str), Some("x"));
        assert_eq!(labels.get("k").map(String::as_str), Some("v"));
        assert!(!labels.contains_key("atlas.dstype"));
    }
}
