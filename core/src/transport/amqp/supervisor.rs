//! The supervisor: notices a lost connection, reconnects with backoff
//! (jittered), replays declarations, bindings and subscriptions, bumps the
//! generation. It holds the connection's state only during one attempt.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::Inner;
use crate::transport::Backoff;

/// Reconnects after a loss, until closed.
pub(super) async fn supervise(inner: Arc<Inner>, mut lost: mpsc::UnboundedReceiver<(u64, String)>) {
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let current = *inner.generation.borrow();
        let reason = tokio::select! {
            _ = inner.closed.cancelled() => return,
            l = lost.recv() => match l {
                Some((g, reason)) if g == current => reason,
                Some(_) => continue, // about a connection already replaced
                None => return,
            },
            _ = poll.tick() => {
                let state = inner.state.lock().await;
                match &state.live {
                    Some(l) if !l.connection.status().connected() => "connection no longer open".to_owned(),
                    _ => continue,
                }
            }
        };
        warn!(broker = %inner.url.redacted(), %reason, "lost connection to broker; reconnecting");
        if let Some(old) = inner.state.lock().await.live.take() {
            let _ = old.connection.close(200, "reconnecting".into()).now_or_never();
        }
        let mut backoff = Backoff::new();
        let mut attempts = 0u32;
        loop {
            if inner.closed.is_cancelled() {
                return;
            }
            attempts += 1;
            // The lock is held for one attempt only: between attempts,
            // callers record what they declare, bind and subscribe (the
            // next attempt replays it) instead of waiting out the outage.
            let opened = {
                let mut state = inner.state.lock().await;
                // `close` waits for this lock: an attempt hanging on an
                // unreachable broker gives way to it.
                tokio::select! {
                    r = inner.open(&mut state, current + 1) => r,
                    _ = inner.closed.cancelled() => return,
                }
            };
            match opened {
                Ok(()) => {
                    info!(broker = %inner.url.redacted(), attempts, "reconnected to broker; declarations and subscriptions restored");
                    break;
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    if attempts == 1 || attempts.is_multiple_of(10) {
                        warn!(broker = %inner.url.redacted(), error = %e, attempts, "broker still unavailable; retrying in {delay:?}");
                    } else {
                        debug!(error = %e, attempts, "reconnect failed");
                    }
                    tokio::select! {
                        _ = inner.closed.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}

