//! Work done on every host at once: one thread a host, every failure named
//! in one error.

use anyhow::{Result, bail};

/// Run `work` for each item on a thread of its own; the results in order,
/// or one error joining every failure's.
pub fn on_each<T: Sync, R: Send>(
    items: &[T],
    work: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let results: Vec<Result<R>> = std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .iter()
            .map(|item| {
                let work = &work;
                scope.spawn(move || work(item))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a host's thread panicked"))
            .collect()
    });
    let mut done = Vec::new();
    let mut errors = Vec::new();
    for result in results {
        match result {
            Ok(value) => done.push(value),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    Ok(done)
}
