//! The payload older Spectator clients (npm `nflx-spectator`, the aggregator's `POST
//! /api/v4/update`) send: one JSON array holding a string table, then the measurements as
//! indexes into it,
//!
//! ```text
//! [n, s_0, …, s_{n-1},   k, key_0, value_0, …, key_{k-1}, value_{k-1}, op, value,   …]
//! ```
//!
//! each measurement naming its `k` tags (the name is the tag `name`) by string index, an
//! operation (`0` add: counters, timer totals; `10` max: gauges, maxima) and a value. Keys
//! and values get Atlas's characters (anything outside `-._A-Za-z0-9^~` becomes `_`), as the
//! aggregator cleans them.
//!
//! A payload that is not such an array fails as a whole, saying where; a measurement that
//! is complete but wrong (an index out of the table, an unknown operation, a value that is
//! not a finite number, no name) is refused alone, so the rest is kept.

use serde_json::Value;

/// What a measurement does to its series in the step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Adds to the step's total (a delta since the client's last report).
    Add,
    /// Keeps the step's largest value.
    Max,
}

/// One measurement: its tags (with `name`), operation and value.
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    pub tags: Vec<(String, String)>,
    pub op: Op,
    pub value: f64,
}

/// Why a measurement was refused, with the message for the client.
#[derive(Clone, Debug, PartialEq)]
pub enum Refused {
    /// No tag `name`.
    MissingName(String),
    /// An index out of the string table, an unknown operation, a value that is not a
    /// finite number.
    Invalid(String),
}

impl Refused {
    pub fn message(&self) -> &str {
        match self {
            Refused::MissingName(m) | Refused::Invalid(m) => m,
        }
    }
}

/// Most tags one measurement may name: far more than any client sends, few enough that a
/// hostile count cannot make the decoder reserve much.
const MAX_TAGS: u64 = 1_000;

fn index(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0)
            .map(|f| f as u64)
    })
}

/// Decodes a payload: every measurement, each taken or refused with the reason.
pub fn decode(body: &[u8]) -> Result<Vec<Result<Update, Refused>>, String> {
    let items: Vec<Value> = serde_json::from_slice(body).map_err(|e| {
        format!("invalid update payload: {e}; expected [n, strings…, measurements…]")
    })?;
    let n = items
        .first()
        .and_then(index)
        .ok_or("invalid update payload: element 0 must be the string table's size")?;
    if n > items.len() as u64 - 1 {
        return Err(format!(
            "invalid update payload: a string table of {n} strings, but only {} elements follow",
            items.len() - 1
        ));
    }
    let n = n as usize;
    let mut strings = Vec::with_capacity(n);
    for (i, s) in items[1..=n].iter().enumerate() {
        let s = s.as_str().ok_or_else(|| {
            format!(
                "invalid update payload: element {} (string {i} of the table) is not a string",
                i + 1
            )
        })?;
        strings.push(crate::rules::sanitize(s).into_owned());
    }
    let mut out = Vec::new();
    let mut at = n + 1;
    while at < items.len() {
        let start = at;
        let k = index(&items[at])
            .filter(|k| *k <= MAX_TAGS)
            .ok_or_else(|| {
                format!(
                    "invalid update payload: element {at} must be a measurement's tag count (0 to {MAX_TAGS})"
                )
            })? as usize;
        let end = at + 1 + 2 * k + 2;
        if end > items.len() {
            return Err(format!(
                "invalid update payload: the measurement at element {start} needs {} elements, only {} are left",
                end - start,
                items.len() - start
            ));
        }
        let pairs = &items[at + 1..at + 1 + 2 * k];
        let (op, value) = (&items[end - 2], &items[end - 1]);
        at = end;
        out.push((|| {
            let string = |v: &Value| -> Result<&String, Refused> {
                index(v)
                    .and_then(|i| strings.get(i as usize))
                    .ok_or_else(|| {
                        Refused::Invalid(format!(
                            "measurement at element {start}: string index {v} is not in the table of {n}"
                        ))
                    })
            };
            let mut tags: Vec<(String, String)> = Vec::with_capacity(k);
            for pair in pairs.chunks(2) {
                let (key, value) = (string(&pair[0])?, string(&pair[1])?);
                // A key given twice keeps its last value.
                tags.retain(|(k, _)| k != key);
                tags.push((key.clone(), value.clone()));
            }
            if !tags.iter().any(|(k, _)| k == "name") {
                return Err(Refused::MissingName(format!(
                    "measurement at element {start}: missing key 'name'"
                )));
            }
            let op = match index(op) {
                Some(0) => Op::Add,
                Some(10) => Op::Max,
                _ => {
                    return Err(Refused::Invalid(format!(
                        "measurement at element {start}: unknown operation {op}, expected add (0) or max (10)"
                    )));
                }
            };
            let value = value.as_f64().filter(|v| v.is_finite()).ok_or_else(|| {
                Refused::Invalid(format!(
                    "measurement at element {start}: value {value} is not a finite number"
                ))
            })?;
            Ok(Update { tags, op, value })
        })());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The payload nflx-spectator 1.0.0 sent for a counter, a gauge and a timer's count
    /// (captured), with the common tag nf.app=demo.
    const CAPTURED: &str = r#"[14,"200","count","demo","demo.latency","demo.queue","demo.requests","gauge","max","name","nf.app","statistic","status","totalOfSquares","totalTime",
        4,9,2,11,0,10,1,8,5,0,1,   3,9,2,10,6,8,4,10,42,   3,9,2,10,1,8,3,0,1]"#;

    #[test]
    fn a_captured_payload_decodes() {
        let got: Vec<Update> = decode(CAPTURED.as_bytes())
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[0].tags,
            [
                ("nf.app".to_string(), "demo".to_string()),
                ("status".into(), "200".into()),
                ("statistic".into(), "count".into()),
                ("name".into(), "demo.requests".into())
            ]
        );
        assert_eq!((got[0].op, got[0].value), (Op::Add, 1.0));
        assert_eq!((got[1].op, got[1].value), (Op::Max, 42.0));
        assert!(got[1].tags.contains(&("statistic".into(), "gauge".into())));
        assert!(
            got[2]
                .tags
                .contains(&("name".into(), "demo.latency".into()))
        );
    }

    #[test]
    fn a_wrong_measurement_is_refused_alone() {
        let body = r#"[3,"name","a","b x",
            1,0,1,0,1,
            1,0,7,0,1,
            1,1,2,0,1,
            1,0,2,5,1,
            1,0,1,10,"NaN",
            1,0,2,10,2.5]"#;
        let got = decode(body.as_bytes()).unwrap();
        assert_eq!(got.len(), 6);
        assert_eq!(got[0].as_ref().unwrap().value, 1.0);
        let refused = |i: usize| got[i].as_ref().unwrap_err().message().to_string();
        assert!(refused(1).contains("string index 7 is not in the table of 3"));
        assert!(
            matches!(got[2], Err(Refused::MissingName(_))),
            "{}",
            refused(2)
        );
        assert!(refused(3).contains("unknown operation 5"));
        assert!(refused(4).contains("not a finite number"));
        let last = got[5].as_ref().unwrap();
        assert_eq!(last.tags, [("name".to_string(), "b_x".to_string())]);
        assert_eq!((last.op, last.value), (Op::Max, 2.5));
    }

    #[test]
    fn a_broken_payload_fails_as_a_whole_saying_where() {
        for (body, says) in [
            ("{}", "expected [n, strings"),
            ("[]", "element 0"),
            ("[5,\"a\"]", "only 1 elements follow"),
            ("[1,2]", "element 1 (string 0 of the table) is not a string"),
            ("[1,\"name\",1,0]", "only 2 are left"),
            (
                "[1,\"name\",-1,0,0,0,1]",
                "element 2 must be a measurement's tag count",
            ),
            ("[1,\"name\",1e9,0,0]", "element 2 must be"),
        ] {
            let err = decode(body.as_bytes()).unwrap_err();
            assert!(err.contains(says), "{body}: {err}");
        }
        assert_eq!(decode(b"[0]").unwrap(), []);
    }
}
