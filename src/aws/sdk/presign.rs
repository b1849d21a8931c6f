//! The EC2 Instance Connect Endpoint's tunnel URL, presigned with the SDK's own SigV4 signer as
//! the AWS CLI signs it: `GET wss://<DnsName>/openTunnel?…`, the service `ec2-instance-connect`,
//! the signature and the session token in the query, only `host` signed, the empty body's hash,
//! valid 60 seconds.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;

use crate::aws::TunnelRequest;

/// The signing name of the Endpoint's tunnel.
const SERVICE: &str = "ec2-instance-connect";
/// How long a presigned tunnel URL may be used: the AWS CLI's figure.
pub const URL_VALIDITY: Duration = Duration::from_secs(60);

/// The presigned URL for `request`, signed at `time`.
pub fn open_tunnel(
    request: &TunnelRequest,
    credentials: &Credentials,
    region: &str,
    time: SystemTime,
) -> Result<String, String> {
    // Every value is checked or numeric: ids and names are parsed before they get here, and
    // none needs percent-encoding (the signer's canonical form encodes them again if so).
    let unsigned = format!(
        "https://{host}/openTunnel?instanceConnectEndpointId={id}&remotePort={port}&privateIpAddress={ip}&maxTunnelDuration={max}",
        host = request.host,
        id = request.endpoint_id,
        port = request.remote_port,
        ip = request.private_ip,
        max = request.max_duration,
    );
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(URL_VALIDITY);
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SERVICE)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let signable = SignableRequest::new(
        "GET",
        unsigned.as_str(),
        std::iter::once(("host", request.host.as_str())),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    let (_headers, query) = instructions.into_parts();
    let mut url = unsigned.replacen("https://", "wss://", 1);
    for (name, value) in query {
        url.push('&');
        url.push_str(name);
        url.push('=');
        url.push_str(&encode(&value));
    }
    Ok(url)
}

/// SigV4's URI encoding of a query value: everything but the unreserved characters.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AWS CLI's own known answer (its tests of `ec2-instance-connect open-tunnel`).
    #[test]
    fn the_url_is_the_one_the_aws_cli_signs() {
        let request = TunnelRequest {
            endpoint_id: "eice-123".into(),
            host: "eice-123.ec2-instance-connect-endpoint.us-west-2.amazonaws.com".into(),
            remote_port: 22,
            private_ip: "10.0.0.0".parse().unwrap(),
            max_duration: 1,
        };
        let credentials = Credentials::new("access_key", "secret_key", None, None, "test");
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_577_840_461); // 2020-01-01T01:01:01Z
        let url = open_tunnel(&request, &credentials, "us-west-2", time).unwrap();
        assert_eq!(
            url,
            "wss://eice-123.ec2-instance-connect-endpoint.us-west-2.amazonaws.com/openTunnel?\
             instanceConnectEndpointId=eice-123&remotePort=22&privateIpAddress=10.0.0.0&\
             maxTunnelDuration=1&X-Amz-Algorithm=AWS4-HMAC-SHA256&\
             X-Amz-Credential=access_key%2F20200101%2Fus-west-2%2Fec2-instance-connect%2Faws4_request&\
             X-Amz-Date=20200101T010101Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&\
             X-Amz-Signature=3a56740422a5b9aebd22d860b7a30c729e459a6f71a83bc0de3a2b44b7353f28"
        );
    }

    #[test]
    fn a_session_token_travels_signed_in_the_query() {
        let request = TunnelRequest {
            endpoint_id: "eice-0123456789abcdef0".into(),
            host: "example.amazonaws.com".into(),
            remote_port: 22,
            private_ip: "10.0.0.1".parse().unwrap(),
            max_duration: 3600,
        };
        let credentials = Credentials::new("AKID", "secret", Some("to/ken+=".into()), None, "t");
        let url = open_tunnel(&request, &credentials, "eu-west-1", SystemTime::now()).unwrap();
        assert!(
            url.contains("&X-Amz-Security-Token=to%2Fken%2B%3D"),
            "{url}"
        );
        assert!(url.contains("X-Amz-SignedHeaders=host&"), "{url}");
    }
}
