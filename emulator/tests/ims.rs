//! The emulated IMS token endpoint (`POST /ims/token/v3`) and the stream's use of its
//! tokens: issue, use, expiry, unknown tokens, wrong secrets, refused request shapes.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

const ID: &str = "emu-client-id";
const SECRET: &str = "emu-client-secret-123";
const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

async fn ims_emu(extra: &[&str]) -> Emu {
    let mut args = vec!["--ims-client-id", ID, "--rate", "100"];
    args.extend_from_slice(extra);
    Emu::start_with(&args, |o| o.ims_client_secret = Some(SECRET.into())).await
}

fn form(secret: &str) -> String {
    format!(
        "grant_type=client_credentials&client_id={ID}&client_secret={secret}&scope=openid,AdobeID,additional_info.projectedProductContext"
    )
}

/// POSTs a form to the token endpoint; (status, JSON body).
async fn token_request(
    emu: &Emu,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let r = emu.send("POST", path, headers, body.as_bytes()).await;
    let status = r.status;
    let b = r.body().await.expect("IMS body");
    let v = serde_json::from_slice(&b)
        .unwrap_or_else(|e| panic!("IMS answer is JSON: {e}: {}", String::from_utf8_lossy(&b)));
    (status, v)
}

async fn issue(emu: &Emu) -> (String, Value) {
    let (status, v) = token_request(emu, "/ims/token/v3", &[FORM], &form(SECRET)).await;
    assert_eq!(status, 200, "{v}");
    (
        v["access_token"]
            .as_str()
            .expect("access_token")
            .to_string(),
        v,
    )
}

async fn stream_with(emu: &Emu, token: &str) -> Resp {
    let auth = format!("Bearer {token}");
    emu.send(
        "GET",
        "/api/1/stream/demo",
        &[GZIP, ("Authorization", &auth), ("x-api-key", ID)],
        b"",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ims_issues_tokens_the_stream_accepts() {
    let emu = ims_emu(&[]).await;
    let (token, v) = issue(&emu).await;
    assert_eq!(v["token_type"], "bearer");
    assert_eq!(v["expires_in"], 86_399);
    let (token2, _) = issue(&emu).await;
    assert_ne!(token, token2, "every token is new");
    assert!(token.len() >= 64, "not guessable: {token}");

    let r = stream_with(&emu, &token).await;
    assert_eq!(r.status, 200);
    let mut recs = r.gzip_records();
    recs.record().await;
    // A token this emulator did not issue is refused, and so is the stream without x-api-key.
    let r = stream_with(&emu, "test-token").await;
    assert_eq!(r.status, 401);
    assert!(error_description(r).await.contains("unknown"));
    let auth = format!("Bearer {token2}");
    let r = emu
        .send(
            "GET",
            "/api/1/stream/other",
            &[GZIP, ("Authorization", &auth)],
            b"",
        )
        .await;
    assert_eq!(r.status, 403, "x-api-key is the client id");
    let s = emu.stats().await;
    assert_eq!(s["ims"]["tokens_issued"], 2);
    assert_eq!(s["ims"]["stream_refused_unknown"], 1);
    assert_eq!(s["ims"]["token_requests_refused"], 0);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_get_401_saying_expired() {
    let emu = ims_emu(&["--token-ttl-secs", "1", "--slot-hold-secs", "0"]).await;
    let (token, v) = issue(&emu).await;
    assert_eq!(v["expires_in"], 1);
    let r = stream_with(&emu, &token).await;
    assert_eq!(r.status, 200, "valid before expiry");
    drop(r);
    emu.admin("POST", "/admin/drop", None).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let r = stream_with(&emu, &token).await;
    assert_eq!(r.status, 401);
    assert!(r
        .header("www-authenticate")
        .is_some_and(|h| h.contains("invalid_token")));
    let d = error_description(r).await;
    assert!(d.contains("expired"), "{d}");
    // Renewal: a new token works again.
    let (fresh, _) = issue(&emu).await;
    assert_eq!(stream_with(&emu, &fresh).await.status, 200);
    let s = emu.stats().await;
    assert_eq!(s["ims"]["tokens_issued"], 2);
    assert_eq!(s["ims"]["stream_refused_expired"], 1);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_and_bad_requests_are_refused_like_ims() {
    let emu = ims_emu(&[]).await;
    let (status, v) = token_request(&emu, "/ims/token/v3", &[FORM], &form("wrong")).await;
    assert_eq!((status, v["error"].as_str()), (401, Some("invalid_client")));
    assert!(v["error_description"]
        .as_str()
        .unwrap()
        .contains("client_secret"));
    let bad_id = form(SECRET).replace(ID, "someone-else");
    let (status, v) = token_request(&emu, "/ims/token/v3", &[FORM], &bad_id).await;
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_client")));
    // Parameters in the query string are refused, even when the body is right.
    let path = format!("/ims/token/v3?client_id={ID}&client_secret={SECRET}");
    let (status, v) = token_request(&emu, &path, &[FORM], &form(SECRET)).await;
    assert_eq!(status, 400);
    assert!(v["error_description"].as_str().unwrap().contains("query"));
    // JSON instead of a form.
    let (status, v) = token_request(
        &emu,
        "/ims/token/v3",
        &[("Content-Type", "application/json")],
        r#"{"grant_type":"client_credentials"}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert!(v["error_description"]
        .as_str()
        .unwrap()
        .contains("x-www-form-urlencoded"));
    let no_scope = format!("grant_type=client_credentials&client_id={ID}&client_secret={SECRET}");
    let (status, v) = token_request(&emu, "/ims/token/v3", &[FORM], &no_scope).await;
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_scope")));
    let r = emu.send("GET", "/ims/token/v3", &[], b"").await;
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
    let s = emu.stats().await;
    assert_eq!(s["ims"]["token_requests_refused"], 5);
    assert_eq!(s["ims"]["tokens_issued"], 0);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ims_is_off_without_a_client_id() {
    let emu = Emu::start(&[]).await;
    let (status, _) = token_request(&emu, "/ims/token/v3", &[FORM], &form(SECRET)).await;
    assert_eq!(status, 404);
    assert!(emu.stats().await["ims"].is_null());
    emu.stop().await;
}

#[test]
fn the_binary_reads_the_secret_from_the_environment_only() {
    use std::io::{BufRead, Read, Write};
    use std::process::{Command, Stdio};
    let bin = env!("CARGO_BIN_EXE_livestream-emulator");
    // No secret in the environment: a clear refusal naming the variable.
    let out = Command::new(bin)
        .args(["--listen", "127.0.0.1:0", "--ims-client-id", ID])
        .env_remove("LIVESTREAM_EMULATOR_IMS_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("LIVESTREAM_EMULATOR_IMS_SECRET"));
    // There is no flag for it.
    let out = Command::new(bin)
        .args(["--ims-client-secret", SECRET])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    let mut child = Command::new(bin)
        .args(["--listen", "127.0.0.1:0", "--quiet", "--ims-client-id", ID])
        .env("LIVESTREAM_EMULATOR_IMS_SECRET", SECRET)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line
        .trim_end()
        .strip_prefix("livestream-emulator listening on http://")
        .unwrap_or_else(|| panic!("first line: {line:?}"))
        .to_string();
    let body = form(SECRET);
    let mut tcp = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        tcp,
        "POST /ims/token/v3 HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    tcp.read_to_string(&mut resp).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"access_token\":\"emu-ims-"), "{resp}");
}
