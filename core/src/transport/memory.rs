//! An in-process broker with AMQP's model (fanout exchanges, queues,
//! bindings, ack/nack, dead-lettering), for fast unit tests and for running a
//! whole graph inside one process. `memory://NAME` connects to the broker
//! named NAME; every transport with the same name in a process shares it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use tokio::sync::{mpsc, watch, Notify};

use super::{Declaration, PortKind, Target, Transport, DISCOVERY_QUEUE};
use crate::error::{Error, Result};
use crate::message::{Delivery, Message, Payload, Settle, Settlement};

#[derive(Default)]
struct Queue {
    ready: VecDeque<Vec<u8>>,
    unacked: HashMap<u64, Vec<u8>>,
    dead_letter_exchange: Option<String>,
    notify: Arc<Notify>,
}

#[derive(Default)]
struct State {
    queues: HashMap<String, Queue>,
    /// Fanout exchanges: name -> bound queues.
    exchanges: HashMap<String, HashSet<String>>,
    next_tag: u64,
}

/// One named in-process broker.
#[derive(Default)]
pub struct MemoryBroker {
    state: Mutex<State>,
}

fn registry() -> &'static Mutex<HashMap<String, Arc<MemoryBroker>>> {
    static BROKERS: OnceLock<Mutex<HashMap<String, Arc<MemoryBroker>>>> = OnceLock::new();
    BROKERS.get_or_init(Default::default)
}

impl MemoryBroker {
    /// The broker called `name`, created on first use.
    pub fn named(name: &str) -> Arc<MemoryBroker> {
        registry().lock().unwrap().entry(name.to_owned()).or_default().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves consistent data
        // (every mutation is a single push/remove), so keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Declare a queue (idempotent), optionally with a dead-letter exchange.
    pub fn declare_queue(&self, name: &str, dead_letter_exchange: Option<&str>) {
        let mut st = self.lock();
        let q = st.queues.entry(name.to_owned()).or_default();
        if q.dead_letter_exchange.is_none() {
            q.dead_letter_exchange = dead_letter_exchange.map(str::to_owned);
        }
    }

    /// Declare a fanout exchange (idempotent).
    pub fn declare_exchange(&self, name: &str) {
        self.lock().exchanges.entry(name.to_owned()).or_default();
    }

    /// Bind a queue to a fanout exchange, creating the exchange if needed.
    pub fn bind(&self, exchange: &str, queue: &str) {
        self.lock().exchanges.entry(exchange.to_owned()).or_default().insert(queue.to_owned());
    }

    pub fn unbind(&self, exchange: &str, queue: &str) {
        if let Some(qs) = self.lock().exchanges.get_mut(exchange) {
            qs.remove(queue);
        }
    }

    /// Messages waiting (not delivered) in a queue; `None` if it does not exist.
    pub fn queue_len(&self, queue: &str) -> Option<usize> {
        self.lock().queues.get(queue).map(|q| q.ready.len())
    }

    /// Messages delivered but not yet settled.
    pub fn unacked_len(&self, queue: &str) -> Option<usize> {
        self.lock().queues.get(queue).map(|q| q.unacked.len())
    }

    /// Take one waiting message (like AMQP basic.get with auto-ack).
    pub fn take(&self, queue: &str) -> Option<Vec<u8>> {
        self.lock().queues.get_mut(queue)?.ready.pop_front()
    }

    /// Route a message; returns how many queues received it.
    pub fn publish(&self, target: &Target, payload: &[u8]) -> usize {
        let mut st = self.lock();
        let queues: Vec<String> = match target {
            Target::Queue(q) => vec![q.clone()],
            Target::Exchange(x) => st.exchanges.get(x).map(|s| s.iter().cloned().collect()).unwrap_or_default(),
        };
        let mut n = 0;
        for name in queues {
            if let Some(q) = st.queues.get_mut(&name) {
                q.ready.push_back(payload.to_vec());
                q.notify.notify_one();
                n += 1;
            }
        }
        n
    }

    fn settle(&self, queue: &str, tag: u64, how: Settlement) {
        let dead_letter = {
            let mut st = self.lock();
            let Some(q) = st.queues.get_mut(queue) else { return };
            let Some(body) = q.unacked.remove(&tag) else { return };
            match how {
                Settlement::Ack => None,
                Settlement::Requeue => {
                    q.ready.push_front(body);
                    q.notify.notify_one();
                    None
                }
                Settlement::Nack => q.dead_letter_exchange.clone().map(|x| (x, body)),
            }
        };
        if let Some((exchange, body)) = dead_letter {
            self.publish(&Target::Exchange(exchange), &body);
        }
    }

    /// Next message for a consumer, waiting for one; records it as unacked.
    async fn next(&self, queue: &str) -> Option<(u64, Vec<u8>)> {
        loop {
            let notify = {
                let mut st = self.lock();
                st.next_tag += 1;
                let tag = st.next_tag;
                let q = st.queues.get_mut(queue)?;
                if let Some(body) = q.ready.pop_front() {
                    q.unacked.insert(tag, body.clone());
                    if !q.ready.is_empty() {
                        // Let a second consumer of this queue take the next one.
                        q.notify.notify_one();
                    }
                    return Some((tag, body));
                }
                q.notify.clone()
            };
            notify.notified().await;
        }
    }
}

struct QueueSettler {
    broker: Arc<MemoryBroker>,
    queue: String,
}

impl Settle for QueueSettler {
    fn settle(&self, tag: u64, _generation: u64, how: Settlement) {
        self.broker.settle(&self.queue, tag, how);
    }
}

/// A subscription's sink and what ends it.
type Consumer = (mpsc::Sender<Delivery>, tokio_util::sync::CancellationToken);

/// A connection to an in-process broker.
pub struct MemoryTransport {
    name: String,
    broker: Arc<MemoryBroker>,
    generation: watch::Sender<u64>,
    closed: tokio_util::sync::CancellationToken,
    /// Queue -> its consumers, ended by `unsubscribe`.
    consumers: Mutex<HashMap<String, Vec<Consumer>>>,
}

impl MemoryTransport {
    pub fn connect(name: &str) -> Self {
        MemoryTransport {
            name: name.to_owned(),
            broker: MemoryBroker::named(name),
            generation: watch::channel(1).0,
            closed: Default::default(),
            consumers: Default::default(),
        }
    }

    /// The broker this transport talks to (for tests and tools).
    pub fn broker(&self) -> &Arc<MemoryBroker> {
        &self.broker
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.is_cancelled() {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    fn describe(&self) -> String {
        format!("memory://{}", self.name)
    }

    async fn declare(&self, decl: &Declaration) -> Result<()> {
        self.check_open()?;
        match decl.kind {
            PortKind::In => {
                self.broker.declare_queue(&decl.queue, Some(&format!("dead-{}", decl.queue)));
                self.broker.bind(&decl.queue, &decl.queue);
            }
            // Exchanges here route on nothing; direct with key "" = fanout.
            PortKind::Out | PortKind::Router => self.broker.declare_exchange(&decl.queue),
        }
        Ok(())
    }

    async fn subscribe(&self, queue: &str, inport: Arc<str>, sink: mpsc::Sender<Delivery>) -> Result<()> {
        self.check_open()?;
        if self.broker.queue_len(queue).is_none() {
            return Err(Error::broker(format!("subscribe to {queue:?}"), "no such queue"));
        }
        let broker = self.broker.clone();
        let settler: Arc<dyn Settle> = Arc::new(QueueSettler { broker: broker.clone(), queue: queue.to_owned() });
        let queue = queue.to_owned();
        let closed = self.closed.clone();
        let ended = tokio_util::sync::CancellationToken::new();
        self.consumers.lock().unwrap().entry(queue.clone()).or_default().push((sink.clone(), ended.clone()));
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    biased;
                    _ = closed.cancelled() => return,
                    _ = ended.cancelled() => return,
                    _ = sink.closed() => return,
                    n = broker.next(&queue) => n,
                };
                let Some((tag, body)) = next else { return };
                let msg = Message { inport: inport.clone(), payload: Payload::new(body), redelivered: false, timestamp: None };
                // If the receiver is gone the delivery is dropped unsettled,
                // which requeues it.
                if sink.send(Delivery::new(msg, tag, 1, settler.clone())).await.is_err() {
                    return;
                }
            }
        });
        Ok(())
    }

    async fn unsubscribe(&self, queue: &str, sink: &mpsc::Sender<Delivery>) -> Result<()> {
        if let Some(consumers) = self.consumers.lock().unwrap().get_mut(queue) {
            consumers.retain(|(s, ended)| {
                let end = s.same_channel(sink);
                if end {
                    ended.cancel();
                }
                !end
            });
        }
        Ok(())
    }

    async fn publish(&self, target: Target, payload: Payload, _persistent: bool) -> Result<()> {
        self.check_open()?;
        self.broker.publish(&target, payload.as_bytes());
        Ok(())
    }

    async fn bind(&self, exchange: &str, queue: &str) -> Result<()> {
        self.check_open()?;
        self.broker.bind(exchange, queue);
        Ok(())
    }

    async fn unbind(&self, exchange: &str, queue: &str) -> Result<()> {
        self.check_open()?;
        self.broker.unbind(exchange, queue);
        Ok(())
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.check_open()?;
        let mut st = self.broker.lock();
        st.queues.remove(name);
        st.exchanges.remove(name);
        Ok(())
    }

    /// Each observer gets its own queue bound to the `fbp` exchange, so all
    /// observers see every announcement made after they subscribed.
    async fn subscribe_discovery(&self, sink: mpsc::Sender<Delivery>) -> Result<()> {
        self.check_open()?;
        self.broker.declare_exchange(DISCOVERY_QUEUE);
        let private = format!("{DISCOVERY_QUEUE}.{}", uuid::Uuid::new_v4().simple());
        self.broker.declare_queue(&private, None);
        self.broker.bind(DISCOVERY_QUEUE, &private);
        self.subscribe(&private, Arc::from(DISCOVERY_QUEUE), sink).await
    }

    async fn announce(&self, message: Payload) -> Result<()> {
        self.check_open()?;
        self.broker.declare_exchange(DISCOVERY_QUEUE);
        self.broker.publish(&Target::Exchange(DISCOVERY_QUEUE.into()), message.as_bytes());
        Ok(())
    }

    async fn broadcast_to_observers(&self, message: Payload) -> Result<()> {
        self.announce(message).await
    }

    async fn queue_depth(&self, queue: &str) -> Result<Option<u64>> {
        self.check_open()?;
        Ok(self.broker.queue_len(queue).map(|n| n as u64))
    }

    fn generation(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    async fn flush(&self) -> Result<()> {
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        self.closed.cancel();
        Ok(())
    }
}
