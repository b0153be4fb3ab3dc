//! Fleets that deploy an app as one: the builder alone runs the build steps
//! (the other hosts have no build tool and never see the source) and the
//! steps marked `once`; every host serves the builder's bytes, copied by
//! digest so a small change sends little.

use std::path::Path;

use crate::fleet::{controller, fleet_deploy};
use crate::support::fleet::Fleet;
use crate::support::git::Repo;

/// The app of the load tests plus a fixed `lib/` of `count` files, so a
/// deploy that changes a page leaves most files unchanged.
fn shop_version(repo: &Repo, scratch: &Path, version: &str) -> String {
    crate::support::load::php_app(scratch, version);
    std::fs::create_dir_all(scratch.join("lib")).unwrap();
    for i in 0..200 {
        std::fs::write(
            scratch.join(format!("lib/part{i}.php")),
            format!("<?php // {i}\n"),
        )
        .unwrap();
    }
    repo.commit_tree_of(scratch)
}

/// Lines of the log file a `once` step appends to on each host.
fn log_lines(fleet: &Fleet, name: &str) -> Vec<usize> {
    fleet
        .hosts
        .iter()
        .map(|h| {
            std::fs::read_to_string(h.dir.join(name))
                .map(|t| t.lines().count())
                .unwrap_or(0)
        })
        .collect()
}

/// The files each copying host said it received, from the run's output.
fn received(stderr: &str) -> Vec<u64> {
    stderr
        .lines()
        .filter_map(|l| l.split("copied the builder's release").nth(1))
        .filter_map(|rest| rest.split("): ").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse().ok())
        .collect()
}

#[test]
fn a_fleet_builds_once_runs_migrations_once_and_serves_the_builders_bytes_everywhere() {
    let fleet = Fleet::start(3);
    let repo = Repo::new(fleet.root.path(), "shop");
    let scratch = fleet.root.path().join("scratch");
    // The second host builds; only it has the build tool.
    fleet.install_build_tool(1);
    let told = crate::support::http::Recorder::start(&[200]);
    let path = fleet.path.display().to_string();
    let steps = format!(
        "builder = \"{builder}\"\n\
         build = [\n\
           {{ run = \"{path}/bin/build-assets\", writes = [\"build\"] }},\n\
           {{ run = \"test ! -e {path}/fail-migration && echo $ZDEPLOY_RELEASE >> {path}/migrations.log\", writes = [], once = true }},\n\
         ]\n\
         after_switch = [{{ run = \"echo $ZDEPLOY_RELEASE >> {path}/after.log\", once = true }}, \"echo x >> {path}/every.log\"]\n\
         notify = [{{ url = \"http://{told}/\", on = [\"succeeded\"] }}]\n",
        builder = fleet.hosts[1].address,
        told = told.address,
    );
    let config = fleet.config("shop", &repo.bare, &steps);
    let mut deploys: usize = 0;
    for round in 0..10 {
        let commit = shop_version(&repo, &scratch, &format!("v{round}"));
        let out = fleet_deploy(&config).arg("--json").success();
        deploys += 1;
        let result: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let release = result["release"].as_str().unwrap().to_string();
        assert_eq!(
            fleet.live(),
            vec![Some(release.clone()); 3],
            "{}",
            out.stderr
        );
        let ids = fleet.build_ids();
        assert!(
            ids.iter().all(|id| id == &ids[0] && id.len() == 32),
            "{ids:?}\n{}",
            out.stderr
        );
        assert_eq!(
            log_lines(&fleet, "migrations.log"),
            vec![0, deploys, 0],
            "{}",
            out.stderr
        );
        assert_eq!(log_lines(&fleet, "after.log"), vec![0, deploys, 0]);
        assert_eq!(log_lines(&fleet, "every.log"), vec![deploys; 3]);
        // The copying hosts never saw the commit: only the builder fetched it.
        let lacks_commit = |host: usize| !fleet.mirror_has(host, &commit);
        assert!(!lacks_commit(1), "the builder fetched the commit");
        assert!(
            lacks_commit(0) && lacks_commit(2),
            "a copying host has the source"
        );
        // After the first deploy a copying host receives what changed: the
        // page's files and the build id, not lib/ or the generated assets.
        let counts = received(&out.stderr);
        eprintln!("round {round}: copying hosts received {counts:?} files");
        assert_eq!(counts.len(), 2, "{}", out.stderr);
        if round > 0 {
            assert!(
                counts.iter().all(|n| *n <= 6),
                "received {counts:?}\n{}",
                out.stderr
            );
            // Live on the release the builder built over, they got only
            // the manifest's changes.
            assert_eq!(
                out.stderr.matches("sent as its changes to").count(),
                2,
                "{}",
                out.stderr
            );
        } else {
            assert!(counts.iter().all(|n| *n > 300), "received {counts:?}");
        }
    }
    // The controller told of each deploy, naming every host.
    let said = told.bodies.lock().unwrap().clone();
    assert_eq!(said.len(), deploys, "{said:?}");
    let last: serde_json::Value = serde_json::from_str(said.last().unwrap()).unwrap();
    assert_eq!(last["event"], "succeeded", "{last}");
    assert_eq!(last["hosts"].as_array().unwrap().len(), 3, "{last}");
    let out = controller(&config)
        .args(["verify", "shop", "--json"])
        .success();
    let verified: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let digest = verified["digest"]
        .as_str()
        .expect("one digest on every host");
    assert_eq!(digest.len(), 64);
    let text = controller(&config).args(["verify", "shop"]).success();
    assert!(
        text.stdout
            .contains(&format!("one release digest on every host: {digest}"))
    );

    // An upload that reached one host only splits the fleet as surely as
    // two releases: the deploy, status and doctor name the host and file.
    let live = fleet.live()[0].clone().unwrap();
    let upload = |host: usize| {
        fleet.hosts[host]
            .dir
            .join("www")
            .join(&live)
            .join("saves/only-here.txt")
    };
    std::fs::write(upload(0), "a user's file").unwrap();
    shop_version(&repo, &scratch, "uploads");
    let out = fleet_deploy(&config).arg("--json").success();
    let result: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let differs = &result["user_content_differs"];
    assert_eq!(
        differs[0]["host"],
        fleet.hosts[0].address.as_str(),
        "{}",
        out.stdout
    );
    assert_eq!(differs[0]["files"], 1);
    assert!(out.stderr.contains("saves/only-here.txt"), "{}", out.stderr);
    let status = controller(&config).args(["status", "shop"]).success();
    let named = format!(
        "{} holds 1 user file another host lacks (saves/only-here.txt)",
        fleet.hosts[0].address
    );
    assert!(status.stdout.contains(&named), "{}", status.stdout);
    let doctor = controller(&config).args(["doctor", "shop"]).run();
    assert!(
        doctor.code != Some(0) && doctor.stdout.contains(&named),
        "{}\n{}",
        doctor.stdout,
        doctor.stderr
    );
    // Once every host has it, the fleet agrees again.
    let live = fleet.live()[0].clone().unwrap();
    for host in [1, 2] {
        let path = fleet.hosts[host]
            .dir
            .join("www")
            .join(&live)
            .join("saves/only-here.txt");
        std::fs::write(path, "a user's file").unwrap();
    }
    shop_version(&repo, &scratch, "agreed");
    let out = fleet_deploy(&config).arg("--json").success();
    assert!(
        !out.stderr.contains("user content differs"),
        "{}",
        out.stderr
    );
    let status = controller(&config).args(["status", "shop"]).success();
    assert!(!status.stdout.contains("lacks"), "{}", status.stdout);

    // A migration that fails on the builder switches no host and leaves
    // nothing staged anywhere.
    let before = fleet.live();
    std::fs::write(fleet.hosts[1].dir.join("fail-migration"), "").unwrap();
    shop_version(&repo, &scratch, "broken");
    let out = fleet_deploy(&config).fails_with(1);
    assert!(
        out.stderr.contains(&fleet.hosts[1].address),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("nothing switched anywhere"),
        "{}",
        out.stderr
    );
    assert_eq!(fleet.live(), before);
    assert_eq!(fleet.leftovers(), vec![Vec::<String>::new(); 3]);
    std::fs::remove_file(fleet.hosts[1].dir.join("fail-migration")).unwrap();

    deploys += 2;

    // A migration that needs a maintenance window: the builder asks every
    // host while it runs (from inside its step), and each answers 503;
    // every host serves the new release after the switch.
    let original = std::fs::read_to_string(&config).unwrap();
    let asks = fleet
        .hosts
        .iter()
        .map(|h| {
            format!(
                "curl -s -o /dev/null -w '%{{http_code}} ' http://{}/",
                h.address
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let windowed = original
        .replace(
            &format!("test ! -e {path}/fail-migration"),
            &format!("test \\\"$({asks})\\\" = '503 503 503 '"),
        )
        .replace(
            "writes = [], once = true }",
            "writes = [], once = true, maintenance = true }",
        );
    assert_ne!(windowed, original);
    std::fs::write(&config, &windowed).unwrap();
    shop_version(&repo, &scratch, "windowed");
    let out = fleet_deploy(&config).success();
    deploys += 1;
    assert_eq!(
        log_lines(&fleet, "migrations.log"),
        vec![0, deploys, 0],
        "the step saw every host in maintenance: {}",
        out.stderr
    );
    let page = |host: &crate::support::fleet::FleetHost| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-w", " %{http_code}", "--max-time", "10"])
            .arg(format!("http://{}/", host.address))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for host in &fleet.hosts {
        let answer = page(host);
        assert!(
            answer.starts_with("page=windowed") && answer.ends_with(" 200"),
            "{answer}"
        );
    }
    // By hand, on every host at once, with one cookie for the fleet.
    let on = controller(&config)
        .args(["maintenance", "on", "shop", "--retry-after", "30"])
        .success();
    assert!(
        on.stdout.contains("maintenance on for 3 of 3 hosts"),
        "{}",
        on.stdout
    );
    assert_eq!(
        on.stdout.matches("zdeploy_maintenance=").count(),
        2,
        "{}",
        on.stdout
    );
    for host in &fleet.hosts {
        assert!(page(host).ends_with(" 503"), "{}", host.address);
    }
    controller(&config)
        .args(["maintenance", "off", "shop"])
        .success();
    for host in &fleet.hosts {
        assert!(page(host).ends_with(" 200"), "{}", host.address);
    }
    std::fs::write(&config, &original).unwrap();

    // The exact commit CI tested goes live on every host, not the newer one.
    let tested = shop_version(&repo, &scratch, "tested");
    shop_version(&repo, &scratch, "untested");
    let out = fleet_deploy(&config).args(["--commit", &tested]).success();
    deploys += 1;
    assert!(out.stderr.contains("deploying commit"), "{}", out.stderr);
    for host in &fleet.hosts {
        let answer = page(host);
        assert!(answer.starts_with("page=tested"), "{answer}");
    }

    // Frozen, every host refuses a deploy until it is forced or unfrozen.
    controller(&config)
        .args(["freeze", "shop", "--reason", "sale"])
        .success();
    let before = fleet.live();
    shop_version(&repo, &scratch, "during the sale");
    let refused = fleet_deploy(&config).run();
    assert!(
        refused.code != Some(0)
            && refused
                .stderr
                .contains("frozen (sale): a deploy needs --force"),
        "{}",
        refused.stderr
    );
    assert_eq!(fleet.live(), before);
    controller(&config).args(["unfreeze", "shop"]).success();

    // An artifact CI built goes to every host as it is: nobody builds it,
    // the migration runs once, and every host serves the same bytes.
    let artifact = fleet.root.path().join("artifact");
    crate::support::load::php_app(&artifact, "artifact");
    std::fs::create_dir_all(artifact.join("build")).unwrap();
    std::fs::write(artifact.join("build/id.txt"), "built by CI").unwrap();
    let archive = fleet.root.path().join("artifact.tar.gz");
    crate::support::run_checked(
        std::process::Command::new("tar")
            .arg("-czf")
            .arg(&archive)
            .arg("-C")
            .arg(&artifact)
            .arg("."),
    );
    fleet_deploy(&config)
        .arg("--archive")
        .arg(&archive)
        .success();
    deploys += 1;
    for host in &fleet.hosts {
        let answer = page(host);
        assert!(answer.starts_with("page=artifact"), "{answer}");
    }
    assert_eq!(
        fleet.build_ids(),
        vec!["built by CI"; 3],
        "no host built it"
    );
    assert_eq!(log_lines(&fleet, "migrations.log"), vec![0, deploys, 0]);
    let out = controller(&config)
        .args(["verify", "shop", "--json"])
        .success();
    let verified: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let fleet_digest = verified["digest"].as_str().expect("one digest").to_string();

    // Promotion over ssh: production, on this machine, takes the fleet's
    // bytes from its first host; its own build (`false`) never runs.
    let production = fleet.root.path().join("production");
    std::fs::create_dir_all(&production).unwrap();
    let fleet_config = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!(
            "{fleet_config}\n[apps.production]\nwebroot = \"{}\"\nsource = \"{}\"\nref = \"main\"\nsettle = \"0s\"\ndrain = \"0s\"\n\
             build = [\"false\", {{ run = \"touch {}/production-migrated\", once = true }}]\n",
            production.display(),
            repo.bare.display(),
            fleet.root.path().display()
        ),
    )
    .unwrap();
    let out = controller(&config)
        .args(["deploy", "production", "--from", "shop"])
        .success();
    assert!(out.stderr.contains("promoting"), "{}", out.stderr);
    assert!(
        std::fs::read_to_string(production.join("ROOT/index.php"))
            .unwrap()
            .contains("artifact")
    );
    assert!(fleet.root.path().join("production-migrated").exists());
    let out = controller(&config)
        .args(["verify", "production", "--json"])
        .success();
    let verified: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(verified["digest"], fleet_digest.as_str());
    std::fs::write(&config, fleet_config).unwrap();

    // Built on every host, the `once` steps still run on the builder only.
    fleet.install_build_tool(0);
    fleet.install_build_tool(2);
    std::fs::write(
        &config,
        std::fs::read_to_string(&config).unwrap() + "build_on = \"every-host\"\n",
    )
    .unwrap();
    shop_version(&repo, &scratch, "every");
    let out = fleet_deploy(&config).success();
    deploys += 1;
    assert!(received(&out.stderr).is_empty(), "{}", out.stderr);
    assert_eq!(log_lines(&fleet, "migrations.log"), vec![0, deploys, 0]);
    assert_eq!(log_lines(&fleet, "after.log"), vec![0, deploys, 0]);
    let ids = fleet.build_ids();
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2],
        "every host built its own: {ids:?}"
    );
    assert!(
        out.stderr.contains("the builder runs what runs once"),
        "{}",
        out.stderr
    );
}
