//! Helpers the subcommands share for their options.

use anyhow::bail;
use serde_json::{Map, Value};

/// The parameters from `--params` and `--set`, in that order.
pub fn parse_params(json: Option<&str>, set: &[String]) -> anyhow::Result<Value> {
    let mut params = match json {
        None => Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => m,
            Ok(_) => bail!("--params must be a JSON object, like '{{\"lr\": 0.01}}'"),
            Err(e) => bail!("--params is not valid JSON: {e}"),
        },
    };
    for item in set {
        let Some((key, value)) = item.split_once('=') else {
            bail!("--set {item:?}: expected KEY=VALUE");
        };
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.into()));
        params.insert(key.trim().to_string(), value);
    }
    Ok(Value::Object(params))
}
