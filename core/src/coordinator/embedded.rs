//! The broker embedded in the coordinator when none is configured: an MQTT
//! broker (rumqttd) on a free loopback port, so `msgflo run` works on a
//! machine with nothing else installed. It never assumes 1883 is free (a
//! Mosquitto may listen there). Spawned participants get its URL.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// A running embedded broker. It lives as long as the process (rumqttd has
/// no stop); dropping this handle does not stop it.
#[derive(Debug, Clone)]
pub struct EmbeddedBroker {
    pub addr: SocketAddr,
}

impl EmbeddedBroker {
    /// The URL participants connect to.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }

    /// Start on a free port of 127.0.0.1 and wait until it accepts
    /// connections.
    pub fn start() -> Result<EmbeddedBroker> {
        let mut last = String::new();
        for _ in 0..3 {
            // Ask the kernel for a free port, then hand it to the broker
            // (another process could take it in between: then try again).
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| embedded_err(format!("no free loopback port: {e}")))?
                .port();
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let mut broker = rumqttd::Broker::new(config(addr));
            std::thread::Builder::new()
                .name("embedded-broker".into())
                .spawn(move || {
                    if let Err(e) = broker.start() {
                        tracing::error!("embedded broker stopped: {e}");
                    }
                })
                .map_err(|e| embedded_err(format!("cannot start its thread: {e}")))?;
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                match mqtt_handshake(addr) {
                    Ok(()) => return Ok(EmbeddedBroker { addr }),
                    Err(e) => last = e.to_string(),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Err(embedded_err(format!("it did not start: {last}")))
    }
}

/// Ready means it speaks MQTT: CONNECT, expect CONNACK "accepted", then
/// DISCONNECT (a bare TCP connect would be logged as a broken client).
fn mqtt_handshake(addr: SocketAddr) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    let id = b"msgflo-probe";
    let mut packet = vec![0x10, (12 + id.len()) as u8, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 10, 0, id.len() as u8];
    packet.extend_from_slice(id);
    s.write_all(&packet)?;
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack)?;
    if ack != [0x20, 0x02, 0x00, 0x00] {
        return Err(std::io::Error::other(format!("unexpected CONNACK {ack:02x?}")));
    }
    s.write_all(&[0xe0, 0x00])
}

fn embedded_err(reason: String) -> Error {
    Error::Connection { url: "embedded MQTT broker".into(), reason }
}

fn config(addr: SocketAddr) -> rumqttd::Config {
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 60_000,
        // Large payloads pass, as through Mosquitto (256 MiB is MQTT's limit).
        max_payload_size: 256 * 1024 * 1024 - 1,
        max_inflight_count: 500,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "msgflo-embedded".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let router = rumqttd::RouterConfig {
        max_connections: 10_010,
        max_outgoing_packet_count: 200,
        // rumqttd keeps what it routed per subscription filter in a log of
        // segments, dropping the oldest segment when there are more than
        // `max_segment_count`. The size counts payload bytes, and an entry
        // costs ~250 bytes besides: with 100 MiB x 10 the soak
        // (scripts/soak) saw `msgflo run` grow by ~500 bytes per forwarded
        // message (towards 1 GiB per filter); with 64 KiB x 4 it stayed
        // flat. 1 MiB x 4 bounds a filter at 4 MiB of payload and topic
        // (~75 MiB with tiny messages); a subscriber further behind loses
        // the oldest, as QoS 0 allows. The embedded broker is for development: for durable
        // QoS 1 sessions use Mosquitto or RabbitMQ.
        max_segment_size: 1024 * 1024,
        max_segment_count: 4,
        ..Default::default()
    };
    rumqttd::Config {
        id: 0,
        router,
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..Default::default()
    }
}
