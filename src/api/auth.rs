//! Bearer token verification: JWTs signed RS256/ES256 by a key from a PEM
//! file or a JWKS endpoint; HS256 only when explicitly enabled (dev mode).
//! `exp` is required, `exp`/`nbf` are checked with a leeway, `aud` must be
//! the configured audience. Tokens are never logged, not even in part.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tokio::sync::RwLock;

use crate::config::AuthSettings;

#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("cannot read api.auth.public_key_file {path}")]
    KeyFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("api.auth.public_key_file {0} is neither an RSA nor an EC public key in PEM")]
    KeyFormat(String),
    #[error("no token key configured: set api.auth.jwks_url or api.auth.public_key_file")]
    NoKeys,
}

/// Why a token was refused (logged, never answered).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no bearer token")]
    Missing,
    #[error("token algorithm {0:?} not accepted")]
    Algorithm(Algorithm),
    #[error("no key for the token's kid")]
    UnknownKey,
    #[error("token rejected: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("token has no {0} claim")]
    NoEnvironment(String),
}

struct Jwks {
    set: JwkSet,
    fetched: Option<Instant>,
}

pub struct Verifier {
    settings: AuthSettings,
    pem: Option<(Algorithm, DecodingKey)>,
    hs256: Option<DecodingKey>,
    jwks: Option<RwLock<Jwks>>,
    http: reqwest::Client,
}

impl Verifier {
    pub fn new(settings: &AuthSettings) -> Result<Arc<Self>, AuthSetupError> {
        let pem = match settings.public_key_file.as_str() {
            "" => None,
            path => {
                let bytes = std::fs::read(path).map_err(|source| AuthSetupError::KeyFile {
                    path: path.into(),
                    source,
                })?;
                let key = DecodingKey::from_rsa_pem(&bytes)
                    .map(|k| (Algorithm::RS256, k))
                    .or_else(|_| DecodingKey::from_ec_pem(&bytes).map(|k| (Algorithm::ES256, k)))
                    .map_err(|_| AuthSetupError::KeyFormat(path.into()))?;
                Some(key)
            }
        };
        let hs256 = settings
            .allow_hs256
            .then(|| DecodingKey::from_secret(settings.hs256_secret.as_bytes()));
        let jwks = (!settings.jwks_url.is_empty()).then(|| {
            RwLock::new(Jwks {
                set: JwkSet { keys: vec![] },
                fetched: None,
            })
        });
        if pem.is_none() && hs256.is_none() && jwks.is_none() {
            return Err(AuthSetupError::NoKeys);
        }
        Ok(Arc::new(Verifier {
            settings: settings.clone(),
            pem,
            hs256,
            jwks,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
        }))
    }

    /// Verifies `authorization` (the header value) and returns the token's
    /// environment claim.
    pub async fn verify(&self, authorization: Option<&str>) -> Result<String, TokenError> {
        let token = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(TokenError::Missing)?;
        let header = jsonwebtoken::decode_header(token)?;
        let key = self.key_for(header.alg, header.kid.as_deref()).await?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.settings.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "aud"]);
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation)?;
        let claim = &self.settings.environment_claim;
        data.claims
            .get(claim)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| TokenError::NoEnvironment(claim.clone()))
    }

    async fn key_for(&self, alg: Algorithm, kid: Option<&str>) -> Result<DecodingKey, TokenError> {
        match alg {
            Algorithm::HS256 => self.hs256.clone().ok_or(TokenError::Algorithm(alg)),
            Algorithm::RS256 | Algorithm::ES256 => {
                if let Some((pem_alg, key)) = &self.pem {
                    if *pem_alg == alg && (kid.is_none() || self.jwks.is_none()) {
                        return Ok(key.clone());
                    }
                }
                self.jwks_key(kid).await
            }
            other => Err(TokenError::Algorithm(other)),
        }
    }

    /// The JWKS key named `kid` (the first key when the token has none). A
    /// stale set, or an unknown kid once the set is stale, refetches it; a
    /// failed fetch keeps the keys already known.
    async fn jwks_key(&self, kid: Option<&str>) -> Result<DecodingKey, TokenError> {
        let Some(jwks) = &self.jwks else {
            return Err(TokenError::UnknownKey);
        };
        let find = |set: &JwkSet| {
            set.keys
                .iter()
                .find(|k| kid.is_none() || k.common.key_id.as_deref() == kid)
                .and_then(|k| DecodingKey::from_jwk(k).ok())
        };
        {
            let cached = jwks.read().await;
            let fresh = cached
                .fetched
                .is_some_and(|at| at.elapsed() < self.settings.jwks_refresh);
            if let Some(key) = find(&cached.set) {
                if fresh {
                    return Ok(key);
                }
            } else if fresh {
                return Err(TokenError::UnknownKey);
            }
        }
        let mut cached = jwks.write().await;
        match self.fetch_jwks().await {
            Ok(set) => {
                cached.set = set;
                cached.fetched = Some(Instant::now());
            }
            // Keep serving the keys we have; the next request retries.
            Err(e) => tracing::warn!(error = %e, "JWKS fetch failed"),
        }
        find(&cached.set).ok_or(TokenError::UnknownKey)
    }

    async fn fetch_jwks(&self) -> Result<JwkSet, reqwest::Error> {
        self.http
            .get(&self.settings.jwks_url)
            .send()
            .await?
            .error_for_status()?
            .json::<JwkSet>()
            .await
    }
}
