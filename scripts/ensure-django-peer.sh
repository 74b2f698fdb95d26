#!/usr/bin/env bash
# Make sure Debian's python3 can run the Django Channels peer that layer/'s cross-talk tests start
# (../shared/interop/django-channels/peer.py): installs, with apt only (no PyPI), the Debian
# packages its check.sh names (and python3 itself) when they are missing. A no-op when they are
# there, or when there is no peer folder; if apt fails, the cross-talk tests skip and say why.
set -u
export DEBIAN_FRONTEND=noninteractive
cd "$(dirname "$0")/.."
PY=${DJANGO_PEER_PYTHON:-/usr/bin/python3}
DIR=${DJANGO_PEER_DIR:-../shared/interop/django-channels}
[ -f "$DIR/peer.py" ] || { echo "django-peer: no $DIR/peer.py: the cross-talk tests will skip"; exit 0; }

pkgs=()
[ -x "$PY" ] || pkgs+=(python3) # Debian's, where the packages below go
"$PY" -c 'import six, cached_property, cryptography' 2>/dev/null ||
  pkgs+=(python3-six python3-cached-property python3-cryptography)
"$PY" -c 'import pamqp, msgpack, channels.layers' 2>/dev/null ||
  pkgs+=(python3-pamqp python3-msgpack python3-django-channels)
if [ ${#pkgs[@]} -eq 0 ]; then
  echo "django-peer: python packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "django-peer: installing ${pkgs[*]}"
# Other jobs may hold the dpkg lock for a while: wait for it rather than fail.
if ! { $SUDO apt-get -o DPkg::Lock::Timeout=300 update -qq &&
  $SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${pkgs[@]}"; } >/dev/null; then
  echo "django-peer: apt-get install failed: the cross-talk tests will skip" >&2
  exit 0
fi
"$PY" -c 'import six, cached_property, cryptography, pamqp, msgpack, channels.layers' &&
  echo "django-peer: python packages installed"
