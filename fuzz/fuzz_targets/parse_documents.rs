//! The YAML document parser on any text: no panic, and every document it returns is accounted
//! for (an object, a skipped kind, or a located problem) with a line inside the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_sources::{ParsedDocument, parse_documents};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // YAML's lines: LF, CRLF, and a lone CR each end one.
    let bytes = text.as_bytes();
    let breaks = bytes
        .iter()
        .enumerate()
        .filter(|(i, b)| **b == b'\n' || (**b == b'\r' && bytes.get(i + 1) != Some(&b'\n')))
        .count();
    let lines = breaks + 1;
    for doc in parse_documents(&text) {
        let line = match doc {
            ParsedDocument::Object { line, .. }
            | ParsedDocument::Skipped { line, .. }
            | ParsedDocument::Invalid { line, .. } => line,
        };
        assert!(line >= 1 && line <= lines + 1, "line {line} of {lines}");
    }
});
