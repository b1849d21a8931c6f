//! [`Iam`] through the AWS SDK.

use async_trait::async_trait;

use super::*;

#[async_trait]
impl Iam for SdkCloud {
    async fn roles_under(&self, path: &str) -> AwsResult<Vec<IamEntity>> {
        const LIST: &str = "iam:ListRoles";
        let mut roles = self
            .iam
            .list_roles()
            .path_prefix(path)
            .into_paginator()
            .items()
            .send();
        let mut out = Vec::new();
        while let Some(r) = roles.next().await {
            let r = r.map_err(|e| AwsError::from_sdk(LIST, e))?;
            // ListRoles does not return tags; GetRole does.
            let Some(g) = or_missing(sdk!(
                "iam:GetRole",
                self.iam.get_role().role_name(r.role_name()).send()
            ))?
            else {
                continue;
            };
            let tags = g
                .role()
                .map(|r| from_iam_tags(r.tags()))
                .unwrap_or_default();
            out.push(IamEntity {
                name: r.role_name().to_string(),
                arn: r.arn().to_string(),
                path: r.path().to_string(),
                tags,
            });
        }
        Ok(out)
    }

    async fn instance_profiles_under(&self, path: &str) -> AwsResult<Vec<IamEntity>> {
        const LIST: &str = "iam:ListInstanceProfiles";
        let mut profiles = self
            .iam
            .list_instance_profiles()
            .path_prefix(path)
            .into_paginator()
            .items()
            .send();
        let mut out = Vec::new();
        while let Some(p) = profiles.next().await {
            let p = p.map_err(|e| AwsError::from_sdk(LIST, e))?;
            // ListInstanceProfiles does not return tags; GetInstanceProfile does.
            let Some(g) = or_missing(sdk!(
                "iam:GetInstanceProfile",
                self.iam
                    .get_instance_profile()
                    .instance_profile_name(p.instance_profile_name())
                    .send()
            ))?
            else {
                continue;
            };
            let tags = g
                .instance_profile()
                .map(|p| from_iam_tags(p.tags()))
                .unwrap_or_default();
            out.push(IamEntity {
                name: p.instance_profile_name().to_string(),
                arn: p.arn().to_string(),
                path: p.path().to_string(),
                tags,
            });
        }
        Ok(out)
    }

    async fn role_policies(&self, role: &str) -> AwsResult<(Vec<String>, Vec<String>)> {
        let inline = sdk!(
            "iam:ListRolePolicies",
            self.iam.list_role_policies().role_name(role).send()
        )?;
        let attached = sdk!(
            "iam:ListAttachedRolePolicies",
            self.iam
                .list_attached_role_policies()
                .role_name(role)
                .send()
        )?;
        Ok((
            inline.policy_names().to_vec(),
            attached
                .attached_policies()
                .iter()
                .filter_map(|p| p.policy_arn().map(str::to_string))
                .collect(),
        ))
    }

    async fn profile_roles(&self, profile: &str) -> AwsResult<Vec<String>> {
        let out = sdk!(
            "iam:GetInstanceProfile",
            self.iam
                .get_instance_profile()
                .instance_profile_name(profile)
                .send()
        )?;
        Ok(out
            .instance_profile()
            .map(|p| {
                p.roles()
                    .iter()
                    .map(|r| r.role_name().to_string())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn create_role(
        &self,
        name: &str,
        path: &str,
        trust_policy: &str,
        description: &str,
        boundary: &str,
        tags: &[Tag],
    ) -> AwsResult<String> {
        let out = sdk!(
            "iam:CreateRole",
            self.iam
                .create_role()
                .role_name(name)
                .path(path)
                .assume_role_policy_document(trust_policy)
                .description(description)
                .permissions_boundary(boundary)
                .set_tags(Some(iam_tags(tags)))
                .send()
        )?;
        Ok(out.role().map(|r| r.arn().to_string()).unwrap_or_default())
    }

    async fn policy_exists(&self, arn: &str) -> AwsResult<bool> {
        let out = or_missing(sdk!(
            "iam:GetPolicy",
            self.iam.get_policy().policy_arn(arn).send()
        ))?;
        Ok(out.is_some())
    }

    async fn instance_profile(&self, name: &str) -> AwsResult<Option<IamEntity>> {
        let out = or_missing(sdk!(
            "iam:GetInstanceProfile",
            self.iam
                .get_instance_profile()
                .instance_profile_name(name)
                .send()
        ))?;
        Ok(out.and_then(|o| {
            o.instance_profile().map(|p| IamEntity {
                name: p.instance_profile_name().to_string(),
                arn: p.arn().to_string(),
                path: p.path().to_string(),
                tags: from_iam_tags(p.tags()),
            })
        }))
    }

    async fn delete_role(&self, name: &str) -> AwsResult<()> {
        sdk!(
            "iam:DeleteRole",
            self.iam.delete_role().role_name(name).send()
        )?;
        Ok(())
    }

    async fn put_role_policy(&self, role: &str, name: &str, document: &str) -> AwsResult<()> {
        sdk!(
            "iam:PutRolePolicy",
            self.iam
                .put_role_policy()
                .role_name(role)
                .policy_name(name)
                .policy_document(document)
                .send()
        )?;
        Ok(())
    }

    async fn delete_role_policy(&self, role: &str, name: &str) -> AwsResult<()> {
        sdk!(
            "iam:DeleteRolePolicy",
            self.iam
                .delete_role_policy()
                .role_name(role)
                .policy_name(name)
                .send()
        )?;
        Ok(())
    }

    async fn attach_role_policy(&self, role: &str, policy_arn: &str) -> AwsResult<()> {
        sdk!(
            "iam:AttachRolePolicy",
            self.iam
                .attach_role_policy()
                .role_name(role)
                .policy_arn(policy_arn)
                .send()
        )?;
        Ok(())
    }

    async fn detach_role_policy(&self, role: &str, policy_arn: &str) -> AwsResult<()> {
        sdk!(
            "iam:DetachRolePolicy",
            self.iam
                .detach_role_policy()
                .role_name(role)
                .policy_arn(policy_arn)
                .send()
        )?;
        Ok(())
    }

    async fn create_instance_profile(
        &self,
        name: &str,
        path: &str,
        tags: &[Tag],
    ) -> AwsResult<String> {
        let out = sdk!(
            "iam:CreateInstanceProfile",
            self.iam
                .create_instance_profile()
                .instance_profile_name(name)
                .path(path)
                .set_tags(Some(iam_tags(tags)))
                .send()
        )?;
        Ok(out
            .instance_profile()
            .map(|p| p.arn().to_string())
            .unwrap_or_default())
    }

    async fn delete_instance_profile(&self, name: &str) -> AwsResult<()> {
        sdk!(
            "iam:DeleteInstanceProfile",
            self.iam
                .delete_instance_profile()
                .instance_profile_name(name)
                .send()
        )?;
        Ok(())
    }

    async fn add_role_to_instance_profile(&self, profile: &str, role: &str) -> AwsResult<()> {
        sdk!(
            "iam:AddRoleToInstanceProfile",
            self.iam
                .add_role_to_instance_profile()
                .instance_profile_name(profile)
                .role_name(role)
                .send()
        )?;
        Ok(())
    }

    async fn remove_role_from_instance_profile(&self, profile: &str, role: &str) -> AwsResult<()> {
        sdk!(
            "iam:RemoveRoleFromInstanceProfile",
            self.iam
                .remove_role_from_instance_profile()
                .instance_profile_name(profile)
                .role_name(role)
                .send()
        )?;
        Ok(())
    }
}

fn iam_tags(tags: &[Tag]) -> Vec<aws_sdk_iam::types::Tag> {
    tags.iter()
        .filter_map(|t| {
            aws_sdk_iam::types::Tag::builder()
                .key(&t.key)
                .value(&t.value)
                .build()
                .ok()
        })
        .collect()
}

fn from_iam_tags(tags: &[aws_sdk_iam::types::Tag]) -> Vec<Tag> {
    tags.iter().map(|t| Tag::new(t.key(), t.value())).collect()
}
