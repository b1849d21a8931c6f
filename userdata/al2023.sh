# ---- Amazon Linux 2023 part (userdata/al2023.sh) --------------------------------------------

ensure_awscli() {
    command -v aws >/dev/null || dnf install -y awscli-2
}

# The agent that lets a key pushed with EC2 Instance Connect log in (AL2023 AMIs ship it).
ensure_instance_connect() {
    rpm -q ec2-instance-connect >/dev/null || dnf install -y ec2-instance-connect
}

ensure_nft() {
    command -v nft >/dev/null || dnf install -y nftables
}

dcv_arch() {
    case "$(uname -m)" in aarch64 | arm64) echo aarch64 ;; *) echo x86_64 ;; esac
}

install_desktop() {
    if ! rpm -q gdm >/dev/null 2>&1; then
        dnf groupinstall -y 'Desktop'
    fi
    mkdir -p "$ROOT/etc/gdm"
    [ -e "$ROOT/etc/gdm/custom.conf" ] || printf '[daemon]\n' >"$ROOT/etc/gdm/custom.conf"
    if ! grep -q '^WaylandEnable=false' "$ROOT/etc/gdm/custom.conf"; then
        sed -i 's/^\[daemon\]$/[daemon]\nWaylandEnable=false/' "$ROOT/etc/gdm/custom.conf"
    fi
}

install_dcv() {
    if rpm -q nice-dcv-server nice-dcv-web-viewer nice-xdcv >/dev/null 2>&1; then
        log "DCV already installed"
        return 0
    fi
    local dir name rpms
    dir=$(mktemp -d)
    name="nice-dcv-$DCV_VERSION-amzn2023-$(dcv_arch)"
    curl -fsSL -o "$dir/NICE-GPG-KEY" "$DCV_BASE_URL/NICE-GPG-KEY"
    dcv_key_is_pinned "$dir/NICE-GPG-KEY" "$dir/pinned.gpg"
    rpmkeys --root "${ROOT:-/}" --import "$dir/pinned.gpg"
    curl -fsSL -o "$dir/dcv.tgz" "$DCV_BASE_URL/${DCV_VERSION%%-*}/Servers/$name.tgz"
    tar -xzf "$dir/dcv.tgz" -C "$dir"
    rpms=("$dir/$name"/nice-dcv-server-*.rpm "$dir/$name"/nice-dcv-web-viewer-*.rpm "$dir/$name"/nice-xdcv-*.rpm)
    # Enforced, not only imported (dnf checks no local package by default): each one signed
    # with that key, an unsigned one refused too.
    rpmkeys --root "${ROOT:-/}" --define '_pkgverify_level all' --checksig "${rpms[@]}"
    dnf install -y --setopt=localpkg_gpgcheck=1 "${rpms[@]}"
    rm -rf "$dir"
}

install_node() {
    command -v node >/dev/null || dnf install -y nodejs
}

install_prereqs() {
    command -v python3 >/dev/null || dnf install -y python3
}
