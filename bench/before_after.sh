#!/usr/bin/env bash
# Two checkouts of tcpfiles measured side by side, alternated, in one session:
#     bench/before_after.sh BEFORE_DIR AFTER_DIR [PAIRS] [OUT_DIR]
# Each directory is a checkout with its own .venv (pip install -e . --config-settings
# editable_mode=compat). For each pair, each side in turn runs download, many, echo and chat
# (3 rounds each, bounded by `timeout`), output in OUT_DIR/<bench>-<side>-<pair>.txt. Compare the
# ratios each bench prints against its reference servers: they cancel most of the machine's drift.
set -euo pipefail
before=$1 after=$2 pairs=${3:-3} out=${4:-bench-before-after}
mkdir -p "$out"
for pair in $(seq 1 "$pairs"); do
    for side in before after; do
        dir=$before; [ "$side" = after ] && dir=$after
        for bench in "download.py --size-mib 256" "many.py --idle 0" "echo.py" "chat.py"; do
            name=${bench%%.py*}
            (cd "$dir" && timeout 300 .venv/bin/python bench/$bench --rounds 3) \
                > "$out/$name-$side-$pair.txt" 2>&1 || echo "$name $side $pair: failed (see $out)" >&2
        done
    done
done
echo "results in $out/"
