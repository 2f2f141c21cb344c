//! The running system behind the protocol: a [`Coordinator`] (wiring,
//! participants, taps) and the component library it starts participants
//! from.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use super::{ComponentInfo, Host};
use crate::coordinator::{Coordinator, Snapshot};
use crate::graph::{Graph, PortRef};
use crate::library::Library;
use crate::Payload;

pub struct CoordinatorHost {
    pub coordinator: Arc<Coordinator>,
    pub library: Library,
    /// Messages waiting per inport queue (AMQP), refreshed by the server.
    pub depths: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Host for CoordinatorHost {
    fn set_graph(&self, graph: Graph) -> Result<(), String> {
        self.coordinator.set_graph(graph).map_err(|e| e.to_string())
    }

    fn deliver(&self, role: &str, port: &str, payload: Payload) -> Result<(), String> {
        let tgt = PortRef { process: role.to_owned(), port: port.to_owned(), index: None };
        self.coordinator.deliver(tgt, payload).map_err(|e| e.to_string())
    }

    fn tap(&self, outports: BTreeSet<(String, String)>) {
        let _ = self.coordinator.tap(outports);
    }

    fn components(&self) -> Vec<ComponentInfo> {
        let snap = self.coordinator.snapshot();
        let mut out: BTreeMap<String, ComponentInfo> = BTreeMap::new();
        // Discovered participants say what their ports are.
        for p in &snap.participants {
            if p.component.is_empty() {
                continue;
            }
            let ports = |ps: &[crate::coordinator::registry::PortStatus]| ps.iter().map(|p| (p.id.clone(), p.type_.clone().unwrap_or_default())).collect();
            out.entry(p.component.clone()).or_insert_with(|| ComponentInfo {
                name: p.component.clone(),
                description: p.label.clone().unwrap_or_else(|| format!("seen on the broker as {}", p.role)),
                icon: p.icon.clone(),
                inports: ports(&p.inports),
                outports: ports(&p.outports),
            });
        }
        // Library components nobody runs yet: their ports are known once a
        // participant of theirs announces itself.
        for name in self.library.components.keys() {
            out.entry(name.clone()).or_insert_with(|| ComponentInfo { name: name.clone(), description: "from the component library (not running yet)".into(), ..Default::default() });
        }
        out.into_values().collect()
    }

    fn snapshot(&self) -> Snapshot {
        self.coordinator.snapshot()
    }

    fn depths(&self) -> BTreeMap<String, u64> {
        self.depths.lock().unwrap().clone()
    }

    fn busy(&self, roles: &[String]) -> bool {
        let snap = self.coordinator.snapshot();
        let depths = self.depths.lock().unwrap();
        snap.participants
            .iter()
            .filter(|p| roles.contains(&p.role))
            .flat_map(|p| p.inports.iter())
            .filter_map(|port| port.queue.as_ref())
            .any(|q| depths.get(q).is_some_and(|d| *d > 0))
    }
}
