//! Parsing multi-document Kubernetes YAML into typed objects, with the file's line numbers in
//! every error.

use serde::Deserialize;
use std::sync::Arc;
use trellis_model::core::{Secret, jiff};
use trellis_model::{Kind, Object};

/// One document of a YAML stream, parsed.
#[derive(Debug)]
pub enum ParsedDocument {
    /// An object of a kind Trellis reads.
    Object {
        /// 1-based index of the document in the file.
        document: usize,
        /// 1-based line where the document starts.
        line: usize,
        /// The object, with its namespace defaulted.
        object: Box<Object>,
    },
    /// A well-formed object of a kind Trellis does not read.
    Skipped {
        /// 1-based index of the document in the file.
        document: usize,
        /// 1-based line where the document starts.
        line: usize,
        /// `apiVersion` as written.
        api_version: String,
        /// `kind` as written.
        kind: String,
        /// `metadata.name` as written.
        name: String,
    },
    /// A document that could not be read.
    Invalid {
        /// 1-based index of the document in the file.
        document: usize,
        /// 1-based line of the problem in the file (the document's first line if unknown).
        line: usize,
        /// The object, when its kind and name could be read.
        object: Option<String>,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<MetaName>,
}

#[derive(Deserialize)]
struct MetaName {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

/// Splits a YAML stream into documents: `(first line, text)`. A line `---` (optionally followed
/// by a space and more) starts a new document; `...` ends one.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        let is_separator = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        let is_end = line == "...";
        if is_separator || is_end {
            docs.push((start, std::mem::take(&mut current)));
            start = i + 2;
            if is_separator {
                // Keep the line count: content after "--- " belongs to the new document.
                let rest = line.get(4..).unwrap_or("");
                current.push_str(rest);
                current.push('\n');
                start = i + 1;
            }
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    docs.push((start, current));
    docs
}

/// Whether a document holds nothing but blank lines and comments.
fn is_blank(doc: &str) -> bool {
    doc.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#')
    })
}

fn error_line(e: &serde_saphyr::Error, start: usize) -> usize {
    e.location()
        .map(|l| start + l.line().saturating_sub(1) as usize)
        .unwrap_or(start)
}

/// A one-line description of a YAML error, without the rendered snippet.
fn error_message(e: &serde_saphyr::Error) -> String {
    let text = e.to_string();
    let mut first = text.lines().next().unwrap_or_default().trim();
    first = first.strip_prefix("error: ").unwrap_or(first);
    // The parser's own "line X column Y:" counts from the document, not the file: keep only
    // the column, as our location gives the file's line.
    if let Some(rest) = first.strip_prefix("line ")
        && let Some((_, rest)) = rest.split_once(" column ")
        && let Some((column, message)) = rest.split_once(": ")
    {
        return format!("{message} (column {column})");
    }
    match first.find(" at line ") {
        Some(i) => first[..i].to_string(),
        None => first.to_string(),
    }
}

/// Streams with at least this many documents are parsed on several threads.
const PARALLEL_DOCUMENTS: usize = 64;

/// Parses every document of a YAML stream. Large streams are parsed on every available core,
/// the documents coming back in their order.
pub fn parse_documents(text: &str) -> Vec<ParsedDocument> {
    let docs: Vec<(usize, usize, String)> = split_documents(text)
        .into_iter()
        .filter(|(_, doc)| !is_blank(doc))
        .enumerate()
        .map(|(i, (start, doc))| (i + 1, start, doc))
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if docs.len() < PARALLEL_DOCUMENTS || threads < 2 {
        return docs
            .iter()
            .map(|(index, start, doc)| parse_document(*index, *start, doc))
            .collect();
    }
    let chunk = docs.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = docs
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|(index, start, doc)| parse_document(*index, *start, doc))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(docs.len());
        for worker in workers {
            match worker.join() {
                Ok(parsed) => out.extend(parsed),
                // A parser panic is a bug: it goes on as it would have on one thread.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

/// The value of a top-level `key: value` line of a block-style document, when it is a plain
/// or simply quoted scalar. `None` sends the document down the general path.
fn top_level_scalar<'a>(doc: &'a str, key: &str) -> Option<&'a str> {
    let mut found = None;
    for line in doc.lines() {
        let Some(rest) = line.strip_prefix(key) else {
            continue;
        };
        let Some(value) = rest.strip_prefix(':') else {
            continue;
        };
        if found.is_some() {
            return None;
        }
        let value = match value.find(" #") {
            Some(i) => &value[..i],
            None => value,
        }
        .trim();
        let value = if value.len() >= 2
            && ((value.starts_with('"') && value.ends_with('"'))
                || (value.starts_with('\'') && value.ends_with('\'')))
        {
            &value[1..value.len() - 1]
        } else {
            value
        };
        let plain = !value.is_empty()
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'/' | b'-' | b'_'));
        if !plain {
            return None;
        }
        found = Some(value);
    }
    found
}

/// The kind of a document read from its top-level `apiVersion` and `kind` lines, without a
/// first parse; `None` when they are not written plainly or name a kind Trellis does not read.
fn quick_kind(doc: &str) -> Option<Kind> {
    Kind::from_type(
        top_level_scalar(doc, "apiVersion")?,
        top_level_scalar(doc, "kind")?,
    )
}

fn parse_document(document: usize, line: usize, doc: &str) -> ParsedDocument {
    // Most documents are plain block YAML of a kind we read: parse them once, straight into
    // their type. Anything else (and any error, for its message) takes the general path.
    if let Some(kind) = quick_kind(doc) {
        let mut failed_at = None;
        if let Ok(object) = typed(kind, doc, &mut failed_at)
            && !object.metadata().name.as_deref().unwrap_or("").is_empty()
            && validate(&object).is_ok()
        {
            return ParsedDocument::Object {
                document,
                line,
                object: Box::new(normalize(object)),
            };
        }
    }
    parse_document_slowly(document, line, doc)
}

fn parse_document_slowly(document: usize, line: usize, doc: &str) -> ParsedDocument {
    let invalid = |at: usize, object: Option<String>, message: String| ParsedDocument::Invalid {
        document,
        line: at,
        object,
        message,
    };
    let meta: TypeMeta = match serde_saphyr::from_str(doc) {
        Ok(m) => m,
        Err(e) => return invalid(error_line(&e, line), None, error_message(&e)),
    };
    let (Some(api_version), Some(kind)) = (meta.api_version, meta.kind) else {
        return invalid(
            line,
            None,
            "not a Kubernetes object: apiVersion and kind are required".into(),
        );
    };
    let name = meta
        .metadata
        .as_ref()
        .and_then(|m| m.name.clone())
        .unwrap_or_default();
    let namespace = meta.metadata.as_ref().and_then(|m| m.namespace.clone());
    let described = match &namespace {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    };
    let Some(k) = Kind::from_type(&api_version, &kind) else {
        return ParsedDocument::Skipped {
            document,
            line,
            api_version,
            kind,
            name,
        };
    };
    if name.is_empty() {
        return invalid(line, Some(described), "metadata.name is required".into());
    }
    let mut failed_at = None;
    let object = match typed(k, doc, &mut failed_at) {
        Ok(o) => o,
        Err(e) => {
            let message = match failed_at {
                Some(field) => format!("field {field}: {}", error_message(&e)),
                None => error_message(&e),
            };
            return invalid(error_line(&e, line), Some(described), message);
        }
    };
    if let Err(message) = validate(&object) {
        return invalid(line, Some(described), message);
    }
    ParsedDocument::Object {
        document,
        line,
        object: Box::new(normalize(object)),
    }
}

/// What the API server would refuse that the types let through: names that are not DNS names
/// (they also become parts of file paths and Envoy resource names), and endpoint addresses
/// that are not IP addresses.
fn validate(object: &Object) -> Result<(), String> {
    let meta = object.metadata();
    let name = meta.name.as_deref().unwrap_or_default();
    let kind = object.kind();
    let name_ok = match kind {
        // Service and Namespace names are DNS labels (a Service's also starts with a letter).
        Kind::Service => is_dns_label(name) && name.starts_with(|c: char| c.is_ascii_lowercase()),
        Kind::Namespace => is_dns_label(name),
        _ => is_dns_subdomain(name),
    };
    if !name_ok {
        return Err(format!(
            "metadata.name: {name:?} is not a valid {} name ({})",
            kind.name(),
            if matches!(kind, Kind::Service | Kind::Namespace) {
                "at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"
            } else {
                "at most 253 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
            }
        ));
    }
    if let Some(namespace) = meta.namespace.as_deref()
        && !namespace.is_empty()
        && !is_dns_label(namespace)
    {
        return Err(format!(
            "metadata.namespace: {namespace:?} is not a valid namespace name (at most 63 \
             lowercase letters, digits and '-', starting and ending with a letter or digit)"
        ));
    }
    if let Object::EndpointSlice(slice) = object
        && (slice.address_type == "IPv4" || slice.address_type == "IPv6")
    {
        for (i, endpoint) in slice.endpoints.iter().enumerate() {
            for (j, address) in endpoint.addresses.iter().enumerate() {
                let ip = address.parse::<std::net::IpAddr>();
                let matches = match &ip {
                    Ok(std::net::IpAddr::V4(_)) => slice.address_type == "IPv4",
                    Ok(std::net::IpAddr::V6(_)) => slice.address_type == "IPv6",
                    Err(_) => false,
                };
                if !matches {
                    return Err(format!(
                        "endpoints[{i}].addresses[{j}]: {address:?} is not an {} address",
                        slice.address_type
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A DNS-1123 label: 1 to 63 lowercase letters, digits and '-', starting and ending with a
/// letter or digit.
pub fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// A DNS-1123 subdomain: at most 253 characters of labels joined by dots (each label of
/// lowercase letters, digits and '-', starting and ending with a letter or digit).
pub fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Deserializes a document, noting the path of the field that failed.
fn from_str<T: serde::de::DeserializeOwned>(
    doc: &str,
    failed_at: &mut Option<String>,
) -> Result<T, serde_saphyr::Error> {
    serde_saphyr::with_deserializer_from_str(doc, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            if path != "." {
                *failed_at = Some(path);
            }
            e.into_inner()
        })
    })
}

fn typed(
    kind: Kind,
    doc: &str,
    failed_at: &mut Option<String>,
) -> Result<Object, serde_saphyr::Error> {
    /// Deserializes a document as the kind's type.
    struct Typed<'d, 'f> {
        doc: &'d str,
        failed_at: &'f mut Option<String>,
    }
    impl trellis_model::KindVisitor for Typed<'_, '_> {
        type Output = Result<Object, serde_saphyr::Error>;
        fn visit<T>(self, wrap: fn(Arc<T>) -> Object) -> Self::Output
        where
            T: serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
        {
            from_str::<T>(self.doc, self.failed_at).map(|o| wrap(Arc::new(o)))
        }
    }
    kind.visit(Typed { doc, failed_at })
}

/// What the API server would do on create: default the namespace, drop it from cluster-scoped
/// kinds, fold a Secret's `stringData` into `data`; and what Trellis never reads is dropped
/// ([`Object::trim`]).
fn normalize(mut object: Object) -> Object {
    object.trim();
    let kind = object.kind();
    let meta = object.metadata_mut();
    if kind.namespaced() {
        if meta.namespace.as_deref().unwrap_or("").is_empty() {
            meta.namespace = Some("default".to_string());
        }
    } else {
        meta.namespace = None;
    }
    if let Object::Secret(secret) = &mut object {
        fold_string_data(Arc::make_mut(secret));
    }
    object
}

fn fold_string_data(secret: &mut Secret) {
    if let Some(string_data) = secret.string_data.take() {
        let data = secret.data.get_or_insert_with(Default::default);
        for (k, v) in string_data {
            data.insert(k, k8s_openapi::ByteString(v.into_bytes()));
        }
    }
}

/// The current time as Kubernetes metadata time.
pub(crate) fn now() -> trellis_model::core::Time {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = i64::try_from(since_epoch.as_secs()).unwrap_or_default();
    trellis_model::core::Time(
        jiff::Timestamp::from_second(seconds).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_dns_names_are_reported() {
        let doc = |kind: &str, api: &str, name: &str, namespace: &str| {
            format!(
                "apiVersion: {api}\nkind: {kind}\nmetadata:\n  name: {name:?}\n  namespace: {namespace:?}\nspec: {{}}\n"
            )
        };
        for (kind, api, name, namespace) in [
            (
                "HTTPRoute",
                "gateway.networking.k8s.io/v1",
                "web/rule/0",
                "apps",
            ),
            (
                "HTTPRoute",
                "gateway.networking.k8s.io/v1",
                "../../x",
                "apps",
            ),
            ("HTTPRoute", "gateway.networking.k8s.io/v1", "Web", "apps"),
            ("HTTPRoute", "gateway.networking.k8s.io/v1", "web", "/etc/x"),
            ("HTTPRoute", "gateway.networking.k8s.io/v1", "web", "a.b"),
            ("Service", "v1", "1st", "apps"),
            ("Service", "v1", "a.b", "apps"),
        ] {
            let text = doc(kind, api, name, namespace);
            let parsed = parse_documents(&text);
            let [ParsedDocument::Invalid { message, .. }] = parsed.as_slice() else {
                panic!("{kind} {namespace}/{name}: {parsed:?}");
            };
            assert!(message.contains("is not a valid"), "{message}");
        }
        let fine = doc(
            "HTTPRoute",
            "gateway.networking.k8s.io/v1",
            "web.v2-1",
            "apps",
        );
        assert!(matches!(
            parse_documents(&fine).as_slice(),
            [ParsedDocument::Object { .. }]
        ));
    }

    #[test]
    fn endpoint_addresses_must_be_addresses_of_the_slice_type() {
        let slice = |address: &str| {
            format!(
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: s, namespace: a}}\naddressType: IPv4\nendpoints: [{{addresses: [\"{address}\"]}}]\n"
            )
        };
        assert!(matches!(
            parse_documents(&slice("10.0.0.1")).as_slice(),
            [ParsedDocument::Object { .. }]
        ));
        for bad in ["not-an-ip", "fd00::1", "10.0.0.256"] {
            let parsed = parse_documents(&slice(bad));
            let [ParsedDocument::Invalid { message, .. }] = parsed.as_slice() else {
                panic!("{bad}: {parsed:?}");
            };
            assert!(message.contains("is not an IPv4 address"), "{message}");
        }
    }

    #[test]
    fn documents_keep_their_line_numbers() {
        let text = "a: 1\n---\nb: 2\n\n---\n# only a comment\n---\nc: 3\n";
        let docs = split_documents(text);
        let non_blank: Vec<_> = docs.iter().filter(|(_, d)| !is_blank(d)).collect();
        assert_eq!(non_blank.len(), 3);
        assert_eq!(non_blank[0].0, 1);
        assert_eq!(non_blank[1].0, 2);
        assert_eq!(non_blank[2].0, 7);
        assert!(non_blank[2].1.contains("c: 3"));
    }

    #[test]
    fn type_error_points_at_the_line_in_the_file() {
        let text = "\
apiVersion: v1
kind: Namespace
metadata:
  name: a
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: g
spec:
  gatewayClassName: trellis
  listeners:
  - name: http
    port: eighty
    protocol: HTTP
";
        let docs = parse_documents(text);
        assert!(matches!(
            docs[0],
            ParsedDocument::Object {
                document: 1,
                line: 1,
                ..
            }
        ));
        match &docs[1] {
            ParsedDocument::Invalid {
                document,
                line,
                object,
                message,
            } => {
                assert_eq!(*document, 2);
                assert_eq!(*line, 14, "{message}");
                assert_eq!(object.as_deref(), Some("Gateway g"));
                assert!(!message.is_empty());
            }
            other => panic!("expected an invalid document, got {other:?}"),
        }
    }

    #[test]
    fn unknown_kinds_are_skipped_with_their_identity() {
        let docs =
            parse_documents("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n");
        assert!(
            matches!(&docs[0], ParsedDocument::Skipped { kind, name, .. } if kind == "Deployment" && name == "web")
        );
    }

    #[test]
    fn namespace_defaults_and_secret_string_data_folds() {
        let docs = parse_documents(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  tls.crt: abc\n",
        );
        let ParsedDocument::Object { object, .. } = &docs[0] else {
            panic!("{docs:?}")
        };
        let Object::Secret(secret) = &**object else {
            panic!()
        };
        assert_eq!(secret.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(secret.data.as_ref().unwrap()["tls.crt"].0, b"abc");
    }

    #[test]
    fn the_quick_path_and_the_general_path_read_the_same_objects() {
        let doc = "apiVersion: \"v1\"\nkind: Service  # the backend\nmetadata:\n  name: web\n  \
                   namespace: apps\nspec:\n  ports: [{name: http, port: 80}]\n";
        assert_eq!(quick_kind(doc), Some(Kind::Service));
        let quick = format!("{:?}", parse_document(1, 1, doc));
        let general = format!("{:?}", parse_document_slowly(1, 1, doc));
        assert_eq!(quick, general);
        // Flow style, anchors or a repeated key leave the kind to the general path.
        assert_eq!(quick_kind("{apiVersion: v1, kind: Service}"), None);
        assert_eq!(quick_kind("apiVersion: v1\nkind: &k Service\n"), None);
        assert_eq!(
            quick_kind("apiVersion: v1\nkind: Service\nkind: Secret\n"),
            None
        );
        // Nested `kind:` keys are not the object's.
        assert_eq!(
            quick_kind("apiVersion: v1\nmetadata:\n  kind: Secret\nkind: Service\n"),
            Some(Kind::Service)
        );
    }

    #[test]
    fn a_missing_name_is_reported_whichever_path_reads_the_kind() {
        let docs = parse_documents("apiVersion: v1\nkind: Service\nmetadata:\n  namespace: a\n");
        assert!(
            matches!(&docs[0], ParsedDocument::Invalid { message, .. } if message == "metadata.name is required"),
            "{docs:?}"
        );
    }

    #[test]
    fn large_streams_parsed_in_parallel_keep_document_order_and_errors() {
        let mut text = String::new();
        for i in 0..200 {
            if i == 150 {
                text.push_str("---\napiVersion: v1\nkind: Service\nmetadata:\n  name: [bad\n");
            } else {
                text.push_str(&format!(
                    "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns{i}\n"
                ));
            }
        }
        let docs = parse_documents(&text);
        assert_eq!(docs.len(), 200);
        for (i, doc) in docs.iter().enumerate() {
            match doc {
                ParsedDocument::Object {
                    document, object, ..
                } => {
                    assert_eq!(*document, i + 1);
                    assert_eq!(object.metadata().name.as_deref(), Some(&*format!("ns{i}")));
                }
                ParsedDocument::Invalid { document, line, .. } => {
                    assert_eq!((i, *document, *line), (150, 151, 150 * 5 + 5));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn broken_yaml_is_reported_with_a_line() {
        let docs = parse_documents("apiVersion: v1\nkind: Service\nmetadata:\n  name: [unclosed\n");
        assert!(
            matches!(&docs[0], ParsedDocument::Invalid { line, .. } if *line >= 4),
            "{docs:?}"
        );
    }
}
