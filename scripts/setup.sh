#!/usr/bin/env bash
# Set up this checkout on a Debian 12 host, idempotently; see docs/host-setup.md.
#
#   scripts/setup.sh install        system packages, containers.conf drop-in, .venv, base images
#   scripts/setup.sh demo           install, then start the daemon and deploy examples/hello-python
#   scripts/setup.sh test [ARGS]    install, then ruff, mypy and pytest (ARGS go to pytest)
#
# Every step checks before it acts, so a second run takes seconds.
set -euo pipefail

mode="${1:-install}"
[ "$#" -gt 0 ] && shift
case "$mode" in
  install | demo | test) ;;
  -h | --help)
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "usage: $0 [install|demo|test] [pytest args...]" >&2
    exit 2
    ;;
esac

cd "$(dirname "$0")/.."
root="$(pwd)"
venv="$root/.venv"
python="${PYTHON:-python3}"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
is_root() { [ "$(id -u)" -eq 0 ]; }

# --- (a) system packages ------------------------------------------------------
# Container tooling and the Debian base image builder, with apt's recommends
# (fuse-overlayfs, ...) as measured in HOST.md; then tools that later tests use,
# without recommends (no exporters or daemons they do not need). slirp4netns is
# named: `plat dev` installs dependency changes on its user-mode network.
container_packages=(buildah podman runc mmdebstrap uidmap catatonit slirp4netns ca-certificates)
tool_packages=(prometheus wrk nginx nodejs chromium chromium-driver git sqlite3)
# The Kubernetes tests: an OCI registry, etcd, and what builds kube-apiserver (f).
k8s_packages=(docker-registry etcd-server golang-go rsync dpkg-dev golang-github-modern-go-reflect2-dev)
tool_packages+=("${k8s_packages[@]}")
# The Docker Engine tests (h): dockerd beside Podman, started by hand below.
tool_packages+=(docker.io)
# Debian's python3 has no ensurepip without python3-venv (pyenv and other builds do).
if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  container_packages+=(python3-venv)
fi

installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]; }
missing_of() {
  local pkg
  for pkg in "$@"; do installed "$pkg" || printf '%s\n' "$pkg"; done
}

mapfile -t missing_containers < <(missing_of "${container_packages[@]}")
mapfile -t missing_tools < <(missing_of "${tool_packages[@]}")
missing=("${missing_containers[@]}" "${missing_tools[@]}")
if [ "${#missing[@]}" -gt 0 ]; then
  if ! is_root; then
    echo "missing system packages; run:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Package scripts must not start nginx/prometheus: tests run their own.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  if [ "${#missing_containers[@]}" -gt 0 ]; then
    apt-get install -y -qq "${missing_containers[@]}" >/dev/null
  fi
  if [ "${#missing_tools[@]}" -gt 0 ]; then
    apt-get install -y -qq --no-install-recommends "${missing_tools[@]}" >/dev/null
  fi
  if [ -n "$(trap -p EXIT)" ]; then
    rm -f "$policy"
    trap - EXIT
  fi
fi

# --- (b) containers.conf drop-in ------------------------------------------------
# Two host problems break every `podman run` (docs/host-setup.md):
#  - crun 1.8 refuses cgroup v1/v2 hybrid hosts -> use runc there;
#  - rootful podman asks for 1048576 open files/processes; a host whose hard
#    limits are lower and cannot be raised fails with setrlimit EPERM -> set
#    default_ulimits within what the host grants.
dropin=/etc/containers/containers.conf.d/50-plat.conf
marker="# written by plat scripts/setup.sh"

cgroup_layout() {
  if [ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" = cgroup2fs ]; then
    echo v2
  elif grep -q ' cgroup2 ' /proc/self/mounts; then
    echo hybrid
  else
    echo v1
  fi
}

# Whether root may raise its hard limits to podman's default (a subshell, so undone).
can_raise_limits() {
  (ulimit -Hn 1048576 && ulimit -Hu 1048576) 2>/dev/null
}

dropin_text() {
  local layout="$1" text="" nofile nproc
  if ! can_raise_limits; then
    # HOST.md's values, lowered further if this host's hard limits are lower.
    nofile="$(ulimit -Hn)"
    nproc="$(ulimit -Hu)"
    if [ "$nofile" = unlimited ] || [ "$nofile" -gt 20000 ]; then nofile=20000; fi
    if [ "$nproc" = unlimited ] || [ "$nproc" -gt 1000 ]; then nproc=1000; fi
    text+="[containers]"$'\n'
    text+="default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"]"$'\n'
  fi
  if [ "$layout" = hybrid ]; then
    text+="[engine]"$'\n'"runtime = \"runc\""$'\n'
  fi
  printf '%s' "$text"
}

if is_root; then
  wanted="$(dropin_text "$(cgroup_layout)")"
  if [ -e "$dropin" ] && ! grep -qF "$marker" "$dropin"; then
    say "$dropin exists and was not written by plat: leaving it alone"
  elif [ -n "$wanted" ]; then
    content="$marker"$'\n'"$wanted"
    if [ "$(cat "$dropin" 2>/dev/null)" != "$content" ]; then
      say "writing $dropin"
      mkdir -p "$(dirname "$dropin")"
      printf '%s\n' "$content" >"$dropin"
    fi
  elif [ -e "$dropin" ]; then
    say "removing $dropin (no longer needed)"
    rm -f "$dropin"
  fi
fi

# --- (f, started early) kube-apiserver for the Kubernetes tests -------------------
# Debian packages no kube-apiserver; build it from Debian's `kubernetes` source
# package (v1.20) with Debian's Go, once per machine, into /var/cache/plat (about
# 7 min on 2 cores; docs/host-setup.md). It builds in the background while the
# venv and base images are made, and `test` waits for it before pytest.
kube_cache=/var/cache/plat
kube_log="$kube_cache/kube-apiserver-build.log"
kube_pid=""

ensure_deb_src() {
  local src=/etc/apt/sources.list.d/plat-deb-src.sources known
  known="$(apt-cache showsrc kubernetes 2>/dev/null || true)"
  grep -q '^Version:' <<<"$known" && return 0
  [ -e "$src" ] || printf '%s\n' \
    "# written by plat scripts/setup.sh: Debian source packages (kube-apiserver)" \
    "Types: deb-src" "URIs: http://deb.debian.org/debian" "Suites: bookworm" \
    "Components: main" "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" "" \
    "Types: deb-src" "URIs: http://deb.debian.org/debian-security" \
    "Suites: bookworm-security" "Components: main" \
    "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" >"$src"
  apt-get update -qq
}

build_kube_apiserver() {
  local version="$1" bin="$2" work
  work="$(mktemp -d "$kube_cache/kubernetes-src.XXXXXX")"
  trap "rm -rf '$work'" EXIT
  cd "$work"
  apt-get source -qq "kubernetes=$version" 2>&1 | grep -v 'unsandboxed' || true
  cd kubernetes-*/
  # Kubernetes 1.20 vendors reflect2 1.0.1, whose map iteration crashes the server
  # when built with Go >= 1.18 (custom resources, e.g. Knative's Service): use
  # Debian's reflect2 1.0.2, which fixed it.
  rsync -a --delete --exclude BUILD /usr/share/gocode/src/github.com/modern-go/reflect2/ \
    vendor/github.com/modern-go/reflect2/
  rm -f vendor/github.com/modern-go/reflect2/go.mod
  sed -i 's#github.com/modern-go/reflect2 v1.0.1#github.com/modern-go/reflect2 v1.0.2#g' \
    go.mod vendor/modules.txt
  mkdir -p .go/src/k8s.io
  ln -sfn ../../.. .go/src/k8s.io/kubernetes
  env GOPATH="$PWD/.go" GOCACHE="$work/gocache" HOME="$work" CGO_ENABLED=0 \
    make WHAT=cmd/kube-apiserver
  install -m 0755 _output/bin/kube-apiserver "$bin.tmp"
  mv "$bin.tmp" "$bin"
}

start_kube_apiserver_build() {
  local version bin
  ensure_deb_src
  version="$(apt-cache showsrc kubernetes | sed -n 's/^Version: //p' | sort -V | tail -n 1)"
  if [ -z "$version" ]; then
    echo "no source package for kubernetes (deb-src); the Kubernetes tests will fail" >&2
    return 0
  fi
  bin="$kube_cache/kube-apiserver-$version"
  [ -x "$bin" ] && return 0
  mkdir -p "$kube_cache"
  say "building kube-apiserver $version in the background (log: $kube_log)"
  kube_started=$SECONDS
  (
    exec 9>"$kube_cache/kube-apiserver.lock"
    flock 9
    [ -x "$bin" ] || build_kube_apiserver "$version" "$bin"
  ) >"$kube_log" 2>&1 &
  kube_pid=$!
}

wait_kube_apiserver_build() {
  [ -n "$kube_pid" ] || return 0
  say "waiting for the kube-apiserver build"
  if ! wait "$kube_pid"; then
    echo "the kube-apiserver build failed; the end of $kube_log:" >&2
    tail -n 30 "$kube_log" >&2
    exit 1
  fi
  say "kube-apiserver built in $((SECONDS - kube_started)) s"
}

if [ "$mode" = test ]; then
  if is_root; then
    start_kube_apiserver_build
  elif ! compgen -G "$kube_cache/kube-apiserver-[0-9]*" >/dev/null; then
    echo "no kube-apiserver in $kube_cache: run this as root once to build it" >&2
  fi
fi

# --- (c) virtualenv -----------------------------------------------------------
if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv"
  "$python" -m venv "$venv"
fi
stamp="$venv/.plat-install-stamp"
want_stamp="$(sha256sum <pyproject.toml | cut -d' ' -f1) $("$venv/bin/python" -V 2>&1)"
if [ ! -x "$venv/bin/plat" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want_stamp" ]; then
  say "installing plat and its test tools into .venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[test]'
  printf '%s\n' "$want_stamp" >"$stamp"
fi
# The bytecode of this checkout, as `pip install .` compiles it: an editable install
# does not, and where PYTHONDONTWRITEBYTECODE is set every `plat` command compiled
# its modules again (~50 ms of each start). Modules edited later are recompiled on
# import (or not written, with that variable): never stale.
"$venv/bin/python" -m compileall -q -j 0 plat >/dev/null
plat="$venv/bin/plat"

# --- (d) base images ----------------------------------------------------------
# No-ops when present; ~1 min each the first time (docs/host-setup.md).
say "base images"
# Prints one image name per line, in the order asked.
images="$("$plat" runtime bootstrap python node)"
python_image="$(head -n 1 <<<"$images")"

# The proof that (b) worked: a real container from local storage.
if ! out="$(podman run --rm --network=none "$python_image" python3 -c 'print(1)' 2>&1)" ||
  [ "$out" != 1 ]; then
  echo "a test container failed to run:" >&2
  echo "$out" >&2
  echo "run \`$plat doctor\` for the cause and its fix" >&2
  exit 1
fi

# --- (g) a rootless user for tests/test_rootless.py ------------------------------
# plat-rootless: its own subuid/subgid ranges, runtime folder, overlay storage,
# virtualenv (an editable install of this checkout) and a copy of the python base
# image in its own store (podman save | podman load: ~6 s, only when the image
# changed). /dev/net/tun becomes 0666 so slirp4netns can publish ports.
rootless_user=plat-rootless
as_rootless() {
  runuser -u "$rootless_user" -- env XDG_RUNTIME_DIR="/run/user/$(id -u "$rootless_user")" "$@"
}

next_subid() { # the first id after every range in $1 (at least 100000)
  awk -F: 'BEGIN { n = 100000 } { if ($2 + $3 > n) n = $2 + $3 } END { print n }' "$1"
}

setup_rootless_user() {
  local u="$rootless_user" uid home start py stamp_file want
  local started=$SECONDS
  id -u "$u" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$u"
  uid="$(id -u "$u")"
  home="$(getent passwd "$u" | cut -d: -f6)"
  if ! grep -q "^$u:" /etc/subuid 2>/dev/null; then
    start="$(next_subid /etc/subuid)"
    usermod --add-subuids "$start-$((start + 65535))" "$u"
  fi
  if ! grep -q "^$u:" /etc/subgid 2>/dev/null; then
    start="$(next_subid /etc/subgid)"
    usermod --add-subgids "$start-$((start + 65535))" "$u"
  fi
  [ "$(stat -c %a /dev/net/tun)" = 666 ] || chmod 0666 /dev/net/tun
  install -d -m 0700 -o "$u" -g "$u" "/run/user/$uid"
  if [ ! -e "$home/.config/containers/storage.conf" ]; then
    runuser -u "$u" -- mkdir -p "$home/.config/containers"
    printf '[storage]\ndriver = "overlay"\n' |
      runuser -u "$u" -- tee "$home/.config/containers/storage.conf" >/dev/null
  fi
  if ! runuser -u "$u" -- test -r "$root/pyproject.toml"; then
    echo "$u cannot read $root: tests/test_rootless.py will fail (clone where others can read)" >&2
    return 0
  fi
  # Debian's python3 (the checkout's own may live under /root, which $u cannot reach).
  py=/usr/bin/python3
  if ! "$py" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  fi
  stamp_file="$home/venv/.plat-install-stamp"
  want="$(sha256sum <pyproject.toml | cut -d' ' -f1) $("$py" -V 2>&1) $root"
  if [ "$(cat "$stamp_file" 2>/dev/null)" != "$want" ] || [ ! -x "$home/venv/bin/plat" ]; then
    say "installing plat into $home/venv for $u"
    runuser -u "$u" -- "$py" -m venv "$home/venv"
    (cd "$home" && runuser -u "$u" -- "$home/venv/bin/python" -m pip install --quiet \
      --disable-pip-version-check -e "$root")
    printf '%s\n' "$want" | runuser -u "$u" -- tee "$stamp_file" >/dev/null
  fi
  if [ "$(podman image inspect --format '{{.Id}}' "$python_image")" != \
    "$( (cd /tmp && as_rootless podman image inspect --format '{{.Id}}' "$python_image") 2>/dev/null)" ]; then
    say "copying $python_image into $u's image store"
    podman save "$python_image" | (cd /tmp && as_rootless podman load -q) >/dev/null 2>&1
  fi
  say "rootless user $u ready in $((SECONDS - started)) s"
}

# --- (h) Docker Engine for tests/test_docker_engine.py ----------------------------
# Debian's docker.io, beside Podman. dockerd (no systemd: by hand, on its default
# socket) gets the python base image in its own image store (podman save | docker
# load: ~5 s, only when the image changed), then stops again if this script
# started it: tests/test_docker_engine.py starts it for its own tests only, so the
# rest of the suite never sees a second engine on a well-known socket.
docker_socket=/var/run/docker.sock
docker_answers() { [ -S "$docker_socket" ] && docker version >/dev/null 2>&1; }

setup_docker() {
  local started=$SECONDS i pid=""
  if ! docker_answers; then
    setsid dockerd --pidfile /var/run/docker.pid >>/var/log/plat-dockerd.log 2>&1 </dev/null &
    pid=$!
    for i in $(seq 1 300); do
      docker_answers && break
      sleep 0.1
    done
    if ! docker_answers; then
      echo "dockerd did not answer; the end of /var/log/plat-dockerd.log:" >&2
      tail -n 20 /var/log/plat-dockerd.log >&2
      kill "$pid" 2>/dev/null || true
      return 0
    fi
  fi
  if [ "$(podman image inspect --format 'sha256:{{.Id}}' "$python_image")" != \
    "$(docker image inspect --format '{{.Id}}' "$python_image" 2>/dev/null)" ]; then
    say "copying $python_image into Docker's image store"
    podman save "$python_image" | docker load -q >/dev/null
  fi
  if [ -n "$pid" ]; then
    kill "$pid"
    wait "$pid" 2>/dev/null || true
  fi
  say "Docker Engine images ready in $((SECONDS - started)) s"
}

if [ "$mode" = test ] && is_root; then
  setup_rootless_user
  setup_docker
fi

# --- (e) modes ----------------------------------------------------------------
case "$mode" in
  install)
    say "ready: source .venv/bin/activate, then plat --help"
    ;;
  demo)
    "$plat" daemon start
    "$plat" deploy examples/hello-python
    "$plat" invoke hello-python -d '{"name": "Ada"}'
    port="${PLAT_GATEWAY_PORT:-8080}"
    echo
    echo "Try it:"
    printf '  curl -u admin:$(%s auth password) http://127.0.0.1:%s/function/hello-python -d %s\n' \
      "$plat" "$port" "'{\"name\": \"Ada\"}'"
    echo "Use plat from this shell:"
    echo "  source .venv/bin/activate"
    ;;
  test)
    wait_kube_apiserver_build
    say "ruff"
    "$venv/bin/ruff" check plat tests benchmarks
    say "mypy"
    "$venv/bin/mypy"
    say "pytest"
    exec "$venv/bin/pytest" -q -p no:cacheprovider "$@"
    ;;
esac
