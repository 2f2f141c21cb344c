//! Fuzzing smoke, without a fuzzer: every decoder of outside input gets
//! thousands of mutated inputs (byte flips, inserted syntax tokens, cut
//! and doubled spans, truncations of valid seeds) from a fixed-seed PRNG,
//! and must answer with a value or an error, never a panic. Deterministic,
//! seconds in CI; `MSGFLO_FUZZ_ITERATIONS` runs more, `MSGFLO_FUZZ_SEED`
//! another sequence. A stand-in for cargo-fuzz targets (the nightly
//! toolchain is there, cargo-fuzz is not installed); any input found to
//! panic belongs here as a regression seed.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

thread_local! {
    /// Set while this thread runs inputs: their panics are findings, not noise.
    static FUZZING: Cell<bool> = const { Cell::new(false) };
}

/// One hook for the process (tests run in parallel threads): silent for
/// the inputs' panics, the default output for everything else.
fn quiet_while_fuzzing() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !FUZZING.with(|f| f.get()) {
                default(info);
            }
        }));
    });
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const TOKENS: &[&str] = &[
    "->", "(", ")", "'", "\"", "{", "}", "[", "]", ":", ",", "\\", "\0", "é", "#", "\n", " ", "OUT", "IN", "INPORT=", "OUTPORT=",
    "EXPORT=", ".", "=", "%", "%zz", "?", "&", "@", "//", "\"payload\"", "\"inports\"", "null", "true", "1e999", "-1", "[{", "}]",
    "\u{feff}", "\u{10ffff}", "heartbeat=", "qos=", "amqp://", "mqtt://",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = v.len();
        match rng.below(6) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(len + 1);
                let t = TOKENS[rng.below(TOKENS.len())].as_bytes();
                v.splice(i..i, t.iter().copied());
            }
            2 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(16)).min(len);
                v.drain(a..b);
            }
            3 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(32)).min(len);
                let span: Vec<u8> = v[a..b].to_vec();
                let at = rng.below(len + 1);
                v.splice(at..at, span);
            }
            4 => v.truncate(rng.below(len + 1)),
            _ => {
                let i = rng.below(len + 1);
                v.insert(i, rng.next() as u8);
            }
        }
    }
    v
}

/// Run `f` on mutations of `seeds`; panic with every input that panicked.
fn smoke(name: &str, seeds: &[&str], f: impl Fn(&[u8])) {
    let iterations: usize = std::env::var("MSGFLO_FUZZ_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(5_000);
    let seed: u64 = std::env::var("MSGFLO_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x6d73_6766_6c6f);
    let mut rng = Rng(seed ^ name.len() as u64 ^ 0x9e37_79b9_7f4a_7c15);
    let mut findings = Vec::new();
    quiet_while_fuzzing();
    FUZZING.with(|f| f.set(true));
    for s in seeds {
        if catch_unwind(AssertUnwindSafe(|| f(s.as_bytes()))).is_err() {
            findings.push(s.as_bytes().to_vec());
        }
    }
    for _ in 0..iterations {
        let s = seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, s.as_bytes());
        if catch_unwind(AssertUnwindSafe(|| f(&input))).is_err() {
            findings.push(input);
        }
    }
    FUZZING.with(|f| f.set(false));
    println!("FUZZ {name}: {} executions, {} panics", iterations + seeds.len(), findings.len());
    let shown: Vec<String> = findings.iter().take(5).map(|i| format!("{:?}", String::from_utf8_lossy(i))).collect();
    assert!(findings.is_empty(), "{name}: inputs that panicked: {}", shown.join(", "));
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const FBP: &[&str] = &[
    include_str!("../../examples/temperature/graph.fbp"),
    "'\"hi\"' -> IN a(Repeat)\na OUT -> IN b(Repeat)\n",
    "INPORT=a.IN:IN\nOUTPORT=b.OUT:OUT\na(Repeat) OUT -> IN b(Repeat) # comment\n'5' -> IN[0] a\n",
    "a(foo/Bar:key=value) OUT[1] -> IN c(Baz), d(Qux)\n",
];

#[test]
fn fbp_parser() {
    smoke("fbp parser", FBP, |b| {
        let _ = msgflo::graph::fbp::parse(&text(b));
    });
}

#[test]
fn json_graph_loader() {
    let seeds = [
        r#"{"properties":{"name":"g"},"processes":{"a":{"component":"Repeat","metadata":{"x":1}},"b":{"component":"Repeat"}},
           "connections":[{"src":{"process":"a","port":"out"},"tgt":{"process":"b","port":"in"}},{"data":"hi","tgt":{"process":"a","port":"in","index":0}}],
           "inports":{"IN":{"process":"a","port":"in"}},"outports":{"OUT":{"process":"b","port":"out"}}}"#,
        r#"{"processes":{},"connections":[]}"#,
    ];
    smoke("json graph loader", &seeds, |b| {
        let _ = msgflo::graph::json::parse(&text(b));
    });
}

#[test]
fn library_config() {
    let seeds = [
        include_str!("../../examples/temperature/msgflo.json"),
        r#"{"msgflo":{"components":{"A":"python3 a.py #ROLE","B":"node b.js #ROLE #IIPS"},"handlers":{".py":"python3 #FILENAME #ROLE"}}}"#,
        r#"{"components":{"A":"'quoted arg' \"x y\" #ROLE"}}"#,
    ];
    smoke("library config", &seeds, |b| {
        if let Ok(lib) = msgflo::library::Library::from_json(&text(b)) {
            let _ = lib.command("A", "role", &serde_json::json!({"in": 1}));
        }
    });
}

#[test]
fn discovery_decoder() {
    let seeds = [
        r#"{"protocol":"discovery","command":"participant","payload":{"id":"a-1","role":"a","component":"Repeat","label":"l","icon":"i",
           "inports":[{"id":"in","type":"any","queue":"a.IN"}],"outports":[{"id":"out","type":"any","queue":"a.OUT"}]}}"#,
        r#"{"protocol":"discovery","command":"participant","payload":{"role":"a","component":"C","inports":[],"outports":[]}}"#,
    ];
    smoke("discovery decoder", &seeds, |b| {
        let _ = msgflo::discovery::parse_discovery(b);
    });
    let defs = [r#"{"component":"Repeat","inports":[{"id":"in","type":"any","hidden":false}],"outports":[{"id":"out","persistent":false}]}"#];
    smoke("participant definition", &defs, |b| {
        if let Ok(d) = msgflo::Definition::from_json(&text(b)) {
            let _ = d.instantiate("role");
        }
    });
}

#[test]
fn broker_url() {
    let seeds = [
        "amqp://guest:guest@localhost:5672/vhost?heartbeat=5",
        "amqps://us%40er:p%3Ass@h.local:1234/my%2Fvhost",
        "mqtt://127.0.0.1:1883?qos=1&heartbeat=3",
        "mqtts://[::1]:8883",
        "memory://name",
    ];
    smoke("broker url", &seeds, |b| {
        if let Ok(u) = msgflo::broker::BrokerUrl::parse(&text(b)) {
            let _ = u.redacted();
        }
        let _ = msgflo::broker::redact(&text(b));
    });
}

#[test]
fn protocol_data() {
    let seeds = ["{\"a\": [1, 2.5, \"x\"]}", "plain text", "\u{0}\u{1}binary", "{\"base64\": \"AAEC\"}"];
    smoke("protocol data", &seeds, |b| {
        let v = msgflo::fbp::data_value(&msgflo::Payload::new(b.to_vec()));
        let _ = msgflo::fbp::payload_of(&v);
    });
}

/// The harness itself can fail: a decoder that panics is caught.
#[test]
fn the_harness_finds_a_panic() {
    let caught = catch_unwind(|| {
        smoke("self-test", &["a(B) OUT -> IN c(D)"], |b| {
            assert!(!b.contains(&b'#'), "boom");
        })
    });
    assert!(caught.is_err(), "an input with '#' among 5000 mutations, caught as a finding");
}
