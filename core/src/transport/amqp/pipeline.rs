//! The pipeline: one task that owns every publish and settlement of a
//! connection, in the order they were issued (see the parent module's doc).
//! What to do when is the ledger's (ledger.rs); this does the I/O: publish
//! on the confirm channel, poll confirms, send settlement frames, publish
//! again what a lost connection did not confirm.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicPublishOptions};
use lapin::{BasicProperties, Confirmation};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::ledger::{Frame, Ledger, Released};
use super::{describe_err, discovery_expiration, Inner, Live, Op, Pending};
use crate::message::Settlement;
use crate::transport::DISCOVERY_QUEUE;

/// A publish lapin has taken, oldest first.
struct Inflight {
    pending: Pending,
    stage: Stage,
}

type Writing = Pin<Box<dyn Future<Output = lapin::Result<lapin::PublisherConfirm>> + Send>>;

/// The first poll of lapin's `basic_publish` hands the frames to its I/O
/// loop; the call then resolves once they are written. The pipeline does
/// not wait for that: it takes the next publish at once, so a run of
/// publishes leaves in one write instead of one write (and one hop to the
/// I/O thread and back) each. Writes complete in order, so only the front
/// is polled.
enum Stage {
    Writing(Writing),
    Confirming(lapin::PublisherConfirm),
}

impl Inflight {
    /// The broker's answer to this publish; an error if it could not be
    /// written or the connection went before the answer.
    fn poll_confirm(&mut self, cx: &mut Context<'_>) -> Poll<lapin::Result<Confirmation>> {
        loop {
            match &mut self.stage {
                Stage::Writing(w) => match ready!(w.poll_unpin(cx)) {
                    Ok(confirm) => self.stage = Stage::Confirming(confirm),
                    Err(e) => return Poll::Ready(Err(e)),
                },
                Stage::Confirming(c) => return c.poll_unpin(cx),
            }
        }
    }
}

/// The ordered publish/settle machinery; see the module doc.
pub(super) struct Pipeline {
    inner: Arc<Inner>,
    live: Option<Live>,
    inflight: VecDeque<Inflight>,
    /// Publishes waiting for a (new) connection, in order.
    retry: VecDeque<Pending>,
    /// Which publishes each settlement waits for, and which acks go out
    /// together (ledger.rs).
    ledger: Ledger<oneshot::Sender<()>>,
    settling: FuturesUnordered<Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
    flush_after_settling: Vec<oneshot::Sender<()>>,
}

impl Pipeline {
    pub(super) fn new(inner: Arc<Inner>) -> Self {
        Pipeline {
            inner,
            live: None,
            inflight: VecDeque::new(),
            retry: VecDeque::new(),
            ledger: Ledger::default(),
            settling: FuturesUnordered::new(),
            flush_after_settling: Vec::new(),
        }
    }

    pub(super) async fn run(mut self, mut ops: mpsc::UnboundedReceiver<Op>) {
        let mut generation = self.inner.generation.subscribe();
        self.refresh_live().await;
        loop {
            tokio::select! {
                biased;
                op = ops.recv() => match op {
                    Some(op) => {
                        self.on_op(op);
                        // Take what else is queued without another trip
                        // through select (a relay queues publish+ack pairs).
                        for _ in 0..256 {
                            match ops.try_recv() {
                                Ok(op) => self.on_op(op),
                                Err(_) => break,
                            }
                        }
                    }
                    None => break,
                },
                res = poll_fn(|cx| self.inflight.front_mut().expect("guarded").poll_confirm(cx)),
                    if !self.inflight.is_empty() => {
                    self.on_confirm(res);
                    // Confirms come in bursts (the broker acks many at once):
                    // take every one already resolved before selecting
                    // again, then release what they allow in one go.
                    while let Some(front) = self.inflight.front_mut() {
                        match poll_fn(|cx| front.poll_confirm(cx)).now_or_never() {
                            Some(res) => self.on_confirm(res),
                            None => break,
                        }
                    }
                    self.release();
                }
                Some(()) = self.settling.next(), if !self.settling.is_empty() => {
                    if self.settling.is_empty() {
                        for tx in self.flush_after_settling.drain(..) {
                            let _ = tx.send(());
                        }
                    }
                }
                Ok(()) = generation.changed() => self.refresh_live().await,
                _ = self.inner.closed.cancelled() => break,
            }
            // Acks released in this turn go out as one (see `settle`).
            self.send_ack_run();
        }
        self.send_ack_run();
        if !self.inflight.is_empty() || !self.retry.is_empty() {
            warn!(
                unconfirmed = self.inflight.len() + self.retry.len(),
                "transport closed with publishes not confirmed by the broker"
            );
        }
    }

    async fn refresh_live(&mut self) {
        let live = self.inner.state.lock().await.live.clone();
        let newer = match (&live, &self.live) {
            (Some(l), Some(old)) => l.generation > old.generation,
            (Some(_), None) => true,
            _ => false,
        };
        if newer {
            self.live = live;
            self.ledger.new_connection();
            self.connection_replaced();
            // Publish whatever waited for this connection, in order.
            let retry: Vec<_> = self.retry.drain(..).collect();
            for p in retry {
                self.publish(p);
            }
            self.release();
        }
    }

    /// Everything in flight on the old connection will never be confirmed
    /// there: send it again, before anything newer.
    fn connection_replaced(&mut self) {
        let mut again: VecDeque<Pending> = self.inflight.drain(..).map(|i| i.pending).collect();
        again.append(&mut self.retry);
        self.retry = again;
    }

    fn lost(&mut self, reason: String) {
        if let Some(live) = self.live.take() {
            let _ = self.inner.lost.send((live.generation, reason));
        }
        self.connection_replaced();
    }

    fn on_op(&mut self, op: Op) {
        match op {
            Op::Publish(mut p) => {
                p.seq = self.ledger.publish();
                if self.retry.is_empty() && self.live.is_some() {
                    self.publish(p);
                } else {
                    self.retry.push_back(p);
                }
            }
            Op::Settle { tag, generation, how } => {
                self.ledger.settle_later(tag, generation, how);
                self.release();
            }
            Op::Flush(tx) => {
                self.ledger.flush_later(tx);
                self.release();
            }
        }
    }

    fn publish(&mut self, p: Pending) {
        let Some(live) = &self.live else {
            self.retry.push_back(p);
            return;
        };
        let mut props = if p.persistent {
            BasicProperties::default().with_delivery_mode(2)
        } else {
            BasicProperties::default()
        };
        if let Some(ts) = p.timestamp {
            props = props.with_timestamp(ts);
            // Our announcements into `fbp` expire there: a backlog left by
            // participants that are long gone never piles up.
            if p.exchange.is_empty() && p.routing_key == DISCOVERY_QUEUE {
                props = props.with_expiration(discovery_expiration().into());
            }
        }
        let ch = live.publish.clone();
        let exchange = p.exchange.as_str().into();
        let routing_key = p.routing_key.as_str().into();
        let payload = Arc::clone(&p.payload);
        let mut writing: Writing = Box::pin(async move {
            ch.basic_publish(exchange, routing_key, BasicPublishOptions::default(), payload.as_bytes(), props)
                .await
        });
        // This first poll queues the frames, so publishes leave in the
        // order they were made.
        match (&mut writing).now_or_never() {
            Some(Ok(confirm)) => self.inflight.push_back(Inflight { pending: p, stage: Stage::Confirming(confirm) }),
            None => self.inflight.push_back(Inflight { pending: p, stage: Stage::Writing(writing) }),
            Some(Err(e)) => {
                self.retry.push_back(p);
                self.lost(format!("publish failed: {}", describe_err(&e)));
            }
        }
    }

    fn on_confirm(&mut self, res: lapin::Result<Confirmation>) {
        match res {
            Ok(Confirmation::Nack(_)) => {
                let i = self.inflight.pop_front().expect("polled the front");
                warn!(
                    target = %if i.pending.exchange.is_empty() { &i.pending.routing_key } else { &i.pending.exchange },
                    "broker refused a message; the input that caused it will be requeued"
                );
                self.ledger.resolved(i.pending.seq, true);
            }
            Ok(_) => {
                let i = self.inflight.pop_front().expect("polled the front");
                self.ledger.resolved(i.pending.seq, false);
            }
            Err(e) => {
                self.lost(format!("publish not confirmed: {}", describe_err(&e)));
            }
        }
    }

    /// Perform every settlement and flush whose publishes are resolved, in
    /// order.
    fn release(&mut self) {
        while let Some(r) = self.ledger.next_released() {
            match r {
                Released::Flush(tx) => {
                    self.send_ack_run();
                    if self.settling.is_empty() {
                        let _ = tx.send(());
                    } else {
                        self.flush_after_settling.push(tx);
                    }
                }
                Released::Settle { tag, generation, how } => self.settle(tag, generation, how),
            }
        }
    }

    /// Send the held run of acks as one `basic.ack` with `multiple`.
    fn send_ack_run(&mut self) {
        if let Some(f) = self.ledger.take_ack_run() {
            tracing::trace!(last = f.tag, multiple = f.multiple, "ack run");
            self.send_settlement(f);
        }
    }

    fn settle(&mut self, tag: u64, generation: u64, how: Settlement) {
        let Some(live) = &self.live else {
            debug!(tag, "settlement while disconnected dropped; the broker requeues the delivery");
            return;
        };
        if live.generation != generation {
            debug!(tag, generation, "settlement for an earlier connection dropped; the broker requeued it");
            return;
        }
        // Acks of consecutive tags right after everything settled so far
        // wait to go out as one multiple ack (at the end of this turn).
        for f in self.ledger.settle(tag, how).into_iter().flatten() {
            self.send_settlement(f);
        }
    }

    /// Make the settlement frame now (the first poll of lapin's call sends
    /// it), so frames leave in the order settlements are made; the rest of
    /// the future (lapin's bookkeeping) is driven with the others.
    fn send_settlement(&mut self, Frame { tag, how, multiple }: Frame) {
        let Some(live) = &self.live else { return };
        let ch = live.consume.clone();
        let mut fut: Pin<Box<dyn std::future::Future<Output = ()> + Send>> = Box::pin(async move {
            let res = match how {
                Settlement::Ack => ch.basic_ack(tag, BasicAckOptions { multiple }).await,
                Settlement::Nack => ch.basic_nack(tag, BasicNackOptions { requeue: false, multiple: false }).await,
                Settlement::Requeue => ch.basic_nack(tag, BasicNackOptions { requeue: true, multiple: false }).await,
            };
            if let Err(e) = res {
                debug!(tag, error = %describe_err(&e), "settlement not sent; the broker will redeliver");
            }
        });
        if (&mut fut).now_or_never().is_none() {
            self.settling.push(fut);
        }
    }
}

