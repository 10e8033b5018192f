//! The client side of the admin API: the operator commands talk to the
//! running node on loopback.

use crate::config::Config;
use std::path::Path;
use std::time::Duration;

pub struct Admin {
    base: String,
    agent: ureq::Agent,
}

impl Admin {
    pub fn new(config: &Path) -> Result<Admin, String> {
        Admin::waiting(config, Duration::from_secs(60))
    }

    /// An admin client that waits up to `limit` for each answer.
    pub fn waiting(config: &Path, limit: Duration) -> Result<Admin, String> {
        let config = Config::load(config).map_err(|e| e.to_string())?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(limit))
            .build()
            .into();
        Ok(Admin {
            base: format!("http://{}/admin", config.admin_address()),
            agent,
        })
    }

    /// Calls the admin API; a non-2xx answer becomes its error message.
    pub fn call(&self, method: &str, path: &str) -> Result<serde_json::Value, String> {
        let url = format!("{}{path}", self.base);
        let result = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self.agent.post(&url).send_empty(),
        };
        let mut response = result.map_err(|e| format!("cannot reach the node at {url}: {e}"))?;
        let status = response.status();
        let body: serde_json::Value = response
            .body_mut()
            .read_json()
            .map_err(|e| format!("bad answer from {url}: {e}"))?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(body["error"]
                .as_str()
                .unwrap_or("request failed")
                .to_string())
        }
    }
}

pub fn typed<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, String> {
    serde_json::from_value(value).map_err(|e| format!("unexpected answer: {e}"))
}
