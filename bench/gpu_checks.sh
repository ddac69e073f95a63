# The GPU checks of issues 3 and 8, prepared for a lent H200 (`device` tool; none was lent in the session that
# wrote this). Before the call, in the repository root: copy ../shared/data/magnetic_tile into .devdata/ and
# download the efficientnet-lite0 weight wheels (and pydantic's) for Python 3.12 into .whl/ (both listed in
# .git/info/exclude), then run with carry [".whl", ".devdata"]: `bash bench/gpu_checks.sh`.
set -x
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit 1
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv
python3 -c "import torch, cv2, skimage, sklearn, safetensors, rich, pydantic; print(torch.__version__, torch.cuda.is_available())"
cd bench
timeout 330 python3 efficientad_magnetic_tile.py --data ../.devdata --configs small small:noae medium cpu medium:noae --steps 2000 --max-seconds 40 --device cuda --save-dir /tmp/models --json $OUT/efficientad_gpu.json > $OUT/efficientad_gpu.md 2> $OUT/efficientad_gpu.log
tail -5 $OUT/efficientad_gpu.log
cd ..
python3 -m anomalens.cli.main fit .devdata --category magnetic_tile -o /tmp/models/patchcore --device cuda > $OUT/patchcore_fit.log 2>&1 || tail $OUT/patchcore_fit.log
for m in patchcore small small_noae cpu; do for r in torch fp16; do [ -d /tmp/models/$m ] && python3 bench/predict_throughput.py /tmp/models/$m .devdata/magnetic_tile/test --batch 1 8 32 --device cuda --runtime $r; done; done > $OUT/throughput_gpu.jsonl 2>$OUT/throughput_gpu.log
cat $OUT/throughput_gpu.jsonl
python3 -m anomalens.cli.main evaluate /tmp/models/patchcore .devdata --category magnetic_tile --json $OUT/patchcore_gpu_eval.json > /dev/null 2>&1
python3 -c "import json; d=json.load(open('$OUT/patchcore_gpu_eval.json')); print({k:d.get(k) for k in ['image_auroc','pixel_auroc','pixel_aupro','accuracy','oracle_accuracy']})"
cat $OUT/efficientad_gpu.md
