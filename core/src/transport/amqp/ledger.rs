//! The AMQP pipeline's bookkeeping, without any I/O, so it is tested here
//! without a broker. The pipeline (`amqp.rs`) does the I/O and asks the
//! ledger what to do:
//!
//! - **Attribution.** Publishes are numbered in the order they are issued.
//!   A settlement (ack/nack of a delivery) or a flush waits until every
//!   publish issued before it is resolved (confirmed or refused by the
//!   broker). The publishes issued since the previous settlement are that
//!   delivery's outputs: if the broker refused one of them (a full queue
//!   with `x-overflow: reject-publish`), the delivery's ack becomes a
//!   requeue, so the input is tried again instead of its output being lost.
//! - **Coalescing.** The broker numbers a channel's delivery tags 1, 2, 3,
//!   ...; acks of tags that follow everything settled so far are held as a
//!   run and sent as one `basic.ack` with `multiple` (at the end of the
//!   pipeline's turn, or before any other frame), which covers exactly the
//!   run because frames leave in the order they are made. Tracking is given
//!   up on a connection where one delivery is held while [`MAX_AHEAD`]
//!   later ones are settled (memory stays bounded; acks then go one by one).

use std::collections::{BTreeSet, VecDeque};

use crate::message::Settlement;

/// Settled tags tracked beyond one still held, before coalescing is given
/// up on that connection.
pub(super) const MAX_AHEAD: usize = 16_384;

/// A settlement frame to send on the consume channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Frame {
    pub tag: u64,
    pub how: Settlement,
    /// `basic.ack` with `multiple`: this tag and every unsettled one below.
    pub multiple: bool,
}

/// What the pipeline may do now, in order.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Released<F> {
    /// Settle this delivery (the ack already turned into a requeue when
    /// one of its outputs was refused).
    Settle { tag: u64, generation: u64, how: Settlement },
    /// Every publish before the flush is resolved.
    Flush(F),
}

enum Waiter<F> {
    /// `from..=need` are the publishes issued since the previous
    /// settlement: the outputs attributed to this delivery.
    Settle { tag: u64, generation: u64, how: Settlement, from: u64 },
    Flush(F),
}

/// `F`: what a flush hands back when released (a oneshot sender).
pub(super) struct Ledger<F> {
    next_seq: u64,
    /// Every publish with a number up to this is resolved.
    resolved: u64,
    last_settle_need: u64,
    /// Settlements and flushes waiting for publish `need` to be resolved.
    waiting: VecDeque<(u64, Waiter<F>)>,
    /// Publishes refused by the broker and not yet attributed.
    refused: VecDeque<u64>,
    /// Every tag up to this is settled on the current connection; `None`:
    /// tracking given up there.
    settled_through: Option<u64>,
    settled_above: BTreeSet<u64>,
    /// Held acks: (last tag, first tag) of the run.
    ack_run: Option<(u64, u64)>,
}

impl<F> Default for Ledger<F> {
    fn default() -> Self {
        Ledger {
            next_seq: 1,
            resolved: 0,
            last_settle_need: 0,
            waiting: VecDeque::new(),
            refused: VecDeque::new(),
            settled_through: Some(0),
            settled_above: BTreeSet::new(),
            ack_run: None,
        }
    }
}

impl<F> Ledger<F> {
    /// Number the next publish.
    pub fn publish(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// A delivery is to be settled once the publishes issued so far are
    /// resolved.
    pub fn settle_later(&mut self, tag: u64, generation: u64, how: Settlement) {
        let need = self.next_seq - 1;
        let from = self.last_settle_need + 1;
        self.last_settle_need = need;
        self.waiting.push_back((need, Waiter::Settle { tag, generation, how, from }));
    }

    /// `token` comes back once the publishes issued so far are resolved.
    pub fn flush_later(&mut self, token: F) {
        self.waiting.push_back((self.next_seq - 1, Waiter::Flush(token)));
    }

    /// The broker confirmed (or refused) publish `seq`. Confirms come in
    /// publish order.
    pub fn resolved(&mut self, seq: u64, refused: bool) {
        if refused {
            self.refused.push_back(seq);
        }
        self.resolved = seq;
    }

    /// The next settlement or flush whose publishes are all resolved.
    pub fn next_released(&mut self) -> Option<Released<F>> {
        if self.waiting.front()?.0 > self.resolved {
            return None;
        }
        let (need, waiter) = self.waiting.pop_front()?;
        Some(match waiter {
            Waiter::Flush(token) => Released::Flush(token),
            Waiter::Settle { tag, generation, mut how, from } => {
                while self.refused.front().is_some_and(|s| *s < from) {
                    self.refused.pop_front();
                }
                if how == Settlement::Ack && self.refused.front().is_some_and(|s| *s <= need) {
                    how = Settlement::Requeue;
                }
                Released::Settle { tag, generation, how }
            }
        })
    }

    /// A new consume channel: its tags start again at 1 (held acks were for
    /// the old one, which the broker has requeued).
    pub fn new_connection(&mut self) {
        self.settled_through = Some(0);
        self.settled_above.clear();
        self.ack_run = None;
    }

    /// Settle `tag` on the current connection: the frames to send now, in
    /// order (the held run first, then this one); none when it joins the
    /// held run.
    pub fn settle(&mut self, tag: u64, how: Settlement) -> [Option<Frame>; 2] {
        let continues = self.mark_settled(tag);
        if how == Settlement::Ack && continues {
            self.ack_run = Some((tag, self.ack_run.map_or(tag, |(_, first)| first)));
            return [None, None];
        }
        [self.take_ack_run(), Some(Frame { tag, how, multiple: false })]
    }

    /// The held run of acks as one frame (end of the pipeline's turn, or
    /// before a flush completes).
    pub fn take_ack_run(&mut self) -> Option<Frame> {
        self.ack_run.take().map(|(last, first)| Frame { tag: last, how: Settlement::Ack, multiple: last > first })
    }

    /// Note `tag` as settled; whether it follows everything settled before.
    fn mark_settled(&mut self, tag: u64) -> bool {
        let Some(through) = self.settled_through else { return false };
        if tag == through + 1 {
            let mut through = tag;
            while self.settled_above.remove(&(through + 1)) {
                through += 1;
            }
            self.settled_through = Some(through);
            return true;
        }
        if tag > through {
            self.settled_above.insert(tag);
            if self.settled_above.len() > MAX_AHEAD {
                tracing::debug!(held = through + 1, "a delivery is held long; acks are sent one by one on this connection");
                self.settled_above.clear();
                self.settled_through = None;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Settlement::{Ack, Nack, Requeue};

    fn frame(tag: u64, how: Settlement, multiple: bool) -> Option<Frame> {
        Some(Frame { tag, how, multiple })
    }

    fn released(l: &mut Ledger<u32>) -> Vec<Released<u32>> {
        std::iter::from_fn(|| l.next_released()).collect()
    }

    #[test]
    fn a_settlement_waits_for_the_publishes_before_it() {
        let mut l = Ledger::default();
        let (a, b) = (l.publish(), l.publish());
        l.settle_later(1, 1, Ack);
        l.flush_later(7);
        assert!(released(&mut l).is_empty());
        l.resolved(a, false);
        assert!(released(&mut l).is_empty(), "b is not confirmed yet");
        l.resolved(b, false);
        assert_eq!(released(&mut l), vec![Released::Settle { tag: 1, generation: 1, how: Ack }, Released::Flush(7)]);
        // Nothing published since: the next settlement goes at once.
        l.settle_later(2, 1, Nack);
        assert_eq!(released(&mut l), vec![Released::Settle { tag: 2, generation: 1, how: Nack }]);
    }

    #[test]
    fn a_refused_output_requeues_the_input_that_caused_it_only() {
        let mut l: Ledger<u32> = Ledger::default();
        let a = l.publish(); // output of delivery 1
        l.settle_later(1, 1, Ack);
        let b = l.publish(); // outputs of delivery 2
        let c = l.publish();
        l.settle_later(2, 1, Ack);
        let d = l.publish(); // output of delivery 3
        l.settle_later(3, 1, Ack);
        l.settle_later(4, 1, Nack); // no outputs; nacked by its handler
        l.resolved(a, false);
        l.resolved(b, false);
        l.resolved(c, true); // refused: a full queue
        l.resolved(d, false);
        assert_eq!(
            released(&mut l),
            vec![
                Released::Settle { tag: 1, generation: 1, how: Ack },
                Released::Settle { tag: 2, generation: 1, how: Requeue },
                Released::Settle { tag: 3, generation: 1, how: Ack },
                Released::Settle { tag: 4, generation: 1, how: Nack },
            ]
        );
    }

    #[test]
    fn consecutive_acks_go_as_one_multiple_ack() {
        let mut l: Ledger<u32> = Ledger::default();
        assert_eq!(l.settle(1, Ack), [None, None]);
        assert_eq!(l.settle(2, Ack), [None, None]);
        assert_eq!(l.settle(3, Ack), [None, None]);
        assert_eq!(l.take_ack_run(), frame(3, Ack, true));
        assert_eq!(l.take_ack_run(), None);
        // A run of one is a plain ack.
        assert_eq!(l.settle(4, Ack), [None, None]);
        assert_eq!(l.take_ack_run(), frame(4, Ack, false));
    }

    #[test]
    fn a_gap_or_a_nack_breaks_the_run() {
        let mut l: Ledger<u32> = Ledger::default();
        assert_eq!(l.settle(1, Ack), [None, None]);
        // 3 before 2: cannot join (a multiple ack of 3 would ack 2 too).
        assert_eq!(l.settle(3, Ack), [frame(1, Ack, false), frame(3, Ack, false)]);
        // 2 fills the gap: everything through 3 is settled now.
        assert_eq!(l.settle(2, Ack), [None, None]);
        assert_eq!(l.settle(4, Ack), [None, None]);
        // A nack goes on its own, after the held run.
        assert_eq!(l.settle(5, Nack), [frame(4, Ack, true), frame(5, Nack, false)]);
        assert_eq!(l.settle(6, Requeue), [None, frame(6, Requeue, false)]);
        assert_eq!(l.settle(7, Ack), [None, None]);
        assert_eq!(l.take_ack_run(), frame(7, Ack, false));
    }

    #[test]
    fn a_new_connection_starts_counting_again() {
        let mut l: Ledger<u32> = Ledger::default();
        assert_eq!(l.settle(1, Ack), [None, None]);
        l.new_connection();
        assert_eq!(l.take_ack_run(), None, "the old run is void");
        assert_eq!(l.settle(1, Ack), [None, None]);
        assert_eq!(l.take_ack_run(), frame(1, Ack, false));
    }

    #[test]
    fn one_held_delivery_stops_coalescing_instead_of_growing() {
        let mut l: Ledger<u32> = Ledger::default();
        // Tag 1 is held; everything after it is settled.
        for tag in 2..=(MAX_AHEAD as u64 + 2) {
            assert_eq!(l.settle(tag, Ack), [None, frame(tag, Ack, false)]);
        }
        assert!(l.settled_above.is_empty(), "given up, memory released");
        // From now on acks go one by one, even the held one's.
        assert_eq!(l.settle(1, Ack), [None, frame(1, Ack, false)]);
        assert_eq!(l.settle(MAX_AHEAD as u64 + 3, Ack), [None, frame(MAX_AHEAD as u64 + 3, Ack, false)]);
    }
}
