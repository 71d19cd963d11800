//! GCS credentials from the metadata server (a GCE VM, GKE node or Cloud Run service): with no
//! `GOOGLE_APPLICATION_CREDENTIALS` and no gcloud file, walship asks
//! `http://$GCE_METADATA_HOST/computeMetadata/v1/instance/service-accounts/default/token`
//! (with `Metadata-Flavor: Google`) and sends that token. Its own test binary: it sets
//! process-wide environment variables (`GCE_METADATA_HOST`, `HOME`).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;

use walvfs::config::{Config, ReplicaKind};
use walvfs::storage::gcs::GcsStorage;
use walvfs::storage::Storage;

fn serve(answer: &'static str) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let mut buf = [0u8; 8192];
            let mut req = Vec::new();
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => req.extend_from_slice(&buf[..k]),
                }
            }
            s2.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&req).to_string());
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    (port, seen)
}

#[test]
fn the_metadata_server_token_is_used() {
    let (meta_port, meta_seen) = serve(
        r#"{"access_token":"walship-gce-token-0123456789","expires_in":3600,"token_type":"Bearer"}"#,
    );
    let (gcs_port, gcs_seen) = serve(r#"{"kind":"storage#objects"}"#);
    let home = std::env::temp_dir().join(format!("walship-gce-home-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    std::env::set_var("HOME", &home); // no gcloud application_default_credentials.json
    std::env::set_var("GCE_METADATA_HOST", format!("127.0.0.1:{meta_port}"));
    let cfg = Config::parse_with_env(
        "dbs:\n  - path: /tmp/x.db\n    replica:\n      url: gs://bkt/p\n",
        Path::new("/tmp"),
        &|_| None,
    )
    .unwrap();
    let ReplicaKind::Gcs(c) = &cfg.dbs[0].replica.kind else {
        panic!("not gcs")
    };
    let st = GcsStorage::from_config(c)
        .unwrap()
        .with_endpoint(&format!("http://127.0.0.1:{gcs_port}"));
    assert_eq!(st.list(0).unwrap(), vec![]);
    assert_eq!(st.list(1).unwrap(), vec![]);
    let meta = meta_seen.lock().unwrap().clone();
    assert_eq!(meta.len(), 1, "the token is cached: {meta:?}");
    assert!(
        meta[0].starts_with("GET /computeMetadata/v1/instance/service-accounts/default/token"),
        "{}",
        meta[0]
    );
    assert!(meta[0]
        .to_ascii_lowercase()
        .contains("metadata-flavor: google"));
    let reqs = gcs_seen.lock().unwrap().clone();
    assert_eq!(reqs.len(), 2);
    for r in &reqs {
        assert!(
            r.to_ascii_lowercase()
                .contains("authorization: bearer walship-gce-token-0123456789"),
            "{r}"
        );
    }
    let _ = std::fs::remove_dir_all(&home);
}
