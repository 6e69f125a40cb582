#!/usr/bin/env bash
# Re-create src/r1serve/ui/static/vendor/ from the npm registry at pinned versions.
#
# The chat page loads nothing from a CDN: every third-party file it uses is copied here from
# the package tarball, with the package's license files, and listed in vendor/README.md.
# Each tarball is checked against the sha512 pinned below before anything is copied.
# Needs: npm (with node) and tar.  Usage: scripts/vendor-ui.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENDOR="$ROOT/src/r1serve/ui/static/vendor"

# package@version  npm integrity (sha512, as `npm view PKG@VER dist.integrity` prints it)
PACKAGES=(
  "marked@18.2.1 sha512-ii4bxCTCqqwpT86XZWgJNs+ZnAIZksmLGYMViWA7PDIXYIeNo1x6cDdX3JOip9NM/cI6p8z57FxliACboTruMA=="
  "dompurify@3.5.0 sha512-LYC0ZkE8P1V42JsRYTwMdme/2ET8SpOc5AA2eOFjP/IadvRd2fwiT4TVz5vkfy0XUx12aS2UaRkTnfVPNOv9vw=="
  "@highlightjs/cdn-assets@11.12.0 sha512-KvOKXODaiFmId9xaq3xc5xCL66wVLUuOngDbO9B/kewbFTqdGbn2nJxNhN3H5R1cgDTVj6R8vH0zgiNDEGjpDw=="
  "swagger-ui-dist@5.35.0 sha512-U06rpMtW9V3XPGOBeamTUSr0Z09jMX4IJuANpE/EZbAhw0G8CgwrzU4YmXkn/h0wCDNsXdGarTNNHC3sU8yVUQ=="
  "katex@0.19.1 sha512-jG8uKntjSEcm2EpQOh0XturpPuuC9r3Sq5HLHdsFdWZT27E672SF19QEi+of0/YeOy15lDgRhKvr5614uRrEfA=="
  "axe-core@4.14.1 sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ=="
)

# package  source file in the tarball  ->  destination under vendor/
FILES=(
  "marked lib/marked.esm.js marked/marked.esm.js"
  "marked LICENSE marked/LICENSE"
  "dompurify dist/purify.es.mjs dompurify/purify.es.js"
  "dompurify LICENSE dompurify/LICENSE"
  "dompurify LICENSE-MPL dompurify/LICENSE-MPL"
  "@highlightjs/cdn-assets es/highlight.min.js highlight.js/highlight.min.js"
  "@highlightjs/cdn-assets styles/github.min.css highlight.js/github.min.css"
  "@highlightjs/cdn-assets styles/github-dark.min.css highlight.js/github-dark.min.css"
  "@highlightjs/cdn-assets LICENSE highlight.js/LICENSE"
  "swagger-ui-dist swagger-ui-bundle.js swagger-ui/swagger-ui-bundle.js"
  "swagger-ui-dist swagger-ui.css swagger-ui/swagger-ui.css"
  "swagger-ui-dist LICENSE swagger-ui/LICENSE"
  "katex dist/katex.min.js katex/katex.min.js"
  "katex dist/katex.min.css katex/katex.min.css"
  "katex LICENSE katex/LICENSE"
)
# KaTeX's fonts: woff2 only (every browser the page supports takes it; katex.min.css lists it first).
KATEX_FONTS=(AMS-Regular Caligraphic-Bold Caligraphic-Regular Fraktur-Bold Fraktur-Regular Main-Bold
  Main-BoldItalic Main-Italic Main-Regular Math-BoldItalic Math-Italic SansSerif-Bold SansSerif-Italic
  SansSerif-Regular Script-Regular Size1-Regular Size2-Regular Size3-Regular Size4-Regular Typewriter-Regular)
for font in "${KATEX_FONTS[@]}"; do
  FILES+=("katex dist/fonts/KaTeX_$font.woff2 katex/fonts/KaTeX_$font.woff2")
done
# axe-core is for the browser tests only (accessibility checks); it never ships in the package.
TEST_VENDOR="$ROOT/tests/support/vendor"
TEST_FILES=(
  "axe-core axe.min.js axe-core/axe.min.js"
  "axe-core LICENSE axe-core/LICENSE"
)

# npm's integrity string of a file: "sha512-" + base64 of its SHA-512 digest.
integrity_of() {
  node -e 'const data = require("fs").readFileSync(process.argv[1]);
    process.stdout.write("sha512-" + require("crypto").createHash("sha512").update(data).digest("base64"));' "$1"
}
license_of() { node -p "require('$1/package.json').license"; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

declare -A UNPACKED VERSION
for entry in "${PACKAGES[@]}"; do
  read -r spec integrity <<<"$entry"
  name="${spec%@*}"
  version="${spec##*@}"
  tarball="$(cd "$WORK" && npm pack --silent "$spec" | tail -n 1)"
  actual="$(integrity_of "$WORK/$tarball")"
  if [[ "$actual" != "$integrity" ]]; then
    echo "integrity mismatch for $spec: got $actual" >&2
    exit 1
  fi
  dir="$WORK/unpacked-${tarball%.tgz}"
  mkdir -p "$dir"
  tar -xzf "$WORK/$tarball" -C "$dir"
  UNPACKED[$name]="$dir/package"
  VERSION[$name]="$version"
done

rm -rf "$VENDOR" "$TEST_VENDOR"
mkdir -p "$VENDOR" "$TEST_VENDOR"
for entry in "${FILES[@]}"; do
  read -r name source dest <<<"$entry"
  mkdir -p "$(dirname "$VENDOR/$dest")"
  cp "${UNPACKED[$name]}/$source" "$VENDOR/$dest"
done
for entry in "${TEST_FILES[@]}"; do
  read -r name source dest <<<"$entry"
  mkdir -p "$(dirname "$TEST_VENDOR/$dest")"
  cp "${UNPACKED[$name]}/$source" "$TEST_VENDOR/$dest"
done

{
  echo "# Vendored front-end packages"
  echo
  echo "Copied unchanged from the npm registry by \`scripts/vendor-ui.sh\` (do not edit by hand;"
  echo "change the pinned versions there and re-run it). \`purify.es.mjs\` is saved as \`.js\` so"
  echo "every server maps it to a JavaScript MIME type."
  echo
  echo "| package | version | file | from | license |"
  echo "|---|---|---|---|---|"
  for entry in "${FILES[@]}"; do
    read -r name source dest <<<"$entry"
    echo "| $name | ${VERSION[$name]} | \`$dest\` | \`$source\` | $(license_of "${UNPACKED[$name]}") |"
  done
} >"$VENDOR/README.md"

echo "vendored into $VENDOR:"
(cd "$VENDOR" && find . -type f | sort)
echo "test-only files in $TEST_VENDOR:"
(cd "$TEST_VENDOR" && find . -type f | sort)
