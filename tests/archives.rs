//! Deploying from archives and folders.

use crate::support::archive::{self, Item};
use crate::support::{Site, write_files};

const APP: &[Item<'static>] = &[
    Item::Dir("app/"),
    Item::File("app/index.php", b"<?php echo 'hi';"),
    Item::Dir("app/levels/"),
    Item::File("app/levels/1.json", b"{\"level\":1}"),
    Item::Symlink("app/current-level.json", "levels/1.json"),
];

#[test]
fn every_archive_format_deploys_and_a_single_top_folder_is_unwrapped() {
    type Build = fn(&std::path::Path, &[Item<'_>]);
    let formats: [(&str, Build); 5] = [
        ("app.tar", archive::tar),
        ("app.tar.gz", archive::tar_gz),
        ("app.tgz", archive::tar_gz),
        ("app.tar.zst", archive::tar_zst),
        ("app.zip", archive::zip),
    ];
    for (name, build) in formats {
        let site = Site::new();
        let path = site.path(name);
        build(&path, APP);
        site.deploy(&path).success();
        assert_eq!(site.read("index.php"), "<?php echo 'hi';", "{name}");
        assert_eq!(
            site.read("current-level.json"),
            "{\"level\":1}",
            "{name}: symlink inside works"
        );
        assert!(
            !site.context().join("app").exists(),
            "{name}: top folder unwrapped"
        );
    }
}

#[test]
fn an_archive_with_several_top_entries_is_not_unwrapped() {
    let site = Site::new();
    let path = site.path("flat.tar.gz");
    archive::tar_gz(
        &path,
        &[
            Item::File("index.php", b"x"),
            Item::Dir("app/"),
            Item::File("app/a.php", b"a"),
        ],
    );
    site.deploy(&path).success();
    assert_eq!(site.read("index.php"), "x");
    assert_eq!(site.read("app/a.php"), "a");
}

#[test]
fn the_same_archive_twice_is_recognised_by_content() {
    let site = Site::new();
    let first = site.path("one.zip");
    let second = site.path("two.zip");
    archive::zip(&first, APP);
    archive::zip(&second, APP);
    site.deploy(&first).success();
    let out = site.deploy(&second).success();
    assert!(out.stdout.contains("unchanged"), "{}", out.stdout);
    assert_eq!(
        site.releases().len(),
        1,
        "the unchanged release was not kept"
    );
}

#[test]
fn archives_over_http_are_downloaded() {
    let site = Site::new();
    let served = site.path("served");
    std::fs::create_dir(&served).unwrap();
    archive::tar_gz(&served.join("app.tar.gz"), APP);
    let server = crate::support::http::FileServer::start(&served);
    site.deploy(format!("http://{}/app.tar.gz", server.address))
        .success();
    assert_eq!(site.read("index.php"), "<?php echo 'hi';");
    let out = site
        .deploy(format!("http://{}/missing.tar.gz", server.address))
        .fails_with(4);
    assert!(out.stderr.contains("cannot download"), "{}", out.stderr);
    assert!(out.stderr.contains("404"), "{}", out.stderr);
}

#[test]
fn folders_deploy_without_their_git_folder() {
    let site = Site::new();
    let app = site.path("app");
    write_files(
        &app,
        &[
            ("index.php", "folder"),
            ("css/site.css", "body{}"),
            ("notes.txt", "n"),
        ],
    );
    std::fs::create_dir_all(app.join("nested/.git")).unwrap();
    std::fs::write(app.join("nested/.git/keep"), "nested .git is content").unwrap();
    site.deploy(&app)
        .args(["--source-kind", "folder"])
        .success();
    assert_eq!(site.read("index.php"), "folder");
    assert_eq!(site.read("css/site.css"), "body{}");
    assert!(site.context().join("nested/.git/keep").exists());

    std::fs::create_dir(app.join(".git")).unwrap();
    std::fs::write(app.join(".git/secret"), "x").unwrap();
    std::fs::write(app.join("index.php"), "folder 2").unwrap();
    site.deploy(&app)
        .args(["--source-kind", "folder"])
        .success();
    assert_eq!(site.read("index.php"), "folder 2");
    assert!(
        !site.context().join(".git").exists(),
        "a top-level .git is never deployed"
    );
}

#[test]
fn a_folder_that_contains_the_webroot_is_refused() {
    let site = Site::new();
    let out = site.deploy(site.dir.path()).fails_with(2);
    assert!(
        out.stderr.contains("contains the webroot"),
        "{}",
        out.stderr
    );
    assert!(site.releases().is_empty());
}

#[test]
fn file_modes_are_kept() {
    use std::os::unix::fs::PermissionsExt;
    let site = Site::new();
    let app = site.path("app");
    write_files(&app, &[("bin/run.sh", "#!/bin/sh\n"), ("index.php", "x")]);
    std::fs::set_permissions(
        app.join("bin/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    site.deploy(&app).success();
    let mode = std::fs::metadata(site.context().join("bin/run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
}

/// Run a Python script (the archives below are built with Python's zlib,
/// which makes gigabytes of zeros in seconds).
fn python(script: &str, args: &[&std::path::Path]) {
    let started = std::time::Instant::now();
    let status = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .status()
        .expect("python3 runs");
    assert!(status.success(), "python3 failed");
    eprintln!("built {:?} in {:?}", args, started.elapsed());
}

#[test]
fn a_decompression_bomb_is_refused_with_the_defaults_and_real_archives_still_deploy() {
    let site = Site::new();
    let app = site.path("app");
    write_files(&app, &[("index.php", "v1")]);
    site.deploy(&app).success();
    let before = site.snapshot();

    // 8 GiB of zeros in a zip of about 8 MB: one deflated MiB repeated
    // (each ends in a full flush, so the copies join into one stream).
    let bomb = site.path("bomb.zip");
    python(
        "import struct, sys, zlib\n\
         mib, count = bytes(1 << 20), 8192\n\
         c = zlib.compressobj(9, zlib.DEFLATED, -15)\n\
         chunk = c.compress(mib) + c.flush(zlib.Z_FULL_FLUSH)\n\
         tail = c.flush(zlib.Z_FINISH)\n\
         crc = 0\n\
         for _ in range(count): crc = zlib.crc32(mib, crc)\n\
         size, packed = len(mib) * count, len(chunk) * count + len(tail)\n\
         name = b'app/zeros.bin'\n\
         extra = struct.pack('<HHQQ', 1, 16, size, packed)\n\
         with open(sys.argv[1], 'wb') as f:\n\
         \x20   f.write(struct.pack('<IHHHHHIIIHH', 0x04034b50, 45, 0, 8, 0, 0x21, crc, 0xffffffff, 0xffffffff, len(name), len(extra)) + name + extra)\n\
         \x20   for _ in range(count): f.write(chunk)\n\
         \x20   f.write(tail)\n\
         \x20   cd_offset = f.tell()\n\
         \x20   central = struct.pack('<IHHHHHHIIIHHHHHII', 0x02014b50, 45, 45, 0, 8, 0, 0x21, crc, 0xffffffff, 0xffffffff, len(name), len(extra), 0, 0, 0, 0o100644 << 16, 0) + name + extra\n\
         \x20   f.write(central)\n\
         \x20   f.write(struct.pack('<IHHHHIIH', 0x06054b50, 0, 0, 1, 1, len(central), cd_offset, 0))\n",
        &[&bomb],
    );
    let listed = std::process::Command::new("python3")
        .args(["-c", "import sys, zipfile; i = zipfile.ZipFile(sys.argv[1]).infolist()[0]; print(i.file_size)"])
        .arg(&bomb)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout).trim(),
        (8u64 << 30).to_string(),
        "a valid zip of 8 GiB"
    );
    let packed = std::fs::metadata(&bomb).unwrap().len();
    assert!(packed < 9 << 20, "the bomb is small: {packed} bytes");
    let out = site.deploy(&bomb).fails_with(4);
    assert!(
        out.stderr.contains("likely decompression bomb")
            && out.stderr.contains("max_archive_ratio"),
        "{}",
        out.stderr
    );
    assert_eq!(site.snapshot(), before, "the webroot is untouched");
    let leftovers: Vec<_> = std::fs::read_dir(&site.webroot)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ROOT_") && !before.keys().any(|k| k.starts_with(n)))
        .collect();
    assert!(leftovers.is_empty(), "no partial release: {leftovers:?}");

    // Compressible but real: 300 MiB of zeros passes once the ratio allows it.
    let zeros = site.path("zeros.zip");
    python(
        "import sys, zipfile\n\
         with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:\n\
         \x20   with z.open('app/index.php', 'w') as f: f.write(b'<?php echo 2;')\n\
         \x20   with z.open('app/disk.img', 'w', force_zip64=True) as f:\n\
         \x20       for _ in range(300): f.write(bytes(1 << 20))\n",
        &[&zeros],
    );
    site.deploy(&zeros).fails_with(4);
    let out = site.deploy_by_config(&zeros, "max_archive_ratio = 0");
    out.args(["--settle", "0s"]).success();
    assert_eq!(
        std::fs::metadata(site.context().join("disk.img"))
            .unwrap()
            .len(),
        300 << 20
    );

    // WordPress (Debian's package, links followed) and a 50,000-file tree
    // of 200 MiB: real archives deploy with the defaults.
    let wordpress = site.path("wordpress.zip");
    python(
        "import os, sys, zipfile\n\
         root = '/usr/share/wordpress'\n\
         with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:\n\
         \x20   for dirpath, dirs, files in os.walk(root, followlinks=True):\n\
         \x20       for name in files:\n\
         \x20           path = os.path.join(dirpath, name)\n\
         \x20           if os.path.isfile(path): z.write(path, 'wordpress/' + os.path.relpath(path, root))\n",
        &[&wordpress],
    );
    site.deploy(&wordpress).success();
    assert!(site.context().join("wp-settings.php").is_file());
    let tree = site.path("vendor.tar.gz");
    python(
        "import io, random, sys, tarfile\n\
         rng = random.Random(7)\n\
         words = [''.join(rng.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(rng.randint(3, 12))) for _ in range(5000)]\n\
         with tarfile.open(sys.argv[1], 'w:gz') as t:\n\
         \x20   for i in range(50000):\n\
         \x20       body = ('<?php\\n' + ' '.join(rng.choices(words, k=560)) + '\\n').encode()\n\
         \x20       info = tarfile.TarInfo(f'vendor/pkg{i // 100}/src/File{i}.php')\n\
         \x20       info.size = len(body)\n\
         \x20       t.addfile(info, io.BytesIO(body))\n",
        &[&tree],
    );
    site.deploy(&tree).success();
    // Its single top folder, vendor/, is unwrapped.
    let count = walkdir::WalkDir::new(site.context())
        .into_iter()
        .filter(|e| e.as_ref().is_ok_and(|e| e.file_type().is_file()))
        .count();
    assert_eq!(count, 50_000);
}
