//! Discovery messages as they arrive from the broker, and participant
//! definitions as the bindings hand them over.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = msgflo::discovery::parse_discovery(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(def) = msgflo::Definition::from_json(text) {
            let _ = def.instantiate("role");
        }
    }
});
