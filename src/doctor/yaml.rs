//! A cluster configuration read as `pcluster` 3 reads it: `pcluster.utils.yaml_load` is PyYAML's
//! safe loader with a mapping constructor of its own, which refuses duplicate keys and knows no
//! YAML merge keys (`<<`), on a stream that must hold one document. Plain scalars resolve as
//! PyYAML's YAML 1.1 resolver does (`yes`, `on` are booleans; `1` an integer; `~` null), and
//! booleans are then judged as pcluster's marshmallow schema judges them (its truthy and falsy
//! sets). Every node keeps the line and column (1-based, as PyYAML prints a mark) where it
//! starts, so a problem points at the offending character.
//!
//! yaml-rust2's event parser supplies the events and their marks (it is maintained, and marks
//! every event); the tree, the duplicate and merge checks and the resolution are ours, written
//! to match PyYAML.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A problem with its place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct YamlError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// One node of the document.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub line: usize,
    pub column: usize,
    /// An explicit tag (`!Ref`, `!!str`), as written.
    pub tag: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar and whether it was plain (unquoted, not a block scalar): only plain scalars
    /// resolve to null, booleans and numbers.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// What PyYAML makes of a scalar.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

fn is_null(s: &str) -> bool {
    matches!(s, "" | "~" | "null" | "Null" | "NULL")
}

fn yaml11_bool(s: &str) -> Option<bool> {
    match s {
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => Some(true),
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

/// PyYAML's int: decimal, 0b, 0x, 0-octal, with `_` separators (sexagesimal left out).
fn yaml11_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if body.is_empty() || body.starts_with('_') {
        return None;
    }
    let clean: String = body.chars().filter(|&c| c != '_').collect();
    let v = if let Some(b) = clean.strip_prefix("0b") {
        i64::from_str_radix(b, 2).ok()?
    } else if let Some(x) = clean.strip_prefix("0x") {
        i64::from_str_radix(x, 16).ok()?
    } else if clean.len() > 1 && clean.starts_with('0') {
        i64::from_str_radix(&clean[1..], 8).ok()?
    } else if clean.chars().all(|c| c.is_ascii_digit()) {
        clean.parse().ok()?
    } else {
        return None;
    };
    Some(if neg { -v } else { v })
}

/// PyYAML's float: digits with a `.`, an optional exponent with a sign, `.inf`, `.nan`.
fn yaml11_float(s: &str) -> Option<f64> {
    let body = s.trim_start_matches(['-', '+']);
    match body {
        ".inf" | ".Inf" | ".INF" => return Some(f64::INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        _ => {}
    }
    let (mantissa, exp) = match body.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e)),
        None => (body, None),
    };
    let mantissa_ok = mantissa.contains('.')
        && mantissa
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '_')
        && mantissa
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == '.');
    let exp_ok = exp.is_none_or(|e| {
        e.starts_with(['-', '+']) && e.len() > 1 && e[1..].chars().all(|c| c.is_ascii_digit())
    });
    if !mantissa_ok || !exp_ok {
        return None;
    }
    s.replace('_', "").parse().ok()
}

impl Node {
    /// The scalar as PyYAML constructs it; None for a sequence or a mapping.
    pub fn resolved(&self) -> Option<Resolved> {
        let Value::Scalar { text, plain } = &self.value else {
            return None;
        };
        if let Some(tag) = &self.tag
            && tag == "tag:yaml.org,2002:str"
        {
            return Some(Resolved::Str(text.clone()));
        }
        if !plain {
            return Some(Resolved::Str(text.clone()));
        }
        Some(if is_null(text) {
            Resolved::Null
        } else if let Some(b) = yaml11_bool(text) {
            Resolved::Bool(b)
        } else if let Some(i) = yaml11_int(text) {
            Resolved::Int(i)
        } else if let Some(f) = yaml11_float(text) {
            Resolved::Float(f)
        } else {
            Resolved::Str(text.clone())
        })
    }

    /// The value of `key` in this mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        let Value::Map(pairs) = &self.value else {
            return None;
        };
        pairs
            .iter()
            .find(|(k, _)| k.resolved() == Some(Resolved::Str(key.into())))
            .map(|(_, v)| v)
    }

    /// What the node is, in words: "a string", "a list", "a mapping", "null", ...
    pub fn kind(&self) -> &'static str {
        match (&self.value, self.resolved()) {
            (Value::Seq(_), _) => "a list",
            (Value::Map(_), _) => "a mapping",
            (_, Some(Resolved::Null)) => "empty (null)",
            (_, Some(Resolved::Bool(_))) => "a boolean",
            (_, Some(Resolved::Int(_))) => "a number",
            (_, Some(Resolved::Float(_))) => "a number",
            _ => "a string",
        }
    }

    /// The string a string field holds; None when the node is something else.
    pub fn as_str(&self) -> Option<&str> {
        match (&self.value, self.resolved()) {
            (Value::Scalar { text, .. }, Some(Resolved::Str(_))) => Some(text),
            _ => None,
        }
    }

    /// marshmallow's `fields.Boolean` over what PyYAML constructed: booleans as they are, and
    /// the strings and numbers of its truthy and falsy sets; None when it would refuse it.
    pub fn as_schema_bool(&self) -> Option<bool> {
        match self.resolved()? {
            Resolved::Bool(b) => Some(b),
            Resolved::Int(1) => Some(true),
            Resolved::Int(0) => Some(false),
            Resolved::Float(1.0) => Some(true),
            Resolved::Float(0.0) => Some(false),
            Resolved::Str(s) => match s.as_str() {
                "t" | "T" | "true" | "True" | "TRUE" | "on" | "On" | "ON" | "y" | "Y" | "yes"
                | "Yes" | "YES" | "1" => Some(true),
                "f" | "F" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" | "n" | "N"
                | "no" | "No" | "NO" | "0" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Builds the tree from the parser's events.
#[derive(Default)]
struct Builder {
    stack: Vec<(Node, Option<Node>)>,
    anchors: Vec<(usize, Node)>,
    anchor_of_open: Vec<usize>,
    documents: Vec<Option<Node>>,
    /// The mark of each document's start, for the second-document error.
    starts: Vec<(usize, usize)>,
    in_document: bool,
}

fn at(mark: Marker) -> (usize, usize) {
    (mark.line(), mark.col() + 1)
}

fn tag_text(t: &yaml_rust2::parser::Tag) -> String {
    if t.handle == "!!" {
        format!("tag:yaml.org,2002:{}", t.suffix)
    } else {
        format!("{}{}", t.handle, t.suffix)
    }
}

impl Builder {
    fn push_value(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => {
                if let Some(slot) = self.documents.last_mut() {
                    *slot = Some(node);
                }
            }
            Some((parent, pending_key)) => match &mut parent.value {
                Value::Seq(items) => items.push(node),
                Value::Map(pairs) => match pending_key.take() {
                    None => *pending_key = Some(node),
                    Some(k) => pairs.push((k, node)),
                },
                Value::Scalar { .. } => {}
            },
        }
    }
}

impl Builder {
    fn open(
        &mut self,
        value: Value,
        anchor: usize,
        tag: Option<yaml_rust2::parser::Tag>,
        line: usize,
        column: usize,
    ) {
        self.stack.push((
            Node {
                value,
                line,
                column,
                tag: tag.as_ref().map(tag_text),
            },
            None,
        ));
        self.anchor_of_open.push(anchor);
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let (line, column) = at(mark);
        match ev {
            Event::DocumentStart => {
                self.in_document = true;
                self.documents.push(None);
                self.starts.push((line, column));
            }
            Event::DocumentEnd => self.in_document = false,
            Event::Scalar(text, style, anchor, tag) => {
                let node = Node {
                    value: Value::Scalar {
                        text,
                        plain: style == TScalarStyle::Plain,
                    },
                    line,
                    column,
                    tag: tag.as_ref().map(tag_text),
                };
                if anchor > 0 {
                    self.anchors.push((anchor, node.clone()));
                }
                self.push_value(node);
            }
            Event::SequenceStart(anchor, tag) => {
                self.open(Value::Seq(Vec::new()), anchor, tag, line, column)
            }
            Event::MappingStart(anchor, tag) => {
                self.open(Value::Map(Vec::new()), anchor, tag, line, column)
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((node, _)) = self.stack.pop() {
                    let anchor = self.anchor_of_open.pop().unwrap_or(0);
                    if anchor > 0 {
                        self.anchors.push((anchor, node.clone()));
                    }
                    self.push_value(node);
                }
            }
            Event::Alias(id) => {
                if let Some((_, node)) = self.anchors.iter().rev().find(|(a, _)| *a == id) {
                    let node = node.clone();
                    self.push_value(node);
                }
            }
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
    }
}

/// The standard tags PyYAML's safe loader constructs.
const SAFE_TAGS: &[&str] = &[
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
    "tag:yaml.org,2002:timestamp",
    "tag:yaml.org,2002:binary",
];

fn error(line: usize, column: usize, message: impl Into<String>) -> YamlError {
    YamlError {
        line,
        column,
        message: message.into(),
    }
}

/// What pcluster's constructor refuses, in the order it meets it: for each pair, the key (a
/// merge key, a tag it has no constructor for, a key that cannot be hashed), then the value's
/// whole subtree, then whether the key came before.
fn construct(node: &Node) -> Result<(), YamlError> {
    if let Some(tag) = &node.tag
        && !SAFE_TAGS.contains(&tag.as_str())
    {
        return Err(error(
            node.line,
            node.column,
            format!("could not determine a constructor for the tag '{tag}'"),
        ));
    }
    match &node.value {
        Value::Scalar { .. } => Ok(()),
        Value::Seq(items) => items.iter().try_for_each(construct),
        Value::Map(pairs) => {
            let mut seen: Vec<Resolved> = Vec::new();
            for (k, v) in pairs {
                if matches!(&k.value, Value::Scalar { text, plain: true } if text == "<<") {
                    return Err(error(
                        k.line,
                        k.column,
                        "could not determine a constructor for the tag 'tag:yaml.org,2002:merge' \
                         (pcluster refuses YAML merge keys: write the keys out)",
                    ));
                }
                construct(k)?;
                let Some(key) = k.resolved() else {
                    return Err(error(k.line, k.column, "found unhashable key"));
                };
                construct(v)?;
                if seen.iter().any(|s| same_key(s, &key)) {
                    let shown = match &k.value {
                        Value::Scalar { text, .. } => text.clone(),
                        _ => String::new(),
                    };
                    return Err(error(
                        k.line,
                        k.column,
                        format!("Duplicate key found: {shown}"),
                    ));
                }
                seen.push(key);
            }
            Ok(())
        }
    }
}

/// Python's `key in mapping`: True == 1 and False == 0 as dict keys, 1 == 1.0.
fn same_key(a: &Resolved, b: &Resolved) -> bool {
    let num = |r: &Resolved| match r {
        Resolved::Bool(b) => Some(f64::from(u8::from(*b))),
        Resolved::Int(i) => Some(*i as f64),
        Resolved::Float(f) => Some(*f),
        _ => None,
    };
    match (num(a), num(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// The first tab PyYAML's scanner refuses: it skips only spaces between tokens, so a tab anywhere
/// outside a quoted scalar or a comment ("found character '\t' that cannot start any token").
/// (Block scalars, where a tab may stand in the content, are not told apart: pcluster's
/// configurations do not use them.)
fn first_refused_tab(text: &str) -> Option<(usize, usize)> {
    #[derive(PartialEq)]
    enum State {
        Plain,
        Single,
        Double,
        Comment,
    }
    let mut state = State::Plain;
    let (mut line, mut column) = (1, 0);
    let mut prev = '\n';
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        column += 1;
        match state {
            State::Plain => match c {
                '\t' => return Some((line, column)),
                '#' if prev.is_whitespace() => state = State::Comment,
                '\'' | '"' if prev.is_whitespace() || "[{,:-".contains(prev) => {
                    state = if c == '\'' {
                        State::Single
                    } else {
                        State::Double
                    };
                }
                _ => {}
            },
            State::Single if c == '\'' => {
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    column += 1;
                } else {
                    state = State::Plain;
                }
            }
            State::Double if c == '\\' => {
                // The escaped character, whatever it is, belongs to the scalar.
                let _ = chars.next();
                column += 1;
            }
            State::Double if c == '"' => state = State::Plain,
            State::Comment if c == '\n' => state = State::Plain,
            _ => {}
        }
        if c == '\n' {
            line += 1;
            column = 0;
        }
        prev = c;
    }
    None
}

/// Loads the file as `pcluster` does. `Ok(None)`: an empty stream (no document, or a document
/// that is only null).
pub fn load(text: &str) -> Result<Option<Node>, YamlError> {
    let mut b = Builder::default();
    let mut parser = Parser::new_from_str(text);
    let parsed = parser.load(&mut b, true);
    let tab = first_refused_tab(text);
    // PyYAML stops at the first refused tab, unless something before it already failed.
    if let Some((line, column)) = tab {
        let earlier = parsed
            .as_ref()
            .err()
            .is_some_and(|e| (e.marker().line(), e.marker().col() + 1) < (line, column));
        if !earlier {
            return Err(error(
                line,
                column,
                "found character '\\t' that cannot start any token (YAML indents with spaces)",
            ));
        }
    }
    if let Err(e) = parsed {
        let m = e.marker();
        return Err(error(m.line(), m.col() + 1, e.info().to_string()));
    }
    if b.documents.len() > 1 {
        let (line, column) = b.starts[1];
        return Err(error(
            line,
            column,
            "expected a single document in the stream, but found another document (pcluster \
             reads one: remove the `---` and what follows, or merge them)",
        ));
    }
    let Some(Some(root)) = b.documents.into_iter().next() else {
        return Ok(None);
    };
    construct(&root)?;
    if root.resolved() == Some(Resolved::Null) {
        return Ok(None);
    }
    Ok(Some(root))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_scalars_resolve_as_pyyaml_does_and_booleans_as_marshmallow_judges_them() {
        let doc = load(
            "a: yes\nb: on\nc: Y\nd: 1\ne: \"true\"\nf: tRue\ng: 2\nh: ~\ni: '1'\nj: 0x1A\nk: 1.5\nl: no\n",
        )
        .unwrap()
        .unwrap();
        let b = |k: &str| doc.get(k).unwrap().as_schema_bool();
        assert_eq!(
            [
                b("a"),
                b("b"),
                b("c"),
                b("d"),
                b("e"),
                b("f"),
                b("g"),
                b("l")
            ],
            [
                Some(true),
                Some(true),
                Some(true),
                Some(true),
                Some(true),
                None,
                None,
                Some(false)
            ]
        );
        assert_eq!(doc.get("h").unwrap().resolved(), Some(Resolved::Null));
        assert_eq!(doc.get("i").unwrap().as_str(), Some("1"));
        assert_eq!(doc.get("j").unwrap().resolved(), Some(Resolved::Int(26)));
        assert_eq!(doc.get("k").unwrap().resolved(), Some(Resolved::Float(1.5)));
    }

    #[test]
    fn merge_keys_duplicates_and_second_documents_are_refused_where_they_stand() {
        let e = load("base: &b\n  x: 1\nq:\n  <<: *b\n  y: 2\n").unwrap_err();
        assert_eq!((e.line, e.column), (4, 3), "{e}");
        assert!(e.message.contains("tag:yaml.org,2002:merge"), "{e}");
        let e = load("a: 1\nS:\n  k: 1\n  k: 2\n").unwrap_err();
        assert_eq!(
            (e.line, e.column, e.message.as_str()),
            (4, 3, "Duplicate key found: k")
        );
        let e = load("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 1), "{e}");
        let e = load("a: !Ref x\n").unwrap_err();
        assert!(e.message.contains("'!Ref'"), "{e}");
        let e = load("HeadNode:\n\tInstanceType: t3.micro\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 1), "{e}");
        assert!(load("a: 'tab\tinside'\nb: 1 # and\there\n").is_ok());
        assert_eq!(load("").unwrap(), None);
        assert_eq!(load("# only a comment\n").unwrap(), None);
        // True and 1 are the same key to Python.
        assert!(load("yes: 1\n1: 2\n").is_err());
    }

    #[test]
    fn nodes_know_where_they_start() {
        let doc = load("HeadNode:\n  Networking:\n    SubnetId: subnet-1\n")
            .unwrap()
            .unwrap();
        let s = doc
            .get("HeadNode")
            .unwrap()
            .get("Networking")
            .unwrap()
            .get("SubnetId")
            .unwrap();
        assert_eq!((s.line, s.column, s.as_str()), (3, 15, Some("subnet-1")));
    }
}
