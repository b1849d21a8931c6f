# ---- common part (userdata/common.sh) -------------------------------------------------------
# Runs as root from cloud-init, once per instance. Every step checks before it acts, so a re-run
# (by hand, after a failure) is safe. BASTION_ROOT and BASTION_IMDS exist for the tests only.
set -Eeuo pipefail
umask 022
ROOT="${BASTION_ROOT:-}"
IMDS="${BASTION_IMDS:-http://169.254.169.254}"
LOG="$ROOT/var/log/bastion-bootstrap.log"
STATE="$ROOT/var/lib/bastion"
export HOME="${HOME:-/root}"
export PATH="${PATH:-/usr/bin:/bin}:$ROOT/usr/local/sbin:$ROOT/usr/local/bin:$ROOT/usr/sbin:$ROOT/sbin:$ROOT/snap/bin"
mkdir -p "$(dirname "$LOG")" "$STATE"
exec >>"$LOG" 2>&1
PHASE=bootstrap
INSTANCE_ID=""
REGION=""

log() { printf '%s bastion: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }

imds() {
    local token
    token=$(curl -sf -X PUT "$IMDS/latest/api/token" -H 'X-aws-ec2-metadata-token-ttl-seconds: 300')
    curl -sf -H "X-aws-ec2-metadata-token: $token" "$IMDS/latest/$1"
}

tag() {
    log "tag $1=$2"
    aws ec2 create-tags --region "$REGION" --resources "$INSTANCE_ID" \
        --tags "[{\"Key\":\"$1\",\"Value\":\"$2\"}]"
}

on_error() {
    local rc=$?
    trap - ERR
    log "FAILED (exit $rc) in phase $PHASE at line ${BASH_LINENO[0]}: $BASH_COMMAND"
    if [ -n "$INSTANCE_ID" ]; then
        if [ "$PHASE" = bootstrap ]; then
            tag bastion:state failed || true
        else
            tag bastion:desktop failed || true
        fi
    fi
    rm -f "$STATE/busy"
    exit "$rc"
}
trap on_error ERR

# The teammate login: a user of its own that can do one thing, open a TCP connection to the head
# node's SSH port (shell, commands, -L and DCV all run inside the head node's own session). No
# password, no shell, no sudo, no home; keys reach it only through EC2 Instance Connect.
ensure_teammate_user() {
    local nologin
    nologin=$(command -v nologin || echo /bin/false)
    if ! id -u "$TEAMMATE_USER" >/dev/null 2>&1; then
        useradd --system --no-create-home --home-dir /nonexistent --shell "$nologin" \
            --comment 'bastion: teammates jump to the head node only' "$TEAMMATE_USER"
    fi
    # '*' (not '!'): no password can match, and sshd without PAM does not take it for a lock.
    usermod --password '*' "$TEAMMATE_USER"
}

# Instance credentials are the operator's: the teammate user's sockets (its forwards included:
# sshd opens them with that user's id) never reach the instance metadata service. A rule by
# owner, since IMDSv2's hop limit does not stop a local process. Loaded at every boot.
guard_imds() {
    ensure_nft
    mkdir -p "$ROOT/etc/bastion" "$ROOT/etc/systemd/system"
    cat >"$ROOT/etc/bastion/imds-guard.nft" <<NFT
# Written by bastion: the teammate user never reaches the instance metadata service.
table inet bastion_imds
delete table inet bastion_imds
table inet bastion_imds {
    chain output {
        type filter hook output priority 0; policy accept;
        meta skuid "$TEAMMATE_USER" ip daddr 169.254.169.254 reject
        meta skuid "$TEAMMATE_USER" ip6 daddr fd00:ec2::254 reject
    }
}
NFT
    cat >"$ROOT/etc/systemd/system/bastion-imds-guard.service" <<'UNIT'
[Unit]
Description=bastion: the teammate user never reaches the instance metadata service
Before=sshd.service ssh.service
DefaultDependencies=no
After=local-fs.target nftables.service firewalld.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/nft -f /etc/bastion/imds-guard.nft

[Install]
WantedBy=multi-user.target
UNIT
    systemctl daemon-reload
    systemctl enable bastion-imds-guard.service
    nft -f "$ROOT/etc/bastion/imds-guard.nft"
}

# sshd keeps the first value it reads, and this file is read before the distribution's own
# (its Include comes first), so these lines decide. A Match block ends with its file.
harden_sshd() {
    local conf="$ROOT/etc/ssh/sshd_config.d/10-bastion.conf"
    mkdir -p "$(dirname "$conf")"
    cat >"$conf" <<SSHD
# Written by bastion: keys only, no root, forwarding for the jump to the head node.
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowTcpForwarding yes
X11Forwarding no
ClientAliveInterval 30
ClientAliveCountMax 4

# A teammate reaches the head node's SSH port and nothing else.
Match User $TEAMMATE_USER
    AllowTcpForwarding local
    PermitOpen $HEAD_IP:22
    PermitListen none
    MaxSessions 0
    PermitTTY no
    PermitTunnel no
    PermitUserRC no
    AllowAgentForwarding no
    AllowStreamLocalForwarding no
    X11Forwarding no
    GatewayPorts no
    ForceCommand /bin/false
SSHD
    # Checked here: a config sshd refuses would lock the operator out as well.
    # A configuration sshd refuses is taken back: it would lock everyone out at the next boot.
    if [ -e "$ROOT/etc/ssh/sshd_config" ] && command -v sshd >/dev/null \
        && ! sshd -t -f "$ROOT/etc/ssh/sshd_config"; then
        rm -f "$conf"
        return 1
    fi
    systemctl reload sshd 2>/dev/null || systemctl reload ssh 2>/dev/null || true
}

publish_host_key() {
    local key="$ROOT/etc/ssh/ssh_host_ed25519_key.pub" i
    for i in $(seq 1 60); do
        [ -s "$key" ] && break
        [ "$i" = 10 ] && ssh-keygen -A
        sleep 2
    done
    [ -s "$key" ]
    tag bastion:host-key "$(awk '{print $1" "$2}' "$key")"
}

# The host keys on the console at every boot, in cloud-init's block: `bastion connect` reads
# them with ec2:GetConsoleOutput to anchor the proxy's key (cloud-init prints them at the first
# boot only, and the idle timer stops and starts the proxy).
install_console_keys() {
    mkdir -p "$ROOT/usr/local/sbin" "$ROOT/etc/systemd/system"
    cat >"$ROOT/usr/local/sbin/bastion-console-keys" <<'KEYS'
#!/bin/bash
# Written by bastion: the host keys on the console, as cloud-init prints them at first boot.
{
    echo "-----BEGIN SSH HOST KEY KEYS-----"
    cat /etc/ssh/ssh_host_*key.pub
    echo "-----END SSH HOST KEY KEYS-----"
} >/dev/console
KEYS
    chmod 0755 "$ROOT/usr/local/sbin/bastion-console-keys"
    cat >"$ROOT/etc/systemd/system/bastion-console-keys.service" <<'UNIT'
[Unit]
Description=bastion: print the SSH host keys to the console
After=sshd-keygen.target sshd.service ssh.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/bastion-console-keys

[Install]
WantedBy=multi-user.target
UNIT
    systemctl daemon-reload
    systemctl enable bastion-console-keys.service
}

install_idle_timer() {
    local unit="$ROOT/etc/systemd/system"
    mkdir -p "$unit" "$ROOT/usr/local/sbin"
    if [ "$IDLE_STOP_MIN" = 0 ]; then
        systemctl disable --now bastion-idle.timer 2>/dev/null || true
        rm -f "$unit/bastion-idle.timer" "$unit/bastion-idle.service"
        log "idle stop disabled"
        return 0
    fi
    cat >"$ROOT/usr/local/sbin/bastion-idle-check" <<IDLE
#!/bin/bash
# Written by bastion: powers the proxy off after $IDLE_STOP_MIN minutes without an SSH session.
# The stamp lives in /run, so it starts afresh at every boot.
set -eu
stamp=/run/bastion-last-active
if [ -e /var/lib/bastion/busy ] || [ -n "\$(ss -Htn state established '( sport = :22 )')" ] || [ ! -e "\$stamp" ]; then
    date +%s >"\$stamp"
    exit 0
fi
idle=\$(( (\$(date +%s) - \$(cat "\$stamp")) / 60 ))
if [ "\$idle" -ge $IDLE_STOP_MIN ]; then
    logger -t bastion "no SSH session for \$idle minutes: powering off"
    systemctl poweroff
fi
IDLE
    chmod 0755 "$ROOT/usr/local/sbin/bastion-idle-check"
    cat >"$unit/bastion-idle.service" <<'UNIT'
[Unit]
Description=bastion: power off when idle

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/bastion-idle-check
UNIT
    cat >"$unit/bastion-idle.timer" <<'UNIT'
[Unit]
Description=bastion: check for SSH sessions every minute

[Timer]
OnBootSec=2min
OnUnitActiveSec=1min

[Install]
WantedBy=timers.target
UNIT
    systemctl daemon-reload
    systemctl enable --now bastion-idle.timer
}

# DCV's packages are signed with NICE's key, whose fingerprint bastion pins: the file served
# beside the packages must hold exactly that key (one more would pass a first-key check), and
# what is trusted afterwards is that key alone, re-exported by gpg into $2.
dcv_key_is_pinned() {
    local home keys fpr
    home=$(mktemp -d)
    keys=$(GNUPGHOME="$home" gpg --batch --no-autostart --with-colons --show-keys "$1" 2>/dev/null || true)
    fpr=$(printf '%s\n' "$keys" | awk -F: '$1 == "fpr" { print $10; exit }')
    if [ "$(printf '%s\n' "$keys" | grep -c '^pub:')" != 1 ] || [ "$fpr" != "$DCV_KEY_FINGERPRINT" ]; then
        log "the DCV signing key served at $DCV_BASE_URL is not exactly the pinned $DCV_KEY_FINGERPRINT (first: ${fpr:-none})"
        rm -rf "$home"
        return 1
    fi
    GNUPGHOME="$home" gpg --batch --no-autostart --quiet --import "$1" 2>/dev/null
    GNUPGHOME="$home" gpg --batch --no-autostart --armor --export --export-options export-minimal,export-clean "$DCV_KEY_FINGERPRINT" >"$2"
    rm -rf "$home"
    [ -s "$2" ]
}

configure_dcv() {
    mkdir -p "$ROOT/etc/dcv" "$ROOT/usr/local/sbin" "$ROOT/etc/systemd/system"
    # DCV listens on loopback only, reached through the SSH tunnel; no security group ever
    # opens its port. Each browser also needs a token minted over SSH for its URL, checked by
    # bastion's own verifier on 127.0.0.1:8444 (good once, for a minute), so another user of
    # the laptop that reaches the forwarded port gets nothing.
    cat >"$ROOT/etc/dcv/dcv.conf" <<'DCV'
[session-management]
create-session = false

[connectivity]
web-port = 8443
web-listen-endpoints = ['127.0.0.1:8443']
enable-quic-frontend = false

[security]
auth-token-verifier = "http://127.0.0.1:8444"
DCV
    cat >"$ROOT/usr/local/sbin/bastion-dcv-auth" <<'AUTH'
#!/usr/bin/python3
# Written by bastion: DCV's token verifier for the proxy's desktop (DCV's external
# authentication protocol). A token is good once, before its expiry, for its session.
import hashlib, os, time, urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer

TOKENS = os.environ.get("BASTION_DCV_TOKENS", "/run/bastion-dcv-tokens")


class Verifier(BaseHTTPRequestHandler):
    timeout = 5

    def do_POST(self):
        user = None
        try:
            size = max(0, min(int(self.headers.get("Content-Length") or 0), 4096))
            form = urllib.parse.parse_qs(self.rfile.read(size).decode("ascii", "replace"))
            token = form.get("authenticationToken", [""])[0]
            path = os.path.join(TOKENS, hashlib.sha256(token.encode()).hexdigest())
            with open(path) as f:
                expiry, owner, session = f.read().split()
            os.unlink(path)
            if session == form.get("sessionId", [""])[0] and time.time() < float(expiry):
                user = owner
        except (OSError, ValueError, TimeoutError):
            pass
        body = b'<auth result="no"/>'
        if user:
            body = ('<auth result="yes"><username>%s</username></auth>' % user).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", int(os.environ.get("BASTION_DCV_AUTH_PORT", "8444"))), Verifier).serve_forever()
AUTH
    chmod 0755 "$ROOT/usr/local/sbin/bastion-dcv-auth"
    cat >"$ROOT/etc/systemd/system/bastion-dcv-auth.service" <<UNIT
[Unit]
Description=bastion: DCV's token verifier on 127.0.0.1:8444
Before=dcvserver.service

[Service]
User=$DEFAULT_USER
RuntimeDirectory=bastion-dcv-tokens
RuntimeDirectoryMode=0700
ExecStart=/usr/local/sbin/bastion-dcv-auth
Restart=always

[Install]
WantedBy=multi-user.target
UNIT
    cat >"$ROOT/usr/local/sbin/bastion-dcv-token" <<TOKEN
#!/bin/bash
# Written by bastion: a fresh token for the proxy's DCV session (owned by $DEFAULT_USER), good
# once within a minute, for \`bastion connect --dcv --desktop\`. Only its hash is kept.
set -euo pipefail
dir=\${BASTION_DCV_TOKENS:-/run/bastion-dcv-tokens}
umask 077
token=\$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n')
name=\$(printf '%s' "\$token" | sha256sum | cut -d' ' -f1)
printf '%s $DEFAULT_USER bastion\\n' "\$((\$(date +%s) + 60))" >"\$dir/\$name"
# Run with sudo: the verifier ($DEFAULT_USER) owns the folder and must read the entry.
if [ "\$(id -u)" = 0 ]; then chown --reference="\$dir" "\$dir/\$name"; fi
echo "BastionDcvToken=\$token"
TOKEN
    chmod 0755 "$ROOT/usr/local/sbin/bastion-dcv-token"
    cat >"$ROOT/etc/dcv/bastion.perm" <<'PERM'
[permissions]
%any% allow builtin
PERM
    cat >"$ROOT/usr/local/sbin/bastion-dcv-session" <<SESSION
#!/bin/bash
# Written by bastion: the proxy's virtual DCV session, owned by $DEFAULT_USER.
set -eu
for _ in \$(seq 1 30); do dcv list-sessions >/dev/null 2>&1 && break; sleep 2; done
dcv list-sessions | grep -q "Session: 'bastion'" && exit 0
exec dcv create-session --type virtual --owner $DEFAULT_USER --permissions-file /etc/dcv/bastion.perm bastion
SESSION
    chmod 0755 "$ROOT/usr/local/sbin/bastion-dcv-session"
    cat >"$ROOT/etc/systemd/system/bastion-dcv-session.service" <<'UNIT'
[Unit]
Description=bastion: the proxy's virtual DCV session
After=dcvserver.service
Requires=dcvserver.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/bastion-dcv-session

[Install]
WantedBy=multi-user.target
UNIT
    systemctl daemon-reload
    systemctl enable --now bastion-dcv-auth.service
    systemctl enable dcvserver
    systemctl restart dcvserver
    systemctl enable --now bastion-dcv-session.service
}

disable_screen_lock() {
    mkdir -p "$ROOT/etc/dconf/db/local.d" "$ROOT/etc/dconf/profile"
    cat >"$ROOT/etc/dconf/db/local.d/00-bastion" <<'DCONF'
[org/gnome/desktop/screensaver]
lock-enabled=false
idle-activation-enabled=false

[org/gnome/desktop/session]
idle-delay=uint32 0

[org/gnome/desktop/lockdown]
disable-lock-screen=true
DCONF
    [ -e "$ROOT/etc/dconf/profile/user" ] || printf 'user-db:user\nsystem-db:local\n' >"$ROOT/etc/dconf/profile/user"
    dconf update
}

install_pcluster() {
    local venv="$ROOT/opt/bastion/pcluster"
    if [ -x "$venv/bin/pcluster" ] && "$venv/bin/pip" show aws-parallelcluster 2>/dev/null | grep -qx "Version: $PCLUSTER_VERSION"; then
        log "aws-parallelcluster $PCLUSTER_VERSION already installed"
    else
        mkdir -p "$ROOT/opt/bastion"
        python3 -m venv "$venv"
        # pip itself pinned by its hash (25.3: the last for Amazon Linux 2023's Python 3.9);
        # pcluster's dependencies from wheels only, so no package's own code runs to install it.
        "$venv/bin/pip" install --quiet --require-hashes -r <(printf 'pip==25.3 --hash=sha256:%s\n' \
            9655943313a94722b7774661c21049070f6bbb0a1516bf02f7c8d5d9201514cd)
        "$venv/bin/pip" install --quiet --only-binary=:all: "aws-parallelcluster==$PCLUSTER_VERSION"
    fi
    mkdir -p "$ROOT/usr/local/bin"
    ln -sfn /opt/bastion/pcluster/bin/pcluster "$ROOT/usr/local/bin/pcluster"
}

main() {
    log "bootstrap start (cluster $CLUSTER)"
    touch "$STATE/busy"
    INSTANCE_ID=$(imds meta-data/instance-id)
    REGION=$(imds meta-data/placement/region)
    ensure_awscli
    tag bastion:state bootstrapping
    ensure_teammate_user
    guard_imds
    harden_sshd
    # Teammates log in with keys pushed through EC2 Instance Connect; without the agent, only
    # the key of whoever ran `bastion up` works, so a failure here is said, not fatal.
    ensure_instance_connect || log "the EC2 Instance Connect agent could not be installed: only the proxy key logs in"
    publish_host_key
    install_console_keys
    # Before the slow part: a proxy whose desktop install fails must still stop when idle.
    install_idle_timer
    tag bastion:state ready
    PHASE=desktop
    tag bastion:desktop installing
    if [ "$INSTALL_DCV" = 1 ]; then
        install_desktop
        install_dcv
        configure_dcv
        disable_screen_lock
    fi
    install_node
    install_prereqs
    install_pcluster
    tag bastion:desktop ready
    rm -f "$STATE/busy"
    log "bootstrap done"
}
