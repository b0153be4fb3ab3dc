//! Any request as a webhook: header lines, a blank line, then the body.
//! Verification and parsing for every provider answer or refuse — never a
//! panic.

#![no_main]

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use zdeploy::agent::webhook::{Provider, parse, verify};

const SECRET: &str = "fuzz-secret";

fuzz_target!(|data: &[u8]| {
    let split = data.windows(2).position(|w| w == b"\n\n");
    let (head, body) = match split {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let mut headers = HeaderMap::new();
    for line in head.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let _ = verify(&headers, body, SECRET);
    for provider in [
        Provider::GitHub,
        Provider::GitLab,
        Provider::Gitea,
        Provider::Bitbucket,
        Provider::Generic,
    ] {
        let _ = parse(provider, &headers, body);
    }
});
