//! Presets: what each PHP framework needs from a deploy (the folder served,
//! shared and writable paths, build steps in the framework's order, commands
//! after the switch, dependency folders reused), as defaults of an app's
//! keys. Any key the app sets itself wins over its preset's.

/// A build step of a preset.
#[derive(Clone, Copy)]
pub struct PresetStep {
    pub run: &'static str,
    /// Skipped when this folder was reused from the live release.
    pub unless_reused: Option<&'static str>,
    /// Run only when the release has this file.
    pub if_exists: Option<&'static str>,
    /// What it writes in the release (the rest is read-only while it
    /// runs); `None` when that cannot be known (composer installers that
    /// put packages where the app's composer.json says).
    pub writes: Option<&'static [&'static str]>,
    /// Acts on the database every host shares: in a fleet, run once, on the
    /// builder.
    pub once: bool,
    /// Runs last, inside a maintenance window that lasts until the switch.
    pub maintenance: bool,
    /// Runs (and opens its window) only when this command exits 0.
    pub when: Option<&'static str>,
}

/// A command of a preset run after the switch.
#[derive(Clone, Copy)]
pub struct PresetCommand {
    pub run: &'static str,
    pub once: bool,
}

/// An after_switch command every host runs (a cache of its own).
const fn on_every_host(run: &'static str) -> PresetCommand {
    PresetCommand { run, once: false }
}

/// An after_switch command that acts on what hosts share.
const fn once_after_switch(run: &'static str) -> PresetCommand {
    PresetCommand { run, once: true }
}

pub struct Preset {
    pub name: &'static str,
    /// The framework's own name, for messages.
    pub framework: &'static str,
    pub public: Option<&'static str>,
    pub shared: &'static [&'static str],
    pub shared_files: &'static [&'static str],
    pub writable: &'static [&'static str],
    pub build: &'static [PresetStep],
    pub after_switch: &'static [PresetCommand],
    /// (folder, key file) pairs; several keys may name one folder.
    pub reuse: &'static [(&'static str, &'static str)],
    /// `init` recognises the framework by one of these composer packages…
    pub packages: &'static [&'static str],
    /// …or by all of these files.
    pub files: &'static [&'static str],
    /// What the operator still has to do, for `init`'s comments.
    pub next: &'static str,
}

const COMPOSER_INSTALL: PresetStep = PresetStep {
    run: "composer install --no-dev --prefer-dist --optimize-autoloader --no-interaction",
    unless_reused: Some("vendor"),
    if_exists: Some("composer.json"),
    writes: Some(&["vendor"]),
    once: false,
    maintenance: false,
    when: None,
};

/// Composer that also installs outside `vendor/` (Drupal's core and
/// contrib under `web/`, TYPO3's `public/`, WordPress core where the app
/// says): it runs on every deploy, as a reused `vendor/` alone would leave
/// those folders missing; with `vendor/` reused it only fills them from
/// composer's cache.
const fn composer_installing_into(writes: Option<&'static [&'static str]>) -> PresetStep {
    PresetStep {
        unless_reused: None,
        writes,
        ..COMPOSER_INSTALL
    }
}

/// A step that writes `writes` only.
const fn run_writing(command: &'static str, writes: &'static [&'static str]) -> PresetStep {
    PresetStep {
        run: command,
        unless_reused: None,
        if_exists: None,
        writes: Some(writes),
        once: false,
        maintenance: false,
        when: None,
    }
}

/// A step that changes the database every host shares (a migration),
/// writing `writes` only: a fleet runs it once, on the builder.
const fn migration(command: &'static str, writes: &'static [&'static str]) -> PresetStep {
    PresetStep {
        once: true,
        ..run_writing(command, writes)
    }
}

/// A migration the framework can say is pending: it runs only then, last,
/// in a maintenance window until the switch (a migration that renames or
/// drops a column would break the release still serving). A check that
/// fails counts as pending: when in doubt, migrate.
const fn migration_when_pending(
    command: &'static str,
    writes: &'static [&'static str],
    pending: &'static str,
) -> PresetStep {
    PresetStep {
        maintenance: true,
        when: Some(pending),
        ..migration(command, writes)
    }
}

const VENDOR: (&str, &str) = ("vendor", "composer.lock");

/// Front-end dependencies by the lock file the app has, then its build.
const NODE_BUILD: [PresetStep; 4] = [
    PresetStep {
        run: "npm ci",
        unless_reused: Some("node_modules"),
        if_exists: Some("package-lock.json"),
        writes: Some(&["node_modules"]),
        once: false,
        maintenance: false,
        when: None,
    },
    PresetStep {
        run: "yarn install --frozen-lockfile",
        unless_reused: Some("node_modules"),
        if_exists: Some("yarn.lock"),
        writes: Some(&["node_modules"]),
        once: false,
        maintenance: false,
        when: None,
    },
    PresetStep {
        run: "pnpm install --frozen-lockfile",
        unless_reused: Some("node_modules"),
        if_exists: Some("pnpm-lock.yaml"),
        writes: Some(&["node_modules"]),
        once: false,
        maintenance: false,
        when: None,
    },
    // Vite writes public/build, Mix public/js, public/css and its manifest.
    PresetStep {
        run: "npm run build",
        unless_reused: None,
        if_exists: Some("package.json"),
        writes: Some(&["public", "node_modules"]),
        once: false,
        maintenance: false,
        when: None,
    },
];

const NODE_MODULES: [(&str, &str); 3] = [
    ("node_modules", "package-lock.json"),
    ("node_modules", "yarn.lock"),
    ("node_modules", "pnpm-lock.yaml"),
];

pub const PRESETS: &[Preset] = &[
    Preset {
        name: "laravel",
        framework: "Laravel",
        public: Some("public"),
        shared: &["storage"],
        shared_files: &[".env"],
        writable: &["bootstrap/cache"],
        build: &[
            // Its scripts run package:discover into bootstrap/cache.
            PresetStep {
                writes: Some(&["vendor", "bootstrap/cache"]),
                ..COMPOSER_INSTALL
            },
            NODE_BUILD[0],
            NODE_BUILD[1],
            NODE_BUILD[2],
            NODE_BUILD[3],
            run_writing("php artisan storage:link", &["public"]),
            run_writing("php artisan config:cache", &["bootstrap/cache"]),
            run_writing("php artisan route:cache", &["bootstrap/cache"]),
            // Compiled views go to storage/, a shared path.
            run_writing("php artisan view:cache", &["bootstrap/cache"]),
            run_writing("php artisan event:cache", &["bootstrap/cache"]),
            migration_when_pending(
                "php artisan migrate --force",
                &[],
                "s=$(php artisan migrate:status --no-ansi 2>&1) || exit 0; case \"$s\" in *Pending*) exit 0;; esac; exit 1",
            ),
        ],
        // Long-running workers keep the old release's code until told.
        after_switch: &[
            on_every_host("php artisan queue:restart"),
            on_every_host(
                "if [ -d vendor/laravel/horizon ]; then php artisan horizon:terminate; fi",
            ),
            on_every_host(
                "if [ -d vendor/laravel/octane ] && php artisan octane:status >/dev/null 2>&1; then php artisan octane:reload; fi",
            ),
        ],
        reuse: &[VENDOR, NODE_MODULES[0], NODE_MODULES[1], NODE_MODULES[2]],
        packages: &["laravel/framework"],
        files: &["artisan"],
        next: "put the app's .env (with APP_KEY) in the shared folder before the first deploy",
    },
    Preset {
        name: "symfony",
        framework: "Symfony",
        public: Some("public"),
        shared: &["var/log"],
        shared_files: &[".env.local"],
        writable: &["var"],
        build: &[
            // Flex's auto-scripts clear the cache and install assets.
            PresetStep {
                run: "APP_ENV=prod composer install --no-dev --prefer-dist --optimize-autoloader --no-interaction",
                writes: Some(&["vendor", "var", "public/bundles"]),
                ..COMPOSER_INSTALL
            },
            run_writing(
                "APP_ENV=prod php bin/console cache:clear --no-warmup",
                &["var"],
            ),
            run_writing("APP_ENV=prod php bin/console cache:warmup", &["var"]),
        ],
        after_switch: &[on_every_host(
            "if [ -d vendor/symfony/messenger ]; then APP_ENV=prod php bin/console messenger:stop-workers; fi",
        )],
        reuse: &[VENDOR],
        packages: &["symfony/framework-bundle"],
        files: &["bin/console", "config/bundles.php"],
        next: "put .env.local (APP_ENV=prod, secrets) in the shared folder; with Doctrine, add `{ run = \"php bin/console doctrine:migrations:migrate --no-interaction\", once = true, maintenance = true, when = \"! php bin/console doctrine:migrations:up-to-date\" }` to build",
    },
    Preset {
        name: "wordpress",
        framework: "WordPress",
        public: None,
        shared: &["wp-content/uploads"],
        shared_files: &["wp-config.php"],
        writable: &[],
        build: &[composer_installing_into(None)],
        after_switch: &[],
        reuse: &[VENDOR],
        packages: &["johnpbloch/wordpress-core"],
        files: &["wp-settings.php"],
        next: "put wp-config.php in the shared folder (or let WordPress's installer write it there)",
    },
    Preset {
        name: "drupal",
        framework: "Drupal",
        public: Some("web"),
        shared: &["web/sites/default/files"],
        shared_files: &["web/sites/default/settings.local.php"],
        writable: &[],
        build: &[
            // Core, contrib and the scaffold files go under web/.
            composer_installing_into(Some(&["vendor", "web"])),
            migration_when_pending(
                "vendor/bin/drush updatedb --yes",
                &[],
                "s=$(vendor/bin/drush updatedb:status --format=list 2>/dev/null) || exit 0; test -n \"$s\"",
            ),
            migration_when_pending(
                "vendor/bin/drush config:import --yes",
                &[],
                "s=$(vendor/bin/drush config:status --format=list 2>/dev/null) || exit 0; test -n \"$s\"",
            ),
        ],
        after_switch: &[
            on_every_host("vendor/bin/drush cache:rebuild"),
            once_after_switch("vendor/bin/drush deploy:hook --yes"),
        ],
        reuse: &[VENDOR],
        packages: &["drupal/core-recommended", "drupal/core"],
        files: &["web/core/lib/Drupal.php"],
        next: "put settings.local.php (database, hash salt) in the shared folder and include it from settings.php",
    },
    Preset {
        name: "magento",
        framework: "Magento",
        public: Some("pub"),
        shared: &[
            "pub/media",
            "pub/sitemap",
            "var/log",
            "var/session",
            "var/report",
            "var/export",
            "var/import",
        ],
        shared_files: &["app/etc/env.php"],
        writable: &["var", "generated", "pub/static"],
        build: &[
            // magento2-base's installer copies its files into the project.
            composer_installing_into(None),
            run_writing("php bin/magento setup:di:compile", &["generated", "var"]),
            run_writing(
                "php bin/magento setup:static-content:deploy --force",
                &["pub/static", "var"],
            ),
            // It records the enabled modules in app/etc/config.php.
            migration_when_pending(
                "php bin/magento setup:upgrade --keep-generated",
                &["var", "generated", "app/etc"],
                // Exits 2 when an upgrade is needed, 1 on an error.
                "! php bin/magento setup:db:status",
            ),
        ],
        after_switch: &[on_every_host("php bin/magento cache:flush")],
        reuse: &[VENDOR],
        packages: &["magento/product-community-edition", "magento/magento2-base"],
        files: &["bin/magento"],
        next: "put app/etc/env.php in the shared folder before the first deploy",
    },
    Preset {
        name: "craft",
        framework: "Craft CMS",
        public: Some("web"),
        shared: &["storage"],
        shared_files: &[".env"],
        writable: &["web/cpresources"],
        build: &[
            COMPOSER_INSTALL,
            migration("php craft up --interactive=0", &["web/cpresources"]),
        ],
        after_switch: &[on_every_host("php craft clear-caches/data")],
        reuse: &[VENDOR],
        packages: &["craftcms/cms"],
        files: &["craft"],
        next: "put .env (CRAFT_SECURITY_KEY, database) in the shared folder",
    },
    Preset {
        name: "typo3",
        framework: "TYPO3",
        public: Some("public"),
        shared: &["public/fileadmin", "var/log", "var/session"],
        shared_files: &["config/system/additional.php"],
        writable: &["var", "public/typo3temp"],
        build: &[
            // The composer installers put the entry points under public/.
            composer_installing_into(Some(&["vendor", "public", "var"])),
            migration(
                "vendor/bin/typo3 extension:setup",
                &["var", "public/typo3temp"],
            ),
        ],
        after_switch: &[on_every_host("vendor/bin/typo3 cache:flush")],
        reuse: &[VENDOR],
        packages: &["typo3/cms-core"],
        files: &["vendor/bin/typo3"],
        next: "put config/system/additional.php (database, encryption key) in the shared folder",
    },
    Preset {
        name: "shopware",
        framework: "Shopware",
        public: Some("public"),
        shared: &[
            "files",
            "var/log",
            "public/media",
            "public/thumbnail",
            "public/sitemap",
            "config/jwt",
        ],
        shared_files: &[".env.local", "install.lock"],
        writable: &["var", "public/theme", "public/bundles"],
        build: &[
            PresetStep {
                writes: Some(&["vendor", "var", "public/bundles"]),
                ..COMPOSER_INSTALL
            },
            migration("php bin/console database:migrate --all", &["var"]),
            run_writing("php bin/console theme:compile", &["public/theme", "var"]),
            run_writing("php bin/console assets:install", &["public/bundles", "var"]),
            run_writing("php bin/console cache:clear", &["var"]),
        ],
        after_switch: &[on_every_host("php bin/console cache:warmup")],
        reuse: &[VENDOR],
        packages: &["shopware/core"],
        files: &["bin/console", "config/packages/shopware.yaml"],
        next: "put .env.local and install.lock (after the installer ran) in the shared folder",
    },
    Preset {
        name: "codeigniter",
        framework: "CodeIgniter",
        public: Some("public"),
        shared: &["writable/uploads", "writable/logs", "writable/session"],
        shared_files: &[".env"],
        writable: &["writable"],
        build: &[
            COMPOSER_INSTALL,
            migration("php spark migrate --all", &["writable"]),
        ],
        after_switch: &[on_every_host("php spark cache:clear")],
        reuse: &[VENDOR],
        packages: &["codeigniter4/framework"],
        files: &["spark"],
        next: "put .env (CI_ENVIRONMENT = production, database) in the shared folder",
    },
    Preset {
        name: "mediawiki",
        framework: "MediaWiki",
        public: None,
        shared: &["images"],
        shared_files: &["LocalSettings.php"],
        writable: &["cache"],
        build: &[
            // Release tarballs ship vendor/ and no composer.lock.
            PresetStep {
                if_exists: Some("composer.lock"),
                ..COMPOSER_INSTALL
            },
            // It changes the database; caches go to cache/.
            PresetStep {
                if_exists: Some("LocalSettings.php"),
                ..migration("php maintenance/update.php --quick", &["cache"])
            },
        ],
        after_switch: &[],
        reuse: &[VENDOR],
        packages: &["mediawiki/core"],
        files: &["includes/MediaWiki.php", "maintenance/update.php"],
        next: "run maintenance/install.php once after the first deploy (it writes LocalSettings.php into the shared folder)",
    },
];

pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

pub fn names() -> Vec<&'static str> {
    PRESETS.iter().map(|p| p.name).collect()
}
