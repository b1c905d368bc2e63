//! Test support for the HTTP API: an in-process API, tokens (HS256 and
//! RS256/ES256 from keys generated here), the reference cURL request, and
//! the OpenAPI contract every answer is checked against.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use device_logs::config::Settings;
use device_logs::store::AnyStore;
use serde_json::{json, Value};
use uuid::Uuid;

pub use crate::contract::Contract;

pub const LOGS_ROUTE: &str = "/v1/environments/{envID}/users/{userID}/devices/{deviceID}/logs";
pub const SECRET: &str = "test-secret-0123456789-0123456789-abcdef";
pub const AUDIENCE: &str = "https://api.example.com";

/// Starts the API in this process; it stops when the sender is dropped.
pub async fn start_api(
    settings: Settings,
    store: AnyStore,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state =
        device_logs::api::state(settings, store, Arc::new(device_logs::worker::SystemClock))
            .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(device_logs::api::serve(listener, state, async move {
        let _ = rx.await;
    }));
    (addr, tx)
}

/// Claims of a token valid now for `env`, adjusted by `patch`.
pub fn claims(env: &str, patch: Value) -> Value {
    let now = chrono::Utc::now().timestamp();
    let mut claims =
        json!({"sub": "it", "aud": AUDIENCE, "env": env, "iat": now, "exp": now + 600});
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

pub fn hs256(claims: &Value, secret: &str) -> String {
    use jsonwebtoken::{encode, EncodingKey, Header};
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A generated key pair: the private key signs, the public PEM goes in config.
pub struct KeyPair {
    pub alg: jsonwebtoken::Algorithm,
    pub private_pem: Vec<u8>,
    pub public_pem: Vec<u8>,
}

impl KeyPair {
    pub fn rsa() -> Self {
        let key =
            openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        KeyPair {
            alg: jsonwebtoken::Algorithm::RS256,
            private_pem: key.private_key_to_pem_pkcs8().unwrap(),
            public_pem: key.public_key_to_pem().unwrap(),
        }
    }

    /// An RSA pair and its public key as a JWK named `kid`.
    pub fn rsa_jwk(kid: &str) -> (Self, Value) {
        use base64::Engine as _;
        let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
        let b64 = |b: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwk = json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
            "n": b64(rsa.n().to_vec()), "e": b64(rsa.e().to_vec())});
        let key = openssl::pkey::PKey::from_rsa(rsa).unwrap();
        let pair = KeyPair {
            alg: jsonwebtoken::Algorithm::RS256,
            private_pem: key.private_key_to_pem_pkcs8().unwrap(),
            public_pem: key.public_key_to_pem().unwrap(),
        };
        (pair, jwk)
    }

    /// Signs with a `kid` header (JWKS key selection).
    pub fn sign_kid(&self, claims: &Value, kid: &str) -> String {
        use jsonwebtoken::{encode, EncodingKey, Header};
        let mut header = Header::new(self.alg);
        header.kid = Some(kid.into());
        let key = EncodingKey::from_rsa_pem(&self.private_pem).unwrap();
        encode(&header, claims, &key).unwrap()
    }

    pub fn ec() -> Self {
        let group =
            openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
        let key = openssl::pkey::PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap())
            .unwrap();
        KeyPair {
            alg: jsonwebtoken::Algorithm::ES256,
            private_pem: key.private_key_to_pem_pkcs8().unwrap(),
            public_pem: key.public_key_to_pem().unwrap(),
        }
    }

    pub fn sign(&self, claims: &Value) -> String {
        use jsonwebtoken::{encode, EncodingKey, Header};
        let key = match self.alg {
            jsonwebtoken::Algorithm::RS256 => EncodingKey::from_rsa_pem(&self.private_pem),
            _ => EncodingKey::from_ec_pem(&self.private_pem),
        };
        encode(&Header::new(self.alg), claims, &key.unwrap()).unwrap()
    }
}

/// The reference's cURL example, byte for byte, with its placeholders
/// filled in. Returns (status, body).
pub fn reference_curl(
    api_path: &str,
    env: Uuid,
    user: Uuid,
    device: Uuid,
    token: &str,
) -> (u16, Value) {
    let url = format!("{api_path}/environments/{env}/users/{user}/devices/{device}/logs");
    let out = std::process::Command::new("curl")
        .args(["--location", "--globoff", "--request", "PUT", &url])
        .args(["--header", "Content-Type: application/json"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--data", "{\n    \"status\": \"PENDING\"\n}"])
        .args(["--silent", "--write-out", "\n%{http_code}"])
        .output()
        .expect("curl is needed for the reference request");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (
        code.parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// One HTTP exchange: (status, JSON body or Null).
pub async fn call(
    method: &str,
    url: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Option<Vec<u8>>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = client
        .request(method.parse().unwrap(), url)
        .timeout(Duration::from_secs(30));
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    if let Some(content_type) = content_type {
        request = request.header("Content-Type", content_type);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Asserts the documented 200 shape for a device, and returns expiresAt.
pub fn assert_record(
    body: &Value,
    base: &str,
    env: Uuid,
    user: Uuid,
    device: Uuid,
    status: &str,
) -> Value {
    let device_href = format!("{base}/environments/{env}/users/{user}/devices/{device}");
    assert_eq!(
        body["_links"]["self"]["href"],
        format!("{device_href}/logs"),
        "{body}"
    );
    assert_eq!(body["_links"]["device"]["href"], device_href, "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body.as_object().unwrap().len(), 3, "{body}");
    body["expiresAt"].clone()
}

/// The error cases any deployment answers the same, with a valid `token`
/// for `env`: no/garbage token, other environment, bad ids, content type,
/// size, body, status, unknown and non-MOBILE devices, method.
pub async fn common_error_cases(base: &str, token: &str, env: Uuid, user: Uuid, sms: Uuid) {
    let contract = Contract::load();
    let url = |env: &str, device: &str| {
        format!("{base}/environments/{env}/users/{user}/devices/{device}/logs")
    };
    let good = url(&env.to_string(), &Uuid::new_v4().to_string());
    let json_body = || Some(br#"{"status": "PENDING"}"#.to_vec());
    let ct = Some("application/json");
    let t = Some(token);
    contract.expect(
        &call("PUT", &good, None, ct, json_body()).await,
        "PUT",
        401,
        Some("ACCESS_FAILED"),
    );
    contract.expect(
        &call("GET", &good, None, None, None).await,
        "GET",
        401,
        Some("ACCESS_FAILED"),
    );
    contract.expect(
        &call("PUT", &good, Some("not.a.jwt"), ct, json_body()).await,
        "PUT",
        401,
        Some("ACCESS_FAILED"),
    );
    let other_env = url(&Uuid::new_v4().to_string(), &sms.to_string());
    contract.expect(
        &call("PUT", &other_env, t, ct, json_body()).await,
        "PUT",
        403,
        Some("ACCESS_FAILED"),
    );
    contract.expect(
        &call("GET", &other_env, t, None, None).await,
        "GET",
        403,
        Some("ACCESS_FAILED"),
    );
    let bad_id = url(&env.to_string(), "not-a-uuid");
    contract.expect(
        &call("PUT", &bad_id, t, ct, json_body()).await,
        "PUT",
        400,
        Some("INVALID_DATA"),
    );
    contract.expect(
        &call("PUT", &good, t, Some("text/plain"), json_body()).await,
        "PUT",
        415,
        Some("INVALID_REQUEST"),
    );
    contract.expect(
        &call("PUT", &good, t, None, json_body()).await,
        "PUT",
        415,
        Some("INVALID_REQUEST"),
    );
    let big = format!(
        r#"{{"status": "PENDING", "pad": "{}"}}"#,
        "x".repeat(1 << 20)
    );
    contract.expect(
        &call("PUT", &good, t, ct, Some(big.into_bytes())).await,
        "PUT",
        413,
        Some("INVALID_REQUEST"),
    );
    contract.expect(
        &call("PUT", &good, t, ct, Some(b"{not json".to_vec())).await,
        "PUT",
        400,
        Some("INVALID_DATA"),
    );
    contract.expect(
        &call("PUT", &good, t, ct, Some(b"{}".to_vec())).await,
        "PUT",
        400,
        Some("INVALID_DATA"),
    );
    let received = call(
        "PUT",
        &good,
        t,
        ct,
        Some(br#"{"status": "RECEIVED"}"#.to_vec()),
    )
    .await;
    contract.expect(&received, "PUT", 400, Some("INVALID_DATA"));
    assert_eq!(received.1["details"][0]["code"], "INVALID_VALUE");
    assert_eq!(received.1["details"][0]["target"], "status");
    contract.expect(
        &call("PUT", &good, t, ct, json_body()).await,
        "PUT",
        404,
        Some("NOT_FOUND"),
    );
    contract.expect(
        &call("GET", &good, t, None, None).await,
        "GET",
        404,
        Some("NOT_FOUND"),
    );
    let sms_url = url(&env.to_string(), &sms.to_string());
    let not_mobile = call("PUT", &sms_url, t, ct, json_body()).await;
    contract.expect(&not_mobile, "PUT", 400, Some("INVALID_DATA"));
    assert_eq!(not_mobile.1["details"][0]["target"], "device.type");
    contract.expect(
        &call("DELETE", &sms_url, t, None, None).await,
        "DELETE",
        405,
        Some("METHOD_NOT_ALLOWED"),
    );
}
