#!/bin/sh
# Refresh the vendored front-end files in src/enjournal/web/static/ from the npm registry
# (docs: src/enjournal/web/static/README.md). Needs npm; writes only under static/.
#   scripts/refresh_static.sh                       # the pinned versions below
#   CSS=1.22.0 THEME=1.11.0 HTMX=2.0.11 scripts/refresh_static.sh
set -eu
CSS="${CSS:-1.22.0}"      # @digdir/designsystemet-css
THEME="${THEME:-1.11.0}"  # @digdir/designsystemet-theme
HTMX="${HTMX:-2.0.11}"    # htmx.org (2.x: 4.x changed attribute inheritance)
HERE="$(cd "$(dirname "$0")/.." && pwd)"
STATIC="$HERE/src/enjournal/web/static"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
npm pack --silent "@digdir/designsystemet-css@$CSS" "@digdir/designsystemet-theme@$THEME" "htmx.org@$HTMX" >/dev/null
for f in *.tgz; do mkdir "${f%.tgz}"; tar xzf "$f" -C "${f%.tgz}"; done
mkdir -p "$STATIC/designsystemet" "$STATIC/htmx"
cp "digdir-designsystemet-css-$CSS/package/dist/src/index.css" "$STATIC/designsystemet/designsystemet.css"
cp "digdir-designsystemet-css-$CSS/package/LICENSE" "$STATIC/designsystemet/LICENSE"
cp "digdir-designsystemet-theme-$THEME/package/brand/digdir.css" "$STATIC/designsystemet/theme-digdir.css"
cp "digdir-designsystemet-theme-$THEME/package/LICENSE" "$STATIC/designsystemet/LICENSE-theme"
cp "htmx.org-$HTMX/package/dist/htmx.min.js" "$STATIC/htmx/htmx.min.js"
cp "htmx.org-$HTMX/package/LICENSE" "$STATIC/htmx/LICENSE"
cat > "$STATIC/VERSIONS" <<VERSIONS
@digdir/designsystemet-css $CSS
@digdir/designsystemet-theme $THEME
htmx.org $HTMX
VERSIONS
echo "static files refreshed: css $CSS, theme $THEME, htmx $HTMX"
