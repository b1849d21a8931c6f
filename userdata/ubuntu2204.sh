# ---- Ubuntu 22.04 part (userdata/ubuntu2204.sh) ---------------------------------------------
export DEBIAN_FRONTEND=noninteractive
NODE_VERSION="${NODE_VERSION:-v20.18.1}"

apt_install() {
    apt-get update -q
    apt-get install -y -q "$@"
}

ensure_awscli() {
    command -v aws >/dev/null || snap install aws-cli --classic || apt_install awscli
}

# The agent that lets a key pushed with EC2 Instance Connect log in.
ensure_instance_connect() {
    dpkg -s ec2-instance-connect >/dev/null 2>&1 || apt_install ec2-instance-connect
}

ensure_nft() {
    command -v nft >/dev/null || apt_install nftables
}

dcv_arch() {
    case "$(uname -m)" in aarch64 | arm64) echo aarch64 ;; *) echo x86_64 ;; esac
}

install_desktop() {
    if ! dpkg -s ubuntu-desktop gdm3 >/dev/null 2>&1; then
        apt_install ubuntu-desktop gdm3
    fi
    mkdir -p "$ROOT/etc/gdm3"
    [ -e "$ROOT/etc/gdm3/custom.conf" ] || printf '[daemon]\n' >"$ROOT/etc/gdm3/custom.conf"
    if ! grep -q '^WaylandEnable=false' "$ROOT/etc/gdm3/custom.conf"; then
        sed -i 's/^\[daemon\]$/[daemon]\nWaylandEnable=false/' "$ROOT/etc/gdm3/custom.conf"
    fi
}

install_dcv() {
    if dpkg -s nice-dcv-server nice-dcv-web-viewer nice-xdcv >/dev/null 2>&1; then
        log "DCV already installed"
        return 0
    fi
    local dir name
    dir=$(mktemp -d)
    name="nice-dcv-$DCV_VERSION-ubuntu2204-$(dcv_arch)"
    curl -fsSL -o "$dir/NICE-GPG-KEY" "$DCV_BASE_URL/NICE-GPG-KEY"
    dcv_key_is_pinned "$dir/NICE-GPG-KEY" "$dir/pinned.gpg"
    curl -fsSL -o "$dir/dcv.tgz" "$DCV_BASE_URL/${DCV_VERSION%%-*}/Servers/$name.tgz"
    tar -xzf "$dir/dcv.tgz" -C "$dir"
    apt_install "$dir/$name"/nice-dcv-server_*.deb "$dir/$name"/nice-dcv-web-viewer_*.deb "$dir/$name"/nice-xdcv_*.deb
    usermod -aG video dcv
    rm -rf "$dir"
}

install_node() {
    if command -v node >/dev/null && node --version | grep -q '^v\(1[89]\|[2-9][0-9]\)'; then
        return 0
    fi
    local arch dir
    case "$(uname -m)" in aarch64 | arm64) arch=arm64 ;; *) arch=x64 ;; esac
    dir=$(mktemp -d)
    curl -fsSL -o "$dir/node.tar.xz" "https://nodejs.org/dist/$NODE_VERSION/node-$NODE_VERSION-linux-$arch.tar.xz"
    curl -fsSL -o "$dir/SHASUMS256.txt" "https://nodejs.org/dist/$NODE_VERSION/SHASUMS256.txt"
    (cd "$dir" && grep " node-$NODE_VERSION-linux-$arch.tar.xz\$" SHASUMS256.txt | sed "s/node-$NODE_VERSION-linux-$arch.tar.xz/node.tar.xz/" | sha256sum -c -)
    mkdir -p "$ROOT/opt/bastion/node" "$ROOT/usr/local/bin"
    tar -xJf "$dir/node.tar.xz" -C "$ROOT/opt/bastion/node" --strip-components=1
    ln -sfn /opt/bastion/node/bin/node "$ROOT/usr/local/bin/node"
    ln -sfn /opt/bastion/node/bin/npm "$ROOT/usr/local/bin/npm"
    ln -sfn /opt/bastion/node/bin/npx "$ROOT/usr/local/bin/npx"
    rm -rf "$dir"
}

install_prereqs() {
    dpkg -s python3-venv >/dev/null 2>&1 || apt_install python3-venv
}
