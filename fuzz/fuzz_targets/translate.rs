//! The whole translator on generated inputs (the bytes choose what `trellis-testgen` writes,
//! hostile values included): the YAML is parsed as the file provider would, translated, and
//! rendered to Envoy resources. No panic, and translation is deterministic. Envoy's validate
//! mode judges a sample of these inputs: `TRELLIS_VALIDATE_CORPUS=fuzz/corpus/translate cargo
//! test -p trellis-translate --test envoy_validate`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_model::InputSet;
use trellis_sources::{ParsedDocument, parse_documents};
use trellis_testgen::{Bytes, generate};
use trellis_translate::{Options, translate};

fuzz_target!(|data: &[u8]| {
    let yaml = generate(&mut Bytes::new(data));
    let mut input = InputSet::default();
    for doc in parse_documents(&yaml) {
        if let ParsedDocument::Object { object, .. } = doc {
            input.insert(*object);
        }
    }
    let options = Options::default();
    let first = translate(&input, &options);
    let second = translate(&input, &options);
    assert!(first == second, "translation is not deterministic");
    let _ = trellis_translate::xds::snapshots(&first.ir);
});
