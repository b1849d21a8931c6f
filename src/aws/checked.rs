//! What EC2 says about an instance, held to the forms AWS documents before anything else sees
//! it. A response can be altered on its way (a hostile `--endpoint-url`, a TLS-intercepting
//! proxy), and these values reach files (the generated ssh config, which `~/.ssh/config`
//! includes at its top) and terminals: an address is parsed as one and written back out by
//! bastion, an id is matched against its form, and anything else is refused with the value
//! shown escaped. Tag values are arbitrary text by AWS's own rules; they are escaped where they
//! are printed (see `ui::printable`), never copied into a file.

use std::net::Ipv4Addr;

use super::error::AwsError;

/// `prefix-` then 8 or 17 lowercase hex digits: EC2's resource ids (`i-`, `sg-`, `subnet-`,
/// `vpc-`, `key-`, `ami-`, `eice-`).
pub fn is_resource_id(prefix: &str, s: &str) -> bool {
    s.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|hex| {
            matches!(hex.len(), 8 | 17)
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// An AWS account id: twelve digits.
pub fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// A partition bastion knows how to render policies for.
pub fn is_partition(s: &str) -> bool {
    matches!(
        s,
        "aws"
            | "aws-cn"
            | "aws-us-gov"
            | "aws-iso"
            | "aws-iso-b"
            | "aws-iso-e"
            | "aws-iso-f"
            | "aws-eusc"
    )
}

/// A dotted-quad IPv4 address, as bastion writes it back out.
pub fn ipv4(s: &str) -> Option<String> {
    s.parse::<Ipv4Addr>().ok().map(|ip| ip.to_string())
}

/// The error for a value of the wrong form.
pub fn malformed(action: &str, what: String, value: &str) -> AwsError {
    AwsError::Malformed {
        action: action.into(),
        what,
        value: value.into(),
    }
}

/// Holds one id to its form.
pub fn id(action: &str, prefix: &str, what: &str, value: &str) -> Result<String, AwsError> {
    if is_resource_id(prefix, value) {
        Ok(value.to_string())
    } else {
        Err(malformed(action, what.to_string(), value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_to_their_documented_form() {
        assert!(is_resource_id("i", "i-0123456789abcdef0"));
        assert!(is_resource_id("i", "i-0123abcd"));
        assert!(is_resource_id("sg", "sg-0123456789abcdef0"));
        for bad in [
            "i-0123456789abcdef0 ",
            "i-0123456789ABCDEF0",
            "i-0123 456789abcdef0",
            "i-0123456789abcdef0\nHost *",
            "sg-0123456789abcdef0",
            "i-",
            "i-0123456",
            "x-0123456789abcdef0",
        ] {
            assert!(!is_resource_id("i", bad), "{bad:?}");
        }
    }

    #[test]
    fn accounts_and_partitions_keep_to_their_forms() {
        assert!(is_account("123456789012"));
        for bad in [
            "12345678901",
            "../../../etc",
            "1234567890123",
            "12345678901a",
        ] {
            assert!(!is_account(bad), "{bad:?}");
        }
        assert!(is_partition("aws-cn"));
        assert!(!is_partition("aws\",\"x"));
    }

    #[test]
    fn addresses_are_parsed_and_written_back() {
        assert_eq!(ipv4("10.0.1.10").as_deref(), Some("10.0.1.10"));
        for bad in [
            "10.0.1.10\nHost *",
            " 10.0.1.10",
            "10.0.1",
            "010.0.1.10x",
            "::1",
        ] {
            assert_eq!(ipv4(bad), None, "{bad:?}");
        }
    }
}
