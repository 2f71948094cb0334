//! Deterministic, readable, unique names for sets, maps and chains.
//!
//! A name is `prefix_token_token…[_suffix]` when every token is a plain lowercase token and the result
//! fits in [`MAX_NAME_LEN`]; otherwise `prefix_H<hash>[_suffix]`, with a 48-bit FNV-1a hash of the
//! tokens. Plain tokens contain no `_`, so the joined form is unambiguous; markers that the caller puts
//! among the tokens are uppercase, which plain tokens never are.

/// The longest name generated (nft allows more; shorter names keep the ruleset reviewable).
pub const MAX_NAME_LEN: usize = 64;

/// Whether a token can appear as is: lowercase letters, digits, `.`, `-` and `/`.
pub fn is_plain_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"./-".contains(&b))
}

/// Whether a token is one of the uppercase markers callers use (`ALL`, `NS`, `PODS`).
fn is_marker(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_uppercase())
}

/// FNV-1a, 64 bits: stable across runs and platforms.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Builds a name from a prefix, tokens and an optional suffix.
pub fn name(prefix: &str, tokens: &[&str], suffix: Option<&str>) -> String {
    let suffix = suffix.map(|s| format!("_{s}")).unwrap_or_default();
    let plain = tokens.iter().all(|t| is_plain_token(t) || is_marker(t));
    let readable = format!("{prefix}_{}{suffix}", tokens.join("_"));
    if plain && !tokens.is_empty() && readable.len() <= MAX_NAME_LEN {
        return readable;
    }
    let hash = fnv1a(tokens) & 0xffff_ffff_ffff;
    format!("{prefix}_H{hash:012x}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_tokens_stay_readable() {
        assert_eq!(
            name("pods", &["x", "app", "web"], Some("v4")),
            "pods_x_app_web_v4"
        );
        assert_eq!(
            name("np", &["x", "allow-web.v2", "ingress"], None),
            "np_x_allow-web.v2_ingress"
        );
    }

    #[test]
    fn odd_or_long_tokens_are_hashed_deterministically() {
        let odd = name("pods", &["x", "App", "Web_1"], Some("v4"));
        assert!(odd.starts_with("pods_H") && odd.ends_with("_v4"), "{odd}");
        assert_eq!(odd, name("pods", &["x", "App", "Web_1"], Some("v4")));
        let long = "a".repeat(80);
        let n = name("np", &["x", &long], None);
        assert!(n.len() <= MAX_NAME_LEN, "{n}");
        assert_ne!(n, name("np", &["x", &"b".repeat(80)], None));
    }

    #[test]
    fn token_boundaries_matter() {
        // Same characters, different tokens: one of them is not plain, so it is hashed.
        assert_ne!(
            name("p", &["a_b", "c"], None),
            name("p", &["a", "b_c"], None)
        );
    }
}
