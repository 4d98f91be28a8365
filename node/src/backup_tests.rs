use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::node::Node;

const PASS: &str = "correct horse battery staple";

/// A home with a store whose node salt is set, and the directory holding it.
async fn home() -> (tempfile::TempDir, Home) {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(Some(dir.path().join("home")));
    let (node, _identity) = Node::init(home.clone(), "Org A", "UA", PASS).await.unwrap();
    node.store()
        .set_meta(NODE_SALT, "original-salt")
        .await
        .unwrap();
    drop(node);
    (dir, home)
}

/// The store key sealed in `home`'s key file.
fn store_key(home: &Home) -> StoreKey {
    StoreKey::of(&crate::identity::Identity::load(&home.key_path(), PASS).unwrap())
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A tar whose members are (raw name, type, data), names written byte for byte.
fn raw_tar(members: &[(&[u8], tar::EntryType, &[u8])]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, kind, data) in members {
        let mut header = tar::Header::new_gnu();
        header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
        header.set_entry_type(*kind);
        header.set_size(data.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        tar.append(&header, *data).unwrap();
    }
    tar.into_inner().unwrap()
}

/// The members of a real backup of `home`.
async fn members(home: &Home, dir: &Path) -> Vec<(String, Vec<u8>)> {
    let file = dir.join("members.tar");
    create(home, &file, false, &store_key(home)).await.unwrap();
    let mut archive = tar::Archive::new(std::fs::File::open(&file).unwrap());
    let out = archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_str().unwrap().to_string();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (name, data)
        })
        .collect();
    std::fs::remove_file(&file).unwrap();
    out
}

/// Restores `bytes` into a fresh target and returns the error, checking nothing was left.
async fn refused(dir: &Path, bytes: &[u8]) -> String {
    let file = dir.join("bad.backup");
    std::fs::write(&file, bytes).unwrap();
    let before: BTreeSet<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let target = Home::new(Some(dir.join("restored")));
    let err = restore(&file, &target, PASS).await.unwrap_err();
    assert!(matches!(err, BackupError::Invalid { .. }), "{err}");
    assert!(
        !target.dir().exists(),
        "a refused backup left {}",
        target.dir().display()
    );
    let after: BTreeSet<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(before, after, "a refused restore left files behind");
    std::fs::remove_file(&file).unwrap();
    err.to_string()
}

#[tokio::test]
async fn round_trip_restores_the_same_home_with_a_new_node_salt() {
    let (dir, home) = home().await;
    let file = dir.path().join("home.backup");
    let manifest = create(&home, &file, false, &store_key(&home))
        .await
        .unwrap();
    assert_eq!(mode(&file), 0o600);
    assert_eq!(manifest.format, FORMAT);
    assert_eq!(
        manifest.org_key,
        Config::load(&home).unwrap().organisation.key
    );

    let target = Home::new(Some(dir.path().join("restored")));
    let restored = restore(&file, &target, PASS).await.unwrap();
    assert_eq!(restored, manifest);
    assert_eq!(mode(target.dir()), 0o700);
    for name in MEMBERS {
        assert_eq!(mode(&target.dir().join(name)), 0o600, "{name}");
    }
    for path in [Home::config_path, Home::key_path] {
        assert_eq!(
            std::fs::read(path(&home)).unwrap(),
            std::fs::read(path(&target)).unwrap()
        );
    }
    let store = Store::open(&target.db_path(), &store_key(&target))
        .await
        .unwrap();
    assert_eq!(
        store.meta(NODE_SALT).await.unwrap(),
        None,
        "the salt was cloned"
    );
    assert_eq!(
        store.meta("format").await.unwrap().as_deref(),
        Some("coalition-store/1")
    );
    store.close().await;
    // The key still opens with the passphrase, and only with it.
    crate::identity::Identity::load(&target.key_path(), PASS).unwrap();
    assert!(crate::identity::Identity::load(&target.key_path(), "wrong passphrase!!").is_err());
    // An empty existing directory is a valid target too.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    restore(&file, &Home::new(Some(empty.clone())), PASS)
        .await
        .unwrap();
    assert_eq!(mode(&empty), 0o700);
}

#[tokio::test]
async fn an_existing_output_is_kept_unless_forced_and_a_link_is_not_followed() {
    let (dir, home) = home().await;
    let file = dir.path().join("home.backup");
    std::fs::write(&file, b"precious").unwrap();
    let err = create(&home, &file, false, &store_key(&home))
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::Exists(_)), "{err}");
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");

    // A link planted at the output: refused without --force, replaced (not written
    // through) with it.
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"victim").unwrap();
    let link = dir.path().join("link.backup");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    assert!(matches!(
        create(&home, &link, false, &store_key(&home)).await,
        Err(BackupError::Exists(_))
    ));
    create(&home, &link, true, &store_key(&home)).await.unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"victim");
    assert!(!link.symlink_metadata().unwrap().file_type().is_symlink());
    assert_eq!(mode(&link), 0o600);
    // No temporary file is left beside it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

#[tokio::test]
async fn tampered_truncated_and_garbage_backups_are_refused_leaving_nothing() {
    let (dir, home) = home().await;
    let scratch = tempfile::tempdir().unwrap();
    let members = members(&home, dir.path()).await;
    let names: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, [MANIFEST, MEMBERS[0], MEMBERS[1], MEMBERS[2]]);
    let regular = tar::EntryType::Regular;
    let rebuild = |members: &[(String, Vec<u8>)]| {
        let list: Vec<(&[u8], tar::EntryType, &[u8])> = members
            .iter()
            .map(|(n, d)| (n.as_bytes(), regular, d.as_slice()))
            .collect();
        raw_tar(&list)
    };
    // Rebuilt as is, it restores (so each refusal below is for its own reason).
    let good = rebuild(&members);
    let file = scratch.path().join("good.backup");
    std::fs::write(&file, &good).unwrap();
    restore(&file, &Home::new(Some(scratch.path().join("ok"))), PASS)
        .await
        .unwrap();
    std::fs::remove_dir_all(scratch.path().join("ok")).unwrap();
    std::fs::remove_file(&file).unwrap();

    // A store altered after the manifest was written.
    let mut tampered = members.clone();
    let db = &mut tampered[3].1;
    let at = db.len() / 2;
    db[at] ^= 0xff;
    let err = refused(scratch.path(), &rebuild(&tampered)).await;
    assert!(
        err.contains("coalition.db does not match its SHA-256"),
        "{err}"
    );
    // A key file swapped for another of the same size.
    let mut swapped = members.clone();
    swapped[2].1 = vec![b'x'; swapped[2].1.len()];
    let err = refused(scratch.path(), &rebuild(&swapped)).await;
    assert!(err.contains("key.enc does not match"), "{err}");
    // Truncated anywhere.
    for cut in [
        0,
        100,
        512,
        good.len() / 3,
        good.len() / 2,
        good.len() - 2048,
    ] {
        let err = refused(scratch.path(), &good[..cut]).await;
        assert!(err.contains("nothing was restored"), "cut at {cut}: {err}");
    }
    // Garbage.
    let err = refused(scratch.path(), &vec![0x5a; 4096]).await;
    assert!(err.contains("not a usable Coalition backup"), "{err}");
    // Random bytes: the message quotes none of them.
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let err = refused(scratch.path(), &noise).await;
    assert!(err.contains("not a tar archive"), "{err}");
    assert!(
        err.chars().all(|c| c.is_ascii() && !c.is_control()),
        "{err:?}"
    );
    // A manifest of another format.
    let mut future = members.clone();
    future[0].1 = String::from_utf8(future[0].1.clone())
        .unwrap()
        .replace(FORMAT, "coalition-backup/99")
        .into_bytes();
    let err = refused(scratch.path(), &rebuild(&future)).await;
    assert!(err.contains("coalition-backup/99"), "{err}");
    // A member repeated (its first copy checks out).
    let mut twice = members.clone();
    twice.push(members[1].clone());
    let err = refused(scratch.path(), &rebuild(&twice)).await;
    assert!(err.contains("appears twice"), "{err}");
}

#[tokio::test]
async fn path_traversal_and_links_are_refused() {
    let (dir, home) = home().await;
    let scratch = tempfile::tempdir().unwrap();
    let members = members(&home, dir.path()).await;
    let manifest = (
        members[0].0.as_bytes(),
        tar::EntryType::Regular,
        &members[0].1[..],
    );
    let cases: [(&[u8], tar::EntryType, &str); 5] = [
        (b"../escaped", tar::EntryType::Regular, "`..`"),
        (b"sub/../../escaped", tar::EntryType::Regular, "`..`"),
        (b"/tmp/escaped", tar::EntryType::Regular, "absolute path"),
        (b"key.enc", tar::EntryType::Symlink, "not a regular file"),
        (b"coalition.db", tar::EntryType::Link, "not a regular file"),
    ];
    for (name, kind, says) in cases {
        let bytes = raw_tar(&[manifest, (name, kind, b"payload")]);
        let err = refused(scratch.path(), &bytes).await;
        assert!(
            err.contains(says),
            "{}: {err}",
            String::from_utf8_lossy(name)
        );
        // Even as the first member.
        let err = refused(scratch.path(), &raw_tar(&[(name, kind, b"x")])).await;
        assert!(
            err.contains(says),
            "{}: {err}",
            String::from_utf8_lossy(name)
        );
    }
    assert!(!scratch.path().parent().unwrap().join("escaped").exists());
}

#[tokio::test]
async fn a_non_empty_target_is_refused_and_left_alone() {
    let (dir, home) = home().await;
    let file = dir.path().join("home.backup");
    create(&home, &file, false, &store_key(&home))
        .await
        .unwrap();
    let before: Vec<_> = MEMBERS
        .iter()
        .map(|n| std::fs::read(home.dir().join(n)).unwrap())
        .collect();
    let err = restore(&file, &home, PASS).await.unwrap_err();
    assert!(matches!(err, BackupError::TargetNotEmpty(_)), "{err}");
    let after: Vec<_> = MEMBERS
        .iter()
        .map(|n| std::fs::read(home.dir().join(n)).unwrap())
        .collect();
    assert_eq!(before, after);
    // A file (not a directory) as target, and a directory holding anything.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), b"mine").unwrap();
    assert!(matches!(
        restore(&file, &Home::new(Some(other.clone())), PASS).await,
        Err(BackupError::TargetNotEmpty(_))
    ));
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 1);
    assert!(matches!(
        restore(&file, &Home::new(Some(other.join("notes.txt"))), PASS).await,
        Err(BackupError::TargetNotEmpty(_))
    ));
}

/// The store in a backup is as encrypted as the home's: no plain SQLite header and no
/// text of any record in the whole backup file. A backup made before stores were
/// encrypted (its store in clear) restores into an encrypted home; a wrong passphrase
/// restores nothing.
#[tokio::test]
async fn backups_hold_the_store_encrypted_and_old_clear_ones_are_encrypted_on_restore() {
    use sqlx::{ConnectOptions, Connection};
    let (dir, home) = home().await;
    let key = store_key(&home);
    let marker = "BACKUP-MARKER-e51f02";
    let store = Store::open(&home.db_path(), &key).await.unwrap();
    store.set_meta("note", marker).await.unwrap();
    store.close().await;
    let file = dir.path().join("home.backup");
    create(&home, &file, false, &key).await.unwrap();
    let bytes = std::fs::read(&file).unwrap();
    for needle in [marker.as_bytes(), b"SQLite format 3", b"CREATE TABLE"] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "{} in the backup",
            String::from_utf8_lossy(needle)
        );
    }

    // The same home's backup with its store in clear, as an old backup holds it.
    let mut members = members(&home, dir.path()).await;
    let plain = dir.path().join("plain.db");
    let mut c = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(home.db_path())
        .create_if_missing(true)
        .pragma(
            "key",
            format!(
                "\"x'{}'\"",
                hex::encode(*Identity::load(&home.key_path(), PASS).unwrap().store_key())
            ),
        )
        .pragma("cipher_page_size", crate::store::cipher::CIPHER_PAGE_SIZE)
        .pragma("cipher_hmac_algorithm", crate::store::cipher::CIPHER_HMAC)
        .connect()
        .await
        .unwrap();
    for sql in [
        format!("ATTACH DATABASE '{}' AS plain KEY ''", plain.display()),
        "SELECT sqlcipher_export('plain')".into(),
        format!("PRAGMA plain.application_id = {}", store::APPLICATION_ID),
        "DETACH DATABASE plain".into(),
    ] {
        sqlx::query(&sql).execute(&mut c).await.unwrap();
    }
    c.close().await.unwrap();
    let clear = std::fs::read(&plain).unwrap();
    assert!(clear.starts_with(store::PLAIN_HEADER));
    let mut manifest: Manifest = serde_json::from_slice(&members[0].1).unwrap();
    manifest.members.insert(
        MEMBERS[2].into(),
        Member {
            size: clear.len() as u64,
            sha256: hex::encode(Sha256::digest(&clear)),
        },
    );
    members[0].1 = serde_json::to_vec(&manifest).unwrap();
    members[3].1 = clear;
    let list: Vec<(&[u8], tar::EntryType, &[u8])> = members
        .iter()
        .map(|(n, d)| (n.as_bytes(), tar::EntryType::Regular, d.as_slice()))
        .collect();
    let old = dir.path().join("old.backup");
    std::fs::write(&old, raw_tar(&list)).unwrap();

    let wrong = Home::new(Some(dir.path().join("wrong")));
    let err = restore(&old, &wrong, "not the passphrase!!")
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::Key { .. }), "{err}");
    assert!(!wrong.dir().exists());

    let target = Home::new(Some(dir.path().join("restored")));
    restore(&old, &target, PASS).await.unwrap();
    assert!(store::is_encrypted(&target.db_path()).unwrap());
    let restored = Store::open(&target.db_path(), &key).await.unwrap();
    assert_eq!(
        restored.meta("note").await.unwrap().as_deref(),
        Some(marker)
    );
    restored.close().await;
    let names: Vec<_> = std::fs::read_dir(target.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.ends_with(".encrypting")),
        "{names:?}"
    );
}
