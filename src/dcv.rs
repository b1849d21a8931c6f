//! The one-time DCV URL: what `pcluster dcv-connect` does (FACTS section 2), rewritten for a
//! tunnel. Runs the head node's `pcluster_dcv_connect.sh`, parses its one line, maps its failures
//! to advice, and builds `https://127.0.0.1:<local port>?authToken=<token>#<session id>` (the address the tunnel listens on).

use std::fmt;
use std::time::Duration;

use russh::client::Handle;
use serde::Serialize;

use crate::ssh::client::Verifier;
use crate::ssh::session;

pub const SCRIPT: &str = "/opt/parallelcluster/scripts/pcluster_dcv_connect.sh";
/// The session token lives 30 seconds and works once.
pub const TOKEN_LIFETIME_S: u64 = 30;
/// The proxy's own desktop session, created by its user-data.
pub const PROXY_SESSION: &str = "bastion";
pub const PROXY_DCV_PORT: u16 = 8443;

const ATTEMPTS: u32 = 3;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcvSession {
    pub port: u16,
    pub session_id: String,
    pub token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DcvError {
    #[error(
        "the head node has no {SCRIPT}: the cluster was created without DCV. Set HeadNode/Dcv/Enabled: true \
         in the cluster configuration and update the cluster (`pcluster update-cluster`)"
    )]
    NoScript,
    #[error("the head node's DCV script failed:\n{0}")]
    Script(String),
    #[error(
        "unexpected output from {SCRIPT} (no PclusterDcvServerPort=... line); it printed:\n{0}"
    )]
    NoMatch(String),
    #[error("{SCRIPT} did not answer within {0} s")]
    Timeout(u64),
    #[error(
        "DCV does not answer at {addr} from inside the session ({reason}). Check that DCV runs there \
         (`systemctl status dcvserver`) and listens on tcp {port}"
    )]
    PortClosed {
        addr: String,
        port: u16,
        reason: String,
    },
    #[error(
        "the proxy could not mint a token for its desktop ({PROXY_TOKEN_HELPER}); it printed:\n{0}\n\
         Its desktop may predate tokens: run `bastion down` and `bastion up`"
    )]
    ProxyToken(String),
    #[error("{0}")]
    Session(#[from] session::SessionError),
}

/// On the proxy: mints a token for its DCV session, good once within a minute, for the token
/// verifier the user-data installs, and prints `BastionDcvToken=<64 hex>`. Run as root.
pub const PROXY_TOKEN_HELPER: &str = "/usr/local/sbin/bastion-dcv-token";

/// Finds the helper's one line; anything but exactly 64 lowercase hex digits is refused.
pub fn parse_proxy_token(output: &str) -> Option<String> {
    output.lines().find_map(|l| {
        let t = l.trim().strip_prefix("BastionDcvToken=")?;
        (t.len() == 64 && t.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))).then(|| t.into())
    })
}

/// A fresh token for the proxy's own desktop, minted over SSH (root there, through sudo for the
/// login user): the token travels on the channel, never on a command line.
pub async fn proxy_token(proxy: &Handle<Verifier>) -> Result<String, DcvError> {
    let command = format!(
        "if [ \"$(id -u)\" = 0 ]; then {PROXY_TOKEN_HELPER}; else sudo -n {PROXY_TOKEN_HELPER}; fi 2>&1"
    );
    let (_, output) = tokio::time::timeout(
        ATTEMPT_TIMEOUT,
        session::capture(proxy, "the proxy", &command),
    )
    .await
    .map_err(|_| {
        DcvError::ProxyToken(format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs()))
    })??;
    parse_proxy_token(&output).ok_or_else(|| DcvError::ProxyToken(output.trim().to_string()))
}

fn is_word(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Finds `PclusterDcvServerPort=N PclusterDcvSessionId=W PclusterDcvSessionToken=T` in `output`,
/// as pcluster's regex does (`[\d]+`, `[\w]+`, `[\w-]+`).
pub fn parse(output: &str) -> Option<DcvSession> {
    let words: Vec<&str> = output.split_whitespace().collect();
    words.windows(3).find_map(|w| {
        let port = w[0].strip_prefix("PclusterDcvServerPort=")?.parse().ok()?;
        let session_id = w[1].strip_prefix("PclusterDcvSessionId=")?;
        let token = w[2].strip_prefix("PclusterDcvSessionToken=")?;
        (is_word(session_id)
            && token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            && !token.is_empty())
        .then(|| DcvSession {
            port,
            session_id: session_id.into(),
            token: token.into(),
        })
    })
}

fn classify(code: u8, output: &str) -> Result<DcvSession, DcvError> {
    if let Some(s) = parse(output) {
        return Ok(s);
    }
    if code == 127 || output.contains("No such file or directory") {
        return Err(DcvError::NoScript);
    }
    let errors: Vec<&str> = output
        .lines()
        .filter(|l| l.trim_start().starts_with("ERROR:"))
        .collect();
    if !errors.is_empty() {
        return Err(DcvError::Script(errors.join("\n")));
    }
    Err(DcvError::NoMatch(output.trim().to_string()))
}

/// Runs the script on the head node (stderr merged, as pcluster does), a bounded number of
/// times, each with a timeout; pcluster retries four times at once, without one.
pub async fn request_session(head: &Handle<Verifier>, user: &str) -> Result<DcvSession, DcvError> {
    let home = if user == "root" {
        "/root".to_string()
    } else {
        format!("/home/{user}")
    };
    let command = format!("{SCRIPT} {home} 2>&1");
    let mut last = DcvError::Timeout(ATTEMPT_TIMEOUT.as_secs());
    for attempt in 1..=ATTEMPTS {
        match tokio::time::timeout(
            ATTEMPT_TIMEOUT,
            session::capture(head, "the head node", &command),
        )
        .await
        {
            Err(_) => last = DcvError::Timeout(ATTEMPT_TIMEOUT.as_secs()),
            Ok(Err(e)) => last = e.into(),
            Ok(Ok((code, output))) => match classify(code, &output) {
                Ok(s) => return Ok(s),
                Err(DcvError::NoScript) => return Err(DcvError::NoScript),
                Err(e) => last = e,
            },
        }
        if attempt < ATTEMPTS {
            tracing::info!("DCV session request failed (attempt {attempt}): {last}; retrying");
            tokio::time::sleep(Duration::from_secs(2 * attempt as u64)).await;
        }
    }
    Err(last)
}

/// A one-time URL, printed or opened, and its JSON shape.
#[derive(Debug, Clone, Serialize)]
pub struct DcvUrl {
    pub url: String,
    pub local_port: u16,
    pub session_id: String,
    pub expires_in_s: u64,
}

impl DcvUrl {
    /// The head node's session: the token is in the query, the session id in the fragment.
    pub fn head_node(local_port: u16, s: &DcvSession) -> DcvUrl {
        DcvUrl {
            url: format!(
                "https://127.0.0.1:{local_port}?authToken={}#{}",
                s.token, s.session_id
            ),
            local_port,
            session_id: s.session_id.clone(),
            expires_in_s: TOKEN_LIFETIME_S,
        }
    }

    /// The proxy's own desktop, with a token its authenticator was given for this URL.
    pub fn proxy(local_port: u16, token: &str) -> DcvUrl {
        DcvUrl {
            url: format!("https://127.0.0.1:{local_port}?authToken={token}#{PROXY_SESSION}"),
            local_port,
            session_id: PROXY_SESSION.into(),
            expires_in_s: 0,
        }
    }
}

impl fmt::Display for DcvUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.url)?;
        if self.expires_in_s > 0 {
            writeln!(
                f,
                "  single use, valid {} s: press Enter here for a fresh URL (a browser reload needs one).",
                self.expires_in_s
            )?;
        }
        write!(
            f,
            "  DCV uses a self-signed certificate: the browser warns once; the connection itself is carried by SSH."
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_script_line_among_noise() {
        let out = "some warning\nPclusterDcvServerPort=8443 PclusterDcvSessionId=AbC123xyz PclusterDcvSessionToken=tok-EN_1\n";
        assert_eq!(
            parse(out),
            Some(DcvSession {
                port: 8443,
                session_id: "AbC123xyz".into(),
                token: "tok-EN_1".into()
            })
        );
        assert_eq!(
            parse("PclusterDcvServerPort=x PclusterDcvSessionId=a PclusterDcvSessionToken=b"),
            None
        );
        assert_eq!(parse("nothing"), None);
    }

    #[test]
    fn failures_map_to_advice() {
        assert!(matches!(
            classify(
                127,
                "bash: /opt/parallelcluster/scripts/pcluster_dcv_connect.sh: No such file or directory"
            ),
            Err(DcvError::NoScript)
        ));
        match classify(1, "starting\nERROR: DCV service not active\n") {
            Err(DcvError::Script(lines)) => assert_eq!(lines, "ERROR: DCV service not active"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(classify(0, "hello"), Err(DcvError::NoMatch(o)) if o == "hello"));
    }

    #[test]
    fn urls_have_no_slash_before_the_query() {
        let s = DcvSession {
            port: 8443,
            session_id: "S1".into(),
            token: "T1".into(),
        };
        assert_eq!(
            DcvUrl::head_node(4000, &s).url,
            "https://127.0.0.1:4000?authToken=T1#S1"
        );
        let t = "ab".repeat(32);
        assert_eq!(
            DcvUrl::proxy(4001, &t).url,
            format!("https://127.0.0.1:4001?authToken={t}#bastion")
        );
        assert_eq!(
            parse_proxy_token(&format!("motd\nBastionDcvToken={t}\n")),
            Some(t.clone())
        );
        for bad in [
            format!("BastionDcvToken={}", "AB".repeat(32)),
            format!("BastionDcvToken={t}x"),
            format!("BastionDcvToken={t}&x=1"),
            "BastionDcvToken=".to_string(),
        ] {
            assert_eq!(parse_proxy_token(&bad), None, "{bad}");
        }
    }
}
