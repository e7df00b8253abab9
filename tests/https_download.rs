//! Model downloads for detectors over HTTPS, fetched with curl: client
//! certificate or bearer token, ETag and sha256 headers, conditional
//! requests, model cards, and refusals (no credential, unknown token, unknown
//! version, corrupted file).

mod common;

use fedshield_coordinator::CoordinatorConfig;
use fedshield_coordinator::participants::ParticipantRegistry;
use fedshield_core::model::weights::ModelWeights;
use fedshield_core::{ModelVersion, ParticipantId};
use fedshield_proto::tls::pki::CertificateAuthority;
use tokio_util::sync::CancellationToken;

use common::{
    coordinator_tls, curl, https_settings, localhost_certificate, start_coordinator, test_spec,
    tool_or_allowed_skip,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detectors_download_models_over_https_with_a_certificate_or_a_token() {
    if !tool_or_allowed_skip("curl", "--version") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let authority = CertificateAuthority::generate("test CA").unwrap();
    let server = localhost_certificate(&authority);
    let alice = authority.issue_client("alice", 1).unwrap();
    let mallory = authority.issue_client("mallory", 1).unwrap();
    std::fs::write(work.path().join("ca.pem"), authority.cert_pem()).unwrap();
    for (name, certificate) in [("alice", &alice), ("mallory", &mallory)] {
        std::fs::write(
            work.path().join(format!("{name}.pem")),
            &certificate.cert_pem,
        )
        .unwrap();
        std::fs::write(
            work.path().join(format!("{name}.key")),
            &certificate.key_pem,
        )
        .unwrap();
    }
    let tokens_path = work.path().join("api-tokens.toml");
    let token = fedshield_coordinator::http::issue_token(&tokens_path, "detector-1").unwrap();
    let stored = std::fs::read_to_string(&tokens_path).unwrap();
    assert!(
        !stored.contains(&token),
        "only the token's sha256 is stored"
    );

    let mut config = CoordinatorConfig::for_test(work.path().join("coordinator"), test_spec());
    config.tls = Some(coordinator_tls(
        &authority,
        &server,
        ParticipantRegistry::allowing([ParticipantId::new("alice").unwrap()]),
    ));
    config.https = Some(https_settings(&authority, &server, tokens_path));
    let shutdown = CancellationToken::new();
    let coordinator = start_coordinator(config, shutdown.clone()).await;
    let base = format!("https://{}", coordinator.https_addr().unwrap());
    let card = coordinator.engine().current_model().card.clone();
    let dir = work.path().to_path_buf();
    let alice_certificate = [
        "--cert",
        dir.join("alice.pem").to_str().unwrap(),
        "--key",
        dir.join("alice.key").to_str().unwrap(),
    ]
    .map(str::to_string);
    let alice_args: Vec<&str> = alice_certificate.iter().map(String::as_str).collect();
    let bearer = format!("Authorization: Bearer {token}");

    let results = tokio::task::spawn_blocking({
        let base = base.clone();
        let dir = dir.clone();
        let alice_args: Vec<String> = alice_args.iter().map(|arg| arg.to_string()).collect();
        let bearer = bearer.clone();
        move || {
            let alice_args: Vec<&str> = alice_args.iter().map(String::as_str).collect();
            let latest = curl(&format!("{base}/v1/models/latest"), &dir, &alice_args);
            // The tag is the sha256 of the file served.
            let file_sha256 = fedshield_proto::tls::sha256_fingerprint(&latest.body);
            let mut conditional_args = alice_args.clone();
            let if_none_match = format!("If-None-Match: \"{file_sha256}\"");
            conditional_args.extend(["-H", if_none_match.as_str()]);
            let conditional = curl(&format!("{base}/v1/models/0"), &dir, &conditional_args);
            let with_token = curl(&format!("{base}/v1/models/0"), &dir, &["-H", &bearer]);
            let card = curl(&format!("{base}/v1/models/0/card"), &dir, &["-H", &bearer]);
            let anonymous = curl(&format!("{base}/v1/models/latest"), &dir, &[]);
            let wrong_token = curl(
                &format!("{base}/v1/models/latest"),
                &dir,
                &["-H", "Authorization: Bearer fst_not-a-token"],
            );
            let mallory_args = [
                "--cert",
                dir.join("mallory.pem").to_str().unwrap(),
                "--key",
                dir.join("mallory.key").to_str().unwrap(),
            ]
            .map(str::to_string);
            let mallory_args: Vec<&str> = mallory_args.iter().map(String::as_str).collect();
            let unregistered = curl(&format!("{base}/v1/models/latest"), &dir, &mallory_args);
            let unknown = curl(&format!("{base}/v1/models/42"), &dir, &["-H", &bearer]);
            (
                latest,
                conditional,
                with_token,
                card,
                anonymous,
                wrong_token,
                unregistered,
                unknown,
            )
        }
    })
    .await
    .unwrap();
    let (
        latest,
        conditional,
        with_token,
        card_response,
        anonymous,
        wrong_token,
        unregistered,
        unknown,
    ) = results;

    assert_eq!(latest.status, 200, "{}", latest.headers);
    let file_sha256 = fedshield_proto::tls::sha256_fingerprint(&latest.body);
    assert!(latest.headers.contains(&format!("etag: \"{file_sha256}\"")));
    assert!(
        latest
            .headers
            .contains(&format!("x-fedshield-sha256: {file_sha256}"))
    );
    assert!(
        latest
            .headers
            .contains(&format!("x-fedshield-weights-sha256: {}", card.sha256))
    );
    assert!(latest.headers.contains("x-fedshield-version: 0"));
    let downloaded = ModelWeights::from_safetensors(&latest.body).unwrap();
    assert_eq!(downloaded.sha256(), card.sha256);
    assert_eq!(conditional.status, 304);
    assert!(conditional.body.is_empty());
    assert_eq!(with_token.status, 200);
    assert_eq!(with_token.body, latest.body);
    assert_eq!(card_response.status, 200);
    let card_json: serde_json::Value = serde_json::from_slice(&card_response.body).unwrap();
    assert_eq!(card_json["sha256"], card.sha256.as_str());
    assert_eq!(card_json["version"], 0);
    assert_eq!(anonymous.status, 401);
    assert!(String::from_utf8_lossy(&anonymous.body).contains("Bearer"));
    assert_eq!(wrong_token.status, 401);
    assert_eq!(unregistered.status, 403);
    assert!(String::from_utf8_lossy(&unregistered.body).contains("participant registry"));
    assert_eq!(unknown.status, 404);

    // A corrupted stored file is refused, with the reason, not served.
    let weights_path = work
        .path()
        .join("coordinator/models")
        .join(format!("model-v{:08}.safetensors", ModelVersion(0).0));
    let mut bytes = std::fs::read(&weights_path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x10;
    std::fs::write(&weights_path, bytes).unwrap();
    let corrupted = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || curl(&format!("{base}/v1/models/0"), &dir, &["-H", &bearer])
    })
    .await
    .unwrap();
    assert_eq!(corrupted.status, 500);
    assert!(
        String::from_utf8_lossy(&corrupted.body).contains("corrupted"),
        "{}",
        String::from_utf8_lossy(&corrupted.body)
    );
    shutdown.cancel();
    coordinator.wait().await.unwrap();
}
