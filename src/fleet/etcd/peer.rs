//! Another member's agent, as this host asks it: for a release to copy
//! instead of building it — its manifest (only the difference from the
//! release this host is live on, when the other holds that one with the
//! same content), then, as one tar, the files this host lacks — and to run
//! a command that looks after its host (`releases`, `verify`, `log`,
//! `prune`, `keep`, `doctor`), and for the user files its last carry placed. Asked with the agent's bearer token (members share
//! it), over TLS when the other agent is reached at an https URL, trusting
//! the fleet's CA when it names one.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use zdeploy_core::release_copy::Base;
use zdeploy_core::user_content::parse_list;

use super::records::Registration;
use super::settings::Membership;
use crate::agent::peer::{BASE_HEADER, DIGEST_HEADER, RunAnswer};
use crate::fleet::remote_command::Answer;

/// How long connecting to, and waiting for the answer of, another agent
/// may take (a body may stream for longer, a read at a time).
const CONNECT: Duration = Duration::from_secs(5);
const ANSWER: Duration = Duration::from_secs(120);
const READ: Duration = Duration::from_secs(60);
/// A manifest larger than this is refused (about three million files).
const MAX_MANIFEST: u64 = 512 << 20;
/// Room a tar takes beyond its files' bytes: per file a header, padding
/// and (for a long path) a header naming it, the paths themselves, and the
/// end of the archive rounded up to tar's 10 KiB records.
const TAR_OVERHEAD_PER_FILE: u64 = 4 * 512;
const TAR_OVERHEAD: u64 = 2 * 10240;

/// Another member whose agent holds the release.
#[derive(Debug, Clone)]
pub struct Peer {
    pub name: String,
    /// Its agent's URL, as it registered it.
    pub url: String,
    pub token: Option<String>,
    /// The CA to trust for an https URL (else the usual roots).
    pub ca: Option<PathBuf>,
}

/// The manifest fetched: the release's content digest, and the release it
/// is the difference from (when it is one).
#[derive(Debug, Clone)]
pub struct Fetched {
    pub digest: String,
    pub base: Option<Base>,
}

impl Peer {
    /// Member `name` as it registered, asked with `token`, trusting the
    /// fleet's CA (if it names one) for https.
    pub fn registered(
        name: &str,
        registration: Registration,
        token: Option<String>,
        membership: &Membership,
    ) -> Result<Peer> {
        let url = registration
            .agent
            .ok_or_else(|| anyhow!("{name}'s agent registered no URL (an older zdeploy?)"))?;
        Ok(Peer {
            name: name.to_string(),
            url,
            token,
            ca: membership.etcd.tls.as_ref().map(|t| t.ca.clone()),
        })
    }

    fn client(&self) -> Result<ureq::Agent> {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT))
            .timeout_recv_response(Some(ANSWER))
            .timeout_per_read(Some(READ));
        if let Some(ca) = &self.ca {
            let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert.to_owned()),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                bail!("{} holds no certificate", ca.display());
            }
            let tls = ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)))
                .build();
            config = config.tls_config(tls);
        }
        Ok(config.build().into())
    }

    fn url(&self, app: &str, release: &str, what: &str) -> String {
        format!("{}/api/apps/{app}/releases/{release}/{what}", self.url)
    }

    fn authorized<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(token) => request.header("authorization", format!("Bearer {token}")),
            None => request,
        }
    }

    /// Write the manifest of `release` to `to`: only its difference from
    /// `live` when the peer holds that release with the same digest.
    pub fn manifest(
        &self,
        app: &str,
        release: &str,
        live: Option<&Base>,
        to: &Path,
    ) -> Result<Fetched> {
        let client = self.client()?;
        let mut request = client.get(self.url(app, release, "manifest"));
        if let Some(live) = live {
            request = request
                .query("base", &live.release)
                .query("base_digest", &live.digest);
        }
        let mut response = self
            .authorized(request)
            .call()
            .map_err(|e| self.unreachable(e))?;
        self.check(&mut response, "its manifest")?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let digest = header(DIGEST_HEADER)
            .filter(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| anyhow!("{}: the manifest came without its digest", self.name))?;
        let base = match (header(BASE_HEADER), live) {
            (Some(named), Some(live)) if named == live.release => Some(live.clone()),
            (Some(named), _) => bail!(
                "{}: sent a difference from {named}, not asked for",
                self.name
            ),
            (None, _) => None,
        };
        let reader = response.body_mut().as_reader().take(MAX_MANIFEST + 1);
        let written = save(reader, to)?;
        if written > MAX_MANIFEST {
            bail!(
                "{}: the manifest is larger than {MAX_MANIFEST} bytes",
                self.name
            );
        }
        Ok(Fetched { digest, base })
    }

    /// Write the files `list` names (paths each ended by a NUL) of
    /// `release`, as one tar, to `to`; `bytes` is what they hold, which
    /// bounds what is accepted.
    pub fn files(
        &self,
        app: &str,
        release: &str,
        list: &[u8],
        (files, bytes): (u64, u64),
        to: &Path,
    ) -> Result<()> {
        let client = self.client()?;
        let request = client
            .post(self.url(app, release, "files"))
            .header("content-type", "application/octet-stream");
        let mut response = self
            .authorized(request)
            .send(list)
            .map_err(|e| self.unreachable(e))?;
        self.check(&mut response, "the files this host lacks")?;
        let most = bytes + files * TAR_OVERHEAD_PER_FILE + 2 * list.len() as u64 + TAR_OVERHEAD;
        let written = save(response.body_mut().as_reader().take(most + 1), to)
            .with_context(|| format!("{}: reading the files", self.name))?;
        if written > most {
            bail!(
                "{}: sent more than the {files} files it was asked for",
                self.name
            );
        }
        Ok(())
    }

    /// Run `zdeploy ARGS` for `app` on the peer's host, as its own command.
    pub fn run(&self, app: &str, args: &[String]) -> Result<Answer> {
        let client = self.client()?;
        let request = client
            .post(format!("{}/api/apps/{app}/run", self.url))
            .header("content-type", "application/json");
        let body = serde_json::json!({ "args": args }).to_string();
        let mut response = self
            .authorized(request)
            .send(body)
            .map_err(|e| self.unreachable(e))?;
        self.check(&mut response, "the command")?;
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_MANIFEST)
            .read_to_string()
            .map_err(|e| anyhow!("{}: reading the answer: {e}", self.name))?;
        let answer: RunAnswer = serde_json::from_str(&text)
            .map_err(|e| anyhow!("{}: an answer zdeploy did not write: {e}", self.name))?;
        Ok(Answer {
            host: self.name.clone(),
            code: answer.code,
            stdout: answer.stdout,
            stderr: answer.stderr,
        })
    }

    /// The user files the peer's last carry placed in its live release.
    pub fn user_content(&self, app: &str) -> Result<Vec<PathBuf>> {
        let client = self.client()?;
        let request = client.get(format!("{}/api/apps/{app}/user-content", self.url));
        let mut response = self
            .authorized(request)
            .call()
            .map_err(|e| self.unreachable(e))?;
        self.check(&mut response, "its list of user files")?;
        let mut bytes = Vec::new();
        response
            .body_mut()
            .as_reader()
            .take(MAX_MANIFEST)
            .read_to_end(&mut bytes)
            .with_context(|| format!("{}: reading its list of user files", self.name))?;
        Ok(parse_list(&bytes))
    }

    fn unreachable(&self, e: ureq::Error) -> anyhow::Error {
        anyhow!("cannot reach {}'s agent at {}: {e}", self.name, self.url)
    }

    /// An answer other than 200, as an error naming what the agent said.
    fn check(&self, response: &mut ureq::http::Response<ureq::Body>, what: &str) -> Result<()> {
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response
            .body_mut()
            .with_config()
            .limit(64 << 10)
            .read_to_string()
            .unwrap_or_default();
        let said = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or(text);
        bail!(
            "{}'s agent ({}) refused {what}: {} {}",
            self.name,
            self.url,
            status.as_u16(),
            said.trim()
        )
    }
}

/// Copy `reader` into a new file at `to`; the bytes written.
fn save(mut reader: impl Read, to: &Path) -> Result<u64> {
    let mut file =
        std::fs::File::create(to).with_context(|| format!("cannot write {}", to.display()))?;
    let written = std::io::copy(&mut reader, &mut file)
        .with_context(|| format!("cannot write {}", to.display()))?;
    Ok(written)
}
