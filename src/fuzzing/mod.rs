//! Fuzz-target bodies, in one place for both `cargo fuzz` (fuzz/fuzz_targets/*.rs, one line
//! each) and the stable-toolchain replay test (tests/fuzz_regressions.rs).
//!
//! Owns: turning arbitrary bytes into calls on the LTX decoder, the capture state machine and
//! the config parser, and checking invariants on what comes back. Each function returns
//! normally for every input; it panics only when the code under test panics or an invariant
//! fails, which is the finding. It must never read the process environment or depend on
//! anything but its input (a failing input must replay the same way anywhere); only the capture
//! target does file I/O, in a private directory it recreates for every input.

//!
//! The capture interpreter is `capture.rs` (most of the code); the decoder and config targets
//! are here.

use std::path::Path;

use crate::config::{self, Config};
use crate::ltx::{self, Encoder};

mod capture;
pub mod walgen;
pub use capture::capture_sequence;

// ---------------------------------------------------------------------------------------------
// LTX decoder

/// Decodes `data` as an LTX file. Whatever it decodes must be a file the encoder would accept:
/// a valid header, pages in order, the same pages through the streaming decoder, and a
/// re-encoded copy that decodes to the same header, pages and post-apply checksum. A file
/// that decodes must stop decoding when cut short or extended.
pub fn ltx_decode(data: &[u8]) {
    let decoded = match ltx::decode(data) {
        Ok(d) => d,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            streaming_agrees(data, None);
            return;
        }
    };
    let h = &decoded.header;
    h.validate().expect("a decoded header validates");
    // Bytes 80..100 are reserved: written as zero, not checked when read.
    assert_eq!(
        h.encode()[..80],
        data[..80],
        "header re-encodes to its bytes"
    );
    let mut prev = 0u32;
    for (pgno, page) in &decoded.pages {
        assert_eq!(
            page.len(),
            h.page_size as usize,
            "page {pgno} has the page size"
        );
        assert!(*pgno > prev && *pgno <= h.commit && *pgno != h.lock_pgno());
        prev = *pgno;
    }
    decoded
        .trailer
        .validate(h)
        .expect("a decoded trailer validates");
    streaming_agrees(data, Some(&decoded));

    let mut enc = Encoder::new(Vec::new(), h).expect("the encoder takes a decoded header");
    for (pgno, page) in &decoded.pages {
        enc.write_page(*pgno, page)
            .expect("the encoder takes decoded pages");
    }
    let (bytes, trailer) = enc
        .finish(decoded.trailer.post_apply_checksum)
        .expect("the encoder finishes a decoded file");
    let again = ltx::decode(&bytes).expect("a re-encoded file decodes");
    assert_eq!(again.header, decoded.header);
    assert_eq!(again.pages, decoded.pages);
    assert_eq!(again.trailer, trailer);
    assert_eq!(
        trailer.post_apply_checksum,
        decoded.trailer.post_apply_checksum
    );

    assert!(ltx::decode(&data[..data.len() - 1]).is_err(), "cut short");
    let mut longer = data.to_vec();
    longer.push(0);
    assert!(ltx::decode(&longer).is_err(), "extended");
}

/// The streaming decoder, page by page then `finish`, agrees with `decode`.
fn streaming_agrees(data: &[u8], whole: Option<&ltx::Decoded>) {
    let mut pages = Vec::new();
    let result = ltx::Decoder::new(data).and_then(|mut d| {
        let mut buf = vec![0u8; d.header().page_size as usize];
        while let Some(pgno) = d.next_page(&mut buf)? {
            pages.push((pgno, buf.clone()));
        }
        // Reading past the end of the page block keeps answering "no more pages".
        assert_eq!(d.next_page(&mut buf).ok().flatten(), None);
        let header = d.header().clone();
        d.finish().map(|t| (header, t))
    });
    match (result, whole) {
        (Ok((header, trailer)), Some(w)) => {
            assert_eq!(
                (&header, &pages, &trailer),
                (&w.header, &w.pages, &w.trailer)
            );
        }
        (Err(_), None) => {}
        (r, w) => panic!(
            "streaming decoder says {:?}, decode says {:?}",
            r.map(|_| ()),
            w.map(|_| ())
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Config

/// The environment the config target sees: fixed, so a finding replays anywhere.
fn fuzz_env(name: &str) -> Option<String> {
    let v = match name {
        "HOME" => "/home/fuzz",
        "BUCKET" => "fuzz-bucket",
        "EMPTY" => "",
        "LITESTREAM_ACCESS_KEY_ID" | "AWS_ACCESS_KEY_ID" => "AKIAFUZZFUZZFUZZFUZZ",
        "LITESTREAM_SECRET_ACCESS_KEY" | "AWS_SECRET_ACCESS_KEY" => "fuzz/secret/key/0123456789",
        "AWS_REGION" => "us-east-1",
        _ => return None,
    };
    Some(v.to_string())
}

/// Parses `data` as a config file (and its first line as a replica URL and a Go duration):
/// errors are `Err` with a message, never a panic; parsing is deterministic; a parsed
/// duration prints to text that parses back to the same duration; expansion of text without
/// `$` is the identity.
pub fn config_parse(data: &[u8]) {
    let text = match std::str::from_utf8(data) {
        Ok(t) => t.to_string(),
        Err(_) => String::from_utf8_lossy(data).into_owned(),
    };
    let base = Path::new("/srv/app");
    let first = Config::parse_with_env(&text, base, &fuzz_env);
    let second = Config::parse_with_env(&text, base, &fuzz_env);
    assert_eq!(
        format!("{first:?}"),
        format!("{second:?}"),
        "parsing is deterministic"
    );
    match &first {
        Ok(cfg) => {
            for db in &cfg.dbs {
                assert!(db.path.is_absolute(), "{:?} is absolute", db.path);
            }
            for w in &cfg.warnings {
                assert!(!w.is_empty());
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }

    let line = text.lines().next().unwrap_or("");
    if let Err(e) = Config::from_replica_url_with_env(line, base, &fuzz_env) {
        assert!(!e.to_string().is_empty());
    }
    for candidate in [
        line,
        line.trim_start_matches(|c: char| c != '-' && !c.is_ascii_digit()),
    ] {
        match config::parse_go_duration(candidate) {
            Ok(d) => {
                let shown = config::format_go_duration(d);
                assert_eq!(
                    config::parse_go_duration(&shown),
                    Ok(d),
                    "{candidate:?} parses to {d:?}, printed as {shown:?}"
                );
            }
            Err(e) => assert!(!e.is_empty()),
        }
    }
    let (expanded, unset) = config::expand::expand(&text, &fuzz_env);
    if !text.contains('$') {
        assert_eq!(expanded, text);
        assert!(unset.is_empty());
    }
}
