//! Typed AWS errors: the SDK's many error shapes reduced to what callers act on.

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AwsError {
    #[error("{action}: not found ({message})")]
    NotFound {
        action: String,
        /// AWS's code, e.g. `InvalidGroup.NotFound`, `InvalidPermission.NotFound`.
        code: String,
        message: String,
    },

    #[error("{action}: already exists ({message})")]
    AlreadyExists { action: String, message: String },

    #[error("{action}: a dependent object still exists ({message})")]
    DependencyViolation { action: String, message: String },

    #[error(
        "access denied for {action}: the credentials in use may not call it ({message}). \
         Use a profile whose policy allows {action}, or ask your administrator"
    )]
    AccessDenied { action: String, message: String },

    #[error(
        "AWS credentials are missing, invalid or expired ({message}). Run `aws sso login` \
         (SSO profiles), pass --profile, or set AWS_PROFILE / AWS_ACCESS_KEY_ID"
    )]
    Credentials { message: String },

    /// RunInstances before IAM has propagated a new instance profile.
    #[error("{action}: the new instance profile is not visible to EC2 yet ({message})")]
    ProfileNotPropagated { action: String, message: String },

    #[error("{action} failed: {code}: {message}")]
    Service {
        action: String,
        code: String,
        message: String,
    },

    #[error("{action} failed: could not reach AWS: {message}")]
    Transport { action: String, message: String },

    /// A value in AWS's answer that is not of its documented form (see `aws::checked`).
    #[error(
        "{action} answered with {what} that is not of its documented form: {value:?}. bastion \
         uses nothing from that answer; check --endpoint-url and any proxy between you and AWS"
    )]
    Malformed {
        action: String,
        what: String,
        value: String,
    },

    /// An error injected by `BASTION_FAILPOINT` (tests only).
    #[error("{action}: injected failure (BASTION_FAILPOINT)")]
    Injected { action: String },
}
impl crate::exit::ExitStatus for AwsError {
    fn exit_status(&self) -> Option<u8> {
        Some(if self.is_denied() {
            crate::exit::DENIED
        } else {
            crate::exit::FAILED
        })
    }
}

impl AwsError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, AwsError::NotFound { .. })
    }

    /// A rule that is not there (revoking it is done), as opposed to a group that is not there.
    pub fn is_missing_rule(&self) -> bool {
        matches!(self, AwsError::NotFound { code, .. } if code == "InvalidPermission.NotFound")
    }

    /// Credentials missing or expired, or the call denied: what the user must fix (exit 3).
    pub fn is_denied(&self) -> bool {
        matches!(
            self,
            AwsError::Credentials { .. } | AwsError::AccessDenied { .. }
        )
    }

    pub fn is_dependency_violation(&self) -> bool {
        matches!(self, AwsError::DependencyViolation { .. })
    }

    pub fn is_already_exists(&self) -> bool {
        matches!(self, AwsError::AlreadyExists { .. })
    }

    pub fn from_code(action: &str, code: &str, message: &str) -> AwsError {
        let action = action.to_string();
        let message = message.to_string();
        if code.ends_with("NotFound")
            || code.ends_with(".NotFound")
            || code == "NoSuchEntity"
            || code == "ParameterNotFound"
            || code == "InvalidPermission.NotFound"
            || code == "EC2InstanceNotFoundException"
        {
            AwsError::NotFound {
                action,
                code: code.to_string(),
                message,
            }
        } else if code.ends_with(".Duplicate") || code == "EntityAlreadyExists" {
            AwsError::AlreadyExists { action, message }
        } else if code == "DependencyViolation" || code == "DeleteConflict" {
            AwsError::DependencyViolation { action, message }
        } else if code == "UnauthorizedOperation"
            || code == "AccessDenied"
            || code == "AccessDeniedException"
            // EC2 Instance Connect's word for it.
            || code == "AuthException"
        {
            AwsError::AccessDenied { action, message }
        } else if matches!(
            code,
            "ExpiredToken"
                | "ExpiredTokenException"
                | "RequestExpired"
                | "InvalidClientTokenId"
                | "AuthFailure"
                | "UnrecognizedClientException"
                | "SignatureDoesNotMatch"
                | "InvalidAccessKeyId"
        ) {
            AwsError::Credentials { message }
        } else if code == "InvalidParameterValue" && message.contains("iamInstanceProfile") {
            AwsError::ProfileNotPropagated { action, message }
        } else {
            AwsError::Service {
                action,
                code: code.to_string(),
                message,
            }
        }
    }

    /// Maps any SDK error. `action` is the API name a user would put in a policy (`ec2:RunInstances`).
    pub fn from_sdk<E, R>(action: &str, err: SdkError<E, R>) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug,
    {
        match &err {
            SdkError::ServiceError(service) => {
                let e = service.err();
                let code = e.code().unwrap_or("Unknown");
                let message = e.message().unwrap_or("no message").to_string();
                AwsError::from_code(action, code, &message)
            }
            SdkError::DispatchFailure(_)
            | SdkError::TimeoutError(_)
            | SdkError::ResponseError(_) => {
                let message = full_chain(&err);
                if message.contains("credentials") || message.contains("Credentials") {
                    AwsError::Credentials { message }
                } else {
                    AwsError::Transport {
                        action: action.to_string(),
                        message,
                    }
                }
            }
            _ => {
                let message = full_chain(&err);
                if message.contains("credentials") || message.contains("token") {
                    AwsError::Credentials { message }
                } else {
                    AwsError::Service {
                        action: action.to_string(),
                        code: "Unknown".into(),
                        message,
                    }
                }
            }
        }
    }
}

fn full_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_what_callers_act_on() {
        assert!(
            AwsError::from_code("ec2:DeleteKeyPair", "InvalidKeyPair.NotFound", "x").is_not_found()
        );
        assert!(AwsError::from_code("iam:GetRole", "NoSuchEntity", "x").is_not_found());
        assert!(
            AwsError::from_code("ec2:ImportKeyPair", "InvalidKeyPair.Duplicate", "x")
                .is_already_exists()
        );
        assert!(
            AwsError::from_code("ec2:DeleteSecurityGroup", "DependencyViolation", "x")
                .is_dependency_violation()
        );
        let denied = AwsError::from_code("ec2:RunInstances", "UnauthorizedOperation", "no");
        assert!(denied.to_string().contains("ec2:RunInstances"), "{denied}");
        assert!(matches!(
            AwsError::from_code("sts:GetCallerIdentity", "ExpiredToken", "x"),
            AwsError::Credentials { .. }
        ));
        assert!(matches!(
            AwsError::from_code(
                "ec2:RunInstances",
                "InvalidParameterValue",
                "Value (arn:...) for parameter iamInstanceProfile.arn is invalid."
            ),
            AwsError::ProfileNotPropagated { .. }
        ));
    }
}
