//! Line and column of objects and of their fields in a source text, found on demand.
//!
//! Reading manifests ([`super::for_each_object`]) keeps only the document (and `List` item) of each
//! object, which is all that most commands need. Where a report points at a field
//! (`spec.ingress[1].from[0].podSelector`), [`field_positions`] walks the source once more, as YAML
//! events (the parser serde-saphyr is built on, so documents are counted alike) or as JSON tokens,
//! and records the position of every key and sequence item inside the objects asked for.
//!
//! A field's position is that of its key (`podSelector:`, or the `"podSelector"` string in JSON);
//! an item's is that of the item's first character after `- ` (or in the JSON array); an object's is
//! that of its mapping (the first key of a block mapping, the `{` of a flow mapping or JSON object).
//! Lines and columns are 1-based and count characters (Unicode scalar values), not bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use granit_parser::{Event, Parser, ScalarStyle, Tag};

use super::{looks_like_json, Source};

/// A 1-based line and column, the column counted in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1, in characters.
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// An object of a source, as [`super::Location`] names it: its 1-based document and its index among
/// a `List`'s items.
pub type ObjectSlot = (usize, Option<usize>);

/// The positions of the fields of some objects of one source.
#[derive(Debug, Clone, Default)]
pub struct FieldPositions {
    /// By document: the position of each path recorded in it (`""` for the document's root,
    /// `items[3].spec.podSelector` inside a `List`).
    documents: BTreeMap<usize, BTreeMap<String, Position>>,
}

impl FieldPositions {
    /// The position of `field` (a path such as `spec.ingress[0].from[1]`, or `""` for the object
    /// itself) of the object at `slot`, or of its nearest ancestor that the source writes (a field
    /// left out, such as a defaulted `metadata.namespace`, points at its parent). Returns the
    /// position and the path found, relative to the object.
    pub fn find(&self, slot: ObjectSlot, field: &str) -> Option<(Position, String)> {
        let paths = self.documents.get(&slot.0)?;
        let prefix = match slot.1 {
            Some(i) => format!("items[{i}]"),
            None => String::new(),
        };
        let mut relative = field.to_string();
        loop {
            let full = join(&prefix, &relative);
            if let Some(position) = paths.get(&full) {
                return Some((*position, relative));
            }
            if relative.is_empty() {
                return None;
            }
            relative = parent(&relative).to_string();
        }
    }

    /// Whether the source writes `field` of the object at `slot` (not only an ancestor of it).
    pub fn contains(&self, slot: ObjectSlot, field: &str) -> bool {
        self.find(slot, field)
            .is_some_and(|(_, found)| found == field)
    }
}

/// `a.b[1].c` → `a.b[1]` → `a.b` → `a` → `""`.
fn parent(path: &str) -> &str {
    match path.rfind(['.', '[']) {
        Some(i) => &path[..i],
        None => "",
    }
}

fn join(path: &str, key: &str) -> String {
    match (path.is_empty(), key.is_empty()) {
        (true, _) => key.to_string(),
        (false, true) => path.to_string(),
        (false, false) => format!("{path}.{key}"),
    }
}

/// Which paths to record: by document, the items asked for (`None` for the whole document).
struct Wanted {
    documents: BTreeMap<usize, BTreeSet<Option<usize>>>,
}

impl Wanted {
    /// Whether `path` of `document` belongs to an object asked for.
    fn records(&self, document: usize, path: &str) -> bool {
        let Some(items) = self.documents.get(&document) else {
            return false;
        };
        if items.contains(&None) {
            return true;
        }
        // Inside a List: `items[i]` and below, for the items asked for (and the path `items` itself
        // is not needed).
        path.strip_prefix("items[")
            .and_then(|rest| rest.split_once(']'))
            .and_then(|(index, _)| index.parse::<usize>().ok())
            .is_some_and(|i| items.contains(&Some(i)))
    }
}

/// Walks `source` and records the positions of every field of the objects at `slots`. A source that
/// does not parse gives the positions found before the error.
pub fn field_positions(source: &Source, slots: &BTreeSet<ObjectSlot>) -> FieldPositions {
    let mut documents: BTreeMap<usize, BTreeSet<Option<usize>>> = BTreeMap::new();
    for (document, item) in slots {
        documents.entry(*document).or_default().insert(*item);
    }
    let wanted = Wanted { documents };
    let mut recorder = Recorder {
        wanted: &wanted,
        positions: FieldPositions::default(),
        document: 0,
    };
    if looks_like_json(source) {
        json::walk(&source.text, &mut recorder);
    } else {
        walk_yaml(&source.text, &mut recorder);
    }
    recorder.positions
}

/// Collects positions for the documents and paths wanted.
struct Recorder<'a> {
    wanted: &'a Wanted,
    positions: FieldPositions,
    /// The current document, from 1.
    document: usize,
}

impl Recorder<'_> {
    fn start_document(&mut self) {
        self.document += 1;
    }

    /// Records `path` at `position` unless something (its key) was recorded for it already.
    fn record(&mut self, path: &str, position: Position) {
        if self.wanted.records(self.document, path) {
            self.positions
                .documents
                .entry(self.document)
                .or_default()
                .entry(path.to_string())
                .or_insert(position);
        }
    }
}

/// Where the walk is inside a collection.
enum Frame {
    /// A mapping at `path`; `key` is the key whose value comes next, `None` while a key is due.
    Mapping { path: String, key: Option<String> },
    /// A sequence at `path`; `next` is the index of the next item.
    Sequence { path: String, next: usize },
    /// A collection used as a mapping key (rare): nothing inside is recorded.
    Skipped,
}

/// Whether a document's root scalar is null: the reader (serde-saphyr) skips such documents
/// without counting them (an empty document, `~`, `null`).
fn is_null_root(value: &str, style: ScalarStyle, tag: Option<&Tag>) -> bool {
    match tag {
        Some(tag) => tag.core_suffix() == Some("null"),
        None => style == ScalarStyle::Plain && matches!(value, "" | "~" | "null" | "Null" | "NULL"),
    }
}

fn walk_yaml(text: &str, recorder: &mut Recorder<'_>) {
    let mut stack: Vec<Frame> = Vec::new();
    // Set at each document start until its root node is seen.
    let mut root_due = false;
    for next in Parser::new_from_str(text) {
        let Ok((event, span)) = next else {
            return;
        };
        let position = Position {
            line: span.start.line(),
            column: span.start.col() + 1,
        };
        if root_due && event.is_node() {
            root_due = false;
            match &event {
                Event::Scalar(value, style, _, tag)
                    if is_null_root(value, *style, tag.as_deref()) =>
                {
                    continue;
                }
                _ => recorder.start_document(),
            }
        }
        match event {
            Event::DocumentStart(..) => {
                root_due = true;
                stack.clear();
            }
            Event::Scalar(value, ..) => {
                if let Some(path) = node_path(&mut stack, Some(&value), position, recorder) {
                    recorder.record(&path, position);
                }
            }
            Event::Alias(_) => {
                if let Some(path) = node_path(&mut stack, None, position, recorder) {
                    recorder.record(&path, position);
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let mapping = matches!(event, Event::MappingStart(..));
                match node_path(&mut stack, None, position, recorder) {
                    Some(path) => {
                        recorder.record(&path, position);
                        stack.push(if mapping {
                            Frame::Mapping { path, key: None }
                        } else {
                            Frame::Sequence { path, next: 0 }
                        });
                    }
                    None => stack.push(Frame::Skipped),
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
            }
            _ => {}
        }
    }
}

/// The path of the node that starts now, given where the walk is. A scalar mapping key records the
/// key's path and gives `None` (a key is not a node of its own); so does anything inside a
/// skipped collection.
fn node_path(
    stack: &mut [Frame],
    scalar: Option<&str>,
    position: Position,
    recorder: &mut Recorder<'_>,
) -> Option<String> {
    let Some(top) = stack.last_mut() else {
        return Some(String::new());
    };
    match top {
        Frame::Skipped => None,
        Frame::Sequence { path, next } => {
            let item = format!("{path}[{next}]");
            *next += 1;
            Some(item)
        }
        Frame::Mapping { path, key } => {
            if let Some(key) = key.take() {
                return Some(join(path, &key));
            }
            match scalar {
                Some(name) => {
                    recorder.record(&join(path, name), position);
                    *key = Some(name.to_string());
                }
                // A collection or alias as a key: its value gets a path no one asks for.
                None => *key = Some("?".to_string()),
            }
            None
        }
    }
}

/// The JSON side: a tokenizer just sufficient to follow keys and array items of text that
/// serde_json has already accepted (a stream of values, as [`super::for_each_object`] reads it).
mod json {
    use super::{join, Position, Recorder};

    struct Cursor<'t> {
        chars: std::iter::Peekable<std::str::Chars<'t>>,
        line: usize,
        column: usize,
    }

    impl Cursor<'_> {
        fn position(&self) -> Position {
            Position {
                line: self.line,
                column: self.column,
            }
        }

        fn peek(&mut self) -> Option<char> {
            self.chars.peek().copied()
        }

        fn bump(&mut self) -> Option<char> {
            let c = self.chars.next()?;
            if c == '\n' {
                self.line += 1;
                self.column = 1;
            } else {
                self.column += 1;
            }
            Some(c)
        }

        fn skip_whitespace(&mut self) {
            while self.peek().is_some_and(|c| c.is_whitespace()) {
                self.bump();
            }
        }

        /// A string, the opening quote next; returns its (unescaped enough for keys) text.
        fn string(&mut self) -> Option<String> {
            self.bump();
            let mut text = String::new();
            loop {
                match self.bump()? {
                    '"' => return Some(text),
                    '\\' => {
                        let escaped = self.bump()?;
                        match escaped {
                            'u' => {
                                let hex: String = (0..4).filter_map(|_| self.bump()).collect();
                                if let Some(c) =
                                    u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32)
                                {
                                    text.push(c);
                                }
                            }
                            'n' => text.push('\n'),
                            't' => text.push('\t'),
                            'r' => text.push('\r'),
                            'b' => text.push('\u{8}'),
                            'f' => text.push('\u{c}'),
                            other => text.push(other),
                        }
                    }
                    c => text.push(c),
                }
            }
        }
    }

    /// Walks a stream of JSON values, each a document.
    pub(super) fn walk(text: &str, recorder: &mut Recorder<'_>) {
        let mut cursor = Cursor {
            chars: text.chars().peekable(),
            line: 1,
            column: 1,
        };
        loop {
            cursor.skip_whitespace();
            if cursor.peek().is_none() {
                return;
            }
            recorder.start_document();
            if value(&mut cursor, String::new(), recorder).is_none() {
                return;
            }
        }
    }

    /// One value at `path`; `None` when the text ends or breaks off.
    fn value(cursor: &mut Cursor<'_>, path: String, recorder: &mut Recorder<'_>) -> Option<()> {
        cursor.skip_whitespace();
        recorder.record(&path, cursor.position());
        match cursor.peek()? {
            '{' => {
                cursor.bump();
                loop {
                    cursor.skip_whitespace();
                    match cursor.peek()? {
                        '}' => {
                            cursor.bump();
                            return Some(());
                        }
                        ',' => {
                            cursor.bump();
                        }
                        '"' => {
                            let at = cursor.position();
                            let key = cursor.string()?;
                            let field = join(&path, &key);
                            recorder.record(&field, at);
                            cursor.skip_whitespace();
                            if cursor.bump()? != ':' {
                                return None;
                            }
                            value(cursor, field, recorder)?;
                        }
                        _ => return None,
                    }
                }
            }
            '[' => {
                cursor.bump();
                let mut index = 0;
                loop {
                    cursor.skip_whitespace();
                    match cursor.peek()? {
                        ']' => {
                            cursor.bump();
                            return Some(());
                        }
                        ',' => {
                            cursor.bump();
                        }
                        _ => {
                            value(cursor, format!("{path}[{index}]"), recorder)?;
                            index += 1;
                        }
                    }
                }
            }
            '"' => cursor.string().map(|_| ()),
            _ => {
                // A number, `true`, `false` or `null`: up to the next delimiter.
                while cursor
                    .peek()
                    .is_some_and(|c| !c.is_whitespace() && !matches!(c, ',' | '}' | ']'))
                {
                    cursor.bump();
                }
                Some(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::for_each_object;

    fn source(name: &str, text: &str) -> Source {
        Source {
            name: name.to_string(),
            text: text.to_string(),
        }
    }

    /// Every object's slot, as the reader numbers them.
    fn slots(source: &Source) -> BTreeSet<ObjectSlot> {
        let mut slots = BTreeSet::new();
        let errors = for_each_object(source, &mut |o| {
            slots.insert((o.location.document, o.location.item));
        });
        assert!(errors.is_empty(), "{errors:?}");
        slots
    }

    fn at(line: usize, column: usize) -> Position {
        Position { line, column }
    }

    const YAML: &str = "\
# a comment before anything
---
---
apiVersion: v1
kind: Namespace
metadata:
  name: x
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: x}
spec:
  podSelector: {}
  ingress:
  - from:
    - podSelector:
        matchLabels: {app: web}
  -   ports: [{port: 80}, {port: 'http'}]
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: a}
- kind: Pod
  apiVersion: v1
  metadata:
    name: b
";

    #[test]
    fn yaml_documents_are_numbered_as_the_reader_numbers_them() {
        let src = source("t.yaml", YAML);
        let slots = slots(&src);
        assert_eq!(
            slots,
            BTreeSet::from([(1, None), (2, None), (3, Some(0)), (3, Some(1))])
        );
        let positions = field_positions(&src, &slots);
        // The Namespace is document 1: the empty document before it does not count.
        assert_eq!(
            positions.find((1, None), ""),
            Some((at(4, 1), String::new()))
        );
        assert_eq!(
            positions.find((1, None), "metadata.name"),
            Some((at(7, 3), "metadata.name".to_string()))
        );
        let policy = (2, None);
        assert_eq!(positions.find(policy, "kind").map(|f| f.0), Some(at(10, 1)));
        assert_eq!(
            positions.find(policy, "metadata.namespace").map(|f| f.0),
            Some(at(11, 21))
        );
        assert_eq!(
            positions
                .find(policy, "spec.ingress[0].from[0].podSelector")
                .map(|f| f.0),
            Some(at(16, 7))
        );
        assert_eq!(
            positions.find(policy, "spec.ingress[0]").map(|f| f.0),
            Some(at(15, 5))
        );
        assert_eq!(
            positions.find(policy, "spec.ingress[1]").map(|f| f.0),
            Some(at(18, 7))
        );
        assert_eq!(
            positions
                .find(policy, "spec.ingress[1].ports[1]")
                .map(|f| f.0),
            Some(at(18, 27))
        );
        assert_eq!(
            positions
                .find(policy, "spec.ingress[1].ports[1].port")
                .map(|f| f.0),
            Some(at(18, 28))
        );
        // A field the source leaves out points at its nearest written ancestor.
        assert_eq!(
            positions.find(policy, "spec.egress[0].to[0]"),
            Some((at(12, 1), "spec".to_string()))
        );
        assert!(positions.contains(policy, "spec.podSelector"));
        assert!(!positions.contains(policy, "spec.policyTypes"));
        // List items.
        assert_eq!(
            positions.find((3, Some(0)), "").map(|f| f.0),
            Some(at(23, 3))
        );
        assert_eq!(
            positions.find((3, Some(1)), "metadata.name").map(|f| f.0),
            Some(at(29, 5))
        );
    }

    #[test]
    fn only_the_objects_asked_for_are_recorded() {
        let src = source("t.yaml", YAML);
        let positions = field_positions(&src, &BTreeSet::from([(3, Some(1))]));
        assert_eq!(positions.find((2, None), ""), None);
        assert_eq!(positions.find((3, Some(0)), ""), None);
        assert_eq!(
            positions.find((3, Some(1)), "").map(|f| f.0),
            Some(at(26, 3))
        );
    }

    #[test]
    fn json_streams_are_located_by_key_and_item() {
        let text = "{\"apiVersion\": \"v1\", \"kind\": \"Namespace\",\n \"metadata\": {\"name\": \"x\"}}\n\
{\n  \"apiVersion\": \"networking.k8s.io/v1\",\n  \"kind\": \"NetworkPolicy\",\n  \
\"metadata\": {\"name\": \"p\\u0041\", \"namespace\": \"x\"},\n  \"spec\": {\n    \
\"podSelector\": {},\n    \"ingress\": [\n      {\"from\": [{\"podSelector\": {}}, \
{\"ipBlock\": {\"cidr\": \"10.0.0.0/8\"}}]}\n    ]\n  }\n}\n";
        let src = source("t.json", text);
        let slots = slots(&src);
        assert_eq!(slots, BTreeSet::from([(1, None), (2, None)]));
        let positions = field_positions(&src, &slots);
        assert_eq!(positions.find((1, None), "").map(|f| f.0), Some(at(1, 1)));
        assert_eq!(
            positions.find((1, None), "metadata.name").map(|f| f.0),
            Some(at(2, 15))
        );
        assert_eq!(positions.find((2, None), "").map(|f| f.0), Some(at(3, 1)));
        assert_eq!(
            positions.find((2, None), "spec.podSelector").map(|f| f.0),
            Some(at(8, 5))
        );
        assert_eq!(
            positions
                .find((2, None), "spec.ingress[0].from[1].ipBlock.cidr")
                .map(|f| f.0),
            Some(at(10, 51))
        );
        assert_eq!(
            positions.find((2, None), "spec.ingress[0]").map(|f| f.0),
            Some(at(10, 7))
        );
    }

    #[test]
    fn broken_text_gives_what_was_found_before_the_break() {
        let src = source("t.json", "{\"kind\": \"Pod\", \"metadata\": {\"name\": ");
        let positions = field_positions(&src, &BTreeSet::from([(1, None)]));
        assert_eq!(
            positions.find((1, None), "metadata.name"),
            Some((at(1, 30), "metadata.name".to_string()))
        );
        let src = source("t.yaml", "kind: Pod\nmetadata: {name: [\n");
        let positions = field_positions(&src, &BTreeSet::from([(1, None)]));
        assert_eq!(
            positions.find((1, None), "metadata").map(|f| f.0),
            Some(at(2, 1))
        );
    }

    #[test]
    fn columns_count_characters() {
        let src = source("t.yaml", "metadata: {name: é, namespace: x}\n");
        let positions = field_positions(&src, &BTreeSet::from([(1, None)]));
        assert_eq!(
            positions.find((1, None), "metadata.namespace").map(|f| f.0),
            Some(at(1, 21))
        );
        let src = source("t.json", "{\"a\": \"é\", \"b\": 1}");
        let positions = field_positions(&src, &BTreeSet::from([(1, None)]));
        assert_eq!(positions.find((1, None), "b").map(|f| f.0), Some(at(1, 12)));
    }
}
