//! amqps:// and mqtts:// against private RabbitMQ and Mosquitto TLS
//! listeners, with a CA made here (rcgen). The broker asks for a client
//! certificate. A wrong CA or a name the certificate does not carry is a
//! clear error and never a plain-TCP fallback. The TLS files come from
//! MSGFLO_TLS_CA / _CERT / _KEY (one test: the environment is the
//! process's).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::brokers::{PrivateMosquitto, PrivateRabbit};
use common::*;
use msgflo::transport::{connect, ConnectOptions, Declaration, PortKind, Target, Transport};
use msgflo::Payload;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

const T: Duration = Duration::from_secs(20);

struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// A CA, a server certificate for `localhost` only (so 127.0.0.1 is a
    /// name it does not carry), a client certificate, and another CA.
    fn make() -> Pki {
        let dir = std::env::temp_dir().join(unique("msgflo-pki"));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
        let ca = |cn: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, cn);
            let cert = params.self_signed(&key).unwrap();
            (cert.pem(), Issuer::new(params, key))
        };
        let (ca_pem, issuer) = ca("msgflo test CA");
        let (other_pem, _) = ca("some other CA");
        let leaf = |names: Vec<String>, cn: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            let cert = params.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server, server_key) = leaf(vec!["localhost".into()], "localhost");
        let (client, client_key) = leaf(vec![], "msgflo test client");
        write("ca.pem", ca_pem);
        write("other-ca.pem", other_pem);
        write("server.pem", server);
        write("server.key", server_key);
        write("client.pem", client);
        write("client.key", client_key);
        // The brokers run as their own users: let them read the files.
        let _ = std::process::Command::new("chmod").args(["-R", "a+rX"]).arg(&dir).status();
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn use_files(pki: &Pki, ca: &str, client: bool) {
    std::env::set_var("MSGFLO_TLS_CA", pki.path(ca));
    if client {
        std::env::set_var("MSGFLO_TLS_CERT", pki.path("client.pem"));
        std::env::set_var("MSGFLO_TLS_KEY", pki.path("client.key"));
    } else {
        std::env::remove_var("MSGFLO_TLS_CERT");
        std::env::remove_var("MSGFLO_TLS_KEY");
    }
}

/// A message through `queue` and back, over `t`.
async fn roundtrip(t: &Arc<dyn Transport>, queue: &str, declare: bool) {
    if declare {
        t.declare(&Declaration { kind: PortKind::In, queue: queue.into(), persistent: false }).await.unwrap();
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    t.subscribe(queue, queue.into(), tx).await.unwrap();
    t.publish(Target::Queue(queue.into()), Payload::new(b"over TLS".to_vec()), false).await.unwrap();
    let d = tokio::time::timeout(T, rx.recv()).await.expect("a message in time").unwrap();
    assert_eq!(d.payload().as_bytes(), b"over TLS");
    d.ack().unwrap();
}

async fn refused(url: &str, what: &str) -> String {
    match connect(url, &ConnectOptions::default()).await {
        Ok(_) => panic!("{what}: connected to {url}"),
        Err(e) => {
            let e = e.to_string();
            println!("{what}: {e}");
            e
        }
    }
}

fn tls_error(e: &str) -> bool {
    let e = e.to_lowercase();
    ["certificate", "unknownissuer", "unknown issuer", "notvalidforname", "not valid for name", "handshake", "tls", "alert"].iter().any(|w| e.contains(w))
}

#[tokio::test]
async fn amqps_and_mqtts_with_a_ca_of_our_own() {
    init_logs();
    let pki = Pki::make();
    let p = |n: &str| pki.path(n);
    let rabbit_tls = format!(
        "listeners.ssl.default = 127.0.0.1:{{port}}\nssl_options.cacertfile = {}\nssl_options.certfile = {}\nssl_options.keyfile = {}\nssl_options.verify = verify_peer\nssl_options.fail_if_no_peer_cert = true\n",
        p("ca.pem"),
        p("server.pem"),
        p("server.key")
    );
    let rabbit = PrivateRabbit::start_with("tls", &[], &rabbit_tls);
    let mosquitto_tls = format!("cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n", p("ca.pem"), p("server.pem"), p("server.key"));
    let mosquitto = PrivateMosquitto::start_with(false, &[], &mosquitto_tls);
    let amqps = format!("amqps://localhost:{}", rabbit.tls_port);
    let mqtts = format!("mqtts://localhost:{}", mosquitto.port);

    // The right CA and a client certificate: messages pass.
    use_files(&pki, "ca.pem", true);
    let t = connect(&amqps, &ConnectOptions::default()).await.expect("amqps with our CA");
    roundtrip(&t, &unique("tls-q"), true).await;
    t.close().await.unwrap();
    let t = connect(&mqtts, &ConnectOptions::default()).await.expect("mqtts with our CA");
    roundtrip(&t, &unique("tls-topic"), false).await;
    t.close().await.unwrap();

    // Another CA: the broker's certificate is not trusted.
    use_files(&pki, "other-ca.pem", true);
    for url in [&amqps, &mqtts] {
        let e = refused(url, "another CA").await;
        assert!(tls_error(&e), "a TLS error for another CA on {url}: {e}");
    }
    // A name the certificate does not carry (it is for localhost only).
    use_files(&pki, "ca.pem", true);
    let by_ip = [format!("amqps://127.0.0.1:{}", rabbit.tls_port), format!("mqtts://127.0.0.1:{}", mosquitto.port)];
    for url in &by_ip {
        let e = refused(url, "wrong name").await;
        assert!(tls_error(&e), "a TLS error for a name not in the certificate on {url}: {e}");
    }
    // No client certificate: the broker refuses the handshake.
    use_files(&pki, "ca.pem", false);
    let e = refused(&amqps, "no client certificate").await;
    assert!(!e.is_empty());
    // A TLS port never answers plain AMQP as if it were one.
    let e = refused(&format!("amqp://127.0.0.1:{}", rabbit.tls_port), "plain AMQP to the TLS port").await;
    assert!(!e.is_empty());
    // A missing CA file says which one.
    std::env::set_var("MSGFLO_TLS_CA", "/no/such/ca.pem");
    let e = refused(&amqps, "missing CA file").await;
    assert!(e.contains("MSGFLO_TLS_CA=/no/such/ca.pem"), "{e}");
    for k in ["MSGFLO_TLS_CA", "MSGFLO_TLS_CERT", "MSGFLO_TLS_KEY"] {
        std::env::remove_var(k);
    }
    let _ = Path::new(&pki.dir);

    // Credentials: a password never shows, not in `msgflo status` (also
    // verbose, with debug logs), not in `msgflo send`'s logs, not in the
    // error for a wrong one, not in discovery.
    const SECRET: &str = "s3cr3t-pw-5e7a";
    rabbit.ctl(&["add_user", "msgflo", SECRET]).unwrap();
    rabbit.ctl(&["set_permissions", "-p", "/", "msgflo", ".*", ".*", ".*"]).unwrap();
    let url = format!("amqp://msgflo:{SECRET}@127.0.0.1:{}", rabbit.port);
    let role = unique("creds");
    let (participant, _serving) = start_repeat(&role, msgflo::Options::broker(&url)).await;
    let run = |args: Vec<String>| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_msgflo")).args(&args).env("RUST_LOG", "msgflo=debug").output().unwrap();
        (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };
    // Its announcement is in `fbp` (where `status` finds it) before asking.
    let raw = Raw::connect_to(&url).await;
    eventually("the announcement in fbp", T, || async { (raw.depth("fbp").await > 0).then_some(()) }).await;
    let (ok, status) = run(vec!["status".into(), "--broker".into(), url.clone(), "--wait".into(), "2".into(), "--verbose".into()]);
    assert!(ok, "{status}");
    assert!(status.contains("msgflo:***@"), "the URL is shown masked: {status}");
    assert!(status.contains(&role), "status lists the participant: {status}");
    let (ok, json) = run(vec!["status".into(), "--broker".into(), url.clone(), "--wait".into(), "1".into(), "--json".into()]);
    assert!(ok, "{json}");
    let (ok, sent) = run(vec!["send".into(), "--broker".into(), url.clone(), "--queue".into(), format!("{role}.IN"), "--json".into(), "1".into()]);
    assert!(ok, "{sent}");
    let wrong = format!("amqp://msgflo:{SECRET}-wrong@127.0.0.1:{}", rabbit.port);
    let (ok, refused) = run(vec!["send".into(), "--broker".into(), wrong, "--queue".into(), format!("{role}.IN"), "--json".into(), "1".into()]);
    assert!(!ok, "a wrong password is refused: {refused}");
    for (what, text) in [("status", &status), ("status --json", &json), ("send", &sent), ("a refused login", &refused)] {
        assert!(!text.contains(SECRET), "the password shows in {what}: {text}");
    }
    participant.announce().await.unwrap();
    let m = raw.get("fbp", T).await;
    let text = String::from_utf8_lossy(&m.delivery.data).into_owned();
    assert!(text.contains(&role) && !text.contains(SECRET), "discovery: {text}");
    participant.stop().await.unwrap();
}
