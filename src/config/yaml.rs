//! A small YAML document tree with line numbers, built from yaml-rust2's event parser.
//!
//! We build our own tree (instead of `yaml_rust2::Yaml`) because every value needs the line
//! it came from, so that errors and warnings can say `litestream.yml:12` and so that unset
//! `$VAR`s can be tied to the key whose value they emptied.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// One YAML node. Aliases are resolved (copied) while building; merge keys (`<<`) are
/// resolved by the schema walker, which sees them as ordinary entries.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Scalar {
        text: String,
        /// Plain (unquoted) scalars take part in YAML 1.1 type resolution (null, bools).
        plain: bool,
        tag: Option<String>,
        line: usize,
    },
    Seq {
        items: Vec<Node>,
        line: usize,
    },
    Map {
        entries: Vec<(Node, Node)>,
        line: usize,
    },
}

impl Node {
    pub(crate) fn line(&self) -> usize {
        match self {
            Node::Scalar { line, .. } | Node::Seq { line, .. } | Node::Map { line, .. } => *line,
        }
    }

    /// YAML 1.1 null as Go's yaml.v2 resolves it: an empty plain scalar, `~`, `null`.
    pub(crate) fn is_null(&self) -> bool {
        match self {
            Node::Scalar {
                text, plain, tag, ..
            } => {
                if let Some(t) = tag {
                    return t.ends_with("null");
                }
                *plain && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL")
            }
            _ => false,
        }
    }

    pub(crate) fn kind_name(&self) -> &'static str {
        match self {
            Node::Scalar { .. } => "a single value",
            Node::Seq { .. } => "a list",
            Node::Map { .. } => "a mapping",
        }
    }
}

/// A YAML syntax error, with 1-based line and column.
#[derive(Debug, Clone)]
pub(crate) struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

enum Frame {
    Seq {
        items: Vec<Node>,
        line: usize,
        anchor: usize,
    },
    Map {
        entries: Vec<(Node, Node)>,
        pending_key: Option<Node>,
        line: usize,
        anchor: usize,
    },
}

struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    /// The first document's root; later documents are ignored, as Go's yaml.Unmarshal does.
    root: Option<Node>,
    documents: usize,
    error: Option<SyntaxError>,
}

impl Builder {
    fn push_value(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                pending_key,
                ..
            }) => match pending_key.take() {
                Some(k) => {
                    // An empty value (`key:` or `key: ${UNSET}`) is reported by the parser at
                    // the next token, often the next line; it belongs on the key's line.
                    let mut node = node;
                    if let Node::Scalar { text, line, .. } = &mut node {
                        if text.is_empty() {
                            *line = k.line();
                        }
                    }
                    entries.push((k, node))
                }
                None => *pending_key = Some(node),
            },
            None => {
                if self.documents == 1 && self.root.is_none() {
                    self.root = Some(node);
                }
            }
        }
    }
}

fn tag_string(tag: Option<Tag>) -> Option<String> {
    tag.map(|t| format!("{}{}", t.handle, t.suffix))
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let line = mark.line();
        match ev {
            Event::DocumentStart => self.documents += 1,
            Event::Scalar(text, style, anchor, tag) => {
                let node = Node::Scalar {
                    text,
                    plain: style == TScalarStyle::Plain,
                    tag: tag_string(tag),
                    line,
                };
                self.push_value(node, anchor);
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(node) => {
                    let node = node.clone();
                    self.push_value(node, 0);
                }
                None => {
                    self.error = Some(SyntaxError {
                        line,
                        column: mark.col() + 1,
                        message: "alias refers to an unknown anchor".into(),
                    })
                }
            },
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq {
                items: Vec::new(),
                line,
                anchor,
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map {
                entries: Vec::new(),
                pending_key: None,
                line,
                anchor,
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq {
                        items,
                        line,
                        anchor,
                    }) => (Node::Seq { items, line }, anchor),
                    Some(Frame::Map {
                        entries,
                        line,
                        anchor,
                        ..
                    }) => (Node::Map { entries, line }, anchor),
                    None => return,
                };
                self.push_value(node, anchor);
            }
            _ => {}
        }
    }
}

/// Parse the first YAML document of `text`. `Ok(None)` for an empty document.
pub(crate) fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut builder = Builder {
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        documents: 0,
        error: None,
    };
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut builder, true) {
        let m = e.marker();
        return Err(SyntaxError {
            line: m.line(),
            column: m.col() + 1,
            message: e.info().to_string(),
        });
    }
    if let Some(e) = builder.error {
        return Err(e);
    }
    Ok(builder.root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_tree_with_lines() {
        let n = parse("a: 1\nb:\n  - x\n  - y: 'q'\n").unwrap().unwrap();
        let Node::Map { entries, .. } = n else {
            panic!()
        };
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].1.line(), 3);
        let Node::Seq { items, .. } = &entries[1].1 else {
            panic!()
        };
        let Node::Map { entries: inner, .. } = &items[1] else {
            panic!()
        };
        match &inner[0].1 {
            Node::Scalar {
                text, plain, line, ..
            } => {
                assert_eq!(text, "q");
                assert!(!plain);
                assert_eq!(*line, 4);
            }
            _ => panic!(),
        }
    }

    #[test]
    fn aliases_are_copied() {
        let n = parse("a: &x {k: v}\nb: *x\n").unwrap().unwrap();
        let Node::Map { entries, .. } = n else {
            panic!()
        };
        assert!(matches!(&entries[1].1, Node::Map { entries, .. } if entries.len() == 1));
    }

    #[test]
    fn empty_is_none_and_errors_have_positions() {
        assert!(parse("# only a comment\n").unwrap().is_none());
        let e = parse("a: b\n  c: d\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.column >= 1);
        let e = parse("a: [1, 2\n").unwrap_err();
        assert!(e.line >= 1, "{e:?}");
    }

    #[test]
    fn nulls() {
        let n = parse("a:\nb: ~\nc: ''\nd: null\n").unwrap().unwrap();
        let Node::Map { entries, .. } = n else {
            panic!()
        };
        assert!(entries[0].1.is_null());
        assert!(entries[1].1.is_null());
        assert!(!entries[2].1.is_null());
        assert!(entries[3].1.is_null());
    }
}
