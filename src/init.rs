//! `zdeploy init [SOURCE]`: look at an app's source (composer.json's
//! requirements, the files a framework always has), name the framework
//! found, and write a commented `zdeploy.toml` that uses its preset, says
//! what the preset sets, which web server config to print next, and what
//! could not be decided.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::UsageError;
use crate::preset::{PRESETS, Preset};

/// What the source was found to be.
pub struct Detection {
    pub preset: &'static Preset,
    /// Why: the composer package or the files found.
    pub evidence: String,
}

/// The framework `source` (a folder) is, if any preset knows it. The most
/// specific preset comes first in `PRESETS` order of checks: a Shopware or
/// Drupal app also requires Symfony components.
pub fn detect(source: &Path) -> Result<Option<Detection>> {
    let required = composer_requirements(source)?;
    for preset in checked_in_order() {
        if let Some(package) = preset.packages.iter().find(|p| required.contains(**p)) {
            return Ok(Some(Detection {
                preset,
                evidence: format!("composer.json requires {package}"),
            }));
        }
    }
    for preset in checked_in_order() {
        if preset.files.iter().all(|f| source.join(f).is_file()) {
            return Ok(Some(Detection {
                preset,
                evidence: format!("it has {}", preset.files.join(" and ")),
            }));
        }
    }
    Ok(None)
}

fn checked_in_order() -> impl Iterator<Item = &'static Preset> {
    const ORDER: [&str; 10] = [
        "shopware",
        "drupal",
        "magento",
        "craft",
        "typo3",
        "laravel",
        "codeigniter",
        "mediawiki",
        "wordpress",
        "symfony",
    ];
    ORDER
        .iter()
        .filter_map(|name| PRESETS.iter().find(|p| p.name == *name))
}

/// The package names in composer.json's `require` and `require-dev`.
fn composer_requirements(source: &Path) -> Result<std::collections::BTreeSet<String>> {
    let path = source.join("composer.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| UsageError(format!("{} is not valid JSON: {e}", path.display())))?;
    let mut names = std::collections::BTreeSet::new();
    for section in ["require", "require-dev"] {
        if let Some(map) = json.get(section).and_then(|v| v.as_object()) {
            names.extend(map.keys().cloned());
        }
    }
    Ok(names)
}

/// Where the release comes from: the checkout's `origin` and branch when
/// `source` is a git work tree with one, else the folder itself.
fn source_line(source: &Path) -> (String, Option<String>) {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(source)
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    match git(&["remote", "get-url", "origin"]) {
        Some(url) => (url, git(&["symbolic-ref", "--short", "HEAD"])),
        None => (source.display().to_string(), None),
    }
}

/// A TOML string, quoted.
fn quoted(value: &str) -> String {
    toml::Value::String(value.to_string()).to_string()
}

fn list(values: &[&str]) -> String {
    let items: Vec<String> = values.iter().map(|v| quoted(v)).collect();
    format!("[{}]", items.join(", "))
}

/// An app name from the folder's name: letters, digits, `-` and `_`.
fn app_name(source: &Path) -> String {
    let name: String = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_matches('-').to_string();
    if name.is_empty() { "app".into() } else { name }
}

/// The config text for `source`.
pub fn config_text(source: &Path, detection: Option<&Detection>) -> String {
    let (source_value, branch) = source_line(source);
    let name = app_name(source);
    let mut text = format!(
        "# zdeploy.toml for {}, written by `zdeploy init`.\n",
        source.display()
    );
    let mut undecided = vec![
        "webroot: where releases live; /var/www/webroot is a guess".to_string(),
        "php_fpm.address: PHP-FPM's socket, for `zdeploy webserver`".to_string(),
        "group: the web server's group, which may write the writable paths; www-data is Debian's"
            .to_string(),
    ];
    match detection {
        Some(found) => {
            let preset = found.preset;
            text += &format!(
                "# Found {} ({}): preset = \"{}\".\n",
                preset.framework, found.evidence, preset.name
            );
            text += &format!("# Still to do: {}.\n", preset.next);
        }
        None => {
            text += "# No framework found (no composer package or files a preset knows):\n\
                     # the release's top folder is served and nothing is built.\n";
            undecided.push(format!(
                "preset: none matched; set one of {} if the app is one of them",
                crate::preset::names().join(", ")
            ));
        }
    }
    if branch.is_none() && !source_value.contains("://") {
        undecided.push("source: a folder; a git URL lets the agent deploy on push".to_string());
    }
    text += "#\n# Could not decide (check these):\n";
    for item in &undecided {
        text += &format!("#   - {item}\n");
    }
    text += &format!(
        "#\n# Next: zdeploy webserver nginx {name} > /etc/nginx/sites-enabled/{name}.conf\n\
         #       (or apache, or caddy), reload the web server, then: zdeploy deploy {name}\n\n"
    );
    text += &format!("[apps.{name}]\nwebroot = \"/var/www/webroot\"\n");
    text += "# The web server's group: it may write the writable paths.\ngroup = \"www-data\"\n";
    text += &format!("source = {}\n", quoted(&source_value));
    if let Some(branch) = branch {
        text += &format!("ref = {}\n", quoted(&branch));
    }
    if let Some(found) = detection {
        let preset = found.preset;
        text += &format!("preset = \"{}\"\n", preset.name);
        text += "# What the preset sets; uncomment a line to change it.\n";
        text += &match preset.public {
            Some(public) => format!("# public = {}\n", quoted(public)),
            None => "# (no public key: the release's top folder is served)\n".to_string(),
        };
        text += &format!("# shared = {}\n", list(preset.shared));
        text += &format!("# shared_files = {}\n", list(preset.shared_files));
        text += &format!("# writable = {}\n", list(preset.writable));
        text += "# build = [\n";
        for step in preset.build {
            let mut table = format!("run = {}", quoted(step.run));
            if let Some(folder) = step.unless_reused {
                table += &format!(", unless_reused = {}", quoted(folder));
            }
            if let Some(file) = step.if_exists {
                table += &format!(", if_exists = {}", quoted(file));
            }
            if let Some(paths) = step.writes {
                table += &format!(", writes = {}", list(paths));
            }
            if step.once {
                table += ", once = true";
            }
            text += &format!("#   {{ {table} }},\n");
        }
        text += "# ]\n";
        let after_switch: Vec<String> = preset
            .after_switch
            .iter()
            .map(|command| match command.once {
                true => format!("{{ run = {}, once = true }}", quoted(command.run)),
                false => quoted(command.run),
            })
            .collect();
        text += &format!("# after_switch = [{}]\n", after_switch.join(", "));
        let reuse: Vec<String> = preset
            .reuse
            .iter()
            .map(|(path, key)| format!("{{ path = {}, key = {} }}", quoted(path), quoted(key)))
            .collect();
        text += &format!("# reuse = [{}]\n", reuse.join(", "));
    }
    text += "# php_fpm = { address = \"/run/php/php8.2-fpm.sock\" }\n";
    text
}

/// Write the config for `source` to `target`; refuse to replace one
/// unless `force`.
pub fn init(source: &Path, target: &Path, force: bool) -> Result<(PathBuf, Option<Detection>)> {
    let source = std::path::absolute(source)
        .with_context(|| format!("cannot resolve {}", source.display()))?;
    if !source.is_dir() {
        return Err(UsageError(format!(
            "{} is not a folder: run init on the app's checkout",
            source.display()
        ))
        .into());
    }
    if target.exists() && !force {
        return Err(UsageError(format!(
            "{} exists; zdeploy init leaves it alone (--force replaces it)",
            target.display()
        ))
        .into());
    }
    let detection = detect(&source)?;
    let text = config_text(&source, detection.as_ref());
    let partial = target.with_extension("toml.zdeploy-tmp");
    std::fs::write(&partial, &text)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, target)
        .with_context(|| format!("cannot write {}", target.display()))?;
    Ok((target.to_path_buf(), detection))
}
