//! Who may reach the proxy's SSH port: this machine's public address (learned from an address
//! service), and the tcp 22 rules of the proxy's security group, each described with the IAM
//! identity that added it and the date. `up` admits its caller; `allow` admits and revokes
//! teammates' addresses; `connect` checks the caller's address before it dials (and admits it
//! with `--allow-me`). Only the proxy's own group is ever changed.

use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::aws::{AwsError, GroupRule, IngressRule, Network, SecurityGroup, Source, Tag};

/// The default public-address service; `BASTION_IP_LOOKUP_URL` overrides it (tests point it at
/// loopback).
const IP_LOOKUP_URL: &str = "https://checkip.amazonaws.com";

/// The SSH port the proxy's group admits.
pub const SSH_PORT: i32 = 22;

/// What AWS allows in a security group rule's description, and its length limit.
const DESCRIPTION_CHARS: &str = "._-:/()#,@[]+=&;{}!$* ";
const DESCRIPTION_LIMIT: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("could not learn this machine's public IPv4 address from {url} ({reason})")]
    NoAddress { url: String, reason: String },
    #[error(
        "your public address {ip} is not admitted to the SSH port of cluster '{cluster}''s proxy \
         (its security group {group}). Run `bastion allow --cluster {cluster}`, or connect with \
         --allow-me (a rule for {ip}/32 described with your IAM identity)"
    )]
    NotAdmitted {
        ip: Ipv4Addr,
        cluster: String,
        group: String,
    },
    #[error(
        "the proxy's group {group} admits {cidr} to SSH with a rule bastion did not make \
         (described {description:?}), so `bastion allow --revoke` leaves it alone. Remove it \
         where it was made (the EC2 console, your infrastructure code) if it should go"
    )]
    NotBastions {
        cidr: Ipv4Net,
        group: String,
        description: String,
    },
}
impl crate::exit::ExitStatus for AccessError {
    fn exit_status(&self) -> Option<u8> {
        Some(crate::exit::INVALID)
    }
}

/// How `up` describes the rules it adds for `--allow-cidr`.
pub const UP_RULE_DESCRIPTION: &str = "bastion: SSH from an allowed CIDR";

/// How `allow` starts the description of each rule it adds.
const ALLOW_PREFIX: &str = "bastion allow: ";

/// Whether a rule's description is one bastion writes (`up`'s, or `allow`'s).
pub fn described_by_bastion(description: &str) -> bool {
    description == UP_RULE_DESCRIPTION || description.starts_with(ALLOW_PREFIX)
}

/// This machine's public IPv4 address, as the address service sees it (5 s at most).
pub async fn my_address() -> Result<Ipv4Addr, AccessError> {
    let url = std::env::var("BASTION_IP_LOOKUP_URL").unwrap_or_else(|_| IP_LOOKUP_URL.to_string());
    let fail = |reason: String| AccessError::NoAddress {
        url: url.clone(),
        reason,
    };
    crate::context::install_crypto();
    // Building the client reads and parses the system's root certificates: tens of
    // milliseconds of blocking work, kept off the async workers.
    let client = tokio::task::spawn_blocking(|| {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
    })
    .await
    .map_err(|e| fail(e.to_string()))?
    .map_err(|e| fail(e.to_string()))?;
    let response = client
        .get(&url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| fail(e.to_string()))?;
    // An address is at most 15 characters; a longer answer is not one.
    let bytes = response.bytes().await.map_err(|e| fail(e.to_string()))?;
    let text = std::str::from_utf8(&bytes[..bytes.len().min(64)]).unwrap_or_default();
    text.trim().parse().map_err(|_| {
        fail(format!(
            "the answer was not an IPv4 address: {:?}",
            text.trim()
        ))
    })
}

/// Whether `rules` let `ip` reach tcp 22.
pub fn admits(rules: &[IngressRule], ip: Ipv4Addr) -> bool {
    rules.iter().any(|r| {
        r.covers_tcp_port(SSH_PORT)
            && matches!(&r.source, Source::Cidr(c)
                if c.parse::<Ipv4Net>().is_ok_and(|net| net.contains(&ip)))
    })
}

/// A rule's description: who added it and when, in the characters AWS allows.
pub fn description(identity_arn: &str, date: &str) -> String {
    let text = format!("{ALLOW_PREFIX}{identity_arn} {date}");
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || DESCRIPTION_CHARS.contains(*c))
        .take(DESCRIPTION_LIMIT)
        .collect()
}

/// Today's date in UTC, `YYYY-MM-DD`.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    civil_date((secs / 86_400) as i64)
}

/// Days since 1970-01-01 -> `YYYY-MM-DD` (the proleptic Gregorian calendar).
fn civil_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// One address the proxy admits, as `allow --list` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Admitted {
    pub cidr: String,
    pub description: String,
}

/// The IPv4 blocks the group admits to tcp 22.
pub async fn list(
    cloud: &(impl Network + ?Sized),
    group: &SecurityGroup,
) -> Result<Vec<Admitted>, AwsError> {
    Ok(ssh_rules(cloud, group)
        .await?
        .into_iter()
        .filter_map(|r| {
            Some(Admitted {
                cidr: r.cidr?,
                description: r.description.unwrap_or_default(),
            })
        })
        .collect())
}

async fn ssh_rules(
    cloud: &(impl Network + ?Sized),
    group: &SecurityGroup,
) -> Result<Vec<GroupRule>, AwsError> {
    Ok(cloud
        .ingress_rules(&group.id)
        .await?
        .into_iter()
        .filter(|r| {
            r.protocol == "tcp"
                && r.from_port == Some(SSH_PORT)
                && r.to_port == Some(SSH_PORT)
                && r.cidr.is_some()
        })
        .collect())
}

/// Who adds a tcp 22 rule to the proxy's group: that decides its tags and its description.
#[derive(Debug, Clone, Copy)]
pub enum Admitter<'a> {
    /// `up`: tagged like the group it sits on (the sweep finds it by them), described as
    /// [`UP_RULE_DESCRIPTION`].
    Up { tags: &'a [Tag] },
    /// `allow` and `connect --allow-me`: untagged (the rule goes whole with the group, and a
    /// teammate needs no `ec2:CreateTags`), described with who added it and when (see
    /// [`description`]; `allow --revoke` relies on it).
    Allow { description: &'a str },
}

/// Adds the tcp 22 rule admitting `cidr` to the proxy's group `group_id`. False when the group
/// already has exactly that rule.
pub async fn admit(
    cloud: &(impl Network + ?Sized),
    group_id: &str,
    cidr: Ipv4Net,
    by: Admitter<'_>,
) -> Result<bool, AwsError> {
    let (description, tags) = match by {
        Admitter::Up { tags } => (UP_RULE_DESCRIPTION, tags),
        Admitter::Allow { description } => (description, &[][..]),
    };
    match cloud
        .authorize_ingress(
            group_id,
            SSH_PORT,
            &Source::Cidr(cidr.to_string()),
            description,
            tags,
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.is_already_exists() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes the tcp 22 rule for exactly `cidr` from the proxy's group, where bastion made it
/// (`up` or `allow`); returns how many were removed. A rule someone else made for that block is
/// refused, named with its description, and nothing is removed.
pub async fn revoke(
    cloud: &(impl Network + ?Sized),
    group: &SecurityGroup,
    cidr: Ipv4Net,
) -> anyhow::Result<usize> {
    let wanted = cidr.trunc();
    let matching: Vec<GroupRule> = ssh_rules(cloud, group)
        .await?
        .into_iter()
        .filter(|r| {
            r.cidr
                .as_deref()
                .and_then(|c| c.parse::<Ipv4Net>().ok())
                .is_some_and(|c| c.trunc() == wanted)
        })
        .collect();
    if let Some(r) = matching
        .iter()
        .find(|r| !described_by_bastion(r.description.as_deref().unwrap_or_default()))
    {
        return Err(AccessError::NotBastions {
            cidr: wanted,
            group: group.id.clone(),
            description: r.description.clone().unwrap_or_default(),
        }
        .into());
    }
    let ids: Vec<String> = matching.into_iter().map(|r| r.rule_id).collect();
    if ids.is_empty() {
        return Ok(0);
    }
    match cloud.revoke_ingress(&group.id, &ids).await {
        Ok(()) => Ok(ids.len()),
        Err(e) if e.is_missing_rule() => Ok(0),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(20_788), "2026-12-01");
        assert_eq!(civil_date(19_782), "2024-02-29");
    }

    #[test]
    fn descriptions_keep_to_what_aws_allows() {
        let d = description(
            "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Res_ab12/alice@example.org",
            "2026-12-01",
        );
        assert_eq!(
            d,
            "bastion allow: arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Res_ab12/alice@example.org 2026-12-01"
        );
        let hostile = description("arn:aws:iam::1:user/x\n<script>'\"%", "2026-12-01");
        assert!(
            hostile
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || DESCRIPTION_CHARS.contains(c)),
            "{hostile}"
        );
        assert!(description(&"a".repeat(400), "2026-12-01").len() <= DESCRIPTION_LIMIT);
    }

    #[test]
    fn an_address_is_admitted_by_a_block_that_holds_it_on_port_22() {
        let rule = |proto: &str, from, to, cidr: &str| IngressRule {
            protocol: proto.into(),
            from_port: Some(from),
            to_port: Some(to),
            source: Source::Cidr(cidr.into()),
        };
        let ip: Ipv4Addr = "198.51.100.7".parse().unwrap();
        assert!(admits(&[rule("tcp", 22, 22, "198.51.100.0/24")], ip));
        assert!(!admits(&[rule("tcp", 22, 22, "198.51.101.0/24")], ip));
        assert!(!admits(&[rule("tcp", 443, 443, "0.0.0.0/0")], ip));
        assert!(!admits(&[rule("udp", 22, 22, "198.51.100.7/32")], ip));
    }
}
