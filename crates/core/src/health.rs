//! Health checks around the switch: an optional command run inside the new
//! release before it goes live, and an HTTP GET after the switch that must
//! answer the expected status in time, or the deploy switches back.

use std::path::Path;
use std::time::{Duration, Instant};

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const RETRY_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Asked after the switch (usually the live site).
    pub url: Option<String>,
    pub expect_status: u16,
    /// How long the URL may take to answer as expected, retries included;
    /// also the limit of the `before` command.
    pub timeout: Duration,
    /// Shell command run inside the new release before the switch; it must
    /// exit 0.
    pub before: Option<String>,
}

impl HealthCheck {
    /// Ask `url` until it answers `expect_status` or `timeout` has passed.
    /// The error says what it answered last.
    pub fn check_url(&self, url: &str) -> Result<(), String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(self.timeout))
            .max_redirects(0)
            .build()
            .into();
        let deadline = Instant::now() + self.timeout;
        loop {
            let answer = match agent.get(url).call() {
                Ok(response) if response.status().as_u16() == self.expect_status => return Ok(()),
                Ok(response) => format!("status {}", response.status().as_u16()),
                Err(e) => e.to_string(),
            };
            if Instant::now() + RETRY_EVERY >= deadline {
                return Err(format!(
                    "{url} did not answer {} within {}: {answer}",
                    self.expect_status,
                    crate::session::human_duration(self.timeout)
                ));
            }
            std::thread::sleep(RETRY_EVERY);
        }
    }

    /// Run the `before` command inside `release`.
    pub fn check_release(
        &self,
        release: &Path,
        user: Option<&crate::privilege::Account>,
        confinement: Option<&crate::confine::Confinement>,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<(), String> {
        match &self.before {
            Some(command) => crate::build::run_command(
                command,
                release,
                &[],
                user,
                confinement,
                self.timeout,
                on_line,
            ),
            None => Ok(()),
        }
    }
}
