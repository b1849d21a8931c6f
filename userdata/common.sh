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

harden_sshd() {
    local conf="$ROOT/etc/ssh/sshd_config.d/10-bastion.conf"
    mkdir -p "$(dirname "$conf")"
    cat >"$conf" <<'SSHD'
# Written by bastion: keys only, no root, forwarding for the jump to the head node.
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowTcpForwarding yes
X11Forwarding no
ClientAliveInterval 30
ClientAliveCountMax 4
SSHD
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

configure_dcv() {
    mkdir -p "$ROOT/etc/dcv" "$ROOT/usr/local/sbin" "$ROOT/etc/systemd/system"
    # DCV listens on loopback only, reached through the SSH tunnel; no security group ever
    # opens its port. Each browser also needs a token minted over SSH for its URL (checked by
    # DCV's simple external authenticator on 127.0.0.1:8444), so another user of the laptop
    # that reaches the forwarded port gets nothing.
    cat >"$ROOT/etc/dcv/dcv.conf" <<'DCV'
# Written by bastion.
[session-management]
create-session = false

[connectivity]
web-port = 8443
web-listen-endpoints = ['127.0.0.1:8443']
enable-quic-frontend = false

[security]
auth-token-verifier = "https://127.0.0.1:8444"
DCV
    cat >"$ROOT/usr/local/sbin/bastion-dcv-token" <<TOKEN
#!/bin/bash
# Written by bastion: a fresh token for the proxy's DCV session (owned by $DEFAULT_USER), given
# to DCV's simple external authenticator on stdin and printed for \`bastion connect --dcv --desktop\`.
set -euo pipefail
token=\$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n')
printf '%s' "\$token" | dcvsimpleextauth add-user --append --session bastion --user $DEFAULT_USER --auth-dir /var/run/dcvsimpleextauth
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
    systemctl enable --now dcvsimpleextauth
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
        "$venv/bin/pip" install --quiet --upgrade pip
        "$venv/bin/pip" install --quiet "aws-parallelcluster==$PCLUSTER_VERSION"
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
    harden_sshd
    # Teammates log in with keys pushed through EC2 Instance Connect; without the agent, only
    # the key of whoever ran `bastion up` works, so a failure here is said, not fatal.
    ensure_instance_connect || log "the EC2 Instance Connect agent could not be installed: only the proxy key logs in"
    publish_host_key
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
