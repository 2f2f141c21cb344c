//! Opening a connection and consuming on it.
//!
//! [`Inner::open`] connects (to a cluster's nodes in turn, starting after
//! the one whose connection was lost), opens the publish (confirm) and
//! consume channels, replays declarations, bindings and subscriptions
//! (dropping, with a warning, a record the broker refuses now), and watches
//! the connection's events to tell the supervisor when it is lost.
//! [`Inner::start_consumer`] runs one subscription's consumer task; a
//! consumer the broker cancels on a connection that is fine is handled by
//! `consumer_cancelled` (declared again and consumed again, or ended).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::discovery::declare_discovery_queue;
use super::{bind_exchange_on, bind_on, declare_on, describe_err, on_fresh_channel, Inner, Live, Settler, State, Subscription};
use crate::broker::BrokerUrl;
use crate::error::{Error, Result};
use crate::message::{Delivery, Message, Payload, Settle};
use crate::transport::{PortKind, DISCOVERY_QUEUE};

/// The URI of address `i` of `url` (a cluster's node; 0 for a single broker).
fn amqp_uri(url: &BrokerUrl, i: usize) -> lapin::uri::AMQPUri {
    let mut uri = lapin::uri::AMQPUri::default();
    uri.scheme = if matches!(url.scheme, crate::broker::Scheme::Amqp { tls: true }) {
        lapin::uri::AMQPScheme::AMQPS
    } else {
        lapin::uri::AMQPScheme::AMQP
    };
    let (host, port) = url.addresses.get(i).cloned().unwrap_or_else(|| (url.host.clone(), url.port));
    uri.authority.host = host;
    uri.authority.port = port;
    if let Some(u) = &url.username {
        uri.authority.userinfo.username = u.clone();
    }
    if let Some(p) = &url.password {
        uri.authority.userinfo.password = p.clone();
    }
    uri.vhost = url.vhost.clone();
    // frame_max, channel_max, connection_timeout, auth_mechanism as lapin
    // read them; the heartbeat defaults to ours.
    uri.query = url.amqp_options.clone();
    // The client's proposal; RabbitMQ takes the lower of its own and ours.
    uri.query.heartbeat = Some(url.heartbeat.unwrap_or(crate::broker::DEFAULT_AMQP_HEARTBEAT));
    uri
}

impl Inner {
    /// A connection to address `i` of the URL.
    /// `tls`: the TLS files, for `amqps://`.
    async fn connect_to(&self, i: usize, tls: Option<&crate::broker::TlsFiles>) -> std::result::Result<Connection, lapin::Error> {
        let props = ConnectionProperties::default().with_connection_name(self.options.connection_name.clone().into());
        if let Some(files) = tls.cloned() {
            let tls = lapin::tcp::OwnedTLSConfig {
                identity: files.client.map(|(pem, key)| lapin::tcp::OwnedIdentity::PKCS8 { pem, key }),
                cert_chain: files.ca.map(|ca| String::from_utf8_lossy(&ca).into_owned()),
            };
            let runtime = lapin::runtime::default_runtime()?;
            Connection::connect_uri_with_config(amqp_uri(&self.url, i), props, tls, runtime).await
        } else {
            Connection::connect_uri(amqp_uri(&self.url, i), props).await
        }
    }

    /// Connect, open channels, replay declarations and subscriptions, and
    /// install the result as generation `generation`.
    pub(super) async fn open(self: &Arc<Self>, state: &mut State, generation: u64) -> Result<()> {
        let conn_err = |e: lapin::Error| Error::Connection { url: self.url.redacted(), reason: describe_err(&e) };
        // A cluster: the first node that answers, starting after the one
        // whose connection was lost (the first of the list at start).
        let tls = match self.url.scheme {
            crate::broker::Scheme::Amqp { tls: true } => Some(crate::broker::TlsFiles::from_env()?),
            _ => None,
        };
        let n = self.url.addresses.len().max(1);
        let first = if generation == 1 { 0 } else { (state.address + 1) % n };
        let mut failures = Vec::new();
        let mut connected = None;
        for k in 0..n {
            let i = (first + k) % n;
            match self.connect_to(i, tls.as_ref()).await {
                Ok(c) => {
                    if n > 1 {
                        let (host, port) = &self.url.addresses[i];
                        tracing::info!(node = %format!("{host}:{port}"), "connected to cluster node {} of {n}", i + 1);
                    }
                    state.address = i;
                    connected = Some(c);
                    break;
                }
                Err(e) if n == 1 => return Err(conn_err(e)),
                Err(e) => {
                    let (host, port) = &self.url.addresses[i];
                    failures.push(format!("{host}:{port}: {}", describe_err(&e)));
                }
            }
        }
        let Some(connection) = connected else {
            return Err(Error::Connection { url: self.url.redacted(), reason: format!("no node answers ({})", failures.join("; ")) });
        };
        let connection = Arc::new(connection);
        let result = async {
            let publish = connection.create_channel().await.map_err(conn_err)?;
            publish.confirm_select(ConfirmSelectOptions::default()).await.map_err(conn_err)?;
            let consume = connection.create_channel().await.map_err(conn_err)?;
            consume
                .basic_qos(self.options.prefetch, BasicQosOptions::default())
                .await
                .map_err(conn_err)?;
            let live = Live { generation, connection: connection.clone(), publish: Arc::new(publish), consume: Arc::new(consume) };
            // A record the broker refuses now (each on a channel of its
            // own: a conflicting declaration, a binding to an exchange
            // gone with a broker that lost its data) is dropped with a
            // warning; the rest is replayed. Only a failing connection
            // fails the attempt (else one bad record would keep the
            // connection from ever coming back).
            let conn = &live.connection;
            let kept = |what: String, res: Result<()>| -> Result<bool> {
                match res {
                    Ok(()) => Ok(true),
                    Err(e) if conn.status().connected() => {
                        warn!(error = %e, "{what}, made earlier, is refused by the broker now; dropped");
                        Ok(false)
                    }
                    Err(e) => Err(e),
                }
            };
            // Records are dropped only once the attempt succeeded: a
            // failing connection keeps every one for the next attempt.
            let mut refused_declarations = Vec::new();
            for (i, decl) in state.declarations.iter().enumerate() {
                let res = declare_on(conn, decl, self.url.queue_type).await;
                if !kept(format!("the declaration of {:?}", decl.queue), res)? {
                    refused_declarations.push(i);
                }
            }
            let mut refused_bindings = Vec::new();
            for (i, (exchange, queue)) in state.bindings.iter().enumerate() {
                let res = bind_on(conn, exchange, queue).await;
                if !kept(format!("binding {queue:?} to {exchange:?}"), res)? {
                    refused_bindings.push(i);
                }
            }
            let mut refused_exchange_bindings = Vec::new();
            for (i, (source, destination)) in state.exchange_bindings.iter().enumerate() {
                let res = bind_exchange_on(conn, source, destination).await;
                if !kept(format!("binding exchange {destination:?} to {source:?}"), res)? {
                    refused_exchange_bindings.push(i);
                }
            }
            if state.subscriptions.iter().any(|s| s.queue == DISCOVERY_QUEUE) {
                declare_discovery_queue(conn, self.url.queue_type).await?;
            }
            // A queue someone else declared may be gone: consuming it would
            // close the shared consume channel, so look first.
            let mut refused_subscriptions = Vec::new();
            for (i, sub) in state.subscriptions.iter().enumerate() {
                let ours = sub.queue == DISCOVERY_QUEUE || state.declarations.iter().any(|d| d.queue == sub.queue);
                if !ours {
                    let queue = sub.queue.as_str();
                    let res = on_fresh_channel(conn, |ch| async move {
                        ch.queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
                            .await
                            .map(|_| ())
                            .map_err(|e| Error::broker(format!("queue {queue:?}"), describe_err(&e)))
                    })
                    .await;
                    if !kept(format!("the subscription to {queue:?}"), res)? {
                        refused_subscriptions.push(i);
                        continue;
                    }
                }
                self.start_consumer(&live, sub.clone()).await?;
            }
            remove_at(&mut state.declarations, &refused_declarations);
            remove_at(&mut state.bindings, &refused_bindings);
            remove_at(&mut state.exchange_bindings, &refused_exchange_bindings);
            remove_at(&mut state.subscriptions, &refused_subscriptions);
            if state.subscriptions.iter().any(|s| s.queue == DISCOVERY_QUEUE) {
                state.fbp_declared = Some(generation);
            }
            Ok::<_, Error>(live)
        }
        .await;
        match result {
            Ok(live) => {
                let mut events = connection.events_listener();
                let lost = self.lost.clone();
                let closed = self.closed.clone();
                let (publish, consume) = (live.publish.clone(), live.consume.clone());
                self.tasks.spawn(async move {
                    loop {
                        tokio::select! {
                            _ = closed.cancelled() => return,
                            ev = events.next() => match ev {
                                Some(lapin::Event::Error(e)) => {
                                    // A channel-level error (a passive declare of a
                                    // missing queue on a one-off channel) closes that
                                    // channel only: the connection is fine unless it
                                    // was one of ours.
                                    if e.is_amqp_soft_error() {
                                        tokio::time::sleep(Duration::from_millis(20)).await;
                                        if publish.status().connected() && consume.status().connected() {
                                            debug!("channel error on a one-off channel: {}", describe_err(&e));
                                            continue;
                                        }
                                    }
                                    let _ = lost.send((generation, describe_err(&e)));
                                    return;
                                }
                                Some(_) => {}
                                None => {
                                    let _ = lost.send((generation, "connection closed".into()));
                                    return;
                                }
                            }
                        }
                    }
                });
                state.live = Some(live);
                self.generation.send_replace(generation);
                Ok(())
            }
            Err(e) => {
                let _ = connection.close(200, "setup failed".into()).await;
                Err(e)
            }
        }
    }

    pub(super) async fn start_consumer(self: &Arc<Self>, live: &Live, sub: Subscription) -> Result<()> {
        let mut consumer = live
            .consume
            .basic_consume(
                sub.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| Error::broker(format!("consume {:?}", sub.queue), describe_err(&e)))?;
        *sub.tag.lock().unwrap() = Some(consumer.tag());
        let settler: Arc<dyn Settle> = Arc::new(Settler { ops: self.ops.clone() });
        let generation = live.generation;
        let lost = self.lost.clone();
        let closed = self.closed.clone();
        let channel = live.consume.clone();
        let inner = self.clone();
        self.tasks.spawn(async move {
            loop {
                // Biased, hot branch first: the others are only polled
                // (and register wakers) when no delivery is ready.
                let next = tokio::select! {
                    biased;
                    n = consumer.next() => n,
                    _ = closed.cancelled() => return,
                    _ = sub.sink.closed() => return,
                };
                match next {
                    Some(Ok(d)) => {
                        let timestamp = *d.properties.timestamp();
                        let msg = Message { inport: sub.inport.clone(), payload: Payload::new(d.data), redelivered: d.redelivered, timestamp };
                        let delivery = Delivery::new(msg, d.delivery_tag, generation, settler.clone());
                        // A full receiver is waited for, but not past close.
                        let sent = match sub.sink.try_send(delivery) {
                            Ok(()) => true,
                            Err(mpsc::error::TrySendError::Full(delivery)) => tokio::select! {
                                r = sub.sink.send(delivery) => r.is_ok(),
                                _ = closed.cancelled() => false,
                            },
                            Err(mpsc::error::TrySendError::Closed(_)) => false,
                        };
                        if !sent {
                            return; // receiver gone or closing; the delivery requeued itself on drop
                        }
                    }
                    Some(Err(e)) => {
                        let _ = lost.send((generation, describe_err(&e)));
                        return;
                    }
                    // The consumer ended, with everything it had received
                    // handed over. Asked for (unsubscribe, close), or by the
                    // broker on a channel still open (its queue was
                    // deleted): only that subscription is concerned. A
                    // closed channel is a lost connection.
                    None => {
                        if closed.is_cancelled() || sub.ended.is_cancelled() {
                            return;
                        }
                        if channel.status().connected() {
                            inner.consumer_cancelled(sub, generation).await;
                            return;
                        }
                        let _ = lost.send((generation, format!("consumer of {:?} was cancelled", sub.queue)));
                        return;
                    }
                }
            }
        });
        Ok(())
    }

    /// The broker cancelled a subscription's consumer (its queue was
    /// deleted), on a connection that is fine. A queue this connection
    /// declared is declared again, with its bindings, and consumed again
    /// (a participant's inport keeps working when someone deletes it);
    /// a queue someone else declared ends that subscription. Nothing else
    /// is touched: no reconnect.
    ///
    /// Boxed: `start_consumer` spawns the task that calls this, which calls
    /// `start_consumer` again.
    fn consumer_cancelled(self: Arc<Self>, sub: Subscription, generation: u64) -> Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async move { self.consumer_cancelled_now(sub, generation).await })
    }

    async fn consumer_cancelled_now(self: &Arc<Self>, sub: Subscription, generation: u64) {
        let state = self.state.lock().await;
        let Some(live) = state.live.clone().filter(|l| l.generation == generation) else {
            return; // replaced: the new connection replays everything
        };
        if !state.subscriptions.iter().any(|s| s.id == sub.id) {
            return; // unsubscribed meanwhile
        }
        let queue = sub.queue.clone();
        let declared = state.declarations.iter().find(|d| d.queue == queue && d.kind == PortKind::In).cloned();
        let again = match declared {
            None => Err(Error::broker(format!("consume {queue:?}"), "deleted, and declared by someone else")),
            Some(decl) => {
                let bindings: Vec<String> = state.bindings.iter().filter(|(_, q)| *q == queue).map(|(x, _)| x.clone()).collect();
                async {
                    declare_on(&live.connection, &decl, self.url.queue_type).await?;
                    for exchange in &bindings {
                        bind_on(&live.connection, exchange, &queue).await?;
                    }
                    self.start_consumer(&live, sub.clone()).await
                }
                .await
            }
        };
        let mut state = state;
        match again {
            Ok(()) => warn!(queue = %queue, "queue {queue:?} was deleted under its consumer; declared again, consuming on"),
            // The connection failed meanwhile: the reconnect replays it.
            Err(e) if !live.connection.status().connected() => {
                let _ = self.lost.send((generation, format!("consuming {queue:?} again failed: {e}")));
            }
            Err(e) => {
                warn!(queue = %queue, error = %e, "the broker cancelled the consumer of {queue:?} (queue deleted?); that subscription ends");
                state.subscriptions.retain(|s| s.id != sub.id);
            }
        }
    }
}

/// Remove the items at `indices` (ascending) from `v`.
fn remove_at<T>(v: &mut Vec<T>, indices: &[usize]) {
    let mut i = 0;
    v.retain(|_| {
        let keep = !indices.contains(&i);
        i += 1;
        keep
    });
}
