#!/usr/bin/env bash
# Build tests/support/go/promcheck — Prometheus's own rule-file checks (model/rulefmt, what
# `promtool check rules` runs) and PromQL parser (promql/parser), for the monitoring tests — into
# ${XDG_CACHE_HOME:-$HOME/.cache}/lark-bridge/bin/promcheck. Needs Go (go.mod's version) and, the
# first time, the Go module proxy; rebuilt only when its source, go.mod or go.sum change.
# (promtool itself pulls in every service-discovery client — cloud SDKs, client-go — for two
# packages' worth of checking.)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC=$ROOT/tests/support/go/promcheck
BIN=${XDG_CACHE_HOME:-$HOME/.cache}/lark-bridge/bin
OUT=$BIN/promcheck
STAMP=$OUT.sha256

sum=$(cat "$SRC/main.go" "$SRC/go.mod" "$SRC/go.sum" | sha256sum | cut -d' ' -f1)
if [[ -x $OUT && -f $STAMP && $(cat "$STAMP") == "$sum" ]]; then
  exit 0
fi
printf '==> building promcheck with %s (a minute the first time)\n' "$(go version)" >&2
mkdir -p "$BIN"
(cd "$SRC" && GOFLAGS=-mod=readonly go build -trimpath -o "$OUT.tmp" . && mv "$OUT.tmp" "$OUT")
echo "$sum" > "$STAMP"
