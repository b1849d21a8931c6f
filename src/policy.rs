//! The IAM documents of the proxy's role, embedded from `policies/` and rendered for the
//! caller's partition, account and region. Pure functions; nothing here calls AWS.

use serde_json::Value;

const PCLUSTER_USER: &str = include_str!("../policies/pcluster-user.json");
const DCV_LICENSE: &str = include_str!("../policies/dcv-license.json");
const EC2_TRUST: &str = include_str!("../policies/ec2-trust.json");

/// IAM's limit for one managed policy, counted without white space.
pub const MANAGED_POLICY_LIMIT: usize = 6_144;
/// IAM's limit for all inline policies of one role together.
pub const ROLE_INLINE_LIMIT: usize = 10_240;

#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub partition: &'a str,
    pub account: &'a str,
    pub region: &'a str,
}

impl Target<'_> {
    /// EC2's service principal differs in the China partition.
    pub fn ec2_principal(&self) -> &'static str {
        if self.partition == "aws-cn" {
            "ec2.amazonaws.com.cn"
        } else {
            "ec2.amazonaws.com"
        }
    }

    pub fn ssm_core_policy_arn(&self) -> String {
        format!(
            "arn:{}:iam::aws:policy/AmazonSSMManagedInstanceCore",
            self.partition
        )
    }
}

/// An inline policy: its name on the role and its minified document.
#[derive(Debug, Clone)]
pub struct InlinePolicy {
    pub name: &'static str,
    pub document: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy {name} is not valid JSON after rendering: {source}")]
    Invalid {
        name: &'static str,
        source: serde_json::Error,
    },
    #[error("policy {name} has an unrendered placeholder")]
    Placeholder { name: &'static str },
}

fn render(name: &'static str, template: &str, t: &Target) -> Result<String, PolicyError> {
    let text = template
        .replace("${PARTITION}", t.partition)
        .replace("${ACCOUNT}", t.account)
        .replace("${REGION}", t.region)
        .replace("${EC2_PRINCIPAL}", t.ec2_principal());
    if text.contains("${") {
        return Err(PolicyError::Placeholder { name });
    }
    let value: Value =
        serde_json::from_str(&text).map_err(|source| PolicyError::Invalid { name, source })?;
    // Minified: IAM counts characters, and the role's inline total is capped.
    Ok(value.to_string())
}

pub fn trust_policy(t: &Target) -> Result<String, PolicyError> {
    render("ec2-trust", EC2_TRUST, t)
}

pub fn inline_policies(t: &Target) -> Result<Vec<InlinePolicy>, PolicyError> {
    Ok(vec![
        InlinePolicy {
            name: "pcluster-user",
            document: render("pcluster-user", PCLUSTER_USER, t)?,
        },
        InlinePolicy {
            name: "dcv-license",
            document: render("dcv-license", DCV_LICENSE, t)?,
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_renders_within_iam_limits() {
        for (partition, region) in [
            ("aws", "us-east-1"),
            ("aws-cn", "cn-north-1"),
            ("aws-us-gov", "us-gov-west-1"),
        ] {
            let t = Target {
                partition,
                account: "123456789012",
                region,
            };
            let policies = inline_policies(&t).unwrap();
            let total: usize = policies.iter().map(|p| p.document.len()).sum();
            assert!(total <= ROLE_INLINE_LIMIT, "{partition}: {total}");
            for p in &policies {
                assert!(p.document.len() <= MANAGED_POLICY_LIMIT, "{}", p.name);
                assert!(
                    p.document.contains(&format!("arn:{partition}:")),
                    "{}",
                    p.name
                );
                assert!(!p.document.contains("arn:aws:") || partition == "aws");
            }
            let dcv = &policies[1].document;
            assert!(dcv.contains(&format!("dcv-license.{region}/*")));
            let trust = trust_policy(&t).unwrap();
            assert!(trust.contains(t.ec2_principal()));
        }
    }
}
