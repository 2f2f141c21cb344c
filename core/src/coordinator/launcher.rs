//! Which participants a coordinator starts, and with what command: the
//! graph's participant roles (minus `--ignore`, within `--only`), each from
//! the component library, run in the library's folder with the broker URL
//! in `MSGFLO_BROKER`. The coordinator calls this again whenever the graph
//! changes, so adding a node starts a participant and removing it stops one.

use std::path::{Path, PathBuf};

use super::supervisor::{Spec, Supervisor};
use super::wiring;
use crate::graph::Graph;
use crate::library::Library;

pub struct Launcher {
    pub library: Library,
    /// Where commands run (the library file's folder).
    pub dir: PathBuf,
    /// Given to every child as `MSGFLO_BROKER`.
    pub broker_url: String,
    /// Start only these roles (empty: all).
    pub only: Vec<String>,
    /// Never start these roles (they are still wired when they appear).
    pub ignore: Vec<String>,
    pub supervisor: Supervisor,
}

impl Launcher {
    /// The roles to run for `graph`.
    pub fn roles(&self, graph: &Graph) -> Vec<String> {
        graph
            .processes
            .keys()
            .filter(|r| wiring::is_participant(graph, r))
            .filter(|r| self.only.is_empty() || self.only.contains(r))
            .filter(|r| !self.ignore.contains(r))
            .cloned()
            .collect()
    }

    /// How to start `role`: the library's command, with the role's IIPs
    /// for `#IIPS`, a relative program path taken from the library folder.
    pub fn spec(&self, graph: &Graph, role: &str) -> crate::Result<Spec> {
        let process = graph
            .processes
            .get(role)
            .ok_or_else(|| crate::Error::InvalidDefinition(format!("no process {role:?} in the graph")))?;
        let iips: serde_json::Map<String, serde_json::Value> = graph
            .connections
            .iter()
            .filter(|c| c.src.is_none() && c.tgt.process == role)
            .filter_map(|c| Some((c.tgt.port.clone(), c.data.clone()?)))
            .collect();
        let mut argv = self.library.command(&process.component, role, &serde_json::Value::Object(iips))?;
        if let Some(first) = argv.first_mut() {
            // `msgflo register ...` (YAML components) runs this very program
            // when it is the msgflo command, whatever PATH says.
            if first == "msgflo" {
                if let Ok(exe) = std::env::current_exe() {
                    if exe.file_name().is_some_and(|n| n == "msgflo") {
                        *first = exe.display().to_string();
                    }
                }
            }
            let local = self.dir.join(&*first);
            if first.contains('/') && !Path::new(first).is_absolute() && local.exists() {
                *first = local.display().to_string();
            }
        }
        Ok(Spec {
            role: role.to_owned(),
            instance: 0,
            argv,
            env: vec![("MSGFLO_BROKER".into(), self.broker_url.clone())],
            dir: Some(self.dir.clone()),
        })
    }
}
