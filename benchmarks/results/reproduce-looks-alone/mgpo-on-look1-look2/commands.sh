set -e
cd /work/main
O=out/looks-alone; B="--min-pixels 50176 --max-pixels 50176"; M=".venv/bin/python -m services.cli"
.venv/bin/python - <<'PY'
import dataclasses, sys
sys.path.insert(0, '.')
from runtime.config import load_sft_config
from mgpo.data.dataset import write_synthetic
knobs = dataclasses.replace(load_sft_config('out/looks-alone/configs/looks-cold-start.yaml').data.knobs(), looks=(1, 2))
write_synthetic('out/looks-alone/data/train12', 128, 2100, task='looks', knobs=knobs, progress=False)
PY
sed -e 's/^name: looks-mgpo$/name: looks-mgpo12/' -e 's#out/looks-alone/data/train$#out/looks-alone/data/train12#' $O/configs/looks-mgpo.yaml > $O/configs/looks-mgpo12.yaml
$M train --config $O/configs/looks-mgpo12.yaml > /tmp/t12-mgpo.log 2>&1
$M data distill --model $O/looks-mgpo12/final --data $O/data/train --out $O/distilled12 --n 16 --keep-option-order $B > /tmp/t12-distill.log 2>&1
sed -e 's/^name: looks-sft$/name: looks-sft12/' -e 's#looks-mgpo/final#looks-mgpo12/final#' -e 's#out/looks-alone/distilled$#out/looks-alone/distilled12#' $O/configs/looks-sft.yaml > $O/configs/looks-sft12.yaml
$M sft --config $O/configs/looks-sft12.yaml > /tmp/t12-sft.log 2>&1
sed -e 's/^name: looks-multiturn$/name: looks-multiturn12/' -e 's#looks-sft/model#looks-sft12/model#' $O/configs/looks-multiturn.yaml > $O/configs/looks-multiturn12.yaml
$M eval --model $O/looks-mgpo12/final --data $O/data/test --mode mgpo --max-crops 1 --out $O/eval12/mgpo.json $B > /tmp/t12-e1.log 2>&1
$M eval --model $O/looks-sft12/model --data $O/data/test --mode multiturn --max-crops 2 --out $O/eval12/sft.json $B > /tmp/t12-e2.log 2>&1
$M train --config $O/configs/looks-multiturn12.yaml > /tmp/t12-rl.log 2>&1
$M eval --model $O/looks-multiturn12/final --data $O/data/test --mode multiturn --max-crops 2 --out $O/eval12/multiturn.json $B > /tmp/t12-e3.log 2>&1
echo ALLDONE
