//! JSON Web Tokens: HS256, signed with `auth.jwt_secret` (the master key when unset), with
//! the claims `sub`, `role` (`admin` or `user`), an optional `project` and `exp`. An identity
//! system that holds the secret can let its users call the gateway without a gateway key each.
//!
//! Only HS256 is accepted: a token that names another algorithm (`none` included) is refused
//! before its signature is looked at, so a forged header cannot choose how it is checked.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::Role;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Seconds since the Unix epoch; required.
    pub exp: u64,
}

impl Claims {
    pub fn role(&self) -> Option<Role> {
        match self.role.as_str() {
            "admin" => Some(Role::Admin),
            "user" => Some(Role::User),
            _ => None,
        }
    }
}

/// Checks tokens against one secret.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

/// Clock skew allowed between the token's issuer and the gateway.
const LEEWAY_SECS: u64 = 5;

impl JwtVerifier {
    pub fn new(secret: &str) -> JwtVerifier {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "sub"]);
        JwtVerifier {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// The token's claims, when its signature, algorithm, expiry and role are good; otherwise
    /// why not, in words fit for the caller (never the secret, never the token).
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| refusal(token, &e))?
            .claims;
        if claims.role().is_none() {
            return Err(format!(
                "the JWT's role is `{}`; it must be `admin` or `user`",
                claims.role.chars().take(32).collect::<String>()
            ));
        }
        Ok(claims)
    }
}

/// Why `decode` refused the token. A header naming another algorithm is said as such, read
/// here because the crate knows no `none` to name (it calls such a token malformed).
fn refusal(token: &str, e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    if header_alg(token).is_some_and(|alg| alg != "HS256") {
        return "the JWT must be signed with HS256".to_owned();
    }
    match e.kind() {
        ErrorKind::ExpiredSignature => "the JWT has expired".to_owned(),
        ErrorKind::InvalidSignature => "the JWT's signature is not valid".to_owned(),
        ErrorKind::InvalidAlgorithm => "the JWT must be signed with HS256".to_owned(),
        ErrorKind::MissingRequiredClaim(c) => format!("the JWT has no `{c}` claim"),
        _ => "the JWT is malformed".to_owned(),
    }
}

/// The `alg` its header names, when the header is base64url JSON.
fn header_alg(token: &str) -> Option<String> {
    use base64::Engine;
    let header = token.split('.').next()?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&json).ok()?;
    value.get("alg")?.as_str().map(str::to_owned)
}

/// A signed token, for tests, the docs' examples and `tollgate token`.
pub fn sign(claims: &Claims, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing of plain claims cannot fail")
}

/// Whether a presented credential is a JWT rather than a gateway key: three base64url parts,
/// the first a JSON object (`eyJ` is `{"` encoded).
pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.bytes().filter(|b| *b == b'.').count() == 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn claims(role: &str, exp_from_now: i64) -> Claims {
        Claims {
            sub: "alice".into(),
            role: role.into(),
            project: Some("search".into()),
            exp: (chrono::Utc::now().timestamp() + exp_from_now) as u64,
        }
    }

    #[test]
    fn a_good_token_gives_its_claims() {
        let verifier = JwtVerifier::new("s3cret");
        let token = sign(&claims("admin", 60), "s3cret");
        assert!(looks_like_jwt(&token));
        let got = verifier.verify(&token).unwrap();
        assert_eq!(got.role(), Some(Role::Admin));
        assert_eq!(got.project.as_deref(), Some("search"));
    }

    #[test]
    fn expired_wrongly_signed_and_unsigned_tokens_are_refused() {
        let verifier = JwtVerifier::new("s3cret");
        let expired = sign(&claims("user", -120), "s3cret");
        assert_eq!(
            verifier.verify(&expired).unwrap_err(),
            "the JWT has expired"
        );
        let forged = sign(&claims("admin", 60), "other");
        assert!(verifier.verify(&forged).unwrap_err().contains("signature"));
        // alg: none, with the claims a forger would want.
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = b64.encode(serde_json::to_vec(&claims("admin", 60)).unwrap());
        for unsigned in [format!("{header}.{body}."), format!("{header}.{body}.x")] {
            let refused = verifier.verify(&unsigned).unwrap_err();
            assert_eq!(refused, "the JWT must be signed with HS256", "{unsigned}");
        }
        assert_eq!(
            verifier.verify("eyJ.x.y").unwrap_err(),
            "the JWT is malformed"
        );
        let bad_role = sign(&claims("root", 60), "s3cret");
        assert!(verifier.verify(&bad_role).unwrap_err().contains("`root`"));
        assert!(!looks_like_jwt("tg-0123"));
    }
}
