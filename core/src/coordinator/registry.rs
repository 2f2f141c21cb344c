//! The live picture of participants, built from discovery messages.
//!
//! One entry per role holds the latest definition announced for it and every
//! instance (participant id) seen with that role. An instance that misses its
//! heartbeats for longer than the expiry is marked gone (the original kept
//! every participant forever). A role keeps its last definition after all its
//! instances are gone: its queues still exist on the broker, the edges to
//! them stay wired, and work queues up until an instance returns.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::discovery::{Announced, AnnouncedPort};

/// One participant process, by id.
#[derive(Debug, Clone)]
pub struct Instance {
    pub first_seen: Instant,
    pub last_seen: Instant,
    /// Discovery messages received from it.
    pub heartbeats: u64,
    pub alive: bool,
}

/// A role and what is known about it.
#[derive(Debug, Clone)]
pub struct Role {
    pub definition: Announced,
    pub instances: BTreeMap<String, Instance>,
}

impl Role {
    pub fn alive(&self) -> usize {
        self.instances.values().filter(|i| i.alive).count()
    }

    pub fn last_seen(&self) -> Option<Instant> {
        self.instances.values().map(|i| i.last_seen).max()
    }

    /// The queue of a port, matched case-insensitively (the `.fbp` DSL
    /// spells ports in any case; discovery names them as the participant
    /// does).
    pub fn queue(&self, port: &str, inport: bool) -> Result<Option<&str>, String> {
        let ports = if inport { &self.definition.inports } else { &self.definition.outports };
        match ports.iter().find(|p| p.id.eq_ignore_ascii_case(port)) {
            Some(AnnouncedPort { queue, .. }) => Ok(queue.as_deref()),
            None => Err(format!(
                "participant {:?} ({}) has no {} {port:?}; it has: {}",
                self.definition.role,
                self.definition.component,
                if inport { "inport" } else { "outport" },
                ports.iter().map(|p| p.id.as_str()).collect::<Vec<_>>().join(", ")
            )),
        }
    }
}

/// What one discovery message changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// A role not seen before.
    NewRole,
    /// A new participant id for a known role (a restart, or another worker).
    NewInstance,
    /// A known instance announced a different definition (ports, queues).
    Changed,
    /// A gone instance is back.
    Returned,
    /// Nothing new: a heartbeat.
    Heartbeat,
}

/// All roles seen on the broker.
#[derive(Debug)]
pub struct Registry {
    roles: BTreeMap<String, Role>,
    expiry: Duration,
    /// Discovery messages handled (for status and benchmarks).
    pub observed: u64,
}

impl Registry {
    /// `expiry`: how long an instance may stay silent before it counts as
    /// gone. Participants announce every `period / 2.2`; three missed
    /// heartbeats is a good expiry.
    pub fn new(expiry: Duration) -> Self {
        Registry { roles: BTreeMap::new(), expiry, observed: 0 }
    }

    pub fn expiry(&self) -> Duration {
        self.expiry
    }

    /// Record a discovery message seen at `at`.
    pub fn observe(&mut self, a: Announced, at: Instant) -> Observed {
        self.sighting(a, at, false)
    }

    /// Record another coordinator's replay of a discovery message it saw
    /// at `at`: it makes an instance known (or alive again, when recent),
    /// but it is a copy, not a heartbeat of its own, so it is not counted
    /// as one (queries from other observers would inflate the count).
    pub fn observe_replay(&mut self, a: Announced, at: Instant) -> Observed {
        self.sighting(a, at, true)
    }

    fn sighting(&mut self, a: Announced, at: Instant, replay: bool) -> Observed {
        self.observed += 1;
        let id = a.id.clone();
        let role = match self.roles.get_mut(&a.role) {
            Some(r) => r,
            None => {
                let mut instances = BTreeMap::new();
                let alive = at.elapsed() < self.expiry; // an old sighting is of one already gone
                instances.insert(id, Instance { first_seen: at, last_seen: at, heartbeats: 1, alive });
                self.roles.insert(a.role.clone(), Role { definition: a, instances });
                return Observed::NewRole;
            }
        };
        let changed = role.definition != a;
        let outcome = match role.instances.get_mut(&id) {
            None => {
                let alive = at.elapsed() < self.expiry;
                role.instances.insert(id, Instance { first_seen: at, last_seen: at, heartbeats: 1, alive });
                Observed::NewInstance
            }
            Some(inst) => {
                if !replay {
                    inst.heartbeats += 1;
                }
                // A replayed (older) sighting never moves last_seen back.
                if at > inst.last_seen {
                    inst.last_seen = at;
                }
                let was_gone = !inst.alive;
                inst.alive = at.elapsed() < self.expiry;
                match (was_gone && inst.alive, changed) {
                    (true, _) => Observed::Returned,
                    (false, true) => Observed::Changed,
                    (false, false) => Observed::Heartbeat,
                }
            }
        };
        if changed {
            role.definition = a;
        }
        outcome
    }

    /// Mark instances silent for longer than the expiry as gone; returns
    /// the (role, id) pairs that went just now. Instances gone for ten
    /// expiries are forgotten (the role stays).
    pub fn expire(&mut self, now: Instant) -> Vec<(String, String)> {
        let mut gone = Vec::new();
        for (name, role) in &mut self.roles {
            role.instances.retain(|_, i| now.saturating_duration_since(i.last_seen) < self.expiry * 10);
            for (id, inst) in &mut role.instances {
                if inst.alive && now.saturating_duration_since(inst.last_seen) >= self.expiry {
                    inst.alive = false;
                    gone.push((name.clone(), id.clone()));
                }
            }
        }
        gone
    }

    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    pub fn roles(&self) -> impl Iterator<Item = (&String, &Role)> {
        self.roles.iter()
    }

    pub fn len(&self) -> usize {
        self.roles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.roles.is_empty()
    }

    /// A plain-data view for status output.
    pub fn status(&self, now: Instant) -> Vec<RoleStatus> {
        self.roles
            .values()
            .map(|r| RoleStatus {
                role: r.definition.role.clone(),
                component: r.definition.component.clone(),
                alive: r.alive(),
                instances: r.instances.len(),
                last_seen_secs: r.last_seen().map(|t| now.saturating_duration_since(t).as_secs_f64()),
                heartbeats: r.instances.values().map(|i| i.heartbeats).sum(),
                label: r.definition.label.clone().filter(|l| !l.is_empty()),
                icon: r.definition.icon.clone().filter(|i| !i.is_empty()),
                inports: ports(&r.definition.inports),
                outports: ports(&r.definition.outports),
            })
            .collect()
    }

    /// A participant process ended (its supervisor saw it exit): its
    /// instance is gone now, not after the expiry. `id` is the participant
    /// id the process was given; a participant that chose its own id (the
    /// original libraries do) is found only when it is the role's single
    /// live instance and `single` says the role runs one process.
    pub fn mark_gone(&mut self, role: &str, id: &str, single: bool) -> bool {
        let Some(r) = self.roles.get_mut(role) else { return false };
        if let Some(i) = r.instances.get_mut(id) {
            let was = i.alive;
            i.alive = false;
            return was;
        }
        let alive: Vec<&String> = r.instances.iter().filter(|(_, i)| i.alive).map(|(k, _)| k).collect();
        if single && alive.len() == 1 {
            let k = alive[0].clone();
            r.instances.get_mut(&k).expect("listed").alive = false;
            return true;
        }
        false
    }
}

fn ports(ps: &[AnnouncedPort]) -> Vec<PortStatus> {
    ps.iter().map(|p| PortStatus { id: p.id.clone(), type_: p.type_.clone(), queue: p.queue.clone(), depth: None, missing: false }).collect()
}

/// One role, as `msgflo status` shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct RoleStatus {
    pub role: String,
    pub component: String,
    /// Instances currently alive (heartbeating).
    pub alive: usize,
    /// Instances seen (alive or gone).
    pub instances: usize,
    /// Seconds since the last discovery message of any instance.
    pub last_seen_secs: Option<f64>,
    /// Discovery messages received for this role.
    pub heartbeats: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub icon: Option<String>,
    pub inports: Vec<PortStatus>,
    pub outports: Vec<PortStatus>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct PortStatus {
    pub id: String,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none", default)]
    pub type_: Option<String>,
    pub queue: Option<String>,
    /// Messages waiting (AMQP inports, filled in by `msgflo status`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub depth: Option<u64>,
    /// The queue does not exist on the broker (AMQP; `msgflo status`).
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub missing: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(role: &str, id: &str, q: &str) -> Announced {
        let text = format!(
            r#"{{"protocol":"discovery","command":"participant","payload":{{"id":"{id}","role":"{role}","component":"C","inports":[{{"id":"in","queue":"{q}"}}],"outports":[]}}}}"#
        );
        crate::discovery::parse_discovery(text.as_bytes()).unwrap()
    }

    #[test]
    fn roles_instances_and_changes() {
        let mut r = Registry::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(r.observe(ann("a", "a-1", "a.IN"), t0), Observed::NewRole);
        assert_eq!(r.observe(ann("a", "a-1", "a.IN"), t0), Observed::Heartbeat);
        assert_eq!(r.observe(ann("a", "a-2", "a.IN"), t0), Observed::NewInstance);
        assert_eq!(r.observe(ann("a", "a-2", "a.IN2"), t0), Observed::Changed);
        let role = r.role("a").unwrap();
        assert_eq!(role.alive(), 2);
        assert_eq!(role.queue("IN", true).unwrap(), Some("a.IN2"), "ports match in any case");
        let err = role.queue("nope", true).unwrap_err();
        assert!(err.contains("no inport \"nope\"") && err.contains("it has: in"), "{err}");
        assert_eq!(r.observed, 4);
    }

    #[test]
    fn silent_instances_expire_and_return() {
        let mut r = Registry::new(Duration::from_millis(50));
        let t0 = Instant::now();
        r.observe(ann("a", "a-1", "a.IN"), t0);
        r.observe(ann("b", "b-1", "b.IN"), t0);
        assert!(r.expire(t0 + Duration::from_millis(10)).is_empty());
        // b keeps announcing, a does not.
        std::thread::sleep(Duration::from_millis(60));
        r.observe(ann("b", "b-1", "b.IN"), Instant::now());
        let gone = r.expire(Instant::now());
        assert_eq!(gone, vec![("a".to_string(), "a-1".to_string())]);
        assert!(r.expire(Instant::now()).is_empty(), "reported once");
        assert_eq!(r.role("a").unwrap().alive(), 0);
        assert_eq!(r.role("a").unwrap().definition.inports[0].queue.as_deref(), Some("a.IN"), "definition kept");
        assert_eq!(r.observe(ann("a", "a-1", "a.IN"), Instant::now()), Observed::Returned);
        assert_eq!(r.role("a").unwrap().alive(), 1);
        // Forgotten after ten expiries; the role stays.
        let later = Instant::now() + Duration::from_millis(600);
        r.expire(later);
        assert_eq!(r.role("a").unwrap().instances.len(), 0);
        assert!(r.role("a").is_some());
    }

    #[test]
    fn a_replayed_old_sighting_does_not_revive() {
        let mut r = Registry::new(Duration::from_millis(50));
        let old = Instant::now();
        std::thread::sleep(Duration::from_millis(60));
        r.observe(ann("a", "a-1", "a.IN"), Instant::now());
        r.observe_replay(ann("a", "a-1", "a.IN"), old);
        assert!(r.role("a").unwrap().instances["a-1"].last_seen > old);
    }

    #[test]
    fn replays_make_instances_known_but_are_not_heartbeats() {
        let mut r = Registry::new(Duration::from_secs(60));
        let now = Instant::now();
        assert_eq!(r.observe_replay(ann("a", "a-1", "a.IN"), now), Observed::NewRole);
        assert_eq!(r.role("a").unwrap().instances["a-1"].heartbeats, 1, "a first sighting");
        for _ in 0..3 {
            r.observe_replay(ann("a", "a-1", "a.IN"), now);
        }
        r.observe(ann("a", "a-1", "a.IN"), now);
        assert_eq!(r.role("a").unwrap().instances["a-1"].heartbeats, 2, "the replays were copies");
    }
}
