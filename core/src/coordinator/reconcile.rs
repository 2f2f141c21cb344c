//! Reconciling: make the broker match the graph as far as participants
//! are known (wire and unwire edges, send IIPs and held values), and the
//! running participants match the graph (start, stop, scale).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::wiring::{self, Pending, Wire};
use super::{Event, Iip, State, DELIVER_WAIT};
use crate::transport::Target;
use crate::{Error, Result};

impl State {
    /// Make the broker match the graph as far as participants are known,
    /// send IIPs whose edges exist, and publish a new snapshot.
    pub(super) async fn reconcile(&mut self) {
        self.resolution = wiring::resolve(&self.graph, &self.registry);
        let wanted: BTreeSet<Wire> = self.resolution.wires.keys().cloned().collect();
        for w in self.applied.difference(&wanted).cloned().collect::<Vec<_>>() {
            match self.unapply(&w).await {
                Ok(()) => info!("unwired {w}"),
                Err(e) => warn!("cannot unwire {w}: {e}"),
            }
            self.applied.remove(&w);
        }
        self.failed.retain(|w, _| wanted.contains(w));
        let now = Instant::now();
        for w in wanted.difference(&self.applied).cloned().collect::<Vec<_>>() {
            if !self.wire {
                break;
            }
            if self.failed.get(&w).is_some_and(|(retry, _)| *retry > now) {
                continue;
            }
            match self.apply(&w).await {
                Ok(()) => {
                    info!("wired {w}");
                    self.failed.remove(&w);
                    self.applied.insert(w);
                }
                Err(e) => {
                    if !self.failed.contains_key(&w) {
                        warn!("cannot wire {w}: {e} (retrying every 5 s)");
                    }
                    self.failed.insert(w, (now + Duration::from_secs(5), e.to_string()));
                }
            }
        }
        for (edge, why) in &self.resolution.pending {
            if let Pending::Invalid { reason } = why {
                if self.reported.insert(format!("{edge}: {reason}")) {
                    warn!("edge {edge} cannot be wired: {reason}");
                }
            }
        }
        if self.wire {
            self.taps.reconcile(self.transport.as_ref(), &self.registry).await;
        }
        self.send_iips().await;
        self.send_held().await;
        self.snapshot_due = true;
    }

    /// Deliver held values whose target is ready; drop the ones that
    /// waited too long.
    async fn send_held(&mut self) {
        if !self.wire || self.held.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut keep = Vec::new();
        for (tgt, payload, since) in std::mem::take(&mut self.held) {
            let role = &tgt.process;
            let ready = wiring::iip_ready(&self.graph, &self.resolution, &self.registry, role, |w| self.applied.contains(w)).is_ok();
            let queue = self.registry.role(role).and_then(|r| r.queue(&tgt.port, true).ok().flatten()).map(str::to_owned);
            match (ready, queue) {
                (true, Some(q)) => match self.transport.publish(Target::Queue(q), payload.clone(), true).await {
                    Ok(()) => {
                        let _ = self.events.send(Event::Sent { role: role.clone(), port: tgt.port.clone(), payload });
                    }
                    Err(e) => warn!("cannot send a value to {role}.{}: {e}", tgt.port),
                },
                _ if now.duration_since(since) > DELIVER_WAIT => {
                    warn!("dropped a value for {role}.{}: the participant did not appear within {} s", tgt.port, DELIVER_WAIT.as_secs());
                }
                _ => keep.push((tgt, payload, since)),
            }
        }
        self.held = keep;
    }

    /// Start the graph's participants that are not running, stop the ones
    /// no longer in it. Called at start and when the graph changes.
    pub(super) async fn reconcile_processes(&mut self) {
        let Some(l) = &self.launcher else { return };
        let wanted = l.roles(&self.graph);
        let count = |role: &str| self.scale.get(role).copied().unwrap_or(1);
        // Newest first, so a scale-down keeps the oldest instances.
        let mut running = l.supervisor.instances().await;
        running.reverse();
        for (role, i) in running {
            if !wanted.contains(&role) {
                l.supervisor.stop_instance(&role, i).await;
                if i == 0 {
                    info!(role = %role, "stopped participant {role}: no longer in the graph");
                }
            } else if i >= count(&role) {
                l.supervisor.stop_instance(&role, i).await;
                info!(role = %role, "stopped instance {i} of {role} (scaled to {})", count(&role));
            }
        }
        self.not_started.clear();
        for role in wanted {
            let started = match l.spec(&self.graph, &role) {
                Ok(spec) => {
                    let mut result = Ok(());
                    for i in 0..count(&role) {
                        let mut s = spec.clone();
                        s.instance = i;
                        s.env.extend(self.role_env.get(&role).cloned().unwrap_or_default());
                        if let Err(e) = l.supervisor.start(s).await {
                            result = Err(e);
                            break;
                        }
                    }
                    result
                }
                Err(e) => Err(e),
            };
            if let Err(e) = started {
                warn!(role = %role, "not starting {role}: {e}; it is wired when it appears on the broker");
                self.not_started.insert(role, e.to_string());
            }
        }
        self.snapshot_due = true;
    }

    async fn apply(&self, w: &Wire) -> Result<()> {
        if !self.wire {
            return Err(Error::broker("wire", "this observer does not change the broker"));
        }
        if let Some(f) = &self.forwarder {
            return match w {
                Wire::PubSub { src, tgt } | Wire::RoundRobin { src, tgt } => f.add(src, tgt).await,
                Wire::DeadLetter { .. } => Err(Error::broker("dead-letter route", "needs AMQP (MQTT has no nack)")),
            };
        }
        crate::edge::add(self.transport.as_ref(), w).await
    }

    async fn unapply(&self, w: &Wire) -> Result<()> {
        if let Some(f) = &self.forwarder {
            if let Wire::PubSub { src, tgt } | Wire::RoundRobin { src, tgt } = w {
                f.remove(src, tgt);
            }
            return Ok(());
        }
        crate::edge::remove(self.transport.as_ref(), w).await
    }

    async fn send_iips(&mut self) {
        if !self.wire {
            return;
        }
        let mut sent_now = Vec::new();
        for (i, Iip { conn: c, sent, at_start }) in self.iips.iter().enumerate() {
            if sent.is_some() {
                continue;
            }
            let role = &c.tgt.process;
            if wiring::iip_ready(&self.graph, &self.resolution, &self.registry, role, |w| self.applied.contains(w)).is_err() {
                continue;
            }
            let Some(Ok(Some(queue))) = self.registry.role(role).map(|r| r.queue(&c.tgt.port, true)) else {
                let reason = format!("IIP to {role}.{}: no such inport", c.tgt.port);
                if self.reported.insert(reason.clone()) {
                    warn!("{reason}");
                }
                continue;
            };
            let Some(payload) = c.iip_payload() else { continue };
            let alive: Vec<&str> = self
                .registry
                .role(role)
                .map(|r| r.instances.iter().filter(|(_, i)| i.alive).map(|(id, _)| id.as_str()).collect())
                .unwrap_or_default();
            // Only the starting graph's IIPs may have been sent by an earlier
            // coordinator; a value set live is always sent.
            if let Some(id) = self.journal.as_ref().filter(|_| *at_start).and_then(|j| j.sent_to(role, &c.tgt.port, payload.as_bytes(), &alive)) {
                info!("IIP to {role}.{} not sent again: participant {id} got it from an earlier coordinator", c.tgt.port);
                sent_now.push(i);
                continue;
            }
            let ids: Vec<String> = alive.iter().map(|s| s.to_string()).collect();
            match self.transport.publish(Target::Queue(queue.to_owned()), payload.clone(), true).await {
                Ok(()) => {
                    info!("sent IIP to {role}.{}", c.tgt.port);
                    if let Some(j) = &mut self.journal {
                        j.record(role, &c.tgt.port, payload.as_bytes(), ids);
                    }
                    let _ = self.events.send(Event::Sent { role: role.clone(), port: c.tgt.port.clone(), payload });
                    sent_now.push(i);
                }
                Err(e) => warn!("cannot send IIP to {role}.{}: {e}", c.tgt.port),
            }
        }
        for i in sent_now {
            self.iips[i].sent = Some(Instant::now());
            self.iips_sent += 1;
        }
    }
}
