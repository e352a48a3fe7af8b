//! Where `scripts/install-tools.sh` put each tool: `$JOURNEY_CACHE/env.d/*.env` files of
//! `KEY=VALUE` lines, one per component.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Result, anyhow};

/// Tool locations, as recorded by the installer.
#[derive(Debug, Clone, Default)]
pub struct Tools {
    vars: BTreeMap<String, String>,
}

impl Tools {
    /// The tool cache: `$JOURNEY_CACHE`, default `~/.cache/journey` (same rule as scripts/lib.sh).
    pub fn cache_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("JOURNEY_CACHE") {
            return PathBuf::from(dir);
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/tmp".into());
        home.join(".cache").join("journey")
    }

    /// Reads every `env.d/*.env` file of the tool cache.
    pub fn load() -> Result<Tools> {
        let dir = Self::cache_dir().join("env.d");
        let mut vars = BTreeMap::new();
        let entries = std::fs::read_dir(&dir).map_err(|e| {
            anyhow!(
                "no tools recorded in {} ({e}): run `make tools` (scripts/install-tools.sh) first",
                dir.display()
            )
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "env") {
                let text = std::fs::read_to_string(&path)?;
                for line in text.lines() {
                    if let Some((k, v)) = line.split_once('=') {
                        vars.insert(k.trim().to_string(), v.trim().to_string());
                    }
                }
            }
        }
        Ok(Tools { vars })
    }

    /// The value of `key`, or an error naming the installer component that provides it.
    pub fn get(&self, key: &str, component: &str) -> Result<String> {
        self.vars.get(key).cloned().ok_or_else(|| {
            anyhow!(
                "{component}: {key} is not recorded in {}: run `scripts/install-tools.sh {component}`",
                Self::cache_dir().join("env.d").display()
            )
        })
    }

    /// Like [`Tools::get`], as a path that must exist.
    pub fn path(&self, key: &str, component: &str) -> Result<PathBuf> {
        let p = PathBuf::from(self.get(key, component)?);
        if !p.exists() {
            return Err(anyhow!(
                "{component}: {} is missing: run `scripts/install-tools.sh {component}`",
                p.display()
            ));
        }
        Ok(p)
    }
}
