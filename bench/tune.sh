#!/bin/sh
# What onnxruntime offers for Model 4 on this CPU, each setting against the defaults, in one sitting
# (the machine is noisy: compare within a run of this script, not across days).
#   sh bench/tune.sh [MODEL]      after fmnist-train and fmnist-export; about 10 minutes for model4
# Reports go to artifacts/tune/, never to artifacts/reports/ (which fmnist-bench report reads).
set -eu
[ -d .venv/bin ] && PATH="$PWD/.venv/bin:$PATH"
model=${1:-model4}
tune=artifacts/tune
common="--models $model --providers cpu --operations predict,single-stream --batch-sizes 128 --rounds 5 --no-reference --quiet"

latest() { ls "$1"/bench-*.json | tail -n 1; }
bench() {  # bench NAME [fmnist-bench run options]: one tuning run, its report in $tune/NAME/
    name=$1; shift
    rm -rf "$tune/$name/reports"
    fmnist-bench run $common --report-dir "$tune/$name/reports" "$@" >/dev/null
}
exported() {  # exported NAME [fmnist-export options]: an int8 variant made another way, benched beside the default
    name=$1; shift
    fmnist-export "$model" --variants int8 --onnx-dir "$tune/$name/onnx" "$@"
    bench "$name" --artifacts "$tune/$name" --variants int8
}

bench defaults --variants fp32,int8
bench threads-1 --variants fp32,int8 --threads 1
bench graph-extended --variants fp32,int8 --graph-optimization extended
bench graph-basic --variants fp32,int8 --graph-optimization basic
bench graph-disable --variants fp32,int8 --graph-optimization disable
exported int8-qoperator --int8-format qoperator
exported int8-s8s8 --int8-activations int8
exported int8-no-affine-rewrite --no-affine-rewrite
exported int8-percentile --int8-calibration percentile

base=$(latest "$tune/defaults/reports")
for name in threads-1 graph-extended graph-basic graph-disable int8-qoperator int8-s8s8 int8-no-affine-rewrite int8-percentile; do
    echo "## $name against the defaults"
    fmnist-bench compare "$base" "$(latest "$tune/$name/reports")"
    echo
done
