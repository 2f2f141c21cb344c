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

    fn components(&self, running: &Graph) -> Vec<ComponentInfo> {
        let snap = self.coordinator.snapshot();
        let mut out: BTreeMap<String, ComponentInfo> = BTreeMap::new();
        let ports = |ps: &[crate::coordinator::registry::PortStatus]| ps.iter().map(|p| (p.id.clone(), p.type_.clone().unwrap_or_default())).collect();
        // The library's components under their library names (a graph's
        // node names them so, whatever its participant announces), with
        // the ports of a participant that runs one.
        let mut names: Vec<String> = self.library.components.keys().cloned().collect();
        names.extend(self.library.component_files());
        for name in names {
            out.entry(name.clone()).or_insert_with(|| ComponentInfo { name, description: "from the component library (ports known once it runs)".into(), ..Default::default() });
        }
        for p in &snap.participants {
            let as_node = running.processes.get(&p.role).map(|n| n.component.as_str()).filter(|c| out.contains_key(*c));
            let name = match as_node {
                Some(c) => c.to_owned(),
                None if p.component.is_empty() => continue,
                None => p.component.clone(),
            };
            let c = out.entry(name.clone()).or_insert_with(|| ComponentInfo { name, ..Default::default() });
            if c.inports.is_empty() && c.outports.is_empty() {
                c.description = p.label.clone().unwrap_or_else(|| format!("seen on the broker as {}", p.role));
                c.icon = p.icon.clone();
                c.inports = ports(&p.inports);
                c.outports = ports(&p.outports);
            }
        }
        out.into_values().collect()
    }

    fn component_source(&self, name: &str) -> Result<(String, String), String> {
        self.library.source_of(name).map_err(|e| e.to_string())
    }

    fn write_component(&self, name: &str, language: &str, code: &str) -> Result<(), String> {
        let path = self.library.write_source(name, language, code).map_err(|e| e.to_string())?;
        tracing::info!("component {name} written to {} (over the runtime protocol)", path.display());
        Ok(())
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
