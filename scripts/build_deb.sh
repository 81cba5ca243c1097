#!/bin/sh
# Build the razar Debian package from this checkout (make deb).
#
#   scripts/build_deb.sh [--version V] [--out DIR]
#
# The package bundles razar and its Python dependencies in a virtualenv at
# /opt/razar whose interpreter is Debian 12's /usr/bin/python3.11, so it installs
# and runs offline; compiled wheels are fetched for cp311 manylinux x86_64
# whatever Python runs this script. Writes DIR/razar_<version>_amd64.deb
# (default DIR: build/, default version: razard/__init__.py's) and prints its path.
# pip's downloads are cached under $RAZAR_DEB_CACHE (default /var/tmp/razar-deb-cache).
set -eu
umask 022

repo=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
out=$repo/build
version=
while [ $# -gt 0 ]; do
    case "$1" in
        --version) version=${2:?--version needs a value}; shift 2 ;;
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build_deb.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

tree_version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$repo/razard/__init__.py")
[ -n "$version" ] || version=$tree_version
# The Python version razard reports is the Debian version without epoch and revision,
# so an upgrade test sees which build runs.
upstream=${version#*:}
upstream=${upstream%-*}
if ! printf '%s\n' "$upstream" | grep -Eq '^[0-9]+(\.[0-9]+)*$'; then
    echo "build_deb.sh: --version $version: expected N.N.N with an optional -REVISION" >&2
    exit 2
fi

if [ -x "$repo/.venv/bin/python" ]; then
    py=$repo/.venv/bin/python
else
    py=$(command -v python3)
fi
"$py" -m pip --version >/dev/null 2>&1 || {
    echo "build_deb.sh: $py has no pip (run make setup)" >&2
    exit 1
}
command -v dpkg-deb >/dev/null || { echo "build_deb.sh: dpkg-deb is not installed" >&2; exit 1; }

cache=${RAZAR_DEB_CACHE:-/var/tmp/razar-deb-cache}
mkdir -p "$cache/pip" "$cache/sdist-wheels" "$out"
out=$(CDPATH='' cd -- "$out" && pwd)
export PIP_CACHE_DIR="$cache/pip" PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

work=$(mktemp -d "${TMPDIR:-/tmp}/razar-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

# --- razar itself, from a clean copy of the checkout (no stale build/ tree) ---
mkdir "$work/src" "$work/wheels"
cp -R "$repo/pyproject.toml" "$repo/README.md" "$repo/razard" "$repo/agents" "$work/src/"
find "$work/src" -name __pycache__ -prune -exec rm -rf {} +
if [ "$upstream" != "$tree_version" ]; then
    sed -i "s/^__version__ = \".*\"$/__version__ = \"$upstream\"/" "$work/src/razard/__init__.py"
    sed -i "s/^version = \".*\"$/version = \"$upstream\"/" "$work/src/pyproject.toml"
fi
"$py" -m pip wheel -q --no-deps -w "$work/wheels" "$work/src"

# Dependencies PyPI has only as source: pure Python, so the wheel built here runs
# anywhere. Any other dependency must come as a wheel for the target (below).
sdist_only="sdnotify==0.3.2"
for req in $sdist_only; do
    name=${req%%==*}
    ver=${req#*==}
    if ! ls "$cache/sdist-wheels/$name-$ver-"*-none-any.whl >/dev/null 2>&1; then
        "$py" -m pip wheel -q --no-deps -w "$cache/sdist-wheels" "$req"
    fi
done

# --- the bundled virtualenv, laid out by hand for the target's interpreter ---
root=$work/root
venv=$root/opt/razar
site=$venv/lib/python3.11/site-packages
mkdir -p "$site" "$venv/bin"
# every manylinux tag bookworm's glibc 2.36 runs (older pips do not expand one tag)
platforms=
glibc=36
while [ $glibc -ge 5 ]; do
    platforms="$platforms --platform manylinux_2_${glibc}_x86_64"
    glibc=$((glibc - 1))
done
platforms="$platforms --platform manylinux2014_x86_64 --platform manylinux2010_x86_64"
platforms="$platforms --platform manylinux1_x86_64"
"$py" -m pip install -q --no-compile --no-warn-script-location \
    --target "$site" \
    $platforms --python-version 3.11 --implementation cp --abi cp311 \
    --only-binary=:all: \
    --find-links "$cache/sdist-wheels" \
    "$work/wheels"/razar-*.whl
rm -rf "$site/bin"
ln -s /usr/bin/python3.11 "$venv/bin/python"
ln -s python "$venv/bin/python3"
ln -s python "$venv/bin/python3.11"
ln -s lib "$venv/lib64"
cat >"$venv/pyvenv.cfg" <<EOF
home = /usr/bin
include-system-site-packages = false
version = 3.11
executable = /usr/bin/python3.11
EOF
for cmd in razard:razard.launch razarctl:razard.ctl; do
    cat >"$venv/bin/${cmd%%:*}" <<EOF
#!/opt/razar/bin/python
import sys

from ${cmd#*:} import main

sys.exit(main())
EOF
    chmod 755 "$venv/bin/${cmd%%:*}"
done
# what is bundled, for whoever tracks advisories
(cd "$site" && ls -d ./*.dist-info | sed 's|^\./||; s|\.dist-info$||; s|-|==|') >"$venv/BUNDLED"

# a compiled extension built for anything but manylinux x86_64 would not run there
bad=$(find "$site" -name '*.so' | grep -v -e 'cpython-311-x86_64-linux-gnu\.so$' -e '\.abi3\.so$' \
    -e '/[^/]*\.libs/' || true)
if [ -n "$bad" ]; then
    echo "build_deb.sh: extensions not built for cp311 x86_64:" >&2
    echo "$bad" >&2
    exit 1
fi

# --- commands, units, D-Bus policy, configuration ---
mkdir -p "$root/usr/bin" "$root/lib/systemd/system" "$root/usr/share/dbus-1/system.d" \
    "$root/etc/razard" "$root/usr/share/doc/razar"
ln -s /opt/razar/bin/razard "$root/usr/bin/razard"
ln -s /opt/razar/bin/razarctl "$root/usr/bin/razarctl"
install -m 644 "$repo/units/razard.service" "$repo/units/razar-notifier.service" \
    "$repo/units/razar-notifier.timer" "$root/lib/systemd/system/"
install -m 644 "$repo/units/org.razar.Supervisor1.conf" "$root/usr/share/dbus-1/system.d/"
install -m 644 "$repo/config/razard.toml" "$repo/config/razar_ai_agents.json" \
    "$repo/config/error_registry.toml" "$root/etc/razard/"
gzip -9n <"$repo/README.md" >"$root/usr/share/doc/razar/README.md.gz"

mkdir "$root/DEBIAN"
pkg=$repo/packaging/deb
install -m 755 "$pkg/preinst" "$pkg/postinst" "$pkg/prerm" "$pkg/postrm" "$root/DEBIAN/"
install -m 644 "$pkg/conffiles" "$root/DEBIAN/"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e '/^#/d' -e "s/@VERSION@/$version/" -e "s/@INSTALLED_SIZE@/$size/" "$pkg/control.in" >"$root/DEBIAN/control"

deb=$out/razar_${version#*:}_amd64.deb
# gzip: xz saves 1 MB of 3.6 but takes 20 times as long (10 s here)
dpkg-deb --root-owner-group -Zgzip -z9 --build "$root" "$deb" >/dev/null
echo "$deb"
