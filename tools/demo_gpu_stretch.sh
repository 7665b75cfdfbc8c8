#!/usr/bin/env bash
# One GPU stretch of the demo recipe (docs/demo-recipe.md, "GPU stretches"), from the committed resume points:
#   1. unpack weights/demo (VAE, decoder, MLLM, MGIE, ablation) into runs/gpu/base;
#   2. encode SAMPLES training samples (VAE latents + the frozen MLLM's [IMG] states) in SHARDS processes;
#   3. three diffusion runs side by side on the one GPU, each stopped after MINUTES (checkpointed, resumable):
#        ip2p   the ablation, from its resume point
#        mgie   MGIE's head + UNet, from their resume point (whatever preconditioner it was trained with)
#        mgiep  MGIE with a fresh, preconditioned head (stages.Preconditioner), the UNet from its resume point
#   4. export each into runs/gpu/<run>/weights/demo, measure `checks condition`, and score the held-out splits.
# Weights (fp32, no optimizer state) and one log go to $OUT. Usage: OUT=dir bash tools/demo_gpu_stretch.sh
set -u
OUT=${OUT:-runs/gpu-out}
R=runs/gpu
SAMPLES=${SAMPLES:-163840}
SHARDS=${SHARDS:-16}
MINUTES=${MINUTES:-3.5}
STEPS=${STEPS:-3000}
BATCH=${BATCH:-512}
PER_SPLIT=${PER_SPLIT:-25}
mkdir -p "$OUT" "$R"
log() { echo "[$(date +%T)] $*"; }
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 TQDM_MININTERVAL=30

log "unpack"
python3 -m editor.demo.train unpack --to weights/demo --out $R/base || exit 1
python3 - <<'EOF' || exit 1
import torch
ckpt = torch.load("runs/gpu/base/mgie.ckpt", weights_only=True)
torch.save({"modules": {"unet": ckpt["modules"]["unet"]}}, "runs/gpu/base/mgie-unet.pt")
EOF

log "cache: $SAMPLES samples in $SHARDS processes"
for k in $(seq 0 $((SHARDS - 1))); do
  python3 -m editor.demo.train cache --out $R/base --samples "$SAMPLES" --shard "$k/$SHARDS" > $R/cache-$k.log 2>&1 &
done
wait
tail -n 2 $R/cache-0.log
ls $R/base/cache | wc -l

for run in ip2p mgie mgiep; do
  mkdir -p $R/$run
  for f in vae.ckpt decoder.ckpt mllm.ckpt tokenizer cache; do ln -sfn "$(pwd)/$R/base/$f" $R/$run/$f; done
done
common=(--samples "$SAMPLES" --batch "$BATCH" --steps "$STEPS" --max-minutes "$MINUTES" --ckpt-every 500)
log "train: three runs, $MINUTES minutes each"
python3 -m editor.demo.train ip2p --out $R/ip2p "${common[@]}" --init $R/base/ip2p.ckpt > $R/ip2p/run.log 2>&1 &
python3 -m editor.demo.train mgie --out $R/mgie "${common[@]}" --init $R/base/mgie.ckpt > $R/mgie/run.log 2>&1 &
python3 -m editor.demo.train mgie --out $R/mgiep "${common[@]}" --init $R/base/mgie-unet.pt \
  > $R/mgiep/run.log 2>&1 &
wait
for run in ip2p mgie mgiep; do
  log "$run"; grep -v "it/s" $R/$run/run.log | tail -n 3; tail -n 2 $R/$run/*.log | grep -v "==>"
done

log "weights to \$OUT"
python3 - "$OUT" <<'EOF'
import sys
import torch
for run, stage in (("ip2p", "ip2p"), ("mgie", "mgie"), ("mgiep", "mgie")):
    ckpt = torch.load(f"runs/gpu/{run}/{stage}.ckpt", weights_only=True)
    kept = {k: ckpt[k] for k in ("modules", "step", "seconds", "recipe")}
    torch.save(kept, f"{sys.argv[1]}/{run}.pt")
    print(run, "step", ckpt["step"], "seconds", round(ckpt["seconds"]))
EOF
for run in ip2p mgie mgiep; do echo "# $run"; cat $R/$run/{mgie,ip2p}.log 2>/dev/null; done > "$OUT/losses.txt"

log "export"
for run in mgie mgiep; do
  ln -sfn "$(pwd)/$R/ip2p/ip2p.ckpt" $R/$run/ip2p.ckpt
  python3 -m editor.demo.train export --out $R/$run --to $R/$run/weights/demo || exit 1
done
log "checks condition"
python3 -m editor.demo.checks condition --weights $R/mgie/weights --models mgie-demo ip2p-demo --per-split 64
python3 -m editor.demo.checks condition --weights $R/mgiep/weights --models mgie-demo --per-split 64
log "held-out scores"
timeout 150 python3 -m editor.eval demo --weights $R/mgie/weights --per-split "$PER_SPLIT" --out $R/eval-mgie \
  > $R/eval-mgie.txt 2>&1 &
timeout 150 python3 -m editor.eval demo --weights $R/mgiep/weights --models mgie-demo --per-split "$PER_SPLIT" --out $R/eval-mgiep \
  > $R/eval-mgiep.txt 2>&1 &
wait
grep -v "it/s" $R/eval-mgie.txt | tail -n 40
grep -v "it/s" $R/eval-mgiep.txt | tail -n 25
log "done"
