//! Static bearer tokens, configured as SHA-256 hashes.
//!
//! The config holds `sha256(token)` in hex, never the token, so a leaked config or log grants
//! nothing. A presented token is hashed and compared with every configured hash in constant
//! time (`subtle`), without stopping at a match, so timing tells an attacker nothing about how
//! close a guess was. Tokens come from `auth.tokens` in the config and from `auth.tokens_file`,
//! which is re-read when it changes: a token removed from the file stops working within
//! `auth.reload_interval`, without a restart.

use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// One static token: the identity it authenticates and the SHA-256 of the token, in hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticToken {
    /// The principal name the token authenticates as.
    pub identity: String,
    /// `sha256(token)` as 64 hex digits (e.g. `printf %s "$TOKEN" | sha256sum`).
    pub sha256: String,
}

/// The shape of `auth.tokens_file`: `[[token]]` tables.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<StaticToken>,
}

/// Token hashes and the identities they authenticate.
pub type Table = Vec<([u8; 32], Arc<str>)>;

/// The tokens in force: the config's, and the file's as last read.
#[derive(Debug)]
pub struct StaticTokens {
    inline: Table,
    from_file: RwLock<Arc<Table>>,
}

impl StaticTokens {
    /// The config's tokens; `Err` names the bad entry.
    pub fn new(inline: &[StaticToken]) -> Result<Self, String> {
        Ok(Self { inline: table(inline)?, from_file: RwLock::default() })
    }

    /// Parses the contents of a tokens file.
    pub fn parse_file(contents: &[u8]) -> Result<Table, String> {
        let text = std::str::from_utf8(contents).map_err(|_| "tokens file is not UTF-8".to_owned())?;
        let file: TokensFile = toml::from_str(text).map_err(|e| format!("tokens file: {e}"))?;
        table(&file.token)
    }

    /// Replaces the file's tokens.
    pub fn set_file_tokens(&self, tokens: Table) {
        *self.from_file.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(tokens);
    }

    /// The identity `token` authenticates, if any.
    pub fn identify(&self, token: &str) -> Option<Arc<str>> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let from_file = self.from_file.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut found = None;
        for (hash, identity) in self.inline.iter().chain(from_file.iter()) {
            if bool::from(hash.ct_eq(&digest)) {
                found = Some(identity.clone());
            }
        }
        found
    }
}

fn table(tokens: &[StaticToken]) -> Result<Table, String> {
    tokens
        .iter()
        .map(|token| {
            if token.identity.is_empty() {
                return Err("a token's identity is empty".to_owned());
            }
            let hash = decode_hex(&token.sha256)
                .ok_or_else(|| format!("token of {:?}: sha256 must be 64 hex digits", token.identity))?;
            Ok((hash, Arc::from(token.identity.as_str())))
        })
        .collect()
}

fn decode_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(token: &str) -> String {
        Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn identifies_by_hash_and_follows_the_file() {
        let tokens =
            StaticTokens::new(&[StaticToken { identity: "ci".into(), sha256: hex("s3cret") }]).unwrap();
        assert_eq!(tokens.identify("s3cret").as_deref(), Some("ci"));
        assert_eq!(tokens.identify("s3cret "), None);
        let file = format!("[[token]]\nidentity = \"job\"\nsha256 = \"{}\"\n", hex("other").to_uppercase());
        tokens.set_file_tokens(StaticTokens::parse_file(file.as_bytes()).unwrap());
        assert_eq!(tokens.identify("other").as_deref(), Some("job"));
        tokens.set_file_tokens(StaticTokens::parse_file(b"").unwrap());
        assert_eq!(tokens.identify("other"), None, "a removed token stops working");
    }

    #[test]
    fn bad_hashes_are_refused() {
        for bad in ["", "abc", &"g".repeat(64)] {
            assert!(StaticTokens::new(&[StaticToken { identity: "x".into(), sha256: bad.into() }]).is_err());
        }
    }
}
