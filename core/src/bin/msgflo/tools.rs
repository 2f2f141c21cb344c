//! The small tools: register, send, dump, procfile, status.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use msgflo::coordinator::{Coordinator, Options};
use msgflo::discovery::{Definition, PortDef};
use msgflo::transport::{Target, Transport};
use msgflo::Payload;
use serde_json::json;

use crate::run::load;
use crate::{Failure, GraphArgs};

async fn connect(broker: Option<String>, name: &str) -> Result<(String, Arc<dyn Transport>), Failure> {
    let url = msgflo::broker::resolve(broker.as_deref());
    let t = crate::connect(&url, name).await?;
    Ok((url, t))
}

fn is_amqp(url: &str) -> bool {
    url.starts_with("amqp")
}

/// A foreign participant's definition file, as the original's
/// msgflo-register reads it. Keys it does not know are ignored, as there;
/// so is a text key given another type (a number, a list), and a `hidden`
/// that is not `true` is false.
#[derive(serde::Deserialize)]
struct ForeignDefinition {
    #[serde(default, deserialize_with = "text")]
    component: Option<String>,
    #[serde(default, deserialize_with = "text")]
    label: Option<String>,
    #[serde(default, deserialize_with = "text")]
    icon: Option<String>,
    #[serde(default, deserialize_with = "text")]
    id: Option<String>,
    inports: Option<ForeignPorts>,
    outports: Option<ForeignPorts>,
}

/// A text value, or None for anything else (null, a number, a list).
fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v: serde_json::Value = serde::Deserialize::deserialize(d)?;
    Ok(v.as_str().map(str::to_owned))
}

/// `true`, or false for anything else.
fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v: serde_json::Value = serde::Deserialize::deserialize(d)?;
    Ok(v.as_bool().unwrap_or(false))
}

#[derive(serde::Deserialize)]
#[serde(untagged, expecting = "a mapping of port id to port, or a list of ports each with an `id`")]
enum ForeignPorts {
    Map(std::collections::BTreeMap<String, Option<ForeignPort>>),
    List(Vec<ListedPort>),
}

#[derive(serde::Deserialize, Default)]
struct ForeignPort {
    #[serde(rename = "type", default, deserialize_with = "text")]
    type_: Option<String>,
    #[serde(default, deserialize_with = "text")]
    queue: Option<String>,
    #[serde(default, deserialize_with = "text")]
    description: Option<String>,
    #[serde(default, deserialize_with = "flag")]
    hidden: bool,
}

#[derive(serde::Deserialize)]
struct ListedPort {
    id: String,
    #[serde(flatten)]
    port: ForeignPort,
}

impl ForeignPorts {
    fn into_ports(self) -> Vec<(String, ForeignPort)> {
        match self {
            ForeignPorts::Map(m) => m.into_iter().map(|(id, p)| (id, p.unwrap_or_default())).collect(),
            ForeignPorts::List(l) => l.into_iter().map(|p| (p.id, p.port)).collect(),
        }
    }
}

/// A foreign participant's definition from YAML: `component`, optional
/// `label`, `icon`, `id`, and `inports`/`outports` as maps from port id to
/// `{queue, type, description, hidden}` (lists of ports with `id` are
/// accepted too). `#ROLE` in queue names is replaced by the role.
pub fn foreign_definition(yaml: &str, role: &str) -> Result<Definition, String> {
    let f: ForeignDefinition = yaml_serde::from_str(yaml).map_err(|e| e.to_string())?;
    let component = f.component.filter(|c| !c.is_empty()).ok_or(".component is not defined")?;
    let mut def = Definition::new(component);
    def.label = f.label;
    def.icon = f.icon;
    def.id = Some(f.id.unwrap_or_else(|| role.to_owned()));
    for (ports, inport) in [(f.inports, true), (f.outports, false)] {
        for (id, p) in ports.map(ForeignPorts::into_ports).unwrap_or_default() {
            let mut port = PortDef::new(id);
            if let Some(t) = p.type_ {
                port.type_ = t;
            }
            port.queue = p.queue.map(|q| q.replace("#ROLE", role));
            port.description = p.description;
            port.hidden = p.hidden;
            def = if inport { def.inport(port) } else { def.outport(port) };
        }
    }
    Ok(def)
}

pub async fn register(roles: Vec<String>, broker: Option<String>, interval: Duration, once: bool) -> Result<(), Failure> {
    let mut messages = Vec::new();
    for r in &roles {
        let (role, file) = r.split_once(':').ok_or_else(|| Failure::input(format!("--role {r:?}: expected ROLE:FILE.yaml")))?;
        let text = std::fs::read_to_string(file).map_err(|e| Failure::input(format!("{file}: {e}")))?;
        let def = foreign_definition(&text, role).map_err(|e| Failure::input(format!("{file}: {e}")))?;
        let info = def.instantiate(role).map_err(|e| Failure::input(format!("{file}: {e}")))?;
        messages.push((info.id.clone(), Payload::json(&info.discovery_message())));
    }
    let (_, t) = connect(broker, "register").await?;
    let period = interval.div_f64(2.2).max(Duration::from_millis(100));
    loop {
        for (id, m) in &messages {
            t.announce(m.clone()).await?;
            if once {
                println!("sent discovery message for {id}");
            }
        }
        t.flush().await?;
        if once {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    let _ = t.close().await;
    Ok(())
}

pub async fn send(queue: String, json: Option<String>, data: Option<String>, broker: Option<String>) -> Result<(), Failure> {
    let payload = match (json, data) {
        (Some(j), _) => {
            serde_json::from_str::<serde_json::Value>(&j).map_err(|e| Failure::input(format!("--json is not valid JSON: {e}")))?;
            Payload::new(j.into_bytes())
        }
        (None, Some(d)) if d == "-" => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).map_err(|e| Failure::input(format!("reading stdin: {e}")))?;
            Payload::new(buf)
        }
        (None, Some(d)) => Payload::new(d.into_bytes()),
        (None, None) => return Err(Failure::input("give the message with --json DATA or --data [TEXT]")),
    };
    let (url, t) = connect(broker, "send").await?;
    if is_amqp(&url) && t.queue_depth(&queue).await?.is_none() {
        // The default exchange drops messages for queues that do not exist.
        let _ = t.close().await;
        return Err(Failure::run(format!("queue {queue:?} does not exist on {url}; nothing sent")));
    }
    let n = payload.len();
    t.publish(Target::Queue(queue.clone()), payload, true).await?;
    t.flush().await?;
    let _ = t.close().await;
    println!("sent {n} bytes to {queue}");
    Ok(())
}

pub async fn dump(queue: String, amount: u64, timeout: Option<Duration>, broker: Option<String>) -> Result<(), Failure> {
    let (_, t) = connect(broker, "dump").await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    t.subscribe(&queue, Arc::from(queue.as_str()), tx).await?;
    let deadline = timeout.map(|s| tokio::time::Instant::now() + s);
    let mut got = 0u64;
    let mut out = std::io::stdout().lock();
    while amount == 0 || got < amount {
        let next = async {
            match deadline {
                Some(d) => tokio::time::timeout_at(d, rx.recv()).await.ok().flatten(),
                None => rx.recv().await,
            }
        };
        let d = tokio::select! {
            d = next => d,
            _ = tokio::signal::ctrl_c() => None,
        };
        let Some(d) = d else { break };
        let _ = out.write_all(d.payload().as_bytes());
        let _ = out.write_all(b"\n");
        let _ = out.flush();
        d.ack()?;
        got += 1;
    }
    drop(rx);
    t.flush().await?;
    let _ = t.close().await;
    if amount != 0 && got < amount {
        return Err(Failure::run(format!("got {got} of {amount} message(s) from {queue}")));
    }
    Ok(())
}

pub fn procfile(args: GraphArgs) -> Result<(), Failure> {
    let mut loaded = load(&args)?;
    for r in &args.ignore {
        loaded.graph.processes.remove(r);
    }
    loaded.graph.connections.retain(|c| {
        loaded.graph.processes.contains_key(&c.tgt.process) && c.src.as_ref().is_none_or(|s| loaded.graph.processes.contains_key(&s.process))
    });
    let text = loaded.library.procfile(&loaded.graph)?;
    print!("{text}");
    Ok(())
}

pub async fn status(broker: Option<String>, as_json: bool, wait: Duration) -> Result<(), Failure> {
    let (url, t) = connect(broker, "status").await?;
    let observer = Coordinator::start(t.clone(), &url, Options::observer()).await?;
    tokio::time::sleep(wait).await;
    let mut snap = observer.snapshot();
    observer.stop().await;
    // Queue depths where the broker can tell (AMQP); a queue that does
    // not exist (any more) is shown as missing.
    let amqp = url.starts_with("amqp");
    for p in &mut snap.participants {
        for port in &mut p.inports {
            if let Some(q) = &port.queue {
                match t.queue_depth(q).await {
                    Ok(d) => {
                        port.depth = d;
                        port.missing = amqp && d.is_none();
                    }
                    Err(e) => tracing::warn!("cannot ask the broker about queue {q}: {e}"),
                }
            }
        }
    }
    let _ = t.close().await;
    let redacted = msgflo::broker::BrokerUrl::parse(&url).map(|u| u.redacted()).unwrap_or(url);
    if as_json {
        let v = json!({
            "broker": redacted,
            "participants": snap.participants,
            "edges": snap.reported_wires,
            "rejected": snap.rejected,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    let alive = snap.participants.iter().filter(|p| p.alive > 0).count();
    println!("broker {redacted}: {} participant(s), {alive} alive", snap.participants.len());
    if !snap.participants.is_empty() {
        println!("{:<20} {:<24} {:>6} {:>10}  PORTS", "ROLE", "COMPONENT", "ALIVE", "LAST SEEN");
    }
    for p in &snap.participants {
        let seen = p.last_seen_secs.map(|s| format!("{s:.0} s ago")).unwrap_or_else(|| "-".into());
        let mut ports: Vec<String> = p
            .inports
            .iter()
            .map(|x| match (x.depth, x.missing) {
                (_, true) => format!("in:{}={} (queue missing)", x.id, x.queue.as_deref().unwrap_or("-")),
                (Some(d), _) => format!("in:{}={} ({d} queued)", x.id, x.queue.as_deref().unwrap_or("-")),
                (None, _) => format!("in:{}={}", x.id, x.queue.as_deref().unwrap_or("-")),
            })
            .collect();
        ports.extend(p.outports.iter().map(|x| format!("out:{}={}", x.id, x.queue.as_deref().unwrap_or("-"))));
        println!("{:<20} {:<24} {:>6} {:>10}  {}", p.role, p.component, format!("{}/{}", p.alive, p.instances), seen, ports.join(" "));
    }
    if snap.reported_wires.is_empty() {
        println!("edges: none reported (no coordinator running?)");
    } else {
        println!("edges (reported by running coordinators):");
        for w in &snap.reported_wires {
            println!("  {}  [{}]", w.wire, w.edges.join(", "));
        }
    }
    if snap.rejected > 0 {
        println!("{} message(s) on fbp were not discovery messages", snap.rejected);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::foreign_definition;

    #[test]
    fn foreign_definitions_in_both_shapes_and_clear_errors() {
        let map = "component: legacy/Mailer\ninports:\n  send:\n    queue: '#ROLE.mail.send'\n    type: object\n  bare:\noutports:\n  sent: {queue: '#ROLE.mail.sent', hidden: true}\nextra: ignored\n";
        let d = foreign_definition(map, "m").unwrap();
        assert_eq!(d.component, "legacy/Mailer");
        assert_eq!(d.id.as_deref(), Some("m"));
        let ins: Vec<_> = d.inports.iter().map(|p| (p.id.as_str(), p.queue.as_deref(), p.type_.as_str())).collect();
        assert_eq!(ins, [("bare", None, "any"), ("send", Some("m.mail.send"), "object")]);
        assert!(d.outports[0].hidden);
        assert_eq!(d.outports[0].queue.as_deref(), Some("m.mail.sent"));
        let list = "component: C\nid: fixed\ninports:\n  - {id: a, queue: q}\n";
        let d = foreign_definition(list, "r").unwrap();
        let lenient = "component: C\nid: 42\ninports:\n  a: {queue: 123, type: 5, hidden: 'yes'}\n  b: {hidden: true}\n";
        let l = foreign_definition(lenient, "r").unwrap();
        assert_eq!(l.id.as_deref(), Some("r"), "a number is not an id");
        assert_eq!((l.inports[0].queue.as_deref(), l.inports[0].type_.as_str(), l.inports[0].hidden), (None, "any", false));
        assert!(l.inports[1].hidden);
        assert_eq!((d.id.as_deref(), d.inports[0].id.as_str(), d.inports[0].queue.as_deref()), (Some("fixed"), "a", Some("q")));
        for (bad, says) in [
            ("label: no component\n", ".component is not defined"),
            ("component:\n", ".component is not defined"),
            ("component: ~\n", ".component is not defined"),
            ("component: C\ninports: 3\n", "a mapping of port id to port, or a list of ports each with an `id`"),
            ("component: C\ninports:\n  - {queue: q}\n", "a mapping of port id to port"),
            ("- just a list\n", "struct ForeignDefinition"),
            ("component: [\n", "line"),
        ] {
            let e = foreign_definition(bad, "r").unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
