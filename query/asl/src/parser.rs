//! The Stack Language's syntax: comma-separated tokens, `( ... )` lists, nestable `/* */`
//! comments and `\uXXXX` escapes, parsed with nom into tokens that remember their position;
//! and the reverse, escaping a string so it reads back as the same token.

use std::borrow::Cow;
use std::fmt;

use nom::branch::alt;
use nom::bytes::complete::{is_not, tag};
use nom::character::complete::char;
use nom::combinator::{not, recognize};
use nom::multi::many1_count;
use nom::sequence::terminated;
use nom::{IResult, Parser};

use crate::error::{Error, Result};

/// Deepest list nesting accepted. Nesting costs stack when items are printed or dropped, and
/// real expressions nest two or three levels.
pub(crate) const MAX_NESTING: usize = 64;

/// One parsed token. Word tokens inside lists are kept as words so a list can later be run
/// as a program (`:call`, `:each`); everything else becomes a string.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Token {
    Str { value: String, pos: usize },
    Word { name: String, pos: usize },
    List { items: Vec<Token>, pos: usize },
}

/// Parses a whole program into tokens.
pub(crate) fn parse(input: &str) -> Result<Vec<Token>> {
    // Lists are built with an explicit stack rather than recursion, so hostile nesting
    // can only produce an error, never exhaust the thread's stack.
    let mut open: Vec<(Vec<Token>, usize)> = Vec::new();
    let mut current: Vec<Token> = Vec::new();
    for raw in tokenize(input)? {
        match raw.text.as_ref() {
            "(" => {
                if open.len() >= MAX_NESTING {
                    return Err(Error::TooComplex {
                        pos: raw.pos,
                        reason: format!("lists nested more than {MAX_NESTING} deep"),
                    });
                }
                open.push((std::mem::take(&mut current), raw.pos));
            }
            ")" => {
                let Some((outer, pos)) = open.pop() else {
                    return Err(Error::UnmatchedClose { pos: raw.pos });
                };
                let items = std::mem::replace(&mut current, outer);
                current.push(Token::List { items, pos });
            }
            text => {
                let token = match text.strip_prefix(':') {
                    Some(name) => Token::Word {
                        name: name.to_string(),
                        pos: raw.pos,
                    },
                    None => Token::Str {
                        value: unescape(text).into_owned(),
                        pos: raw.pos,
                    },
                };
                current.push(token);
            }
        }
    }
    if let Some((_, pos)) = open.first() {
        return Err(Error::UnmatchedOpen { pos: *pos });
    }
    Ok(current)
}

/// A token's text with comments removed and whitespace trimmed, and where it starts.
struct RawToken<'a> {
    text: Cow<'a, str>,
    pos: usize,
}

/// Text up to the next comma or comment start; a `/` not followed by `*` is plain text.
fn text_piece(i: &str) -> IResult<&str, &str> {
    recognize(many1_count(alt((
        is_not(",/"),
        terminated(tag("/"), not(char('*'))),
    ))))
    .parse(i)
}

/// A comment, nested comments included. Iterative, so depth costs no stack.
fn comment(i: &str) -> IResult<&str, &str> {
    let (mut rest, _) = tag("/*").parse(i)?;
    let mut depth = 1usize;
    while depth > 0 {
        if let Some(r) = rest.strip_prefix("/*") {
            depth += 1;
            rest = r;
        } else if let Some(r) = rest.strip_prefix("*/") {
            depth -= 1;
            rest = r;
        } else {
            let mut chars = rest.chars();
            if chars.next().is_none() {
                return Err(nom::Err::Failure(nom::error::Error::new(
                    i,
                    nom::error::ErrorKind::Eof,
                )));
            }
            rest = chars.as_str();
        }
    }
    Ok((rest, &i[..i.len() - rest.len()]))
}

/// Byte offset of `part`, a slice of `whole`, within `whole`.
fn offset(whole: &str, part: &str) -> usize {
    (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize)
}

fn tokenize(input: &str) -> Result<Vec<RawToken<'_>>> {
    let mut tokens = Vec::new();
    let mut rest = input;
    loop {
        // One token: text pieces and comments up to a comma or the end.
        let mut pieces: Vec<&str> = Vec::new();
        loop {
            match comment(rest) {
                Ok((r, _)) => {
                    rest = r;
                    continue;
                }
                Err(nom::Err::Failure(e)) => {
                    return Err(Error::UnclosedComment {
                        pos: offset(input, e.input),
                    });
                }
                Err(_) => {}
            }
            match text_piece(rest) {
                Ok((r, piece)) => {
                    pieces.push(piece);
                    rest = r;
                }
                Err(_) => break,
            }
        }
        if let Some(token) = join_pieces(input, &pieces) {
            tokens.push(token);
        }
        match rest.strip_prefix(',') {
            Some(r) => rest = r,
            // Only a comma or the end stops a token.
            None => break,
        }
    }
    Ok(tokens)
}

/// Joins the pieces of one token (split only by comments) and trims it; `None` if empty.
fn join_pieces<'a>(input: &'a str, pieces: &[&'a str]) -> Option<RawToken<'a>> {
    let first = pieces.iter().find(|p| !p.trim().is_empty())?;
    let lead = first.len() - first.trim_start().len();
    let pos = offset(input, first) + lead;
    let text = if pieces.len() == 1 {
        Cow::Borrowed(pieces[0].trim())
    } else {
        Cow::Owned(pieces.concat().trim().to_string())
    };
    Some(RawToken { text, pos })
}

/// Replaces `\uXXXX` escapes (UTF-16 surrogate pairs included); any other backslash is
/// literal, as is an escape that does not name a character.
pub(crate) fn unescape(s: &str) -> Cow<'_, str> {
    if !s.contains("\\u") {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("\\u") {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        match decode_escape(rest) {
            Some((c, used)) => {
                out.push(c);
                rest = &rest[used..];
            }
            None => {
                out.push('\\');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

fn hex4(s: &str) -> Option<u32> {
    let digits = s.get(2..6)?;
    if !s.starts_with("\\u") || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

/// Decodes one escape at the start of `s`: the character and the bytes it used.
fn decode_escape(s: &str) -> Option<(char, usize)> {
    let hi = hex4(s)?;
    if (0xD800..0xDC00).contains(&hi) {
        let lo = hex4(s.get(6..)?)?;
        if !(0xDC00..0xE000).contains(&lo) {
            return None;
        }
        let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
        return char::from_u32(c).map(|c| (c, 12));
    }
    char::from_u32(hi).map(|c| (c, 6))
}

/// Writes `s` so that it parses back as one string token equal to `s` (Atlas's escaping:
/// commas, colons and edge whitespace always; a lone paren; comment starts; and a backslash
/// that would otherwise read as an escape).
pub(crate) fn write_escaped(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    match s {
        "(" => return f.write_str("\\u0028"),
        ")" => return f.write_str("\\u0029"),
        _ => {}
    }
    let first = s.find(|c: char| !c.is_whitespace());
    let last = s
        .char_indices()
        .rev()
        .find(|(_, c)| !c.is_whitespace())
        .map(|(i, _)| i);
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let at_edge = match (first, last) {
            (Some(a), Some(b)) => i < a || i > b,
            _ => true,
        };
        let special = match c {
            ',' | ':' => true,
            '\\' => s[i + 1..].starts_with('u'),
            '/' => chars.peek().is_some_and(|&(_, n)| n == '*'),
            c if c.is_whitespace() => at_edge || c != ' ',
            _ => false,
        };
        if special {
            let mut buf = [0u16; 2];
            for unit in c.encode_utf16(&mut buf) {
                write!(f, "\\u{unit:04x}")?;
            }
        } else {
            f.write_char(c)?;
        }
    }
    Ok(())
}

/// `s` escaped, as an owned string.
#[cfg(test)]
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::new();
    let _ = write_escaped(&mut out, s);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders tokens compactly: strings bare, words with `:`, lists in brackets, each
    /// followed by `@pos`.
    fn render(tokens: &[Token]) -> String {
        tokens
            .iter()
            .map(|t| match t {
                Token::Str { value, pos } => format!("{value}@{pos}"),
                Token::Word { name, pos } => format!(":{name}@{pos}"),
                Token::List { items, pos } => format!("[{}]@{pos}", render(items)),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn check(input: &str, expected: &str) {
        let got = match parse(input) {
            Ok(tokens) => render(&tokens),
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(got, expected, "input: {input:?}");
    }

    #[test]
    fn tokens() {
        check("", "");
        check("a", "a@0");
        check(" a , b ", "a@1 b@5");
        check("a,,b", "a@0 b@3");
        check("name,sps,:eq", "name@0 sps@5 :eq@9");
        check("a b, c", "a b@0 c@5");
        check(":", ":@0");
    }

    #[test]
    fn lists() {
        check("(,a,b,)", "[a@2 b@4]@0");
        check("(,)", "[]@0");
        check("a,(,b,(,c,),),d", "a@0 [b@4 [c@8]@6]@2 d@14");
        check("(,:dup,)", "[:dup@2]@0");
        check("(", "error: unmatched opening parenthesis at position 0");
        check(
            "a,(,(,b,)",
            "error: unmatched opening parenthesis at position 2",
        );
        check("a,)", "error: unmatched closing parenthesis at position 2");
        check(
            &"(,".repeat(100),
            "error: expression too complex at position 128: lists nested more than 64 deep",
        );
    }

    #[test]
    fn comments() {
        check("a,/* b, c */d", "a@0 d@12");
        check("a/* x */b", "ab@0");
        check("/* a /* nested */ still */ b", "b@27");
        check(
            "a,/* open",
            "error: unclosed comment starting at position 2",
        );
        check("a/b,c*/d", "a/b@0 c*/d@4");
        check("/*/", "error: unclosed comment starting at position 0");
    }

    #[test]
    fn escapes() {
        check("a\\u002cb", "a,b@0");
        check("\\u0028", "(@0");
        check("\\u003adup", ":dup@0");
        check("\\uZZ", "\\uZZ@0");
        check("\\ud83d\\ude00", "\u{1F600}@0");
        check("\\ud83d", "\\ud83d@0");
        check("x\\u00", "x\\u00@0");
    }

    #[test]
    fn escape_round_trips() {
        for s in [
            "a",
            "a,b",
            ":dup",
            "(",
            ")",
            " a",
            "a ",
            "a b",
            "a\tb",
            "/*",
            "a/*b*/",
            "\\u0041",
            "\\",
            "x\\",
            "é",
            "\u{1F600}",
            "((",
            "a:b",
            ".*",
            "",
        ] {
            let printed = escape(s);
            let back: Vec<Token> = parse(&printed).unwrap();
            let want = if s.is_empty() {
                vec![]
            } else {
                vec![Token::Str {
                    value: s.to_string(),
                    pos: 0,
                }]
            };
            assert_eq!(back, want, "{s:?} printed as {printed:?}");
        }
        assert_eq!(escape("app00[0-3].*"), "app00[0-3].*");
        assert_eq!(escape("a b"), "a b");
    }
}
