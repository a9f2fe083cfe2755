//! Tests of `media`.

use super::*;

#[test]
fn urls_are_checked_for_scheme_and_literal_hosts() {
    let p = AddressPolicy::default();
    let check = |u: &str| p.check_url(&url::Url::parse(u).unwrap());
    assert!(matches!(
        check("ftp://example.com/a"),
        Err(MediaError::Scheme { .. })
    ));
    assert!(matches!(
        check("file:///etc/passwd"),
        Err(MediaError::Scheme { .. })
    ));
    for u in [
        "http://127.0.0.1/a.png",
        "http://0x7f.1/a.png",
        "http://2130706433/a.png",
        "http://[::1]/a.png",
        "http://[::ffff:169.254.169.254]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1:8080/",
        "http://0.0.0.0/",
    ] {
        assert!(
            matches!(check(u), Err(MediaError::Forbidden { .. })),
            "{u}: {:?}",
            check(u)
        );
    }
    assert!(check("https://cdn.example.com/a.png").is_ok());
    assert!(check("http://8.8.8.8/a.png").is_ok());
}

#[test]
fn relative_paths_are_checked_before_the_disk_is_touched() {
    assert!(matches!(check_relative(""), Err(MediaError::EmptyPath)));
    assert!(matches!(
        check_relative("/etc/passwd"),
        Err(MediaError::AbsolutePath(_))
    ));
    assert!(matches!(
        check_relative("a/../../etc"),
        Err(MediaError::Traversal(_))
    ));
    assert!(matches!(
        check_relative(".."),
        Err(MediaError::Traversal(_))
    ));
    assert!(check_relative("promo/./a.png").is_ok());
}

#[test]
fn confinement_refuses_symlinks_that_escape_and_accepts_those_that_stay() {
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().join("media");
    std::fs::create_dir_all(media.join("sub")).unwrap();
    std::fs::write(media.join("sub/a.png"), b"png").unwrap();
    std::fs::write(tmp.path().join("secret.txt"), b"secret").unwrap();
    std::os::unix::fs::symlink(tmp.path().join("secret.txt"), media.join("leak.png")).unwrap();
    std::os::unix::fs::symlink(tmp.path(), media.join("up")).unwrap();
    std::os::unix::fs::symlink(media.join("sub/a.png"), media.join("inside.png")).unwrap();

    let ok = confine(&media, "sub/a.png", 100).unwrap();
    assert_eq!(ok, std::fs::canonicalize(media.join("sub/a.png")).unwrap());
    assert_eq!(
        confine(&media, "inside.png", 100).unwrap(),
        ok,
        "a symlink inside the directory is fine"
    );
    for p in ["leak.png", "up/secret.txt"] {
        let err = confine(&media, p, 100).unwrap_err();
        assert!(matches!(err, MediaError::Escapes { .. }), "{p}: {err}");
        assert!(
            err.to_string().contains("outside browser.media_dir"),
            "{err}"
        );
    }
    assert!(matches!(
        confine(&media, "../secret.txt", 100),
        Err(MediaError::Traversal(_))
    ));
    assert!(matches!(
        confine(&media, tmp.path().join("secret.txt").to_str().unwrap(), 100),
        Err(MediaError::AbsolutePath(_))
    ));
    assert!(matches!(
        confine(&media, "sub", 100),
        Err(MediaError::NotAFile(_))
    ));
    assert!(matches!(
        confine(&media, "nope.png", 100),
        Err(MediaError::Unreadable { .. })
    ));
    assert!(matches!(
        confine(&media, "sub/a.png", 2),
        Err(MediaError::TooLarge { .. })
    ));
}
