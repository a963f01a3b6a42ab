//! What the contract carries must satisfy: Atlas's tag rules for a series and the size of
//! one raw event. The server refuses what breaks them; agents check the same rules at their
//! intake, so a service hears "no" from its agent and not, silently, from the server.

/// Largest raw event the server takes (bytes of JSON).
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// Tags other than the `nf.*` and `atlas.*` keys a series may have, `name` among them
/// (Atlas's default).
pub const MAX_USER_TAGS: usize = 20;
/// Keys that start with `atlas.`.
pub const ATLAS_KEYS: [&str; 4] = ["atlas.aggr", "atlas.dstype", "atlas.offset", "atlas.legacy"];
/// Keys that start with `nf.`.
pub const NF_KEYS: [&str; 20] = [
    "nf.account",
    "nf.ami",
    "nf.app",
    "nf.asg",
    "nf.cluster",
    "nf.container",
    "nf.country",
    "nf.country.rollup",
    "nf.job",
    "nf.node",
    "nf.process",
    "nf.region",
    "nf.shard1",
    "nf.shard2",
    "nf.stack",
    "nf.subnet",
    "nf.task",
    "nf.vmtype",
    "nf.vpc",
    "nf.zone",
];
/// Tags a series may have at all: its user tags and every `nf.*` and `atlas.*` key.
pub const MAX_TAGS: usize = MAX_USER_TAGS + NF_KEYS.len() + ATLAS_KEYS.len();
/// The values `atlas.dstype` may take.
pub const DSTYPES: [&str; 4] = ["rate", "counter", "gauge", "sum"];
const KEY_LEN: (usize, usize) = (2, 60);
const NAME_LEN: (usize, usize) = (2, 255);
const VALUE_LEN: (usize, usize) = (1, 120);

/// Which rule a tag set breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagRule {
    MissingName,
    TooManyTags,
    KeyLength,
    ValueLength,
    InvalidCharacters,
    ReservedKey,
    TooManyUserTags,
    InvalidDsType,
}

/// A broken rule and a message that says what and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagError {
    pub rule: TagRule,
    pub message: String,
}

impl std::fmt::Display for TagError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn err(rule: TagRule, message: String) -> TagError {
    TagError { rule, message }
}

/// The characters Atlas allows in keys and values.
pub fn valid_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '^' | '~')
}

/// A tag key or value with every character Atlas does not allow replaced by `_` (what
/// other systems' names and labels become: Prometheus, OTLP, StatsD, scrape targets).
pub fn sanitize(s: &str) -> std::borrow::Cow<'_, str> {
    if s.chars().all(valid_char) {
        std::borrow::Cow::Borrowed(s)
    } else {
        std::borrow::Cow::Owned(
            s.chars()
                .map(|c| if valid_char(c) { c } else { '_' })
                .collect(),
        )
    }
}

/// Keeps long user input short inside error messages.
pub fn clip(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}...")
    }
}

/// Checks a series' whole tag set (each key once) against Atlas's rules, in Atlas's order.
pub fn check_tags(tags: &[(&str, &str)]) -> Result<(), TagError> {
    if !tags.iter().any(|(k, _)| *k == "name") {
        return Err(err(TagRule::MissingName, "missing key 'name'".into()));
    }
    let n = tags.len();
    if n > MAX_TAGS {
        return Err(err(
            TagRule::TooManyTags,
            format!(
                "too many tags: {n} > {MAX_TAGS} (at most {MAX_USER_TAGS} user tags, name \
                 among them, plus the nf.* and atlas.* keys)"
            ),
        ));
    }
    let mut user_tags = 0;
    for &(k, v) in tags {
        let klen = k.chars().count();
        if klen < KEY_LEN.0 || klen > KEY_LEN.1 {
            return Err(err(
                TagRule::KeyLength,
                format!(
                    "key length {klen} out of range [{}, {}]: key '{}'",
                    KEY_LEN.0,
                    KEY_LEN.1,
                    clip(k)
                ),
            ));
        }
        let (lo, hi) = if k == "name" { NAME_LEN } else { VALUE_LEN };
        let vlen = v.chars().count();
        if vlen < lo || vlen > hi {
            return Err(err(
                TagRule::ValueLength,
                format!(
                    "value length {vlen} out of range [{lo}, {hi}] for key '{}'",
                    clip(k)
                ),
            ));
        }
        if let Some(c) = k.chars().find(|&c| !valid_char(c)) {
            return Err(err(
                TagRule::InvalidCharacters,
                format!(
                    "invalid character {c:?} in key '{}' (allowed: -._A-Za-z0-9^~)",
                    clip(k)
                ),
            ));
        }
        if let Some(c) = v.chars().find(|&c| !valid_char(c)) {
            return Err(err(
                TagRule::InvalidCharacters,
                format!(
                    "invalid character {c:?} in value of key '{}': '{}' (allowed: -._A-Za-z0-9^~)",
                    clip(k),
                    clip(v)
                ),
            ));
        }
        if k.starts_with("atlas.") {
            if !ATLAS_KEYS.contains(&k) {
                return Err(err(
                    TagRule::ReservedKey,
                    format!(
                        "reserved key '{}': only {} may start with 'atlas.'",
                        clip(k),
                        ATLAS_KEYS.join(", ")
                    ),
                ));
            }
        } else if k.starts_with("nf.") {
            if !NF_KEYS.contains(&k) {
                return Err(err(
                    TagRule::ReservedKey,
                    format!(
                        "reserved key '{}': not one of the known 'nf.' keys",
                        clip(k)
                    ),
                ));
            }
        } else {
            user_tags += 1;
        }
    }
    if user_tags > MAX_USER_TAGS {
        return Err(err(
            TagRule::TooManyUserTags,
            format!(
                "too many user tags: {user_tags} > {MAX_USER_TAGS} (name counts; keys starting with nf. or atlas. do not)"
            ),
        ));
    }
    if let Some(&(_, ds)) = tags.iter().find(|(k, _)| *k == "atlas.dstype")
        && !DSTYPES.contains(&ds)
    {
        return Err(err(
            TagRule::InvalidDsType,
            format!(
                "invalid atlas.dstype '{}': expected rate, counter, gauge or sum",
                clip(ds)
            ),
        ));
    }
    Ok(())
}

/// Checks one raw event's size.
pub fn check_event_size(bytes: usize) -> Result<(), String> {
    if bytes > MAX_EVENT_BYTES {
        Err(format!(
            "event of {bytes} bytes is over the {MAX_EVENT_BYTES}-byte limit"
        ))
    } else {
        Ok(())
    }
}
