//! Broker URLs (MSGFLO_BROKER, --broker) and the password masking of
//! anything that may hold one.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(url) = msgflo::broker::BrokerUrl::parse(text) {
            let _ = url.redacted();
        }
        let _ = msgflo::broker::redact(text);
    }
});
