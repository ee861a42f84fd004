#!/bin/sh
# Re-vendor uPlot (the charting library of the Activity view and `cmdlog journal report --html`) from the npm
# registry: `npm pack` downloads the published tarball, checks it against the registry's integrity hash, and we copy
# the minified IIFE build, its style sheet and its licence next to this script. No CDN is used at run time.
# Usage: sh commandlog/web/static/vendor_uplot.sh [version]   (then update VENDORED.md's version and hashes)
set -eu
version="${1:-1.6.32}"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack "uplot@$version" >/dev/null && tar xzf "uplot-$version.tgz")
cp "$work/package/dist/uPlot.iife.min.js" "$here/uplot.iife.min.js"
cp "$work/package/dist/uPlot.min.css" "$here/uplot.min.css"
cp "$work/package/LICENSE" "$here/uplot.LICENSE"
npm view "uplot@$version" dist.integrity
sha256sum "$here/uplot.iife.min.js" "$here/uplot.min.css" "$here/uplot.LICENSE"
