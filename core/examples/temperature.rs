//! A sensor, a formatter and a display, as three participants wired by
//! queue names, in the spirit of the MsgFlo IoT article.
//!
//! `cargo run -p msgflo --example temperature [-- --broker URL] [--count N]`
//!
//! With no broker configured (no `--broker`, `MSGFLO_BROKER` or
//! `CLOUDAMQP_URL`) it runs on the in-process broker, so it needs nothing
//! installed. With a broker URL the same three participants talk over
//! RabbitMQ or Mosquitto, announce themselves on `fbp`, and can be seen and
//! rewired by a coordinator like any other participant.
//!
//! Wiring by naming: the sensor's outport and the formatter's inport share
//! the queue name `ROLE.READING`; on AMQP the inport's shadow exchange of
//! that name is what the outport publishes to, on MQTT it is one topic.

use std::time::Duration;

use clap::Parser;
use msgflo::{Definition, Options, Participant, Payload, PortDef};

#[derive(Parser)]
struct Args {
    /// Broker URL; default: MSGFLO_BROKER, CLOUDAMQP_URL, else in-process.
    #[arg(long)]
    broker: Option<String>,
    /// Readings to take before exiting (0 = run until Ctrl-C).
    #[arg(long, default_value_t = 5)]
    count: u32,
    /// Prefix for the roles (and so the queues).
    #[arg(long, default_value = "demo")]
    prefix: String,
}

#[tokio::main]
async fn main() -> msgflo::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    let args = Args::parse();
    let broker = args
        .broker
        .clone()
        .or_else(msgflo::broker::configured)
        .unwrap_or_else(|| format!("memory://{}", args.prefix));
    let reading = format!("{}.READING", args.prefix);
    let text = format!("{}.TEXT", args.prefix);
    let opts = Options::broker(broker.clone());

    let display = Participant::start(
        &Definition::new("Display").inport(PortDef::new("text").with_type("string").with_queue(&text)),
        &format!("{}-display", args.prefix),
        opts.clone(),
    )
    .await?;
    let formatter = Participant::start(
        &Definition::new("FormatTemperature")
            .inport(PortDef::new("celsius").with_type("number").with_queue(&reading))
            .outport(PortDef::new("text").with_type("string").with_queue(&text)),
        &format!("{}-formatter", args.prefix),
        opts.clone(),
    )
    .await?;
    let sensor = Participant::start(
        &Definition::new("TemperatureSensor").outport(PortDef::new("celsius").with_type("number").with_queue(&reading)),
        &format!("{}-sensor", args.prefix),
        opts,
    )
    .await?;
    println!("sensor -> formatter -> display running on {}", sensor.transport().describe());

    let f = formatter.clone();
    tokio::spawn(async move {
        f.serve(|m| async move {
            let celsius = m.payload.parse_json().and_then(|v| v.as_f64()).ok_or("reading is not a number")?;
            Ok(vec![("text".to_string(), Payload::json(&format!("Temperature: {celsius:.1} C").into()))])
        })
        .await
    });

    let sensing = tokio::spawn({
        let sensor = sensor.clone();
        let count = args.count;
        async move {
            let mut i = 0u32;
            while count == 0 || i < count {
                let celsius = 21.5 + (f64::from(i) * 0.8).sin() * 2.0;
                sensor.send("celsius", Payload::json(&((celsius * 10.0).round() / 10.0).into())).await?;
                i += 1;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Ok::<_, msgflo::Error>(())
        }
    });

    let mut shown = 0;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            d = display.recv() => {
                let Some(d) = d else { break };
                match d.payload().parse_json() {
                    Some(serde_json::Value::String(s)) => println!("{s}"),
                    _ => println!("{}", String::from_utf8_lossy(d.payload().as_bytes())),
                }
                d.ack()?;
                shown += 1;
                if args.count != 0 && shown >= args.count {
                    break;
                }
            }
        }
    }
    sensing.abort();
    for p in [sensor, formatter, display] {
        p.stop().await?;
    }
    Ok(())
}
