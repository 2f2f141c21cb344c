//! The JSON graph loader (the fbp-protocol / noflo graph format).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(graph) = msgflo::graph::json::parse(text) {
            let _ = graph.validate();
        }
    }
});
