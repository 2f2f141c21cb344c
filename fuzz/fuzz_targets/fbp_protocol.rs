//! The FBP runtime protocol's dispatcher, fed a conversation: each line of
//! the input is one frame from one of two clients (a leading '2' picks the
//! second). The runtime keeps its state across frames, so sequences
//! (add a node, then an edge to it, remove it, start...) are explored.
#![no_main]
use std::collections::{BTreeMap, BTreeSet};

use libfuzzer_sys::fuzz_target;
use msgflo::fbp::{ComponentInfo, Host, Runtime, Settings};
use msgflo::graph::Graph;
use msgflo::Payload;

struct NullHost;

impl Host for NullHost {
    fn set_graph(&self, graph: Graph) -> Result<(), String> {
        graph.validate()
    }
    fn deliver(&self, _: &str, _: &str, _: Payload) -> Result<(), String> {
        Ok(())
    }
    fn tap(&self, _: BTreeSet<(String, String)>) {}
    fn components(&self, _: &Graph) -> Vec<ComponentInfo> {
        vec![ComponentInfo { name: "Repeat".into(), inports: vec![("in".into(), "any".into())], outports: vec![("out".into(), "any".into())], ..Default::default() }]
    }
    fn busy(&self, _: &[String]) -> bool {
        false
    }
    fn depths(&self) -> BTreeMap<String, u64> {
        BTreeMap::from([("a.IN".to_owned(), 3)])
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let settings = Settings {
        id: "fuzz".into(),
        label: "fuzz".into(),
        secret: None,
        main_graph: "main".into(),
        ide: "https://ide.invalid".into(),
        broker: "memory://fuzz".into(),
        namespace: Some("ns".into()),
    };
    let mut rt = Runtime::new(settings, Graph::default(), Box::new(NullHost));
    rt.connect(1);
    rt.connect(2);
    for line in text.lines().take(64) {
        let (client, frame) = match line.strip_prefix('2') {
            Some(rest) => (2, rest),
            None => (1, line),
        };
        let _ = rt.handle(client, frame);
    }
    rt.disconnect(2);
    rt.disconnect(1);
});
