//! Security: media downloads refuse internal addresses (SSRF) however they
//! are reached, and are capped in size, time and redirects.
//!
//! A real HTTP server on loopback plays the media host; the tests allow
//! exactly `127.0.0.1/32` where they need to reach it.

use std::path::Path;
use std::time::Duration;

use axum::response::Redirect;
use axum::routing::get;
use courier::media::{AddressPolicy, FetchLimits, MediaError, MediaFetcher};

/// A media host on 127.0.0.1 with files, redirects and a slow route.
async fn media_host() -> String {
    let app = axum::Router::new()
        .route("/small.png", get(|| async { vec![7u8; 100] }))
        .route("/big.png", get(|| async { vec![7u8; 5000] }))
        // No Content-Length: the cap must hold while streaming.
        .route(
            "/chunked.png",
            get(|| async {
                let chunks = (0..50).map(|_| Ok::<_, std::io::Error>(vec![1u8; 100]));
                axum::body::Body::from_stream(futures::stream::iter(chunks))
            }),
        )
        .route(
            "/to-metadata",
            get(|| async { Redirect::temporary("http://169.254.169.254/latest/meta-data/") }),
        )
        .route(
            "/to-ten",
            get(|| async { Redirect::temporary("http://10.0.0.1/a.png") }),
        )
        .route(
            "/to-file",
            get(|| async { Redirect::temporary("file:///etc/passwd") }),
        )
        .route("/loop", get(|| async { Redirect::temporary("/loop") }))
        .route(
            "/hop/{n}",
            get(
                |axum::extract::Path(n): axum::extract::Path<u32>| async move {
                    if n == 0 {
                        Redirect::temporary("/small.png")
                    } else {
                        Redirect::temporary(&format!("/hop/{}", n - 1))
                    }
                },
            ),
        )
        .route(
            "/slow.png",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                vec![1u8; 10]
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

fn fetcher(allow: &[&str]) -> MediaFetcher {
    MediaFetcher::new(
        AddressPolicy::new(allow).unwrap(),
        FetchLimits {
            max_bytes: 1000,
            timeout: Duration::from_millis(1500),
            max_redirects: 3,
        },
    )
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

#[tokio::test]
async fn internal_addresses_are_refused_by_default_in_every_spelling() {
    let base = media_host().await;
    let port = base.rsplit(':').next().unwrap();
    let f = fetcher(&[]);
    let dir = tempfile::tempdir().unwrap();
    for url in [
        format!("{base}/small.png"),
        format!("http://localhost:{port}/small.png"),
        format!("http://[::1]:{port}/small.png"),
        format!("http://[::ffff:127.0.0.1]:{port}/small.png"),
        format!("http://0x7f000001:{port}/small.png"),
        "http://10.1.2.3/a.png".into(),
        "http://192.168.0.1/a.png".into(),
        "http://169.254.169.254/latest/meta-data/".into(),
        "http://[fd00::1]/a.png".into(),
        "http://0.0.0.0/a.png".into(),
    ] {
        let err = f.fetch(&url, dir.path()).await.unwrap_err();
        assert!(matches!(err, MediaError::Forbidden { .. }), "{url}: {err}");
        assert!(
            err.to_string().contains("browser.media_allow_cidrs"),
            "the error says how to allow it: {err}"
        );
    }
    for url in [
        "ftp://example.com/a.png",
        "file:///etc/passwd",
        "gopher://x/",
    ] {
        let err = f.fetch(url, dir.path()).await.unwrap_err();
        assert!(matches!(err, MediaError::Scheme { .. }), "{url}: {err}");
    }
    assert_eq!(files_in(dir.path()), 0, "nothing was staged");
}

#[tokio::test]
async fn an_allowed_host_is_fetched_and_the_size_cap_holds_while_streaming() {
    let base = media_host().await;
    let f = fetcher(&["127.0.0.1/32"]);
    let dir = tempfile::tempdir().unwrap();
    let path = f
        .fetch(&format!("{base}/small.png"), dir.path())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 100]);
    assert!(path
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .ends_with("-small.png"));
    std::fs::remove_file(&path).unwrap();

    for route in ["big.png", "chunked.png"] {
        let err = f
            .fetch(&format!("{base}/{route}"), dir.path())
            .await
            .unwrap_err();
        assert!(
            matches!(err, MediaError::TooLarge { max: 1000, .. }),
            "{route}: {err}"
        );
    }
    assert_eq!(files_in(dir.path()), 0, "partial downloads are removed");

    let err = f
        .fetch(&format!("{base}/missing.png"), dir.path())
        .await
        .unwrap_err();
    assert!(matches!(err, MediaError::Status { .. }), "{err}");
}

#[tokio::test]
async fn every_redirect_target_is_rechecked_and_redirects_are_capped() {
    let base = media_host().await;
    let f = fetcher(&["127.0.0.1/32"]);
    let dir = tempfile::tempdir().unwrap();
    for (route, addr) in [
        ("to-metadata", "169.254.169.254"),
        ("to-ten", "10.0.0.1"),
        ("to-file", ""),
    ] {
        let err = f
            .fetch(&format!("{base}/{route}"), dir.path())
            .await
            .unwrap_err();
        if addr.is_empty() {
            assert!(matches!(err, MediaError::Scheme { .. }), "{route}: {err}");
        } else {
            assert!(
                matches!(err, MediaError::Forbidden { addr: a, .. } if a.to_string() == addr),
                "{route}: {err}"
            );
        }
    }
    // Three hops are allowed, four are not; a loop stops at the cap.
    assert!(f.fetch(&format!("{base}/hop/2"), dir.path()).await.is_ok());
    for route in ["hop/3", "loop"] {
        let err = f
            .fetch(&format!("{base}/{route}"), dir.path())
            .await
            .unwrap_err();
        assert!(
            matches!(err, MediaError::TooManyRedirects { max: 3, .. }),
            "{route}: {err}"
        );
    }
}

#[tokio::test]
async fn the_resolver_refuses_names_that_resolve_to_internal_addresses() {
    let base = media_host().await;
    let port = base.rsplit(':').next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Only ::1 allowed, server on 127.0.0.1: `localhost` may only connect
    // to ::1, where nothing listens, never to the refused 127.0.0.1.
    let f = fetcher(&["::1/128"]);
    let err = f
        .fetch(&format!("http://localhost:{port}/small.png"), dir.path())
        .await
        .unwrap_err();
    assert!(
        !matches!(err, MediaError::Status { .. }) && files_in(dir.path()) == 0,
        "{err}"
    );
    // Allowing 127.0.0.1 lets the same name through.
    let f = fetcher(&["127.0.0.1/32"]);
    let path = f
        .fetch(&format!("http://localhost:{port}/small.png"), dir.path())
        .await
        .unwrap();
    assert_eq!(std::fs::metadata(path).unwrap().len(), 100);
}

#[tokio::test]
async fn a_slow_download_times_out() {
    let base = media_host().await;
    let f = fetcher(&["127.0.0.1/32"]);
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let err = f
        .fetch(&format!("{base}/slow.png"), dir.path())
        .await
        .unwrap_err();
    assert!(matches!(err, MediaError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(4));
}
