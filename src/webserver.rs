//! Web server configs that make PHP see every switch. nginx resolves the
//! context symlink once per request (`$realpath_root`), so PHP-FPM's realpath
//! cache and opcache key each script by its release path: a request runs
//! wholly on one release and never on a pruned one.

use std::fmt::Write as _;

use zdeploy_core::apache::ApacheSwitch;
use zdeploy_core::layout::Layout;

use crate::config::UsageError;

pub const DEFAULT_PHP_FPM: &str = "/run/php/php8.2-fpm.sock";
pub const DEFAULT_LISTEN: &str = "80";

pub struct NginxOptions<'a> {
    pub listen: &'a str,
    pub server_name: &'a str,
    /// A socket path, or host:port.
    pub php_fpm: &'a str,
}

/// Characters that would end a directive or interpolate a variable in an
/// nginx config: refused rather than escaped, so the config means what it says.
fn check_nginx_value(what: &str, value: &str) -> Result<(), UsageError> {
    let bad = value.is_empty()
        || value
            .chars()
            .any(|c| c.is_control() || "\"'$;{}\\#".contains(c) || (c == ' ' && what != "webroot"));
    if bad {
        return Err(UsageError(format!(
            "cannot write an nginx config: {what} '{}' is empty or contains characters nginx would misread (quotes, $, ;, braces, #, spaces)",
            value.escape_debug()
        )));
    }
    Ok(())
}

pub fn nginx(layout: &Layout, options: &NginxOptions<'_>) -> Result<String, UsageError> {
    let root = layout.context_path();
    let root = root
        .to_str()
        .ok_or_else(|| UsageError("the webroot path is not valid UTF-8".into()))?;
    check_nginx_value("webroot", root)?;
    check_nginx_value("listen address", options.listen)?;
    check_nginx_value("server name", options.server_name)?;
    check_nginx_value("php-fpm address", options.php_fpm)?;
    let upstream = if options.php_fpm.starts_with('/') {
        format!("unix:{}", options.php_fpm)
    } else {
        options.php_fpm.to_string()
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# nginx site for {root}, written by `zdeploy webserver nginx`."
    );
    let _ = writeln!(
        out,
        "# `root` is the context symlink; $realpath_root resolves it once per request."
    );
    let _ = writeln!(out, "server {{");
    let _ = writeln!(out, "    listen {};", options.listen);
    let _ = writeln!(out, "    server_name {};", options.server_name);
    let _ = writeln!(out, "    root \"{root}\";");
    let _ = writeln!(out, "    index index.php index.html;");
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "    # Dot-paths (.git, .env, .htaccess) are never served."
    );
    let _ = writeln!(out, "    location ~ /\\. {{");
    let _ = writeln!(out, "        deny all;");
    let _ = writeln!(out, "    }}");
    let _ = writeln!(out);
    let _ = writeln!(out, "    location / {{");
    let _ = writeln!(out, "        try_files $uri $uri/ /index.php$is_args$args;");
    let _ = writeln!(out, "    }}");
    let _ = writeln!(out);
    let _ = writeln!(out, "    location ~ \\.php$ {{");
    let _ = writeln!(out, "        try_files $uri =404;");
    let _ = writeln!(out, "        fastcgi_pass {upstream};");
    let _ = writeln!(out, "        include fastcgi_params;");
    let _ = writeln!(
        out,
        "        # After the include, so they win: PHP gets the release path, not the symlink."
    );
    let _ = writeln!(
        out,
        "        fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name;"
    );
    let _ = writeln!(out, "        fastcgi_param DOCUMENT_ROOT $realpath_root;");
    let _ = writeln!(out, "    }}");
    let _ = writeln!(out, "}}");
    Ok(out)
}

pub struct ApacheOptions<'a> {
    /// Port, or address:port, of the virtual host.
    pub listen: &'a str,
    pub server_name: &'a str,
    pub php_fpm: &'a str,
}

/// Like `check_nginx_value`, for a value placed inside double quotes.
fn check_apache_value(what: &str, value: &str) -> Result<(), UsageError> {
    if value.is_empty()
        || value
            .chars()
            .any(|c| c.is_control() || "\"\\<>".contains(c))
    {
        return Err(UsageError(format!(
            "cannot write an Apache config: {what} '{}' is empty or contains quotes, backslashes, angle brackets or control characters",
            value.escape_debug()
        )));
    }
    Ok(())
}

pub fn apache(
    layout: &Layout,
    switch: &ApacheSwitch,
    options: &ApacheOptions<'_>,
) -> Result<String, UsageError> {
    let webroot = layout
        .webroot()
        .to_str()
        .ok_or_else(|| UsageError("the webroot path is not valid UTF-8".into()))?;
    let include = switch
        .include
        .to_str()
        .ok_or_else(|| UsageError("the include path is not valid UTF-8".into()))?;
    check_apache_value("webroot", webroot)?;
    check_apache_value("include path", include)?;
    check_apache_value("php-fpm address", options.php_fpm)?;
    for (what, value) in [
        ("listen address", options.listen),
        ("server name", options.server_name),
    ] {
        if value.chars().any(|c| c.is_whitespace()) {
            return Err(UsageError(format!(
                "cannot write an Apache config: {what} '{value}' contains spaces"
            )));
        }
        check_apache_value(what, value)?;
    }
    let address = if options.listen.contains(':') {
        options.listen.to_string()
    } else {
        format!("*:{}", options.listen)
    };
    let handler = if options.php_fpm.starts_with('/') {
        format!("proxy:unix:{}|fcgi://localhost", options.php_fpm)
    } else {
        format!("proxy:fcgi://{}", options.php_fpm)
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Apache vhost for {webroot}/{}, written by `zdeploy webserver apache`.",
        layout.context()
    );
    let _ = writeln!(
        out,
        "# Apache hands PHP the path it was given, so the document root is the live"
    );
    let _ = writeln!(out, "# release's real path, kept in {include}");
    let _ = writeln!(
        out,
        "# and rewritten by zdeploy at each switch, followed by: {}",
        switch.reload
    );
    let _ = writeln!(
        out,
        "# Needs mod_proxy_fcgi, and Apache listening on {address}."
    );
    let _ = writeln!(out, "<VirtualHost {address}>");
    if options.server_name != "_" {
        let _ = writeln!(out, "    ServerName {}", options.server_name);
    }
    let _ = writeln!(out, "    Include \"{include}\"");
    let _ = writeln!(out, "    DirectoryIndex index.php index.html");
    let _ = writeln!(out, "    <Directory \"{webroot}\">");
    let _ = writeln!(out, "        Options FollowSymLinks");
    let _ = writeln!(out, "        AllowOverride All");
    let _ = writeln!(out, "        Require all granted");
    let _ = writeln!(out, "    </Directory>");
    let _ = writeln!(out, "    <FilesMatch \"\\.php$\">");
    let _ = writeln!(out, "        SetHandler \"{handler}\"");
    let _ = writeln!(out, "    </FilesMatch>");
    let _ = writeln!(
        out,
        "    # Dot-paths (.git, .env, .htaccess) are never served."
    );
    let _ = writeln!(out, "    <LocationMatch \"/\\.\">");
    let _ = writeln!(out, "        Require all denied");
    let _ = writeln!(out, "    </LocationMatch>");
    let _ = writeln!(out, "</VirtualHost>");
    Ok(out)
}
