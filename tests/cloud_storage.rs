//! Azure and GCS specifics the shared conformance suite (tests/storage_conformance.rs) does not
//! cover: each credential source, the errors a wrong or missing one gives (naming the source
//! and the fix, never the secret), a missing container or bucket, an unreachable endpoint,
//! and GCS's service-account token flow and conditional delete against a local double that
//! checks what real GCS would check. Emulators come from `emulators/`.

mod emulators;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use walvfs::storage::azure::AzureStorage;
use walvfs::storage::gcs::GcsStorage;
use walvfs::storage::{Precondition, Storage, StorageError};

use emulators::{abs_config, gcs_config, AZURITE_ACCOUNT, AZURITE_KEY, CONTAINER};

fn unique(name: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

fn assert_no_secret(texts: &[String], secrets: &[&str]) {
    for t in texts {
        for s in secrets {
            assert!(!t.contains(s), "a secret leaked into: {t}");
        }
    }
}

fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn unb64(s: &str) -> Vec<u8> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|c| *c != b'=') {
        acc = (acc << 6) | T.iter().position(|x| *x == c).unwrap() as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// An account SAS for Azurite's account (service version 2019-12-12), signed with its key.
fn account_sas(permissions: &str) -> String {
    let (sv, ss, srt, se) = ("2019-12-12", "b", "sco", "2099-01-01T00:00:00Z");
    let to_sign = format!("{AZURITE_ACCOUNT}\n{permissions}\n{ss}\n{srt}\n\n{se}\n\n\n{sv}\n");
    let mut mac = Hmac::<Sha256>::new_from_slice(&unb64(AZURITE_KEY)).unwrap();
    mac.update(to_sign.as_bytes());
    let sig = b64(&mac.finalize().into_bytes());
    format!(
        "sv={sv}&ss={ss}&srt={srt}&sp={permissions}&se={}&sig={}",
        pct(se),
        pct(&sig)
    )
}

fn abs_yaml(endpoint: &str, path: &str, creds: &str) -> String {
    format!("      type: abs\n      account-name: {AZURITE_ACCOUNT}\n      bucket: {CONTAINER}\n      path: {path}\n      endpoint: {endpoint}\n{creds}")
}

// ---- Azure ------------------------------------------------------------------------------------

/// Litestream's order on a real server: a SAS token (file or LITESTREAM_AZURE_SAS_TOKEN) is used
/// even when a wrong account key is also given; a wrong key alone is refused as a credential
/// problem naming the fix; a bad SAS token too, without its signature in any message.
#[test]
fn azure_sas_token_and_account_key_on_azurite() {
    let Some(env) = emulators::azurite() else {
        return;
    };
    let sas = account_sas("rwdlac");
    let wrong_key = b64(b"walship-wrong-account-key-must-not-leak-0123");
    let path = unique("sas");
    // SAS from the environment wins over a (wrong) key in the file.
    let c = abs_config(
        &abs_yaml(
            &env.endpoint,
            &path,
            &format!("      account-key: '{wrong_key}'\n"),
        ),
        &[("LITESTREAM_AZURE_SAS_TOKEN", &sas)],
    );
    let st = AzureStorage::from_config(&c).unwrap();
    st.put(0, 1, 1, 1_700_000_000_000, &mut &b"via sas"[..])
        .unwrap_or_else(|e| panic!("SAS put: {e}"));
    assert_eq!(st.list(0).unwrap().len(), 1);
    let mut got = Vec::new();
    st.open(0, 1, 1).unwrap().read_to_end(&mut got).unwrap();
    assert_eq!(got, b"via sas");
    // The lease's compare-and-swap works with a SAS token too.
    let t = st
        .put_named_if("walship-lease.json", b"a", Precondition::Absent)
        .unwrap();
    st.delete_named_if("walship-lease.json", &t).unwrap();

    let sig = sas.rsplit("sig=").next().unwrap().to_string();
    let mut texts = vec![format!("{st:?}"), st.describe()];
    // A wrong key alone.
    let c = abs_config(
        &abs_yaml(
            &env.endpoint,
            &path,
            &format!("      account-key: '{wrong_key}'\n"),
        ),
        &[],
    );
    let st = AzureStorage::from_config(&c).unwrap();
    for res in [
        st.list(0).map(|_| ()),
        st.put(0, 2, 2, 0, &mut &b"x"[..]).map(|_| ()),
        st.open(0, 1, 1).map(|_| ()),
    ] {
        let e = res.expect_err("a wrong account key must fail");
        assert!(matches!(e, StorageError::Credentials(_)), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("account-key") && msg.contains(CONTAINER),
            "{msg}"
        );
        assert!(!e.is_transient());
        texts.push(msg);
        texts.push(format!("{e:?}"));
    }
    // A SAS token with a wrong signature.
    let bad_sas = sas.replace(
        &sig,
        &pct(&b64(b"walship-forged-signature-0123456789abcdef")),
    );
    let c = abs_config(
        &abs_yaml(
            &env.endpoint,
            &path,
            &format!("      sas-token: '{bad_sas}'\n"),
        ),
        &[],
    );
    let st = AzureStorage::from_config(&c).unwrap();
    let e = st.list(0).expect_err("a forged SAS token must fail");
    assert!(matches!(e, StorageError::Credentials(_)), "{e:?}");
    assert!(e.to_string().contains("sas-token"), "{e}");
    texts.push(e.to_string());
    texts.push(format!("{e:?}"));
    let forged_sig = bad_sas.rsplit("sig=").next().unwrap().to_string();
    for t in &texts {
        eprintln!("{t}");
    }
    assert_no_secret(
        &texts,
        &[&wrong_key, &sig, &forged_sig, "walship-forged", AZURITE_KEY],
    );
}

#[test]
fn azure_missing_container_and_unreachable_endpoint() {
    if let Some(env) = emulators::azurite() {
        let st = emulators::azure_storage(env, "walship-no-such-container", "p");
        for res in [
            st.list(0).map(|_| ()),
            st.put(0, 1, 1, 0, &mut &b"x"[..]).map(|_| ()),
        ] {
            let e = res.expect_err("a missing container must fail");
            assert!(matches!(e, StorageError::NoSuchBucket(_)), "{e:?}");
            assert!(e.to_string().contains("create the container"), "{e}");
        }
    }
    let port = emulators::free_port(); // nothing listens there
    let c = abs_config(
        &abs_yaml(
            &format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"),
            "p",
            &format!("      account-key: '{AZURITE_KEY}'\n"),
        ),
        &[],
    );
    let st = AzureStorage::from_config(&c).unwrap();
    let t = Instant::now();
    let e = st.list(0).expect_err("nothing listens");
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    assert!(matches!(e, StorageError::Unreachable(_)), "{e:?}");
    assert!(e.is_transient());
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    assert_no_secret(&[e.to_string(), format!("{e:?}")], &[AZURITE_KEY]);
}

// ---- GCS ----------------------------------------------------------------------------------------

#[test]
fn gcs_missing_bucket_is_reported_as_such() {
    let Some(env) = emulators::fake_gcs() else {
        return;
    };
    let st = emulators::gcs_storage(env, "walship-no-such-bucket", "p");
    for res in [
        st.list(0).map(|_| ()),
        st.put(0, 1, 1, 0, &mut &b"x"[..]).map(|_| ()),
    ] {
        let e = res.expect_err("a missing bucket must fail");
        assert!(matches!(e, StorageError::NoSuchBucket(_)), "{e:?}");
        assert!(e.to_string().contains("create the bucket"), "{e}");
    }
}

/// A one-thread HTTP server: `handler(request head, body)` gives (status, headers, body).
type Seen = Arc<Mutex<Vec<String>>>;
fn fake_server(handler: impl Fn(&str) -> (u16, String) + Send + 'static) -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let head = emulators::read_request_head(&mut s);
            s2.lock().unwrap().push(head.clone());
            let (status, body) = handler(&head);
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, seen)
}

/// A service-account key made here (RSA 2048, PKCS#8), as `GOOGLE_APPLICATION_CREDENTIALS`
/// names it, and the public key to check signatures with.
fn service_account(dir: &Path) -> Option<(PathBuf, PathBuf, String)> {
    let key = dir.join("key.pem");
    let public = dir.join("pub.pem");
    let ok = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
        && Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(&public)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    if !ok {
        eprintln!("\n*** SKIPPING the service-account test: openssl is not available ***\n");
        return None;
    }
    let pem = std::fs::read_to_string(&key).unwrap();
    let sa = dir.join("sa.json");
    let json = serde_json::json!({
        "type": "service_account",
        "project_id": "walship-test",
        "private_key_id": "walship-test-key-1",
        "private_key": pem,
        "client_email": "replicator@walship-test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "http://127.0.0.1:9/token",
    });
    std::fs::write(&sa, json.to_string()).unwrap();
    Some((sa, public, pem))
}

/// `GOOGLE_APPLICATION_CREDENTIALS` names a service-account key: every request carries a JWT
/// signed with that key (RS256, its key id, the account as issuer and subject, a storage scope,
/// not expired), which the double verifies with the public key as Google would. A missing key
/// file and a refused token are errors naming GOOGLE_APPLICATION_CREDENTIALS, without the key.
#[test]
fn gcs_service_account_credentials_sign_every_request() {
    let dir = std::env::temp_dir().join(unique("walship-sa"));
    std::fs::create_dir_all(&dir).unwrap();
    let Some((sa, public, pem)) = service_account(&dir) else {
        return;
    };
    let (port, seen) = fake_server(|head| {
        if head.starts_with("GET /storage/v1/b/bkt/o?") {
            (200, r#"{"kind":"storage#objects","items":[{"name":"p/ltx/0/0000000000000001-0000000000000002.ltx","size":"9"}]}"#.into())
        } else {
            (
                404,
                r#"{"error":{"code":404,"message":"No such object"}}"#.into(),
            )
        }
    });
    let c = gcs_config(
        "      type: gs\n      bucket: bkt\n      path: p\n",
        &[("GOOGLE_APPLICATION_CREDENTIALS", sa.to_str().unwrap())],
    );
    let st = GcsStorage::from_config(&c)
        .unwrap()
        .with_endpoint(&format!("http://127.0.0.1:{port}"));
    let files = st.list(0).unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(
        (files[0].min_txid, files[0].max_txid, files[0].size),
        (1, 2, 9)
    );
    assert!(matches!(
        st.open(0, 5, 5),
        Err(StorageError::NotFound { .. })
    ));
    let heads = seen.lock().unwrap().clone();
    assert_eq!(heads.len(), 2, "{heads:?}");
    let token = heads[0]
        .lines()
        .find_map(|l| {
            l.strip_prefix("authorization: Bearer ")
                .or_else(|| l.strip_prefix("Authorization: Bearer "))
        })
        .unwrap_or_else(|| panic!("no bearer token: {}", heads[0]))
        .trim()
        .to_string();
    // Check the JWT as Google would: header, claims, and the RS256 signature.
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    let unb64url = |s: &str| {
        let mut t = s.replace('-', "+").replace('_', "/");
        while !t.len().is_multiple_of(4) {
            t.push('=');
        }
        unb64(&t)
    };
    let header: serde_json::Value = serde_json::from_slice(&unb64url(parts[0])).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&unb64url(parts[1])).unwrap();
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], "walship-test-key-1");
    assert_eq!(
        claims["iss"],
        "replicator@walship-test.iam.gserviceaccount.com"
    );
    assert_eq!(claims["sub"], claims["iss"]);
    assert!(
        claims["scope"]
            .as_str()
            .unwrap_or("")
            .contains("devstorage")
            || claims["scope"]
                .as_str()
                .unwrap_or("")
                .contains("cloud-platform"),
        "{claims}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(claims["exp"].as_u64().unwrap() > now + 60, "{claims}");
    std::fs::write(dir.join("signed"), format!("{}.{}", parts[0], parts[1])).unwrap();
    std::fs::write(dir.join("sig"), unb64url(parts[2])).unwrap();
    let verified = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&public)
        .arg("-signature")
        .arg(dir.join("sig"))
        .arg(dir.join("signed"))
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "the JWT's signature does not verify with the service account's public key: {}",
        String::from_utf8_lossy(&verified.stdout)
    );
    // Both requests carried the same cached token.
    assert!(heads[1].contains(&token));

    // GCS refusing the token: a credentials error naming the file, no key material.
    let (port, _) = fake_server(|_| {
        (403, r#"{"error":{"code":403,"message":"replicator does not have storage.objects.list access"}}"#.into())
    });
    let st = GcsStorage::from_config(&c)
        .unwrap()
        .with_endpoint(&format!("http://127.0.0.1:{port}"));
    let e = st.list(0).expect_err("403");
    assert!(matches!(e, StorageError::Credentials(_)), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("GOOGLE_APPLICATION_CREDENTIALS") && msg.contains("storage.objects.list"),
        "{msg}"
    );
    // A key file that is not there.
    let c2 = gcs_config(
        "      type: gs\n      bucket: bkt\n",
        &[(
            "GOOGLE_APPLICATION_CREDENTIALS",
            "/nonexistent/walship-sa.json",
        )],
    );
    let e2 = GcsStorage::from_config(&c2)
        .unwrap()
        .list(0)
        .expect_err("no key file");
    assert!(matches!(e2, StorageError::Config { .. }), "{e2:?}");
    assert!(
        e2.to_string().contains("GOOGLE_APPLICATION_CREDENTIALS"),
        "{e2}"
    );
    let key_body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let texts = vec![msg, format!("{e:?}"), e2.to_string(), format!("{st:?}")];
    for t in &texts {
        eprintln!("{t}");
    }
    assert_no_secret(&texts, &[&key_body[..40], &token[..40]]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The lease's conditional calls carry `ifGenerationMatch`, and GCS's 412 is a failed
/// precondition (fake-gcs-server ignores the parameter on DELETE, so this double plays GCS).
#[test]
fn gcs_conditional_calls_carry_if_generation_match() {
    let (port, seen) = fake_server(|head| {
        if head.contains("ifGenerationMatch=41") {
            (
                412,
                r#"{"error":{"code":412,"message":"conditionNotMet"}}"#.into(),
            )
        } else {
            (
                200,
                r#"{"name":"p/walship-lease.json","generation":"42"}"#.into(),
            )
        }
    });
    let c = gcs_config(
        "      type: gs\n      bucket: bkt\n      path: p\n",
        &[("STORAGE_EMULATOR_HOST", &format!("127.0.0.1:{port}"))],
    );
    let st = GcsStorage::from_config(&c).unwrap();
    assert_eq!(
        st.put_named_if("walship-lease.json", b"x", Precondition::Absent)
            .unwrap(),
        "42"
    );
    assert!(matches!(
        st.put_named_if("walship-lease.json", b"y", Precondition::Matches("41")),
        Err(StorageError::PreconditionFailed { .. })
    ));
    assert!(matches!(
        st.delete_named_if("walship-lease.json", "41"),
        Err(StorageError::PreconditionFailed { .. })
    ));
    st.delete_named_if("walship-lease.json", "42").unwrap();
    let lines: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|h| h.lines().next().unwrap_or("").to_string())
        .collect();
    assert!(
        lines[0].starts_with(
            "POST /upload/storage/v1/b/bkt/o?uploadType=multipart&ifGenerationMatch=0 "
        ),
        "{lines:?}"
    );
    assert!(lines[1].contains("ifGenerationMatch=41"), "{lines:?}");
    assert!(
        lines[2]
            .starts_with("DELETE /storage/v1/b/bkt/o/p%2Fwalship-lease.json?ifGenerationMatch=41 "),
        "{lines:?}"
    );
    assert!(lines[3].contains("ifGenerationMatch=42"), "{lines:?}");
    // The emulator is reached without credentials, as Google's clients do.
    assert!(!seen
        .lock()
        .unwrap()
        .iter()
        .any(|h| h.to_ascii_lowercase().contains("authorization:")));
}

/// No SAS token, no account key: the Azure credential chain. With a service principal in the
/// environment (captured when the config is read), walship gets an Entra ID token from the
/// authority (`AZURE_AUTHORITY_HOST`, here a local double) and sends it as the bearer; a 403
/// with it names the identity variables to check, never the client secret.
#[test]
fn azure_credential_chain_uses_a_service_principal() {
    let client_secret = "walship-client-secret-must-not-leak-0123";
    let (token_port, token_seen) = fake_server(|head| {
        if head.starts_with("POST /walship-tenant/oauth2/v2.0/token ") {
            (
                200,
                r#"{"access_token":"walship-entra-token-0123456789","expires_in":3600,"token_type":"Bearer"}"#.into(),
            )
        } else {
            (404, "{}".into())
        }
    });
    let list = r#"<?xml version="1.0" encoding="utf-8"?><EnumerationResults><Prefix>p/ltx/0/</Prefix><Blobs></Blobs><NextMarker /></EnumerationResults>"#;
    let (blob_port, blob_seen) = fake_server(move |head| {
        if head.contains("walship-entra-token-0123456789") {
            (200, list.into())
        } else {
            (
                403,
                "<Error><Code>AuthorizationFailure</Code></Error>".into(),
            )
        }
    });
    let authority = format!("http://127.0.0.1:{token_port}");
    let env = [
        ("AZURE_CLIENT_ID", "walship-client-id"),
        ("AZURE_CLIENT_SECRET", client_secret),
        ("AZURE_TENANT_ID", "walship-tenant"),
        ("AZURE_AUTHORITY_HOST", authority.as_str()),
    ];
    let yaml = format!(
        "      type: abs\n      account-name: acct\n      bucket: c\n      path: p\n      endpoint: http://127.0.0.1:{blob_port}/acct\n"
    );
    let c = abs_config(&yaml, &env);
    assert_eq!(
        c.credential_source,
        walvfs::config::AbsCredentialSource::DefaultChain
    );
    let st = AzureStorage::from_config(&c).unwrap();
    assert_eq!(st.list(0).unwrap(), vec![]);
    let token_req = token_seen.lock().unwrap().clone();
    assert_eq!(token_req.len(), 1, "{token_req:?}");
    let blob_req = blob_seen.lock().unwrap().clone();
    assert!(
        blob_req[0]
            .to_ascii_lowercase()
            .contains("authorization: bearer walship-entra-token-0123456789"),
        "{blob_req:?}"
    );
    // A token the store refuses.
    let (deny_port, _) = fake_server(|_| {
        (
            403,
            "<Error><Code>AuthorizationPermissionMismatch</Code></Error>".into(),
        )
    });
    let c = abs_config(
        &yaml.replace(
            &format!("127.0.0.1:{blob_port}"),
            &format!("127.0.0.1:{deny_port}"),
        ),
        &env,
    );
    let st = AzureStorage::from_config(&c).unwrap();
    let e = st.list(0).expect_err("403");
    assert!(matches!(e, StorageError::Credentials(_)), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("AZURE_CLIENT_ID"), "{msg}");
    assert_no_secret(
        &[msg, format!("{e:?}"), format!("{c:?}"), format!("{st:?}")],
        &[client_secret],
    );
}
