#!/bin/sh
# What onnxruntime offers for Model 4 on this CPU, each setting against the defaults, in one sitting
# (the machine is noisy: compare within a run of this script, not across days).
#   sh bench/tune.sh [MODEL [FMNIST-EXPORT OPTIONS...]]
# after fmnist-train and fmnist-export; about 12 minutes for model4. The export options are those the
# defaults were exported with (make demo: the default --int8-target auto), so each re-exported row differs in one thing.
# Reports go to artifacts/tune/, never to artifacts/reports/ (which fmnist-bench report reads).
set -eu
[ -d .venv/bin ] && PATH="$PWD/.venv/bin:$PATH"
model=${1:-model4}
[ $# -gt 0 ] && shift
tune=artifacts/tune
common="--models $model --providers cpu --operations predict,single-stream --batch-sizes 128 --rounds 5 --no-reference --quiet"

latest() { ls "$1"/bench-*.json | tail -n 1; }
bench() {  # bench NAME [fmnist-bench run options]: one tuning run, its report in $tune/NAME/
    name=$1; shift
    rm -rf "$tune/$name/reports"
    fmnist-bench run $common --report-dir "$tune/$name/reports" "$@" >/dev/null
}
exported() {  # exported NAME VARIANT [fmnist-export options]: a variant made another way, benched beside the default
    name=$1; variant=$2; shift 2
    fmnist-export "$model" --variants "$variant" --onnx-dir "$tune/$name/onnx" --quiet "$@"
    bench "$name" --artifacts "$tune/$name" --variants "$variant"
}

bench defaults --variants fp32,int8 --threads 0,1  # the 1-thread rows (ids -t1) beside the default's, in its summary
bench graph-extended --variants fp32,int8 --graph-optimization extended
bench graph-basic --variants fp32,int8 --graph-optimization basic
bench graph-disable --variants fp32,int8 --graph-optimization disable
exported fp32-converted fp32 --fp32-graph converted "$@"
exported fp32-fold-into-conv fp32 --fp32-graph fold "$@"
exported int8-qoperator int8 --int8-format qoperator "$@"
exported int8-s8s8 int8 --int8-activations int8 "$@"
exported int8-no-affine-rewrite int8 --no-affine-rewrite "$@"
exported int8-percentile int8 --int8-calibration percentile "$@"

base=$(latest "$tune/defaults/reports")
echo "## threads: the default's rows and one thread's"
fmnist-bench summary "$base"
echo
for name in graph-extended graph-basic graph-disable fp32-converted fp32-fold-into-conv \
            int8-qoperator int8-s8s8 int8-no-affine-rewrite int8-percentile; do
    echo "## $name against the defaults"
    fmnist-bench compare "$base" "$(latest "$tune/$name/reports")"
    echo
done
