//! `auth`: tokens, JWT, and the loopback rule.

use super::*;

#[test]
fn auth_section_is_validated_with_its_keys() {
    let c = parse("auth:\n  tokens:\n    - {token: abcdefghijklmnop, scope: write}\n").unwrap();
    assert!(c.auth.enabled());
    assert_eq!(c.auth.tokens[0].scope, Scope::Write);
    assert!(
        !format!("{:?}", c.auth).contains("abcdefghijklmnop"),
        "Debug hides tokens"
    );
    fails(
        "auth:\n  tokens:\n    - {token: short}\n",
        "auth.tokens[0].token",
        "16",
    );
    fails(
        "auth:\n  tokens:\n    - {token: abcdefghijklmnop, scope: admin}\n",
        "auth.tokens[0].scope",
        "read or write",
    );
    fails(
        "auth:\n  tokens:\n    - {token_env: RINGWATCH_TEST_SURELY_UNSET}\n",
        "auth.tokens[0].token_env",
        "RINGWATCH_TEST_SURELY_UNSET",
    );
    fails(
        "auth:\n  tokens:\n    - {scope: read}\n",
        "auth.tokens[0].token",
        "required",
    );
    fails("auth:\n  jwt: {}\n", "auth.jwt.secret_env", "required");
    fails("auth:\n  bogus: 1\n", "auth", "bogus");
    // Non-loopback without auth: refused unless explicitly allowed.
    fails(
        "server:\n  listen: 0.0.0.0:8080\n",
        "auth",
        "allow_unauthenticated",
    );
    fails("server:\n  listen: \"[::]:8080\"\n", "auth", "loopback");
    assert!(
        parse("server:\n  listen: 0.0.0.0:8080\nauth:\n  allow_unauthenticated: true\n").is_ok()
    );
    assert!(parse("server:\n  listen: \"[::1]:8080\"\n").is_ok());
}
