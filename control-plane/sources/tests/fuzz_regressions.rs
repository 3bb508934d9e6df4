//! Inputs that once failed the `parse_documents` fuzz target (`fuzz/regressions/parse_documents`),
//! replayed with the target's own check: every document is accounted for, on a line inside the
//! text (YAML's lines: LF, CRLF and a lone CR each end one).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use trellis_sources::{ParsedDocument, parse_documents};

#[test]
fn inputs_that_once_failed_the_parser_fuzz_target_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/parse_documents");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&data);
        let bytes = text.as_bytes();
        let breaks = bytes
            .iter()
            .enumerate()
            .filter(|(i, b)| **b == b'\n' || (**b == b'\r' && bytes.get(i + 1) != Some(&b'\n')))
            .count();
        for doc in parse_documents(&text) {
            let line = match doc {
                ParsedDocument::Object { line, .. }
                | ParsedDocument::Skipped { line, .. }
                | ParsedDocument::Invalid { line, .. } => line,
            };
            assert!(line >= 1 && line <= breaks + 2, "line {line}");
        }
        count += 1;
    }
    assert!(count > 0, "no regression inputs in {}", dir.display());
}
