//! The config file: defaults for the flags a user repeats on every call, in
//! `$XDG_CONFIG_HOME/bastion/config.toml` (`~/.config/bastion/config.toml`). Keys are the flags'
//! own names, at the top level and in per-cluster tables `[cluster.NAME]`. Precedence: the flag,
//! then the environment (`AWS_PROFILE`, `AWS_REGION`), then the cluster's table, then the top
//! level, then the AWS profile's own setting (region), then the built-in default.
//!
//! The file is the user's, but what it holds ends up in an OpenSSH configuration and in AWS
//! calls, so it is parsed as strictly as a flag: an unknown key, a value of the wrong type or a
//! malformed one is an error naming the file, the line and the column. Nothing is ignored.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// A config file that cannot be used, with where.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}:{line}:{column}: {message}")]
    At {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
}
impl crate::exit::ExitStatus for ConfigError {
    fn exit_status(&self) -> Option<u8> {
        Some(crate::exit::INVALID)
    }
}

/// One table of settings (the top level, or one cluster's).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    pub profile: Option<Spanned<String>>,
    pub region: Option<Spanned<String>>,
    pub allow_cidr: Option<Vec<Spanned<String>>>,
    pub instance_type: Option<Spanned<String>>,
    pub os: Option<Spanned<String>>,
    pub idle_stop: Option<u32>,
    pub user: Option<Spanned<String>>,
    pub identity: Option<Spanned<String>>,
    pub bastion_user: Option<Spanned<String>>,
    pub bastion_address: Option<Spanned<String>>,
    /// The way in: `proxy` or `eice` (`up`, `connect`, `ssh-config`).
    pub via: Option<Spanned<String>>,
    /// Per-cluster tables; only at the top level.
    pub cluster: Option<Spanned<BTreeMap<String, Settings>>>,
}

/// The parsed file: where it is, its text (for positions) and its tables.
#[derive(Debug, Default, Clone)]
pub struct ConfigFile {
    pub path: Option<PathBuf>,
    text: String,
    top: Settings,
}

/// Where the file is: `$XDG_CONFIG_HOME/bastion/config.toml`, else `~/.config/bastion/config.toml`.
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| dirs::home_dir().map(|h| h.join(".config")))?;
    Some(base.join("bastion").join("config.toml"))
}

/// Line and column (1-based, in characters) of byte `offset` in `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count()
        + 1;
    (line, column)
}

impl ConfigFile {
    /// Reads the file at the default path; a missing file is an empty configuration.
    pub fn load() -> Result<ConfigFile, ConfigError> {
        match default_path() {
            Some(p) => Self::load_from(&p),
            None => Ok(ConfigFile::default()),
        }
    }

    pub fn load_from(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(ConfigFile::default());
            }
            Err(e) => {
                return Err(ConfigError::Read {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                });
            }
        };
        Self::parse(path, text)
    }

    pub fn parse(path: &Path, text: String) -> Result<ConfigFile, ConfigError> {
        let top: Settings = match toml::from_str(&text) {
            Ok(s) => s,
            Err(e) => {
                let (line, column) = position(&text, e.span().map(|s| s.start).unwrap_or(0));
                return Err(ConfigError::At {
                    path: path.display().to_string(),
                    line,
                    column,
                    message: e.message().trim().to_string(),
                });
            }
        };
        let file = ConfigFile {
            path: Some(path.to_path_buf()),
            text,
            top,
        };
        file.validate()?;
        Ok(file)
    }

    fn error_at(&self, offset: usize, message: String) -> ConfigError {
        let (line, column) = position(&self.text, offset);
        ConfigError::At {
            path: self
                .path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            line,
            column,
            message,
        }
    }

    /// Every value checked as its flag's parser checks it.
    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_table(&self.top, true)?;
        if let Some(clusters) = &self.top.cluster {
            for (name, table) in clusters.get_ref() {
                if let Err(e) = crate::values::parse_cluster_name(name) {
                    return Err(self.error_at(clusters.span().start, e));
                }
                self.validate_table(table, false)?;
            }
        }
        Ok(())
    }

    fn validate_table(&self, t: &Settings, top: bool) -> Result<(), ConfigError> {
        let check = |v: &Option<Spanned<String>>,
                     parse: fn(&str) -> Result<String, String>|
         -> Result<(), ConfigError> {
            if let Some(v) = v
                && let Err(e) = parse(v.get_ref())
            {
                return Err(self.error_at(v.span().start, e));
            }
            Ok(())
        };
        check(&t.profile, crate::values::parse_profile)?;
        check(&t.region, crate::values::parse_region)?;
        check(&t.instance_type, crate::values::parse_instance_type)?;
        check(&t.user, crate::values::parse_login)?;
        check(&t.bastion_user, crate::values::parse_login)?;
        check(&t.bastion_address, crate::values::parse_address)?;
        check(&t.identity, crate::values::parse_path_text)?;
        check(&t.via, |v: &str| {
            v.parse::<crate::route::Via>()
                .map(|w| w.as_str().to_string())
        })?;
        if let Some(os) = &t.os
            && crate::userdata::ProxyOs::parse(os.get_ref()).is_none()
        {
            return Err(self.error_at(
                os.span().start,
                format!(
                    "'{}' is not an os bastion knows (al2023, ubuntu2204)",
                    os.get_ref()
                ),
            ));
        }
        for c in t.allow_cidr.iter().flatten() {
            if let Err(e) = crate::aws::parse_cidr(c.get_ref()) {
                return Err(self.error_at(c.span().start, e));
            }
        }
        if !top && let Some(inner) = &t.cluster {
            return Err(self.error_at(
                inner.span().start,
                "a [cluster.NAME] table cannot hold clusters of its own".into(),
            ));
        }
        Ok(())
    }

    /// The cluster's table, if the file has one.
    fn cluster(&self, name: Option<&str>) -> Option<&Settings> {
        let name = name?;
        self.top.cluster.as_ref()?.get_ref().get(name)
    }
}

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Flag,
    Environment(String),
    ClusterTable(String),
    TopLevel,
    Profile(String),
    BuiltIn,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag => write!(f, "flag"),
            Source::Environment(v) => write!(f, "environment ({v})"),
            Source::ClusterTable(c) => write!(f, "config file [cluster.{c}]"),
            Source::TopLevel => write!(f, "config file (top level)"),
            Source::Profile(p) => write!(f, "AWS profile {p}"),
            Source::BuiltIn => write!(f, "built-in"),
        }
    }
}

/// The keys, in the order `config show` lists them.
pub const KEYS: &[&str] = &[
    "profile",
    "region",
    "allow-cidr",
    "instance-type",
    "os",
    "idle-stop",
    "user",
    "identity",
    "bastion-user",
    "bastion-address",
    "via",
];

fn text_of(s: &Settings, key: &str) -> Option<String> {
    let one = |v: &Option<Spanned<String>>| v.as_ref().map(|v| v.get_ref().clone());
    match key {
        "profile" => one(&s.profile),
        "region" => one(&s.region),
        "allow-cidr" => s.allow_cidr.as_ref().map(|v| {
            v.iter()
                .map(|c| c.get_ref().as_str())
                .collect::<Vec<_>>()
                .join(",")
        }),
        "instance-type" => one(&s.instance_type),
        "os" => one(&s.os),
        "idle-stop" => s.idle_stop.map(|m| m.to_string()),
        "user" => one(&s.user),
        "identity" => one(&s.identity),
        "bastion-user" => one(&s.bastion_user),
        "bastion-address" => one(&s.bastion_address),
        "via" => one(&s.via),
        _ => None,
    }
}

/// The environment variable that sets `key`, when there is one.
fn env_of(key: &str) -> Vec<&'static str> {
    match key {
        "profile" => vec!["AWS_PROFILE"],
        "region" => vec!["AWS_REGION", "AWS_DEFAULT_REGION"],
        _ => vec![],
    }
}

/// The value of `key` from the file for `cluster`, and which table gave it.
pub fn from_file(file: &ConfigFile, cluster: Option<&str>, key: &str) -> Option<(String, Source)> {
    if let Some(t) = file.cluster(cluster)
        && let Some(v) = text_of(t, key)
    {
        return Some((v, Source::ClusterTable(cluster.unwrap_or_default().into())));
    }
    text_of(&file.top, key).map(|v| (v, Source::TopLevel))
}

/// The value from the environment, when `key` has a variable and it is set.
pub fn from_env(key: &str) -> Option<(String, Source)> {
    env_of(key).into_iter().find_map(|var| {
        std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .map(|v| (v, Source::Environment(var.into())))
    })
}

/// The file's value of `key` for `cluster`, unless the environment sets it (`AWS_PROFILE`,
/// `AWS_REGION`), which wins over the file. A flag the user typed wins over both: the caller
/// asks only for the settings no flag gave.
pub fn file_default(file: &ConfigFile, cluster: Option<&str>, key: &str) -> Option<String> {
    if from_env(key).is_some() {
        return None;
    }
    let (v, source) = from_file(file, cluster, key)?;
    tracing::debug!("{key} = {v} (from the {source})");
    Some(v)
}

/// `~/x` -> `$HOME/x`, as a shell would have expanded it on a command line.
pub fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), dirs::home_dir()) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(p),
    }
}

/// One row of `config show`.
#[derive(Debug, Clone, Serialize)]
pub struct Effective {
    pub key: &'static str,
    pub value: Option<String>,
    pub source: Source,
    /// The source as words.
    pub from: String,
}

/// What each setting is for `cluster`, and where it comes from: `flag` gives the value of a flag
/// the user typed for a key; `profile_region` reads the AWS profile's own region.
pub fn effective(
    flag: &dyn Fn(&str) -> Option<String>,
    file: &ConfigFile,
    cluster: Option<&str>,
    profile_region: Option<(String, String)>,
) -> Vec<Effective> {
    KEYS.iter()
        .map(|&key| {
            let (value, source) = if let Some(v) = flag(key) {
                (Some(v), Source::Flag)
            } else if let Some((v, s)) = from_env(key).or_else(|| from_file(file, cluster, key)) {
                (Some(v), s)
            } else if key == "region"
                && let Some((region, profile)) = profile_region.clone()
            {
                (Some(region), Source::Profile(profile))
            } else {
                (builtin(key), Source::BuiltIn)
            };
            Effective {
                key,
                from: source.to_string(),
                value,
                source,
            }
        })
        .collect()
}

/// The built-in defaults, in words where they depend on the cluster.
fn builtin(key: &str) -> Option<String> {
    Some(
        match key {
            "profile" => "default",
            "allow-cidr" => "your public IPv4 address /32",
            "instance-type" => "t3.medium (t4g.medium for an arm64 head node)",
            "os" => "al2023",
            "idle-stop" => "60",
            "user" => "the head node OS's login (ec2-user, ubuntu, rocky)",
            "identity" => "ssh-agent, ~/.ssh/id_*",
            "bastion-user" => "the proxy OS's login (ec2-user, ubuntu)",
            "bastion-address" => "the proxy's public IP",
            "via" => {
                "up: proxy; connect, ssh-config: the proxy where there is one, else the endpoint"
            }
            _ => return None,
        }
        .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile, ConfigError> {
        ConfigFile::parse(Path::new("/c/config.toml"), text.to_string())
    }

    #[test]
    fn positions_are_lines_and_columns_of_the_fault() {
        let e = parse("region = \"eu-west-1\"\nprofle = \"x\"\n").unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("/c/config.toml:2:1: unknown field `profle`"),
            "{text}"
        );
        let e = parse("[cluster.demo]\nidle-stop = \"soon\"\n").unwrap_err();
        assert!(e.to_string().starts_with("/c/config.toml:2:13:"), "{e}");
        let e = parse("allow-cidr = [\"10.0.0.0/8\", \"10.0.0.300/8\"]\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/c/config.toml:1:29: invalid CIDR"),
            "{e}"
        );
        let e = parse("user = \"root\\nProxyCommand evil\"\n").unwrap_err();
        assert!(e.to_string().starts_with("/c/config.toml:1:8:"), "{e}");
        let e = parse("region = \"eu-west-1\"\nregion = \"x\"\n").unwrap_err();
        assert!(e.to_string().starts_with("/c/config.toml:2:"), "{e}");
    }

    #[test]
    fn a_cluster_table_wins_over_the_top_level() {
        let f = parse(
            "region = \"eu-west-1\"\nos = \"ubuntu2204\"\n[cluster.demo]\nregion = \"us-west-2\"\n",
        )
        .unwrap();
        assert_eq!(
            from_file(&f, Some("demo"), "region"),
            Some(("us-west-2".into(), Source::ClusterTable("demo".into())))
        );
        assert_eq!(
            from_file(&f, Some("other"), "region"),
            Some(("eu-west-1".into(), Source::TopLevel))
        );
        assert_eq!(
            from_file(&f, Some("demo"), "os"),
            Some(("ubuntu2204".into(), Source::TopLevel))
        );
        assert_eq!(from_file(&f, None, "user"), None);
    }

    #[test]
    fn the_way_in_is_proxy_or_eice_per_cluster() {
        let f = parse("[cluster.demo]\nvia = \"eice\"\n").unwrap();
        assert_eq!(
            from_file(&f, Some("demo"), "via"),
            Some(("eice".into(), Source::ClusterTable("demo".into())))
        );
        assert_eq!(from_file(&f, Some("other"), "via"), None);
        let e = parse("via = \"ssm\"\n").unwrap_err();
        assert!(
            e.to_string().starts_with("/c/config.toml:1:7:")
                && e.to_string().contains("proxy or eice"),
            "{e}"
        );
    }

    #[test]
    fn clusters_are_named_as_parallelcluster_names_them_and_do_not_nest() {
        assert!(parse("[cluster.\"bad name\"]\nregion = \"eu-west-1\"\n").is_err());
        assert!(parse("[cluster.demo.cluster.x]\nregion = \"eu-west-1\"\n").is_err());
    }
}
