//! `bastion config show [--cluster NAME]`: each setting's effective value and where it came
//! from (flag, environment, the cluster's table, the top level, the AWS profile, built-in).
//! Reads local files only; no AWS call.

use std::fmt;

use aws_config::meta::region::ProvideRegion;
use serde::Serialize;

use crate::cli::{ConfigShowArgs, Given, GlobalOpts};
use crate::config::{self, ConfigFile, Effective};
use crate::ui::emit;

#[derive(Debug, Serialize)]
pub struct Shown {
    /// The config file read (it may not exist).
    pub file: Option<String>,
    pub exists: bool,
    pub cluster: Option<String>,
    pub settings: Vec<Effective>,
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.exists) {
            (Some(p), true) => writeln!(f, "config file: {p}")?,
            (Some(p), false) => writeln!(f, "config file: {p} (none there)")?,
            (None, _) => writeln!(f, "config file: none (no home directory)")?,
        }
        if let Some(c) = &self.cluster {
            writeln!(f, "for cluster: {c}")?;
        }
        let lines: Vec<String> = self
            .settings
            .iter()
            .map(|s| {
                format!(
                    "{:<16} {:<40} {}",
                    s.key,
                    s.value.as_deref().unwrap_or("(unset)"),
                    s.from
                )
            })
            .collect();
        write!(f, "{}", lines.join("\n"))
    }
}

pub async fn show(
    global: &GlobalOpts,
    given: &Given,
    file: &ConfigFile,
    args: ConfigShowArgs,
) -> anyhow::Result<()> {
    let cluster = args.cluster.as_deref();
    // The flags typed: only the global ones are settings here.
    let flag = |key: &str| match key {
        "profile" if given.has("profile") => global.profile.clone(),
        "region" if given.has("region") => global.region.clone(),
        _ => None,
    };
    // The profile in effect, for its own region.
    let profile = config::effective(&flag, file, cluster, None)
        .into_iter()
        .find(|e| e.key == "profile")
        .and_then(|e| e.value)
        .unwrap_or_else(|| "default".into());
    let region = aws_config::profile::ProfileFileRegionProvider::builder()
        .profile_name(&profile)
        .build()
        .region()
        .await
        .map(|r| (r.to_string(), profile.clone()));
    let path = config::default_path();
    emit(
        global.output,
        &Shown {
            exists: path.as_ref().is_some_and(|p| p.exists()),
            file: path.map(|p| p.display().to_string()),
            cluster: args.cluster.clone(),
            settings: config::effective(&flag, file, cluster, region),
        },
    )
}
