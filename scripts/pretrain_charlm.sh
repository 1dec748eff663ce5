#!/usr/bin/env bash
# Train the character LM shipped inside the package (src/gatescope/pretrained/), on the
# running Python's standard library, and record how: the command, seed, time and machine go
# into a JSON file beside the model. Run from the repository root with the venv active:
#     bash scripts/pretrain_charlm.sh [MINUTES]
set -euo pipefail
minutes=${1:-65}
out=${OUT:-build/pretrained}
mkdir -p "$out"
cmd=(gatescope charlm train --layers 2 --hidden 256 --seq-len 100 --batch 32 --lr 0.005
     --seed 0 --minutes "$minutes" --eval-every 500 --eval-chars 100000 --sample-every 5000
     --out "$out/charlm_stdlib.safetensors" --no-progress --force)
start=$(date -u +%FT%TZ)
"${cmd[@]}" 2>&1 | tee "$out/train.log"
python - "$out" "$start" "$minutes" "${cmd[*]}" <<'PY'
import json, platform, subprocess, sys
out, start, minutes, cmd = sys.argv[1:]
cpu = next((l.split(":", 1)[1].strip() for l in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines() if l.startswith("Model name")), platform.processor())
json.dump({"command": cmd, "started": start, "minutes": float(minutes), "machine": {"cpu": cpu, "cores": __import__("os").cpu_count(), "python": platform.python_version()}}, open(f"{out}/how.json", "w"), indent=1)
PY
