//! Reading manifests: YAML (multi-document) and JSON, `List` kinds, into a validated [`ClusterState`].
//!
//! Parsing is pure ([`parse_sources`] takes text); [`read_paths`] is the one place that touches the file
//! system. Every error names the file, the document, the object and the field, and any error means no
//! cluster state at all: a malformed manifest never yields a partial ruleset.

mod cluster_policy;
mod convert;
mod fs;
pub mod position;

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use crate::cluster::ClusterState;
use crate::model::ObjectRef;
use crate::object::{convert, Converted, Kind, Object, DEFAULT_NAMESPACE};

pub use cluster_policy::cluster_policy_from_api;
pub use convert::{
    namespace_from_api, namespace_from_typed, node_from_api, node_from_typed, pod_from_api,
    pod_from_typed, policy_from_api, policy_from_typed, workload_from_api, FieldResult,
};
pub use fs::{read_paths, read_stdin};

/// One input text and where it came from.
#[derive(Debug, Clone)]
pub struct Source {
    /// A path, or `<stdin>`.
    pub name: String,
    /// The contents.
    pub text: String,
}

/// Where an object sits in the input, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// File name or `<stdin>`.
    pub file: String,
    /// 1-based document index within the file.
    pub document: usize,
    /// 0-based index within a `List` document, if the object came from one.
    pub item: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.file, self.document)?;
        if let Some(i) = self.item {
            write!(f, ", items[{i}]")?;
        }
        Ok(())
    }
}

/// A problem with the input.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A file or directory could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The text is not valid YAML or JSON.
    #[error("{file}: invalid {format}: {message}")]
    Syntax {
        /// File name.
        file: String,
        /// `YAML` or `JSON`.
        format: &'static str,
        /// The parser's message, with its line and column.
        message: String,
    },
    /// A document is not a Kubernetes object (no `kind` or `apiVersion`, or not a mapping).
    #[error("{location}: not a Kubernetes object: {message}")]
    NotAnObject {
        /// Where.
        location: Location,
        /// What is missing.
        message: String,
    },
    /// An object has a field with a bad value.
    #[error("{0}")]
    Invalid(Box<FieldError>),
    /// The same object is defined twice.
    #[error("{kind} {object} is defined twice: at {first} and at {second}")]
    Duplicate {
        /// Kind.
        kind: String,
        /// `namespace/name` or `name`.
        object: String,
        /// The first definition.
        first: Box<Location>,
        /// The second definition.
        second: Box<Location>,
    },
}

/// A field of an object with a bad value.
#[derive(Debug, thiserror::Error)]
#[error("{location}: {kind} {object}: field {field}: {message}")]
pub struct FieldError {
    /// Where.
    pub location: Location,
    /// `Pod`, `Namespace`, `NetworkPolicy`, `ClusterNetworkPolicy`...
    pub kind: String,
    /// `namespace/name` or `name`.
    pub object: String,
    /// The field path, e.g. `spec.ingress[0].from[1].ipBlock.cidr`.
    pub field: String,
    /// What is wrong and what is expected.
    pub message: String,
}

/// Errors found in the input; all of them, not only the first.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct InputErrors(pub Vec<InputError>);

/// How to read manifests.
#[derive(Debug, Clone)]
pub struct ParseOptions {
    /// The namespace of namespaced objects that name none (`kubectl -n`).
    pub default_namespace: String,
    /// Reject documents that are not Kubernetes objects and objects of kinds that play no part,
    /// instead of skipping them with a warning.
    pub strict: bool,
}

impl Default for ParseOptions {
    fn default() -> Self {
        Self {
            default_namespace: DEFAULT_NAMESPACE.to_string(),
            strict: false,
        }
    }
}

/// What one file held that was skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Documents that are not Kubernetes objects (Helm values, CI files, a JSON report).
    pub not_objects: usize,
    /// Objects of kinds that play no part, by kind.
    pub kinds: BTreeMap<String, usize>,
}

/// The result of reading manifests.
#[derive(Debug, Clone, Default)]
pub struct Manifests {
    /// Namespaces, pods, policies, workloads, ClusterNetworkPolicies and Nodes.
    pub cluster: ClusterState,
    /// What was skipped, by file.
    pub skipped: BTreeMap<String, Skipped>,
    /// Objects of other kinds, kept as JSON with their location (e.g. Services, for the lab).
    pub other_objects: Vec<(Location, Value)>,
    /// Where each valid object was defined, by kind and key ([`crate::object::Object::key`]):
    /// what tells a declared namespace from one that exists only because objects are in it.
    pub locations: BTreeMap<(Kind, ObjectRef), Location>,
}

impl Manifests {
    /// One warning line per file that had something skipped, naming the file.
    pub fn skip_warnings(&self) -> Vec<String> {
        self.skipped
            .iter()
            .map(|(file, skipped)| {
                let mut parts = Vec::new();
                if skipped.not_objects > 0 {
                    let n = skipped.not_objects;
                    parts.push(format!(
                        "{n} document{} that {} not a Kubernetes object",
                        plural(n),
                        if n == 1 { "is" } else { "are" }
                    ));
                }
                if !skipped.kinds.is_empty() {
                    let n: usize = skipped.kinds.values().sum();
                    let kinds: Vec<&str> = skipped.kinds.keys().map(String::as_str).collect();
                    parts.push(format!(
                        "{n} object{} of kinds that play no part in policy ({})",
                        plural(n),
                        kinds.join(", ")
                    ));
                }
                format!("{file}: skipped {}", parts.join(" and "))
            })
            .collect()
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// One Kubernetes object as found in the input.
#[derive(Debug, Clone)]
pub struct RawObject {
    /// Where it was.
    pub location: Location,
    /// The object.
    pub value: Value,
}

impl RawObject {
    /// An object that is a whole document (not a `List` item): document `document` of `file`.
    pub fn document(file: impl Into<String>, document: usize, value: Value) -> Self {
        RawObject {
            location: Location {
                file: file.into(),
                document,
                item: None,
            },
            value,
        }
    }
}

/// Streams a source's objects (`List` kinds unpacked) to `f`, one document at a time, so that a
/// large file is never held as one tree of values. Returns the problems found; after a syntax error
/// nothing more of the source is read (objects before it were delivered).
pub fn for_each_object(source: &Source, f: &mut dyn FnMut(RawObject)) -> Vec<InputError> {
    let text = Input::Text(source.text.as_bytes());
    stream_objects(&source.name, looks_like_json(source), text, f)
}

/// [`for_each_object`] for a text the caller's `reader` gives (a file being read, say), so that
/// the text is never held whole either: `name` names it in locations and errors. It is JSON when
/// the name ends in `.json` or its first non-blank byte is `{` or `[`, as for a text held whole
/// (the blanks before it, however many, are held until it is found, and then read as the text's
/// start). An error of the reader's ends the reading as a syntax error does.
pub fn for_each_object_read(
    name: &str,
    reader: &mut dyn std::io::BufRead,
    f: &mut dyn FnMut(RawObject),
) -> Vec<InputError> {
    let mut blanks: Vec<u8> = Vec::new();
    let json = name.ends_with(".json")
        || loop {
            let buffered = match reader.fill_buf() {
                Ok(buffered) => buffered,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return vec![InputError::Io {
                        path: name.to_string(),
                        source: e,
                    }]
                }
            };
            if buffered.is_empty() {
                break false;
            }
            match buffered.iter().find(|b| !b.is_ascii_whitespace()) {
                Some(b) => break matches!(b, b'{' | b'['),
                None => {
                    let n = buffered.len();
                    blanks.extend_from_slice(buffered);
                    reader.consume(n);
                }
            }
        };
    let mut text = std::io::Read::chain(blanks.as_slice(), reader);
    stream_objects(name, json, Input::Reader(&mut text), f)
}

/// What [`stream_objects`] reads: a text held whole (JSON is then parsed in place, much faster
/// than byte by byte from a reader), or a reader.
enum Input<'a> {
    Text(&'a [u8]),
    Reader(&'a mut dyn std::io::Read),
}

fn stream_objects(
    name: &str,
    json: bool,
    input: Input<'_>,
    f: &mut dyn FnMut(RawObject),
) -> Vec<InputError> {
    let mut errors = Vec::new();
    let mut document = 0;
    let mut on_document = |doc: Value, errors: &mut Vec<InputError>| {
        document += 1;
        // Empty documents (a trailing `---`, a file of comments) carry nothing.
        if doc.is_null() {
            return;
        }
        let location = Location {
            file: name.to_string(),
            document,
            item: None,
        };
        flatten(location, doc, f, errors);
    };
    let syntax = |format: &'static str, message: String| InputError::Syntax {
        file: name.to_string(),
        format,
        message,
    };
    if json {
        let docs: Box<dyn Iterator<Item = serde_json::Result<Value>>> = match input {
            Input::Text(text) => Box::new(serde_json::Deserializer::from_slice(text).into_iter()),
            Input::Reader(reader) => {
                Box::new(serde_json::Deserializer::from_reader(reader).into_iter())
            }
        };
        for doc in docs {
            match doc {
                Ok(doc) => on_document(doc, &mut errors),
                Err(e) => {
                    errors.push(syntax("JSON", e.to_string()));
                    break;
                }
            }
        }
    } else {
        let mut text;
        let mut reader: &mut dyn std::io::Read = match input {
            Input::Text(t) => {
                text = t;
                &mut text
            }
            Input::Reader(reader) => reader,
        };
        for doc in serde_saphyr::read_with_options::<_, Value>(&mut reader, yaml_options()) {
            match doc {
                Ok(doc) => on_document(doc, &mut errors),
                Err(e) => {
                    errors.push(syntax("YAML", e.to_string()));
                    break;
                }
            }
        }
    }
    errors
}

fn looks_like_json(source: &Source) -> bool {
    source.name.ends_with(".json") || source.text.trim_start().starts_with(['{', '['])
}

/// The YAML parser's limits, sized for cluster dumps: a `kubectl get -o yaml` of a 100k-pod cluster
/// is hundreds of thousands of documents and tens of millions of nodes. The protections against
/// alias bombs and deep nesting keep their defaults.
fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::budget::Budget::default();
    budget.max_documents = 10_000_000;
    budget.max_nodes = 500_000_000;
    budget.max_events = 2_000_000_000;
    budget.max_total_scalar_bytes = 4 << 30;
    budget.max_reader_input_bytes = None;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

fn flatten(
    location: Location,
    doc: Value,
    out: &mut dyn FnMut(RawObject),
    errors: &mut Vec<InputError>,
) {
    let Value::Object(map) = &doc else {
        errors.push(InputError::NotAnObject {
            location,
            message: "expected a mapping with apiVersion and kind".to_string(),
        });
        return;
    };
    let kind = map.get("kind").and_then(Value::as_str);
    if map.get("apiVersion").and_then(Value::as_str).is_none() || kind.is_none() {
        errors.push(InputError::NotAnObject {
            location,
            message: "apiVersion and kind are required".to_string(),
        });
        return;
    }
    if kind.is_some_and(|k| k == "List" || k.ends_with("List")) {
        // A typed list (`PodList`, as the API returns it) leaves `kind` and `apiVersion` out of its
        // items: they are the list's.
        let item_kind = kind
            .and_then(|k| k.strip_suffix("List"))
            .filter(|k| !k.is_empty())
            .map(str::to_string);
        let api_version = map
            .get("apiVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
        let items = match doc {
            Value::Object(mut map) => map.remove("items"),
            _ => None,
        };
        let Some(Value::Array(items)) = items else {
            errors.push(InputError::NotAnObject {
                location,
                message: "a List needs an items array".to_string(),
            });
            return;
        };
        // The items are moved out one by one: a large List is not copied.
        for (i, mut item) in items.into_iter().enumerate() {
            let item_location = Location {
                item: Some(i),
                ..location.clone()
            };
            if let (Some(kind), Value::Object(fields)) = (&item_kind, &mut item) {
                if !fields.contains_key("kind") {
                    fields.insert("kind".into(), Value::from(kind.clone()));
                    if let Some(v) = &api_version {
                        fields
                            .entry("apiVersion")
                            .or_insert_with(|| Value::from(v.clone()));
                    }
                }
            }
            flatten(item_location, item, out, errors);
        }
        return;
    }
    out(RawObject {
        location,
        value: doc,
    });
}

/// Parses and validates sources into cluster state, with the default [`ParseOptions`].
pub fn parse_sources(sources: &[Source]) -> Result<Manifests, InputErrors> {
    parse_sources_with(sources, &ParseOptions::default())
}

/// Parses and validates sources into cluster state, through the object pipeline
/// ([`crate::object::convert`]). Documents that are not Kubernetes objects and objects of kinds that
/// play no part are skipped (see [`Manifests::skipped`]) unless `options.strict`.
pub fn parse_sources_with(
    sources: &[Source],
    options: &ParseOptions,
) -> Result<Manifests, InputErrors> {
    let mut manifests = Manifests::default();
    let mut errors = Vec::new();
    let mut objects = Vec::new();
    for source in sources {
        for problem in for_each_object(source, &mut |o| objects.push(o)) {
            match problem {
                InputError::NotAnObject { location, .. } if !options.strict => {
                    manifests
                        .skipped
                        .entry(location.file)
                        .or_default()
                        .not_objects += 1;
                }
                other => errors.push(other),
            }
        }
    }
    let mut seen: BTreeMap<(Kind, ObjectRef), Location> = BTreeMap::new();
    let mut valid: Vec<Object> = Vec::new();
    for object in objects {
        let location = object.location.clone();
        match convert(object, &options.default_namespace) {
            Converted::Valid(o) => {
                let key = (o.kind(), o.key());
                if let Some(first) = seen.get(&key) {
                    errors.push(InputError::Duplicate {
                        kind: key.0.as_str().to_string(),
                        object: display_key(&key.1),
                        first: Box::new(first.clone()),
                        second: Box::new(location),
                    });
                } else {
                    seen.insert(key, location);
                    valid.push(o);
                }
            }
            Converted::Invalid { error, .. } => errors.push(InputError::Invalid(error)),
            Converted::Other(raw) => {
                let kind = raw.value["kind"].as_str().unwrap_or_default().to_string();
                if options.strict {
                    errors.push(InputError::NotAnObject {
                        location: raw.location,
                        message: format!(
                            "kind {kind} plays no part in policy (without --strict it is skipped)"
                        ),
                    });
                    continue;
                }
                *manifests
                    .skipped
                    .entry(raw.location.file.clone())
                    .or_default()
                    .kinds
                    .entry(kind)
                    .or_default() += 1;
                manifests.other_objects.push((raw.location, raw.value));
            }
        }
    }
    if !errors.is_empty() {
        return Err(InputErrors(errors));
    }
    manifests.locations = seen;
    // Namespaces first, so that pods and policies find their namespace declared.
    valid.sort_by_key(|o| o.kind());
    for object in valid {
        manifests.cluster.upsert(object);
    }
    Ok(manifests)
}

/// `namespace/name`, or `name` for a cluster-scoped object.
fn display_key(key: &ObjectRef) -> String {
    if key.namespace.is_empty() {
        key.name.to_string()
    } else {
        key.to_string()
    }
}

#[cfg(test)]
mod tests;
