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
    pub after_switch: &'static [&'static str],
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
};

const VENDOR: (&str, &str) = ("vendor", "composer.lock");

/// Front-end dependencies by the lock file the app has, then its build.
const NODE_BUILD: [PresetStep; 4] = [
    PresetStep {
        run: "npm ci",
        unless_reused: Some("node_modules"),
        if_exists: Some("package-lock.json"),
    },
    PresetStep {
        run: "yarn install --frozen-lockfile",
        unless_reused: Some("node_modules"),
        if_exists: Some("yarn.lock"),
    },
    PresetStep {
        run: "pnpm install --frozen-lockfile",
        unless_reused: Some("node_modules"),
        if_exists: Some("pnpm-lock.yaml"),
    },
    PresetStep {
        run: "npm run build",
        unless_reused: None,
        if_exists: Some("package.json"),
    },
];

const NODE_MODULES: [(&str, &str); 3] = [
    ("node_modules", "package-lock.json"),
    ("node_modules", "yarn.lock"),
    ("node_modules", "pnpm-lock.yaml"),
];

const fn run(command: &'static str) -> PresetStep {
    PresetStep {
        run: command,
        unless_reused: None,
        if_exists: None,
    }
}

pub const PRESETS: &[Preset] = &[
    Preset {
        name: "laravel",
        framework: "Laravel",
        public: Some("public"),
        shared: &["storage"],
        shared_files: &[".env"],
        writable: &["bootstrap/cache"],
        build: &[
            COMPOSER_INSTALL,
            NODE_BUILD[0],
            NODE_BUILD[1],
            NODE_BUILD[2],
            NODE_BUILD[3],
            run("php artisan storage:link"),
            run("php artisan config:cache"),
            run("php artisan route:cache"),
            run("php artisan view:cache"),
            run("php artisan event:cache"),
            run("php artisan migrate --force"),
        ],
        after_switch: &["php artisan queue:restart"],
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
            PresetStep {
                run: "APP_ENV=prod composer install --no-dev --prefer-dist --optimize-autoloader --no-interaction",
                unless_reused: Some("vendor"),
                if_exists: Some("composer.json"),
            },
            run("APP_ENV=prod php bin/console cache:clear --no-warmup"),
            run("APP_ENV=prod php bin/console cache:warmup"),
        ],
        after_switch: &[],
        reuse: &[VENDOR],
        packages: &["symfony/framework-bundle"],
        files: &["bin/console", "config/bundles.php"],
        next: "put .env.local (APP_ENV=prod, secrets) in the shared folder; with Doctrine, add `php bin/console doctrine:migrations:migrate --no-interaction` to build",
    },
    Preset {
        name: "wordpress",
        framework: "WordPress",
        public: None,
        shared: &["wp-content/uploads"],
        shared_files: &["wp-config.php"],
        writable: &[],
        build: &[COMPOSER_INSTALL],
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
            COMPOSER_INSTALL,
            run("vendor/bin/drush updatedb --yes"),
            run("vendor/bin/drush config:import --yes"),
        ],
        after_switch: &[
            "vendor/bin/drush cache:rebuild",
            "vendor/bin/drush deploy:hook --yes",
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
            COMPOSER_INSTALL,
            run("php bin/magento setup:di:compile"),
            run("php bin/magento setup:static-content:deploy --force"),
            run("php bin/magento setup:upgrade --keep-generated"),
        ],
        after_switch: &["php bin/magento cache:flush"],
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
        build: &[COMPOSER_INSTALL, run("php craft up --interactive=0")],
        after_switch: &["php craft clear-caches/data"],
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
        build: &[COMPOSER_INSTALL, run("vendor/bin/typo3 extension:setup")],
        after_switch: &["vendor/bin/typo3 cache:flush"],
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
            COMPOSER_INSTALL,
            run("php bin/console database:migrate --all"),
            run("php bin/console theme:compile"),
            run("php bin/console assets:install"),
            run("php bin/console cache:clear"),
        ],
        after_switch: &["php bin/console cache:warmup"],
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
        build: &[COMPOSER_INSTALL, run("php spark migrate --all")],
        after_switch: &["php spark cache:clear"],
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
            PresetStep {
                run: "php maintenance/update.php --quick",
                unless_reused: None,
                if_exists: Some("LocalSettings.php"),
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
