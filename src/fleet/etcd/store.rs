//! The fleet's records in etcd, through the etcd-client crate: connecting
//! with the `[fleet]` table's TLS and credentials, JSON records read and
//! written, a lease that keeps this host registered, the leader's key taken
//! under that lease, writes only a leader whose lease still holds that key
//! can make, and notice of changes under a key.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, PutOptions,
    TlsOptions, Txn, TxnOp, WatchOptions, WatchStream,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::keys::Keys;
use super::settings::EtcdSettings;

/// How long one request may take: without quorum a request fails in this
/// time (and says so) rather than hanging.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct Store {
    endpoints: Arc<Endpoints>,
    pub keys: Keys,
    /// This host's name among the members.
    pub name: String,
}

/// One client per etcd member, made when first needed, and the one in use:
/// a request that fails for want of that member goes to the next (etcd's
/// own clients do the same; one balanced channel kept sending requests to
/// a member that was gone).
struct Endpoints {
    urls: Vec<String>,
    options: ConnectOptions,
    clients: Mutex<Vec<Option<Client>>>,
    current: AtomicUsize,
}

/// Whether a request that failed this way may succeed at another member:
/// not when etcd refused what was asked.
fn worth_another_member(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            // InvalidArgument, NotFound, AlreadyExists, PermissionDenied,
            // FailedPrecondition, OutOfRange, Unauthenticated.
            !matches!(status.code() as i32, 3 | 5 | 6 | 7 | 9 | 11 | 16)
        }
        etcd_client::Error::InvalidArgs(_) | etcd_client::Error::Utf8Error(_) => false,
        _ => true,
    }
}

impl Store {
    /// Connect to the cluster for `app`'s fleet.
    pub async fn connect(settings: &EtcdSettings, app: &str) -> Result<Store> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), REQUEST_TIMEOUT)
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        if let Some(tls) = &settings.tls {
            let read = |path: &std::path::Path| {
                std::fs::read(path).with_context(|| format!("read {}", path.display()))
            };
            let mut tls_options =
                TlsOptions::new().ca_certificate(Certificate::from_pem(read(&tls.ca)?));
            if let Some((cert, key)) = &tls.identity {
                tls_options = tls_options.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            options = options.with_tls(tls_options);
        }
        if let Some((user, file)) = &settings.auth {
            let password = std::fs::read_to_string(file)
                .with_context(|| format!("read the etcd password from {}", file.display()))?;
            options = options.with_user(user.clone(), password.trim().to_string());
        }
        let store = Store {
            endpoints: Arc::new(Endpoints {
                urls: settings.endpoints.clone(),
                options,
                clients: Mutex::new(vec![None; settings.endpoints.len()]),
                current: AtomicUsize::new(0),
            }),
            keys: Keys::new(&settings.prefix, app),
            name: settings.name.clone(),
        };
        // Reach one member now, so a wrong address or password says so.
        let reached = store
            .call(|mut client| async move { client.status().await })
            .await;
        if let Err(e) = reached {
            let refused_user = settings
                .auth
                .as_ref()
                .filter(|_| e.to_string().contains("authentication failed"));
            let why = match refused_user {
                Some((user, file)) => format!(
                    "etcd at {} refused user '{user}' with the password in {} \
                     ([fleet] user and password_file)",
                    settings.endpoints.join(", "),
                    file.display()
                ),
                None => format!("cannot reach etcd at {}", settings.endpoints.join(", ")),
            };
            return Err(anyhow!(e).context(why));
        }
        Ok(store)
    }

    /// The client of member `i`, connected when first asked for.
    async fn client_of(&self, i: usize) -> Result<Client, etcd_client::Error> {
        if let Some(client) = self.endpoints.clients.lock().expect("clients lock")[i].clone() {
            return Ok(client);
        }
        let url = &self.endpoints.urls[i];
        let client = Client::connect([url], Some(self.endpoints.options.clone())).await?;
        self.endpoints.clients.lock().expect("clients lock")[i] = Some(client.clone());
        Ok(client)
    }

    /// Run `request` on the member in use; if that member cannot answer,
    /// on the next ones in turn.
    async fn call<T, F, Fut>(&self, request: F) -> Result<T, etcd_client::Error>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let count = self.endpoints.urls.len();
        let first = self.endpoints.current.load(Ordering::Relaxed);
        let mut last = None;
        for attempt in 0..count {
            let i = (first + attempt) % count;
            let answer = match self.client_of(i).await {
                Ok(client) => request(client).await,
                Err(e) => Err(e),
            };
            match answer {
                Ok(value) => {
                    self.endpoints.current.store(i, Ordering::Relaxed);
                    return Ok(value);
                }
                Err(e) if worth_another_member(&e) => {
                    // A client that failed is made afresh next time.
                    self.endpoints.clients.lock().expect("clients lock")[i] = None;
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one endpoint"))
    }

    /// The record at `key` and its modification revision.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, i64)>> {
        let response = self
            .call(|mut client| async move { client.get(key, None).await })
            .await
            .with_context(|| format!("read {key} from etcd"))?;
        match response.kvs().first() {
            None => Ok(None),
            Some(kv) => {
                let value = serde_json::from_slice(kv.value())
                    .with_context(|| format!("{key} in etcd holds no record zdeploy wrote"))?;
                Ok(Some((value, kv.mod_revision())))
            }
        }
    }

    /// Every record under `prefix`, by the rest of its key; records that do
    /// not parse are skipped (another version's, say).
    pub async fn list<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<(String, T)>> {
        let response = self
            .call(|mut client| async move {
                client
                    .get(prefix, Some(GetOptions::new().with_prefix()))
                    .await
            })
            .await
            .with_context(|| format!("list {prefix} in etcd"))?;
        Ok(response
            .kvs()
            .iter()
            .filter_map(|kv| {
                let name = Keys::name_in(kv.key(), prefix)?;
                let value = serde_json::from_slice(kv.value()).ok()?;
                Some((name, value))
            })
            .collect())
    }

    /// The keys under `prefix`, by the rest of their key (values unread).
    pub async fn names(&self, prefix: &str) -> Result<Vec<String>> {
        let response = self
            .call(|mut client| async move {
                client
                    .get(
                        prefix,
                        Some(GetOptions::new().with_prefix().with_keys_only()),
                    )
                    .await
            })
            .await
            .with_context(|| format!("list {prefix} in etcd"))?;
        Ok(response
            .kvs()
            .iter()
            .filter_map(|kv| Keys::name_in(kv.key(), prefix))
            .collect())
    }

    pub async fn put<T: Serialize>(&self, key: &str, value: &T, lease: Option<i64>) -> Result<()> {
        let value = json(value);
        self.call(|mut client| {
            let (value, options) = (
                value.clone(),
                lease.map(|id| PutOptions::new().with_lease(id)),
            );
            async move { client.put(key, value, options).await }
        })
        .await
        .with_context(|| format!("write {key} to etcd"))?;
        Ok(())
    }

    /// Write `value` at `key` under `lease` unless the key exists: `None`
    /// when written, else what the key holds.
    pub async fn create<T: Serialize + DeserializeOwned>(
        &self,
        key: &str,
        value: &T,
        lease: i64,
    ) -> Result<Option<T>> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                json(value),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key, None)]);
        let response = self
            .call(|mut client| {
                let txn = txn.clone();
                async move { client.txn(txn).await }
            })
            .await
            .with_context(|| format!("create {key} in etcd"))?;
        if response.succeeded() {
            return Ok(None);
        }
        let held = response.op_responses().into_iter().find_map(|op| match op {
            etcd_client::TxnOpResponse::Get(get) => get
                .kvs()
                .first()
                .and_then(|kv| serde_json::from_slice(kv.value()).ok()),
            _ => None,
        });
        held.map(Some)
            .ok_or_else(|| anyhow::anyhow!("{key} in etcd holds no record zdeploy wrote"))
    }

    pub async fn delete(&self, key: &str, prefix: bool) -> Result<()> {
        self.call(|mut client| async move {
            let options = prefix.then(|| etcd_client::DeleteOptions::new().with_prefix());
            client.delete(key, options).await
        })
        .await
        .with_context(|| format!("delete {key} in etcd"))?;
        Ok(())
    }

    /// A lease of `ttl` seconds.
    pub async fn grant(&self, ttl: Duration) -> Result<i64> {
        let seconds = ttl.as_secs().max(1) as i64;
        let response = self
            .call(|mut client| async move { client.lease_grant(seconds, None).await })
            .await
            .context("take a lease in etcd")?;
        Ok(response.id())
    }

    /// Keep `lease` alive until it cannot be: returns why it ended (it
    /// expired, or no keepalive got through for a whole `ttl`). A stream
    /// broken by one etcd member going away is opened again (the client
    /// picks another member).
    pub async fn keep_alive(
        &self,
        lease: i64,
        ttl: Duration,
        on_kept: &(dyn Fn() + Sync),
    ) -> anyhow::Error {
        let every = (ttl / 3).max(Duration::from_millis(500));
        let mut last_ok = tokio::time::Instant::now();
        let mut why = anyhow!("the lease could not be kept alive");
        // No step outlives the lease it is keeping.
        let left = |last_ok: tokio::time::Instant| ttl.saturating_sub(last_ok.elapsed());
        loop {
            if last_ok.elapsed() >= ttl {
                return why.context(format!("no keepalive got through for {}s", ttl.as_secs()));
            }
            let opened = tokio::time::timeout(
                left(last_ok),
                self.call(|mut client| async move { client.lease_keep_alive(lease).await }),
            )
            .await;
            let (mut keeper, mut stream) = match opened {
                Ok(Ok(pair)) => pair,
                Ok(Err(e)) => {
                    why = anyhow!(e).context("keep the lease alive");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Err(_) => {
                    why = anyhow!("no etcd member answered");
                    continue;
                }
            };
            loop {
                let step = tokio::time::timeout(left(last_ok).min(REQUEST_TIMEOUT), async {
                    keeper.keep_alive().await?;
                    stream.message().await
                })
                .await;
                match step {
                    Ok(Ok(Some(answer))) if answer.ttl() > 0 => {
                        last_ok = tokio::time::Instant::now();
                        on_kept();
                    }
                    Ok(Ok(Some(_))) => return anyhow!("the lease expired"),
                    Ok(Ok(None)) => {
                        why = anyhow!("etcd closed the keepalive stream");
                        break;
                    }
                    Ok(Err(e)) => {
                        why = anyhow!(e).context("keep the lease alive");
                        break;
                    }
                    Err(_) => {
                        why = anyhow!("etcd stopped answering keepalives");
                        break;
                    }
                }
                tokio::time::sleep(every).await;
            }
        }
    }

    pub async fn revoke(&self, lease: i64) {
        let _ = self
            .call(|mut client| async move { client.lease_revoke(lease).await })
            .await;
    }

    /// Take the leader's key under `lease` if nobody holds it; true when
    /// this host leads (now, or already under this lease).
    pub async fn campaign(&self, lease: i64) -> Result<bool> {
        let key = self.keys.leader();
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                self.name.as_str(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let response = self
            .call(|mut client| {
                let txn = txn.clone();
                async move { client.txn(txn).await }
            })
            .await
            .context("campaign for leader")?;
        if response.succeeded() {
            return Ok(true);
        }
        let holder = response.op_responses().into_iter().find_map(|op| match op {
            etcd_client::TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.lease()),
            _ => None,
        });
        Ok(holder == Some(lease))
    }

    /// The leader's name, if there is one.
    pub async fn leader(&self) -> Result<Option<String>> {
        let key = self.keys.leader();
        let response = self
            .call(|mut client| {
                let key = key.clone();
                async move { client.get(key, None).await }
            })
            .await
            .context("read the leader from etcd")?;
        Ok(response
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }

    /// Write `puts` (each under its lease, if any) and `deletes` (a key,
    /// or every key under it) at once, only while `lease` holds the
    /// leader's key: a leader that lost it (its lease expired, someone else
    /// leads) changes nothing. False when it was not the leader.
    pub async fn as_leader(
        &self,
        lease: i64,
        puts: Vec<(String, Vec<u8>, Option<i64>)>,
        deletes: Vec<(String, bool)>,
    ) -> Result<bool> {
        let mut ops: Vec<TxnOp> = puts
            .into_iter()
            .map(|(key, value, lease)| {
                TxnOp::put(key, value, lease.map(|id| PutOptions::new().with_lease(id)))
            })
            .collect();
        ops.extend(deletes.into_iter().map(|(key, prefix)| {
            TxnOp::delete(
                key,
                prefix.then(|| etcd_client::DeleteOptions::new().with_prefix()),
            )
        }));
        let txn = Txn::new()
            .when([Compare::lease(
                self.keys.leader().as_str(),
                CompareOp::Equal,
                lease,
            )])
            .and_then(ops);
        let response = self
            .call(|mut client| {
                let txn = txn.clone();
                async move { client.txn(txn).await }
            })
            .await
            .context("write as leader")?;
        Ok(response.succeeded())
    }

    /// A stream of changes at `key` (or under it, with `prefix`).
    pub async fn watch(&self, key: &str, prefix: bool) -> Result<WatchStream> {
        self.call(|mut client| async move {
            let options = prefix.then(|| WatchOptions::new().with_prefix());
            client.watch(key, options).await
        })
        .await
        .with_context(|| format!("watch {key} in etcd"))
    }
}

/// A record as etcd stores it.
pub fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialize")
}
