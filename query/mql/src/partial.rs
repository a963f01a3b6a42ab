//! Parsing only what a predicate reads: an event's JSON becomes a [`Value`] holding just the
//! top-level fields the predicate's paths start with (each parsed whole by serde_json);
//! every other field is skimmed over (checked, never built). The same
//! [`Predicate::matches`] then runs on it, with the same result as on the whole event, since
//! a path only ever looks under its first key. This is what lets an agent turn away the
//! events nobody asked for (most of them) at a fraction of the cost of parsing them; an
//! event that matches can be parsed whole afterwards, when its other fields are needed.
//!
//! The skim is stricter than serde_json, never laxer: whatever it is unsure of (deep
//! nesting, an odd number, an escape it does not know) falls back to serde_json's whole
//! parse, so an input is accepted exactly when `serde_json::from_slice::<Value>` accepts it,
//! and errors are serde_json's.

use serde_json::{Map, Value};

use crate::predicate::{Path, Predicate, Segment};

/// Nesting the skim follows before it leaves the input to serde_json (whose limit is 128).
const MAX_SKIM_DEPTH: usize = 100;

/// The top-level fields to keep, or the whole event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fields {
    /// Sorted, deduplicated; `None`: parse everything (a path that does not start with a
    /// key, such as `e[0]` or `e[*]`).
    keys: Option<Vec<String>>,
}

impl Fields {
    /// The fields `paths` start with.
    pub fn of_paths<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Fields {
        let mut keys = Vec::new();
        for p in paths {
            match p.0.first() {
                Some(Segment::Key(k)) => keys.push(k.clone()),
                _ => return Fields::all(),
            }
        }
        keys.sort();
        keys.dedup();
        Fields { keys: Some(keys) }
    }

    /// The fields a predicate reads (for several predicates, chain their paths into
    /// [`Fields::of_paths`]).
    pub fn of_predicate(p: &Predicate) -> Fields {
        let mut paths = Vec::new();
        p.paths(&mut paths);
        Fields::of_paths(&paths)
    }

    /// Every field.
    pub fn all() -> Fields {
        Fields { keys: None }
    }

    /// The kept field names (`None`: all).
    pub fn keys(&self) -> Option<&[String]> {
        self.keys.as_deref()
    }

    /// Parses one JSON document, keeping only these fields of a top-level object. Anything
    /// but an object is `null` (no key path reads into it), unless every field is wanted.
    /// Malformed JSON is serde_json's error, as with a whole parse (the skipped fields are
    /// checked too).
    pub fn parse(&self, json: &[u8]) -> serde_json::Result<Value> {
        let Some(keys) = &self.keys else {
            return serde_json::from_slice(json);
        };
        match skim(json, keys) {
            Some(v) => Ok(v),
            None => serde_json::from_slice::<Value>(json).map(|whole| keep(whole, keys)),
        }
    }

    /// Like [`Fields::parse`], into `out`, reusing its allocations: an agent reads event
    /// after event of one stream, whose kept fields are mostly the same keys with values of
    /// the same kinds, so the map's keys and strings are rewritten in place instead of
    /// allocated and freed per event. `out` ends exactly as `parse` would return it.
    pub fn parse_into(&self, json: &[u8], out: &mut Value) -> serde_json::Result<()> {
        let Some(keys) = &self.keys else {
            *out = serde_json::from_slice(json)?;
            return Ok(());
        };
        if keys.len() > 64 {
            *out = self.parse(json)?;
            return Ok(());
        }
        if !out.is_object() {
            *out = Value::Object(Map::new());
        }
        let Value::Object(map) = out else {
            return Ok(());
        };
        match skim_into(json, keys, map) {
            Some(true) => Ok(()),
            Some(false) => {
                *out = Value::Null;
                Ok(())
            }
            None => {
                *out = serde_json::from_slice::<Value>(json).map(|whole| keep(whole, keys))?;
                Ok(())
            }
        }
    }
}

/// The skim into a map: `Some(true)` an object (the map holds its kept fields and nothing
/// else), `Some(false)` valid JSON but not an object, `None` not sure. A map that is not
/// empty (an earlier event's) is rewritten in place; that needs at most 64 keys.
fn skim_into(json: &[u8], keys: &[String], map: &mut Map<String, Value>) -> Option<bool> {
    let mut s = Scan { b: json, i: 0 };
    s.ws();
    if s.peek()? != b'{' {
        s.value(0)?;
        s.ws();
        return (s.i == json.len()).then_some(false);
    }
    s.i += 1;
    let mut seen: u64 = 0;
    s.ws();
    if s.peek()? == b'}' {
        s.i += 1;
    } else {
        loop {
            s.ws();
            let key_start = s.i;
            let escaped = s.string()?;
            let key_end = s.i;
            s.ws();
            s.eat(b':')?;
            s.ws();
            let value_start = s.i;
            s.value(1)?;
            let value = &json[value_start..s.i];
            let at = if escaped {
                let k: String = serde_json::from_slice(&json[key_start..key_end]).ok()?;
                keys.iter().position(|w| *w == k)
            } else {
                let raw_key = &json[key_start + 1..key_end - 1];
                keys.iter().position(|w| w.as_bytes() == raw_key)
            };
            if let Some(at) = at {
                if at < 64 {
                    seen |= 1 << at;
                }
                match map.get_mut(keys[at].as_str()) {
                    Some(slot) => assign(slot, value)?,
                    None => {
                        map.insert(keys[at].clone(), build(value)?);
                    }
                }
            }
            s.ws();
            match s.next()? {
                b',' => continue,
                b'}' => break,
                _ => return None,
            }
        }
    }
    s.ws();
    if s.i != json.len() {
        return None;
    }
    // Fields of the previous event that this one lacks (or anything else left in `out`).
    if keys.len() <= 64 && map.len() != seen.count_ones() as usize {
        map.retain(|k, _| {
            keys.iter()
                .position(|w| w == k)
                .is_some_and(|at| seen & (1 << at) != 0)
        });
    }
    Some(true)
}

/// A kept value written over the previous event's: a plain string reuses its buffer.
fn assign(slot: &mut Value, value: &[u8]) -> Option<()> {
    match (slot, value.first()?) {
        (Value::String(old), b'"') if !value.contains(&b'\\') => {
            let body = value.get(1..value.len() - 1)?;
            let body = std::str::from_utf8(body).ok()?;
            old.clear();
            old.push_str(body);
        }
        (slot, _) => *slot = build(value)?,
    }
    Some(())
}

/// The kept fields of a whole parse (the fallback).
fn keep(whole: Value, keys: &[String]) -> Value {
    match whole {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(k, _)| keys.iter().any(|w| w == k))
                .collect(),
        ),
        _ => Value::Null,
    }
}

/// The skim into a fresh value; `None`: not sure, ask serde_json.
fn skim(json: &[u8], keys: &[String]) -> Option<Value> {
    let mut map = Map::new();
    Some(if skim_into(json, keys, &mut map)? {
        Value::Object(map)
    } else {
        Value::Null
    })
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bits of the bytes of `x` (read little-endian) that are a quote, a backslash or
/// below 0x20. Only the lowest flagged byte is sure to be one (a borrow may flag bytes
/// above it), which is all the scan needs.
fn specials(x: u64) -> u64 {
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    zero(x ^ (ONES * u64::from(b'"')))
        | zero(x ^ (ONES * u64::from(b'\\')))
        | (x.wrapping_sub(ONES * 0x20) & !x & HIGHS)
}

/// A kept value, already skimmed: the common scalars directly, the rest by serde_json.
fn build(value: &[u8]) -> Option<Value> {
    match value.first()? {
        b'"' if !value.contains(&b'\\') => {
            let body = value.get(1..value.len() - 1)?;
            Some(Value::String(std::str::from_utf8(body).ok()?.to_owned()))
        }
        // A plain non-negative integer (serde_json reads `-0` as a double).
        b'0'..=b'9' if value.len() <= 18 && value.iter().all(u8::is_ascii_digit) => Some(
            Value::from(std::str::from_utf8(value).ok()?.parse::<u64>().ok()?),
        ),
        b't' => Some(Value::Bool(true)),
        b'f' => Some(Value::Bool(false)),
        b'n' => Some(Value::Null),
        _ => serde_json::from_slice(value).ok(),
    }
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.i += 1;
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i.checked_add(word.len())?;
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// One value at nesting `depth`.
    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'{' | b'[' if depth >= MAX_SKIM_DEPTH => None,
            b'{' => {
                self.i += 1;
                self.ws();
                if self.peek()? == b'}' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.ws();
                    self.string()?;
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                    self.value(depth + 1)?;
                    self.ws();
                    match self.next()? {
                        b',' => {}
                        b'}' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b'[' => {
                self.i += 1;
                self.ws();
                if self.peek()? == b']' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.ws();
                    self.value(depth + 1)?;
                    self.ws();
                    match self.next()? {
                        b',' => {}
                        b']' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b'"' => self.string().map(|_| ()),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// A string, checked as serde_json checks it (no control characters, valid UTF-8, known
    /// escapes; `\u` escapes leave the skim). Whether it had escapes.
    fn string(&mut self) -> Option<bool> {
        self.eat(b'"')?;
        let start = self.i;
        let mut escaped = false;
        loop {
            self.i = self.next_special()?;
            match self.b[self.i] {
                b'"' => {
                    self.i += 1;
                    break;
                }
                b'\\' => {
                    escaped = true;
                    match self.b.get(self.i + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                        // `\u`, surrogate pairs and their errors: serde_json's business.
                        _ => return None,
                    }
                }
                _ => return None,
            }
        }
        let body = &self.b[start..self.i - 1];
        if !body.is_ascii() {
            std::str::from_utf8(body).ok()?;
        }
        Some(escaped)
    }

    /// Where the next quote, backslash or control character is: eight bytes at a time.
    fn next_special(&self) -> Option<usize> {
        let mut i = self.i;
        while let Some(chunk) = self.b.get(i..i + 8) {
            let m = specials(u64::from_le_bytes(<[u8; 8]>::try_from(chunk).ok()?));
            if m != 0 {
                return Some(i + (m.trailing_zeros() / 8) as usize);
            }
            i += 8;
        }
        let tail = self.b.get(i..)?;
        let at = tail
            .iter()
            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
        Some(i + at)
    }

    /// A number in JSON's grammar that serde_json reads as a finite number.
    fn number(&mut self) -> Option<()> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let digits = |s: &mut Self| {
            let from = s.i;
            while matches!(s.peek(), Some(b'0'..=b'9')) {
                s.i += 1;
            }
            s.i - from
        };
        let int_start = self.i;
        let int = digits(self);
        if int == 0 || (int > 1 && self.b[int_start] == b'0') {
            return None;
        }
        let mut plain = true;
        if self.peek() == Some(b'.') {
            self.i += 1;
            if digits(self) == 0 {
                return None;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            plain = false;
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if digits(self) == 0 {
                return None;
            }
        }
        // A long or exponent number may be out of a double's range: serde_json refuses it.
        if !plain || self.i - start > 300 {
            let text = std::str::from_utf8(&self.b[start..self.i]).ok()?;
            if !text.parse::<f64>().ok()?.is_finite() {
                return None;
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_condition;
    use serde_json::json;

    #[test]
    fn parse_into_reuses_and_ends_as_parse() {
        let fields = Fields::of_paths(&[Path::key("a"), Path::key("b"), Path::key("c")]);
        let mut out = Value::Null;
        let inputs: [&[u8]; 9] = [
            br#"{"a": "x", "b": 1, "z": [1, {"q": 2}]}"#,
            br#"{"a": "longer string", "c": {"d": [true]}}"#,
            br#"{"b": "now a string", "a": 2.5}"#,
            br#"[1, 2]"#,
            br#"{"a": "\u00e9", "a": "dup", "b": null}"#,
            br#"{}"#,
            br#"{"a": "x", "b": 1e400}"#,
            br#"{"a": "\n", "c": "caf\u00e9"}"#,
            br#"{"a": "x""#,
        ];
        for input in inputs {
            let want = fields.parse(input);
            let got = fields.parse_into(input, &mut out);
            match want {
                Ok(v) => {
                    assert!(got.is_ok(), "{}", String::from_utf8_lossy(input));
                    assert_eq!(out, v, "{}", String::from_utf8_lossy(input));
                }
                Err(_) => {
                    assert!(got.is_err(), "{}", String::from_utf8_lossy(input));
                    out = Value::Null;
                }
            }
        }
    }

    #[test]
    fn keeps_only_the_fields_read_and_matches_the_same() {
        let events = [
            json!({"status": 503, "region": "us-east-1", "path": "/api/x", "body": {"big": [1, 2.5e3, null, true]}, "ua": "a\"b\u{e9}"}),
            json!({"status": 200, "region": "us-east-1", "path": "/api/x"}),
            json!({"region": "eu", "tags": [{"k": "env"}], "status": "500"}),
            json!({"tags": {"k": "env"}, "dup": 1}),
            json!([1, 2]),
            json!("x"),
            json!(null),
            json!({}),
        ];
        let conditions = [
            "status >= 500 and region == 'us-east-1' and path ==~ /\\/api\\/.*/",
            "e['tags'][*]['k'] == 'env' or e['tags']['k'] == 'env'",
            "missing == null",
            "not (status != null)",
            "1 == 1",
            "e[0] == 1",
        ];
        for c in conditions {
            let p = parse_condition(c).unwrap();
            let fields = Fields::of_predicate(&p);
            for e in &events {
                let bytes = serde_json::to_vec(e).unwrap();
                let partial = fields.parse(&bytes).unwrap();
                assert_eq!(p.matches(&partial), p.matches(e), "{c} on {e}");
            }
        }
        let p = parse_condition("status >= 500 and e['a']['b'] == 1").unwrap();
        let f = Fields::of_predicate(&p);
        assert_eq!(f.keys(), Some(&["a".to_string(), "status".to_string()][..]));
        let got = f
            .parse(br#"{"x": {"y": [1, "\u00e9"]}, "a": {"b": 1, "c": 2}, "st\u0061tus": 1, "z\"": 0, "a": {"b": 2}}"#)
            .unwrap();
        assert_eq!(
            got,
            json!({"a": {"b": 2}, "status": 1}),
            "duplicates: the last wins"
        );
        assert_eq!(
            Fields::of_predicate(&parse_condition("e[*] == 1").unwrap()),
            Fields::all()
        );
    }

    /// Accepts exactly what serde_json accepts, and keeps what it would keep.
    fn agrees(f: &Fields, input: &[u8]) {
        let whole = serde_json::from_slice::<Value>(input);
        let partial = f.parse(input);
        // Into a value left by an earlier event: the same outcome.
        let mut reused = json!({"a": "earlier", "zz": 1});
        match (f.parse_into(input, &mut reused), &partial) {
            (Ok(()), Ok(p)) => assert_eq!(&reused, p, "{}", String::from_utf8_lossy(input)),
            (Err(_), Err(_)) => {}
            (got, _) => panic!(
                "{}: parse_into {got:?}, parse {partial:?}",
                String::from_utf8_lossy(input)
            ),
        }
        match (&whole, &partial) {
            (Ok(w), Ok(p)) => assert_eq!(
                &keep(w.clone(), f.keys().unwrap()),
                p,
                "{}",
                String::from_utf8_lossy(input)
            ),
            (Err(_), Err(_)) => {}
            _ => panic!(
                "{}: whole {whole:?}, partial {partial:?}",
                String::from_utf8_lossy(input)
            ),
        }
    }

    #[test]
    fn the_word_scan_finds_the_first_special_byte() {
        for i in 0..8 {
            for special in [b'"', b'\\', 0x00, 0x1f] {
                let mut bytes = *b"abcdefgh";
                bytes[i] = special;
                // Everything after the special byte may be anything.
                for after in i + 1..8 {
                    bytes[after] = [b'"', 0x01, 0xff, b'a'][after % 4];
                }
                let m = specials(u64::from_le_bytes(bytes));
                assert_eq!(m.trailing_zeros() / 8, i as u32, "{bytes:?}");
            }
        }
        for plain in [
            *b"abcdefgh",
            [0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0xff],
        ] {
            assert_eq!(specials(u64::from_le_bytes(plain)), 0, "{plain:?}");
        }
    }

    #[test]
    fn accepts_exactly_what_serde_json_accepts() {
        let f = Fields::of_paths(&[Path::key("a")]);
        for input in [
            &b"{\"a\": 1, \"b\": [1,}"[..],
            b"{\"a\": 1} x",
            b"{\"b\": \"\\q\"}",
            b"",
            b"{",
            b" {\"b\": {\"a\": 1}} ",
            b"{\"b\": 01}",
            b"{\"b\": -}",
            b"{\"b\": 1.}",
            b"{\"b\": 1e}",
            b"{\"b\": 1e400}",
            b"{\"b\": -1e-400}",
            b"{\"b\": \"\\ud800\"}",
            b"{\"b\": \"\\ud83d\\ude00\"}",
            b"{\"b\": \"\xff\"}",
            b"{\"b\": \"\x01\"}",
            b"{\"b\": tru}",
            b"{\"b\": [] , \"a\" : [ ] }",
            b"{\"a\": 1,}",
            b"{,}",
            b"[1, 2]",
            b"\"x\"",
            b"1",
            b"nul",
            b"{\"a\" 1}",
            b"{\"a\": \"x\" \"b\": 1}",
        ] {
            agrees(&f, input);
        }
        let deep = format!(
            "{{\"b\": {}1{}, \"a\": 2}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        agrees(&f, deep.as_bytes());
        let deep = format!(
            "{{\"b\": {}1{}, \"a\": 2}}",
            "[".repeat(120),
            "]".repeat(120)
        );
        agrees(&f, deep.as_bytes());
        // Mutations of a realistic event.
        let base =
            br#"{"a": {"x": [1, -2.5, "s\n", null]}, "b": "caf\u00e9", "c": true, "d": 12e-3}"#;
        let mut rng = 0x1234_5678_9abc_def1_u64;
        for _ in 0..20_000 {
            let mut input = base.to_vec();
            for _ in 0..1 + rng % 3 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let at = (rng >> 8) as usize % (input.len() + 1);
                match rng % 3 {
                    0 if at < input.len() => {
                        input.remove(at);
                    }
                    1 => {
                        let pool = b"{}[]\",:-.e0\\u tfn\x00\xc3";
                        input.insert(at, pool[(rng >> 32) as usize % pool.len()]);
                    }
                    _ if at < input.len() => input[at] = (rng >> 40) as u8,
                    _ => {}
                }
            }
            agrees(&f, &input);
        }
    }
}
