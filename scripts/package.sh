#!/usr/bin/env bash
# npm run package: builds the Debian package dist-pkg/mailwarden_<version>_<arch>.deb with dpkg-deb alone
# (no debhelper). Needs the dev install (npm ci) for tsc, and dpkg-deb.
#
#   /usr/lib/mailwarden/{package.json,dist/,node_modules/}   the app: production dependencies only
#   /usr/bin/mailwarden                                       wrapper: /usr/bin/node dist/main.js
#   /lib/systemd/system/mailwarden.service                    contrib/systemd/
#   /etc/mailwarden/mailwarden.yaml                           conffile, contrib/debian/mailwarden.yaml
#   /var/lib/mailwarden                                       data dir (postinst gives it to the mailwarden user)
#   /usr/share/doc/mailwarden/                                README, OPERATIONS, CONFIG, INTEGRATION
#
# better-sqlite3's native addon is built for this machine's node ABI and CPU, so the package is of this
# machine's architecture (not `all`) and depends on the same node major version.
#
# Usage: scripts/package.sh [OUTDIR]     (default dist-pkg; prints the .deb's path last)
# Environment: MAILWARDEN_DEB_MAINTAINER overrides the Maintainer field.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
out=${1:-dist-pkg}
mkdir -p "$out"
out=$(cd "$out" && pwd)

for tool in dpkg-deb dpkg node npm; do
  command -v "$tool" >/dev/null || { echo "package.sh: $tool is needed" >&2; exit 1; }
done
tsc=node_modules/typescript/bin/tsc
[ -f "$tsc" ] || { echo "package.sh: TypeScript is missing; run npm ci first" >&2; exit 1; }

version=$(node -p 'require("./package.json").version')
arch=$(dpkg --print-architecture)
node_major=$(node -p 'process.versions.node.split(".")[0]')
# engines.node is >=20.19; the addon's ABI pins the major version.
if [ "$node_major" = 20 ]; then min=20.19; else min=$node_major; fi
nodejs_depends="nodejs (>= $min), nodejs (<< $((node_major + 1))~)"
maintainer=${MAILWARDEN_DEB_MAINTAINER:-mailwarden maintainers <root@localhost>}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
app=$root/usr/lib/mailwarden
mkdir -p "$app"

echo "package.sh: compiling src/ (a clean build, not dist/: that may hold the output of deleted sources)"
node "$tsc" -p tsconfig.json --outDir "$app/dist" --sourceMap false
# tsc does not copy the dashboard's files; src/admin/dashboard.ts looks for them next to itself first.
cp -r src/admin/static "$app/dist/admin/static"

echo "package.sh: production dependencies (npm ci --omit=dev)"
cp package-lock.json .npmrc "$app/"
# Without scripts, so npm ci here runs no prepare (there is no scripts/ and no tsc in the package).
node -e '
  const p = require("./package.json");
  delete p.scripts;
  require("fs").writeFileSync(process.argv[1], JSON.stringify(p, null, 2) + "\n");
' "$app/package.json"
# --ignore-scripts: better-sqlite3 is the only dependency with an install script, and compiling it again
# takes a minute; its addon is taken from the dev install below when that is the same version.
(cd "$app" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
addon=node_modules/better-sqlite3/build/Release/better_sqlite3.node
want=$(node -p 'require(process.argv[1]).version' "$app/node_modules/better-sqlite3/package.json")
have=$(node -p 'try { require(process.argv[1]).version } catch { "" }' "$repo/node_modules/better-sqlite3/package.json")
if [ "$want" = "$have" ] && [ -f "$addon" ]; then
  install -D -m 0755 "$addon" "$app/$addon"
else
  echo "package.sh: building better-sqlite3 $want's addon (the dev install has ${have:-none})"
  (cd "$app" && npm rebuild better-sqlite3 --no-audit --no-fund --loglevel=error)
fi
(cd "$app" && node -e 'new (require("better-sqlite3"))(":memory:").prepare("select 1").get()') ||
  { echo "package.sh: better-sqlite3 does not load in the package" >&2; exit 1; }
# The addon's sources and build leftovers are of no use at run time (about 10 MB of SQLite source).
bs=$app/node_modules/better-sqlite3
find "$bs/build" -mindepth 1 -maxdepth 1 ! -name Release -exec rm -rf {} +
find "$bs/build/Release" -mindepth 1 -maxdepth 1 ! -name better_sqlite3.node -exec rm -rf {} +
rm -rf "$bs/deps" "$bs/src"
# Type declarations and source maps serve editors and debuggers, not node (about 4 MiB).
find "$app/node_modules" -type f \( -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.map' \) -delete
# What the app needs at run time: "type": "module" and the dependencies' names; not the lock or npm config.
node -e '
  const p = require(process.argv[1]);
  delete p.devDependencies;
  delete p.allowScripts;
  require("fs").writeFileSync(process.argv[1], JSON.stringify(p, null, 2) + "\n");
' "$app/package.json"
rm -f "$app/package-lock.json" "$app/.npmrc"

install -D -m 0755 contrib/debian/mailwarden "$root/usr/bin/mailwarden"
install -D -m 0644 contrib/systemd/mailwarden.service "$root/lib/systemd/system/mailwarden.service"
install -D -m 0644 contrib/debian/mailwarden.yaml "$root/etc/mailwarden/mailwarden.yaml"
doc=$root/usr/share/doc/mailwarden
install -D -m 0644 README.md "$doc/README.md"
for f in OPERATIONS CONFIG INTEGRATION; do install -m 0644 "docs/$f.md" "$doc/$f.md"; done
license=$(node -p 'require("./package.json").license')
printf 'mailwarden\n\nLicense: %s\n' "$license" >"$doc/copyright"

# Modes independent of the umask this ran under: directories 0755, files 0644 unless executable.
find "$root" -type d -exec chmod 0755 {} +
find "$root" -type f -exec chmod u+rw,go+r,go-w {} +
install -d -m 0700 "$root/var/lib/mailwarden"

mkdir -p "$root/DEBIAN"
installed_size=$(du -sk --apparent-size "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@INSTALLED_SIZE@/$installed_size/" \
  -e "s/@NODEJS_DEPENDS@/$nodejs_depends/" -e "s/@MAINTAINER@/$maintainer/" \
  contrib/debian/control.in >"$root/DEBIAN/control"
echo /etc/mailwarden/mailwarden.yaml >"$root/DEBIAN/conffiles"
for s in postinst prerm postrm; do install -m 0755 "contrib/debian/$s" "$root/DEBIAN/$s"; done

deb=$out/mailwarden_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
if command -v lintian >/dev/null; then
  # Advice only: a dpkg-deb package lacks what debhelper adds (changelog, a full copyright file).
  lintian --no-tag-display-limit "$deb" || true
fi
echo "package.sh: $(du -h "$deb" | cut -f1) $(basename "$deb"), installed $((installed_size / 1024)) MiB"
echo "$deb"
