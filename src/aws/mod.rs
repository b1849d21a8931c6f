//! The AWS seam: bastion's view of STS, EC2, SSM and IAM, one narrow trait per service, each in a
//! file beside the plain data types it speaks: [`Account`], [`Instances`], [`Network`], [`Iam`].
//! [`Cloud`] is their sum; a module takes the narrowest trait it needs, and only the context
//! holds the sum. Errors are the typed [`AwsError`].
//!
//! Commands never see an SDK type. The real adapter is [`sdk::SdkCloud`]; [`faults::Faulty`]
//! wraps any `Cloud` to fail the calls `BASTION_FAILPOINT` names (tests only; see `failpoint`).
//! Both are split the same way, one file per service.

pub mod account;
pub mod checked;
pub mod error;
pub mod faults;
pub mod fresh;
pub mod iam;
pub mod instances;
#[cfg(any(test, feature = "test-double"))]
pub mod memory;
pub mod network;
pub mod sdk;

use serde::{Deserialize, Serialize};

pub use account::{Account, Identity};
pub use error::AwsError;
pub use iam::{Iam, IamEntity};
pub use instances::{Image, Instance, Instances, KeyPair, LaunchSpec, NOT_TERMINATED};
pub use network::{
    ConnectEndpoint, ConnectEndpointSpec, EndpointSpec, GroupRule, IngressRule, Network,
    RouteTable, SecurityGroup, Source, Subnet, TaggedRule, TunnelRequest, VpcEndpoint, parse_cidr,
};

pub type AwsResult<T> = Result<T, AwsError>;

/// NotFound is an answer, not an error: `Ok(None)`. The one place that says so, for the adapter's
/// look-ups and for teardown (where a resource already gone counts as removed).
pub fn or_missing<T>(r: AwsResult<T>) -> AwsResult<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

impl Tag {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Tag {
            key: key.into(),
            value: value.into(),
        }
    }
}

pub fn tag_value<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter().find(|t| t.key == key).map(|t| t.value.as_str())
}

/// All of AWS that bastion speaks: what the context holds and hands down, each module taking the
/// part it needs.
pub trait Cloud: Account + Instances + Network + Iam {}

impl<T: Account + Instances + Network + Iam + ?Sized> Cloud for T {}
