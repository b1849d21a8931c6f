//! The endpoint table: which VPC endpoints a region needs (FACTS section 3), named for its
//! partition, and which of them a given cluster needs.

use super::*;

pub fn partition_of(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// A required endpoint: short name, full service name, Interface (true) or Gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Required {
    pub short: &'static str,
    pub service: String,
    pub interface: bool,
}

impl Required {
    /// The endpoint type, as AWS names it.
    pub fn kind(&self) -> &'static str {
        if self.interface {
            "Interface"
        } else {
            "Gateway"
        }
    }
}

/// The endpoints the AWS page lists, named for the region's partition: Secrets Manager's when the
/// cluster reads a secret (`secrets`); Elastic Load Balancing's and Auto Scaling's with login
/// nodes ("only required when LoginNodes is enabled", the page says).
pub fn required_endpoints(region: &str, secrets: bool, login_nodes: bool) -> Vec<Required> {
    let china = partition_of(region) == "aws-cn";
    let name = |short: &str| {
        if china && matches!(short, "cloudformation" | "ec2" | "autoscaling") {
            format!("cn.com.amazonaws.{region}.{short}")
        } else {
            format!("com.amazonaws.{region}.{short}")
        }
    };
    let mut list = vec![
        ("logs", true),
        ("cloudformation", true),
        ("ec2", true),
        ("s3", false),
        ("dynamodb", false),
    ];
    if secrets {
        list.push(("secretsmanager", true));
    }
    if login_nodes {
        list.push(("elasticloadbalancing", true));
        list.push(("autoscaling", true));
    }
    list.into_iter()
        .map(|(short, interface)| Required {
            short,
            service: name(short),
            interface,
        })
        .collect()
}

/// A value read from the configuration, with where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub value: String,
    pub line: usize,
    pub column: usize,
}

/// A boolean field as pcluster's schema reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flag {
    Missing,
    Set(bool),
    /// Present, but not a value the schema accepts as a boolean: what it is, and where.
    Invalid(Located),
}

/// The endpoints this cluster needs: the config's sections decide the optional ones.
pub fn endpoints_for(f: &Facts) -> Vec<Required> {
    let config = match &f.config {
        Some(Ok(c)) => Some(c),
        _ => None,
    };
    required_endpoints(
        &f.region,
        config.is_some_and(|c| c.needs_secrets()),
        config.is_some_and(|c| c.login_nodes),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn endpoint_names_follow_the_partition() {
        let names = |r| {
            required_endpoints(r, false, false)
                .into_iter()
                .map(|e| e.service)
                .collect::<Vec<_>>()
        };
        assert!(names("us-east-1").contains(&"com.amazonaws.us-east-1.ec2".to_string()));
        assert!(
            names("us-gov-west-1")
                .contains(&"com.amazonaws.us-gov-west-1.cloudformation".to_string())
        );
        let cn = names("cn-north-1");
        assert!(cn.contains(&"cn.com.amazonaws.cn-north-1.ec2".to_string()));
        assert!(cn.contains(&"cn.com.amazonaws.cn-north-1.cloudformation".to_string()));
        assert!(cn.contains(&"com.amazonaws.cn-north-1.logs".to_string()));
        assert_eq!(required_endpoints("us-east-1", true, false).len(), 6);
        let login = required_endpoints("cn-north-1", false, true);
        assert!(
            login
                .iter()
                .any(|e| e.service == "cn.com.amazonaws.cn-north-1.autoscaling")
        );
        assert!(
            login
                .iter()
                .any(|e| e.service == "com.amazonaws.cn-north-1.elasticloadbalancing")
        );
    }
}
