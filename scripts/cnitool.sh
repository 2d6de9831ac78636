#!/usr/bin/env bash
# Builds cnitool (the CNI project's own client) offline from Debian's source package of the CNI
# library, with Debian's Go and the library's -dev package: no Go module proxy is needed.
# Usage: scripts/cnitool.sh OUT (the binary to write; nothing is done if it exists).
# Needs root the first time on a machine without deb-src entries: it adds them for the suites
# the machine already uses, so the source matches the installed library.
set -euo pipefail
out=$(realpath -m "$1")
[ -x "$out" ] && exit 0
if ! apt-cache showsrc golang-github-appc-cni 2>/dev/null | grep -q '^Package:'; then
  # deb-src twins of the machine's own deb entries (deb822 stanzas and one-line lists).
  python3 - /etc/apt/sources.list.d/vxnet-deb-src.sources <<'PY'
import glob, os, re, sys
stanzas = []
for path in glob.glob("/etc/apt/sources.list.d/*.sources"):
    if path == sys.argv[1]:
        continue
    for block in re.split(r"\n\s*\n", open(path).read()):
        lines = [l for l in block.splitlines() if l.strip() and not l.lstrip().startswith("#")]
        if any(re.match(r"Types:.*\bdeb\b", l) for l in lines) and \
                not any(re.match(r"Enabled:\s*no", l, re.I) for l in lines):
            stanzas.append("\n".join("Types: deb-src" if l.startswith("Types:") else l
                                     for l in lines))
for path in ["/etc/apt/sources.list"] + glob.glob("/etc/apt/sources.list.d/*.list"):
    if os.path.exists(path):
        for l in open(path):
            m = re.match(r"\s*deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.+)", l)
            if m:
                opts = m.group(1) or ""
                stanzas.append(f"Types: deb-src\nURIs: {m.group(2)}\nSuites: {m.group(3)}\n"
                               f"Components: {m.group(4).strip()}"
                               + (f"\nOptions: {opts.strip()[1:-1]}" if opts else ""))
if not stanzas:
    sys.exit("error: no deb entries in the apt sources to derive deb-src entries from")
open(sys.argv[1], "w").write("\n\n".join(stanzas) + "\n")
PY
  apt-get -o DPkg::Lock::Timeout=600 update -qq
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get source -qq golang-github-appc-cni >/dev/null 2>&1) || {
  echo "error: apt-get source golang-github-appc-cni failed (is dpkg-dev installed?)" >&2
  exit 1
}
src=$(echo "$work"/golang-github-appc-cni-*/cnitool)
mkdir -p "$(dirname "$out")"
# GOPATH mode: the imports resolve to golang-github-appc-cni-dev's copy in /usr/share/gocode.
(cd "$src" && GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$work/cache" go build -o "$out.tmp" .)
mv "$out.tmp" "$out"
