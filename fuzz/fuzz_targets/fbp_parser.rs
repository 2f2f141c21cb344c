//! The `.fbp` graph parser: any text gives a graph or an error, and what
//! was parsed can be validated.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(graph) = msgflo::graph::fbp::parse(text) {
            let _ = graph.validate();
        }
    }
});
