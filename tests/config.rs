//! The config file: apps by name, flags overriding keys, and errors that
//! name the file, the line and the fix.

use crate::support::{Site, Zdeploy, write_files};

fn write_config(site: &Site, text: &str) -> std::path::PathBuf {
    let path = site.path("zdeploy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn apps_from_the_config_deploy_by_name_and_flags_override_keys() {
    let site = Site::new();
    let shop = site.path("shop");
    let blog = site.path("blog");
    write_files(&shop, &[("index.php", "shop")]);
    write_files(&blog, &[("index.php", "blog")]);
    let config = write_config(
        &site,
        &format!(
            "[apps.shop]\nwebroot = \"{w}\"\nsource = \"{s}\"\nkeep = 2\ndrain = \"0s\"\nsettle = \"0s\"\n\n[apps.blog]\nwebroot = \"{w}\"\ncontext = \"blog\"\nsource = \"{b}\"\nsettle = \"0s\"\n",
            w = site.webroot.display(),
            s = shop.display(),
            b = blog.display()
        ),
    );
    Zdeploy::new()
        .args(["deploy", "shop", "--config"])
        .arg(&config)
        .success();
    Zdeploy::new()
        .arg("deploy")
        .arg("blog")
        .env("ZDEPLOY_CONFIG", &config)
        .success();
    assert_eq!(
        std::fs::read_to_string(site.webroot.join("ROOT/index.php")).unwrap(),
        "shop"
    );
    assert_eq!(
        std::fs::read_to_string(site.webroot.join("blog/index.php")).unwrap(),
        "blog"
    );

    // ./zdeploy.toml is found from the working directory
    let out = Zdeploy::new()
        .args(["deploy", "--json"])
        .current_dir(site.dir.path())
        .fails_with(2);
    assert!(
        out.stderr.contains("several apps (blog, shop)"),
        "{}",
        out.stderr
    );

    for i in 0..3 {
        write_files(&shop, &[("index.php", &format!("shop {i}"))]);
        Zdeploy::new()
            .args(["deploy", "shop"])
            .current_dir(site.dir.path())
            .success();
    }
    let shop_releases: Vec<_> = std::fs::read_dir(&site.webroot)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("ROOT_"))
        .collect();
    assert_eq!(shop_releases.len(), 2, "keep = 2 from the config");
    write_files(&shop, &[("index.php", "shop 9")]);
    Zdeploy::new()
        .args(["deploy", "shop", "--keep", "1"])
        .current_dir(site.dir.path())
        .success();
    let count = std::fs::read_dir(&site.webroot)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("ROOT_"))
        .count();
    assert_eq!(count, 1, "--keep overrides the config");
    // The blog context's releases are not the shop's.
    assert!(site.webroot.join("blog").exists());
    let releases = Zdeploy::new()
        .args(["releases", "blog", "--json"])
        .current_dir(site.dir.path())
        .success();
    let list: serde_json::Value = serde_json::from_str(&releases.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
}

#[test]
fn config_errors_name_the_file_line_and_fix() {
    let site = Site::new();
    let cases = [
        (
            "[apps.a]\nwebroot = \"/tmp\"\nsource = \"/tmp\"\ndrain = \"5x\"\n",
            ":4: apps.a.drain",
            "unknown unit 'x'",
        ),
        (
            "[apps.a]\nwebroot = \"/tmp\"\nsorce = \"x\"\n",
            ":3",
            "unknown field `sorce`",
        ),
        (
            "[apps.a]\nwebroot = \"/tmp\"\nkeep = 0\nsource = \"/tmp\"\n",
            ":3: apps.a.keep",
            "at least 1",
        ),
        (
            "[apps.a]\nwebroot = \"/tmp\"\ncontext = \"a/b\"\n",
            ":3: apps.a.context",
            "invalid context",
        ),
        (
            "[apps.a]\nwebroot = \"/tmp\"\nkeep = \"three\"\n",
            ":3",
            "invalid type",
        ),
        ("[apps.a\nwebroot = 1\n", ":1", ""),
        (
            "[apps.a]\nwebroot = \"/tmp\"\nsource = \"ext::sh -c x\"\n",
            ":3: apps.a.source",
            "not allowed",
        ),
        ("[apps.a]\nwebroot = \"/tmp\"\n", "", "has no source"),
        ("[apps.a]\nsource = \"/tmp\"\n", "", "has no webroot"),
        (
            "[apps.a]\nwebroot = \"/tmp\"\nsource = \"/tmp\"\nbuild_timeout = \"10\"\n",
            ":4: apps.a.build_timeout",
            "missing unit",
        ),
        (
            "[apps.a]\nwebroot = \"/tmp\"\nsource = \"/tmp\"\nbuild = [{ run = \"make\", writes = [\"../etc\"] }]\n",
            ":4: apps.a.build",
            "writes = \"../etc\" must be a relative path inside the release",
        ),
        (
            "[apps.a]\nwebroot = \"/tmp\"\nsource = \"/tmp\"\nbuild = [{ run = \"make\", writes = \"vendor\" }]\n",
            ":4",
            "",
        ),
        // A build or after_switch entry with a key zdeploy does not know.
        (
            "[apps.a]\nwebroot = \"/tmp\"\nsource = \"/tmp\"\nbuild = [\n  \"echo hi\",\n  { run = \"php artisan migrate\", onse = true },\n]\n",
            ":6",
            "unknown field `onse`, expected one of `run`",
        ),
        (
            "[apps.a]\nwebroot = \"/tmp\"\nsource = \"/tmp\"\nafter_switch = [{ run = \"x\", when = \"y\" }]\n",
            ":4",
            "unknown field `when`, expected `run` or `once`",
        ),
        (
            "[apps.a]\nwebroot = \"/tmp\"\nsource = \"/tmp\"\nbuild = [5]\n",
            ":4",
            "expected a command, or a table with `run`",
        ),
        // Maintenance windows.
        (
            "[apps.a]\nwebroot = \"/tmp\"\nsource = \"/tmp\"\nmaintenance_page = \"../../etc/passwd\"\n",
            ":4: apps.a.maintenance_page",
            "must be a relative path inside the release",
        ),
        (
            "[apps.a]\nwebroot = \"/tmp\"\nsource = \"/tmp\"\nwatch = { for = \"2m\", max_error_rate = \"2\" }\n",
            ":4: apps.a.watch",
            "watch.max_error_rate takes a percentage like \"2%\"",
        ),
        (
            "[apps.a]\nwebroot = \"/tmp\"\nsource = \"/tmp\"\nwatch = { for = \"0s\" }\n",
            ":4: apps.a.watch",
            "watch.for must be more than 0 and at most 24h",
        ),
        (
            "[apps.a]\nwebroot = \"/tmp\"\nsource = \"/tmp\"\nwatch = { max_p95 = \"0.5x\", colour = 1 }\n",
            ":4: apps.a.watch",
            "colour",
        ),
        // Canaries.
        (
            "[apps.a]\nwebroot = \"/tmp\"\nsource = \"/tmp\"\ncanary = { share = \"100%\" }\n",
            ":4: apps.a.canary",
            "above 0 and below 100",
        ),
        (
            "[apps.a]\nwebroot = \"/tmp\"\nsource = \"/tmp\"\ncanary = { for = \"5m\" }\n",
            ":4: apps.a.canary",
            "canary needs share",
        ),
        (
            "[apps.a]\nwebroot = \"/tmp\"\nsource = \"/tmp\"\ncanary = { share = \"10%\", for = \"2d\" }\n",
            ":4: apps.a.canary",
            "canary.for must be more than 0 and at most 24h",
        ),
        (
            "[apps.a]\nwebroot = \"/tmp\"\nsource = \"/tmp\"\ncanary = { share = \"10%\", max_p95 = \"half\" }\n",
            ":4: apps.a.canary",
            "canary.max_p95 takes a factor",
        ),
        (
            "[apps.a]\nwebroot = \"/tmp\"\nsource = \"/tmp\"\ncanary = { share = \"10%\", colour = 1 }\n",
            ":4: apps.a.canary",
            "colour",
        ),
        (
            "[apps.a]\nwebroot = \"/tmp\"\nsource = \"/tmp\"\ncanary = \"10%\"\n",
            ":4: apps.a.canary",
            "canary takes a table",
        ),
        (
            "[apps.a]\nwebroot = \"/tmp\"\nsource = \"/tmp\"\nzero_downtime = false\ncanary = { share = \"10%\" }\n",
            ":5: apps.a.canary",
            "a canary needs zero_downtime",
        ),
        (
            "[fleet]\netcd = [\"http://10.0.0.5:2379\"]\nname = \"web1\"\n[apps.a]\nwebroot = \"/tmp\"\nsource = \"/tmp\"\nfleet = true\ncanary = { share = \"10%\" }\n",
            ":8: apps.a.canary",
            "on a fleet in etcd are not supported yet",
        ),
        (
            "[apps.a]\nwebroot = \"/tmp\"\nsource = \"/tmp\"\nmaintenance_allow = [\"10.0.0.1\", \"office\"]\n",
            ":4: apps.a.maintenance_allow",
            "maintenance_allow \"office\": not an IP address",
        ),
        (
            "[apps.a]\nwebroot = \"/tmp\"\nsource = \"/tmp\"\nbuild = [{ run = \"migrate\", maintenance = \"yes\" }]\n",
            ":4",
            "invalid type: string \"yes\", expected a boolean",
        ),
        (
            "[apps.a]\nwebroot = \"/tmp\"\nsource = \"/tmp\"\nbuild = [{ run = \"migrate\", when = \" \" }]\n",
            ":4: apps.a.build",
            "`when` of \"migrate\" is empty",
        ),
        // Fleets in etcd.
        (
            "[apps.a]\nwebroot = \"/tmp\"\nsource = \"https://example.org/a.git\"\nfleet = true\n",
            ":4: apps.a.fleet",
            "needs a [fleet] table",
        ),
        (
            "[fleet]\netcd = [\"http://10.0.0.5:2379\"]\nname = \"web1\"\n[apps.a]\nwebroot = \"/tmp\"\nsource = \"/tmp\"\nfleet = true\n",
            ":7: apps.a.fleet",
            "deploys from git",
        ),
        (
            "[fleet]\netcd = [\"http://10.0.0.5:2379\"]\nname = \"web1\"\n[apps.a]\nwebroot = \"/tmp\"\nsource = \"https://example.org/a.git\"\nhosts = [\"web2\"]\nfleet = true\n",
            ":8: apps.a.fleet",
            "not both",
        ),
        (
            "[fleet]\netcd = [\"10.0.0.5:2379\"]\nname = \"web1\"\n[apps.a]\nwebroot = \"/tmp\"\nsource = \"https://example.org/a.git\"\nfleet = true\n",
            ":1: fleet.etcd",
            "not an http:// or https:// URL",
        ),
        (
            "[fleet]\netcd = [\"http://10.0.0.5:2379\"]\nname = \"-oProxyCommand=x\"\n[apps.a]\nwebroot = \"/tmp\"\nsource = \"https://example.org/a.git\"\nfleet = true\n",
            ":1: fleet.name",
            "is not a host name",
        ),
        (
            "[fleet]\netcd = [\"https://10.0.0.5:2379\"]\nname = \"web1\"\n[apps.a]\nwebroot = \"/tmp\"\nsource = \"https://example.org/a.git\"\nfleet = true\n",
            ":1: fleet.ca_file",
            "need the cluster's CA",
        ),
        (
            "[fleet]\netcd = [\"http://10.0.0.5:2379\"]\nname = \"web1\"\nlease_ttl = \"500ms\"\n[apps.a]\nwebroot = \"/tmp\"\nsource = \"https://example.org/a.git\"\nfleet = true\n",
            ":1: fleet.lease_ttl",
            "too short",
        ),
        (
            "[fleet]\netcd = [\"http://10.0.0.5:2379\"]\nuser = \"zd\"\n[apps.a]\nwebroot = \"/tmp\"\nsource = \"https://example.org/a.git\"\nfleet = true\n",
            ":1: fleet.user",
            "both user and password_file",
        ),
        (
            "[fleet]\netcd = [\"http://10.0.0.5:2379\"]\nendpoints = 3\n",
            ":3",
            "unknown field `endpoints`",
        ),
        (
            "[fleet]\netcd = [\"http://10.0.0.5:2379\"]\nname = \"web1\"\nadvertise = \"web1:9470\"\n[apps.a]\nwebroot = \"/tmp\"\nsource = \"https://example.org/a.git\"\nfleet = true\n",
            ":1: fleet.advertise",
            "is not an http:// or https:// URL",
        ),
        (
            "[fleet]\netcd = [\"http://10.0.0.5:2379\"]\nname = \"web1\"\n[apps.a]\nwebroot = \"/tmp\"\nsource = \"https://example.org/a.git\"\nfleet = true\nbuilder = \"-oProxyCommand=x\"\n",
            ":8: apps.a.builder",
            "is not a host name",
        ),
        (
            "[fleet]\netcd = [\"http://10.0.0.5:2379\"]\nname = \"web1\"\n[apps.a]\nwebroot = \"/tmp\"\nsource = \"https://example.org/a.git\"\nfleet = true\nbuild_on = \"sometimes\"\n",
            ":8: apps.a.build_on",
            "unknown build_on 'sometimes'",
        ),
    ];
    for (text, location, message) in cases {
        let config = write_config(&site, text);
        let out = Zdeploy::new()
            .arg("deploy")
            .arg("--config")
            .arg(&config)
            .fails_with(2);
        let expected_location = format!("{}{location}", config.display());
        assert!(
            out.stderr.contains(&expected_location),
            "{text:?}: wanted {expected_location} in {}",
            out.stderr
        );
        assert!(
            out.stderr.contains(message),
            "{text:?}: wanted {message} in {}",
            out.stderr
        );
    }
    let out = Zdeploy::new()
        .args(["deploy", "--config"])
        .arg(site.path("missing.toml"))
        .fails_with(2);
    assert!(out.stderr.contains("cannot read config"), "{}", out.stderr);
    let out = Zdeploy::new()
        .args(["deploy", "nope", "--config"])
        .arg(write_config(&site, "[apps.a]\nwebroot=\"/tmp\"\n"))
        .fails_with(2);
    assert!(out.stderr.contains("no app 'nope'"), "{}", out.stderr);
    let empty = site.path("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = Zdeploy::new()
        .arg("deploy")
        .current_dir(&empty)
        .fails_with(2);
    assert!(
        out.stderr.contains("no config file found"),
        "{}",
        out.stderr
    );
}

#[test]
fn canary_traffic_refuses_a_bad_window_and_a_missing_canary() {
    let site = Site::new();
    let run = |args: &[&str]| {
        Zdeploy::new()
            .args(["canary", "traffic", "--webroot"])
            .arg(&site.webroot)
            .args(args)
            .fails_with(2)
            .stderr
    };
    for (window, message) in [
        ("abc", "--for"),
        ("0s", "more than 0"),
        ("25h", "at most 24h"),
    ] {
        let stderr = run(&["--for", window]);
        assert!(stderr.contains(message), "--for {window}: {stderr}");
    }
    let stderr = run(&["--for", "1s"]);
    assert!(stderr.contains("no canary of ROOT is running"), "{stderr}");
}

#[test]
fn flags_reject_bad_values() {
    let site = Site::new();
    let app = site.path("app");
    write_files(&app, &[("index.php", "x")]);
    for (flag, value, message) in [
        ("--drain", "5x", "unknown unit"),
        ("--keep", "0", "at least 1"),
        ("--max-archive-size", "lots", "invalid size"),
        ("--source-kind", "svn", "unknown source kind"),
        ("--shared", "../up", "invalid shared path"),
        ("--shared", "/abs", "invalid shared path"),
        ("--watch", "25h", "at most 24h"),
        ("--watch", "soon", "--watch"),
        ("--canary", "0%", "above 0 and below 100"),
        ("--canary", "ten", "--canary"),
    ] {
        let out = site.deploy(&app).args([flag, value]).fails_with(2);
        assert!(
            out.stderr.contains(message),
            "{flag} {value}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains(flag),
            "{flag} {value}: the flag is named: {}",
            out.stderr
        );
    }
    assert!(site.releases().is_empty());
}
