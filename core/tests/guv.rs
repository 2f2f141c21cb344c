//! `msgflo guv`: validate and simulate as a process, one dry-run poll
//! against the real RabbitMQ, metrics, and the Kubernetes and Heroku
//! backends against a local HTTP server that records requests (there is no
//! cluster and no Heroku here; the test names say so).

mod common;

use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use msgflo::guv::backend::{Backend, Heroku, Kubernetes};
use msgflo::guv::config::RoleConfig;
use msgflo::guv::http;
use tokio::net::TcpListener;

/// A request as the recording server saw it (header names lower case).
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

fn msgflo() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_msgflo"));
    for k in ["MSGFLO_BROKER", "CLOUDAMQP_URL", "GUV_BROKER", "GUV_CONFIG", "GUV_MANAGEMENT_URL", "GUV_KUBERNETES_URL", "GUV_HEROKU_URL", "GUV_APP", "HEROKU_API_KEY"] {
        c.env_remove(k);
    }
    c
}

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique("msgflo-guv"));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn validate_exit_codes_and_lines() {
    let good = write("good.yaml", "'*': {max: 20, min: 0}\nanalyze: {p: 4, deadline: 90, q: analyze.IN}\n");
    let o = msgflo().args(["guv", "validate"]).arg(&good).output().unwrap();
    assert!(o.status.success(), "{o:?}");
    assert!(out(&o).contains("ok (1 roles)"), "{}", out(&o));

    // The original's own trap: no space after the colon.
    let trap = write("trap.yaml", "r: {p:60, deadline: 240}\nimpossible: {processing: 60, deadline: 61}\n");
    let o = msgflo().args(["guv", "validate"]).arg(&trap).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let text = out(&o);
    assert!(text.contains("role 'r': unknown key 'p:60'"), "{text}");
    assert!(text.contains("role 'impossible'") && text.contains("lower than processing time"), "{text}");
    // --allow-key accepts the key; the impossible role still fails.
    let o = msgflo().args(["guv", "validate", "--allow-key", "p:60"]).arg(&trap).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(!out(&o).contains("p:60"));

    let o = msgflo().args(["guv", "validate", "/nonexistent/guv.yaml"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
}

#[test]
fn simulate_json_has_the_fields_and_is_deterministic() {
    let cfg = write("sim.yaml", "worker: {processing: 5, stddev: 5, min: 0, max: 20, boot: 30, pollinterval: 10}\n");
    let run = || {
        let o = msgflo()
            .args(["guv", "simulate", "--scenario", "sparse", "--policy", "msgflo", "--policy", "fixed:1", "--seed", "3", "--json", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        out(&o)
    };
    let a = run();
    assert_eq!(a, run(), "same seed, same output");
    let lines: Vec<serde_json::Value> = a.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    for k in ["policy", "trace", "jobs", "within_deadline", "sojourn_p50", "sojourn_p99", "worker_seconds", "oracle_worker_seconds", "scale_actions", "busy_kills", "first_alert_s"] {
        assert!(lines[0].get(k).is_some(), "missing {k} in {}", lines[0]);
    }
    assert_eq!(lines[0]["policy"], "msgflo");
    assert_eq!(lines[0]["trace"], "sparse");
    assert!(lines[0]["first_alert_s"].is_null());
    // Scale to zero between sparse jobs: cheaper than one worker always on.
    assert!(lines[0]["worker_seconds"].as_f64().unwrap() < lines[1]["worker_seconds"].as_f64().unwrap());
    // Cold starts (boot ~30 s + a slow job) may miss a few; most make it.
    assert!(lines[0]["within_deadline"].as_f64().unwrap() >= 0.8, "{}", lines[0]);

    // A CSV trace and a plot.
    let trace = write("t.csv", "arrival,processing\n0,2\n1,2\n1.5,3\n40,1\n");
    let plot = trace.with_extension("svg");
    let o = msgflo().args(["guv", "simulate", "--trace"]).arg(&trace).arg("--config").arg(&cfg).arg("--plot").arg(&plot).output().unwrap();
    assert!(o.status.success(), "{o:?}");
    assert!(out(&o).contains("msgflo") && out(&o).contains("guv"), "{}", out(&o));
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<polyline") && svg.contains("workers"));

    let o = msgflo().args(["guv", "simulate", "--scenario", "nope", "--config"]).arg(&cfg).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown scenario"));
}

#[tokio::test(flavor = "multi_thread")]
async fn oneshot_dry_run_json_on_rabbitmq() {
    let raw = Raw::connect().await;
    let q = unique("guv-jobs");
    raw.ch
        .queue_declare(q.as_str().into(), QueueDeclareOptions { auto_delete: false, ..Default::default() }, FieldTable::default())
        .await
        .unwrap();
    let n = 40;
    for i in 0..n {
        raw.send_to_queue(&q, format!("job {i}").as_bytes()).await;
    }
    eventually("40 messages ready", Duration::from_secs(10), || async { (raw.depth(&q).await == n).then_some(()) }).await;
    let missing = unique("guv-missing");
    let log = write("decisions.jsonl", "");
    let log_path = log.clone();
    let cfg = write(
        "live.yaml",
        &format!("'*': {{min: 0, max: 100, policy: guv}}\nworker: {{queue: {q}}}\nghost: {{queue: {missing}, backend: heroku}}\n"),
    );
    let o = tokio::task::spawn_blocking(move || {
        msgflo()
            .args(["guv", "--oneshot", "--dry-run", "--json", "--broker", &amqp_url(), "--decisions"])
            .arg(&log)
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    // The missing queue fails its role only (exit 1), the other is decided.
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let lines: Vec<serde_json::Value> = out(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let worker = lines.iter().find(|l| l["role"] == "worker").unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(worker["queue"], q.as_str());
    assert_eq!(worker["jobs"], n);
    assert!(worker["current"].is_null(), "the local backend cannot tell: {worker}");
    // guv's rule: 40 jobs, defaults -> 11 workers.
    assert_eq!(worker["desired"], 11, "{worker}");
    assert!(worker["reason"].is_string());
    let ghost = lines.iter().find(|l| l["role"] == "ghost").unwrap();
    assert!(ghost["error"].as_str().unwrap().contains("does not exist"), "{ghost}");
    // Nothing consumed, the decision is in the log.
    assert_eq!(raw.depth(&q).await, n);
    let logged = std::fs::read_to_string(&log_path).unwrap();
    let entry: serde_json::Value = serde_json::from_str(logged.lines().next().expect("one decision logged")).unwrap();
    assert_eq!(entry["role"], "worker");
    assert_eq!(entry["desired"], 11);
    let ch = raw.channel().await;
    ch.queue_delete(q.as_str().into(), Default::default()).await.unwrap();
}

/// A local HTTP server (axum) that records every request and answers
/// with `answer`.
async fn recording_server(answer: impl Fn(&Request) -> (u16, String) + Send + Sync + 'static) -> (String, Arc<Mutex<Vec<Request>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let answer = Arc::new(answer);
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (seen, answer) = (seen2.clone(), answer.clone());
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
            let req = Request {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
                headers: parts.headers.iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())).collect(),
                body: String::from_utf8_lossy(&body).into_owned(),
            };
            let (status, text) = answer(&req);
            seen.lock().unwrap().push(req);
            (axum::http::StatusCode::from_u16(status).unwrap(), [(axum::http::header::CONTENT_TYPE, "application/json")], text)
        }
    });
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (base, seen)
}

fn role(name: &str, yaml: &str) -> RoleConfig {
    let p = msgflo::guv::config::parse(&format!("{name}: {yaml}\n"), &[]);
    assert!(p.is_ok(), "{:?}", p.problems);
    p.roles.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_scale_subresource_against_a_local_recording_http_server() {
    let (base, seen) = recording_server(|r| {
        if r.method == "GET" {
            (200, r#"{"kind":"Scale","spec":{"replicas":2},"status":{"replicas":2}}"#.into())
        } else {
            (200, r#"{"kind":"Scale","spec":{"replicas":7}}"#.into())
        }
    })
    .await;
    let k = Kubernetes { base: base.clone() };
    let r = role("analyze", "{worker: analyzer, app: jobs, apikey: tok}");
    let cur = k.current(&[&r]).await;
    assert_eq!(cur["analyze"], Ok(Some(2)));
    let applied = k.apply(&[(&r, 7)]).await;
    assert_eq!(applied["analyze"], Ok(7));
    let reqs = seen.lock().unwrap().clone();
    assert_eq!(reqs.len(), 2);
    assert_eq!((reqs[1].method.as_str(), reqs[1].path.as_str()), ("PATCH", "/apis/apps/v1/namespaces/jobs/deployments/analyzer/scale"));
    assert!(reqs[1].headers.iter().any(|(k, v)| k == "content-type" && v == "application/merge-patch+json"));
    assert!(reqs[1].headers.iter().any(|(k, v)| k == "authorization" && v == "Bearer tok"));
    let body: serde_json::Value = serde_json::from_str(&reqs[1].body).unwrap();
    assert_eq!(body, serde_json::json!({"spec": {"replicas": 7}}));

    // A refusal is this role's error, with the server's words.
    let (base, _) = recording_server(|_| (403, r#"{"message":"forbidden"}"#.into())).await;
    let k = Kubernetes { base };
    let e = k.apply(&[(&r, 3)]).await["analyze"].clone().unwrap_err();
    assert!(e.contains("403") && e.contains("forbidden"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn heroku_formations_batched_and_422_reported_once_against_a_local_recording_http_server() {
    let (base, seen) = recording_server(|r| match r.method.as_str() {
        "GET" => (200, r#"[{"type":"web","quantity":1},{"type":"analyzer","quantity":2},{"type":"thumbs","quantity":1}]"#.into()),
        _ => {
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
            let too_many = v["updates"].as_array().into_iter().flatten().any(|u| u["quantity"].as_u64().unwrap_or(0) > 10);
            if too_many {
                (422, r#"{"id":"invalid_params","message":"Cannot scale to more than 10 standard-1X dynos per process type."}"#.into())
            } else {
                (200, "[]".into())
            }
        }
    })
    .await;
    let h = Heroku::new(&base);
    let a = role("analyze", "{worker: analyzer, app: shop, apikey: k1}");
    let t = role("thumbs", "{worker: thumbs, app: shop, apikey: k1}");
    let g = role("ghost", "{worker: nothere, app: shop, apikey: k1}");
    let cur = h.current(&[&a, &t, &g]).await;
    assert_eq!(cur["analyze"], Ok(Some(2)));
    assert_eq!(cur["thumbs"], Ok(Some(1)));
    // A missing process type fails that role only.
    assert!(cur["ghost"].as_ref().unwrap_err().contains("no process type"));
    assert_eq!(seen.lock().unwrap().len(), 1, "one formation GET per app");

    // Two roles of one app: one PATCH.
    let res = h.apply(&[(&a, 4), (&t, 3)]).await;
    assert_eq!((res["analyze"].clone(), res["thumbs"].clone()), (Ok(4), Ok(3)));
    {
        let reqs = seen.lock().unwrap();
        let patch = &reqs[1];
        assert_eq!((patch.method.as_str(), patch.path.as_str()), ("PATCH", "/apps/shop/formation"));
        assert!(patch.headers.iter().any(|(k, v)| k == "accept" && v.contains("version=3")));
        let v: serde_json::Value = serde_json::from_str(&patch.body).unwrap();
        assert_eq!(v["updates"].as_array().unwrap().len(), 2);
    }
    // Above the cap: refused once, the maximum comes down step by step and
    // the same refused count is not sent again.
    let res = h.apply(&[(&a, 12)]).await;
    assert!(res["analyze"].as_ref().unwrap_err().contains("422"));
    assert_eq!(h.cap("analyze"), Some(11));
    let _ = h.apply(&[(&a, 12)]).await;
    assert_eq!(h.cap("analyze"), Some(10));
    let res = h.apply(&[(&a, 12)]).await;
    assert_eq!(res["analyze"], Ok(10));
    let quantities: Vec<u64> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.method == "PATCH")
        .filter_map(|r| serde_json::from_str::<serde_json::Value>(&r.body).ok())
        .map(|v| v["updates"][0]["quantity"].as_u64().unwrap())
        .collect();
    assert_eq!(quantities, vec![4, 12, 11, 10]);
}

#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_guv_run_patches_through_the_cli_against_a_local_recording_http_server_retries_a_failed_call_and_serves_metrics() {
    let raw = Raw::connect().await;
    let q = unique("guv-k8s");
    raw.ch.queue_declare(q.as_str().into(), QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
    for i in 0..10 {
        raw.send_to_queue(&q, format!("{i}").as_bytes()).await;
    }
    eventually("10 messages ready", Duration::from_secs(10), || async { (raw.depth(&q).await == 10).then_some(()) }).await;
    // The first PATCH fails (a backend call that breaks): guv retries on a
    // later poll instead of giving up on the role.
    let patches = std::sync::atomic::AtomicUsize::new(0);
    let (base, seen) = recording_server(move |r| match r.method.as_str() {
        "GET" => (200, r#"{"spec":{"replicas":1}}"#.into()),
        _ if patches.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 => (500, r#"{"message":"etcd timed out"}"#.into()),
        _ => (200, "{}".into()),
    })
    .await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = write("k8s.yaml", &format!("worker: {{queue: {q}, backend: kubernetes, policy: guv, min: 0, max: 20, pollinterval: 1}}\n"));
    let mut child = msgflo()
        .args(["guv", "--broker", &amqp_url(), "--metrics", &format!("127.0.0.1:{port}"), "--config"])
        .arg(&cfg)
        .env("GUV_KUBERNETES_URL", &base)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // guv's rule: 10 jobs -> 3 workers; current 1 -> PATCH 3, refused once,
    // then sent again.
    let patch = eventually("a second PATCH to the scale subresource after the first failed", Duration::from_secs(30), || async {
        seen.lock().unwrap().iter().filter(|r| r.method == "PATCH").nth(1).cloned()
    })
    .await;
    assert_eq!(patch.path, "/apis/apps/v1/namespaces/default/deployments/worker/scale");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&patch.body).unwrap(), serde_json::json!({"spec": {"replicas": 3}}));
    let text = eventually("metrics", Duration::from_secs(10), || async {
        let r = http::request("GET", &format!("http://127.0.0.1:{port}/metrics"), &[], None, Duration::from_secs(2)).await.ok()?;
        r.body.contains("guv_workers_desired{role=\"worker\"} 3").then_some(r.body)
    })
    .await;
    assert!(text.contains("guv_queue_ready{role=\"worker\"} 10"), "{text}");
    assert!(text.contains("# TYPE guv_alert gauge"));
    child.kill().unwrap();
    child.wait().unwrap();
    let ch = raw.channel().await;
    ch.queue_delete(q.as_str().into(), Default::default()).await.unwrap();
}

/// `msgflo guv` with two roles of one Heroku app: one poll reads the app's
/// formation once and sends one PATCH with both roles.
#[tokio::test(flavor = "multi_thread")]
async fn heroku_guv_run_sends_one_patch_per_app_through_the_cli_against_a_local_recording_http_server() {
    let raw = Raw::connect().await;
    let (qa, qb) = (unique("guv-her-a"), unique("guv-her-b"));
    for (q, n) in [(&qa, 10), (&qb, 20)] {
        raw.ch.queue_declare(q.as_str().into(), QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
        for i in 0..n {
            raw.send_to_queue(q, format!("{i}").as_bytes()).await;
        }
        eventually("messages ready", Duration::from_secs(10), || async { (raw.depth(q).await == n).then_some(()) }).await;
    }
    let (base, seen) = recording_server(|r| {
        if r.method == "GET" {
            (200, r#"[{"type":"analyzer","quantity":1},{"type":"thumbs","quantity":1}]"#.into())
        } else {
            (200, "[]".into())
        }
    })
    .await;
    let cfg = write(
        "heroku.yaml",
        &format!(
            "'*': {{app: shop, apikey: k1, backend: heroku, policy: guv, min: 0, max: 20, pollinterval: 1}}\nanalyze: {{queue: {qa}, worker: analyzer}}\nthumbs: {{queue: {qb}, worker: thumbs}}\n"
        ),
    );
    let out = msgflo().args(["guv", "--oneshot", "--json", "--broker", &amqp_url(), "--config"]).arg(&cfg).env("GUV_HEROKU_URL", &base).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reqs = seen.lock().unwrap().clone();
    let (gets, patches): (Vec<_>, Vec<_>) = reqs.iter().partition(|r| r.method == "GET");
    assert_eq!(gets.len(), 1, "one formation GET for the app: {reqs:?}");
    assert_eq!(patches.len(), 1, "one PATCH for the app: {reqs:?}");
    let v: serde_json::Value = serde_json::from_str(&patches[0].body).unwrap();
    let mut types: Vec<&str> = v["updates"].as_array().unwrap().iter().map(|u| u["type"].as_str().unwrap()).collect();
    types.sort();
    assert_eq!(types, ["analyzer", "thumbs"]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "one decision per role");
    assert!(lines.iter().all(|l| l["applied"].is_u64()), "{lines:?}");
    let ch = raw.channel().await;
    for q in [&qa, &qb] {
        ch.queue_delete(q.as_str().into(), Default::default()).await.unwrap();
    }
}

/// The Python interpreter with grpcio-tools (installed by scripts/setup).
fn python_with_grpc() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let py = std::env::var_os("MSGFLO_TEST_PYTHON").map(std::path::PathBuf::from).unwrap_or_else(|| root.join(".venv/bin/python"));
    let ok = Command::new(&py).args(["-c", "import grpc_tools"]).output().map(|o| o.status.success()).unwrap_or(false);
    assert!(ok, "{} with grpcio-tools is needed for the KEDA test: run scripts/setup (it installs grpcio-tools into .venv)", py.display());
    py
}

#[tokio::test(flavor = "multi_thread")]
async fn keda_external_scaler_answers_a_real_python_grpc_client() {
    let py = python_with_grpc();
    let raw = Raw::connect().await;
    let q = unique("guv-keda");
    raw.ch.queue_declare(q.as_str().into(), QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
    for i in 0..40 {
        raw.send_to_queue(&q, format!("{i}").as_bytes()).await;
    }
    eventually("40 messages ready", Duration::from_secs(10), || async { (raw.depth(&q).await == 40).then_some(()) }).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = write("keda.yaml", &format!("analyze: {{queue: {q}, backend: keda, policy: guv, min: 0, max: 100, pollinterval: 1}}\n"));
    let mut child = msgflo()
        .args(["guv", "--broker", &amqp_url(), "--keda", &format!("127.0.0.1:{port}"), "--config"])
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out_dir = std::env::temp_dir().join(unique("guv-keda-py"));
    std::fs::create_dir_all(&out_dir).unwrap();
    let script = manifest.join("tests/guv_keda_client.py");
    let proto = manifest.join("proto");
    let o = tokio::task::spawn_blocking(move || {
        Command::new(py).arg(script).arg(format!("127.0.0.1:{port}")).arg(proto).arg(&out_dir).args(["analyze", "11"]).output().unwrap()
    })
    .await
    .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(o.status.success(), "python client: {}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(out(&o).trim()).unwrap_or_else(|e| panic!("{e}: {}", out(&o)));
    // guv's rule for 40 jobs with the defaults: 11 workers, target 1 each.
    assert_eq!(v["metric_value"], 11, "{v}");
    assert_eq!(v["spec_name"], "guv-analyze");
    assert_eq!(v["spec_target"], 1);
    assert_eq!(v["is_active"], true);
    assert_eq!(v["stream_first"], true);
    assert_eq!(v["unknown_role"], "NOT_FOUND");
    let ch = raw.channel().await;
    ch.queue_delete(q.as_str().into(), Default::default()).await.unwrap();
}

/// Live, on RabbitMQ: the decision changes because of the times the
/// participants measured. The role is configured as taking 5 s a job; the
/// real participant takes 0.1 s and reports it with its heartbeats; once
/// enough samples arrived, `msgflo guv` decides with them (its decision
/// lines show the processing time used) and wants fewer workers.
#[tokio::test(flavor = "multi_thread")]
async fn measured_processing_times_change_the_decision_live_on_rabbitmq() {
    use tokio::io::AsyncBufReadExt;
    let url = amqp_url();
    let role = unique("guv-live");
    let mut o = msgflo::Options::broker(&url);
    o.heartbeat = Some(Duration::from_millis(300));
    // One job at a time, as the role's `concurrency: 1` says (`msgflo run
    // --scale` sets the prefetch the same way): a delivery's time from
    // hand-over to ack is then its processing time.
    o.connect.prefetch = 1;
    let p = msgflo::Participant::start(&repeat_def(), &role, o).await.unwrap();
    let p2 = p.clone();
    let serving = tokio::spawn(async move {
        p2.serve(|m| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(vec![("out".to_string(), m.payload)])
        })
        .await
    });
    let cfg = write(
        "live.yaml",
        &format!("{role}: {{queue: {role}.IN, processing: 5, stddev: 0.1, deadline: 60, min: 0, max: 50, concurrency: 1, pollinterval: 0.5}}\n"),
    );
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_msgflo"))
        .args(["guv", "--dry-run", "--json", "--broker", &url, "--config"])
        .arg(&cfg)
        .env_remove("MSGFLO_BROKER")
        .env_remove("GUV_MANAGEMENT_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    tokio::spawn(async move {
        while let Ok(Some(l)) = lines.next_line().await {
            let _ = tx.send(serde_json::from_str(&l).unwrap());
        }
    });
    let mut next = async || tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.expect("a decision within 30 s").expect("msgflo guv runs");
    // Before any report: the configured time.
    let first = next().await;
    assert_eq!(first["processing_mean"], 5.0, "{first}");
    let publisher = msgflo::transport::connect(&url, &Default::default()).await.unwrap();
    for i in 0..60 {
        publisher.publish(msgflo::transport::Target::Queue(format!("{role}.IN")), msgflo::Payload::from(format!("{i}")), true).await.unwrap();
    }
    publisher.flush().await.unwrap();
    let mut highest_configured = 0;
    let measured = loop {
        let d = next().await;
        let mean = d["processing_mean"].as_f64().unwrap();
        if mean < 1.0 {
            break d;
        }
        if d["jobs"].as_u64().unwrap_or(0) > 0 {
            highest_configured = highest_configured.max(d["desired"].as_u64().unwrap());
        }
    };
    let mean = measured["processing_mean"].as_f64().unwrap();
    assert!((0.09..0.5).contains(&mean), "the measured mean is about 0.1 s: {measured}");
    assert!(highest_configured >= 2, "with 5 s a job the backlog wanted several workers ({highest_configured})");
    // With the measured times the same kind of backlog needs one worker.
    assert!(measured["desired"].as_u64().unwrap() <= 1, "{measured}");
    println!("configured 5 s: desired up to {highest_configured}; measured: {measured}");
    child.kill().await.unwrap();
    p.stop().await.unwrap();
    let _ = serving.await;
    let raw = Raw::connect().await;
    let qs = [format!("{role}.IN"), format!("{role}.OUT"), format!("dead-{role}.IN")];
    let refs: Vec<&str> = qs.iter().map(String::as_str).collect();
    raw.cleanup(&refs, &refs).await;
}
