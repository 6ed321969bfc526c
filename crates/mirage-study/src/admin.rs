//! The admin bearer token: creating studies and exporting votes need it.
//!
//! The server keeps only the token's SHA-256 and compares digests in constant time,
//! so neither the comparison's timing nor the length of a wrong guess tells an
//! attacker how close it was.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Shortest accepted token: 16 characters, so that a token cannot be guessed online.
pub const MIN_TOKEN_LEN: usize = 16;

#[derive(Clone)]
pub struct AdminToken {
    digest: Option<[u8; 32]>,
}

/// Why a request is not let into an admin action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRefusal {
    /// The server was started without a token, so admin actions are off.
    Disabled,
    /// No `Authorization: Bearer ...` header.
    Missing,
    /// A token that does not match.
    Wrong,
}

impl AdminRefusal {
    pub fn message(self) -> &'static str {
        match self {
            AdminRefusal::Disabled => {
                "admin actions are disabled: start the server with --admin-token or MIRAGE_STUDY_TOKEN"
            }
            AdminRefusal::Missing => "admin actions need an Authorization: Bearer <token> header",
            AdminRefusal::Wrong => "wrong admin token",
        }
    }
}

impl AdminToken {
    /// `None` disables admin actions. A token shorter than [`MIN_TOKEN_LEN`] is refused.
    pub fn new(token: Option<&str>) -> Result<AdminToken, String> {
        match token {
            None => Ok(AdminToken { digest: None }),
            Some(t) if t.chars().count() < MIN_TOKEN_LEN => Err(format!(
                "the admin token must be at least {MIN_TOKEN_LEN} characters"
            )),
            Some(t) => Ok(AdminToken {
                digest: Some(Sha256::digest(t.as_bytes()).into()),
            }),
        }
    }

    /// Checks an `Authorization` header value.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<(), AdminRefusal> {
        let Some(expected) = &self.digest else {
            return Err(AdminRefusal::Disabled);
        };
        let presented = authorization
            .and_then(|h| h.strip_prefix(b"Bearer "))
            .ok_or(AdminRefusal::Missing)?;
        let presented: [u8; 32] = Sha256::digest(presented).into();
        if bool::from(presented.ct_eq(expected)) {
            Ok(())
        } else {
            Err(AdminRefusal::Wrong)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "correct-horse-battery-staple";

    #[test]
    fn the_right_bearer_token_passes_and_nothing_else_does() {
        let admin = AdminToken::new(Some(TOKEN)).unwrap();
        assert_eq!(
            admin.check(Some(format!("Bearer {TOKEN}").as_bytes())),
            Ok(())
        );
        assert_eq!(admin.check(None), Err(AdminRefusal::Missing));
        assert_eq!(
            admin.check(Some(TOKEN.as_bytes())),
            Err(AdminRefusal::Missing)
        );
        assert_eq!(admin.check(Some(b"Basic abc")), Err(AdminRefusal::Missing));
        for wrong in [
            format!("Bearer {TOKEN}x"),
            format!("Bearer {}", &TOKEN[1..]),
            "Bearer ".to_string(),
            format!("Bearer {}", TOKEN.to_uppercase()),
        ] {
            assert_eq!(
                admin.check(Some(wrong.as_bytes())),
                Err(AdminRefusal::Wrong),
                "{wrong}"
            );
        }
    }

    #[test]
    fn no_token_disables_admin_and_short_tokens_are_refused() {
        let off = AdminToken::new(None).unwrap();
        assert_eq!(
            off.check(Some(b"Bearer anything-at-all-here")),
            Err(AdminRefusal::Disabled)
        );
        assert!(AdminToken::new(Some("short")).is_err());
    }
}
