//! What a webhook request must prove: an HMAC-SHA256 signature of its body and/or a
//! bearer token, each compared in constant time against a [`Secret`].

use axum::http::{HeaderMap, header};
use hmac::{KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// A secret read from the environment. Its `Debug` does not show it.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        Self(value.into())
    }

    #[cfg(test)]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What a request must prove; both checks apply when both are configured.
#[derive(Debug, Clone, Default)]
pub struct WebhookAuth {
    /// HMAC-SHA256 key of the `X-Hub-Signature-256: sha256=<hex>` body signature.
    pub hmac_secret: Option<Secret>,
    /// The expected `Authorization: Bearer <token>`.
    pub bearer_token: Option<Secret>,
}

/// Checks the configured signature and token. The reason names what was wrong, never a
/// secret.
pub fn authenticate(
    auth: &WebhookAuth,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), &'static str> {
    if let Some(secret) = &auth.hmac_secret {
        let signature = headers
            .get("x-hub-signature-256")
            .or_else(|| headers.get("x-webhook-signature"))
            .ok_or("missing signature (X-Hub-Signature-256: sha256=<hex>)")?;
        let hex_digest = signature
            .to_str()
            .ok()
            .and_then(|s| s.trim().strip_prefix("sha256="))
            .ok_or("malformed signature (expected sha256=<hex>)")?;
        let expected =
            hex::decode(hex_digest).map_err(|_| "malformed signature (expected sha256=<hex>)")?;
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&secret.0)
            .map_err(|_| "signature secret unusable")?;
        mac.update(body);
        // `verify_slice` compares in constant time.
        mac.verify_slice(&expected)
            .map_err(|_| "signature does not match the body")?;
    }
    if let Some(token) = &auth.bearer_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or("missing bearer token (Authorization: Bearer <token>)")?;
        if !bool::from(given.trim().as_bytes().ct_eq(&token.0)) {
            return Err("bearer token does not match");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn signatures_and_tokens() {
        let auth = WebhookAuth {
            hmac_secret: Some(Secret::new("s3cret")),
            bearer_token: None,
        };
        let body = br#"{"a":1}"#;
        let mut headers = HeaderMap::new();
        assert!(authenticate(&auth, &headers, body).is_err());
        headers.insert(
            "x-hub-signature-256",
            HeaderValue::from_str(&sign(b"s3cret", body)).unwrap(),
        );
        assert_eq!(authenticate(&auth, &headers, body), Ok(()));
        assert!(authenticate(&auth, &headers, b"{}").is_err());
        let mut alt = HeaderMap::new();
        alt.insert(
            "x-webhook-signature",
            HeaderValue::from_str(&sign(b"s3cret", body)).unwrap(),
        );
        assert_eq!(authenticate(&auth, &alt, body), Ok(()));
        alt.insert("x-webhook-signature", HeaderValue::from_static("sha256=zz"));
        assert!(authenticate(&auth, &alt, body).is_err());

        let auth = WebhookAuth {
            hmac_secret: None,
            bearer_token: Some(Secret::new("tok-value-9")),
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tok-value-9"),
        );
        assert_eq!(authenticate(&auth, &headers, b""), Ok(()));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tok-value-8"),
        );
        assert!(authenticate(&auth, &headers, b"").is_err());
        assert!(format!("{auth:?}").contains("***") && !format!("{auth:?}").contains("tok-value"));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn signature_refusals_say_what_is_wrong() {
        let auth = WebhookAuth {
            hmac_secret: Some(Secret::new("s3cret")),
            bearer_token: None,
        };
        let body = b"payload";
        let good = sign(b"s3cret", body);
        let missing = Err("missing signature (X-Hub-Signature-256: sha256=<hex>)");
        let malformed = Err("malformed signature (expected sha256=<hex>)");
        let mismatch = Err("signature does not match the body");
        assert_eq!(authenticate(&auth, &HeaderMap::new(), body), missing);
        // GitHub's legacy SHA-1 header is not accepted in place of the SHA-256 one.
        let sha1 = headers(&[("x-hub-signature", "sha1=0123")]);
        assert_eq!(authenticate(&auth, &sha1, body), missing);
        let bare_hex = headers(&[("x-hub-signature-256", &good["sha256=".len()..])]);
        assert_eq!(authenticate(&auth, &bare_hex, body), malformed);
        let not_hex = headers(&[("x-hub-signature-256", "sha256=not-hex")]);
        assert_eq!(authenticate(&auth, &not_hex, body), malformed);
        let other_key = headers(&[("x-hub-signature-256", &sign(b"other", body))]);
        assert_eq!(authenticate(&auth, &other_key, body), mismatch);
        let padded = headers(&[("x-hub-signature-256", &format!("  {good} "))]);
        assert_eq!(authenticate(&auth, &padded, body), Ok(()));
        // The SHA-256 header wins when both are sent; the other is not a fallback.
        let both = headers(&[
            ("x-hub-signature-256", &sign(b"other", body)),
            ("x-webhook-signature", &good),
        ]);
        assert_eq!(authenticate(&auth, &both, body), mismatch);
    }

    #[test]
    fn bearer_token_must_follow_the_exact_scheme() {
        let auth = WebhookAuth {
            hmac_secret: None,
            bearer_token: Some(Secret::new("tok")),
        };
        let missing = Err("missing bearer token (Authorization: Bearer <token>)");
        assert_eq!(authenticate(&auth, &HeaderMap::new(), b""), missing);
        let lower = headers(&[("authorization", "bearer tok")]);
        assert_eq!(authenticate(&auth, &lower, b""), missing);
        let basic = headers(&[("authorization", "Basic dG9rOg==")]);
        assert_eq!(authenticate(&auth, &basic, b""), missing);
        let padded = headers(&[("authorization", "Bearer  tok ")]);
        assert_eq!(authenticate(&auth, &padded, b""), Ok(()));
        let prefix = headers(&[("authorization", "Bearer to")]);
        assert_eq!(
            authenticate(&auth, &prefix, b""),
            Err("bearer token does not match")
        );
    }

    #[test]
    fn both_checks_apply_when_both_are_configured() {
        let auth = WebhookAuth {
            hmac_secret: Some(Secret::new("s3cret")),
            bearer_token: Some(Secret::new("tok")),
        };
        let body = b"{}";
        let signature = sign(b"s3cret", body);
        let signed = headers(&[("x-hub-signature-256", &signature)]);
        assert_eq!(
            authenticate(&auth, &signed, body),
            Err("missing bearer token (Authorization: Bearer <token>)")
        );
        let with_token = headers(&[("authorization", "Bearer tok")]);
        assert_eq!(
            authenticate(&auth, &with_token, body),
            Err("missing signature (X-Hub-Signature-256: sha256=<hex>)")
        );
        let both = headers(&[
            ("x-hub-signature-256", &signature),
            ("authorization", "Bearer tok"),
        ]);
        assert_eq!(authenticate(&auth, &both, body), Ok(()));
    }
}
