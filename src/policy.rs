//! The IAM documents of the proxy's role, embedded from `policies/` and rendered for the
//! caller's partition, account and region. Pure functions; nothing here calls AWS.

use serde_json::Value;

const PCLUSTER_USER: &str = include_str!("../policies/pcluster-user.json");
const DCV_LICENSE: &str = include_str!("../policies/dcv-license.json");
const EC2_TRUST: &str = include_str!("../policies/ec2-trust.json");
const PROXY_TAGS: &str = include_str!("../policies/proxy-tags.json");
const BASTION_USER: &str = include_str!("../policies/bastion-user.json");
const BASTION_USER_EICE: &str = include_str!("../policies/bastion-user-eice.json");
const BASTION_OPERATOR: &str = include_str!("../policies/bastion-operator.json");

/// IAM policy variables a document may keep: IAM fills them in per request. Every other `${...}`
/// is a placeholder of ours and must be rendered. `ec2:InstanceID` is documented for EC2's
/// instance resource, and IAM takes any single-valued condition key as a variable.
const IAM_VARIABLES: &[&str] = &["${ec2:InstanceID}"];

/// What `AmazonSSMManagedInstanceCore` grants: the Systems Manager agent's own calls.
const SSM_CORE_ACTIONS: &[&str] = &[
    "ssm:DescribeAssociation",
    "ssm:GetDeployablePatchSnapshotForInstance",
    "ssm:GetDocument",
    "ssm:DescribeDocument",
    "ssm:GetManifest",
    "ssm:GetParameter",
    "ssm:GetParameters",
    "ssm:ListAssociations",
    "ssm:ListInstanceAssociations",
    "ssm:PutInventory",
    "ssm:PutComplianceItems",
    "ssm:PutConfigurePackageResult",
    "ssm:UpdateAssociationStatus",
    "ssm:UpdateInstanceAssociationStatus",
    "ssm:UpdateInstanceInformation",
    // Every action of these two services is the agent's side.
    "ssmmessages:*",
    "ec2messages:*",
];

/// The permissions boundary's name (under `/bastion/`).
pub const BOUNDARY_NAME: &str = "bastion-proxy-boundary";

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

    /// The permissions boundary every role the operator creates carries: a managed policy an
    /// administrator creates once from `bastion policy boundary`, at this path and name.
    pub fn boundary_arn(&self) -> String {
        format!(
            "arn:{}:iam::{}:policy{}{}",
            self.partition,
            self.account,
            crate::footprint::IAM_PATH,
            BOUNDARY_NAME
        )
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
        .replace("${EC2_PRINCIPAL}", t.ec2_principal())
        .replace("${BOUNDARY}", &t.boundary_arn());
    let mut rest = text.as_str();
    while let Some(start) = rest.find("${") {
        let tail = &rest[start..];
        let end = tail.find('}').map(|e| e + 1).unwrap_or(tail.len());
        if !IAM_VARIABLES.contains(&&tail[..end]) {
            return Err(PolicyError::Placeholder { name });
        }
        rest = &tail[end..];
    }
    let value: Value =
        serde_json::from_str(&text).map_err(|source| PolicyError::Invalid { name, source })?;
    // Minified: IAM counts characters, and the role's inline total is capped.
    Ok(value.to_string())
}

/// Which clusters a teammate's policy covers: every one (by the tags alone), or one, named by
/// its tag values and, where they exist, by its proxy's, group's and head node's ids.
#[derive(Debug, Clone, Copy, Default)]
pub struct UserScope<'a> {
    pub cluster: Option<&'a str>,
    pub proxy_instance: Option<&'a str>,
    pub proxy_group: Option<&'a str>,
    pub head_node: Option<&'a str>,
}

/// What a teammate needs: find the proxy and the head node, push a one-time key to the proxy
/// (EC2 Instance Connect, for the teammate user only), start it, admit or revoke addresses on
/// its group, and read the host keys the proxy and the head node print to their consoles.
/// Nothing that creates or removes a resource. With a cluster in `scope`, each grant names that
/// cluster's resources instead of any that carry the tag.
pub fn user_policy(t: &Target, scope: &UserScope) -> Result<String, PolicyError> {
    let name = "bastion-user";
    let minified = render(name, BASTION_USER, t)?;
    let mut doc: Value =
        serde_json::from_str(&minified).map_err(|source| PolicyError::Invalid { name, source })?;
    if let Some(cluster) = scope.cluster {
        let arn = |kind: &str, id: &str| {
            Value::String(format!(
                "arn:{}:ec2:{}:{}:{kind}/{id}",
                t.partition, t.region, t.account
            ))
        };
        let tagged = |key: &str| serde_json::json!({ "StringEquals": { key: cluster } });
        let statements = doc["Statement"].as_array_mut().into_iter().flatten();
        for st in statements {
            let sid = st["Sid"].as_str().unwrap_or_default().to_string();
            let (resource, key) = match sid.as_str() {
                "OneTimeKeysForTheTeammateLoginOnly"
                | "StartAProxyTheIdleTimerStopped"
                | "ReadTheProxyHostKeys" => (
                    scope.proxy_instance.map(|i| arn("instance", i)),
                    "aws:ResourceTag/bastion:cluster",
                ),
                "AdmitAddressesToTheProxyGroupOnly" => (
                    scope.proxy_group.map(|g| arn("security-group", g)),
                    "aws:ResourceTag/bastion:cluster",
                ),
                "ReadTheHeadNodeHostKeys" => (
                    scope.head_node.map(|h| arn("instance", h)),
                    "aws:ResourceTag/parallelcluster:cluster-name",
                ),
                _ => continue,
            };
            if let Some(r) = resource {
                st["Resource"] = r;
            }
            // The tag's value as well as its presence: another cluster's resources carry it too.
            let condition = &mut st["Condition"];
            if let Some(c) = condition.as_object_mut() {
                c.remove("Null");
                let extra = tagged(key);
                for (op, keys) in extra.as_object().into_iter().flatten() {
                    let entry = c.entry(op.clone()).or_insert_with(|| serde_json::json!({}));
                    if let (Some(e), Some(k)) = (entry.as_object_mut(), keys.as_object()) {
                        e.extend(k.clone());
                    }
                }
            }
        }
    }
    serde_json::to_string_pretty(&doc).map_err(|source| PolicyError::Invalid { name, source })
}

/// One cluster's way in through an EC2 Instance Connect Endpoint, as a teammate's policy names
/// it.
#[derive(Debug, Clone, Copy)]
pub struct EndpointScope<'a> {
    pub cluster: &'a str,
    pub endpoint_id: &'a str,
    pub head_node: &'a str,
    pub head_ip: std::net::Ipv4Addr,
}

/// What a teammate needs to reach one cluster's head node through an EC2 Instance Connect
/// Endpoint, and nothing else: find the head node and the endpoint, read the head node's
/// console (its host keys), and open tunnels through that endpoint to the head node's IP, port
/// 22, for at most an hour. No proxy, no one-time key, no address list: the identity is the
/// gate, and the teammate's own key on the head node is the login.
pub fn endpoint_user_policy(t: &Target, scope: &EndpointScope) -> Result<String, PolicyError> {
    let name = "bastion-user-eice";
    // Every value is checked to be an id, a cluster name or an address before it is written.
    let word = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ![scope.cluster, scope.endpoint_id, scope.head_node]
        .iter()
        .all(|s| word(s))
    {
        return Err(PolicyError::Placeholder { name });
    }
    let template = BASTION_USER_EICE
        .replace("${CLUSTER}", scope.cluster)
        .replace("${ENDPOINT}", scope.endpoint_id)
        .replace("${HEAD_NODE}", scope.head_node)
        .replace("${HEAD_IP}", &scope.head_ip.to_string());
    let minified = render(name, &template, t)?;
    let doc: Value =
        serde_json::from_str(&minified).map_err(|source| PolicyError::Invalid { name, source })?;
    serde_json::to_string_pretty(&doc).map_err(|source| PolicyError::Invalid { name, source })
}

/// The statements of the operator's policy that write IAM: creating, filling and removing the
/// proxy's role and profile, each role only with the boundary. Left out where an administrator
/// made the role and profile (`up --instance-profile`).
const OPERATOR_IAM_WRITES: &[&str] = &[
    "ReadTheBoundary",
    "RolesOnlyWithTheBoundary",
    "TagTheProxysRole",
    "AttachTheSsmCoreOnly",
    "ProfilesUnderBastionsPath",
    "TheBoundaryStays",
    "NoOtherBoundary",
    // The first endpoint of an account makes EC2 Instance Connect's service-linked role: where
    // an administrator made the proxy's role, they make that one too (or the first endpoint).
    "EicLinkedRoleOnFirstUse",
];

/// What `up`, `down` and `doctor --fix` need. With `pre_provisioned`, no IAM write at all: the
/// proxy's role and profile are an administrator's (`bastion policy proxy-role`), passed to EC2.
pub fn operator_policy(t: &Target, pre_provisioned: bool) -> Result<String, PolicyError> {
    let name = "bastion-operator";
    let mut doc: Value = serde_json::from_str(&render(name, BASTION_OPERATOR, t)?)
        .map_err(|source| PolicyError::Invalid { name, source })?;
    if pre_provisioned && let Some(statements) = doc["Statement"].as_array_mut() {
        statements.retain(|st| !OPERATOR_IAM_WRITES.contains(&st["Sid"].as_str().unwrap_or("")));
    }
    serde_json::to_string_pretty(&doc).map_err(|source| PolicyError::Invalid { name, source })
}

/// The permissions boundary of the proxy's role: the union of what bastion gives the role (its
/// inline policies, the ParallelCluster user policy included, and Session Manager's core), the
/// Denies kept. A role the operator creates can never hold more, whatever it attaches.
pub fn boundary_policy(t: &Target) -> Result<String, PolicyError> {
    let name = "bastion-proxy-boundary";
    let mut statements = Vec::new();
    for p in inline_policies(t, true)? {
        let doc: Value = serde_json::from_str(&p.document)
            .map_err(|source| PolicyError::Invalid { name, source })?;
        // Without their Sids: a managed policy holds 6,144 characters.
        statements.extend(doc["Statement"].as_array().into_iter().flatten().map(|st| {
            let mut st = st.clone();
            if let Some(o) = st.as_object_mut() {
                o.remove("Sid");
            }
            st
        }));
    }
    // AmazonSSMManagedInstanceCore's actions (the managed policy bastion attaches), one by one:
    // the agent's side only (`ssm:*` would let a bounded role run commands on other instances).
    statements.push(serde_json::json!({
        "Sid": "SessionManagerCore",
        "Effect": "Allow",
        "Action": SSM_CORE_ACTIONS,
        "Resource": "*"
    }));
    // Whatever trust policy a bounded role gets, its credentials work only on an instance
    // (or through an AWS service acting for it): not for a person who assumes it.
    statements.push(serde_json::json!({
        "Sid": "OnAnInstanceOnly",
        "Effect": "Deny",
        "Action": "*",
        "Resource": "*",
        "Condition": {
            "Null": { "ec2:SourceInstanceARN": "true" },
            "Bool": { "aws:ViaAWSService": "false" }
        }
    }));
    let doc = serde_json::json!({ "Version": "2012-10-17", "Statement": statements });
    Ok(doc.to_string())
}

/// A CloudFormation template for an administrator: the proxy's role and instance profile for
/// one cluster, under `/bastion/` with the names bastion gives them (so the proxy's identity
/// check holds), the role's policies as `up` would attach them, no `bastion:cluster` tag (so
/// `down` never removes them).
pub fn proxy_role_template(
    t: &Target,
    names: &crate::footprint::Names,
    cluster: &str,
    pcluster: bool,
) -> Result<String, PolicyError> {
    let name = "proxy-role";
    let parse = |text: &str| -> Result<Value, PolicyError> {
        serde_json::from_str(text).map_err(|source| PolicyError::Invalid { name, source })
    };
    let policies: Vec<Value> = inline_policies(t, pcluster)?
        .into_iter()
        .map(|p| {
            Ok(serde_json::json!({ "PolicyName": p.name, "PolicyDocument": parse(&p.document)? }))
        })
        .collect::<Result<_, PolicyError>>()?;
    let template = serde_json::json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": format!(
            "bastion: the proxy's role and instance profile for ParallelCluster cluster {cluster} \
             in {}, made by an administrator (bastion up --instance-profile {})",
            t.region, names.instance_profile
        ),
        "Resources": {
            "ProxyRole": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "RoleName": names.role,
                    "Path": crate::footprint::IAM_PATH,
                    "AssumeRolePolicyDocument": parse(&trust_policy(t)?)?,
                    "Policies": policies,
                    "ManagedPolicyArns": [t.ssm_core_policy_arn()],
                }
            },
            "ProxyInstanceProfile": {
                "Type": "AWS::IAM::InstanceProfile",
                "Properties": {
                    "InstanceProfileName": names.instance_profile,
                    "Path": crate::footprint::IAM_PATH,
                    "Roles": [{ "Ref": "ProxyRole" }],
                }
            }
        }
    });
    serde_json::to_string_pretty(&template).map_err(|source| PolicyError::Invalid { name, source })
}

pub fn trust_policy(t: &Target) -> Result<String, PolicyError> {
    render("ec2-trust", EC2_TRUST, t)
}

/// The proxy role's inline policies. `proxy-tags` always: the bootstrap tags its own instance
/// (state, host key), and nothing else may get a `bastion:` tag from this role, so root on the
/// proxy cannot forge bastion's tags on another instance. `pcluster-user` unless `pcluster` is
/// false (`up --no-pcluster-policy`, an SSH-only proxy).
pub fn inline_policies(t: &Target, pcluster: bool) -> Result<Vec<InlinePolicy>, PolicyError> {
    let mut policies = vec![InlinePolicy {
        name: "proxy-tags",
        document: render("proxy-tags", PROXY_TAGS, t)?,
    }];
    if pcluster {
        policies.push(InlinePolicy {
            name: "pcluster-user",
            document: render("pcluster-user", PCLUSTER_USER, t)?,
        });
    }
    policies.push(InlinePolicy {
        name: "dcv-license",
        document: render("dcv-license", DCV_LICENSE, t)?,
    });
    Ok(policies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unrendered_placeholder_is_refused_but_iam_variables_are_kept() {
        let t = Target {
            partition: "aws",
            account: "1",
            region: "r",
        };
        assert!(matches!(
            render("x", r#"{"a":"${ACCOUNTS}"}"#, &t),
            Err(PolicyError::Placeholder { .. })
        ));
        assert!(matches!(
            render("x", r#"{"a":"${aws:username}"}"#, &t),
            Err(PolicyError::Placeholder { .. })
        ));
        let ok = render("x", r#"{"a":"${ACCOUNT}/${ec2:InstanceID}"}"#, &t).unwrap();
        assert_eq!(ok, r#"{"a":"1/${ec2:InstanceID}"}"#);
    }

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
            assert_eq!(inline_policies(&t, false).unwrap().len(), 2);
            let policies = inline_policies(&t, true).unwrap();
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
            let dcv = &policies[2].document;
            let tags = &policies[0].document;
            assert!(
                tags.contains("*:${ec2:InstanceID}"),
                "the policy variable is kept for IAM: {tags}"
            );
            assert!(dcv.contains(&format!("dcv-license.{region}/*")));
            let trust = trust_policy(&t).unwrap();
            assert!(trust.contains(t.ec2_principal()));
        }
    }
}
