//! Web server configs that make PHP see every switch. nginx resolves the
//! context symlink once per request (`$realpath_root`), so PHP-FPM's realpath
//! cache and opcache key each script by its release path: a request runs
//! wholly on one release and never on a pruned one. Apache hands PHP the path
//! it was given, so its vhost maps each request to the live release's real
//! folder through a text map that zdeploy rewrites at each switch. Caddy
//! resolves the symlink once per request with `resolve_root_symlink`.
//! All three serve the app's `public` folder when it has one, hand PHP the
//! rest of `…/index.php/rest` as PATH_INFO, and answer 404 themselves for
//! a `.php` file that does not exist.

use zdeploy_core::apache::ApacheMap;
use zdeploy_core::layout::Layout;

use crate::config::UsageError;

pub const DEFAULT_PHP_FPM: &str = "/run/php/php8.2-fpm.sock";
pub const DEFAULT_LISTEN: &str = "80";

/// What goes into either server's config.
pub struct SiteOptions<'a> {
    /// Port, or address:port.
    pub listen: &'a str,
    /// `_` for any.
    pub server_name: &'a str,
    /// A socket path, or host:port.
    pub php_fpm: &'a str,
    /// The folder of each release that is served (`public`), if not the release.
    pub public: Option<&'a std::path::Path>,
    /// The agent's port: Caddy sends its traffic reports there, by UDP
    /// on the loopback address.
    pub agent_port: u16,
}

/// The path the server's document root names: the context symlink, and
/// the app's public folder inside it.
fn document_root(layout: &Layout, public: Option<&std::path::Path>) -> std::path::PathBuf {
    zdeploy_core::public::served_dir(&layout.context_path(), public)
}

/// Whether a value sits inside double quotes in the config (spaces allowed).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Placement {
    Quoted,
    Bare,
}

/// Refuse, rather than escape, a value the server would misread, so the
/// config means what it says. `forbidden` are the characters that would end
/// a directive or string, or interpolate a variable, in that server's syntax.
fn check(
    server: &str,
    forbidden: &str,
    what: &str,
    value: &str,
    placement: Placement,
) -> Result<(), UsageError> {
    let bad_char = |c: char| {
        c.is_control()
            || forbidden.contains(c)
            || (placement == Placement::Bare && c.is_whitespace())
    };
    if value.is_empty() || value.chars().any(bad_char) {
        return Err(UsageError(format!(
            "cannot write an {server} config: {what} '{}' is empty or contains characters {server} would misread ({forbidden}{})",
            value.escape_debug(),
            if placement == Placement::Bare {
                " or spaces"
            } else {
                ""
            }
        )));
    }
    Ok(())
}

fn utf8<'a>(path: &'a std::path::Path, what: &str) -> Result<&'a str, UsageError> {
    path.to_str().ok_or_else(|| {
        UsageError(format!(
            "the {what} path {} is not valid UTF-8",
            path.display()
        ))
    })
}

pub fn nginx(layout: &Layout, options: &SiteOptions<'_>) -> Result<String, UsageError> {
    let served = document_root(layout, options.public);
    let root = utf8(&served, "webroot")?;
    let check = |what, value, placement| check("nginx", "\"'$;{}\\#", what, value, placement);
    check("webroot", root, Placement::Quoted)?;
    let (canary, canary_root) = canary_paths(layout, options.public, "nginx", "\"'$;{}\\#")?;
    let canary_cookie = zdeploy_core::canary::COOKIE;
    let bucket_file = zdeploy_core::canary::BUCKET_FILE_PREFIX;
    check("listen address", options.listen, Placement::Bare)?;
    check("server name", options.server_name, Placement::Bare)?;
    check("php-fpm address", options.php_fpm, Placement::Bare)?;
    let upstream = if options.php_fpm.starts_with('/') {
        format!("unix:{}", options.php_fpm)
    } else {
        options.php_fpm.to_string()
    };
    let window_path = layout.maintenance_window();
    let window = utf8(&window_path, "maintenance window")?;
    check("maintenance window", window, Placement::Quoted)?;
    let (listen, server_name) = (options.listen, options.server_name);
    let cookie = zdeploy_core::maintenance::BYPASS_COOKIE;
    let socket = traffic_socket(layout, "nginx")?;
    let listening_path = layout.traffic_listening();
    let listening = utf8(&listening_path, "traffic marker")?;
    check("traffic marker", listening, Placement::Quoted)?;
    // log_format lives at http level: one name per site.
    let format_name = format!("zdeploy_traffic_{}", site_id(&socket));
    let marker = zdeploy_core::traffic::MARKER;
    Ok(format!(
        r#"# nginx site for {root}, written by `zdeploy webserver nginx`.
# `root` is the context symlink; $realpath_root resolves it once per request.

# Each request's status, duration and the release that served it go to
# zdeploy's agent (for `watch`): a datagram to {socket}, dropped
# when the agent is not listening, so nginx never waits on it.
log_format {format_name} '{marker}$status $request_time $realpath_root';

server {{
    listen {listen};
    server_name {server_name};
    # Canary releases (`zdeploy deploy --canary 10%`): each client keeps a
    # bucket (two hex digits) in the cookie {canary_cookie}; while
    # {canary} exists, the buckets under its share/ are served
    # its release, the rest the live one. A new client gets a random bucket,
    # and the cookie only while a canary runs. zdeploy starts, promotes and
    # aborts a canary by writing that folder, never by a reload.
    set $zdeploy_bucket "";
    if ($request_id ~ "^([0-9a-f]{{2}})") {{ set $zdeploy_bucket $1; }}
    set $zdeploy_set_bucket "{canary_cookie}=$zdeploy_bucket; Path=/; Max-Age=2592000; SameSite=Lax; HttpOnly";
    if ($cookie_{canary_cookie} ~ "^([0-9a-f]{{2}})$") {{
        set $zdeploy_bucket $1;
        set $zdeploy_set_bucket "";
    }}
    if (!-d "{canary}/share") {{ set $zdeploy_set_bucket ""; }}
    set $zdeploy_root "{root}";
    if (-f "{canary}/share/{bucket_file}$zdeploy_bucket") {{ set $zdeploy_root "{canary_root}"; }}
    root $zdeploy_root;
    add_header Set-Cookie $zdeploy_set_bucket always;
    index index.php index.html;
    # A log at this level replaces http's: keep the usual one too.
    access_log /var/log/nginx/access.log;
    # Only while the agent listens (it removes {listening} when it
    # stops), so a stopped agent costs no error log line per request.
    set $zdeploy_report "";
    if (-f "{listening}") {{ set $zdeploy_report 1; }}
    access_log syslog:server=unix:{socket},nohostname,tag=zdeploy {format_name} if=$zdeploy_report;

    # Maintenance (`zdeploy maintenance on`, or a deploy's window): while
    # {window} exists, every request gets 503 with its page and
    # Retry-After, except from the addresses and IPv4 prefixes under its
    # allow/ and with the cookie {cookie}=<secret under its bypass/>.
    # zdeploy switches it by writing that folder, never by a reload.
    error_page 503 @zdeploy_maintenance;
    set $zdeploy_maintenance "";
    if (-d "{window}") {{ set $zdeploy_maintenance on; }}
    set $zdeploy_net24 "-";
    set $zdeploy_net16 "-";
    set $zdeploy_net8 "-";
    if ($remote_addr ~ "^(((\d+)\.\d+)\.\d+)\.\d+$") {{
        set $zdeploy_net24 $1;
        set $zdeploy_net16 $2;
        set $zdeploy_net8 $3;
    }}
    if (-f "{window}/allow/$remote_addr") {{ set $zdeploy_maintenance ""; }}
    if (-f "{window}/allow/$zdeploy_net24") {{ set $zdeploy_maintenance ""; }}
    if (-f "{window}/allow/$zdeploy_net16") {{ set $zdeploy_maintenance ""; }}
    if (-f "{window}/allow/$zdeploy_net8") {{ set $zdeploy_maintenance ""; }}
    set $zdeploy_bypass "-";
    if ($cookie_{cookie} ~ "^([0-9a-f]+)$") {{ set $zdeploy_bypass $1; }}
    if (-f "{window}/bypass/$zdeploy_bypass") {{ set $zdeploy_maintenance ""; }}
    if ($zdeploy_maintenance) {{ return 503; }}

    location @zdeploy_maintenance {{
        # A 503 of another cause stays nginx's own.
        if ($zdeploy_maintenance = "") {{ return 503; }}
        root "{window}";
        # The folder the window links to is named retry-after-<seconds>-<id>.
        set $zdeploy_retry_after "";
        if ($realpath_root ~ "/retry-after-(\d+)-[^/]*$") {{ set $zdeploy_retry_after $1; }}
        add_header Retry-After $zdeploy_retry_after always;
        add_header Cache-Control "no-store" always;
        default_type text/html;
        # nginx serves a file to GET and HEAD only; the window may also
        # have closed since this request found it open.
        set $zdeploy_page "";
        if ($request_method ~ "^(GET|HEAD)$") {{ set $zdeploy_page "{window}/page.html"; }}
        if (!-f $zdeploy_page) {{
            return 503 "<!doctype html><title>Down for maintenance</title><h1>Down for maintenance</h1><p>Please try again in a moment.</p>\n";
        }}
        rewrite ^ /page.html break;
    }}

    # Dot-paths (.git, .env, .htaccess) are never served.
    location ~ /\. {{
        deny all;
    }}

    location / {{
        try_files $uri $uri/ /index.php$is_args$args;
    }}

    # `/index.php/Some/Page` runs index.php with PATH_INFO `/Some/Page`.
    location ~ [^/]\.php(/|$) {{
        fastcgi_split_path_info ^(.+?\.php)(/.*)$;
        # try_files empties $fastcgi_path_info: keep it first.
        set $zdeploy_path_info $fastcgi_path_info;
        # A script that does not exist is a 404 here, never handed to PHP.
        try_files $fastcgi_script_name =404;
        fastcgi_pass {upstream};
        include fastcgi_params;
        # After the include, so they win: PHP gets the release path, not the symlink.
        fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name;
        fastcgi_param DOCUMENT_ROOT $realpath_root;
        fastcgi_param PATH_INFO $zdeploy_path_info;
    }}
}}
"#
    ))
}

/// The canary folder a site tests per request, and the root it serves the
/// canary's release from (through that folder), checked for `server`.
fn canary_paths(
    layout: &Layout,
    public: Option<&std::path::Path>,
    server: &str,
    forbidden: &str,
) -> Result<(String, String), UsageError> {
    let folder = layout.canary_link();
    let root = zdeploy_core::public::served_dir(&folder.join("release"), public);
    let (folder, root) = (utf8(&folder, "canary")?, utf8(&root, "canary")?);
    check(server, forbidden, "canary folder", root, Placement::Quoted)?;
    Ok((folder.to_string(), root.to_string()))
}

/// The longest path a unix socket may have (`sun_path` less its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The app's traffic socket, as a site may name it unquoted.
fn traffic_socket(layout: &Layout, server: &str) -> Result<String, UsageError> {
    let path = layout.traffic_socket();
    let socket = utf8(&path, "traffic socket")?;
    check(
        server,
        "\"'$;{}\\#%<>",
        "traffic socket",
        socket,
        Placement::Quoted,
    )?;
    if socket.contains([',', ' ']) || socket.len() > MAX_SOCKET_PATH {
        return Err(UsageError(format!(
            "{server}: the traffic socket {socket} must have no comma or space and at most {MAX_SOCKET_PATH} bytes (a shorter webroot path)"
        )));
    }
    Ok(socket.to_string())
}

/// A short name for a site, the same each time it is generated: the first
/// hex digits of the SHA-256 of `text`.
fn site_id(text: &str) -> String {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(text.as_bytes());
    hex::encode(&digest[..6])
}

pub fn apache(
    layout: &Layout,
    map: &ApacheMap,
    options: &SiteOptions<'_>,
) -> Result<String, UsageError> {
    let webroot = utf8(layout.webroot(), "webroot")?;
    let map_path = utf8(&map.path, "map path")?;
    // `$` and `%` would be read as back-references or variables by mod_rewrite.
    let check = |what, value, placement| check("Apache", "\"\\<>$%", what, value, placement);
    check("webroot", webroot, Placement::Quoted)?;
    check("map path", map_path, Placement::Quoted)?;
    check("php-fpm address", options.php_fpm, Placement::Quoted)?;
    check("listen address", options.listen, Placement::Bare)?;
    check("server name", options.server_name, Placement::Bare)?;
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
    let server_name = match options.server_name {
        "_" => String::new(),
        name => format!("    ServerName {name}\n"),
    };
    let context = layout.context();
    let public = match options.public {
        Some(public) => {
            let public = utf8(public, "public")?;
            check("public folder", public, Placement::Quoted)?;
            format!("/{public}")
        }
        None => String::new(),
    };
    let window_path = layout.maintenance_window();
    let window = utf8(&window_path, "maintenance window")?;
    // The window's path also sits inside single quotes in an expression.
    crate::webserver::check(
        "Apache",
        "\"\\<>$%'",
        "maintenance window",
        window,
        Placement::Quoted,
    )?;
    let cookie = zdeploy_core::maintenance::BYPASS_COOKIE;
    let canary_cookie = zdeploy_core::canary::COOKIE;
    let bucket_key = zdeploy_core::apache::BUCKET_KEY;
    let socket = traffic_socket(layout, "Apache")?;
    let relay_path = std::env::current_exe()
        .map_err(|e| UsageError(format!("Apache: cannot name this zdeploy binary: {e}")))?;
    let relay = utf8(&relay_path, "zdeploy binary")?;
    check("zdeploy binary", relay, Placement::Quoted)?;
    if relay.contains(' ') {
        return Err(UsageError(format!(
            "Apache: the zdeploy binary's path {relay} has a space; Apache's piped log cannot run it"
        )));
    }
    let marker = zdeploy_core::traffic::MARKER;
    Ok(format!(
        r#"# Apache vhost for {webroot}/{context}, written by `zdeploy webserver apache`.
# Apache hands PHP the path it was given, so every request is mapped to the
# live release's real folder, named in {map_path}:
# zdeploy rewrites that map at each switch and Apache rereads it when it
# changes, so no reload is needed. Needs mod_rewrite and mod_proxy_fcgi (and
# mod_headers for Retry-After in maintenance), and Apache listening on
# {address}.
<VirtualHost {address}>
{server_name}    DocumentRoot "{webroot}/{context}{public}"
    RewriteEngine On
    RewriteMap zdeploy "txt:{map_path}"
    # Maintenance (`zdeploy maintenance on`, or a deploy's window): while
    # {window} exists, every request gets 503 with its page
    # and Retry-After, except from the addresses and IPv4 prefixes under its
    # allow/ and with the cookie {cookie}=<secret under its bypass/>.
    # zdeploy switches it by writing that folder, never by a reload.
    RewriteCond "%{{REMOTE_ADDR}}" "^(((\d+)\.\d+)\.\d+)\.\d+$"
    RewriteRule "^" "-" [E=ZDEPLOY_NET24:%1,E=ZDEPLOY_NET16:%2,E=ZDEPLOY_NET8:%3]
    RewriteCond "%{{HTTP_COOKIE}}" "(?:^|;\s*){cookie}=([0-9a-f]+)(?:;|$)"
    RewriteRule "^" "-" [E=ZDEPLOY_BYPASS:%1]
    RewriteCond "%{{ENV:REDIRECT_STATUS}}" "=503"
    RewriteCond "{window}/page.html" -f
    RewriteRule "^/zdeploy-maintenance\.html$" "{window}/page.html" [L]
    RewriteCond "{window}" -d
    RewriteCond "%{{ENV:REDIRECT_STATUS}}" "^$"
    RewriteCond "{window}/allow/%{{REMOTE_ADDR}}" !-f
    RewriteCond "{window}/allow/%{{ENV:ZDEPLOY_NET24}}" !-f
    RewriteCond "{window}/allow/%{{ENV:ZDEPLOY_NET16}}" !-f
    RewriteCond "{window}/allow/%{{ENV:ZDEPLOY_NET8}}" !-f
    RewriteCond "{window}/bypass/%{{ENV:ZDEPLOY_BYPASS}}" !-f
    RewriteRule "^" "-" [R=503,L]
    <If "-d '{window}'">
        ErrorDocument 503 /zdeploy-maintenance.html
    </If>
    <IfModule mod_headers.c>
        Header always set Retry-After "expr=%{{file:{window}/retry-after}}" "expr=%{{REQUEST_STATUS}} == 503 && -f '{window}/retry-after'"
        Header always set Cache-Control "no-store" "expr=%{{REQUEST_STATUS}} == 503 && -d '{window}'"
    </IfModule>
    # Canary releases (`zdeploy deploy --canary 10%`): each client keeps a
    # bucket (two hex digits) in the cookie {canary_cookie}; while one runs, the
    # map names the canary's release for each of its buckets
    # (`{context}@<bucket>`), the live one for the rest. A new client gets a
    # random bucket (from the map's {bucket_key}), and the cookie.
    RewriteMap zdeploy_bucket "rnd:{map_path}"
    RewriteCond "%{{HTTP_COOKIE}}" "(?:^|;\s*){canary_cookie}=([0-9a-f][0-9a-f])(?:;|$)"
    RewriteRule "^" "-" [E=ZDEPLOY_BUCKET:%1]
    RewriteCond "%{{ENV:ZDEPLOY_BUCKET}}" "^$"
    RewriteCond "${{zdeploy:{context}@canary|}}" "!^$"
    RewriteCond "${{zdeploy_bucket:{bucket_key}|}}" "^([0-9a-f][0-9a-f])$"
    RewriteRule "^" "-" [E=ZDEPLOY_BUCKET:%1,E=ZDEPLOY_NEW_BUCKET:%1]
    <IfModule mod_headers.c>
        Header always set Set-Cookie "{canary_cookie}=%{{ZDEPLOY_NEW_BUCKET}}e; Path=/; Max-Age=2592000; SameSite=Lax; HttpOnly" env=ZDEPLOY_NEW_BUCKET
    </IfModule>
    RewriteCond "${{zdeploy:{context}@%{{ENV:ZDEPLOY_BUCKET}}|${{zdeploy:{context}|{context}}}}}" "^(.+)$"
    RewriteRule "^/(.*)$" "{webroot}/%1{public}/$1" [E=ZDEPLOY_RELEASE:{webroot}/%1{public}]
    ProxyFCGISetEnvIf "true" DOCUMENT_ROOT "%{{reqenv:ZDEPLOY_RELEASE}}"
    DirectoryIndex index.php index.html
    # Each request's status, duration and release go to
    # zdeploy's agent (for `watch`), through a relay that drops what nobody
    # reads, so Apache never waits on it. A log here replaces the server's
    # for this site: keep the usual one too.
    CustomLog /var/log/apache2/access.log combined
    LogFormat "{marker}%>s %{{us}}Tus %{{ZDEPLOY_RELEASE}}e" zdeploy_traffic
    CustomLog "||{relay} traffic-relay {socket}" zdeploy_traffic
    <Directory "{webroot}">
        Options FollowSymLinks
        AllowOverride All
        Require all granted
    </Directory>
    # `/index.php/Some/Page` runs index.php with PATH_INFO `/Some/Page`; a
    # script that does not exist is a 404 here, never handed to PHP.
    AcceptPathInfo On
    <FilesMatch "\.php$">
        <If "-f %{{REQUEST_FILENAME}}">
            SetHandler "{handler}"
        </If>
    </FilesMatch>
    # Dot-paths (.git, .env, .htaccess) are never served.
    <LocationMatch "/\.">
        Require all denied
    </LocationMatch>
</VirtualHost>
"#
    ))
}

pub fn caddy(layout: &Layout, options: &SiteOptions<'_>) -> Result<String, UsageError> {
    let served = document_root(layout, options.public);
    let root = utf8(&served, "webroot")?;
    // Braces are placeholders and blocks, `#` starts a comment, quotes and
    // backslashes end or escape a token.
    let check = |what, value, placement| check("Caddy", "\"`\\{}#", what, value, placement);
    check("webroot", root, Placement::Quoted)?;
    check("listen address", options.listen, Placement::Bare)?;
    check("server name", options.server_name, Placement::Bare)?;
    check("php-fpm address", options.php_fpm, Placement::Bare)?;
    let (bind, port) = match options.listen.rsplit_once(':') {
        Some((address, port)) => (
            format!(
                "\tbind {}\n",
                address.trim_start_matches('[').trim_end_matches(']')
            ),
            port,
        ),
        None => (String::new(), options.listen),
    };
    let host = match options.server_name {
        "_" => "",
        name => name,
    };
    let upstream = if options.php_fpm.starts_with('/') {
        format!("unix/{}", options.php_fpm)
    } else {
        options.php_fpm.to_string()
    };
    let window_path = layout.maintenance_window();
    let window = utf8(&window_path, "maintenance window")?;
    check("maintenance window", window, Placement::Quoted)?;
    let cookie = zdeploy_core::maintenance::BYPASS_COOKIE;
    let (canary, canary_root) = canary_paths(layout, options.public, "Caddy", "\"`\\{}#")?;
    let canary_cookie = zdeploy_core::canary::COOKIE;
    let bucket_file = zdeploy_core::canary::BUCKET_FILE_PREFIX;
    let reports = std::net::SocketAddr::from(([127, 0, 0, 1], options.agent_port));
    let root_prefix = zdeploy_core::traffic::CADDY_ROOT_PREFIX;
    Ok(format!(
        r#"# Caddy site for {root}, written by `zdeploy webserver caddy` (Caddy 2.6 or later).
# `root` is the context symlink; resolve_root_symlink resolves it once per
# request, so PHP is handed the live release's real path. Plain HTTP on port
# {port}: for automatic HTTPS, make the address the site's name alone.
http://{host}:{port} {{
{bind}	root * "{root}"
	# Canary releases (`zdeploy deploy --canary 10%`): each client keeps a
	# bucket (two hex digits) in the cookie {canary_cookie}; while
	# {canary} exists, the buckets under its share/ are served
	# its release, the rest the live one. A new client gets a random bucket
	# (from the request's UUID), and the cookie only while a canary runs.
	# zdeploy starts, promotes and aborts a canary by writing that folder.
	map "{{http.request.cookie.{canary_cookie}}}/{{http.request.uuid}}" {{zdeploy_bucket}} {{zdeploy_new_bucket}} {{
		~^([0-9a-f][0-9a-f])/ "${{1}}" ""
		~([0-9a-f][0-9a-f])[0-9a-f]+-[0-9a-f-]+$ "${{1}}" "${{1}}"
		default "" ""
	}}
	@zdeploy_canary file {{
		root "{canary}/share"
		try_files /{bucket_file}{{zdeploy_bucket}}
	}}
	root @zdeploy_canary "{canary_root}"
	@zdeploy_new_client {{
		vars_regexp {{zdeploy_new_bucket}} ^[0-9a-f]
		file {{
			root "{canary}"
			try_files /share/
		}}
	}}
	header @zdeploy_new_client Set-Cookie "{canary_cookie}={{zdeploy_new_bucket}}; Path=/; Max-Age=2592000; SameSite=Lax; HttpOnly"
	# Each request's status, duration and the root it was served from go
	# to zdeploy's agent (for `watch`) as a UDP datagram to
	# {reports}, which is dropped when the agent is not
	# listening, so Caddy never waits on it. The root travels as the log's
	# user id (Caddy's log has no field for it; basicauth would replace
	# it); the client's address, URL and headers are left out.
	map {{http.vars.root}} {{http.auth.user.id}} {{
		default "{root_prefix}{{http.vars.root}}"
	}}
	log {{
		output net udp/{reports}
		format filter {{
			wrap json
			fields {{
				request delete
				resp_headers delete
			}}
		}}
	}}
	# Maintenance (`zdeploy maintenance on`, or a deploy's window): while
	# {window} exists, every request gets 503 with its page
	# and Retry-After, except from the addresses and IPv4 prefixes under its
	# allow/ and with the cookie {cookie}=<secret under its bypass/>.
	# zdeploy switches it by writing that folder, never by a reload.
	map {{remote_host}} {{zdeploy_net24}} {{zdeploy_net16}} {{zdeploy_net8}} {{
		~^(((\d+)\.\d+)\.\d+)\.\d+$ "${{1}}" "${{2}}" "${{3}}"
		default - - -
	}}
	map {{http.request.cookie.{cookie}}} {{zdeploy_bypass}} {{
		~^([0-9a-f]+)$ "${{1}}"
		default -
	}}
	@zdeploy_maintenance {{
		file {{
			root "{window}"
			try_files /retry-after-*
		}}
		not file {{
			root "{window}/allow"
			try_files /{{remote_host}} /{{zdeploy_net24}} /{{zdeploy_net16}} /{{zdeploy_net8}}
		}}
		not file {{
			root "{window}/bypass"
			try_files /{{zdeploy_bypass}}
		}}
	}}
	handle @zdeploy_maintenance {{
		# The file found above is retry-after-<seconds>.
		map {{http.matchers.file.relative}} {{zdeploy_retry_after}} {{
			~^/retry-after-([0-9]+)$ "${{1}}"
		}}
		header Retry-After {{zdeploy_retry_after}}
		header Cache-Control no-store
		root * "{window}"
		# The window may have closed since this request found it open.
		@zdeploy_page file /page.html
		handle @zdeploy_page {{
			rewrite * /page.html
			file_server {{
				status 503
			}}
		}}
		handle {{
			header Content-Type "text/html; charset=utf-8"
			respond "<!doctype html><title>Down for maintenance</title><h1>Down for maintenance</h1><p>Please try again in a moment.</p>" 503
		}}
	}}
	# Dot-paths (.git, .env, .htaccess) are never served.
	@dot_paths path */.*
	respond @dot_paths 404
	# A script that does not exist is a 404 here, never handed to PHP.
	@missing_php {{
		path *.php
		not file
	}}
	respond @missing_php 404
	# Front controller, and `/index.php/Some/Page` with PATH_INFO `/Some/Page`.
	php_fastcgi {upstream} {{
		resolve_root_symlink
	}}
	file_server
}}
"#
    ))
}
