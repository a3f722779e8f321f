#!/usr/bin/env bash
# Build OpenSIPS 3.6.8 with the modules the GKE dispatcher script needs (dispatcher, db_text,
# mi_datagram, sl, tm, rr, maxfwd, sipmsgops, signaling) from the peer tarball in
# ../shared/peers (unmodified upstream source; OpenSIPS runs as a separate process, nothing of
# it is copied into vc), into a cache, and print the install prefix. Cached: a second run prints
# the prefix at once. About 75-120 s on 2 cores the first time.
#
#   scripts/build-opensips-dispatcher.sh [PREFIX]   (default ~/.cache/vc/opensips-dispatcher)
#
# The tarball is found at $VC_OPENSIPS_TARBALL, else ../shared/peers/opensips-3.6.8.tar.xz
# beside the repository. Needs gcc, make, bison, flex, pkg-config.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
TARBALL=${VC_OPENSIPS_TARBALL:-$HERE/../../shared/peers/opensips-3.6.8.tar.xz}
SHA=213d93bed1df5178707cb4341e57290cbc5870ed2443ccb0af2aebefb572b46e
PREFIX=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/vc/opensips-dispatcher}
MODULES="sl tm rr maxfwd sipmsgops signaling dispatcher db_text mi_datagram"

if [ -x "$PREFIX/sbin/opensips" ] && [ "$(cat "$PREFIX/.built-from" 2>/dev/null)" = "$SHA $MODULES" ]; then
  echo "$PREFIX"; exit 0
fi
[ -f "$TARBALL" ] || { echo "no OpenSIPS tarball at $TARBALL (set VC_OPENSIPS_TARBALL)" >&2; exit 2; }
echo "$SHA  $TARBALL" | sha256sum -c --quiet - >&2
for p in gcc make bison flex pkg-config; do
  command -v "$p" >/dev/null || { echo "missing build tool: $p" >&2; exit 2; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xJf "$TARBALL" -C "$work"
cd "$work/opensips-3.6.8"
mods=""; for m in $MODULES; do mods="$mods modules/$m"; done
echo "building OpenSIPS 3.6.8 ($MODULES) into $PREFIX" >&2
make -j"$(nproc)" prefix="$PREFIX" app >&2
make -j"$(nproc)" prefix="$PREFIX" modules modules="$mods" >&2
make prefix="$PREFIX" install-bin install-modules modules="$mods" >&2 2>&1 || \
  make prefix="$PREFIX" install modules="$mods" >&2
[ -x "$PREFIX/sbin/opensips" ] || { echo "build finished but $PREFIX/sbin/opensips is missing" >&2; exit 1; }
echo "$SHA $MODULES" > "$PREFIX/.built-from"
echo "$PREFIX"
