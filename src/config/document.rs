//! Where each value sits in a config file, so semantic errors can name a line; reads only the
//! file's shape and never judges what a value means.

use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

/// A dotted key path such as `providers[1].base_url`, used both to find a value's position and
/// to name it in a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct KeyPath(Vec<Segment>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

impl KeyPath {
    pub(super) fn key(&self, key: &str) -> KeyPath {
        let mut path = self.clone();
        path.0.push(Segment::Key(key.to_owned()));
        path
    }

    pub(super) fn index(&self, index: usize) -> KeyPath {
        let mut path = self.clone();
        path.0.push(Segment::Index(index));
        path
    }

    pub(super) fn root(key: &str) -> KeyPath {
        KeyPath::default().key(key)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (position, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if position == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// The parsed layout of one file: every table, array and value with its byte span.
#[derive(Debug)]
pub(super) struct Document {
    root: Option<Spanned<Node>>,
}

#[derive(Debug)]
enum Node {
    Table(Vec<(String, Spanned<Node>)>),
    Array(Vec<Spanned<Node>>),
    Value,
}

impl Document {
    /// A file that does not parse has no layout; messages about it then carry no line.
    pub(super) fn parse(text: &str) -> Document {
        Document {
            root: toml::from_str(text).ok(),
        }
    }

    /// The span of the value at `path`, or of its closest ancestor present in the file (a
    /// missing key is best reported at the table that lacks it).
    pub(super) fn span(&self, path: &KeyPath) -> Option<Range<usize>> {
        let mut node = self.root.as_ref()?;
        for segment in &path.0 {
            let child = match (node.get_ref(), segment) {
                (Node::Table(entries), Segment::Key(key)) => entries
                    .iter()
                    .find(|(name, _)| name == key)
                    .map(|(_, child)| child),
                (Node::Array(items), Segment::Index(index)) => items.get(*index),
                _ => None,
            };
            match child {
                Some(child) => node = child,
                None => break,
            }
        }
        let span = node.span();
        (span != (0..0) || path.0.is_empty()).then_some(span)
    }

    /// The path of the innermost value whose span holds `offset`: the key a parse error at
    /// `offset` is about (or the table holding the offending key).
    pub(super) fn path_at(&self, offset: usize) -> Option<KeyPath> {
        let mut node = self.root.as_ref()?;
        let mut path = KeyPath::default();
        loop {
            let holds = |child: &Spanned<Node>| child.span().contains(&offset);
            let next = match node.get_ref() {
                Node::Table(entries) => entries
                    .iter()
                    .find(|(_, child)| holds(child))
                    .map(|(key, child)| (path.key(key), child)),
                Node::Array(items) => items
                    .iter()
                    .position(holds)
                    .map(|index| (path.index(index), &items[index])),
                Node::Value => None,
            };
            match next {
                Some((child_path, child)) => (path, node) = (child_path, child),
                None => break,
            }
        }
        (!path.0.is_empty()).then_some(path)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

/// toml's serde representation of a datetime: a one-key table with this key.
const DATETIME_KEY: &str = "$__toml_private_datetime";

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Value)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Value)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Value)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Value)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Value)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == DATETIME_KEY {
                map.next_value::<IgnoredAny>()?;
                return Ok(Node::Value);
            }
            entries.push((key, map.next_value()?));
        }
        Ok(Node::Table(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_of(text: &str, span: Option<Range<usize>>) -> usize {
        text[..span.unwrap().start].matches('\n').count() + 1
    }

    #[test]
    fn values_in_arrays_of_tables_are_found_by_path() {
        let text = "[server]\nlisten = \"x\"\n\n[[providers]]\nid = \"a\"\n\n[[providers]]\nid = \"b\"\nkind = \"mock\"\nwhen = 1979-05-27\n";
        let document = Document::parse(text);
        let providers = KeyPath::root("providers");
        assert_eq!(
            line_of(text, document.span(&providers.index(1).key("kind"))),
            9
        );
        assert_eq!(
            line_of(text, document.span(&KeyPath::root("server").key("listen"))),
            2
        );
        let missing = document.span(&providers.index(0).key("base_url"));
        assert!(
            line_of(text, missing) >= 4,
            "a missing key falls back to its table"
        );
    }

    #[test]
    fn key_paths_read_like_the_file() {
        let path = KeyPath::root("models")
            .index(3)
            .key("endpoints")
            .index(0)
            .key("prompt");
        assert_eq!(path.to_string(), "models[3].endpoints[0].prompt");
    }
}
