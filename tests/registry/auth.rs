//! Authentication and TLS against the real registry: basic (flag, auth file), bearer tokens
//! from a token server (fetched once per scope, fetched again when the registry refuses one),
//! HTTPS with a test CA (refused, then trusted through --cert-dir, or not verified).

use super::registry_harness::{Auth, Registry, TokenServer};
use super::{puzzlefs_with, s, small_image, succeeded, transfer, transfer_fails};
use puzzlefs_virtiofsd::format::Digest;
use puzzlefs_virtiofsd::registry::{Client, ClientOptions, Credentials, Payload, Repository};

fn auth_file(dir: &std::path::Path, registry: &str, user: &str, pass: &str) -> String {
    use base64::Engine;
    let entry = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    let path = dir.join("auth.json");
    let json = serde_json::json!({"auths": {registry: {"auth": entry}}});
    std::fs::write(&path, json.to_string()).unwrap();
    s(&path).to_string()
}

#[test]
fn basic_auth_from_the_flag_or_an_auth_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (image, _) = small_image(tmp.path());
    let registry = Registry::start(Auth::basic(&[("alice", "s3cret")]));
    let dst = format!("docker://{}/b/img:t", registry.addr());
    transfer_fails("push", &[&image, &dst], "--creds");
    transfer_fails(
        "push",
        &[&image, &dst, "--creds", "alice:wrong"],
        "401 Unauthorized",
    );
    transfer("push", &[&image, &dst, "--creds", "alice:s3cret"]);
    let file = auth_file(tmp.path(), &registry.addr(), "alice", "s3cret");
    let pulled = format!("{}:t", s(&tmp.path().join("pulled")));
    transfer("pull", &[&dst, &pulled, "--authfile", &file]);
    // The usual place, through $REGISTRY_AUTH_FILE.
    succeeded(puzzlefs_with(
        &["pull", &dst, &pulled, "--tls-verify=false"],
        &[("REGISTRY_AUTH_FILE", file.as_ref())],
    ));
}

#[test]
fn bearer_tokens_are_fetched_once_per_scope() {
    let tmp = tempfile::tempdir().unwrap();
    let (image, _) = small_image(tmp.path());
    let server = TokenServer::start(&[("alice", "pw")]);
    let registry = Registry::start(Auth::token(&server));
    let dst = format!("docker://{}/tok/img:t", registry.addr());
    let err = transfer_fails("push", &[&image, &dst], "token server");
    assert!(err.contains("401"), "{err}");
    let before = server.count();
    transfer("push", &[&image, &dst, "--creds", "alice:pw", "-j", "8"]);
    let pulled = format!("{}:t", s(&tmp.path().join("pulled")));
    transfer("pull", &[&dst, &pulled, "--creds", "alice:pw", "-j", "8"]);
    let asked: Vec<_> = server.requests().into_iter().skip(before).collect();
    let scopes: Vec<Vec<String>> = asked.iter().map(|r| r.scopes.clone()).collect();
    assert_eq!(
        scopes,
        vec![
            vec!["repository:tok/img:pull,push".to_string()],
            vec!["repository:tok/img:pull".to_string()]
        ]
    );
    for r in &asked {
        assert_eq!(r.basic, Some(("alice".into(), "pw".into())));
        assert_eq!(r.service.as_deref(), Some(server.service()));
        assert_eq!(r.status, 200);
    }
}

#[test]
fn a_token_the_registry_refuses_is_fetched_again() {
    let server = TokenServer::start(&[("alice", "pw")]);
    let registry = Registry::start(Auth::token(&server));
    // The first token grants only pull: enough for HEAD, not for an upload.
    server.limit_actions("tok/again", &["pull"]);
    let opts = ClientOptions {
        tls_verify: false,
        credentials: Some(Credentials::parse("alice:pw").unwrap()),
        ..ClientOptions::default()
    };
    let client = Client::new(&registry.addr(), &registry.addr(), &opts).unwrap();
    let repo = Repository::new(&client, "tok/again");
    let data = b"a blob".to_vec();
    let digest = Digest::of(&data);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        assert_eq!(repo.blob_size(&digest, true).await.unwrap(), None);
        assert_eq!(server.count(), 1);
        server.clear_rules();
        repo.upload_blob(&digest, Payload::Bytes(data.into()), None)
            .await
            .unwrap();
        assert_eq!(repo.blob_size(&digest, true).await.unwrap(), Some(6));
    });
    assert_eq!(server.count(), 2);
    assert!(registry.stored_blobs().contains(&digest.hex()));
}

#[test]
fn https_with_the_system_cas_a_cert_dir_or_no_verification() {
    let tmp = tempfile::tempdir().unwrap();
    let (image, _) = small_image(tmp.path());
    let registry = Registry::start_tls(Auth::None);
    let dst = format!("docker://{}/tls/img:t", registry.addr());
    let push = |extra: &[&str]| puzzlefs_with(&[&["push", &image, &dst], extra].concat(), &[]);
    // Its CA is not among the system's.
    let out = push(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "pushed to an unknown CA");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("certificate"), "{err}");
    let ca = registry.ca_dir();
    succeeded(push(&["--cert-dir", s(&ca)]));
    succeeded(push(&["--tls-verify=false"]));
    // A pull over HTTPS gets the same image.
    let pulled = format!("{}:t", s(&tmp.path().join("pulled")));
    succeeded(puzzlefs_with(
        &["pull", &dst, &pulled, "--cert-dir", s(&ca)],
        &[],
    ));
    crate::common::puzzlefs(&["check".as_ref(), pulled.as_ref()]);
}
