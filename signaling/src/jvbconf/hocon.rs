//! A strict reader for the subset of HOCON that `jvb.conf` files use: objects (`a { }`,
//! `a = { }`, `a : { }`), dotted keys (`a.b.c = 1`), quoted and unquoted strings, numbers,
//! booleans, arrays, `#` and `//` comments, entries separated by newlines or commas, and
//! objects merged when a key repeats. Anything else — `include`, `${substitutions}`, `+=`,
//! triple-quoted strings — is an error naming the line, never silently misread.
//!
//! (The `hocon` crate on crates.io has had no release since 2020 and pulls in a large
//! dependency tree; this subset is all jvb.conf needs.)

use std::fmt;

/// A HOCON value. Scalars keep their text; the reader of a key decides its type.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Keys in first-seen order; a repeated key was merged (objects) or replaced (others).
    Object(Vec<(String, Value)>),
    Array(Vec<Value>),
    /// A quoted or unquoted scalar (numbers and booleans too), `null` included.
    Scalar(String),
}

impl Value {
    /// The value at a dotted `path` (keys compared exactly).
    pub fn get(&self, path: &str) -> Option<&Value> {
        let mut v = self;
        for part in path.split('.') {
            match v {
                Value::Object(entries) => v = &entries.iter().find(|(k, _)| k == part)?.1,
                _ => return None,
            }
        }
        Some(v)
    }

    pub fn as_object(&self) -> Option<&[(String, Value)]> {
        match self {
            Value::Object(e) => Some(e),
            _ => None,
        }
    }

    pub fn as_scalar(&self) -> Option<&str> {
        match self {
            Value::Scalar(s) => Some(s),
            _ => None,
        }
    }

    fn merge(&mut self, other: Value) {
        match (self, other) {
            (Value::Object(mine), Value::Object(theirs)) => {
                for (k, v) in theirs {
                    insert(mine, k, v);
                }
            }
            (slot, other) => *slot = other,
        }
    }
}

fn insert(entries: &mut Vec<(String, Value)>, key: String, value: Value) {
    match entries.iter_mut().find(|(k, _)| *k == key) {
        Some((_, existing)) => existing.merge(value),
        None => entries.push((key, value)),
    }
}

/// A syntax error with its 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoconError {
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for HoconError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for HoconError {}

/// Parse a whole document (the root braces are optional, as in HOCON).
pub fn parse(text: &str) -> Result<Value, HoconError> {
    let mut p = Parser {
        s: text.as_bytes(),
        text,
        i: 0,
        depth: 0,
    };
    p.skip_ws_and_comments(true);
    let root = if p.peek() == Some(b'{') {
        p.i += 1;
        let v = p.object_body(Some(b'}'))?;
        p.skip_ws_and_comments(true);
        v
    } else {
        p.object_body(None)?
    };
    if p.i < p.s.len() {
        return Err(p.err("unexpected text after the document"));
    }
    Ok(root)
}

/// Objects and arrays nested deeper than this (braces and dotted keys together) are refused:
/// the parser, merging and dropping are recursive, and a config of a few thousand `{` would
/// overflow the stack (found by the `jvbconf` fuzz target). Real jvb.conf files nest ~8 deep.
pub const MAX_DEPTH: usize = 32;

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
    /// Objects and arrays open around the current position.
    depth: usize,
}

impl Parser<'_> {
    fn err(&self, reason: impl Into<String>) -> HoconError {
        let line = self.s[..self.i.min(self.s.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        HoconError {
            line,
            reason: reason.into(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn starts_with(&self, pat: &str) -> bool {
        self.s[self.i..].starts_with(pat.as_bytes())
    }

    /// Skips spaces, tabs, comments and (when `newlines`) line breaks.
    fn skip_ws_and_comments(&mut self, newlines: bool) {
        while let Some(c) = self.peek() {
            if c == b' ' || c == b'\t' || c == b'\r' || (newlines && c == b'\n') {
                self.i += 1;
            } else if c == b'#' || self.starts_with("//") {
                while let Some(c) = self.peek() {
                    if c == b'\n' {
                        break;
                    }
                    self.i += 1;
                }
            } else if c == 0xEF && self.starts_with("\u{feff}") {
                self.i += 3;
            } else {
                break;
            }
        }
    }

    /// Entries until `close` (or the end of input for the root).
    /// Enter one more level of nesting, or refuse past [`MAX_DEPTH`].
    fn enter(&mut self, levels: usize) -> Result<(), HoconError> {
        if self.depth + levels > MAX_DEPTH {
            return Err(self.err(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        self.depth += levels;
        Ok(())
    }

    fn object_body(&mut self, close: Option<u8>) -> Result<Value, HoconError> {
        self.enter(1)?;
        let r = self.object_entries(close);
        self.depth -= 1;
        r
    }

    fn object_entries(&mut self, close: Option<u8>) -> Result<Value, HoconError> {
        let mut entries = Vec::new();
        loop {
            self.skip_ws_and_comments(true);
            match (self.peek(), close) {
                (None, None) => return Ok(Value::Object(entries)),
                (None, Some(_)) => return Err(self.err("missing '}'")),
                (Some(c), Some(cl)) if c == cl => {
                    self.i += 1;
                    return Ok(Value::Object(entries));
                }
                (Some(b','), _) => {
                    self.i += 1;
                    continue;
                }
                _ => {}
            }
            if self.starts_with("include ") || self.starts_with("include\t") {
                return Err(self.err("`include` is not supported; inline the included file"));
            }
            let path = self.key_path()?;
            // A dotted key nests its value one level per extra segment.
            self.enter(path.len() - 1)?;
            self.depth -= path.len() - 1;
            self.skip_ws_and_comments(false);
            let value = match self.peek() {
                Some(b'{') => {
                    self.i += 1;
                    self.object_body(Some(b'}'))?
                }
                Some(b'=') | Some(b':') => {
                    self.i += 1;
                    self.skip_ws_and_comments(false);
                    self.value()?
                }
                Some(b'+') if self.starts_with("+=") => return Err(self.err("`+=` is not supported")),
                _ => return Err(self.err(format!("expected '=', ':' or '{{' after key {:?}", path.join(".")))),
            };
            // Build the nested object for a dotted path.
            let mut v = value;
            for k in path.iter().skip(1).rev() {
                v = Value::Object(vec![(k.clone(), v)]);
            }
            insert(&mut entries, path[0].clone(), v);
            // After a value: a separator, a comment, or the closing brace.
            self.skip_ws_and_comments(false);
            match self.peek() {
                None | Some(b'\n') | Some(b',') => {}
                Some(c) if Some(c) == close => {}
                Some(_) => return Err(self.err("expected a newline or ',' after the value")),
            }
        }
    }

    /// `a.b."c.d"` → ["a", "b", "c.d"].
    fn key_path(&mut self) -> Result<Vec<String>, HoconError> {
        let mut parts = Vec::new();
        loop {
            let part = if self.peek() == Some(b'"') {
                self.quoted()?
            } else {
                let start = self.i;
                while let Some(c) = self.peek() {
                    if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' {
                        self.i += 1;
                    } else {
                        break;
                    }
                }
                if self.i == start {
                    return Err(self.err("expected a key"));
                }
                self.text[start..self.i].to_owned()
            };
            parts.push(part);
            if self.peek() == Some(b'.') {
                self.i += 1;
            } else {
                return Ok(parts);
            }
        }
    }

    fn value(&mut self) -> Result<Value, HoconError> {
        match self.peek() {
            Some(b'{') => {
                self.i += 1;
                self.object_body(Some(b'}'))
            }
            Some(b'[') => {
                self.i += 1;
                self.enter(1)?;
                let r = self.array_items();
                self.depth -= 1;
                r
            }
            Some(b'"') => {
                if self.starts_with("\"\"\"") {
                    return Err(self.err("triple-quoted strings are not supported"));
                }
                Ok(Value::Scalar(self.quoted()?))
            }
            Some(b'$') => Err(self.err("substitutions (${...}) are not supported")),
            Some(b'\n') | None => Err(self.err("missing value")),
            _ => {
                // Unquoted: up to a newline, ',', '}', ']' or a comment.
                let start = self.i;
                while let Some(c) = self.peek() {
                    if matches!(c, b'\n' | b',' | b'}' | b']' | b'#' | b'{' | b'[' | b'"') || self.starts_with("//") {
                        break;
                    }
                    if c == b'$' {
                        return Err(self.err("substitutions (${...}) are not supported"));
                    }
                    self.i += 1;
                }
                if matches!(self.peek(), Some(b'{') | Some(b'[') | Some(b'"')) {
                    return Err(self.err("value concatenation is not supported"));
                }
                let v = self.text[start..self.i].trim();
                if v.is_empty() {
                    return Err(self.err("missing value"));
                }
                Ok(Value::Scalar(v.to_owned()))
            }
        }
    }

    fn array_items(&mut self) -> Result<Value, HoconError> {
        let mut items = Vec::new();
        loop {
            self.skip_ws_and_comments(true);
            match self.peek() {
                None => return Err(self.err("missing ']'")),
                Some(b']') => {
                    self.i += 1;
                    return Ok(Value::Array(items));
                }
                Some(b',') => self.i += 1,
                _ => items.push(self.value()?),
            }
        }
    }

    fn quoted(&mut self) -> Result<String, HoconError> {
        debug_assert_eq!(self.peek(), Some(b'"'));
        self.i += 1;
        let mut out = String::new();
        loop {
            let rest = &self.text[self.i..];
            let mut chars = rest.chars();
            let Some(c) = chars.next() else {
                return Err(self.err("unterminated string"));
            };
            self.i += c.len_utf8();
            match c {
                '"' => return Ok(out),
                '\n' => {
                    self.i -= 1;
                    return Err(self.err("newline in a quoted string"));
                }
                '\\' => {
                    let Some(e) = self.text[self.i..].chars().next() else {
                        return Err(self.err("unterminated string"));
                    };
                    self.i += e.len_utf8();
                    out.push(match e {
                        '"' => '"',
                        '\\' => '\\',
                        '/' => '/',
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        'b' => '\u{8}',
                        'f' => '\u{c}',
                        'u' => {
                            let hex = self
                                .text
                                .get(self.i..self.i + 4)
                                .ok_or_else(|| self.err("bad \\u escape"))?;
                            let n = u32::from_str_radix(hex, 16).map_err(|_| self.err("bad \\u escape"))?;
                            self.i += 4;
                            char::from_u32(n).ok_or_else(|| self.err("bad \\u escape"))?
                        }
                        other => return Err(self.err(format!("unknown escape \\{other}"))),
                    });
                }
                c => out.push(c),
            }
        }
    }
}

/// HOCON durations: `5 seconds`, `5s`, `100 ms`, `1 minute`, `24 hours`; a bare number is
/// milliseconds.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = (s[..split].trim(), s[split..].trim());
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => n / 1000.0,
        "us" | "micro" | "micros" | "microsecond" | "microseconds" => n / 1e6,
        "ns" | "nano" | "nanos" | "nanosecond" | "nanoseconds" => n / 1e9,
        "s" | "second" | "seconds" => n,
        "m" | "minute" | "minutes" => n * 60.0,
        "h" | "hour" | "hours" => n * 3600.0,
        "d" | "day" | "days" => n * 86400.0,
        _ => return None,
    };
    // `try_from`: a huge number (found by the `jvbconf` fuzz target: `presence-interval =
    // 2333…3 seconds`) overflows `Duration`, which `from_secs_f64` answers with a panic.
    std::time::Duration::try_from_secs_f64(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::Scalar(v.into())
    }

    #[test]
    fn nested_dotted_and_merged() {
        let doc = r#"
# comment
videobridge {
  http-servers.private { host = 0.0.0.0, port: 8081 }   // trailing comment
  apis {
    xmpp-client {
      configs {
        shard-1 {
          hostname = "localhost"
          password = "p#ss // not a comment"
          muc_jids = "a@b"
        }
      }
    }
  }
}
videobridge.http-servers.private.port = 8082
videobridge.list = [1, "two"
  three]
"#;
        let v = parse(doc).unwrap();
        assert_eq!(v.get("videobridge.http-servers.private.host"), Some(&s("0.0.0.0")));
        assert_eq!(
            v.get("videobridge.http-servers.private.port"),
            Some(&s("8082")),
            "later wins"
        );
        assert_eq!(
            v.get("videobridge.apis.xmpp-client.configs.shard-1.password"),
            Some(&s("p#ss // not a comment"))
        );
        assert_eq!(
            v.get("videobridge.list"),
            Some(&Value::Array(vec![s("1"), s("two"), s("three")]))
        );
        assert_eq!(
            v.get("videobridge.apis.xmpp-client.configs.shard-1.muc_jids"),
            Some(&s("a@b"))
        );
    }

    #[test]
    fn root_braces_and_quoted_keys() {
        let v = parse("{ \"a.b\" = 1\n c { d = \"x\\ty\\u0041\" } }").unwrap();
        assert_eq!(v.get("c.d"), Some(&s("x\tyA")));
        assert_eq!(
            v.as_object().unwrap()[0],
            ("a.b".to_owned(), s("1")),
            "a quoted key is one key"
        );
    }

    #[test]
    fn unsupported_and_broken_input_is_an_error_with_a_line() {
        for (doc, line, what) in [
            ("a = 1\ninclude \"x.conf\"\n", 2, "include"),
            ("a = ${b}\n", 1, "substitution"),
            ("a {\n b = ${?X}\n}\n", 2, "substitution"),
            ("a += 1\n", 1, "+="),
            ("a {\n b = 1\n", 3, "missing '}'"),
            ("a = \"open\n", 1, "newline"),
            ("a = [1, 2\n", 2, "missing ']'"),
            ("a\n", 1, "expected"),
            ("a = 1 }\n", 1, "after the value"),
            ("{ a = 1 }\n}\n", 2, "after the document"),
            ("a = \"\"\"x\"\"\"\n", 1, "triple"),
            ("a = \n", 1, "missing value"),
            ("a = \"x\" y\n", 1, "newline or ','"),
        ] {
            let e = parse(doc).unwrap_err();
            assert_eq!(e.line, line, "{doc:?}: {e}");
            assert!(e.reason.contains(what), "{doc:?}: {e}");
        }
    }

    /// Fuzz-found: thousands of nested `{`/`[` or dotted segments overflowed the stack.
    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = |open: &str, close: &str, n: usize| format!("a = {}1{}", open.repeat(n), close.repeat(n));
        for (o, c) in [("{ b = ", " }"), ("[", "]")] {
            let e = parse(&deep(o, c, 5000)).expect_err("too deep");
            assert!(e.reason.contains("nested deeper"), "{e:?}");
            assert!(parse(&deep(o, c, MAX_DEPTH - 2)).is_ok(), "{o}: a normal depth parses");
        }
        let dotted = format!("{} = 1", vec!["k"; 5000].join("."));
        assert!(parse(&dotted).expect_err("too deep").reason.contains("nested deeper"));
        let ok = format!("{} = 1", vec!["k"; MAX_DEPTH - 1].join("."));
        assert_eq!(
            parse(&ok).map(|v| v.get(&vec!["k"; MAX_DEPTH - 1].join(".")).is_some()),
            Ok(true)
        );
    }

    #[test]
    fn durations() {
        use std::time::Duration as D;
        assert_eq!(parse_duration("5 seconds"), Some(D::from_secs(5)));
        assert_eq!(parse_duration("5s"), Some(D::from_secs(5)));
        assert_eq!(parse_duration("1 minute"), Some(D::from_secs(60)));
        assert_eq!(parse_duration("24 hours"), Some(D::from_secs(86400)));
        assert_eq!(parse_duration("250"), Some(D::from_millis(250)));
        assert_eq!(parse_duration("100 ms"), Some(D::from_millis(100)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("5 fortnights"), None);
        // Fuzz-found: beyond what a Duration holds is refused, not a panic.
        assert_eq!(parse_duration(&format!("2{} seconds", "3".repeat(200))), None);
        assert_eq!(parse_duration("1e400 days"), None);
        assert_eq!(parse_duration("-5s"), None);
    }
}
