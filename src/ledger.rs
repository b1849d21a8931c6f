//! The ledger: what `up` created, in order, saved to disk (temp file + rename) right after each
//! creation and before the next call. Teardown walks it in reverse. It owns the on-disk format
//! only; it never calls AWS.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One thing `up` created. The order of the ledger is the order of creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Resource {
    LocalKey {
        path: PathBuf,
    },
    KeyPair {
        name: String,
        id: String,
    },
    SecurityGroup {
        id: String,
    },
    /// An ingress rule added to a group bastion does not own (the head node's).
    IngressRule {
        group_id: String,
        rule_ids: Vec<String>,
        port: i32,
    },
    Role {
        name: String,
    },
    InlinePolicy {
        role: String,
        name: String,
    },
    AttachedPolicy {
        role: String,
        arn: String,
    },
    InstanceProfile {
        name: String,
        arn: String,
    },
    RoleInProfile {
        profile: String,
        role: String,
    },
    Instance {
        id: String,
    },
    /// The security group of an EC2 Instance Connect Endpoint bastion made (one per VPC).
    EndpointGroup {
        id: String,
    },
    /// An EC2 Instance Connect Endpoint bastion made, and its group.
    InstanceConnectEndpoint {
        id: String,
        group_id: String,
    },
    /// An EC2 Instance Connect Endpoint someone else made, which `up --via eice` uses: never
    /// removed, only named when the cluster's bastion goes.
    FoundEndpoint {
        id: String,
    },
    /// An egress rule on an endpoint's group: tcp `port` out to this cluster's head node group.
    EgressRule {
        group_id: String,
        rule_ids: Vec<String>,
        port: i32,
    },
}

impl Resource {
    pub fn describe(&self) -> String {
        match self {
            Resource::LocalKey { path } => format!("local key {}", path.display()),
            Resource::KeyPair { name, .. } => format!("key pair {name}"),
            Resource::SecurityGroup { id } => format!("security group {id}"),
            Resource::IngressRule {
                group_id,
                rule_ids,
                port,
            } => format!(
                "ingress rule {} (tcp {port}) on {group_id}",
                rule_ids.join(",")
            ),
            Resource::Role { name } => format!("IAM role {name}"),
            Resource::InlinePolicy { role, name } => format!("inline policy {name} of {role}"),
            Resource::AttachedPolicy { role, arn } => format!("policy {arn} attached to {role}"),
            Resource::InstanceProfile { name, .. } => format!("instance profile {name}"),
            Resource::RoleInProfile { profile, role } => {
                format!("role {role} in profile {profile}")
            }
            Resource::Instance { id } => format!("instance {id}"),
            Resource::EndpointGroup { id } => format!("endpoint security group {id}"),
            Resource::InstanceConnectEndpoint { id, .. } => {
                format!("EC2 Instance Connect Endpoint {id}")
            }
            Resource::FoundEndpoint { id } => {
                format!("EC2 Instance Connect Endpoint {id} (not made by bastion)")
            }
            Resource::EgressRule {
                group_id,
                rule_ids,
                port,
            } => format!(
                "egress rule {} (tcp {port}) on {group_id}",
                rule_ids.join(",")
            ),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LedgerData {
    pub cluster: String,
    pub region: String,
    pub account: String,
    /// The `up` run that wrote it (its `bastion:run` tag), so a later run can sweep what a
    /// killed one created but never recorded.
    #[serde(default)]
    pub run_id: Option<String>,
    /// Set when the run finished (or kept its resources on purpose): the next `up` never takes
    /// it for a dead run.
    #[serde(default)]
    pub complete: bool,
    pub resources: Vec<Resource>,
}

#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    pub data: LedgerData,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(
        "cannot write the ledger {path}: {error}. Check that the state directory is writable, or set --state-dir"
    )]
    Write {
        path: PathBuf,
        /// Shown in the message, so not a `source` (a chain would print it twice).
        error: std::io::Error,
    },
    #[error("cannot read the ledger {path}: {error}")]
    Read {
        path: PathBuf,
        /// Shown in the message, so not a `source` (a chain would print it twice).
        error: std::io::Error,
    },
    #[error(
        "the ledger {path} is corrupt ({error}); `bastion down` will fall back to finding resources by tag"
    )]
    Corrupt {
        path: PathBuf,
        /// Shown in the message, so not a `source` (a chain would print it twice).
        error: serde_json::Error,
    },
}
impl crate::exit::ExitStatus for LedgerError {
    fn exit_status(&self) -> Option<u8> {
        Some(crate::exit::LOCAL_STATE)
    }
}

impl Ledger {
    pub fn new(path: PathBuf, cluster: &str, region: &str, account: &str) -> Ledger {
        Ledger {
            path,
            data: LedgerData {
                cluster: cluster.into(),
                region: region.into(),
                account: account.into(),
                run_id: None,
                complete: false,
                resources: Vec::new(),
            },
        }
    }

    /// Reads the ledger at `path`; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> Result<Option<Ledger>, LedgerError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(LedgerError::Read {
                    path: path.into(),
                    error: source,
                });
            }
        };
        let data = serde_json::from_str(&text).map_err(|source| LedgerError::Corrupt {
            path: path.into(),
            error: source,
        })?;
        Ok(Some(Ledger {
            path: path.into(),
            data,
        }))
    }

    /// Moves an unreadable ledger aside (`ledger.json.corrupt-<unix time>`), so the next `up`
    /// starts clean; returns where it went.
    pub fn move_aside(path: &Path) -> Result<PathBuf, LedgerError> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".corrupt-{stamp}"));
        let to = PathBuf::from(name);
        std::fs::rename(path, &to).map_err(|source| LedgerError::Write {
            path: path.into(),
            error: source,
        })?;
        Ok(to)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn resources(&self) -> &[Resource] {
        &self.data.resources
    }

    /// Records a new resource and saves before returning, so a crash right after still knows it.
    pub fn record(&mut self, resource: Resource) -> Result<(), LedgerError> {
        tracing::debug!(resource = %resource.describe(), "recorded");
        self.data.resources.push(resource);
        self.save()
    }

    /// Forgets a resource that teardown removed, and saves.
    pub fn forget(&mut self, resource: &Resource) -> Result<(), LedgerError> {
        self.data.resources.retain(|r| r != resource);
        self.save()
    }

    pub fn save(&self) -> Result<(), LedgerError> {
        let err = |source| LedgerError::Write {
            path: self.path.clone(),
            error: source,
        };
        let text = serde_json::to_vec_pretty(&self.data).map_err(|e| err(e.into()))?;
        crate::failpoint::local(
            "ledger_save",
            || crate::files::write_file_atomic(&self.path, &text, 0o600).map_err(err),
            err,
        )
    }

    /// Removes the ledger file (after a complete teardown).
    pub fn remove(self) -> Result<(), LedgerError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(LedgerError::Write {
                path: self.path,
                error: source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_is_on_disk_before_the_next_step() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c").join("ledger.json");
        let mut l = Ledger::new(path.clone(), "c", "us-east-1", "123");
        l.record(Resource::KeyPair {
            name: "k".into(),
            id: "key-1".into(),
        })
        .unwrap();
        let on_disk = Ledger::load(&path).unwrap().unwrap();
        assert_eq!(on_disk.resources(), l.resources());
        l.record(Resource::SecurityGroup { id: "sg-1".into() })
            .unwrap();
        l.forget(&Resource::KeyPair {
            name: "k".into(),
            id: "key-1".into(),
        })
        .unwrap();
        let on_disk = Ledger::load(&path).unwrap().unwrap();
        assert_eq!(
            on_disk.resources(),
            &[Resource::SecurityGroup { id: "sg-1".into() }]
        );
        on_disk.remove().unwrap();
        assert!(Ledger::load(&path).unwrap().is_none());
    }

    #[test]
    fn a_corrupt_ledger_is_reported_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.json");
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(
            Ledger::load(&path),
            Err(LedgerError::Corrupt { .. })
        ));
    }
}
