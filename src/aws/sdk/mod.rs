//! The real [`Cloud`]: the AWS SDK for Rust, one file per service. These are the only
//! files that name SDK types.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_ec2::types as ec2t;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use super::*;

/// Maps the SDK's error for `$action` (e.g. `ec2:RunInstances`) to an [`AwsError`].
macro_rules! sdk {
    ($action:expr, $fut:expr) => {
        $fut.await.map_err(|e| AwsError::from_sdk($action, e))
    };
}

mod account;
mod iam;
mod instances;
mod network;
mod presign;

/// Counts every operation the SDK starts (retries excluded), so `-v` can report the cost of a command.
#[derive(Debug, Clone, Default)]
pub struct CallCounter(Arc<AtomicUsize>);

impl CallCounter {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "bastion-call-counter"
    }

    fn read_before_execution(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn read_after_execution(
        &self,
        _context: &aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        Ok(())
    }
}

pub struct SdkCloud {
    region: String,
    ec2: aws_sdk_ec2::Client,
    iam: aws_sdk_iam::Client,
    ssm: aws_sdk_ssm::Client,
    sts: aws_sdk_sts::Client,
    eic: aws_sdk_ec2instanceconnect::Client,
    /// The caller's credentials, for what is signed here rather than sent: the EC2 Instance
    /// Connect Endpoint's tunnel URL.
    credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
    pub calls: CallCounter,
}

impl SdkCloud {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        let calls = CallCounter::default();
        let region = config
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".to_string());
        let ec2 = aws_sdk_ec2::Client::from_conf(
            aws_sdk_ec2::config::Builder::from(config)
                .interceptor(calls.clone())
                .build(),
        );
        let iam = aws_sdk_iam::Client::from_conf(
            aws_sdk_iam::config::Builder::from(config)
                .interceptor(calls.clone())
                .build(),
        );
        let ssm = aws_sdk_ssm::Client::from_conf(
            aws_sdk_ssm::config::Builder::from(config)
                .interceptor(calls.clone())
                .build(),
        );
        let sts = aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::config::Builder::from(config)
                .interceptor(calls.clone())
                .build(),
        );
        // Its own endpoint variable (AWS_ENDPOINT_URL_EC2_INSTANCE_CONNECT) is read by the SDK.
        let eic = aws_sdk_ec2instanceconnect::Client::from_conf(
            aws_sdk_ec2instanceconnect::config::Builder::from(config)
                .interceptor(calls.clone())
                .build(),
        );
        SdkCloud {
            region,
            ec2,
            iam,
            ssm,
            sts,
            eic,
            credentials: config.credentials_provider(),
            calls,
        }
    }
}

fn filter(name: &str, values: &[&str]) -> ec2t::Filter {
    ec2t::Filter::builder()
        .name(name)
        .set_values(Some(values.iter().map(|v| v.to_string()).collect()))
        .build()
}

fn ec2_tags(tags: &[Tag]) -> Vec<ec2t::Tag> {
    tags.iter()
        .map(|t| ec2t::Tag::builder().key(&t.key).value(&t.value).build())
        .collect()
}

fn tag_spec(resource: ec2t::ResourceType, tags: &[Tag]) -> ec2t::TagSpecification {
    ec2t::TagSpecification::builder()
        .resource_type(resource)
        .set_tags(Some(ec2_tags(tags)))
        .build()
}

fn from_ec2_tags(tags: &[ec2t::Tag]) -> Vec<Tag> {
    tags.iter()
        .map(|t| Tag::new(t.key().unwrap_or_default(), t.value().unwrap_or_default()))
        .collect()
}
