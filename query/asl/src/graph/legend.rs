//! Legend text as Atlas builds it: `$key` / `$(key)` substitution from a line's tags, then
//! the `:decode` and `:s` rewrites in the order they were written.

use regex::{Regex, RegexBuilder};

/// Compiled-size cap for a legend regex.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles the search pattern of `:s`.
pub(crate) fn compile_search(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| e.to_string())
}

/// Replaces `$name` (a run of `[A-Za-z0-9._-]`) and `$(anything)` by `lookup(name)`; a
/// name the lookup does not know is replaced by itself (Atlas's `Strings.substitute`).
pub(crate) fn substitute(fmt: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(fmt.len());
    let mut rest = fmt;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let key = &inner[..end];
                    if key.is_empty() {
                        out.push('$');
                    } else {
                        out.push_str(&lookup(key).unwrap_or_else(|| key.to_string()));
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    // Unterminated: the parenthesis is dropped, the rest copied.
                    out.push('$');
                    out.push_str(inner);
                    rest = "";
                }
            }
            continue;
        }
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            .unwrap_or(after.len());
        let key = &after[..end];
        if key.is_empty() {
            out.push('$');
        } else {
            out.push_str(&lookup(key).unwrap_or_else(|| key.to_string()));
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// `_XY` hex escapes to the character with that code (one byte to one char, as Atlas).
pub(crate) fn hex_decode(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '_' && i + 2 < chars.len() {
            let (a, b) = (chars[i + 1].to_digit(16), chars[i + 2].to_digit(16));
            if let (Some(a), Some(b)) = (a, b) {
                out.push(char::from((a * 16 + b) as u8));
                i += 3;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// Applies the stored `sed` chain (`hex,:decode`, `search,replace,:s`, ...) to a legend.
pub(crate) fn apply_sed(sed: &str, label: &str, tags: &dyn Fn(&str) -> Option<String>) -> String {
    let Ok(tokens) = crate::parser::parse(sed) else {
        return label.to_string();
    };
    let mut stack: Vec<String> = Vec::new();
    let mut out = label.to_string();
    for token in tokens {
        match token {
            crate::parser::Token::Str { value, .. } => stack.push(value),
            crate::parser::Token::Word { name, .. } if name == "decode" => {
                if stack.pop().as_deref() == Some("hex") {
                    out = hex_decode(&out);
                }
                stack.clear();
            }
            crate::parser::Token::Word { name, .. } if name == "s" => {
                if let (Some(replace), Some(search)) = (stack.pop(), stack.pop()) {
                    out = search_replace(&out, &search, &replace, tags);
                }
                stack.clear();
            }
            _ => stack.clear(),
        }
    }
    out
}

/// Every match of `search` replaced by `replace`, in which `$1` / `$name` are the match's
/// groups, or else tag values, or else the name itself.
fn search_replace(
    text: &str,
    search: &str,
    replace: &str,
    tags: &dyn Fn(&str) -> Option<String>,
) -> String {
    let Ok(re) = compile_search(search) else {
        return text.to_string();
    };
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for caps in re.captures_iter(text) {
        let Some(m) = caps.get(0) else { continue };
        out.push_str(&text[last..m.start()]);
        let lookup = |name: &str| -> Option<String> {
            if let Ok(n) = name.parse::<usize>() {
                if n < caps.len() {
                    return Some(
                        caps.get(n)
                            .map_or_else(|| "null".to_string(), |g| g.as_str().to_string()),
                    );
                }
                return tags(name);
            }
            if re.capture_names().flatten().any(|g| g == name) {
                return Some(caps.name(name).map_or("null", |g| g.as_str()).to_string());
            }
            tags(name)
        };
        out.push_str(&substitute(replace, &lookup));
        last = m.end();
        if m.start() == m.end() && m.end() >= text.len() {
            break;
        }
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(k: &str) -> Option<String> {
        match k {
            "a" => Some("1".into()),
            "2" => Some("two".into()),
            "b" => Some("one_21_25_26_3F".into()),
            _ => None,
        }
    }

    fn legend(fmt: &str, sed: &str) -> String {
        let label = substitute(fmt, &tags);
        apply_sed(sed, &label, &tags)
    }

    #[test]
    fn substitution() {
        assert_eq!(substitute("$a and $(a) and $foo", &tags), "1 and 1 and foo");
        assert_eq!(substitute("$() $ x$", &tags), "$ $ x$");
        assert_eq!(substitute("$(abc", &tags), "$abc");
    }

    /// Atlas's StyleExprSuite cases.
    #[test]
    fn sed_chains() {
        assert_eq!(legend("$b", r"^([a-z]+).*$,prefix [$1],:s"), "prefix [one]");
        assert_eq!(
            legend("$b", r"^(?<prefix>[a-z]+).*$,prefix [$prefix],:s"),
            "prefix [one]"
        );
        assert_eq!(
            legend("$b", r"^(?<prefix>[A-Z]*).*$,prefix [$2],:s"),
            "prefix [two]"
        );
        assert_eq!(legend("$b", r"^([a-z]+).*$,$a [$1],:s"), "1 [one]");
        assert_eq!(
            legend("$b", r"(_[A-F0-9]{2}),\u0020$1,:s,hex,:decode"),
            "one ! % & ?"
        );
        assert_eq!(legend("$b", "hex,:decode,%,_25,:s"), "one!_25&?");
        assert_eq!(legend("$b", "hex,:decode"), "one!%&?");
    }
}
