#!/bin/sh
# A Docker-Engine-API-compatible engine (podman's) for the integration tests,
# the benchmarks and trying the Docker environment on a machine without Docker;
# and an image registry with password auth to pull from.  Everything lives in
# STATE_DIR; nothing outside it is touched except the network bridges podman
# creates (removed by `stop`).  Needs podman, runc, conmon, slirp4netns,
# fuse-overlayfs, uidmap, busybox-static, docker-registry and apache2-utils
# (.ci/run installs them; this script installs nothing).
#
#   podman-engine.sh start    STATE_DIR                -> prints the socket path
#   podman-engine.sh registry STATE_DIR PORT USER PASS -> starts a registry on
#        127.0.0.1:PORT (plain HTTP, htpasswd auth) holding busybox-test:latest
#   podman-engine.sh stop     STATE_DIR                -> removes containers,
#        networks, stops the service and the registry, unmounts the storage
#
# The engine: runtime runc with the cgroupfs manager (crun refuses hybrid
# cgroup hierarchies), container rlimits with soft == hard within the host's
# hard limits (podman refuses others), the json-file log driver (podman has
# no "local" driver), networks kept under STATE_DIR, and 127.0.0.1 registries
# allowed over plain HTTP.  Two tiny images are built from the host's static
# busybox (there is no public registry here): localhost/busybox-test, with the
# entrypoint of Pterodactyl's server images, and localhost/busybox-installer,
# without one (as installer images).
set -eu
cmd=${1:?start|registry|stop}; D=${2:?STATE_DIR}
export CONTAINERS_CONF="$D/containers.conf" CONTAINERS_STORAGE_CONF="$D/storage.conf"
export CONTAINERS_REGISTRIES_CONF="$D/registries.conf"
SOCK="$D/podman.sock"
api() { curl -sf --unix-socket "$SOCK" "$@"; }

case "$cmd" in
stop)
  if [ -f "$D/registry.pid" ]; then kill "$(cat "$D/registry.pid")" 2>/dev/null || true; rm -f "$D/registry.pid"; fi
  # The bridges of this engine's networks (netavark leaves one behind when a
  # container's teardown failed, and its subnet then blocks the next engine).
  bridges=$(cat "$D"/networks/*.json 2>/dev/null | sed -n 's/.*"network_interface": *"\([^"]*\)".*/\1/p')
  if [ -f "$D/service.pid" ]; then
    podman ps -aq 2>/dev/null | xargs -r podman rm -f -t 0 >/dev/null 2>&1 || true
    for n in $(podman network ls -q 2>/dev/null); do
      [ "$n" = podman ] || podman network rm -f "$n" >/dev/null 2>&1 || true
    done
    kill "$(cat "$D/service.pid")" 2>/dev/null || true
    rm -f "$D/service.pid"
  fi
  # Whatever survived (a container whose removal failed keeps its conmon and
  # its ports): containers whose bundle is under STATE_DIR, then monitors
  # naming it.  Nothing of another engine matches.
  if command -v runc >/dev/null; then
    runc list -q 2>/dev/null | while read -r id; do
      if runc state "$id" 2>/dev/null | grep -q "\"bundle\": \"$D/"; then
        runc kill "$id" KILL 2>/dev/null || true; runc delete -f "$id" 2>/dev/null || true
      fi
    done
  fi
  for p in /proc/[0-9]*; do
    if tr '\0' ' ' < "$p/cmdline" 2>/dev/null | grep -qF " $D/"; then
      kill -9 "${p#/proc/}" 2>/dev/null || true
    fi
  done
  for b in $bridges; do
    ip link show "$b" >/dev/null 2>&1 && ip link delete "$b" 2>/dev/null || true
  done
  # Storage mounts left behind by killed containers.
  awk -v d="$D/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  exit 0 ;;
start)
  for tool in podman runc conmon curl; do
    command -v "$tool" >/dev/null || { echo "podman-engine.sh: $tool is not installed" >&2; exit 3; }
  done
  [ -x /bin/busybox ] || { echo "podman-engine.sh: /bin/busybox (busybox-static) is missing" >&2; exit 3; }
  mkdir -p "$D/networks"
  nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] && nofile=1048576
  cat > "$D/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=32768:32768"]
log_driver = "json-file"
[network]
network_config_dir = "$D/networks"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$D/events.log"
CONF
  cat > "$D/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$D/graph"
runroot = "$D/run"
CONF
  cat > "$D/registries.conf" <<CONF
unqualified-search-registries = []
[[registry]]
location = "127.0.0.1"
insecure = true
CONF
  nohup podman system service --time=0 "unix://$SOCK" >"$D/service.log" 2>&1 &
  echo $! > "$D/service.pid"
  i=0
  until api http://d/_ping >/dev/null 2>&1; do
    i=$((i+1)); [ $i -lt 150 ] || { cat "$D/service.log" >&2; exit 1; }; sleep 0.1
  done
  if ! api http://d/v1.41/images/localhost/busybox-test/json >/dev/null 2>&1; then
    R="$D/rootfs"; rm -rf "$R"; mkdir -p "$R/bin" "$R/etc" "$R/tmp" "$R/home/container" "$R/mnt/server" "$R/mnt/install"
    cp /bin/busybox "$R/bin/busybox"
    for a in $("$R/bin/busybox" --list); do [ "$a" = busybox ] || ln -s busybox "$R/bin/$a"; done
    ln -s bin "$R/sbin"; mkdir -p "$R/usr"; ln -s ../bin "$R/usr/bin"
    echo 'root:x:0:0:root:/root:/bin/sh' > "$R/etc/passwd"
    echo 'container:x:988:988::/home/container:/bin/sh' >> "$R/etc/passwd"
    printf 'root:x:0:\ncontainer:x:988:\n' > "$R/etc/group"
    echo UTC > "$R/etc/timezone"
    # The entrypoint of Pterodactyl's images: {{VAR}} in STARTUP becomes ${VAR}.
    cat > "$R/entrypoint.sh" <<'SH'
#!/bin/sh
cd /home/container || exit 1
exec /bin/sh -c "$(printf '%s' "$STARTUP" | sed -e 's/{{/${/g' -e 's/}}/}/g')"
SH
    chmod 755 "$R/entrypoint.sh"
    tar -C "$R" -cf "$D/rootfs.tar" .
    api -X POST -H 'Content-Type: application/x-tar' --data-binary @"$D/rootfs.tar" \
      "http://d/v1.41/images/create?fromSrc=-&repo=localhost/busybox-test&tag=latest&changes=ENTRYPOINT%20%5B%22%2Fentrypoint.sh%22%5D&changes=WORKDIR%20%2Fhome%2Fcontainer" >/dev/null
    # Installer images (as Pterodactyl's) have no entrypoint: the command runs as given.
    api -X POST -H 'Content-Type: application/x-tar' --data-binary @"$D/rootfs.tar" \
      "http://d/v1.41/images/create?fromSrc=-&repo=localhost/busybox-installer&tag=latest" >/dev/null
    rm -rf "$R" "$D/rootfs.tar"
  fi
  echo "$SOCK" ;;
registry)
  port=${3:?PORT}; user=${4:?USER}; pass=${5:?PASS}
  for tool in docker-registry htpasswd; do
    command -v "$tool" >/dev/null || { echo "podman-engine.sh: $tool is not installed" >&2; exit 3; }
  done
  mkdir -p "$D/registry"
  htpasswd -Bbn "$user" "$pass" > "$D/registry/htpasswd"
  cat > "$D/registry/config.yml" <<CONF
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $D/registry/data}}
http: {addr: "127.0.0.1:$port"}
auth: {htpasswd: {realm: wings-test, path: $D/registry/htpasswd}}
CONF
  nohup docker-registry serve "$D/registry/config.yml" >"$D/registry/log" 2>&1 &
  echo $! > "$D/registry.pid"
  i=0
  until curl -s -o /dev/null "http://127.0.0.1:$port/v2/"; do
    i=$((i+1)); [ $i -lt 100 ] || { cat "$D/registry/log" >&2; exit 1; }; sleep 0.1
  done
  podman push -q --tls-verify=false --creds "$user:$pass" localhost/busybox-test:latest \
    "docker://127.0.0.1:$port/wings/busybox:latest" >/dev/null
  echo "127.0.0.1:$port/wings/busybox:latest" ;;
*) echo "usage: $0 start|registry|stop STATE_DIR ..." >&2; exit 2 ;;
esac
