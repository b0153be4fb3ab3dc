//! Presets, as a new user meets them: `zdeploy init` on a framework's source
//! names the framework and writes a config with its preset; a deploy with it
//! serves the framework's public folder, links its shared paths and files,
//! makes its writable paths group-writable, runs its commands in the
//! framework's order (recorded by stand-in `php`, `composer` and `npm`
//! scripts on PATH, as the frameworks themselves cannot be installed here),
//! and reuses `vendor/` while `composer.lock` is unchanged.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::support::{Site, Zdeploy, write_files};

/// Stand-ins for the tools framework commands call: each appends its name
/// and arguments to `$PRESET_LOG`. `composer install` makes `vendor/` with
/// the framework CLIs that live there; `npm ci` makes `node_modules/`.
fn stand_ins(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = r#"echo "$(basename "$0") $*" >> "$PRESET_LOG""#;
    // Asked whether migrations are pending, they say so.
    let php = format!(
        "{log}\ncase \"$*\" in *migrate:status*) echo '2024_01_01_000000_orders Pending';; \
         *setup:db:status*) exit 2;; esac"
    );
    let vendor_tool = format!("{log}\ncase \"$*\" in *:status*) echo 'system.site';; esac");
    let scripts = [
        ("php", php),
        (
            "composer",
            format!(
                "{log}\nmkdir -p vendor/bin\necho '<?php' > vendor/autoload.php\n\
                 for tool in drush typo3; do cp \"$(dirname \"$0\")/vendor-tool\" vendor/bin/$tool; done"
            ),
        ),
        // What composer puts in vendor/bin: a framework CLI, logged by name.
        ("vendor-tool", vendor_tool),
        (
            "npm",
            format!(
                "{log}\n[ \"$1\" = ci ] && mkdir -p node_modules/x && echo x > node_modules/x/index.js; true"
            ),
        ),
        ("yarn", log.to_string()),
        ("pnpm", log.to_string()),
    ];
    for (name, body) in scripts {
        let path = bin.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

fn composer_json(package: &str) -> String {
    format!(
        "{{\"name\": \"acme/site\", \"require\": {{\"php\": \">=8.1\", \"{package}\": \"*\"}}}}"
    )
}

/// What each preset promises for a minimal source of its framework.
struct Case {
    preset: &'static str,
    framework: &'static str,
    files: Vec<(&'static str, String)>,
    /// The folder served, or "" for the release itself.
    public: &'static str,
    shared: &'static [&'static str],
    shared_files: &'static [&'static str],
    writable: &'static [&'static str],
    /// Commands in the order they must run: build steps, then after_switch.
    commands: &'static [&'static str],
}

const COMPOSER: &str =
    "composer install --no-dev --prefer-dist --optimize-autoloader --no-interaction";

/// Presets whose composer installs outside `vendor/` too (Drupal's web/core,
/// TYPO3's public/, Magento's base files, WordPress core): a reused vendor/
/// alone would leave those missing, so composer runs on every deploy.
const COMPOSER_EVERY_DEPLOY: &[&str] = &["wordpress", "drupal", "magento", "typo3"];

fn cases() -> Vec<Case> {
    let php = |path: &'static str| (path, "<?php echo 'ok';".to_string());
    let lock = ("composer.lock", "{\"packages\": []}".to_string());
    vec![
        Case {
            preset: "laravel",
            framework: "Laravel",
            files: vec![
                ("composer.json", composer_json("laravel/framework")),
                lock.clone(),
                php("artisan"),
                php("public/index.php"),
                (
                    "package.json",
                    "{\"scripts\": {\"build\": \"vite build\"}}".into(),
                ),
                ("package-lock.json", "{}".into()),
            ],
            public: "public",
            shared: &["storage"],
            shared_files: &[".env"],
            writable: &["bootstrap/cache"],
            commands: &[
                COMPOSER,
                "npm ci",
                "npm run build",
                "php artisan storage:link",
                "php artisan config:cache",
                "php artisan route:cache",
                "php artisan view:cache",
                "php artisan event:cache",
                "php artisan migrate:status --no-ansi",
                "php artisan migrate --force",
                "php artisan queue:restart",
            ],
        },
        Case {
            preset: "symfony",
            framework: "Symfony",
            files: vec![
                ("composer.json", composer_json("symfony/framework-bundle")),
                lock.clone(),
                php("bin/console"),
                php("config/bundles.php"),
                php("public/index.php"),
            ],
            public: "public",
            shared: &["var/log"],
            shared_files: &[".env.local"],
            writable: &["var"],
            commands: &[
                COMPOSER,
                "php bin/console cache:clear --no-warmup",
                "php bin/console cache:warmup",
            ],
        },
        Case {
            preset: "wordpress",
            framework: "WordPress",
            files: vec![
                php("wp-settings.php"),
                php("index.php"),
                php("wp-content/index.php"),
            ],
            public: "",
            shared: &["wp-content/uploads"],
            shared_files: &["wp-config.php"],
            writable: &[],
            commands: &[],
        },
        Case {
            preset: "drupal",
            framework: "Drupal",
            files: vec![
                ("composer.json", composer_json("drupal/core-recommended")),
                lock.clone(),
                php("web/index.php"),
                php("web/sites/default/settings.php"),
            ],
            public: "web",
            shared: &["web/sites/default/files"],
            shared_files: &["web/sites/default/settings.local.php"],
            writable: &[],
            commands: &[
                COMPOSER,
                "drush updatedb:status --format=list",
                "drush updatedb --yes",
                "drush config:status --format=list",
                "drush config:import --yes",
                "drush cache:rebuild",
                "drush deploy:hook --yes",
            ],
        },
        Case {
            preset: "magento",
            framework: "Magento",
            files: vec![
                (
                    "composer.json",
                    composer_json("magento/product-community-edition"),
                ),
                lock.clone(),
                php("bin/magento"),
                php("pub/index.php"),
            ],
            public: "pub",
            shared: &["pub/media", "var/log"],
            shared_files: &["app/etc/env.php"],
            writable: &["generated", "pub/static"],
            commands: &[
                COMPOSER,
                "php bin/magento setup:di:compile",
                "php bin/magento setup:static-content:deploy --force",
                "php bin/magento setup:db:status",
                "php bin/magento setup:upgrade --keep-generated",
                "php bin/magento cache:flush",
            ],
        },
        Case {
            preset: "craft",
            framework: "Craft CMS",
            files: vec![
                ("composer.json", composer_json("craftcms/cms")),
                lock.clone(),
                php("craft"),
                php("web/index.php"),
            ],
            public: "web",
            shared: &["storage"],
            shared_files: &[".env"],
            writable: &["web/cpresources"],
            commands: &[
                COMPOSER,
                "php craft up --interactive=0",
                "php craft clear-caches/data",
            ],
        },
        Case {
            preset: "typo3",
            framework: "TYPO3",
            files: vec![
                ("composer.json", composer_json("typo3/cms-core")),
                lock.clone(),
                php("public/index.php"),
            ],
            public: "public",
            shared: &["public/fileadmin", "var/log"],
            shared_files: &["config/system/additional.php"],
            writable: &["public/typo3temp"],
            commands: &[COMPOSER, "typo3 extension:setup", "typo3 cache:flush"],
        },
        Case {
            preset: "shopware",
            framework: "Shopware",
            files: vec![
                ("composer.json", composer_json("shopware/core")),
                lock.clone(),
                php("bin/console"),
                php("public/index.php"),
            ],
            public: "public",
            shared: &["files", "public/media", "config/jwt"],
            shared_files: &[".env.local", "install.lock"],
            writable: &["public/theme"],
            commands: &[
                COMPOSER,
                "php bin/console database:migrate --all",
                "php bin/console theme:compile",
                "php bin/console assets:install",
                "php bin/console cache:clear",
                "php bin/console cache:warmup",
            ],
        },
        Case {
            preset: "codeigniter",
            framework: "CodeIgniter",
            files: vec![
                ("composer.json", composer_json("codeigniter4/framework")),
                lock.clone(),
                php("spark"),
                php("public/index.php"),
            ],
            public: "public",
            shared: &["writable/uploads", "writable/logs"],
            shared_files: &[".env"],
            writable: &["writable"],
            commands: &[COMPOSER, "php spark migrate --all", "php spark cache:clear"],
        },
        Case {
            preset: "mediawiki",
            framework: "MediaWiki",
            // A release tarball: vendor/ included, no composer.lock, and no
            // LocalSettings.php until the installer ran.
            files: vec![
                php("index.php"),
                php("includes/MediaWiki.php"),
                php("maintenance/update.php"),
                php("vendor/autoload.php"),
            ],
            public: "",
            shared: &["images"],
            shared_files: &["LocalSettings.php"],
            writable: &["cache"],
            commands: &[],
        },
    ]
}

fn read_log(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn every_preset_is_found_by_init_and_applied_by_a_deploy() {
    for case in cases() {
        let site = Site::new();
        let bin = stand_ins(site.dir.path());
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        let log = site.path("commands.log");
        let source = site.path(case.preset);
        let files: Vec<(&str, &str)> = case.files.iter().map(|(p, c)| (*p, c.as_str())).collect();
        write_files(&source, &files);
        let config = site.path("zdeploy.toml");
        let found = Zdeploy::new()
            .args(["--config"])
            .arg(&config)
            .arg("init")
            .arg(&source)
            .success();
        assert!(
            found.stdout.contains(&format!("found {}", case.framework))
                && found
                    .stdout
                    .contains(&format!("preset = \"{}\"", case.preset)),
            "{}: {}",
            case.preset,
            found.stdout
        );
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(
            text.contains(&format!("\npreset = \"{}\"\n", case.preset)),
            "{text}"
        );
        // The user sets what init could not decide: the webroot.
        let text = text.replace("/var/www/webroot", &site.webroot.display().to_string());
        std::fs::write(&config, &text).unwrap();
        let deploy = || {
            Zdeploy::new()
                .args(["deploy", "--config"])
                .arg(&config)
                .args(["--settle", "0s"])
                .env("PATH", &path)
                .env("PRESET_LOG", &log)
                .success()
        };
        deploy();
        let logged = read_log(&log);
        assert_eq!(logged, case.commands, "{}: commands in order", case.preset);

        let context = site.context();
        let served = context.join(case.public);
        assert!(
            served.join("index.php").is_file(),
            "{}: {}",
            case.preset,
            served.display()
        );
        let store = site.webroot.join(".zdeploy/ROOT/shared");
        for shared in case.shared.iter().chain(case.shared_files) {
            let link = std::fs::read_link(context.join(shared))
                .unwrap_or_else(|e| panic!("{}: {shared} is a link: {e}", case.preset));
            assert!(
                link.to_string_lossy().contains(".zdeploy/ROOT/shared"),
                "{}: {shared} -> {}",
                case.preset,
                link.display()
            );
        }
        for folder in case.shared {
            assert!(store.join(folder).is_dir(), "{}: {folder}", case.preset);
        }
        for file in case.shared_files {
            assert!(
                !store.join(file).is_dir(),
                "{}: a shared file nobody wrote is not made a folder: {file}",
                case.preset
            );
        }
        for writable in case.writable {
            let mode = std::fs::metadata(context.join(writable))
                .unwrap_or_else(|e| panic!("{}: {writable}: {e}", case.preset))
                .permissions()
                .mode();
            assert_eq!(
                mode & 0o070,
                0o070,
                "{}: {writable} is group-writable",
                case.preset
            );
        }

        // A second deploy with only the code changed: vendor/ is reused,
        // so composer does not run again (where it only fills vendor/); the
        // rest runs as before.
        std::fs::remove_file(&log).ok();
        let entry = if case.public.is_empty() {
            "index.php".to_string()
        } else {
            format!("{}/index.php", case.public)
        };
        std::fs::write(source.join(&entry), "<?php echo 'v2';").unwrap();
        let first = site.webroot.join(site.live_release());
        deploy();
        // Steps that say what they write leave every other unchanged file a
        // hard link to the live release's; Magento's composer may write
        // anywhere, so its files all get copies of their own first.
        let second = site.webroot.join(site.live_release());
        let linked = case
            .files
            .iter()
            .filter(|(path, _)| *path != entry)
            .filter(|(path, _)| {
                let inode = |release: &Path| {
                    std::fs::symlink_metadata(release.join(path))
                        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                        .ok()
                };
                inode(&first).is_some() && inode(&first) == inode(&second)
            })
            .count();
        if case.preset == "magento" {
            assert_eq!(linked, 0, "magento: nothing stays linked");
        } else {
            assert!(
                linked > 0,
                "{}: unchanged files stay hard links",
                case.preset
            );
        }
        let expected: Vec<&str> = case
            .commands
            .iter()
            .copied()
            .filter(|c| {
                (*c != COMPOSER || COMPOSER_EVERY_DEPLOY.contains(&case.preset)) && *c != "npm ci"
            })
            .collect();
        assert_eq!(read_log(&log), expected, "{}: second deploy", case.preset);
        assert_eq!(
            std::fs::read_to_string(context.join(&entry)).unwrap(),
            "<?php echo 'v2';"
        );
    }
}

#[test]
fn mediawiki_runs_its_updater_once_it_is_installed_and_init_refuses_to_overwrite() {
    let site = Site::new();
    let bin = stand_ins(site.dir.path());
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let log = site.path("commands.log");
    let source = site.path("wiki");
    write_files(
        &source,
        &[
            ("index.php", "<?php"),
            ("includes/MediaWiki.php", "<?php"),
            ("maintenance/update.php", "<?php"),
        ],
    );
    let config = site.path("zdeploy.toml");
    Zdeploy::new()
        .arg("--config")
        .arg(&config)
        .arg("init")
        .arg(&source)
        .success();
    let again = Zdeploy::new()
        .arg("--config")
        .arg(&config)
        .arg("init")
        .arg(&source)
        .fails_with(2);
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("/var/www/webroot", &site.webroot.display().to_string());
    std::fs::write(&config, text).unwrap();
    let deploy = |version: &str| {
        std::fs::write(source.join("index.php"), format!("<?php // {version}")).unwrap();
        Zdeploy::new()
            .args(["deploy", "--config"])
            .arg(&config)
            .args(["--settle", "0s"])
            .env("PATH", &path)
            .env("PRESET_LOG", &log)
            .success();
    };
    deploy("v1");
    assert!(read_log(&log).is_empty(), "no updater before the install");
    // The installer writes LocalSettings.php through the link, into the
    // shared folder; from then on every deploy runs the updater.
    std::fs::write(
        site.context().join("LocalSettings.php"),
        "<?php $wgSitename = 'w';",
    )
    .unwrap();
    assert!(
        site.webroot
            .join(".zdeploy/ROOT/shared/LocalSettings.php")
            .is_file()
    );
    deploy("v2");
    assert_eq!(read_log(&log), ["php maintenance/update.php --quick"]);
    assert_eq!(site.read("LocalSettings.php"), "<?php $wgSitename = 'w';");

    // --force replaces the config; a source with no known framework is
    // said so, and serves its top folder.
    let plain = site.path("plain");
    write_files(&plain, &[("index.html", "hi")]);
    let out = Zdeploy::new()
        .arg("--config")
        .arg(&config)
        .args(["init", "--force"])
        .arg(&plain)
        .success();
    assert!(out.stdout.contains("no framework found"), "{}", out.stdout);
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(!text.contains("\npreset ="), "{text}");
}

#[test]
fn preset_values_give_way_to_the_apps_own_keys_and_unknown_presets_are_refused() {
    let site = Site::new();
    let bin = stand_ins(site.dir.path());
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let log = site.path("commands.log");
    let app = site.path("app");
    write_files(
        &app,
        &[
            ("composer.json", &composer_json("laravel/framework")),
            ("artisan", "<?php"),
            ("html/index.php", "<?php"),
        ],
    );
    site.deploy_by_config(
        &app,
        "preset = \"laravel\"\ngroup = \"www-data\"\npublic = \"html\"\nbuild = [\"php artisan about\"]\nafter_switch = []",
    )
    .env("PATH", &path)
    .env("PRESET_LOG", &log)
    .success();
    assert_eq!(
        read_log(&log),
        ["php artisan about"],
        "the app's build wins, no after_switch"
    );
    assert!(site.context().join("html/index.php").is_file());
    assert!(
        std::fs::read_link(site.context().join("storage")).is_ok(),
        "the preset's shared paths still apply"
    );
    let out = site
        .deploy_by_config(&app, "preset = \"rails\"")
        .fails_with(2);
    assert!(
        out.stderr
            .contains("zdeploy.toml:4: apps.a.preset: unknown preset 'rails'; presets: laravel"),
        "{}",
        out.stderr
    );
}
