//! What coordinators and guv read from the observers' channel
//! (announcements, queries, replays, wires, stats reports). A message that
//! decodes must encode to one that decodes again (coordinators relay them).
#![no_main]
use libfuzzer_sys::fuzz_target;
use msgflo::coordinator::observer::ObserverMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = ObserverMessage::decode(data) {
        let again = m.to_json().to_string();
        if let Err(e) = ObserverMessage::decode(again.as_bytes()) {
            panic!("{again} does not decode again: {e}");
        }
    }
});
