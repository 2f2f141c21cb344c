//! What a participant measures of its own work, per inport: how long each
//! delivery took from being handed to the handler to being settled, and
//! how many were acked, nacked (failed) and requeued, and how many are in
//! the handler now. Reported to observers with each heartbeat (message
//! `msgflo` / `stats` on the observers' channel, never on `fbp`: the
//! discovery message stays as the original's), so guv scales from
//! measured processing times instead of configured ones.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::message::Settlement;

/// Processing times kept per inport between two reports (the latest).
pub const MAX_SAMPLES: usize = 256;

/// One inport's figures since the previous report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PortStats {
    /// The inport's queue (guv matches its roles by queue).
    pub queue: String,
    pub acked: u64,
    pub nacked: u64,
    pub requeued: u64,
    /// Handed to the handler and not settled, now.
    pub inflight: u64,
    /// Seconds from hand-over to settlement of settled deliveries (the
    /// latest [`MAX_SAMPLES`]).
    pub processing: VecDeque<f64>,
}

/// A participant's report: `{"protocol": "msgflo", "command": "stats",
/// "payload": this}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsReport {
    pub role: String,
    pub id: String,
    /// Inport id -> figures.
    pub inports: BTreeMap<String, PortStats>,
}

/// The running figures of one participant.
#[derive(Debug, Default)]
pub struct Stats {
    ports: Mutex<BTreeMap<String, PortStats>>,
}

impl Stats {
    /// `inport` (with its queue) handed a delivery to the handler. On the
    /// hot path: the port's entry is made (and its names copied) once.
    pub(crate) fn handed(&self, inport: &str, queue: &str) {
        let mut ports = self.ports.lock().unwrap_or_else(|p| p.into_inner());
        match ports.get_mut(inport) {
            Some(p) => p.inflight += 1,
            None => {
                ports.insert(inport.to_owned(), PortStats { queue: queue.to_owned(), inflight: 1, ..Default::default() });
            }
        }
    }

    /// A delivery handed over `took` ago was settled.
    pub(crate) fn settled(&self, inport: &str, how: Settlement, took: Duration) {
        let mut ports = self.ports.lock().unwrap_or_else(|p| p.into_inner());
        let Some(p) = ports.get_mut(inport) else { return };
        p.inflight = p.inflight.saturating_sub(1);
        match how {
            Settlement::Ack => p.acked += 1,
            Settlement::Nack => p.nacked += 1,
            // Not work done: dropped unhandled (stop) or refused output.
            Settlement::Requeue => {
                p.requeued += 1;
                return;
            }
        }
        if p.processing.len() == MAX_SAMPLES {
            p.processing.pop_front();
        }
        p.processing.push_back(took.as_secs_f64());
    }

    /// The figures since the previous report, which start again from zero
    /// (in-flight counts carry over); `None` when nothing happened and
    /// nothing is in flight.
    pub fn report(&self, role: &str, id: &str) -> Option<StatsReport> {
        let mut ports = self.ports.lock().unwrap_or_else(|p| p.into_inner());
        let busy = ports.values().any(|p| p.inflight > 0 || p.acked + p.nacked + p.requeued > 0);
        if !busy {
            return None;
        }
        let inports = ports.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for p in ports.values_mut() {
            *p = PortStats { queue: std::mem::take(&mut p.queue), inflight: p.inflight, ..Default::default() };
        }
        Some(StatsReport { role: role.to_owned(), id: id.to_owned(), inports })
    }
}

/// When a delivery was handed over, and where to count its settlement.
#[derive(Debug, Clone)]
pub(crate) struct Handed {
    pub at: Instant,
    pub stats: std::sync::Arc<Stats>,
}
