//! The component library (msgflo.json / package.json "msgflo" key) and
//! the command lines it makes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(lib) = msgflo::library::Library::from_json(text) {
            for component in ["A", "B", "Repeat", "x.py"] {
                let _ = lib.command(component, "role", &serde_json::json!({"in": 1}));
            }
        }
    }
});
